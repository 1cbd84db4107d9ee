"""A timing estimate of a synthesized netlist: its deepest path between registers, in logic levels.

yosys maps the generated Verilog onto UltraScale+ primitives but neither places nor times it, so the estimate
counts levels on the mapped netlist (``write_json`` after ``synth_xilinx``): a LUT is one level (its delay and
the route into it), a carry chain a twentieth of one per CARRY4 (a tenth per CARRY8) from carry in to carry out
and half of one from its LUT-side inputs, an F7/F8/F9 multiplexer a quarter, and a DSP48E2 the levels of the
stages its configuration leaves combinational (pre-adder, multiplier, ALU), each cut where the primitive's
register for it is on.
Registers, block RAMs and UltraRAMs start and end paths (as do cells of no known kind: modules left out of
synthesis); a block RAM's read adds the clock-to-out of an unregistered output. The budget per clock
(:func:`max_levels`) assumes half a nanosecond a level and 0.6 ns a path for clock-to-out, setup and clock
uncertainty (assumptions for a -2 UltraScale+ part after placement, not datasheet figures): 7 levels at 225 MHz,
5 at 300 MHz. yosys' LUT mapping is not depth-optimal the way Vivado's is, so the estimate errs deep.
"""
from __future__ import annotations

import math
import re
from collections import defaultdict
from dataclasses import dataclass, field

LEVEL_NS = 0.5  # a LUT and the route into it (assumed)
PATH_NS = 0.6  # clock-to-out, setup and clock uncertainty of one register-to-register path (assumed)

LUTS = {f"LUT{i}" for i in range(1, 7)}
MUXF = {"MUXF7", "MUXF8", "MUXF9"}
REGISTERS = {"FDRE", "FDSE", "FDCE", "FDPE", "SRL16E", "SRLC32E"}
MEMORIES = {"RAMB36E2", "RAMB18E2", "URAM288", "RAM16X1D", "RAM32X1D", "RAM64X1D", "RAM128X1D", "RAM32M",
            "RAM32M16", "RAM64M", "RAM64M8", "RAM256X1S", "RAM512X1S"}
CONSTANT = {"GND", "VCC"}
BUFFERS = {"IBUF", "OBUF", "BUFG"}
MUXF_LEVELS = 0.25
# a carry chain, per primitive (yosys maps UltraScale+ chains as CARRY4s, four bits each, or CARRY8s): from carry
# in to carry out, and from the LUT side (S, DI) through it
CARRY_CHAIN_LEVELS = {"CARRY4": 0.05, "CARRY8": 0.1}
CARRY_ENTRY_LEVELS = 0.5
FREE = {"INV"}  # absorbed into the LUT or flip-flop it drives
MEMORY_OUT_LEVELS = 2.0  # a block RAM's clock-to-out without its output register, over a flip-flop's
# a DSP48E2's stages in order: the register that closes each (the primitive's default for it is on) and its levels
DSP_STAGES = (("ADREG", 1.5), ("MREG", 4.0), ("PREG", 2.0))  # pre-adder, multiplier, ALU
# the stage each data input enters at, and its input register (PCIN, the cascade, has none)
DSP_INPUTS = {"A": (0, "AREG"), "B": (0, "BREG"), "D": (0, "DREG"), "C": (2, "CREG"), "PCIN": (2, None),
              "CARRYIN": (2, "CARRYINREG")}
DSP_OUTPUTS = ("P", "PCOUT", "CARRYOUT", "CARRYCASCOUT")


def max_levels(clock_mhz: float) -> int:
    """The logic levels a register-to-register path may have at ``clock_mhz``."""
    return math.floor((1e3 / clock_mhz - PATH_NS) / LEVEL_NS + 1e-9)


@dataclass
class DeepestPath:
    levels: float  # the path's logic levels
    cells: list[str] = field(default_factory=list)  # the cells along it, source first (hierarchical names)
    luts: int = 0  # the LUTs among them

    def to_dict(self) -> dict:
        return {"levels": round(self.levels, 2), "luts": self.luts, "through": self.cells[:3] + self.cells[-3:]}


def _param(cell: dict, name: str, default: int = 0) -> int:
    v = cell.get("parameters", {}).get(name)
    if v is None:
        return default
    if isinstance(v, int):
        return v
    s = str(v).strip()
    return int(s, 2) if set(s) <= {"0", "1"} else (int(s) if s.isdigit() else default)


