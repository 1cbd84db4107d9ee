"""The boards flightc builds for: part, flow and how the kernel is wired into each (one table)."""
from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from flightc.errors import ConfigError


class Flow(str, Enum):
    PYNQ = "pynq"  # Vivado block design around the Zynq UltraScale+ PS: .bit + .hwh for pynq.Overlay
    VITIS = "vitis"  # Vitis RTL kernel (package_xo) linked into an Alveo platform: .xclbin for XRT


@dataclass(frozen=True)
class Board:
    name: str
    flow: Flow
    part: str
    preset: str  # the hardware config (flightc.config.PRESETS) sized for this board
    description: str
    # PYNQ boards: where the PS's HPM0 port puts the kernel's registers, and the DDR the kernel's HP port reaches
    board_part: str = ""
    ctrl_base: int = 0xA000_0000
    ctrl_range: int = 0x1_0000
    ddr_base: int = 0x0
    ddr_bytes: int = 0x8000_0000
    # Alveo: the Vitis platform the kernel links into and its HBM pseudo-channels
    platform: str = ""
    hbm_banks: int = 0
    slrs: int = 1  # super logic regions of the part (the HBM in SLR0 on the U280; a core each, several cores)


BOARDS: dict[str, Board] = {b.name: b for b in (
    # Kria KV260: xck26 in the K26 SOM; the kernel's clock is the PS's pl_clk0 at the config's clock_mhz;
    # low DDR 0..2 GiB on HP0.
    Board("kv260", Flow.PYNQ, "xck26-sfvc784-2LV-c", "kv260", "Kria KV260 Vision AI Starter Kit (PYNQ)",
          board_part="xilinx.com:kv260_som:part0:1.4"),
    Board("zcu104", Flow.PYNQ, "xczu7ev-ffvc1156-2-e", "kv260", "Zynq UltraScale+ ZCU104 (PYNQ)",
          board_part="xilinx.com:zcu104:part0:1.1"),
    # Alveo U280: 32 HBM2 pseudo-channels; the gen3x16 XDMA shell (UG1120).
    Board("u280", Flow.VITIS, "xcu280-fsvh2892-2L-e", "u280", "Alveo U280 (XRT)",
          platform="xilinx_u280_gen3x16_xdma_1_202211_1", hbm_banks=32, slrs=3),
    # VHK158 evaluation kit: Versal HBM; Vitis needs an extensible platform built for the board (UG1702).
    Board("vhk158", Flow.VITIS, "xcvh1582-vsva3697-2MP-e-S", "vhk158", "Versal HBM VHK158 evaluation kit (XRT)",
          platform="vhk158_flightc_platform", hbm_banks=32),
)}


def board(name: str) -> Board:
    if name not in BOARDS:
        raise ConfigError(f"unknown board {name!r}; known: {', '.join(BOARDS)}")
    return BOARDS[name]
