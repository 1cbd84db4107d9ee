"""The timing contract of a streamed MV (MV.w_stream): its datapath stepped a cycle at a time.

``hw/stream.py``, ``hw/lane_feed.py``, ``hw/lane_group.py`` and ``hw/stream_out.py`` are small state machines
that hand data to each other through queues with holds; their interplay (a feed held while two results wait, the
output stage sharing one buffer port among record reads, residual reads and result writes) is what decides the
cycles, so this model steps the same machines a cycle at a time instead of adding rates: the activation copy,
each group's reader (a burst asked for while its FIFO has room and a slot is free, answered after the memory's
latency), feed (a beat, or a chunk, a cycle: :func:`flightc.compress.stream.feed_step`), lane-group pipeline and result queue, and the output stage. It
costs microseconds a cycle: right for the calibration programs; a 7B step needs a closed form checked against
this one.

Conventions as in :mod:`.timing`: busy runs from the cycle after the MPE accepts the instruction (state T, cycle 0
here) to the cycle it reports done. An uncontended run: the MPE's buffer port is granted every cycle it asks, and
no other reader shares the masters.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

from flightc.compress.stream import block_columns, chunk_stride, feed_step
from flightc.config import PAIR_BYTES, HardwareConfig
from flightc.hw.latency_rules import (LANE_GROUP_LATENCY, OPERAND_ARRIVAL, PAIRS_OUT_LATENCY, REQUANT_LATENCY,
                                     RESULT_MAX_SETTLE, RESULTS_AHEAD, WORD_QUEUE_LATENCY, pairs_max_settle)
from flightc.isa.codec import Instruction
from flightc.isa.footprint import out_elem_bytes, stream_k, stream_shape
from flightc.isa.table import OutMode
from flightc.numerics import LUT_ENTRIES
from flightc.records import REQUANT
from flightc.sim.perf.load import beat_gap

# a pair's last chunk decided in cycle e reaches its lane group in e + 1, whose sums are in the group's result queue
# the cycle after they leave it
RESULT_AT = 1 + LANE_GROUP_LATENCY + 1
FIFO_LATENCY = 2  # a beat arriving in cycle a can be popped from the reader's FIFO (SyncFIFOBuffered) in a + 2


@dataclass
class _Group:
    """One lane group: its reader's bursts and beats, its feed's state, its results."""

    bursts: int  # left to ask for
    pairs_left: int
    chunks_left: int
    blk_left: int
    arrivals: list = field(default_factory=list)  # the cycle each beat asked for arrives
    popped: int = 0
    credit: int = 0  # beats asked for and not popped (the reader's `asked`)
    slots: list = field(default_factory=list)  # last beat of each burst in flight
    x_free: float = -math.inf  # the memory's next free beat
    state: str = "IDLE"
    held: int = 0  # bytes of the block's stream in the feed's window, past the chunks it has sent
    emitted: list = field(default_factory=list)  # cycles a pair's last chunk was decided (in order)
    pops: list = field(default_factory=list)  # cycles a pair's results left the queue (in order)
    seen: list = field(default_factory=lambda: [0, 0, 0])  # emitted with e + 2 <= t, with e + RESULT_AT <= t; pops < t

    def beat_ready(self, t: int) -> bool:
        return self.popped < len(self.arrivals) and self.arrivals[self.popped] + FIFO_LATENCY <= t

    def advance(self, t: int) -> None:
        """Move the counts on to cycle ``t`` (cycles only increase)."""
        k = self.seen
        while k[0] < len(self.emitted) and self.emitted[k[0]] + 2 <= t:
            k[0] += 1
        while k[1] < len(self.emitted) and self.emitted[k[1]] + RESULT_AT <= t:
            k[1] += 1
        while k[2] < len(self.pops) and self.pops[k[2]] < t:
            k[2] += 1

    def queued(self, t: int) -> int:
        """Results in the group's queue (the FIFO's level) in cycle ``t``."""
        self.advance(t)
        return self.seen[1] - self.seen[2]

    def coming(self, t: int) -> int:
        """Pairs past their last chunk whose sums are not yet in the queue (the RTL's `coming` register)."""
        self.advance(t)
        return self.seen[0] - self.seen[1]


class _Queue:
    """One of the output stage's byte queues (records, residuals): fill and bytes asked for, as registers."""

    def __init__(self, base: int, nbytes: int, w: int, take: int):
        self.w, self.take, self.cap = w, take, take + 2 * w
        self.next, self.end, self.skip = base // w * w, base + nbytes, base % w
        self.first = True
        self.fill = self.asked = 0
        self.changes: list[tuple[int, int, int]] = []  # (cycle it shows, fill delta, asked delta)

    def wants(self) -> bool:
        return self.fill + self.asked + self.w <= self.cap and self.next < self.end

    def ask(self, t: int) -> None:
        got = self.w - self.skip if self.first else self.w
        self.first = False
        self.next += self.w
        self.changes += [(t + 1, 0, self.w), (t + OPERAND_ARRIVAL, got, -self.w)]

    def tick(self, t: int) -> None:
        for c in [c for c in self.changes if c[0] == t]:
            self.fill += c[1]
            self.asked += c[2]
            self.changes.remove(c)


@dataclass
class Ahead:
    """A streamed MV's readers may start ahead of it (hw/mpe.py): once every reader of the streamed MV before has
    asked for all of its bursts and its own tokens are in, if both tiles fit the readers' FIFOs. In: ``ask_from``,
    the readers' first cycle (1 when they start with the MV; less when started ahead), and ``tail``, each master's
    next free beat after the MV before (absolute); ``began``, its cycle in state T once its tile's plan is done
    (hw/tile_plan.py: the cycle it starts, or later). Out (for the next MV): ``asked``, the first cycle every reader
    has asked for all of its bursts, ``beats_end`` by master, and ``fits``."""

    ask_from: int = 1
    tail: dict = field(default_factory=dict)
    began: int = 0
    asked: int = 0
    beats_end: dict = field(default_factory=dict)
    fits: bool = False

    def report(self, start: int, last_ask: int, x_free: dict, fit: bool) -> None:
        # cycle t of the MV is start + 1 + t; a reader's `asking` drops the cycle after its last burst
        self.asked = start + 1 + last_ask + 1
        self.beats_end = {g: start + x for g, x in x_free.items()}
        self.fits = fit


def fits(cfg: HardwareConfig, ins: Instruction) -> bool:
    """Whether a streamed MV's share of each master (padding included) fits its reader's FIFO: the tiles read
    ahead, whose readers never wait for room."""
    shape = stream_shape(cfg, ins)
    return shape.group_bytes // shape.beat <= cfg.lane_fifo_beats


def takes_pairs(ins: Instruction) -> bool:
    """Whether the output stage takes this MV's results a word of whole row pairs at a time (raw sums written from
    a pair-aligned address) rather than a result a cycle."""
    return OutMode(ins.out_mode) is OutMode.ACC32 and ins.out_addr % PAIR_BYTES == 0


def group_gap(cfg: HardwareConfig, per_group: int) -> float:
    """Cycles per beat of a lane group's master at its ``per_group`` channels' sustained rate (at least one)."""
    return max(1.0, beat_gap(cfg) / per_group)


def phases(cfg: HardwareConfig, ins: Instruction) -> tuple[int, int, int]:
    """(go, run_from, lut_words): the cycle the activation copy is done (a word asked for a cycle from cycle 1, the
    last seen two cycles on; the feeds start the cycle after), the output stage's first RUN cycle (after its copy
    of the LUT), and the LUT's words."""
    w = cfg.buffer_port_bytes
    go = stream_k(cfg, ins) // w + 2  # the copy takes whole chunks (dense rows: zeros past K)
    lut_words = LUT_ENTRIES // w if (ins.lut and OutMode(ins.out_mode) is OutMode.REQ_I8) else 0
    return go, go + 2 + (lut_words + 1 if lut_words else 0), lut_words


def streamed_mv_cycles(cfg: HardwareConfig, ins: Instruction, masters: dict | None = None, start: int = 0,
                       ahead: Ahead | None = None) -> int:
    """The MPE's busy cycles for one streamed MV started in cycle ``start``. ``masters`` (the performance model's
    LD pipelines, :class:`flightc.sim.perf.load.LoadPipeline` by master) holds what each master still has in flight
    when it starts: the readers' bursts queue behind it, and it is left holding the readers' bursts. ``ahead``:
    its readers' first cycle and its masters' last beats before it (:class:`Ahead`), filled in for the next MV."""
    shape = stream_shape(cfg, ins)
    fmt, S, B, G = shape.fmt, shape.slots, shape.beat, shape.groups
    w = cfg.buffer_port_bytes
    ub = shape.unit // B
    depth = cfg.lane_fifo_beats
    pairs, chunks = shape.pairs, shape.k // S
    stride = chunk_stride(fmt, S)
    blk_chunks = max(1, block_columns(fmt, B) // S) if fmt.group else chunks
    beats_total = shape.group_bytes // B
    latency, outstanding = cfg.mem_latency_cycles, cfg.axi_outstanding
    gap = group_gap(cfg, shape.per_group)
    mode = OutMode(ins.out_mode)
    requant, adds = mode is not OutMode.ACC32, mode is OutMode.REQ_ADD
    elem = out_elem_bytes(mode)
    wide, lim = takes_pairs(ins), min(cfg.stream_out_pairs, G)
    go, run_from, lut_words = phases(cfg, ins)
    groups = [_Group(beats_total // ub, pairs, chunks, blk_chunks) for _ in range(G)]
    first_master = cfg.master_of(ins.w_channel)
    ahead = ahead or Ahead()
    asks = [ahead.ask_from] * G  # the first cycle each reader may ask (behind what its master's LD asked before)
    for j, gr in enumerate(groups):
        p = (masters or {}).get(first_master + j)
        if p is not None:
            gr.x_free, gr.slots = p.x_free - start, [x - start for x in p.slots]
        if first_master + j in ahead.tail:  # the MV before's beats come first
            gr.x_free = max(gr.x_free, ahead.tail[first_master + j] - start)
    last_ask = ahead.ask_from - 1
    rec = _Queue(ins.scale_addr, ins.n * REQUANT.size, w, REQUANT.size)
    res = _Queue(ins.out_addr, 4 * ins.n, w, 4)
    # the output stage: the cycles its queued words are written (a word a cycle, each WORD_QUEUE_LATENCY cycles after
    # the gather that completes it), the last cycle a result in flight or a word owed keeps it busy, and whether the
    # word being gathered is partial
    writes: set[int] = set()
    busy_until = -1
    partial = max_written = False
    out_k = PAIRS_OUT_LATENCY if wide else REQUANT_LATENCY
    # the first cycle MV.out_max's word holds the largest sum taken so far
    settle = pairs_max_settle(cfg.stream_out_pairs) if wide else RESULT_MAX_SETTLE
    max_ready = -1
    q_i = j_i = r_i = 0
    out_done = None
    limit = 8 * (beats_total + 2 * pairs * G * (REQUANT.size + 8) + go + lut_words + latency) * max(1, math.ceil(gap)) \
        + 10_000
    for t in range(min(0, ahead.ask_from), limit):
        drained = all(g.bursts == 0 and g.popped == len(g.arrivals) for g in groups)  # the readers' `left`, as of t
        # ---- readers: a burst asked for in a cycle with a free slot and room in the FIFO
        for j, gr in enumerate(groups):
            gr.slots = [s for s in gr.slots if s >= t]
            if t >= asks[j] and gr.bursts and len(gr.slots) < outstanding and gr.credit + ub <= depth:
                first = max(t + latency, gr.x_free)
                beats = [math.floor(first + i * gap) for i in range(ub)]  # a beat once the throttle's credit has it
                gr.x_free = first + ub * gap
                gr.arrivals += beats
                gr.slots.append(beats[-1])
                gr.bursts -= 1
                gr.credit += ub
                asks[j] = t + 1
                last_ask = max(last_ask, t)
        # ---- feeds, from the cycle after go; once done they drop what is left of the stream (padding)
        for gr in groups:
            if t == go + 1 and pairs:
                gr.state = "MULT" if fmt.group else "CHUNKS"
            avail = gr.beat_ready(t)
            if t > go and gr.state == "IDLE":
                if avail:
                    gr.popped += 1
                    gr.credit -= 1
                continue
            hold = gr.queued(t) + gr.coming(t) >= RESULTS_AHEAD
            if gr.state == "MULT":
                if avail and not hold:
                    gr.popped += 1
                    gr.credit -= 1
                    gr.blk_left = min(gr.chunks_left, blk_chunks)
                    gr.state = "CHUNKS+"
                continue
            if gr.state != "CHUNKS":
                continue
            take, emit, after = feed_step(gr.held, stride, B)
            if hold or (take and not avail):
                continue
            if take:
                gr.popped += 1
                gr.credit -= 1
            gr.held = after
            if emit:
                pair_end, block_end = gr.chunks_left == 1, gr.blk_left == 1
                if pair_end or block_end:  # the rest of the block's last beat is padding
                    gr.held = 0
                gr.chunks_left -= 1
                gr.blk_left -= 1
                if pair_end:
                    gr.emitted.append(t)
                    gr.pairs_left -= 1
                    gr.chunks_left = chunks
                    if gr.pairs_left == 0:
                        gr.state = "IDLE+"
                    elif fmt.group:
                        gr.state = "MULT+"
                    else:
                        gr.blk_left = blk_chunks
                elif block_end:
                    gr.state = "MULT+"
        for gr in groups:
            gr.state = gr.state.rstrip("+")
        # ---- the output stage
        rec.tick(t)
        res.tick(t)
        if t >= run_from and out_done is None:
            if t not in writes:  # a queued word has the port first
                if requant and rec.wants():
                    rec.ask(t)
                elif adds and res.wants():
                    res.ask(t)
            res_end = q_i == pairs
            gr = groups[j_i]

            def joins(completes: bool) -> None:
                """A result (or a word of pairs) taken in cycle t joins its word ``out_k`` cycles on."""
                nonlocal busy_until, partial, max_ready
                if completes:
                    writes.add(t + out_k + WORD_QUEUE_LATENCY)
                busy_until = max(busy_until, t + out_k + (WORD_QUEUE_LATENCY if completes else 0))
                partial = not completes
                max_ready = t + settle

            if wide and not res_end:  # whole pairs: the ready ones at the heads of the next groups within the word
                first_row = 2 * (q_i * G + j_i)
                lane = (ins.out_addr + elem * first_row) % w
                k = 0
                while (k < lim and k < (w - lane) // PAIR_BYTES and q_i + (j_i + k >= G) < pairs
                       and groups[(j_i + k) % G].queued(t) > 0):
                    k += 1
                if k:
                    for u in range(k):
                        groups[(j_i + u) % G].pops.append(t)
                    j_i += k
                    if j_i >= G:
                        j_i, q_i = j_i - G, q_i + 1
                    if first_row < ins.n:
                        joins(lane + k * PAIR_BYTES == w)
            elif not res_end and gr.queued(t) > 0:
                row = 2 * (q_i * G + j_i) + r_i
                kept = row < ins.n
                operands = (not requant or rec.fill >= REQUANT.size) and (not adds or res.fill >= 4)
                if not kept or operands:  # (the word queue owes at most out_k + 2 words: never full)
                    if kept:
                        if requant:
                            rec.changes.append((t + 1, -REQUANT.size, 0))
                        if adds:
                            res.changes.append((t + 1, -4, 0))
                        joins((ins.out_addr + elem * row) % w + elem == w)
                    if r_i:
                        gr.pops.append(t)
                        j_i += 1
                        if j_i == G:
                            j_i, q_i = 0, q_i + 1
                    r_i ^= 1
            if res_end and t > busy_until:  # every result gathered and every word written
                if partial or (ins.out_max and not max_written):  # the last partial word, then the largest sum
                    if partial or t >= max_ready:
                        max_written = max_written or not partial
                        partial = False
                        writes.add(t + WORD_QUEUE_LATENCY)
                        busy_until = t + WORD_QUEUE_LATENCY
                else:
                    out_done = t
        # ---- S_DRAIN from the cycle after the output stage is done, until every reader's beats are popped
        if out_done is not None and t > out_done and drained:
            for j, gr in enumerate(groups):  # the masters are left with the readers' bursts
                p = (masters or {}).get(first_master + j)
                if p is not None:  # LD's bursts take turns with the reader's until its last one
                    p.shared_until = max(p.shared_until, start + gr.x_free)
            ahead.report(start, last_ask, {first_master + j: gr.x_free for j, gr in enumerate(groups)},
                         fits(cfg, ins))
            return t + 1
    raise RuntimeError(f"the streamed-MV model did not finish in {limit} cycles")
