"""The hazard check done once per token structure instead of once per instruction run.

Which instruction happens before which depends on the wait/release fields alone, and a bundle's steps
share them: every step of a template has the same tokens, only the patched fields (positions, lengths)
move. A :class:`TokenPlan` runs the hazard checker (sim.hazards) over one program's footprints without
executing anything and keeps the order the units ran in, each instruction's vector clock and its accesses.
Another program with the same tokens is then checked by re-examining only the instructions whose accesses
differ (and the gathers, whose rows depend on the ids in memory): each of their accesses against every
access of an instruction no token chain orders it with, as the dynamic check would find them. The
functional simulator's fast path runs the plan's order with no per-instruction checking.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

from flightc.config import Buffer, HardwareConfig
from flightc.errors import ProgramError
from flightc.isa.codec import Instruction, decode
from flightc.isa.footprint import Access, AccessIndex, gather_rows
from flightc.isa.table import Opcode
from flightc.sim.hazards import (NUNITS, HazardChecker, check_early_tiles, check_early_writes, check_reach,
                                 early_index, early_tile_reads, memory_race, memory_writes, overwritten_read,
                                 unreleased_write)
from flightc.sim.tokens import Decoded, run_in_token_order

PAIRS_AT_ONCE = 1 << 21  # access pairs a re-check compares at a time (about 100 MB of index arrays)
_HBM_SPACE = 1 << 20  # space codes: core * len(Buffer) + buffer for on-chip buffers, _HBM_SPACE + channel


def _space_code(a: Access, core: int) -> int:
    kind, idx = a.space
    return _HBM_SPACE + idx if kind == "hbm" else core * len(Buffer) + idx


def _is_gather(ins: Instruction) -> bool:
    return ins.opcode is Opcode.LD and bool(ins.gather)


@dataclass
class TokenPlan:
    """One token structure, checked: the order to run its instructions in and what re-checking a program
    with the same tokens needs."""

    order: list[tuple[int, int]]  # (core, index) in the order the units start them
    check_s: float  # seconds the check of the reference program took
    checked: bool  # built with the hazard check (else: order only)
    ref_raw: list[list[bytes]] = field(default_factory=list)  # per core, per index: the reference's bytes
    pos: dict[tuple[int, int], int] = field(default_factory=dict)  # (core, index) -> position in order
    agent: np.ndarray | None = None  # per position
    seq: np.ndarray | None = None
    clock: np.ndarray | None = None  # [position, agent]: what the instruction had seen when it started
    accesses: list[list[tuple[Access, bool]]] = field(default_factory=list)  # per position: (access, write)
    gathers: list[int] = field(default_factory=list)  # positions of gather LDs
    ids_written: bool = False  # some instruction writes bytes a gather reads its ids from: only the slow path
    flat: tuple | None = None  # the reference's accesses as arrays (sim.static_check._flat), made on first use
    arrays: dict = field(default_factory=dict)  # (bytes, core) -> an instruction's accesses as arrays
    early: AccessIndex | None = None  # the reference's tiles read ahead of their waits (MV.w_early), by their bytes
    rivals: dict = field(default_factory=dict)  # gather position -> (space, lo, hi) of the writes it may race


def build_plan(streams: list[Decoded], cfg: HardwareConfig, check: bool, footprint_of, ids_of) -> TokenPlan:
    """Run the token order over ``streams`` without executing; with ``check``, the hazard checker over every
    instruction's footprint (``footprint_of(raw)`` -> (reads, writes); ``ids_of(ins)`` the gather's ids now in
    memory), refusing a racing program with the dynamic check's message."""
    t0 = time.perf_counter()
    order: list[tuple[int, int]] = []
    hz = HazardChecker(cfg) if check else None
    early = early_index(early_tile_reads(streams, footprint_of) if check else [])
    if check:
        check_early_writes(early, memory_writes(streams, footprint_of))
    agents, seqs, clocks, accesses = [], [], [], []

    def visit(core: int, i: int, ins: Instruction, raw: bytes) -> None:
        order.append((core, i))
        if not hz:
            return
        u = core * NUNITS + ins.unit
        reads, writes = footprint_of(raw)
        if _is_gather(ins):
            reads = tuple(reads) + tuple(gather_rows(ins, ids_of(ins)))
        hz.access(u, f"core {core} instruction {i} ({ins.cls.name})", reads, writes)
        agents.append(u)
        seqs.append(int(hz.clock[u, u]))
        clocks.append(hz.clock[u].copy())
        accesses.append([(a, False) for a in reads] + [(a, True) for a in writes])

    run_in_token_order(streams, cfg, visit, hz)
    plan = TokenPlan(order, time.perf_counter() - t0, check, early=early)
    if not check:
        return plan
    plan.ref_raw = [[raw for _, raw in s] for s in streams]
    plan.pos = {ci: p for p, ci in enumerate(order)}
    plan.agent = np.asarray(agents, np.int64)
    plan.seq = np.asarray(seqs, np.int64)
    plan.clock = np.asarray(clocks, np.int64).reshape(len(order), -1)
    plan.accesses = accesses
    plan.gathers = [p for p, (c, i) in enumerate(order) if _is_gather(streams[c][i][0])]
    writes = [a for acc in accesses for a, w in acc if w and a.space[0] == "hbm"]
    for p in plan.gathers:
        c, i = order[p]
        ids_read = footprint_of(streams[c][i][1])[0]
        plan.ids_written = plan.ids_written or any(w.intersects(r) for r in ids_read for w in writes)
    plan.check_s = time.perf_counter() - t0
    return plan


