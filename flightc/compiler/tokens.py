"""Pass ``tokens``: add wait/release masks so decoupled units respect every data dependency.

For each instruction, find on every other unit the latest earlier instruction whose footprint
conflicts with it (read-after-write, write-after-read, write-after-write); if that unit has not
already handed this unit a token at or after that instruction, the producer releases one and the
consumer waits on it. Token FIFOs match the k-th release with the k-th wait per unit pair, and
both sequences are increasing in program order, so each wait pops exactly the token it needs.
"""
from __future__ import annotations

import bisect

from flightc.compiler.footprints import footprint_once
from flightc.config import HardwareConfig
from flightc.errors import UnsupportedError
from flightc.isa.codec import Instruction
from flightc.isa.footprint import Access
from flightc.isa.table import Unit


Span = tuple[tuple[str, int], int, int]  # (space, first byte, one past the last)


def _spans(accesses: tuple[Access, ...]) -> list[Span]:
    return [(a.space, a.lo, a.hi) for a in accesses if a.hi > a.lo]


class LastTouch:
    """Which instruction last touched each byte of a space: disjoint ranges ``[lo, hi)`` sorted by ``lo``, each
    with the index of the latest instruction that touched it. Finding an instruction's producer is then a look at
    the ranges it overlaps, not a walk back through every earlier instruction of the unit (a 7B step's thousands of
    K/V-image stores and streamed MVs made that walk quadratic)."""

    def __init__(self) -> None:
        self.lo: list[int] = []
        self.hi: list[int] = []
        self.idx: list[int] = []

    def latest(self, lo: int, hi: int) -> int:
        """The latest index that touched a byte of ``[lo, hi)``, or -1."""
        k = bisect.bisect_right(self.hi, lo)  # the first range ending past lo
        best = -1
        while k < len(self.lo) and self.lo[k] < hi:
            best = max(best, self.idx[k])
            k += 1
        return best

    def touch(self, lo: int, hi: int, index: int) -> None:
        """Record that instruction ``index`` (later than every one recorded) touched ``[lo, hi)``."""
        k = bisect.bisect_right(self.hi, lo)
        end = k
        while end < len(self.lo) and self.lo[end] < hi:
            end += 1
        pieces = []
        if k < end and self.lo[k] < lo:  # the first overlapped range's part before, the last's part after
            pieces.append((self.lo[k], lo, self.idx[k]))
        pieces.append((lo, hi, index))
        if k < end and self.hi[end - 1] > hi:
            pieces.append((hi, self.hi[end - 1], self.idx[end - 1]))
        self.lo[k:end] = [p[0] for p in pieces]
        self.hi[k:end] = [p[1] for p in pieces]
        self.idx[k:end] = [p[2] for p in pieces]


def insert_tokens(program: list[Instruction],
                  extras: dict[int, tuple[list[Access], list[Access]]] | None = None,
                  capacity: int | None = None, cfg: HardwareConfig | None = None) -> list[Instruction]:
    """``extras[i]`` adds accesses to instruction i that its fields do not show (a barrier's exchanges).

    ``capacity`` is the config's ``token_fifo_depth``: the pass refuses a step that releases more tokens
    from one unit to another than a token counter holds. Within it a release never waits for room, and
    then in-order dispatch cannot deadlock: every instruction depends only on earlier ones, which by
    induction all dispatch and finish. (With 8-deep FIFOs, a run of K/V stores on a 3-core 7B program
    released more tokens than the FIFO held before their consumers were dispatched: the performance
    model found the deadlock; the functional simulator, with unbounded queues, cannot.) ``cfg`` locates
    streamed MVs' tiles.
    """
    units = [ins.unit for ins in program]
    access = [footprint_once(ins, cfg) for ins in program]
    for i, (r, w) in (extras or {}).items():
        access[i] = (access[i][0] + tuple(r), access[i][1] + tuple(w))
    # per instruction and space: (read spans, write spans); conflicts only happen within a space
    spaces: list[dict[tuple[str, int], tuple[list[Span], list[Span]]]] = []
    for r, w in access:
        by_space: dict[tuple[str, int], tuple[list[Span], list[Span]]] = {}
        for span in _spans(r):
            by_space.setdefault(span[0], ([], []))[0].append(span)
        for span in _spans(w):
            by_space.setdefault(span[0], ([], []))[1].append(span)
        spaces.append(by_space)
    wait = [0] * len(program)
    release = [0] * len(program)
    # per unit and space, the last instruction of that unit to write, and to read, each byte
    writes: dict[Unit, dict[tuple[str, int], LastTouch]] = {u: {} for u in Unit}
    reads: dict[Unit, dict[tuple[str, int], LastTouch]] = {u: {} for u in Unit}
    synced: dict[tuple[Unit, Unit], int] = {}  # (producer, consumer) -> producer index of the last token
    tokens: dict[tuple[Unit, Unit], int] = {}
    for i, ins in enumerate(program):
        u = units[i]
        mine = spaces[i]
        for v in Unit:
            if v is u:
                continue
            found = -1
            for space, (r_i, w_i) in mine.items():
                last_w, last_r = writes[v].get(space), reads[v].get(space)
                for _, lo, hi in (r_i + w_i) if last_w else ():  # read or write after its write
                    found = max(found, last_w.latest(lo, hi))
                for _, lo, hi in w_i if last_r else ():  # write after its read
                    found = max(found, last_r.latest(lo, hi))
            if found > synced.get((v, u), -1):
                release[found] |= 1 << int(u)
                wait[i] |= 1 << int(v)
                synced[(v, u)] = found
                tokens[(v, u)] = tokens.get((v, u), 0) + 1
        for space, (r_i, w_i) in mine.items():
            for _, lo, hi in r_i:
                reads[u].setdefault(space, LastTouch()).touch(lo, hi, i)
            for _, lo, hi in w_i:
                writes[u].setdefault(space, LastTouch()).touch(lo, hi, i)
    over = {f"{v.name}->{u.name}": n for (v, u), n in tokens.items() if capacity is not None and n > capacity}
    if over:
        raise UnsupportedError(f"tokens: one step passes {over} tokens between units, more than the token counters "
                               f"hold (token_fifo_depth {capacity}); raise token_fifo_depth in the hardware config")
    return [ins.replace(wait=wait[i], release=release[i]) for i, ins in enumerate(program)]