def _dsp_arcs(cell: dict) -> tuple[list[tuple[str, str, float]], dict[str, float], dict[str, float]]:
    """A DSP48E2's combinational arcs (input port, output port, levels), the levels each unregistered input adds
    before the register that ends its path, and the levels each output adds after the register that starts it."""
    mult = str(cell.get("parameters", {}).get("USE_MULT", "MULTIPLY")).strip('"') != "NONE"
    levels = [lv if (mult or i == 2) else 0.0 for i, (_, lv) in enumerate(DSP_STAGES)]
    closed = [bool(_param(cell, reg, 1)) for reg, _ in DSP_STAGES]
    outs = [p for p in DSP_OUTPUTS if cell.get("port_directions", {}).get(p) == "output"]

    def run(first: int) -> tuple[float, bool]:
        """Levels from the start of stage ``first`` to the next closed register (True) or the outputs (False)."""
        total = 0.0
        for i in range(first, len(DSP_STAGES)):
            total += levels[i]
            if closed[i]:
                return total, True
        return total, False

    arcs, ends, starts = [], {}, {}
    for port, (stage, reg) in DSP_INPUTS.items():
        if port not in cell.get("port_directions", {}) or (reg is not None and _param(cell, reg, 1)):
            continue  # an input register ends the path at the port
        total, registered = run(stage)
        if registered:
            ends[port] = total
        else:
            arcs += [(port, o, total) for o in outs]
    # paths that start inside: from an input register (A, B or D's before the pre-adder, C's before the ALU) or a
    # stage's closing register
    ports = cell.get("port_directions", {})
    begins = [stage for p, (stage, reg) in DSP_INPUTS.items()
              if p in ports and reg is not None and _param(cell, reg, 1)]
    begins += [i + 1 for i, c in enumerate(closed) if c]
    for first in begins:
        total, registered = run(first) if first < len(DSP_STAGES) else (0.0, False)
        if not registered:
            for o in outs:
                starts[o] = max(starts.get(o, 0.0), total)
    return arcs, ends, starts


def cell_kind(name: str) -> str:
    """The module kind a flattened cell's name places it in (yosys' ``$flatten\\`` prefix aside):
    'core.sfu.div.$abc$12$lut' -> 'core.sfu.div',
    'core.mpe.stream.group3.cas0_dsp1' -> 'core.mpe.stream.group' (instances of one generator share a kind)."""
    parts = re.sub(r"\$flatten\\?", "", name).replace("\\", "").split(".")
    path = []
    for part in parts[:-1]:
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", part):
            break
        path.append(re.sub(r"\d+$", "", part))
    return ".".join(path) or "top"


def deepest_paths(module: dict) -> dict[str, DeepestPath]:
    """The deepest path ending in each module kind (:func:`cell_kind` of its last cell) of a flattened module."""
    return _deepest(module, by_kind=True)


def deepest_path(module: dict) -> DeepestPath:
    """The deepest register-to-register (or port-to-port) path of a flattened module of ``write_json``."""
    return _deepest(module, by_kind=False)["all"]


def paths_over(module: dict, levels: float) -> list[DeepestPath]:
    """The deepest path into each register (or output port) whose deepest path has more than ``levels``, deepest
    first: what must be cut for a clock, not only the worst of it."""
    arrival, back, sinks = _arrivals(module)
    worst: dict[str, tuple[float, int]] = {}
    for b, after, who in sinks:
        if b in arrival and arrival[b] + after > levels and arrival[b] + after > worst.get(who, (-1.0,))[0]:
            worst[who] = (arrival[b] + after, b)
    paths = [_path(module, back, who, total, b) for who, (total, b) in worst.items()]
    return sorted(paths, key=lambda p: -p.levels)


def _path(module: dict, back: dict, who: str, total: float, b: int) -> DeepestPath:
    cells, at = [who], b
    while at is not None:
        prev, through = back[at]
        cells.append(through)
        at = prev
    cells.reverse()
    luts = sum(1 for c in cells if c in module["cells"] and module["cells"][c]["type"].lstrip("\\") in LUTS)
    return DeepestPath(total, cells, luts)