def _arrays_of(acc: list[tuple[Access, bool]], core: int) -> tuple:
    """Accesses as arrays (space code, lo, hi, write) and the accesses themselves, in that order."""
    return (np.asarray([_space_code(a, core) for a, _ in acc], np.int64), np.asarray([a.lo for a, _ in acc], np.int64),
            np.asarray([a.hi for a, _ in acc], np.int64), np.asarray([w for _, w in acc], bool),
            tuple(a for a, _ in acc))


def _flat(plan: TokenPlan) -> tuple:
    """Every access of the reference: owner position, space code, lo, hi, write, and the accesses."""
    parts = [_arrays_of(acc, int(plan.agent[p]) // NUNITS) for p, acc in enumerate(plan.accesses)]
    owner = np.repeat(np.arange(len(parts), dtype=np.int64), [len(x[0]) for x in parts])
    return (owner, *(np.concatenate([x[j] for x in parts]) for j in range(4)),
            [a for x in parts for a in x[4]])


def _instruction_arrays(ins: Instruction, raw: bytes, c: int, i: int, cfg: HardwareConfig, footprint_of,
                        ids_of) -> tuple:
    """One instruction's accesses as arrays (:func:`_arrays_of`), each checked against the limits the dynamic
    check enforces: only LD, ST and MPE instructions touch memory, buffers end where they end."""
    reads, writes = footprint_of(raw)
    if _is_gather(ins):
        reads = tuple(reads) + tuple(gather_rows(ins, ids_of(ins)))
    acc = [(a, False) for a in reads] + [(a, True) for a in writes]
    where = f"core {c} instruction {i} ({ins.cls.name})"
    for a, _ in acc:
        check_reach(cfg, c * NUNITS + ins.unit, where, a)
    return _arrays_of(acc, c)


@lru_cache(maxsize=1 << 14)
def _w_early(raw: bytes) -> int:
    """An MV's MV.w_early, from its bytes."""
    return decode(raw)[0].w_early


def check_against_plan(plan: TokenPlan, streams: list[Decoded], cfg: HardwareConfig, footprint_of, ids_of,
                       gathers_only: bool = False) -> int:
    """Refuse ``streams`` (the same tokens as the plan's reference) if an instruction whose accesses differ from
    the reference's, or a gather, races an access no token chain orders it with; returns how many
    instructions were re-examined. ``gathers_only``: these streams passed this check before, so only the gathers,
    whose rows depend on the ids now in memory, are looked at again."""
    if gathers_only and _gathers_clear(plan, streams, cfg, footprint_of, ids_of):
        return len(plan.gathers)
    changed = [] if gathers_only else [
        plan.pos[(c, i)] for c, s in enumerate(streams) for i, (ins, raw) in enumerate(s)
        if raw != plan.ref_raw[c][i] and (c, i) in plan.pos
        and (footprint_of(raw) != footprint_of(plan.ref_raw[c][i])  # same bytes touched: nothing new
             or ins.opcode is Opcode.MV and ins.w_early != _w_early(plan.ref_raw[c][i]))]
    if changed:  # a tile read ahead of its waits (MV.w_early) that a changed instruction writes, or a changed one
        moved = [(c, i, *streams[c][i]) for c, i in (plan.order[p] for p in changed)]
        if any(ins.opcode is Opcode.MV and ins.w_early for _, _, ins, _ in moved):
            check_early_tiles(streams, footprint_of)
        else:  # the reference's early tiles, less those of the changed MVs (which read ahead no more)
            at = {(c, i) for c, i, _, _ in moved}
            writes = [(a, f"core {c} instruction {i} ({ins.cls.name})") for c, i, ins, raw in moved
                      for a in footprint_of(raw)[1] if a.space[0] == "hbm"]
            check_early_writes(plan.early, writes, at)
    changed = sorted(set(changed) | set(plan.gathers))
    if not changed:
        return 0
    parts, n_objs = [], []
    for p in changed:
        c, i = plan.order[p]
        ins, raw = streams[c][i]
        if _is_gather(ins):  # its rows depend on the ids now in memory
            part = _instruction_arrays(ins, raw, c, i, cfg, footprint_of, ids_of)
        else:
            part = plan.arrays.get((raw, c))
            if part is None:
                if len(plan.arrays) >= 1 << 16:  # a long run's positions: start over rather than grow
                    plan.arrays.clear()
                part = plan.arrays[(raw, c)] = _instruction_arrays(ins, raw, c, i, cfg, footprint_of, ids_of)
        parts.append(part[:4])
        n_objs.extend(part[4])
    counts = [len(x[0]) for x in parts]
    n_owner = np.repeat(np.asarray(changed, np.int64), counts)
    n_space, n_lo, n_hi, n_write = (np.concatenate([x[j] for x in parts]) for j in range(4))
    if plan.flat is None:
        plan.flat = _flat(plan)
    r_owner, r_space, r_lo, r_hi, r_write, r_objs = plan.flat
    keep = ~np.isin(r_owner, changed)
    kept = np.flatnonzero(keep)
    owner = np.concatenate([r_owner[kept], n_owner])
    space = np.concatenate([r_space[kept], n_space])
    lo = np.concatenate([r_lo[kept], n_lo])
    hi = np.concatenate([r_hi[kept], n_hi])
    write = np.concatenate([r_write[kept], n_write])

    def access_at(k: int) -> Access:
        return r_objs[kept[k]] if k < len(kept) else n_objs[k - len(kept)]

    agent_of, seq_of = plan.agent[owner], plan.seq[owner]
    by_space = np.argsort(space, kind="stable")
    bounds = np.searchsorted(space[by_space], n_space, side="left"), np.searchsorted(space[by_space], n_space,
                                                                                     side="right")
    # a read can race only a write: skip the reads outside every write's span of their buffer or channel
    spaces, sp = np.unique(space, return_inverse=True)
    w_lo = np.full(len(spaces), np.iinfo(np.int64).max)
    w_hi = np.full(len(spaces), np.iinfo(np.int64).min)
    np.minimum.at(w_lo, sp[write], lo[write])
    np.maximum.at(w_hi, sp[write], hi[write])
    n_sp = np.searchsorted(spaces, n_space)
    suspect = (n_hi > n_lo) & (n_write | ((n_lo < w_hi[n_sp]) & (w_lo[n_sp] < n_hi)))
    suspects = np.flatnonzero(suspect)
    pairs = bounds[1][suspects] - bounds[0][suspects]  # how many accesses to the same buffer or channel each meets
    ends = np.cumsum(pairs)
    start = 0
    while start < len(suspects):  # a bounded number of pairs at a time (a 7B step's would take gigabytes at once)
        stop = max(int(np.searchsorted(ends, ends[start] - pairs[start] + PAIRS_AT_ONCE, side="right")), start + 1)
        qs, counts = suspects[start:stop], pairs[start:stop]
        start = stop
        q = np.repeat(qs, counts)  # every (changed access, access to the same buffer or channel) pair
        ks = by_space[np.repeat(bounds[0][qs], counts) + np.arange(counts.sum())
                      - np.repeat(np.cumsum(counts) - counts, counts)]
        p = n_owner[q]
        u, sq = plan.agent[p], plan.seq[p]
        racing = ((lo[ks] < n_hi[q]) & (n_lo[q] < hi[ks]) & (write[ks] | n_write[q]) & (agent_of[ks] != u)
                  # no token chain orders the two: neither instruction had seen the other when it started
                  & (plan.clock[owner[ks], u] < sq) & (plan.clock[p, agent_of[ks]] < seq_of[ks]))
        for j in np.flatnonzero(racing):
            a, k = n_objs[q[j]], int(ks[j])
            b = access_at(k)
            if not b.intersects(a):
                continue
            mine = (int(p[j]), a, bool(n_write[q[j]]))
            theirs = (int(owner[k]), b, bool(write[k]))
            later, earlier = (mine, theirs) if mine[0] > theirs[0] else (theirs, mine)  # as the slow path meets them
            raise ProgramError(_race(plan, streams, later, earlier))
    return len(changed)


def _gathers_clear(plan: TokenPlan, streams: list[Decoded], cfg: HardwareConfig, footprint_of, ids_of) -> bool:
    """Whether no row a gather reads now lies within the span of a write no token chain orders it with (the
    writes found once a plan; only the rows move with the ids): then :func:`check_against_plan` would find
    nothing, and where one does, it looks at them all and says what races."""
    if plan.flat is None:
        plan.flat = _flat(plan)
    for p in plan.gathers:
        c, i = plan.order[p]
        ins, raw = streams[c][i]
        space, lo, hi, write, _ = _instruction_arrays(ins, raw, c, i, cfg, footprint_of, ids_of)
        rivals = plan.rivals.get(p)
        if rivals is None:
            r_owner, r_space, r_lo, r_hi, r_write, _ = plan.flat
            u, sq, agent_of = plan.agent[p], plan.seq[p], plan.agent[r_owner]
            unordered = (r_write & (agent_of != u) & ~np.isin(r_owner, plan.gathers)
                         & (plan.clock[r_owner, u] < sq) & (plan.clock[p, agent_of] < plan.seq[r_owner]))
            rivals = plan.rivals[p] = (r_space[unordered], r_lo[unordered], r_hi[unordered])
        r_space, r_lo, r_hi = rivals
        if r_space.size and ((space[:, None] == r_space) & (lo[:, None] < r_hi) & (r_lo < hi[:, None])
                             & (lo < hi)[:, None]).any():
            return False
    return True


def _race(plan: TokenPlan, streams: list[Decoded], later: tuple, earlier: tuple) -> str:
    """The dynamic check's message for two unordered accesses (position, access, write), at the later one."""
    (p, a, w), (q, b, bw) = later, earlier
    c, i = plan.order[p]
    where = f"core {c} instruction {i} ({streams[c][i][0].cls.name})"
    me, them = int(plan.agent[p]), int(plan.agent[q])
    kind, idx = a.space
    if kind == "hbm":
        return memory_race(where, w, a, them)
    if w and not bw:
        return overwritten_read(where, Buffer(idx), a, them)
    first = int(np.intersect1d(a.indices(), b.indices()).min())
    return unreleased_write(where, w, Buffer(idx), first, them, me)
