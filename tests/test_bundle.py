import hashlib
import json
import zipfile

import pytest

from flightc.bundle import BUNDLE_VERSION, COMMENT_PREFIX, load_bundle
from flightc.config import PRESETS
from flightc.errors import BundleError
from flightc.runtime.session import Session


def _rewrite_manifest(src, dst, change, sign=True):
    """A copy with the manifest changed; ``sign``: with its new hash in the zip comment, as a deliberate edit
    would be (so the checks behind the integrity check are reached)."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for item in zin.namelist():
            data = zin.read(item)
            if item == "manifest.json":
                m = json.loads(data)
                change(m)
                data = json.dumps(m).encode()
                if sign:
                    zout.comment = COMMENT_PREFIX + hashlib.sha256(data).hexdigest().encode()
            zout.writestr(item, data)


def test_round_trip(tiny_w8, tmp_path):
    path = tiny_w8.bundle.save(tmp_path / "m.flb")
    b = load_bundle(path)
    assert b.manifest.to_dict() == json.loads(json.dumps(tiny_w8.bundle.manifest.to_dict()))
    assert b.programs == tiny_w8.bundle.programs
    assert b.images == tiny_w8.bundle.images
    assert b.config == PRESETS["tiny"]


def test_wrong_isa_version_is_refused(tiny_w8, tmp_path):
    path = tiny_w8.bundle.save(tmp_path / "m.flb")
    _rewrite_manifest(path, tmp_path / "old.flb", lambda m: m.update(isa_version="0.9"))
    with pytest.raises(BundleError, match="built for ISA 0.9.*recompile"):
        load_bundle(tmp_path / "old.flb")


def test_bundle_for_another_config_is_refused(tiny_w8, tmp_path):
    path = tiny_w8.bundle.save(tmp_path / "m.flb")
    other = PRESETS["tiny"].replace(clock_mhz=200.0)
    with pytest.raises(BundleError, match="built for hardware config 'tiny'.*recompile with `--hw`"):
        Session(path, hw=other)
    with pytest.raises(BundleError, match="built for hardware config"):
        Session(tiny_w8.bundle, hw=other)
    Session(path, hw=PRESETS["tiny"].replace(name="renamed"))  # the name is only a label


def test_a_manifest_lacking_a_field_or_with_an_unknown_one_is_refused_by_name(tiny_w8, tmp_path):
    """The manifest is a dataclass (flightc.bundle.Manifest): a signed manifest that lacks one of its fields or
    carries one it does not declare is refused, naming the field."""
    path = tiny_w8.bundle.save(tmp_path / "m.flb")
    _rewrite_manifest(path, tmp_path / "lacks.flb", lambda m: m.pop("io"))
    with pytest.raises(BundleError, match=r"its manifest lacks \['io'\]; the bundle was edited"):
        load_bundle(tmp_path / "lacks.flb")
    _rewrite_manifest(path, tmp_path / "extra.flb", lambda m: m.update(tuning={"x": 1}))
    with pytest.raises(BundleError, match=r"its manifest has unknown fields \['tuning'\]; .*recompile"):
        load_bundle(tmp_path / "extra.flb")


def test_edited_config_is_refused(tiny_w8, tmp_path):
    path = tiny_w8.bundle.save(tmp_path / "m.flb")
    _rewrite_manifest(path, tmp_path / "edited.flb", lambda m: m["config"].update(mpe_chains=8))
    with pytest.raises(BundleError, match="does not match its own config"):
        load_bundle(tmp_path / "edited.flb")


def test_not_a_bundle(tmp_path):
    (tmp_path / "x.flb").write_text("hello")
    with pytest.raises(BundleError, match="not a flightc bundle"):
        load_bundle(tmp_path / "x.flb")


def test_missing_program_names_what_exists(tiny_w8):
    with pytest.raises(BundleError, match=r"no program for steps of 3 tokens \(it has \[1, 8\]\)"):
        tiny_w8.bundle.program("prefill", 3)


def test_an_unsigned_edit_or_a_changed_member_is_refused_by_name(tiny_w8, tmp_path):
    path = tiny_w8.bundle.save(tmp_path / "m.flb")
    _rewrite_manifest(path, tmp_path / "unsigned.flb", lambda m: m.update(max_len=999), sign=False)
    with pytest.raises(BundleError, match="zip comment holds no manifest hash"):
        load_bundle(tmp_path / "unsigned.flb")
    with zipfile.ZipFile(path) as zin, zipfile.ZipFile(tmp_path / "image.flb", "w") as zout:
        zout.comment = zin.comment
        for item in zin.namelist():
            data = zin.read(item)
            zout.writestr(item, data if item != "hbm/ch01.bin" else data[: len(data) // 2])
    with pytest.raises(BundleError, match="member hbm/ch01.bin does not match its SHA-256"):
        load_bundle(tmp_path / "image.flb")


def test_an_older_bundle_version_is_named(tiny_w8, tmp_path):
    path = tiny_w8.bundle.save(tmp_path / "m.flb")
    _rewrite_manifest(path, tmp_path / "v2.flb", lambda m: m.update(bundle_version=2), sign=False)
    with pytest.raises(BundleError, match=f"v2; this flightc reads flightc-bundle v{BUNDLE_VERSION}"):
        load_bundle(tmp_path / "v2.flb")


def test_damaged_bundles_are_refused_by_member_or_load_unchanged(tiny_w8, tmp_path):
    """Seeded byte flips and truncations anywhere in a real bundle: each is refused, naming the member, the
    manifest or the zip directory, or loads to exactly the original (a flip in bytes no reader uses)."""
    import numpy as np

    path = tiny_w8.bundle.save(tmp_path / "m.flb")
    good = path.read_bytes()
    want = load_bundle(path)
    rng = np.random.default_rng(0)
    bad = tmp_path / "bad.flb"
    refused = unchanged = 0
    for case in range(300):
        data = bytearray(good)
        if case % 5 == 4:
            data = data[: int(rng.integers(0, len(data)))]
        else:  # near the end (the zip directory) a third of the time
            at = int(rng.integers(max(0, len(data) - 2048), len(data))) if case % 3 == 0 else int(
                rng.integers(0, len(data)))
            data[at] ^= int(rng.integers(1, 256))
        bad.write_bytes(bytes(data))
        try:
            b = load_bundle(bad)
        except BundleError as e:
            assert any(w in str(e) for w in ("member", "manifest", "zip", "not a flightc bundle")), str(e)
            refused += 1
            continue
        assert (b.manifest, b.images, b.programs, b.patches) == (want.manifest, want.images, want.programs,
                                                                 want.patches), f"case {case}"
        unchanged += 1
    assert refused > 250 and refused + unchanged == 300
