"""The program bundle: a versioned, self-describing zip (stored, not compressed).

  manifest.json          format and ISA versions, hardware config and its hash, model, plan,
                         memory map, I/O regions, program index
  hbm/chNN.bin           static image of memory channel NN (weights, parameters, tables)
  programs/KIND/NNNN.cC.bin  encoded instructions of one step for core C: prefill of N tokens,
                         decode at position N

Every backend opens bundles through :func:`load_bundle`, which refuses one built for another ISA
version or hardware configuration with a message that says what to do.
"""
from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from flightc.config import HardwareConfig
from flightc.errors import BundleError
from flightc.isa.table import ISA_VERSION

BUNDLE_FORMAT = "flightc-bundle"
BUNDLE_VERSION = 1


def program_key(kind: str, n: int) -> str:
    return f"{kind}/{n:04d}"


@dataclass
class Bundle:
    manifest: dict
    images: dict[int, bytes]
    programs: dict[str, list[bytes]]  # key -> one instruction stream per core
    config: HardwareConfig = field(init=False)

    def __post_init__(self) -> None:
        self.config = HardwareConfig.from_dict(self.manifest["config"])

    @property
    def max_len(self) -> int:
        return self.manifest["max_len"]

    def region(self, name: str) -> dict:
        for r in self.manifest["memory_map"]["regions"]:
            if r["name"] == name:
                return r
        raise BundleError(f"bundle has no memory region {name!r}")

    def program(self, kind: str, n: int) -> list[bytes]:
        key = program_key(kind, n)
        if key not in self.programs:
            have = sorted(int(k.split("/")[1]) for k in self.programs if k.startswith(kind + "/"))
            span = f"{have[0]}..{have[-1]}" if have else "none"
            raise BundleError(f"bundle has no {kind} program for {n} (it has {span}); recompile with a larger "
                              f"--max-len / --max-prefill")
        return self.programs[key]

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
            for key, streams in sorted(self.programs.items()):
                for core, data in enumerate(streams):
                    put(z, f"programs/{key}.c{core}.bin", data)
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
        programs: dict[str, list[bytes]] = {}
        for n in sorted(z.namelist()):
            if n.startswith("programs/"):
                key, core = n[len("programs/"):-len(".bin")].rsplit(".c", 1)
                streams = programs.setdefault(key, [])
                if int(core) != len(streams):
                    raise BundleError(f"{path}: program {key} is missing the stream of core {len(streams)}")
                streams.append(z.read(n))
    return Bundle(manifest, images, programs)


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
