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
    # (Vitis) each memory master port and the HBM banks the overlay links it to, e.g. {"m_axi_gmem0": "HBM[0]"}
    link: dict[str, str] | None = None

    def to_dict(self) -> dict:
        return {"format": FORMAT, "board": self.board.name, "flow": self.board.flow.value, "kernel": self.kernel,
                "isa_version": self.isa_version, "config_hash": self.config.hash, "config": self.config.to_dict(),
                "virtual": self.virtual, **({"link": dict(self.link)} if self.link is not None else {})}

    @classmethod
    def from_dict(cls, d: dict, where: str = "overlay manifest") -> "OverlayManifest":
        if d.get("format") != FORMAT:
            raise FlightcError(f"{where}: manifest format {d.get('format')!r}, this flightc reads {FORMAT}")
        cfg = HardwareConfig.from_dict(d["config"])
        if cfg.hash != d["config_hash"]:
            raise FlightcError(f"{where}: config hash {d['config_hash']} does not match its config ({cfg.hash}); "
                               "the manifest was edited")
        return cls(board(d["board"]), cfg, d["kernel"], d["isa_version"], bool(d.get("virtual")), d.get("link"))

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
        if self.link is not None:
            self._check_placement(bundle_manifest, overlay)

    def _check_placement(self, bundle_manifest: "Manifest", overlay: str | Path) -> None:
        """Every channel the bundle places data on must be in the banks the overlay links to each core's master of
        that channel (the port its channel_base argument belongs to): else the data would be out of that master's
        reach or in another bank than the host allocates it in."""
        import re

        from flightc.hw.kernel_xml import argument_port
        from flightc.hw.regs import core_register

        banks = {}
        for port, text in self.link.items():
            m = re.fullmatch(r"HBM\[(\d+)(?::(\d+))?\]", text)
            banks[port] = range(int(m[1]), int(m[2] or m[1]) + 1) if m else range(0)
        for region in bundle_manifest.memory_map["regions"]:
            for ch in range(region["channel"], region["channel"] + region.get("stripe", 1)):
                for core in range(self.config.num_cores):
                    port = argument_port(self.config, core_register(f"channel_base{ch}", core))
                    if ch not in banks.get(port, range(0)):
                        raise BundleError(
                            f"the bundle places {region['name']} on memory channel {ch}, but {overlay} links "
                            f"{port} (core {core}'s master of that channel) to {self.link.get(port, 'no bank')}, "
                            f"not HBM[{ch}]; rebuild the overlay with `flightc hw bitstream` for this config")

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
