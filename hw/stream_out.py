"""A streamed MV's output stage: a result a cycle (raw sums a word a cycle), its requantization record, residual
and output streamed a word at a time.

The results come in row order, so every operand is a stream: the rows' records lie one after another in PRM,
REQ_ADD's residuals and every mode's results one after another in ACT or ACC. Reads fill two byte queues a word
per request (records; residuals); a result is taken with its record (and residual) from the queues' heads and
goes down a pipeline (``REQUANT_LATENCY`` cycles, hw/latency_rules.py: the product in DSP48E2s, the rounding shift,
the residual, the saturation, the activation LUT, the rotation onto its lanes) to the *gather*, which ORs it into
the word being filled; a full word (or the last partial one, at the end) waits in a queue for the buffer port,
which serves that queue first, then the record queue, then the residual queue. Taking a result never waits for
the port: the queue holds every word the results in flight may complete. A LUT (the fused activation) is copied
into the stage before the first result. Results past the tile's rows (the last lane groups' padding) are dropped.

Raw sums (ACC32, Q·Kᵀ's scores) need no operands: written from a pair-aligned address, the stage takes whole row
pairs, as many a cycle as are ready at the heads of consecutive groups' queues and fit the rest of the word
(``HardwareConfig.stream_out_pairs`` at most), so a word of scores goes a cycle (``PAIRS_OUT_LATENCY`` cycles to
the gather; their largest, for MV.out_max, settles in ``pairs_max_settle``).
"""
from __future__ import annotations

import math

from amaranth.hdl import Array, Cat, Const, Module, Mux, Signal, Value, signed
from amaranth.lib import data, wiring
from amaranth.lib.fifo import SyncFIFO
from amaranth.lib.wiring import In, Out

from flightc.config import PAIR_BYTES, Buffer, HardwareConfig
from flightc.hw.arith import delayed, saturate, times_constant
from flightc.hw.buffers import first_lanes, lane_bits, rotate_bytes, shift_bytes, word_port_signature
from flightc.hw.lut6 import mux4, select, shift
from flightc.hw.latency_rules import (OPERAND_ARRIVAL, PAIRS_OUT_LATENCY, REQUANT_LATENCY,
                                     RESULT_MAX_SETTLE, ROUNDING_LATENCY, WORD_QUEUE, WORD_QUEUE_LATENCY, pairs_max_settle)
from flightc.hw.records import REQUANT_LAYOUT
from flightc.hw.requant import rounded_product
from flightc.isa.table import BUF_ADDR_BITS, OutMode
from flightc.numerics import LUT_ENTRIES
from flightc.records import REQUANT