def _deepest(module: dict, by_kind: bool) -> dict[str, DeepestPath]:
    arrival, back, sinks = _arrivals(module)
    deepest: dict[str, tuple[float, int, str]] = {}
    for b, after, who in sinks:
        if b in arrival:
            key = cell_kind(who) if by_kind else "all"
            total = arrival[b] + after
            if total > deepest.get(key, (-1.0,))[0]:
                deepest[key] = (total, b, who)
    out = {key: _path(module, back, who, total, b) for key, (total, b, who) in deepest.items()}
    return out or {"all": DeepestPath(0.0)}


def _arrivals(module: dict) -> tuple[dict, dict, list]:
    """Each bit's latest arrival in levels and the arc it came through, and the bits that end paths."""
    # arcs: input bit -> [(output bit, levels, cell)]
    arcs: dict[int, list[tuple[int, float, str]]] = defaultdict(list)
    indegree: dict[int, int] = defaultdict(int)
    sources: dict[int, tuple[float, str]] = {}  # bits that start paths, with their levels
    sinks: list[tuple[int, float, str]] = []  # bits that end paths, with the levels added after them
    for name, cell in module["cells"].items():
        kind = cell["type"].lstrip("\\")
        dirs, conns = cell.get("port_directions", {}), cell["connections"]

        def bits(port):
            return [b for b in conns.get(port, []) if isinstance(b, int)]

        ins = [p for p, d in dirs.items() if d == "input"]
        outs = [p for p, d in dirs.items() if d == "output"]
        if kind in REGISTERS or kind in MEMORIES:
            start = MEMORY_OUT_LEVELS if kind.startswith(("RAMB", "URAM")) else 0.0
            for p in outs:
                for b in bits(p):
                    sources[b] = (start, name)
            for p in ins:
                sinks += [(b, 0.0, name) for b in bits(p)]
            continue
        if kind in CONSTANT or kind in BUFFERS:
            for p in outs:
                for b in bits(p):
                    sources[b] = (0.0, name)
            continue
        if kind == "DSP48E2":
            cell_arcs, ends, starts = _dsp_arcs(cell)
            for p, lv in ends.items():
                sinks += [(b, lv, name) for b in bits(p)]
            for p, lv in starts.items():
                for b in bits(p):
                    sources[b] = (lv, name)
            pairs = cell_arcs
        elif kind in CARRY_CHAIN_LEVELS:
            pairs = [(p, o, CARRY_CHAIN_LEVELS[kind] if p in ("CI", "CI_TOP", "CYINIT") else CARRY_ENTRY_LEVELS)
                     for p in ins for o in outs]
        elif kind in FREE:
            pairs = [(p, o, 0.0) for p in ins for o in outs]
        elif kind in MUXF:
            pairs = [(p, o, MUXF_LEVELS) for p in ins for o in outs]
        elif kind in LUTS:
            pairs = [(p, o, 1.0) for p in ins for o in outs]
        else:  # a module left out of synthesis (blackboxed) or another primitive: its ports end and start paths
            for p in outs:
                for b in bits(p):
                    sources[b] = (0.0, name)
            for p in ins:
                sinks += [(b, 0.0, name) for b in bits(p)]
            continue
        for p, o, lv in pairs:
            for bi in bits(p):
                for bo in bits(o):
                    arcs[bi].append((bo, lv, name))
                    indegree[bo] += 1
    for name, port in module.get("ports", {}).items():
        for b in port["bits"]:
            if not isinstance(b, int):
                continue
            if port["direction"] == "input":
                sources[b] = (0.0, f"port {name}")
            else:
                sinks.append((b, 0.0, f"port {name}"))
    # longest arrival per bit, in topological order from every bit no arc drives
    arrival: dict[int, float] = {}
    back: dict[int, tuple[int | None, str]] = {}
    ready = [b for b in set(arcs) | set(sources) if indegree.get(b, 0) == 0]
    for b in ready:
        lv, who = sources.get(b, (0.0, "undriven"))
        arrival[b], back[b] = lv, (None, who)
    remaining = dict(indegree)
    while ready:
        b = ready.pop()
        for bo, lv, who in arcs.get(b, ()):
            t = arrival[b] + lv
            if t > arrival.get(bo, -1.0):
                arrival[bo], back[bo] = t, (b, who)
            remaining[bo] -= 1
            if remaining[bo] == 0:
                ready.append(bo)
    return arrival, back, sinks
