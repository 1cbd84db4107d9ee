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


Span = tuple[tuple[str, int], int, int]  # (space, first byte, one past the last)


def _spans(accesses: list[Access]) -> list[Span]:
    return [(a.space, a.lo, a.hi) for a in accesses if a.hi > a.lo]


def _hit(xs: list[Span], ys: list[Span]) -> bool:
    for s1, lo1, hi1 in xs:
        for s2, lo2, hi2 in ys:
            if lo1 < hi2 and lo2 < hi1 and s1 == s2:
                return True
    return False


def insert_tokens(program: list[Instruction],
                  extras: dict[int, tuple[list[Access], list[Access]]] | None = None,
                  depth: int = 8) -> list[Instruction]:
    """``extras[i]`` adds accesses to instruction i that its fields do not show (a barrier's exchanges).

    ``depth`` is the token FIFO depth. The hardware dispatches in program order into short queues, so
    a unit that must release its (k)-th token to another before that unit has dispatched the wait for
    its (k - depth)-th would stall dispatch for good; the pass then releases from the producer's
    latest instruction instead (a later, coarser sync point that keeps releases and waits
    interleaved).
    """
    units = [ins.unit for ins in program]
    access = [footprint(ins) for ins in program]
    for i, (r, w) in (extras or {}).items():
        access[i] = (access[i][0] + r, access[i][1] + w)
    reads = [_spans(r) for r, _ in access]
    writes = [_spans(w) for _, w in access]
    touched = [rd + wr for rd, wr in zip(reads, writes)]
    wait = [0] * len(program)
    release = [0] * len(program)
    by_unit: dict[Unit, list[int]] = {u: [] for u in Unit}
    synced: dict[tuple[Unit, Unit], int] = {}  # (producer, consumer) -> producer index of the last token
    waits_of: dict[tuple[Unit, Unit], list[int]] = {}  # (producer, consumer) -> consumer indices that wait
    for i, ins in enumerate(program):
        u = units[i]
        for v, history in by_unit.items():
            if v is u or not history:
                continue
            floor = synced.get((v, u), -1)
            for j in reversed(history):
                if j <= floor:
                    break
                if _hit(writes[j], touched[i]) or _hit(reads[j], writes[i]):
                    waited = waits_of.setdefault((v, u), [])
                    if len(waited) >= depth and waited[len(waited) - depth] > j:
                        j = history[-1]
                    release[j] |= 1 << int(u)
                    wait[i] |= 1 << int(v)
                    synced[(v, u)] = j
                    waited.append(i)
                    break
        by_unit[u].append(i)
    return [ins.replace(wait=wait[i], release=release[i]) for i, ins in enumerate(program)]