class ByteQueue:
    """Bytes read a word at a time from ``base`` on, taken ``take`` at a time from the head. The words land whole in
    a ring of ``slots`` word registers (the stream's first with the bytes before it, which the head starts past);
    the head is ``take`` bytes from a byte offset that only ever moves on by ``take``, so its residue modulo
    ``unit`` (the gcd of ``take`` and the word) is the base's, and it is read as ``take / unit + 1`` units chosen
    by the offset's unit index, then shifted by that residue. A word counts in ``fill`` ``OPERAND_ARRIVAL`` cycles
    after the cycle it is asked for."""

    def __init__(self, m: Module, name: str, word: int, take: int):
        self.m, self.w, self.take, self.name = m, word, take, name
        self.cap = take + 2 * word  # bytes queued or on their way, at most
        # a word lands over the word ``slots`` before it: at most ``cap - word`` bytes are queued when one lands, and
        # they end at a word's end, so they span at most ``slots - 1`` words and the head is past the one it replaces
        self.slots = 2 + -(-take // word)
        self.unit = math.gcd(take, word)
        self.units = self.slots * word // self.unit
        self.ring = [Signal(8 * word, name=f"{name}_slot{k}") for k in range(self.slots)]
        self.land = Signal(range(self.slots), name=f"{name}_land")  # the slot the next word lands in
        self.at = Signal(range(self.units), name=f"{name}_at")  # the head's unit in the ring
        self.residue = Signal(range(self.unit), name=f"{name}_residue")  # its bytes past that unit's start
        self.fill = Signal(range(self.cap + 1), name=f"{name}_fill")
        self.held = Signal(range(self.cap + 1), name=f"{name}_held")  # fill + the bytes of the words asked for
        self.next = Signal(BUF_ADDR_BITS, name=f"{name}_next")  # the next word to ask for
        self.first = Signal(name=f"{name}_first")  # the next word asked for is the stream's first
        self.end = Signal(BUF_ADDR_BITS + 1, name=f"{name}_end")  # one past the stream's last byte
        self.skip = Signal(range(word), name=f"{name}_skip")  # bytes of the first word before the stream
        self.has_take = Signal(name=f"{name}_ready")  # fill >= take
        self.want = Signal(name=f"{name}_wants")  # held + word <= cap, and next < end
        # the ``take`` bytes at the head (what they are before ``ready`` does not matter)
        units = [slot.word_select(i, 8 * self.unit) for slot in self.ring for i in range(word // self.unit)]
        window = Cat(*[select(m, f"{name}_head{j}", self.at, [units[(i + j) % self.units] for i in range(self.units)])
                       for j in range(take // self.unit + 1)])
        self.head = shift(m, f"{name}_head", window, self.residue, 8 * take, step=8, left=False)

    def start(self, base, nbytes, some) -> list:
        """The stream of ``nbytes`` bytes from ``base`` (``some``: nbytes != 0, known sooner than nbytes)."""
        lb = lane_bits(self.w)
        ub = self.unit.bit_length() - 1
        skip = base[:lb] if lb else Const(0, 1)
        return [self.fill.eq(0), self.has_take.eq(0), self.land.eq(0),
                self.at.eq(skip >> ub), self.residue.eq(base[:ub] if ub else 0),
                self.want.eq(some | (base[:lb] != 0 if lb else 0)),
                self.held.eq(0), self.next.eq(base >> lb << lb), self.first.eq(1),
                self.end.eq(base + nbytes), self.skip.eq(skip)]

    @property
    def wants(self):
        """Room for a whole word more, and words of the stream left to ask for (a register, like ``ready``)."""
        return self.want

    @property
    def ready(self):
        """``take`` bytes are queued (a register: the pop that decides it comes late in the cycle)."""
        return self.has_take

    def update(self, asked_now, arrived, word, arrived_first, pop) -> None:
        """One cycle: a word asked for, a word arrived (registered first: it joins the queue a cycle later, the
        stream's first counting without its ``skip`` bytes), ``take`` bytes popped from the head."""
        m, w, name = self.m, self.w, self.name
        if OPERAND_ARRIVAL != 1 + 1 + 1:  # the port's read, the word's register, the queue's
            raise AssertionError("the output stage's operand queues and hw/latency_rules.py disagree")
        body, got, landed = Signal(8 * w, name=f"{name}_body"), Signal(range(w + 1), name=f"{name}_got"), \
            Signal(name=f"{name}_landed")
        short = Signal(range(w + 1), name=f"{name}_short")  # w - got: the skipped bytes of the stream's first word
        m.d.sync += [body.eq(word), got.eq(Mux(arrived_first, w - self.skip, w)),
                     short.eq(Mux(arrived_first, self.skip, 0)), landed.eq(arrived)]
        with m.If(landed):
            for k, slot in enumerate(self.ring):
                with m.If(self.land == k):
                    m.d.sync += slot.eq(body)
            m.d.sync += self.land.eq(Mux(self.land == self.slots - 1, 0, self.land + 1))
        step = self.take // self.unit
        with m.If(pop):
            m.d.sync += self.at.eq(Mux(self.at >= self.units - step, self.at + step - self.units, self.at + step))
        grown = Signal(range(self.cap + 1), name=f"{name}_grown")  # the fill with the word landed, before a pop
        m.d.comb += grown.eq(self.fill + Mux(landed, got, 0))
        m.d.sync += [self.fill.eq(Mux(pop, grown - self.take, grown)),
                     self.has_take.eq(Mux(pop, grown >= 2 * self.take, grown >= self.take))]
        # ``held`` (fill + asked: the bytes queued or on their way) as it stands once the landing word's skipped
        # bytes are dropped, then moved by the cycle's late decisions (a word asked for, a pop), each way at once;
        # whether there is room for a word more next cycle, likewise
        # (each of the four outcomes worked out beside the decisions, which select one in a LUT6)
        held = Signal(range(self.cap + 1), name=f"{name}_held_now")
        m.d.comb += held.eq(self.held - Mux(landed, short, 0))
        t = self.take
        late = Cat(pop, asked_now)
        more, later = self.next < self.end, self.next + w < self.end
        m.d.sync += [self.held.eq(mux4(m, f"{name}_held_sel", late,
                                       (held, held - t, held + w, held + w - t))),
                     self.want.eq(mux4(m, f"{name}_want_sel", late,
                                       ((held <= w + t) & more, (held <= w + 2 * t) & more, (held <= t) & later,
                                        (held <= 2 * t) & later)))]
        with m.If(asked_now):
            m.d.sync += [self.next.eq(self.next + w), self.first.eq(0)]


class StreamOut(wiring.Component):
    """The output stage of a streamed MV on the MPE's word ``port``: ``start`` with the instruction's fields held;
    results in (``res_*``); ``done`` once the last result is written."""

    def __init__(self, cfg: HardwareConfig):
        self.cfg = cfg
        w = cfg.buffer_port_bytes
        super().__init__({
            "port": Out(word_port_signature(w)),
            "start": In(1), "mode": In(2), "lut": In(1), "out_max": In(1), "n": In(16), "out_addr": In(BUF_ADDR_BITS),
            "scale_addr": In(BUF_ADDR_BITS), "lut_addr": In(BUF_ADDR_BITS),
            "res_valid": In(1), "res_data": In(signed(cfg.acc_bits)), "res_row": In(17), "res_end": In(1),
            "res_pop": Out(1), "done": Out(1),
            "pair_valid": In(cfg.stream_out_pairs), "pair_data": In(2 * cfg.acc_bits * cfg.stream_out_pairs),
            "pair_take": Out(range(cfg.stream_out_pairs + 1)),
        })

    def elaborate(self, platform):
        m = Module()
        cfg = self.cfg
        w = cfg.buffer_port_bytes
        lb = lane_bits(w)
        port = self.port
        mode = self.mode
        # the mode's decisions, registered at the start (the fields are held until done)
        requant, adds, i8, wide = Signal(), Signal(), Signal(), Signal()
        mode_flags = [requant.eq(mode != int(OutMode.ACC32)), adds.eq(mode == int(OutMode.REQ_ADD)),
                      i8.eq(mode == int(OutMode.REQ_I8)),
                      wide.eq((mode == int(OutMode.ACC32)) & (self.out_addr[:PAIR_BYTES.bit_length() - 1] == 0))]
        elem = Mux(i8, 1, 4)
        rec_q = ByteQueue(m, "rec", w, REQUANT.size)
        res_q = ByteQueue(m, "resid", w, 4)
        lut = Array(Signal(8, name=f"lut{i}") for i in range(LUT_ENTRIES))
        lut_words = LUT_ENTRIES // w
        lut_asked = Signal(range(lut_words + 1))
        lut_got = Signal(range(lut_words + 1))
        # ---- completed words wait in a queue for the port; the words a result taken may complete are owed to it
        entry = data.StructLayout({"word": 8 * w, "mask": w, "addr": BUF_ADDR_BITS})
        if WORD_QUEUE_LATENCY != 1:  # a SyncFIFO's
            raise AssertionError("the output stage's word queue and hw/latency_rules.py disagree")
        m.submodules.words = words = SyncFIFO(width=entry.size, depth=WORD_QUEUE)
        head, push = entry(words.r_data), Signal(entry)
        m.d.comb += words.w_data.eq(push.as_value())
        owed = Signal(range(WORD_QUEUE + 1))  # words completed by results in flight, or queued
        owes = Signal()  # a result taken this cycle completes a word
        # results taken, not yet gathered
        inflight = Signal(range(max(REQUANT_LATENCY, PAIRS_OUT_LATENCY) + 2))
        enters, gathers = Signal(), Signal()
        credit = Signal()  # owed < WORD_QUEUE - 1: room for every word the results in flight may complete (a
        # register, uncontended always true)
        word = Signal(8 * w)  # the word being gathered, its lanes so far and its address
        mask = Signal(w)
        partial = Signal()  # mask != 0
        waddr = Signal(BUF_ADDR_BITS)
        out_buf = Mux(i8, int(Buffer.ACT), int(Buffer.ACC))
        # ---- the port: a queued word, else a LUT word, else a record word, else a residual word
        tag_rec, tag_res, tag_lut = Signal(), Signal(), Signal()
        tag_first = Signal()
        running = Signal()  # in RUN (a register of its own beside the state's)
        loading = Signal()  # copying the LUT (a register, as ``running``)
        ask_rec = running & requant & rec_q.wants
        ask_res = running & adds & res_q.wants
        ask_lut = loading & (lut_asked < lut_words)
        write_now = Signal()
        rec_now, res_now, lut_now = Signal(), Signal(), Signal()
        with m.If(words.r_rdy):
            m.d.comb += [port.req.eq(1), port.we.eq(1), port.buf.eq(out_buf), port.addr.eq(head.addr),
                         port.wdata.eq(head.word), port.wmask.eq(head.mask), write_now.eq(port.gnt),
                         words.r_en.eq(port.gnt)]
        with m.Elif(ask_lut):
            m.d.comb += [port.req.eq(1), port.buf.eq(int(Buffer.PRM)), port.addr.eq(self.lut_addr + (lut_asked << lb)),
                         lut_now.eq(port.gnt)]
        with m.Elif(ask_rec):
            m.d.comb += [port.req.eq(1), port.buf.eq(int(Buffer.PRM)), port.addr.eq(rec_q.next),
                         rec_now.eq(port.gnt)]
        with m.Elif(ask_res):
            m.d.comb += [port.req.eq(1), port.buf.eq(int(Buffer.ACC)), port.addr.eq(res_q.next),
                         res_now.eq(port.gnt)]
        m.d.sync += [tag_rec.eq(rec_now), tag_res.eq(res_now), tag_lut.eq(lut_now),
                     tag_first.eq(Mux(rec_now, rec_q.first, res_q.first))]
        with m.If(lut_now):
            m.d.sync += lut_asked.eq(lut_asked + 1)
        with m.If(tag_lut):
            m.d.sync += lut_got.eq(lut_got + 1)
            for i in range(LUT_ENTRIES):
                with m.If(lut_got == i // w):
                    m.d.sync += lut[i].eq(port.rdata.word_select(i % w, 8))
        # ---- a result a cycle taken when its operands are in (and the word queue can owe another word)
        rec = Signal(REQUANT_LAYOUT)
        m.d.comb += rec.eq(rec_q.head[:REQUANT_LAYOUT.size])
        # the tile's rows not yet taken: the results come in row order, so a result is the tile's (not the last
        # lane groups' padding) while some are left (``kept``, a register); a take of pairs writes the sums of the
        # rows below n (compared with n - c, set at the start, rather than adding c to the row)
        P = cfg.stream_out_pairs
        left, kept = Signal.like(self.n), Signal()
        n_less = [Signal(signed(len(self.n) + 1), name=f"n_less{c}") for c in range(2 * P)]
        row = Cat(self.res_row, Const(0, 1)).as_signed()
        offset, dst = Signal(BUF_ADDR_BITS), Signal(BUF_ADDR_BITS)  # the result's place past out_addr, its address
        m.d.comb += [offset.eq(Mux(elem == 1, self.res_row, self.res_row << 2)), dst.eq(self.out_addr + offset)]
        # the result's first lane, from the addresses' low bits alone (the full sum is the word's address)
        lane = Signal(max(1, lb))
        if lb:
            m.d.comb += lane.eq(self.out_addr[:lb] + offset[:lb])
        completes = Mux(elem == 1, lane == w - 1, lane == w - 4)  # the result fills its word's last lane
        operands = (~requant | rec_q.ready) & (~adds | res_q.ready)
        take = Signal()
        m.d.comb += take.eq(running & ~wide & self.res_valid & (~kept | (operands & credit)))
        m.d.comb += self.res_pop.eq(take)
        with m.If(take & kept):
            m.d.sync += [left.eq(left - 1), kept.eq(left != 1)]
        rec_q.update(rec_now, tag_rec, port.rdata, tag_first, take & kept & requant)
        res_q.update(res_now, tag_res, port.rdata, tag_first, take & kept & adds)
        best = Signal(signed(32))  # MV.out_max: the largest raw sum taken so far, written past the results at the end
        best_written = Signal()
        single = self._requantize(m, take & kept, rec, res_q.head, lane, dst >> lb << lb, completes, lut,
                                  elem, best)
        # ---- raw sums (ACC32) from a pair-aligned address: as many whole pairs a cycle as are ready and fit the
        # rest of the word (the first at res_row, which is even here)
        acc = cfg.acc_bits
        wide_lane = Signal(max(1, lb))  # (the sums are 4 bytes whatever the mode's element)
        if lb:
            m.d.comb += wide_lane.eq(self.out_addr[:lb] + (self.res_row << 2)[:lb])
        pb = PAIR_BYTES.bit_length() - 1
        word_pairs = w >> pb  # pairs a word holds; pair t of the take fits if its place in the word is below that
        at_pair = wide_lane[pb:] if lb > pb else Const(0, 1)
        wide_k = Signal(range(P + 1))
        goes = []
        for t in range(P):  # pair t goes if it and every one before it are ready, and it fits (so they do)
            go = Signal(name=f"wide_go{t}")
            m.d.comb += go.eq(self.pair_valid[:t + 1].all() & (at_pair < word_pairs - t))
            goes.append(go)
        m.d.comb += wide_k.eq(sum(goes))
        sums = Signal(8 * P * PAIR_BYTES)
        lanes_w = Signal(P * PAIR_BYTES)
        cands = []  # for the largest sum: each written one, else the smallest
        for t in range(P):
            for r in range(2):  # a sum's bytes only where it goes (the word ORs later takes' in)
                v = Signal(signed(32), name=f"wide_sum{t}_{r}")
                written = Signal(name=f"wide_goes{t}_{r}")
                m.d.comb += [v.eq(self.pair_data.word_select(2 * t + r, acc).as_signed()),
                             written.eq(goes[t] & (row < n_less[2 * t + r])),
                             sums.word_select(2 * t + r, 32).eq(Mux(written, v, 0)),
                             lanes_w.word_select(2 * t + r, 4).eq(Mux(written, 0xF, 0))]
                cands.append(Mux(written, v, -(1 << 31)))
        wide_ends = Signal()  # the take fills the word: every pair that fits goes
        m.d.comb += wide_ends.eq(Cat(*[goes[t] & (at_pair == word_pairs - 1 - t) for t in range(P)]).any())
        wide_take = Signal()
        wide_kept = Signal()  # the take writes: its first row is the tile's (the rows past come last)
        m.d.comb += wide_kept.eq(goes[0] & (row < n_less[0]))
        m.d.comb += wide_take.eq(running & wide & ~self.res_end & goes[0] & credit)
        m.d.comb += self.pair_take.eq(Mux(wide_take, wide_k, 0))
        pairs = self._place_pairs(m, wide_take & wide_kept, sums, lanes_w, wide_lane, dst >> lb << lb, wide_ends,
                                  cands, best)
        # ---- the gather: a result (or a word of pairs) joins the word; a completed word goes to the queue
        g_valid, g_placed, g_lanes, g_addr, g_completes = (Mux(wide, pv, sv) for pv, sv in zip(pairs, single))
        m.d.comb += [enters.eq((take & kept) | (wide_take & wide_kept)), gathers.eq(g_valid),
                     owes.eq((take & kept & completes) | (wide_take & wide_kept & wide_ends))]
        with m.If(g_valid):
            with m.If(g_completes):
                m.d.comb += [push.word.eq(word | g_placed), push.mask.eq(mask | g_lanes), push.addr.eq(g_addr),
                             words.w_en.eq(1)]
                m.d.sync += [word.eq(0), mask.eq(0), partial.eq(0)]
            with m.Else():
                m.d.sync += [word.eq(word | g_placed), mask.eq(mask | g_lanes), waddr.eq(g_addr), partial.eq(1)]
        # the largest sum's word, kept up to date (it is written once every result is in)
        max_at = Signal(BUF_ADDR_BITS)
        m.d.comb += max_at.eq(self.out_addr + (self.n << 2))
        max_lane = max_at[:max(1, lb)] if lb else Const(0, 1)
        max_word, max_mask = Signal(8 * w), Signal(w)
        best_word = Cat(best, Const(0, 8 * max(0, w - 4)))[:8 * w]
        m.d.sync += [max_word.eq(rotate_bytes(m, best_word, max_lane, w, "max_rotation")),
                     max_mask.eq((Const(0xF, w) << max_lane)[:w])]
        drained = Signal(init=1)  # inflight == 0 and owed == 0, a register: worked out from their next values below
        # the largest sum settles in its word pairs_max_settle cycles after the last take of pairs that writes
        settle = Signal(range(pairs_max_settle(P) + 1))
        with m.If(wide_take & wide_kept):
            m.d.sync += settle.eq(pairs_max_settle(P) - 1)
        with m.Elif(settle != 0):
            m.d.sync += settle.eq(settle - 1)
        ends = Signal()  # a word pushed at the end (the last partial one, or the largest sum's)
        # a take's word is owed from the cycle after next (its place in the word is known late in the cycle); the
        # credit leaves room for it, and the take is in flight meanwhile
        # (each outcome worked out beside the cycle's late decisions, which select one in a LUT6)
        owes_r = delayed(m, owes, 1, "owes")
        moved = Cat(write_now, owes_r | ends)
        m.d.sync += [inflight.eq(Mux(enters, inflight + 1 - gathers, inflight - gathers)),
                     owed.eq(mux4(m, "owed_sel", moved, (owed, owed - 1, owed + 1, owed))),
                     credit.eq(mux4(m, "credit_sel", moved, (owed < WORD_QUEUE - 1, owed < WORD_QUEUE,
                                                               owed < WORD_QUEUE - 2, owed < WORD_QUEUE - 1))),
                     drained.eq(mux4(m, "owed_none", moved, (owed == 0, owed == 1, Const(0, 1), owed == 0))
                                & Mux(enters, gathers & (inflight == 0), Mux(gathers, inflight == 1, inflight == 0)))]
        # ---- start, the LUT, the results, the last partial word
        with m.FSM():
            with m.State("IDLE"):
                with m.If(self.start):
                    m.d.sync += [*rec_q.start(self.scale_addr, times_constant(self.n, REQUANT.size), self.n != 0),
                                 *res_q.start(self.out_addr, self.n << 2, self.n != 0), lut_asked.eq(0), lut_got.eq(0),
                                 word.eq(0), mask.eq(0), partial.eq(0), best.eq(-(1 << 31)), best_written.eq(0),
                                 left.eq(self.n), kept.eq(self.n != 0),
                                 *[x.eq(self.n - c) for c, x in enumerate(n_less)]]
                    m.d.sync += [*mode_flags, credit.eq(1), loading.eq(self.lut & (mode == int(OutMode.REQ_I8)))]
                    m.next = "LUT"
            with m.State("LUT"):
                with m.If(~loading | (lut_got == lut_words)):
                    m.d.sync += [running.eq(1), loading.eq(0)]
                    m.next = "RUN"
            with m.State("RUN"):
                with m.If(self.res_end & drained):
                    with m.If(partial):
                        m.d.comb += [push.word.eq(word), push.mask.eq(mask), push.addr.eq(waddr), words.w_en.eq(1),
                                     ends.eq(1)]
                        m.d.sync += [mask.eq(0), partial.eq(0)]
                    with m.Elif(self.out_max & ~best_written):
                        with m.If(settle == 0):
                            m.d.comb += [push.word.eq(max_word), push.mask.eq(max_mask),
                                         push.addr.eq(max_at >> lb << lb), words.w_en.eq(1), ends.eq(1)]
                            m.d.sync += best_written.eq(1)
                    with m.Else():
                        m.d.comb += self.done.eq(1)
                        m.d.sync += running.eq(0)
                        m.next = "IDLE"
        return m

    def _requantize(self, m: Module, valid, rec, residual, lane, addr, completes, lut, elem, best) -> tuple:
        """A result taken this cycle through the requantization's pipeline (``REQUANT_LATENCY`` cycles): (valid,
        its bytes placed on its lanes, the lanes, the word's address, whether it completes the word) at the end."""
        cfg, w, mode = self.cfg, self.cfg.buffer_port_bytes, self.mode

        def reg(value, name: str, shape=None):
            r = Signal(shape if shape is not None else Value.cast(value).shape(), name=f"rq_{name}")
            m.d.sync += r.eq(value)
            return r

        side = Cat(valid, lane, addr, completes)  # what travels beside the arithmetic
        raw = reg(self.res_data, "raw")
        bias, mult, shift = reg(rec.bias, "bias"), reg(rec.mult, "mult"), reg(rec.shift, "shift")
        resid = reg(residual.as_signed(), "resid")
        if RESULT_MAX_SETTLE != 1 + 1 + 1:  # ``raw``'s register, ``best``'s, the max word's
            raise AssertionError("the output stage's largest sum and hw/latency_rules.py disagree")
        with m.If(delayed(m, valid, 1, "rq_best") & (raw > best)):
            m.d.sync += best.eq(raw)
        rounded = rounded_product(m, "rq", raw, bias, mult, shift, cfg.acc_bits)
        resid_r = delayed(m, resid, ROUNDING_LATENCY, "rq_resid")
        summed = reg(Mux(mode == int(OutMode.REQ_ADD), resid_r + rounded, rounded), "summed", signed(73))
        raw_r = delayed(m, raw, ROUNDING_LATENCY + 1, "rq_raw")
        pre = Signal(32, name="rq_pre")
        with m.Switch(mode):
            with m.Case(int(OutMode.ACC32)):
                m.d.comb += pre.eq(raw_r)
            with m.Case(int(OutMode.REQ_I8)):
                m.d.comb += pre.eq(saturate(summed, 8))
            with m.Default():
                m.d.comb += pre.eq(saturate(summed, 32))
        pre = reg(pre, "pre_r")
        # the activation LUT in two steps of sixteen entries (one 256-way multiplexer is 9 levels as yosys maps it)
        index = pre[:8] ^ 0x80
        sixteens = [reg(Array(lut[16 * i:16 * i + 16])[index[:4]], f"lut16_{i}", 8) for i in range(len(lut) // 16)]
        high, pre = reg(index[4:], "lut_high"), reg(pre, "pre_2")
        result = reg(Mux(self.lut & (mode == int(OutMode.REQ_I8)), Array(sixteens)[high], pre), "result", 32)
        side = delayed(m, side, REQUANT_LATENCY - 1, "rq_side")
        s_valid, s_lane = side[0], side[1:1 + len(lane)]
        s_addr, s_completes = side[1 + len(lane):1 + len(lane) + BUF_ADDR_BITS], side[-1]
        only = Mux(elem == 1, result[:8], result)  # an INT8 result's sign must not spill into the next lanes
        only_word = Cat(only, Const(0, 8 * max(0, w - 4)))[:8 * w]
        placed = reg(rotate_bytes(m, only_word, s_lane, w, "result_rotation"), "placed", 8 * w)
        lanes = reg((first_lanes(elem, w) << s_lane)[:w], "lanes", w)
        return (delayed(m, s_valid, 1, "rq_valid"), placed, lanes, delayed(m, s_addr, 1, "rq_addr"),
                delayed(m, s_completes, 1, "rq_completes"))

    def _place_pairs(self, m: Module, valid, sums, lanes, lane, addr, ends, cands, best) -> tuple:
        """A word's worth of row pairs taken this cycle, shifted onto their lanes (``PAIRS_OUT_LATENCY`` cycles; the
        largest of ``cands`` is folded into ``best`` a tree level a cycle): (valid, bytes, lanes, address,
        completes) at the end."""
        w = self.cfg.buffer_port_bytes
        if PAIRS_OUT_LATENCY != 2:  # the sums' registers, their shift's
            raise AssertionError("the output stage's pairs and hw/latency_rules.py disagree")

        def reg(value, name: str, shape=None):
            r = Signal(shape if shape is not None else Value.cast(value).shape(), name=f"wp_{name}")
            m.d.sync += r.eq(value)
            return r

        v1, sums1, lanes1, lane1 = reg(valid, "valid"), reg(sums, "sums"), reg(lanes, "lanes"), reg(lane, "lane")
        side1 = reg(Cat(addr, ends), "side")
        placed = reg(shift_bytes(m, sums1, lane1, w, left=True), "placed", 8 * w)
        mask = reg((lanes1 << lane1)[:w], "mask", w)
        side = delayed(m, Cat(v1, side1), 1, "wp_side")
        # the largest sum: pairwise, a compare a cycle (a sum not written counts as the smallest), then ``best``
        level = [reg(c, f"cand{i}", signed(32)) for i, c in enumerate(cands)]
        depth = 0
        while len(level) > 1:
            depth += 1
            level = [reg(Mux(level[i + 1] > level[i], level[i + 1], level[i]) if i + 1 < len(level) else level[i],
                         f"max{depth}_{i // 2}", signed(32)) for i in range(0, len(level), 2)]
        if 1 + depth + 1 + 1 != pairs_max_settle(self.cfg.stream_out_pairs):  # (best, then the word)
            raise AssertionError("the largest sum's tree and hw/latency_rules.py disagree")
        with m.If(delayed(m, v1, depth, "wp_best") & (level[0] > best)):
            m.d.sync += best.eq(level[0])
        return side[0], placed, mask, side[1:1 + BUF_ADDR_BITS], side[-1]
