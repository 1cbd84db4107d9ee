import json
import zipfile

import pytest

from flightc.bundle import load_bundle
from flightc.config import PRESETS
from flightc.errors import BundleError
from flightc.runtime.session import Session


def _rewrite_manifest(src, dst, change):
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for item in zin.namelist():
            data = zin.read(item)
            if item == "manifest.json":
                m = json.loads(data)
                change(m)
                data = json.dumps(m).encode()
            zout.writestr(item, data)


def test_round_trip(tiny_w8, tmp_path):
    path = tiny_w8.bundle.save(tmp_path / "m.flb")
    b = load_bundle(path)
    assert b.manifest == json.loads(json.dumps(tiny_w8.bundle.manifest))
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
