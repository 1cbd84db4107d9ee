"""A streamed MV's timing a row pair at a time: the machines of :mod:`.streamed`, advanced by blocks instead of cycles.

The cycle-stepped model costs microseconds a cycle and a group; a 7B decode step is 1.7 M cycles on 32 groups. This
one takes the same machines at a coarser grain, exact where they run at their rates and close where they
interact:

- a reader's beats arrive at its master's sustained rate after the memory's latency (a closed form, valid while its
  bursts in flight cover the latency and its FIFO the bursts it asks ahead; :func:`pair_model_applies`);
- a feed's block (a multiplier beat and its chunks) finishes at the earliest cycle at which every beat was in the FIFO
  when the feed wanted it, after the previous block, and after the output stage has taken the results of the pair two
  before it (the hold);
- the output stage takes a result a cycle, in row order round the groups, each from the cycle its pair's sums are in
  the group's queue (records and residuals arrive faster than that on a port of at least 32 bytes); raw sums from a
  pair-aligned address go a word of whole pairs a cycle (:func:`.streamed.takes_pairs`).

tests/test_streamed_pairs.py holds it to the cycle-stepped model; that one is exact against the RTL
(tests/rtl/test_perf_calibration.py).
"""
from __future__ import annotations

import math

import numpy as np

from flightc.compress.stream import chunk_stride, feed_step
from flightc.config import PAIR_BYTES, HardwareConfig
from flightc.hw.latency_rules import (OPERAND_ARRIVAL, PAIRS_OUT_LATENCY, REQUANT_LATENCY, RESULT_MAX_SETTLE,
                                     RESULTS_AHEAD, WORD_QUEUE_LATENCY, pairs_max_settle)
from flightc.isa.codec import Instruction
from flightc.isa.footprint import out_elem_bytes, stream_shape
from flightc.isa.table import OutMode
from flightc.sim.perf.streamed import (FIFO_LATENCY, RESULT_AT, Ahead, fits, group_gap, phases, streamed_mv_cycles,
                                      takes_pairs)

PORT_MIN = 32  # a buffer port at least this wide feeds the output stage a record and a residual every cycle


def pair_model_applies(cfg: HardwareConfig, ins: Instruction) -> bool:
    """Whether the pair-level model's assumptions hold for this MV: a port wide enough for the output stage's
    operands, bursts in flight that cover the memory's latency, and a FIFO deep enough that asking ahead never
    waits for the feed."""
    shape = stream_shape(cfg, ins)
    ub = shape.unit // shape.beat
    gap = group_gap(cfg, shape.per_group)
    L = cfg.mem_latency_cycles
    return (cfg.buffer_port_bytes >= PORT_MIN and math.floor((ub - 1) * gap) + 1 + L <= cfg.axi_outstanding * ub * gap
            and cfg.lane_fifo_beats >= ub + L + 4)


def _block_layout(cfg: HardwareConfig, ins: Instruction):
    """Per block of a pair: (beats, consumption offset of each beat from the block's first cycle, cycles)."""
    shape = stream_shape(cfg, ins)
    fmt, S, B = shape.fmt, shape.slots, shape.beat
    stride = chunk_stride(fmt, S)
    out = []
    for cols in shape.blocks():
        nch = cols // S
        offs = [0] if fmt.group else []
        lead = 1 if fmt.group else 0
        cycles, held, sent = lead, 0, 0
        while sent < nch:  # the feed's cycles through the block, from an empty window
            take, send, held = feed_step(held, stride, B)
            if take:
                offs.append(cycles)
            sent += send
            cycles += 1
        out.append((np.array(offs, np.int64), cycles))
    return out


