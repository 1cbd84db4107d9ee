"""``flightc hw bitstream``: every file a board's build flow needs, generated from one hardware config, plus
the overlay manifest the runtime checks; or, with ``virtual=True``, the overlay of the virtual board."""
from __future__ import annotations

import logging
from pathlib import Path

from flightc.config import HardwareConfig
from flightc.errors import ConfigError
from flightc.hw.kernel_xml import write_kernel
from flightc.hw.synth import TOP, kernel_verilog

from .boards import Board, Flow
from .hwh import KERNEL
from .manifest import OverlayManifest, write_manifest
from .virtual import write_virtual_overlay
from .vitis import CU, core_slrs, floorplan_tcl, link_cfg, link_map, makefile, package_xo_tcl
from .vivado import block_design_tcl

log = logging.getLogger(__name__)


def design_name(board: Board, cfg: HardwareConfig) -> str:
    return f"flightc_{board.name}_{cfg.name}"


def write_flow(board: Board, cfg: HardwareConfig, folder: str | Path,
               virtual: bool = False) -> tuple[Path, list[Path]]:
    """(the file the runtime loads, the files written). The first is a .bit or .xclbin that a real flow only
    produces once Vivado / Vitis has run; the virtual overlay's .bit is written at once."""
    from flightc.hw.core import check_rtl_config

    check_rtl_config(cfg)
    if board.flow is Flow.VITIS:
        core_slrs(board, cfg)  # a core an SLR at most, refused before anything is written
    if board.flow is Flow.PYNQ and cfg.axi_masters != 1:  # (so one core: every core has masters of its own)
        raise ConfigError(f"config {cfg.name!r} has {cfg.axi_masters} memory masters; the {board.name} block "
                          f"design connects one (to the PS's S_AXI_HP0_FPD): use axi_masters = 1 and one core")
    from flightc.parts import PARTS

    narrower = PARTS[board.name].port_violation(cfg.axi_data_bytes) if board.name in PARTS else None
    if narrower:  # (the block design's automation inserts the width converter: it works, at the port's width)
        log.warning("config %r on %s: %s", cfg.name, board.name, narrower)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    design = design_name(board, cfg)
    if virtual:
        bit = write_virtual_overlay(board, cfg, folder, design)
        return bit, [bit, bit.with_suffix(".hwh"), folder / f"{design}.flightc.json"]
    if board.flow is Flow.PYNQ:
        (folder / f"{TOP}.v").write_text(kernel_verilog(cfg))
        (folder / "build.tcl").write_text(block_design_tcl(board, cfg, design))
        artifact = folder / f"{design}.bit"
        written = [folder / f"{TOP}.v", folder / "build.tcl"]
        manifest = OverlayManifest(board, cfg, KERNEL)
    else:
        several = cfg.num_cores > 1
        texts = (("package_xo.tcl", package_xo_tcl(board, cfg)), ("link.cfg", link_cfg(board, cfg)),
                 ("Makefile", makefile(board, design, floorplan=several)),
                 *((("floorplan.tcl", floorplan_tcl(board, cfg)),) if several else ()))
        # (all before anything is written: link_cfg checks the banks, floorplan_tcl the SLRs)
        written = write_kernel(cfg, folder)
        for name, text in texts:
            (folder / name).write_text(text)
            written.append(folder / name)
        artifact = folder / f"{design}.xclbin"
        manifest = OverlayManifest(board, cfg, CU, link=link_map(cfg))
    written.append(write_manifest(artifact, manifest))
    return artifact, written
