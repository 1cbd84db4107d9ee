"""The program bundle: a versioned, self-describing zip (stored, not compressed).

  manifest.json          format and ISA versions, hardware config and its hash, model, plan,
                         memory map, I/O regions, program index
  hbm/chNN.bin           static image of memory channel NN (weights, parameters, tables)
  programs/step/LLLL/PPPPP.cC.bin  program template of core C for steps of LLLL tokens starting at
                         positions PPPPP.. (flightc.compiler.adaptive)
  patches/step/LLLL/PPPPP.cC.bin   its patch table (flightc.isa.patch): the fields that move with
                         the position

The manifest lists a SHA-256 of every other member (``members``); the manifest's own SHA-256 is the
zip comment. Every backend opens bundles through :func:`load_bundle`, which checks the manifest's hash
first, then each member's before using a byte of it, and refuses one built for another ISA version or
hardware configuration, each with a message that names what is wrong and says what to do.
"""
from __future__ import annotations

import hashlib
import json
import mmap
import struct
import zipfile
import zlib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from flightc import __version__
from flightc.config import HardwareConfig
from flightc.errors import BundleError
from flightc.files import atomic_path
from flightc.isa.patch import PATCH_DTYPE, apply_patches
from flightc.isa.table import ISA_VERSION

BUNDLE_FORMAT = "flightc-bundle"
BUNDLE_VERSION = 4  # 3: member hashes and the manifest's hash in the zip comment; configs with microarchitecture;
# 4: configs name their banked buffers
MANIFEST = "manifest.json"
COMMENT_PREFIX = b"flightc manifest sha256 "
STEPPED_BYTES = 64 << 20  # patched step programs kept for the positions a session runs again (evaluation windows)
# what zipfile raises on a damaged archive, besides BadZipFile
_ZIP_ERRORS = (zipfile.BadZipFile, zipfile.LargeZipFile, KeyError, ValueError, struct.error, EOFError, OSError,
               NotImplementedError, zlib.error, UnicodeDecodeError, OverflowError)


SAVE_CHUNK = 64 << 20  # a member is hashed and written this many bytes at a time


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _chunks(data: memoryview):
    """A member's bytes in SAVE_CHUNK pieces; a mapped image's pages are dropped from this process behind each
    piece (the page cache keeps them), so saving a 7B model's images does not make them resident."""
    base = data.obj if isinstance(data.obj, mmap.mmap) else None
    for at in range(0, len(data), SAVE_CHUNK):
        yield data[at:at + SAVE_CHUNK]
        if base is not None:
            base.madvise(mmap.MADV_DONTNEED, at, min(SAVE_CHUNK, len(data) - at))


def _member_sha256(data: memoryview) -> str:
    h = hashlib.sha256()
    for piece in _chunks(data):
        h.update(piece)
    return h.hexdigest()


@dataclass
class Manifest:
    """What a bundle says about itself, written as ``manifest.json``: the versions it was built with, the hardware
    config, the model's shape, how it was compressed, the memory map and the program index. Nested records are the
    JSON of their owners (``HardwareConfig.to_dict``, ``ModelSpec.to_dict``, ``MemoryMap.to_dict``)."""

    config: dict[str, Any]  # HardwareConfig.to_dict(): read back as Bundle.config
    config_hash: str
    model: dict[str, Any]  # ModelSpec.to_dict()
    plan: dict[str, Any]  # CompressionPlan.describe()
    method: str  # Method.label(): how the weights were compressed
    allocation: dict[str, Any] | None  # Allocation.describe() where a bit budget chose the formats
    source: str | None  # where the model came from (the float reference loads it from there)
    layers: dict[str, str]  # linear layer -> its weight format's label
    max_len: int
    max_prefill: int
    programs_only: bool  # compiled without weights: for the performance model only
    memory_map: dict[str, Any]  # MemoryMap.to_dict()
    programs: list[dict[str, Any]]  # one entry per program template: key, length, p_lo, p_hi, sizes, classes
    storage: dict[str, Any]  # instruction bytes: templates, patches, per step length
    io: dict[str, Any]  # the regions a host writes token ids to and reads logits from, and the logits' scale
    format: str = BUNDLE_FORMAT
    bundle_version: int = BUNDLE_VERSION
    isa_version: str = ISA_VERSION
    flightc_version: str = __version__
    members: dict[str, str] = field(default_factory=dict)  # every other member's SHA-256, filled in by save

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_dict(cls, d: dict[str, Any], path: str | Path = "bundle",
                  expect: HardwareConfig | None = None) -> "Manifest":
        """The manifest of a bundle at ``path``, checked (:func:`check_manifest`) and with every field present."""
        check_manifest(d, path, expect)
        names = {f.name for f in fields(cls)}
        missing = sorted(names - set(d) - {"members"})
        unknown = sorted(set(d) - names)
        wrong = [w for w in (missing and f"lacks {missing}", unknown and f"has unknown fields {unknown}") if w]
        if wrong:
            raise BundleError(f"{path}: its manifest {' and '.join(wrong)}; the bundle was edited or written by "
                              f"another flightc: recompile it (`flightc compile`)")
        return cls(**d)


