"""The order the units run in: per-unit queues joined only by wait/release tokens.

A unit may start its next instruction once every token it waits for is in its FIFO and every FIFO it
releases into has room; whichever unit can go does, round robin, so only the tokens order the units.
The order depends on the wait/release fields alone (never on data), so one program's order serves every
program with the same tokens: :func:`token_skeleton` says when two programs share one.
"""
from __future__ import annotations

from collections import deque
from functools import lru_cache
from typing import Callable

from flightc.config import HardwareConfig
from flightc.errors import ProgramError
from flightc.isa.codec import Instruction
from flightc.isa.table import Opcode, SysOp, Unit
from flightc.sim.hazards import NUNITS, HazardChecker

Decoded = tuple[tuple[Instruction, bytes], ...]  # one core's stream: (instruction, its bytes)
Visit = Callable[[int, int, Instruction, bytes], None]  # (core, index, instruction, bytes) as it starts


@lru_cache(maxsize=1 << 12)
def token_units(wait: int, release: int) -> tuple[tuple[Unit, ...], tuple[Unit, ...]]:
    """The units an instruction waits for tokens from and releases tokens to."""
    return tuple(v for v in Unit if wait >> int(v) & 1), tuple(v for v in Unit if release >> int(v) & 1)


def _is_barrier(ins: Instruction) -> bool:
    return ins.opcode is Opcode.SYS and ins.op == SysOp.BARRIER


def token_skeleton(streams: list[Decoded]) -> tuple:
    """What the order depends on: per core, each instruction's unit, tokens and barrier id."""
    return tuple(tuple(_token_entry(ins, raw) for ins, raw in s) for s in streams)


_ENTRIES: dict[bytes, tuple[int, int, int, int]] = {}  # an instruction's bytes -> its entry (bytes decide it)


def _token_entry(ins: Instruction, raw: bytes) -> tuple[int, int, int, int]:
    entry = _ENTRIES.get(raw)
    if entry is None:
        if len(_ENTRIES) >= 1 << 16:
            _ENTRIES.clear()
        entry = _ENTRIES[raw] = (ins.unit, ins.wait, ins.release, ins.arg if _is_barrier(ins) else -1)
    return entry


def run_in_token_order(streams: list[Decoded], cfg: HardwareConfig, visit: Visit,
                       hz: HazardChecker | None = None) -> dict[str, int]:
    """Start every instruction of every core in the order the tokens allow, calling ``visit`` for each (a
    barrier's SYS instruction is not visited); ``hz``, if given, carries vector clocks on the tokens. Returns
    the instructions run per class. Refuses a program that does not end with SYS END, deadlocks, meets at
    different barriers or leaves tokens behind."""
    P = cfg.num_cores
    if len(streams) != P:
        raise ProgramError(f"{len(streams)} instruction streams for a {P}-core machine")
    queues: dict[tuple[int, Unit], deque[tuple[int, Instruction, bytes]]] = {}
    for core, instrs in enumerate(streams):
        if not instrs or instrs[-1][0].opcode is not Opcode.SYS or instrs[-1][0].op != SysOp.END:
            raise ProgramError(f"core {core}: program does not end with SYS END")
        for u in Unit:
            queues[(core, u)] = deque()
        for i, (ins, raw) in enumerate(instrs):
            queues[(core, ins.unit)].append((i, ins, raw))
    fifo = {(c, a, b): deque() for c in range(P) for a in Unit for b in Unit if a != b}
    counts: dict[str, int] = {}
    depth = cfg.token_fifo_depth
    at_barrier: dict[int, int] = {}  # core -> barrier id its SYS unit is waiting at

    def ready(core: int, u: Unit, ins: Instruction) -> bool:
        waits, rels = token_units(ins.wait, ins.release)
        return all(fifo[(core, v, u)] for v in waits) and all(len(fifo[(core, u, v)]) < depth for v in rels)

    def start(core: int, u: Unit, ins: Instruction) -> None:
        for v in token_units(ins.wait, ins.release)[0]:
            token = fifo[(core, v, u)].popleft()
            if hz:
                hz.merge(core * NUNITS + u, token)

    def finish(core: int, u: Unit, ins: Instruction) -> None:
        for v in token_units(ins.wait, ins.release)[1]:
            fifo[(core, u, v)].append(hz.snapshot(core * NUNITS + u) if hz else None)
        queues[(core, u)].popleft()
        counts[ins.cls.name] = counts.get(ins.cls.name, 0) + 1

    while any(queues.values()):
        progressed = False
        for core in range(P):
            for u in Unit:
                q = queues[(core, u)]
                while q:
                    i, ins, raw = q[0]
                    if _is_barrier(ins):
                        if core not in at_barrier and ready(core, u, ins):
                            start(core, u, ins)
                            at_barrier[core] = ins.arg
                            progressed = True
                        break
                    if not ready(core, u, ins):
                        break
                    start(core, u, ins)
                    visit(core, i, ins, raw)
                    finish(core, u, ins)
                    progressed = True
        if len(at_barrier) == P:
            if len(set(at_barrier.values())) != 1:
                raise ProgramError(f"cores meet at different barriers: {at_barrier}")
            if hz:
                hz.barrier([c * NUNITS + Unit.SYS for c in range(P)])
            for c in range(P):
                finish(c, Unit.SYS, queues[(c, Unit.SYS)][0][1])
            at_barrier.clear()
            progressed = True
        if not progressed:
            stuck = []
            for (core, u), q in queues.items():
                if q:
                    i, ins, _ = q[0]
                    need = [v.name for v in Unit if ins.wait >> int(v) & 1 and not fifo[(core, v, u)]]
                    full = [v.name for v in Unit if ins.release >> int(v) & 1 and len(fifo[(core, u, v)]) >= depth]
                    what = "is at a barrier" if core in at_barrier and u is Unit.SYS else (
                        f"waits for tokens from {need or '-'}, release FIFOs full to {full or '-'}")
                    stuck.append(f"core {core} {u.name} at instruction {i} ({ins.cls.name}) {what}")
            raise ProgramError("deadlock: " + "; ".join(stuck))
    left = {f"core{c}.{a.name}->{b.name}": len(q) for (c, a, b), q in fifo.items() if q}
    if left:
        raise ProgramError(f"unbalanced tokens: released but never waited for: {left}")
    return counts
