"""The kernel clocks a search may pick: those whose logic-level budget (:func:`flightc.hw.timing.max_levels`) holds
the generator's deepest path between registers, as yosys mapped each of the kernel's units at the u280 preset's
widths (the record ``tests/test_timing.py`` keeps with the generator: a unit whose Verilog changes is synthesized
again and its entry replaced).

The units' pipelines (a register a tree level, decisions from registers) do not deepen with their widths, so the
depth measured at the u280's holds for the search's other points; the paths between units (a request through the
buffers' arbiters and back) and across SLRs are not in it (docs/dse.md).
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

from flightc.errors import ConfigError
from flightc.hw.timing import max_levels

RECORD = Path(__file__).resolve().parent / "data" / "yosys_mappings.json"
# the record's entries that are the kernel's units (it also keeps probes of the divider's variants)
KERNEL_UNITS = ("lane_group", "lane_feed", "chain_probe", "ld_lane0", "ld_lane1", "stream_out", "mpe", "sfu",
                "buffer_bank", "control", "st")

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TimingEstimate:
    """The deepest path of any of the kernel's units in logic levels, and the units that deep."""

    depth: float
    units: tuple[str, ...]

    @property
    def where(self) -> str:
        return ", ".join(self.units)

    def supports(self, clock_mhz: float) -> bool:
        return self.depth <= max_levels(clock_mhz)

    def clocks(self, offered: tuple[float, ...]) -> tuple[float, ...]:
        """The clocks of ``offered`` this depth closes at."""
        return tuple(c for c in offered if self.supports(c))


def timing_estimate(record: Path = RECORD) -> TimingEstimate:
    """The kernel's timing estimate from the record of yosys' mappings of its units."""
    try:
        entries = json.loads(record.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ConfigError(f"the timing estimate's record {record}: {e} (run `pytest tests/test_timing.py -m synth` "
                          f"to write it)") from None
    missing = [u for u in KERNEL_UNITS if u not in entries]
    if missing:
        raise ConfigError(f"the timing estimate's record {record} has no mapping of {', '.join(missing)}: run "
                          f"`pytest tests/test_timing.py -m synth` to synthesize them")
    depths = {u: max(p["levels"] for p in entries[u]["paths"].values()) for u in KERNEL_UNITS}
    depth = max(depths.values())
    return TimingEstimate(depth, tuple(u for u in KERNEL_UNITS if depths[u] == depth))


def search_clocks(offered: tuple[float, ...], asked: tuple[float, ...] | None = None,
                  estimate: TimingEstimate | None = None) -> tuple[float, ...]:
    """The clocks a search picks from: ``asked`` (a ``--space`` narrowing; a clock past the estimate is kept, with
    a warning: a what-if the user chose) or else those of the part's ``offered`` the estimate supports."""
    est = estimate or timing_estimate()
    if asked is not None:
        beyond = [c for c in asked if not est.supports(c)]
        if beyond:
            log.warning("clock %s MHz: past the timing estimate (%.2f logic levels in %s; %s MHz allows %d): the "
                        "search models it as asked", ", ".join(f"{c:g}" for c in beyond), est.depth, est.where,
                        f"{beyond[0]:g}", max_levels(beyond[0]))
        return asked
    held = est.clocks(offered)
    if not held:
        raise ConfigError(f"no clock of {', '.join(f'{c:g}' for c in offered)} MHz holds the kernel's timing "
                          f"estimate ({est.depth:.2f} logic levels in {est.where}; hw/timing.py): narrow clock_mhz "
                          f"with --space to search one anyway")
    return held