@dataclass
class Bundle:
    manifest: Manifest
    images: dict[int, bytes]
    programs: dict[str, list[bytes]]  # template key -> one instruction stream per core
    patches: dict[str, list[bytes]] = field(default_factory=dict)  # template key -> patch table per core
    config: HardwareConfig = field(init=False)

    def __post_init__(self) -> None:
        self.config = HardwareConfig.from_dict(self.manifest.config)
        self._templates: dict[int, list[tuple[int, int, str]]] = {}
        self._stepped: dict[tuple[str, int], tuple] = {}  # (template, position) -> its patched programs, recent last
        self._stepped_bytes = 0
        for t in self.manifest.programs:
            self._templates.setdefault(t["length"], []).append((t["p_lo"], t["p_hi"], t["key"]))

    @property
    def max_len(self) -> int:
        return self.manifest.max_len

    @property
    def step_lengths(self) -> list[int]:
        """Token counts one step can process (a prompt runs as steps of these)."""
        return sorted(self._templates)

    def prompt_steps(self, n: int) -> list[int]:
        """How a prompt of ``n`` tokens is split into steps: the longest step lengths first."""
        if n < 1:
            raise BundleError("a prompt needs at least one token")
        steps, left = [], n
        for length in reversed(self.step_lengths):
            while left >= length:
                steps.append(length)
                left -= length
        return steps

    def region(self, name: str) -> dict:
        for r in self.manifest.memory_map["regions"]:
            if r["name"] == name:
                return r
        raise BundleError(f"bundle has no memory region {name!r}")

    def step(self, length: int, pos0: int) -> list[bytes]:
        """Per core, the program of one step of ``length`` tokens at positions ``pos0 ..``: its template,
        patched to the position."""
        if pos0 < 0 or length < 1:
            raise BundleError(f"a step needs at least one token at a position >= 0 (got {length} at {pos0})")
        if pos0 + length > self.max_len:
            raise BundleError(f"a step of {length} tokens at position {pos0} reaches {pos0 + length} tokens, beyond "
                              f"the bundle's max_len {self.max_len}; recompile with a larger --max-len")
        for p_lo, p_hi, key in self._templates.get(length, ()):
            if p_lo <= pos0 <= p_hi:
                streams = self.programs[key]
                tables = self.patches.get(key, [b""] * len(streams))
                made = self._stepped.pop((key, pos0), None)  # (streams, tables, programs, bytes), made before
                if made is not None:
                    self._stepped_bytes -= made[3]
                if made is None or any(a is not b for a, b in zip(made[0] + made[1], list(streams) + list(tables))):
                    programs = [apply_patches(stream, np.frombuffer(table, PATCH_DTYPE), pos0 - p_lo)
                                for stream, table in zip(streams, tables)]
                    made = (list(streams), list(tables), programs, sum(len(p) for p in programs))
                self._stepped[(key, pos0)] = made
                self._stepped_bytes += made[3]
                while self._stepped_bytes > STEPPED_BYTES:
                    self._stepped_bytes -= self._stepped.pop(next(iter(self._stepped)))[3]
                return list(made[2])
        have = sorted(self._templates)
        raise BundleError(f"bundle has no program for steps of {length} tokens (it has {have}); recompile with "
                          f"{length} in --prefill-lens (or without that option)")

    def program(self, kind: str, n: int) -> list[bytes]:
        """The program of a prefill of ``n`` tokens (one step, n <= max_step) or of the decode step at position n."""
        if kind == "prefill":
            if n not in self._templates:
                if 0 < n <= self.max_len:
                    raise BundleError(f"bundle has no program for steps of {n} tokens (it has "
                                      f"{self.step_lengths}); a prompt of {n} runs as steps {self.prompt_steps(n)} "
                                      f"(Session.prefill), or recompile with {n} in --prefill-lens")
            return self.step(n, 0)
        if kind == "decode":
            return self.step(1, n)
        raise BundleError(f"unknown program kind {kind!r}: prefill or decode")

    def storage(self) -> dict:
        """Instruction bytes stored: templates and patch tables."""
        return {"template_bytes": sum(len(b) for s in self.programs.values() for b in s),
                "patch_bytes": sum(len(b) for s in self.patches.values() for b in s)}

    def members(self) -> dict[str, bytes]:
        """Every member but the manifest, by its name in the zip."""
        return {name: bytes(data) for name, data in self._member_views().items()}

    def _member_views(self) -> dict[str, memoryview]:
        """The members' bytes without copying them (a 7B model's channel images are gigabytes)."""
        out = {f"hbm/ch{ch:02d}.bin": memoryview(data) for ch, data in sorted(self.images.items())}
        for folder, table in (("programs", self.programs), ("patches", self.patches)):
            for key, streams in sorted(table.items()):
                for core, data in enumerate(streams):
                    out[f"{folder}/{key}.c{core}.bin"] = memoryview(data)
        return out

    def save(self, path: str | Path) -> Path:
        """Write the bundle (atomically: a temporary file renamed into place); the same content always gives the
        same bytes (no timestamps). The manifest records each member's SHA-256 (also in this object's manifest)."""
        path = Path(path)
        members = self._member_views()
        self.manifest.members = {name: _member_sha256(data) for name, data in members.items()}
        manifest = json.dumps(self.manifest.to_dict(), indent=1, sort_keys=True).encode()

        def put(z: zipfile.ZipFile, name: str, data) -> None:
            # what ZipFile.writestr writes, a piece at a time
            info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
            info.external_attr = 0o644 << 16
            view = memoryview(data)
            info.file_size = len(view)
            with z.open(info, "w") as dest:
                for piece in _chunks(view):
                    dest.write(piece)

        with atomic_path(path) as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED) as z:
            z.comment = COMMENT_PREFIX + _sha256(manifest).encode()
            put(z, MANIFEST, manifest)
            for name, data in members.items():
                put(z, name, data)
        return path


