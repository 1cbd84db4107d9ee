"""What one program run did, as every backend reports it: counts, cycles, and where the cycles come from."""
from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum


class CycleSource(str, Enum):
    """The provenance of a run's cycle counts."""

    NONE = "none"  # no cycles: the functional simulator computes values only
    MODELED = "modeled"  # the performance model (the RTL's timing contract)
    RTL = "rtl"  # measured on the generated RTL under Verilator
    BOARD = "board"  # counted by the kernel's own counters on an FPGA

    def describe(self, where: str = "") -> str:
        """How the tables say it: 'modeled', 'measured on the RTL', 'counted by the kernel on …'; ``where``
        names the device (a board, or what a virtual board says it is)."""
        if self is CycleSource.BOARD:
            return f"counted by the kernel on {where or 'the board'}"
        text = {CycleSource.NONE: "none", CycleSource.MODELED: "modeled", CycleSource.RTL: "measured on the RTL"}[self]
        return f"{text} ({where})" if where else text


@dataclass
class Counters:
    """What one program run did: instructions per class, MACs, bytes per memory channel, and the cycles a
    cycle-level backend counted (``cycles``: "cycles", "busy_ld", …) with their ``cycle_source``."""

    instructions: dict[str, int] = field(default_factory=dict)
    macs: int = 0
    sfu_elements: int = 0
    hbm_read: dict[int, int] = field(default_factory=dict)
    hbm_written: dict[int, int] = field(default_factory=dict)
    cycles: dict[str, int] = field(default_factory=dict)
    cycle_source: CycleSource = CycleSource.NONE
    cycles_where: str = ""  # for BOARD: which board (or what the virtual board says it is)

    def add(self, other: "Counters") -> None:
        """Accumulate another run of the same backend."""
        if self.cycle_source is CycleSource.NONE:
            self.cycle_source, self.cycles_where = other.cycle_source, other.cycles_where
        for k, v in other.instructions.items():
            self.instructions[k] = self.instructions.get(k, 0) + v
        self.macs += other.macs
        self.sfu_elements += other.sfu_elements
        for mine, theirs in ((self.hbm_read, other.hbm_read), (self.hbm_written, other.hbm_written),
                             (self.cycles, other.cycles)):
            for k, v in theirs.items():
                mine[k] = mine.get(k, 0) + v

    @property
    def total_instructions(self) -> int:
        return sum(self.instructions.values())

    @property
    def cycles_label(self) -> str:
        return self.cycle_source.describe(self.cycles_where)

    def to_dict(self) -> dict:
        """The ``counters`` object of ``flightc run --json`` (flightc/schema.py declares its keys)."""
        return {"instructions": dict(self.instructions), "macs": self.macs, "sfu_elements": self.sfu_elements,
                "hbm_read_bytes": sum(self.hbm_read.values()), "hbm_written_bytes": sum(self.hbm_written.values()),
                "hbm_read_per_channel": {str(k): v for k, v in sorted(self.hbm_read.items())},
                "cycles": dict(self.cycles) if self.cycles else None, "cycle_source": self.cycle_source.value,
                "cycles_where": self.cycles_where or None}
