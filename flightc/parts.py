"""The FPGA parts flightc targets: fabric resources and off-chip memory, in one table.

The hardware presets take their memory figures from here; the design-space exploration checks its
points against the fabric figures.

Each figure carries its source. Where no source available to us gives a figure (the VHK158's fabric
counts), the field is ``None`` and the capacity check says that resource is unchecked; it never
assumes a value.
"""
from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from flightc.errors import ConfigError


class MemoryKind(str, Enum):
    """Off-chip memory technology; it decides the channel model in the performance model."""

    HBM2 = "hbm2"
    HBM2E = "hbm2e"
    DDR4 = "ddr4"

RESOURCES = ("DSP", "LUT", "FF", "BRAM36", "URAM")


@dataclass(frozen=True)
class Part:
    """One board's FPGA: what a kernel may use of it, and the memory its cores stream from."""

    name: str
    device: str
    family: str  # "UltraScale+" (DSP48E2) or "Versal" (DSP58)
    dsp: int | None
    lut: int | None
    ff: int | None
    bram36: int | None
    uram: int | None
    slrs: int  # super logic regions: one core per SLR at most (FlightLLM's placement)
    mem_kind: MemoryKind
    mem_channels: int
    mem_channel_gbps: float
    mem_gib: float  # off-chip memory the kernel can address
    clock_mhz: tuple[float, ...]  # kernel clocks the search may pick
    source: str
    # the widest data bus of the port a memory master reaches the memory through, where it is narrower than any
    # master the generator builds (the PS's S_AXI_HP ports of a Zynq UltraScale+ MPSoC: 128-bit, UG1085; a wider
    # master is downsized to it, so a beat a cycle is this many bytes at most); None: the master's own width.
    # (On an MPSoC each of the four HP ports is a memory channel: a master per port reaches the DDR's rate.)
    port_bytes: int | None = None
    port_name: str = ""
    # LUTs of the platform's dynamic region, where a kernel goes, and of its part in SLR0, where the memory attaches
    # (None: no source here); a core each SLR, core 0 in SLR0 (bitstreams/vitis.py core_slrs)
    dynamic_lut: int | None = None
    slr0_lut: int | None = None

    def slr_luts(self, cores: int) -> list[tuple[str, int]] | None:
        """LUTs where ``cores`` cores go, a core an SLR: SLR0's for core 0, the rest of the dynamic region for the
        others together (no split among them on record); None where the part has no such figures."""
        if cores < 2 or not self.dynamic_lut or not self.slr0_lut:
            return None
        rest = "SLR1" if cores == 2 else f"SLR1-SLR{cores - 1}"
        return [("SLR0", self.slr0_lut), (rest, self.dynamic_lut - self.slr0_lut)]

    def capacity(self) -> dict[str, int | None]:
        return {"DSP": self.dsp, "LUT": self.lut, "FF": self.ff, "BRAM36": self.bram36, "URAM": self.uram}

    def usage(self, resources: dict[str, int]) -> dict[str, float | None]:
        """The share of the part each resource takes (None where the part's count is unknown)."""
        cap = self.capacity()
        return {k: v / cap[k] if cap[k] else None for k, v in resources.items()}

    @property
    def mem_bandwidth_gbps(self) -> float:
        return self.mem_channels * self.mem_channel_gbps

    @property
    def mem_channel_mib(self) -> int:
        return int(self.mem_gib * 1024 // self.mem_channels)

    @property
    def max_cores(self) -> int:
        return self.slrs

    def port_violation(self, axi_data_bytes: int) -> str | None:
        """Why a master ``axi_data_bytes`` wide cannot stream at its width on this part (None: it can)."""
        if self.port_bytes is None or axi_data_bytes <= self.port_bytes:
            return None
        return (f"axi_data_bytes {axi_data_bytes} > {self.port_bytes}: {self.name}'s memory port ({self.port_name}) "
                f"is {8 * self.port_bytes}-bit, so a {8 * axi_data_bytes}-bit master moves {self.port_bytes} bytes a "
                f"cycle, not {axi_data_bytes}; use a {self.port_bytes}-byte master")

    def memory_fields(self) -> dict:
        """The HardwareConfig fields of this part's off-chip memory (all its channels)."""
        return {"mem_kind": self.mem_kind, "mem_channels": self.mem_channels,
                "mem_channel_gbps": self.mem_channel_gbps, "mem_channel_mib": self.mem_channel_mib}


_ALVEO_CLOCKS = (200.0, 225.0, 250.0, 300.0)
_EDGE_CLOCKS = (150.0, 200.0, 250.0)

PARTS: dict[str, Part] = {p.name: p for p in (
    Part("u280", "XCU280", "UltraScale+", dsp=9_024, lut=1_303_680, ff=2_607_360, bram36=2_016, uram=960, slrs=3,
         mem_kind=MemoryKind.HBM2, mem_channels=32, mem_channel_gbps=14.375, mem_gib=8, clock_mhz=_ALVEO_CLOCKS,
         source="shared/reference/device-facts.md; HBM per pseudo-channel: UG1393 'HBM Configuration and Use'; the "
                "dynamic region and SLR0's part of it: RapidStream's virtual device file for "
                "xilinx_u280_gen3x16_xdma_1_202211_1 (shared/reference/datapath-facts.md)",
         dynamic_lut=1_135_680, slr0_lut=388_800),
    Part("u55c", "XCU55C", "UltraScale+", dsp=9_024, lut=1_303_680, ff=2_607_360, bram36=2_016, uram=960, slrs=3,
         mem_kind=MemoryKind.HBM2, mem_channels=32, mem_channel_gbps=14.375, mem_gib=16, clock_mhz=_ALVEO_CLOCKS,
         source="Alveo U55C data sheet DS978 (same fabric as the U280); 16 GB HBM2 in 32 pseudo-channels of "
                "512 MB at 14.375 GB/s: UG1393 'HBM Configuration and Use'"),
    Part("vhk158", "XCVH1582", "Versal", dsp=None, lut=None, ff=None, bram36=None, uram=None, slrs=3,
         mem_kind=MemoryKind.HBM2E, mem_channels=32, mem_channel_gbps=25.6, mem_gib=32, clock_mhz=_ALVEO_CLOCKS,
         source="HBM2e 32 GB, 819 GB/s: shared/reference/device-facts.md; fabric counts not found in a source "
                "available here (unchecked)"),
    Part("kv260", "XCK26", "UltraScale+", dsp=1_248, lut=117_120, ff=234_240, bram36=144, uram=64, slrs=1,
         mem_kind=MemoryKind.DDR4, mem_channels=4, mem_channel_gbps=19.2 / 4, mem_gib=4, clock_mhz=_EDGE_CLOCKS,
         source="Kria K26 SOM data sheet DS987: 4 GB 64-bit DDR4 at 2,400 Mb/s (19.2 GB/s); XCK26 fabric as in "
                "DS987's resource table; the PL reaches the PS's DDR through four 32/64/128-bit S_AXI_HP ports "
                "(UG1085, PL-PS interfaces), each a channel of a quarter of the DDR's rate here",
         port_bytes=16, port_name="S_AXI_HP0..3_FPD"),
    Part("zcu104", "XCZU7EV", "UltraScale+", dsp=1_728, lut=230_400, ff=460_800, bram36=312, uram=96, slrs=1,
         mem_kind=MemoryKind.DDR4, mem_channels=4, mem_channel_gbps=21.3 / 4, mem_gib=2, clock_mhz=_EDGE_CLOCKS,
         source="Zynq UltraScale+ MPSoC product table DS891 (ZU7EV); ZCU104 user guide UG1267: 2 GB 64-bit PS "
                "DDR4 at 2,666 MT/s (21.3 GB/s); the PL reaches the PS's DDR through four 32/64/128-bit S_AXI_HP "
                "ports (UG1085, PL-PS interfaces), each a channel of a quarter of the DDR's rate here",
         port_bytes=16, port_name="S_AXI_HP0..3_FPD"),
)}

# FlightLLM's published U280 build (shared/reference/flightllm-facts.md: secondary source) and its measured
# LLaMA2-7B decode speed, marked on the DSE plots.
FLIGHTLLM_U280 = {"DSP": 6_345, "LUT": 574_000, "BRAM36": 1_252, "URAM": 792, "clock_mhz": 225.0,
                  "decode_tokens_per_s": 55.0}


def part(name: str) -> Part:
    if name not in PARTS:
        raise ConfigError(f"unknown FPGA part {name!r}: choose one of {', '.join(PARTS)}")
    return PARTS[name]