def _read_member(z: zipfile.ZipFile, path: Path, name: str) -> bytes:
    try:
        return z.read(name)
    except _ZIP_ERRORS as e:
        raise BundleError(f"{path}: member {name} cannot be read ({e}); the bundle is corrupted: recompile or "
                          f"copy it again") from None


def _read_manifest(z: zipfile.ZipFile, path: Path) -> dict:
    """The manifest, checked against the hash in the zip comment (an older bundle is named by its version)."""
    data = _read_member(z, path, MANIFEST)
    try:
        manifest = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        manifest = None
    comment = z.comment
    if not comment.startswith(COMMENT_PREFIX):
        if isinstance(manifest, dict) and manifest.get("bundle_version") != BUNDLE_VERSION:
            check_manifest(manifest, path)  # says which version it is and what to do
        raise BundleError(f"{path}: the zip comment holds no manifest hash: the bundle was not written by flightc "
                          f"or was re-zipped; recompile it (`flightc compile`)")
    if comment[len(COMMENT_PREFIX):].decode("ascii", "replace") != _sha256(data) or not isinstance(manifest, dict):
        raise BundleError(f"{path}: {MANIFEST} does not match the hash in the zip comment: the bundle was edited or "
                          f"corrupted; recompile it or copy it again")
    return manifest


