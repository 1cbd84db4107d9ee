"""What can compute behind a virtual board (a table light enough for the CLI's help to read)."""
from __future__ import annotations

from dataclasses import dataclass

from flightc.runtime.counters import CycleSource


@dataclass(frozen=True)
class BoardBackend:
    name: str
    summary: str  # the CLI's help
    cycle_source: CycleSource  # what its cycle counters are
    cycles_where: str  # what the board says it is, beside that
    memory_mib: int  # the board's DDR by default


BOARD_BACKENDS: dict[str, BoardBackend] = {b.name: b for b in (
    BoardBackend("fsim", "the functional simulator computes, the performance model counts cycles (fast)",
                 CycleSource.MODELED, "virtual board, functional simulator",
                 512),
    # the RTL's testbench memory is the board's DDR; a small one keeps its Verilog quick to generate
    BoardBackend("rtl", "the generated Verilog under Verilator computes and counts (exact, slow)",
                 CycleSource.RTL, "virtual board under Verilator", 1),
)}
