"""The program bundle: a versioned, self-describing zip (stored, not compressed).

  manifest.json          format and ISA versions, hardware config and its hash, model, plan,
                         memory map, I/O regions, program index
  hbm/chNN.bin           static image of memory channel NN (weights, parameters, tables)
  programs/step/LLLL/PPPPP.cC.bin  program template of core C for steps of LLLL tokens starting at
                         positions PPPPP.. (flightc.compiler.adaptive)
  patches/step/LLLL/PPPPP.cC.bin   its patch table (flightc.isa.patch): the fields that move with
                         the position

Every backend opens bundles through :func:`load_bundle`, which refuses one built for another ISA
version or hardware configuration with a message that says what to do.
"""
from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from flightc.config import HardwareConfig
from flightc.errors import BundleError
from flightc.isa.patch import PATCH_DTYPE, apply_patches
from flightc.isa.table import ISA_VERSION

BUNDLE_FORMAT = "flightc-bundle"
BUNDLE_VERSION = 2


@dataclass
class Bundle:
    manifest: dict
    images: dict[int, bytes]
    programs: dict[str, list[bytes]]  # template key -> one instruction stream per core
    patches: dict[str, list[bytes]] = field(default_factory=dict)  # template key -> patch table per core
    config: HardwareConfig = field(init=False)

    def __post_init__(self) -> None:
        self.config = HardwareConfig.from_dict(self.manifest["config"])
        self._templates: dict[int, list[tuple[int, int, str]]] = {}
        for t in self.manifest["programs"]:
            self._templates.setdefault(t["length"], []).append((t["p_lo"], t["p_hi"], t["key"]))

    @property
    def max_len(self) -> int:
        return self.manifest["max_len"]

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
        for r in self.manifest["memory_map"]["regions"]:
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
                tables = self.patches.get(key, [b""] * len(self.programs[key]))
                return [apply_patches(stream, np.frombuffer(table, PATCH_DTYPE), pos0 - p_lo)
                        for stream, table in zip(self.programs[key], tables)]
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

    def save(self, path: str | Path) -> Path:
        """Write the bundle; the same content always gives the same bytes (no timestamps)."""
        path = Path(path)

        def put(z: zipfile.ZipFile, name: str, data) -> None:
            info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
            info.external_attr = 0o644 << 16
            z.writestr(info, data)

        with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
            put(z, "manifest.json", json.dumps(self.manifest, indent=1, sort_keys=True))
            for ch, data in sorted(self.images.items()):
                put(z, f"hbm/ch{ch:02d}.bin", data)
            for folder, table in (("programs", self.programs), ("patches", self.patches)):
                for key, streams in sorted(table.items()):
                    for core, data in enumerate(streams):
                        put(z, f"{folder}/{key}.c{core}.bin", data)
        return path


def load_bundle(path: str | Path, expect: HardwareConfig | None = None) -> Bundle:
    """Open and validate a bundle; ``expect`` is the configuration the backend was built for."""
    path = Path(path)
    try:
        z = zipfile.ZipFile(path)
    except (OSError, zipfile.BadZipFile) as e:
        raise BundleError(f"{path}: not a flightc bundle ({e})") from None
    with z:
        try:
            manifest = json.loads(z.read("manifest.json"))
        except KeyError:
            raise BundleError(f"{path}: no manifest.json; not a flightc bundle") from None
        check_manifest(manifest, path, expect)
        images = {int(n[len("hbm/ch"):-4]): z.read(n) for n in z.namelist() if n.startswith("hbm/")}
        tables: dict[str, dict[str, list[bytes]]] = {"programs": {}, "patches": {}}
        for n in sorted(z.namelist()):
            folder = n.split("/", 1)[0]
            if folder in tables:
                key, core = n[len(folder) + 1:-len(".bin")].rsplit(".c", 1)
                streams = tables[folder].setdefault(key, [])
                if int(core) != len(streams):
                    raise BundleError(f"{path}: {folder} {key} is missing the stream of core {len(streams)}")
                streams.append(z.read(n))
    return Bundle(manifest, images, tables["programs"], tables["patches"])


def check_manifest(manifest: dict, path: str | Path, expect: HardwareConfig | None = None) -> None:
    if manifest.get("format") != BUNDLE_FORMAT or manifest.get("bundle_version") != BUNDLE_VERSION:
        raise BundleError(f"{path}: bundle format {manifest.get('format')!r} v{manifest.get('bundle_version')}; "
                          f"this flightc reads {BUNDLE_FORMAT} v{BUNDLE_VERSION}")
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
