"""Pass ``tokens``: add wait/release masks so decoupled units respect every data dependency.

For each instruction, find on every other unit the latest earlier instruction whose footprint
conflicts with it (read-after-write, write-after-read, write-after-write); if that unit has not
already handed this unit a token at or after that instruction, the producer releases one and the
consumer waits on it. Token FIFOs match the k-th release with the k-th wait per unit pair, and
both sequences are increasing in program order, so each wait pops exactly the token it needs.
"""
from __future__ import annotations

from flightc.config import HardwareConfig
from flightc.errors import UnsupportedError
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
    access = [footprint(ins, cfg) for ins in program]
    for i, (r, w) in (extras or {}).items():
        access[i] = (access[i][0] + r, access[i][1] + w)
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
    # per unit and space, the indices of that unit's instructions touching the space, in order
    history: dict[Unit, dict[tuple[str, int], list[int]]] = {u: {} for u in Unit}
    synced: dict[tuple[Unit, Unit], int] = {}  # (producer, consumer) -> producer index of the last token
    tokens: dict[tuple[Unit, Unit], int] = {}
    for i, ins in enumerate(program):
        u = units[i]
        mine = spaces[i]
        for v, per_space in history.items():
            if v is u:
                continue
            floor = synced.get((v, u), -1)
            found = -1
            for space, (r_i, w_i) in mine.items():
                for j in reversed(per_space.get(space, ())):
                    if j <= max(floor, found):
                        break
                    r_j, w_j = spaces[j][space]
                    if _hit(w_j, r_i) or _hit(w_j, w_i) or _hit(r_j, w_i):
                        found = j
                        break
            if found >= 0:
                release[found] |= 1 << int(u)
                wait[i] |= 1 << int(v)
                synced[(v, u)] = found
                tokens[(v, u)] = tokens.get((v, u), 0) + 1
        for space in mine:
            history[u].setdefault(space, []).append(i)
    over = {f"{v.name}->{u.name}": n for (v, u), n in tokens.items() if capacity is not None and n > capacity}
    if over:
        raise UnsupportedError(f"tokens: one step passes {over} tokens between units, more than the token counters "
                               f"hold (token_fifo_depth {capacity}); raise token_fifo_depth in the hardware config")
    return [ins.replace(wait=wait[i], release=release[i]) for i, ins in enumerate(program)]