def load_bundle(path: str | Path, expect: HardwareConfig | None = None) -> Bundle:
    """Open and validate a bundle; ``expect`` is the configuration the backend was built for."""
    path = Path(path)
    if not path.exists():
        raise BundleError(f"{path}: no such file; give the path of a bundle `flightc compile -o` wrote")
    if path.is_dir():
        raise BundleError(f"{path}: a folder, not a bundle; give the path of a bundle file (.flb)")
    try:
        z = zipfile.ZipFile(path)
    except _ZIP_ERRORS as e:
        raise BundleError(f"{path}: not a flightc bundle, or its zip directory is damaged ({e})") from None
    with z:
        names = set(z.namelist())
        if MANIFEST not in names:
            raise BundleError(f"{path}: no {MANIFEST}; not a flightc bundle")
        manifest = Manifest.from_dict(_read_manifest(z, path), path, expect)
        want = manifest.members
        if not isinstance(want, dict) or set(want) != names - {MANIFEST}:
            extra = sorted(names - {MANIFEST} - set(want or ()))
            missing = sorted(set(want or ()) - names)
            raise BundleError(f"{path}: its members do not match the manifest (not listed: {extra[:3]}, missing: "
                              f"{missing[:3]}); the bundle was edited or corrupted")
        data = {}
        for n in sorted(want):
            data[n] = _read_member(z, path, n)
            if _sha256(data[n]) != want[n]:
                raise BundleError(f"{path}: member {n} does not match its SHA-256 in the manifest: the bundle was "
                                  f"edited or corrupted; recompile it or copy it again")
    images = {int(n[len("hbm/ch"):-4]): d for n, d in data.items() if n.startswith("hbm/")}
    tables: dict[str, dict[str, list[bytes]]] = {"programs": {}, "patches": {}}
    for n, d in data.items():
        folder = n.split("/", 1)[0]
        if folder in tables:
            key, core = n[len(folder) + 1:-len(".bin")].rsplit(".c", 1)
            streams = tables[folder].setdefault(key, [])
            if int(core) != len(streams):
                raise BundleError(f"{path}: {folder} {key} is missing the stream of core {len(streams)}")
            streams.append(d)
    return Bundle(manifest, images, tables["programs"], tables["patches"])


def check_manifest(manifest: dict | Manifest, path: str | Path, expect: HardwareConfig | None = None) -> None:
    """Refuse a manifest of another bundle format or ISA version, or built for another hardware config than
    ``expect``, saying what to do."""
    if isinstance(manifest, Manifest):
        manifest = manifest.to_dict()
    if manifest.get("format") != BUNDLE_FORMAT or manifest.get("bundle_version") != BUNDLE_VERSION:
        raise BundleError(f"{path}: bundle format {manifest.get('format')!r} v{manifest.get('bundle_version')}; "
                          f"this flightc reads {BUNDLE_FORMAT} v{BUNDLE_VERSION}; recompile the model with this flightc "
                          f"(`flightc compile`)")
    if manifest.get("isa_version") != ISA_VERSION:
        raise BundleError(f"{path}: built for ISA {manifest.get('isa_version')}, but this flightc implements ISA "
                          f"{ISA_VERSION}; recompile the model with this flightc (`flightc compile`)")
    cfg = HardwareConfig.from_dict(manifest["config"])
    if cfg.hash != manifest.get("config_hash"):
        raise BundleError(f"{path}: config hash {manifest.get('config_hash')} does not match its own config "
                          f"({cfg.hash}); the bundle was edited or corrupted")
    if expect is not None and expect.hash != cfg.hash:
        raise BundleError(f"{path}: built for hardware config {cfg.name!r} (hash {cfg.hash}), but this backend "
                          f"is {expect.name!r} (hash {expect.hash}); recompile with `--hw` for this backend")
