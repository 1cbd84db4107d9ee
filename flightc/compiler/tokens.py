"""Pass ``tokens``: add wait/release masks so decoupled units respect every data dependency.

For each instruction, find on every other unit the latest earlier instruction whose footprint
conflicts with it (read-after-write, write-after-read, write-after-write); if that unit has not
already handed this unit a token at or after that instruction, the producer releases one and the
consumer waits on it. Token FIFOs match the k-th release with the k-th wait per unit pair, and
both sequences are increasing in program order, so each wait pops exactly the token it needs.
"""
from __future__ import annotations

from flightc.isa.codec import Instruction
from flightc.isa.footprint import Access, footprint
from flightc.isa.table import Unit


def _conflict(r1: list[Access], w1: list[Access], r2: list[Access], w2: list[Access]) -> bool:
    return any(a.overlaps(b) for a in w1 for b in r2 + w2) or any(a.overlaps(b) for a in r1 for b in w2)


def insert_tokens(program: list[Instruction],
                  extras: dict[int, tuple[list[Access], list[Access]]] | None = None) -> list[Instruction]:
    """``extras[i]`` adds accesses to instruction i that its fields do not show (a barrier's exchanges)."""
    units = [ins.unit for ins in program]
    access = [footprint(ins) for ins in program]
    for i, (r, w) in (extras or {}).items():
        access[i] = (access[i][0] + r, access[i][1] + w)
    wait = [0] * len(program)
    release = [0] * len(program)
    by_unit: dict[Unit, list[int]] = {u: [] for u in Unit}
    synced: dict[tuple[Unit, Unit], int] = {}  # (producer, consumer) -> producer index of the last token
    for i, ins in enumerate(program):
        u = units[i]
        r, w = access[i]
        for v, history in by_unit.items():
            if v is u or not history:
                continue
            floor = synced.get((v, u), -1)
            for j in reversed(history):
                if j <= floor:
                    break
                if _conflict(access[j][0], access[j][1], r, w):
                    release[j] |= 1 << int(u)
                    wait[i] |= 1 << int(v)
                    synced[(v, u)] = j
                    break
        by_unit[u].append(i)
    return [ins.replace(wait=wait[i], release=release[i]) for i, ins in enumerate(program)]