def streamed_mv_cycles_by_pairs(cfg: HardwareConfig, ins: Instruction, masters: dict | None = None,
                                start: int = 0, ahead: Ahead | None = None) -> int:
    """The MPE's busy cycles for one streamed MV started in cycle ``start`` (as :func:`.streamed.streamed_mv_cycles`,
    whose ``masters`` and ``ahead`` arguments this shares)."""
    ahead = ahead or Ahead()
    shape = stream_shape(cfg, ins)
    G, B = shape.groups, shape.beat
    w = cfg.buffer_port_bytes
    pairs = shape.pairs
    gap = group_gap(cfg, shape.per_group)
    L = cfg.mem_latency_cycles
    mode = OutMode(ins.out_mode)
    elem = out_elem_bytes(mode)
    go, run_from, _ = phases(cfg, ins)
    # its first operands: a record word asked in the RUN state's first cycle is there OPERAND_ARRIVAL cycles on; with
    # residuals too, those are asked once the records' queue is full, two cycles later
    first_result = run_from + {OutMode.ACC32: 0, OutMode.REQ_I8: OPERAND_ARRIVAL, OutMode.REQ_I32: OPERAND_ARRIVAL,
                               OutMode.REQ_ADD: OPERAND_ARRIVAL + 2}[mode]
    beats_total = shape.group_bytes // B
    first_master = cfg.master_of(ins.w_channel)

    # arrivals: beat i of a group is poppable from r[i] (the same for every group, shifted by its master's backlog)
    first0 = np.full(G, float(ahead.ask_from + L))
    x_init = np.full(G, -math.inf)
    for j in range(G):
        p = (masters or {}).get(first_master + j)
        if p is not None:
            x_init[j] = max(x_init[j], p.x_free - start)
        if first_master + j in ahead.tail:  # the MV before's beats come first
            x_init[j] = max(x_init[j], ahead.tail[first_master + j] - start)
    first0 = np.maximum(first0, x_init)
    i = np.arange(beats_total)
    ready = np.floor(first0.min() + i * gap).astype(np.int64) + FIFO_LATENCY  # back to back: the credit's pace
    shift = np.ceil(first0 - first0.min()).astype(np.int64)
    ub_ = shape.unit // B
    bursts = beats_total // ub_
    # a tile read ahead that its FIFO does not hold (MV.w_early while the MPE idles): a reader asks for a burst only
    # once the feed has popped enough beats to leave room for it, so the arrivals past the FIFO's worth follow the
    # pops, which follow the arrivals: worked out again until they agree
    room_bound = ahead.ask_from < 1 and not fits(cfg, ins)

    def arrivals(pops: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Each group's beats' first poppable cycles, its last burst's ask and its master's next free beat, given
        the cycles its beats are popped (as hw/stream.py's reader asks: a slot free, room in the FIFO)."""
        out = np.zeros((G, beats_total), np.int64)
        depth, outstanding = cfg.lane_fifo_beats, cfg.axi_outstanding
        x_free, a = x_init.copy(), np.full(G, ahead.ask_from - 1, np.int64)
        lasts = np.zeros((bursts, G), np.int64)
        spread = np.arange(ub_) * gap
        for b in range(bursts):
            a = np.maximum(a + 1, ahead.ask_from)
            if b >= outstanding:
                a = np.maximum(a, lasts[b - outstanding] + 1)
            need = (b + 1) * ub_ - depth
            if need > 0:
                a = np.maximum(a, pops[:, need - 1] + 1)
            first = np.maximum(a + L, x_free)
            beats = np.floor(first[:, None] + spread[None, :]).astype(np.int64)
            out[:, b * ub_:(b + 1) * ub_] = beats + FIFO_LATENCY
            lasts[b] = beats[:, -1]
            x_free = first + ub_ * gap
        return out, a, x_free

    # with nothing popped yet: the arrivals as far as the slots and a FIFO never full allow, and the asks
    first_ready, asks, x_end = arrivals(np.full((G, beats_total), -(1 << 60), np.int64))
    ready2d = first_ready if room_bound else ready[None, :] + shift[:, None]

    layout = _block_layout(cfg, ins)
    cycles = [c for _, c in layout]
    wide, lim = takes_pairs(ins), min(cfg.stream_out_pairs, G)
    jj = np.arange(G)

    def feed(ready2d: np.ndarray):
        """The feeds and the output stage over the pairs, given each group's arrivals."""
        # per block of every pair in stream order: the earliest first cycle its first beat allows, and the earliest
        # second cycle the rest of its beats allow (beat i is taken in cycle first + offset_i)
        need0, needr, at = [], [], 0
        for p in range(pairs):
            for offs, _ in layout:
                beats = ready2d[:, at:at + len(offs)] - offs
                need0.append(beats[:, 0])
                needr.append(beats[:, 1:].max(1) + 1 if len(offs) > 1 else np.full(G, -(1 << 60)))
                at += len(offs)
        need0_arr = np.array(need0, np.int64).reshape(pairs, len(layout), G)
        needr_arr = np.array(needr, np.int64).reshape(pairs, len(layout), G)
        pops2d = np.full((G, beats_total), 1 << 60, np.int64)  # the cycle each beat leaves the FIFO
        last_pop = np.full(G, go, np.int64)  # the feed's last cycle so far: it starts in the cycle after go
        e = np.zeros((pairs, G), np.int64)  # cycle each pair's last chunk is decided
        pops = np.zeros((pairs, G), np.int64)  # cycle the output stage takes each pair's second result
        prev = first_result - 1  # the output stage's last cycle
        taken = lim  # pairs taken in cycle ``prev`` (whole-pair takes)
        at = 0
        for q in range(pairs):
            t = last_pop.copy()
            for b, (offs, _) in enumerate(layout):
                first = np.maximum(t + 1, need0_arr[q, b])
                second = np.maximum(first + 1, needr_arr[q, b])
                if b == 0 and q >= RESULTS_AHEAD:
                    # the hold: RESULTS_AHEAD pairs' results waiting stop the feed, but the cycle right after the
                    # last pair's end does not count that pair yet; every later cycle waits for the pair that many
                    # before to leave
                    held = pops[q - RESULTS_AHEAD] + 1
                    first = np.where(first == t + 1, first, np.maximum(first, held))
                    second = np.maximum(second, np.maximum(first + 1, held))
                if room_bound and len(offs):
                    pops2d[:, at] = first
                    if len(offs) > 1:
                        pops2d[:, at + 1:at + len(offs)] = (second - 1)[:, None] + offs[1:][None, :]
                at += len(offs)
                t = first if cycles[b] == 1 else second + cycles[b] - 2
            e[q] = t
            last_pop = t
            ready_out = e[q] + RESULT_AT
            if wide:  # a pair joins the cycle's take if it is ready, in the same word and within the positions
                for j in range(G):
                    s_ = int(ready_out[j])
                    if s_ <= prev and (ins.out_addr + PAIR_BYTES * (q * G + j)) % w and taken < lim:
                        taken += 1
                    else:
                        prev, taken = max(s_, prev + 1), 1
                    pops[q, j] = prev
                continue
            # the output stage, a result a cycle in row order: s_j = max(s_{j-1} + 2, e_j + RESULT_AT)
            s0 = 2 * jj + np.maximum.accumulate(np.maximum(ready_out - 2 * jj, prev + 1))
            pops[q] = s0 + 1
            prev = int(pops[q, -1])
        # padding beats, a cycle each once there
        t_end = last_pop.copy()
        for k in range(pairs * shape.pair_beats, beats_total):
            t_end = np.maximum(t_end + 1, ready2d[:, k])
            pops2d[:, k] = t_end
        return pops, prev, last_pop, t_end, pops2d

    pops, prev, last_pop, t_end, pops2d = feed(ready2d)
    while room_bound:
        again, asks, x_end = arrivals(pops2d)
        if np.array_equal(again, ready2d):
            break
        ready2d = again
        pops, prev, last_pop, t_end, pops2d = feed(ready2d)

    # the end: every result gathered and every word written (a word WORD_QUEUE_LATENCY cycles after the gather that
    # completes it), then the last partial word and the largest sum, each written before the next goes
    out_k = PAIRS_OUT_LATENCY if wide else REQUANT_LATENCY
    last_kept = ins.n - 1
    if wide:  # takes of whole pairs: a take's first pair is kept, its last one ends it; does it end the word?
        flat = pops.reshape(-1)
        end = last_kept // 2
        while end + 1 < flat.size and flat[end + 1] == flat[last_kept // 2]:
            end += 1
        takes = [(int(flat[end]), (ins.out_addr + PAIR_BYTES * (end + 1)) % w == 0)]
        first = end
        while first > 0 and flat[first - 1] == flat[end]:
            first -= 1
        while not takes[-1][1] and first > 0:  # the takes before it, back to the last that completed a word
            end = first = first - 1
            while first > 0 and flat[first - 1] == flat[end]:
                first -= 1
            if (ins.out_addr + PAIR_BYTES * (end + 1)) % w == 0:
                takes.append((int(flat[end]), True))
    else:  # a result a cycle: the last kept row, and the last row that completed a word
        def taken(row: int) -> int:
            return int(pops[(row // 2) // G, (row // 2) % G]) - (1 - row % 2)

        def completes(row: int) -> bool:
            return (ins.out_addr + elem * row) % w + elem == w

        takes = [(taken(last_kept), completes(last_kept))]
        last_full = last_kept - ((ins.out_addr + elem * last_kept) % w + elem) // elem
        if not takes[0][1] and last_full >= 0:
            takes.append((taken(last_full), True))
    busy_until = max(t + out_k + (WORD_QUEUE_LATENCY if full else 0) for t, full in takes)
    out_done = max(prev + 1, busy_until + 1)
    if not takes[0][1]:  # the last partial word
        out_done += WORD_QUEUE_LATENCY + 1
    if ins.out_max:  # then the largest sum's write, past the results, once it is in its word
        settle = pairs_max_settle(cfg.stream_out_pairs) if wide else RESULT_MAX_SETTLE
        out_done = max(out_done, takes[0][0] + settle) + WORD_QUEUE_LATENCY + 1
    drain = int(t_end.max())
    end = max(out_done + 2, drain + 2)
    for j in range(G):  # LD's bursts take turns with the readers' on their masters until the last one
        p = (masters or {}).get(first_master + j)
        if p is not None:
            p.shared_until = max(p.shared_until, start + x_end[j])
    # the readers' last asks (the next MV's readers may start after them) and each master's next free beat
    ahead.report(start, int(asks.max()), {first_master + j: x_end[j] for j in range(G)}, fits(cfg, ins))
    return end


def streamed_mv_time(cfg: HardwareConfig, ins: Instruction, masters: dict | None = None, start: int = 0,
                     ahead: Ahead | None = None) -> int:
    """A streamed MV's busy cycles: by row pairs where that model applies, else a cycle at a time. A tile read
    ahead whose pairs are a beat each goes a cycle at a time too: with its beats all in, its feed would take a pair
    a cycle, where the pair model's hold (RESULTS_AHEAD results waiting) is not exact.

    Both models see ``start``, its masters' state and ``ahead`` only relative to ``start``, so an MV met again in
    the same relative state (the next step's, the next prefill chunk's) replays its outcome, kept from
    :func:`_relative_run`, instead of stepping the machines again."""
    ahead = ahead if ahead is not None else Ahead()
    first_master = cfg.master_of(ins.w_channel)
    used = range(first_master, first_master + stream_shape(cfg, ins).groups)
    pipes = {m: (masters or {}).get(m) for m in used}
    state = tuple((None if p is None else (p.x_free - start, tuple(x - start for x in p.slots)),
                   ahead.tail[m] - start if m in ahead.tail else None) for m, p in pipes.items())
    key = (cfg, ins.opcode, tuple(ins.fields.items()), state, ahead.ask_from)
    run = _RUNS.get(key)
    if run is None:
        if len(_RUNS) >= _RUNS_KEPT:
            _RUNS.clear()
        run = _RUNS[key] = _relative_run(cfg, ins, state, ahead.ask_from)
    cycles, asked, ends, fit = run
    for m, x in ends.items():  # as the models leave a master: LD takes turns with the readers until their last beat
        if pipes[m] is not None:
            pipes[m].shared_until = max(pipes[m].shared_until, start + x)
    ahead.asked, ahead.beats_end, ahead.fits = start + asked, {m: start + x for m, x in ends.items()}, fit
    return cycles


class _Pipe:
    """A master's state as the streamed-MV models read it (:class:`flightc.sim.perf.load.LoadPipeline`'s fields)."""

    def __init__(self, x_free: float, slots: tuple):
        self.x_free, self.slots, self.shared_until = x_free, list(slots), -math.inf


_RUNS: dict = {}  # _relative_run's outcomes by MV and relative state
_RUNS_KEPT = 1 << 16


def _relative_run(cfg: HardwareConfig, ins: Instruction, state: tuple, ask_from: int) -> tuple:
    """One streamed MV started in cycle 0, its masters' state (per master: (next free beat, slots) or None, the MV
    before's last beat or None) relative to its start: (cycles, ``Ahead.asked``, each master's next free beat,
    ``Ahead.fits``)."""
    first_master = cfg.master_of(ins.w_channel)
    masters = {first_master + j: _Pipe(*pipe) for j, (pipe, _) in enumerate(state) if pipe is not None}
    ahead = Ahead(ask_from=ask_from, tail={first_master + j: t for j, (_, t) in enumerate(state) if t is not None})
    fast = ahead.ask_from < 1 and stream_shape(cfg, ins).pair_beats < 2
    if pair_model_applies(cfg, ins) and not fast:
        cycles = streamed_mv_cycles_by_pairs(cfg, ins, masters, 0, ahead)
    else:
        cycles = streamed_mv_cycles(cfg, ins, masters, 0, ahead)
    return cycles, ahead.asked, dict(ahead.beats_end), ahead.fits
