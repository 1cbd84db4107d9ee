"""The manifest every built overlay carries (``NAME.flightc.json`` next to the .bit or .xclbin): which board,
which hardware config (and its hash), which ISA. Runtimes check it against a bundle before downloading."""
from __future__ import annotations

from typing import TYPE_CHECKING

import json
from dataclasses import dataclass
from pathlib import Path

from flightc.config import HardwareConfig
from flightc.errors import BundleError, FlightcError
from flightc.isa.table import ISA_VERSION

from .boards import Board, Flow, board

if TYPE_CHECKING:
    from flightc.bundle import Manifest

SUFFIX = ".flightc.json"
FORMAT = 1


@dataclass(frozen=True)
class OverlayManifest:
    board: Board
    config: HardwareConfig
    kernel: str  # instance (PYNQ block design) or compute-unit name (Vitis) of the flightc kernel
    isa_version: str = ISA_VERSION
    virtual: bool = False  # a bitstream for the virtual board (flightc board serve), not for silicon

    def to_dict(self) -> dict:
        return {"format": FORMAT, "board": self.board.name, "flow": self.board.flow.value, "kernel": self.kernel,
                "isa_version": self.isa_version, "config_hash": self.config.hash, "config": self.config.to_dict(),
                "virtual": self.virtual}

    @classmethod
    def from_dict(cls, d: dict, where: str = "overlay manifest") -> "OverlayManifest":
        if d.get("format") != FORMAT:
            raise FlightcError(f"{where}: manifest format {d.get('format')!r}, this flightc reads {FORMAT}")
        cfg = HardwareConfig.from_dict(d["config"])
        if cfg.hash != d["config_hash"]:
            raise FlightcError(f"{where}: config hash {d['config_hash']} does not match its config ({cfg.hash}); "
                               "the manifest was edited")
        return cls(board(d["board"]), cfg, d["kernel"], d["isa_version"], bool(d.get("virtual")))

    def check(self, bundle_manifest: "Manifest", overlay: str | Path) -> None:
        """Refuse a bundle compiled for other hardware or another ISA, naming both sides."""
        if bundle_manifest.isa_version != self.isa_version:
            raise BundleError(f"{overlay} implements ISA {self.isa_version}, but the bundle was compiled for ISA "
                              f"{bundle_manifest.isa_version}; rebuild the overlay or recompile")
        want = bundle_manifest.config_hash
        if want != self.config.hash:
            raise BundleError(f"{overlay} was built for config {self.config.name!r} (hash {self.config.hash}), but "
                              f"the bundle was compiled for hash {want}; recompile with --hw for this overlay's "
                              f"config (`flightc config` can write it) or build an overlay for the bundle's")

    @property
    def flow(self) -> Flow:
        return self.board.flow


def manifest_path(artifact: str | Path) -> Path:
    """``x.bit`` / ``x.xclbin`` -> ``x.flightc.json``."""
    p = Path(artifact)
    return p.with_name(p.stem + SUFFIX)


def write_manifest(artifact: str | Path, m: OverlayManifest) -> Path:
    path = manifest_path(artifact)
    path.write_text(json.dumps(m.to_dict(), indent=1, sort_keys=True) + "\n")
    return path


def read_manifest(artifact: str | Path) -> OverlayManifest:
    path = manifest_path(artifact)
    if not path.exists():
        raise FlightcError(f"no flightc manifest next to {artifact} (expected {path.name}); build overlays with "
                           "`flightc hw bitstream`, which writes it")
    return OverlayManifest.from_dict(json.loads(path.read_text()), str(path))
