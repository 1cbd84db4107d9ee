"""A streamed MV's output stage: a result a cycle (raw sums a word a cycle), its requantization record, residual
and output streamed a word at a time.

The results come in row order, so every operand is a stream: the rows' records lie one after another in PRM,
REQ_ADD's residuals and every mode's results one after another in ACT or ACC. Reads fill two byte queues a word
per request (records; residuals), a result takes its record (and residual) from the queues' heads, and results
gather into a word that is written, masked, once full (or at the end). The port serves a waiting write first,
then the record queue, then the residual queue. A LUT (the fused activation) is copied into the stage before the
first result. Results past the tile's rows (the last lane groups' padding) are dropped.

Raw sums (ACC32, Q·Kᵀ's scores) need no operands: written from a pair-aligned address, the stage takes whole row
pairs, as many a cycle as are ready at the heads of consecutive groups' queues and fit the rest of the word
(``HardwareConfig.stream_out_pairs`` at most), so a word of scores goes a cycle.
"""
from __future__ import annotations

from amaranth.hdl import Array, Cat, Const, Module, Mux, Signal, signed
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from flightc.config import PAIR_BYTES, Buffer, HardwareConfig
from flightc.hw.arith import round_shift, saturate, tree
from flightc.hw.buffers import first_lanes, lane_bits, rotate_bytes, shift_bytes, word_port_signature
from flightc.hw.records import REQUANT_LAYOUT
from flightc.isa.table import BUF_ADDR_BITS, OutMode
from flightc.numerics import LUT_ENTRIES
from flightc.records import REQUANT


class ByteQueue:
    """Bytes read a word at a time from ``base`` on, taken ``take`` at a time from the head. A word arriving is
    ORed in past the queued bytes, so everything past them is kept zero (cleared at the start, zeros shifted in)."""

    def __init__(self, m: Module, name: str, word: int, take: int):
        self.m, self.w, self.take = m, word, take
        self.cap = take + 2 * word
        self.data = Signal(8 * self.cap, name=f"{name}_data")
        self.fill = Signal(range(self.cap + 1), name=f"{name}_fill")
        self.asked = Signal(range(self.cap + 1), name=f"{name}_asked")  # bytes on their way (requested words)
        self.next = Signal(BUF_ADDR_BITS, name=f"{name}_next")  # the next word to ask for
        self.first = Signal(name=f"{name}_first")  # the next word asked for is the stream's first
        self.end = Signal(BUF_ADDR_BITS + 1, name=f"{name}_end")  # one past the stream's last byte
        self.skip = Signal(range(word), name=f"{name}_skip")  # bytes of the first word before the stream

    def start(self, base, nbytes) -> list:
        lb = lane_bits(self.w)
        return [self.data.eq(0), self.fill.eq(0), self.asked.eq(0), self.next.eq(base >> lb << lb), self.first.eq(1),
                self.end.eq(base + nbytes), self.skip.eq(base[:max(1, lb)] if lb else 0)]

    @property
    def wants(self):
        """Room for a whole word more, and words of the stream left to ask for."""
        return (self.fill + self.asked + self.w <= self.cap) & (self.next < self.end)

    @property
    def ready(self):
        return self.fill >= self.take

    def update(self, asked_now, arrived, word, arrived_first, pop) -> None:
        """One cycle: a word asked for, a word arrived (the stream's first drops its ``skip`` bytes), ``take``
        bytes popped from the head."""
        m, w = self.m, self.w
        got = Signal(range(w + 1), name=f"{self.data.name}_got")
        m.d.comb += got.eq(Mux(arrived, Mux(arrived_first, w - self.skip, w), 0))
        body = shift_bytes(m, word, Mux(arrived_first, self.skip, 0), w)
        kept = Signal(8 * self.cap, name=f"{self.data.name}_kept")
        m.d.comb += kept.eq(Mux(pop, self.data >> (8 * self.take), self.data))
        at = Signal(range(self.cap + 1), name=f"{self.data.name}_at")
        m.d.comb += at.eq(self.fill - Mux(pop, self.take, 0))
        placed = shift_bytes(m, Mux(arrived, body, 0), at, self.cap, left=True)
        m.d.sync += [self.data.eq(kept | placed), self.fill.eq(at + got),
                     self.asked.eq(self.asked + Mux(asked_now, w, 0) - Mux(arrived, w, 0))]
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
        requant = mode != int(OutMode.ACC32)
        adds = mode == int(OutMode.REQ_ADD)
        elem = Mux(mode == int(OutMode.REQ_I8), 1, 4)
        wide = Signal()
        m.d.comb += wide.eq((mode == int(OutMode.ACC32)) & (self.out_addr[:PAIR_BYTES.bit_length() - 1] == 0))
        rec_q = ByteQueue(m, "rec", w, REQUANT.size)
        res_q = ByteQueue(m, "resid", w, 4)
        lut = Array(Signal(8, name=f"lut{i}") for i in range(LUT_ENTRIES))
        lut_words = LUT_ENTRIES // w
        lut_asked = Signal(range(lut_words + 1))
        lut_got = Signal(range(lut_words + 1))
        # ---- the result gathered into a word; a full word waits to be written
        word = Signal(8 * w)
        mask = Signal(w)
        waddr = Signal(BUF_ADDR_BITS)
        pend, pend_word, pend_mask, pend_addr = Signal(), Signal(8 * w), Signal(w), Signal(BUF_ADDR_BITS)
        pend_buf = Mux(mode == int(OutMode.REQ_I8), int(Buffer.ACT), int(Buffer.ACC))
        # ---- the port: a waiting write, else a record word, else a residual word
        tag_rec, tag_res, tag_lut = Signal(), Signal(), Signal()
        tag_first = Signal()
        running = Signal()
        loading = Signal()
        ask_rec = running & requant & rec_q.wants
        ask_res = running & adds & res_q.wants
        ask_lut = loading & (lut_asked < lut_words)
        write_now = Signal()
        rec_now, res_now, lut_now = Signal(), Signal(), Signal()
        with m.If(pend):
            m.d.comb += [port.req.eq(1), port.we.eq(1), port.buf.eq(pend_buf), port.addr.eq(pend_addr),
                         port.wdata.eq(pend_word), port.wmask.eq(pend_mask), write_now.eq(port.gnt)]
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
        # ---- one result a cycle when its operands are in and the word it goes to can take it
        rec = Signal(REQUANT_LAYOUT)
        m.d.comb += rec.eq(rec_q.data[:REQUANT_LAYOUT.size])
        residual = Signal(signed(32))
        m.d.comb += residual.eq(res_q.data[:32])
        biased = Signal(signed(cfg.acc_bits + 2))
        m.d.comb += biased.eq(self.res_data + rec.bias)
        req = Signal(signed(72))
        m.d.comb += req.eq(round_shift((biased * rec.mult).as_signed(), rec.shift, 72))
        y8 = Signal(signed(8))
        m.d.comb += y8.eq(saturate(req, 8))
        result = Signal(32)
        with m.Switch(mode):
            with m.Case(int(OutMode.ACC32)):
                m.d.comb += result.eq(self.res_data)
            with m.Case(int(OutMode.REQ_I8)):
                m.d.comb += result.eq(Mux(self.lut, lut[(y8 + 128)[:8]], y8))
            with m.Case(int(OutMode.REQ_I32)):
                m.d.comb += result.eq(saturate(req, 32))
            with m.Case(int(OutMode.REQ_ADD)):
                m.d.comb += result.eq(saturate(residual + req, 32))
        kept = self.res_row < self.n
        dst = Signal(BUF_ADDR_BITS)
        m.d.comb += dst.eq(self.out_addr + Mux(elem == 1, self.res_row, self.res_row << 2))
        lane = dst[:max(1, lb)] if lb else Const(0, 1)
        completes = lane + elem == w  # the result fills its word's last lane
        operands = (~requant | rec_q.ready) & (~adds | res_q.ready)
        room = ~pend | write_now | ~completes
        take = Signal()
        m.d.comb += take.eq(running & ~wide & self.res_valid & (~kept | (operands & room)))
        m.d.comb += self.res_pop.eq(take)
        rec_q.update(rec_now, tag_rec, port.rdata, tag_first, take & kept & requant)
        res_q.update(res_now, tag_res, port.rdata, tag_first, take & kept & adds)
        with m.If(write_now):
            m.d.sync += pend.eq(0)
        only = Signal(32)  # the result's own bytes (an INT8 result's sign must not spill into the next lanes)
        m.d.comb += only.eq(Mux(elem == 1, result[:8], result))
        placed = rotate_bytes(m, Cat(only, Const(0, 8 * max(0, w - 4)))[:8 * w], lane, w)
        lanes = (first_lanes(elem, w) << lane)[:w]
        # ---- raw sums (ACC32) from a pair-aligned address: as many whole pairs a cycle as are ready and fit the
        # rest of the word (wide_*; the first at res_row, which is even here)
        P, acc = cfg.stream_out_pairs, cfg.acc_bits
        wide_lane = Signal(range(w))
        m.d.comb += wide_lane.eq(dst[:max(1, lb)] if lb else 0)
        fits = (w - wide_lane) >> (PAIR_BYTES.bit_length() - 1)  # whole pairs left in the word
        wide_k = Signal(range(P + 1))
        goes, run = [], Const(1)
        for t in range(P):  # pair t goes if every one before it does, it is ready and it fits
            go = Signal(name=f"wide_go{t}")
            m.d.comb += go.eq(run & self.pair_valid[t] & (t < fits))
            goes.append(go)
            run = go
        m.d.comb += wide_k.eq(sum(goes))
        sums = Signal(8 * P * PAIR_BYTES)
        lanes_w = Signal(P * PAIR_BYTES)
        for t in range(P):
            for r in range(2):  # a sum's bytes only where it goes (the word ORs later takes' in)
                v = Signal(signed(32), name=f"wide_sum{t}_{r}")
                written = Signal(name=f"wide_goes{t}_{r}")
                m.d.comb += [v.eq(self.pair_data.word_select(2 * t + r, acc).as_signed()),
                             written.eq((t < wide_k) & (self.res_row + 2 * t + r < self.n)),
                             sums.word_select(2 * t + r, 32).eq(Mux(written, v, 0)),
                             lanes_w.word_select(2 * t + r, 4).eq(Mux(written, 0xF, 0))]
        # MV.out_max: the largest raw sum taken so far, written past the results at the end
        best = Signal(signed(32))
        best_written = Signal()
        wide_best = tree([best] + [Mux(lanes_w[4 * i], sums.word_select(i, 32).as_signed(), best)
                                   for i in range(2 * P)], lambda p, q: Mux(q > p, q, p))
        wide_placed = shift_bytes(m, sums, wide_lane, w, left=True)
        wide_mask = Signal(w)
        m.d.comb += wide_mask.eq((lanes_w << wide_lane)[:w])
        wide_ends = (wide_lane + (wide_k << (PAIR_BYTES.bit_length() - 1)) == w) & (wide_mask != 0)
        wide_take = Signal()
        m.d.comb += wide_take.eq(running & wide & ~self.res_end & (wide_k != 0) & (~pend | write_now | ~wide_ends))
        m.d.comb += self.pair_take.eq(Mux(wide_take, wide_k, 0))
        with m.If(wide_take & (wide_mask != 0)):
            m.d.sync += best.eq(wide_best)
            with m.If(wide_ends):
                m.d.sync += [pend.eq(1), pend_word.eq(word | wide_placed), pend_mask.eq(mask | wide_mask),
                             pend_addr.eq(dst >> lb << lb), word.eq(0), mask.eq(0)]
            with m.Else():
                m.d.sync += [word.eq(word | wide_placed), mask.eq(mask | wide_mask), waddr.eq(dst >> lb << lb)]
        with m.If(take & kept):
            with m.If(self.res_data > best):
                m.d.sync += best.eq(self.res_data)
            with m.If(completes):
                m.d.sync += [pend.eq(1), pend_word.eq(word | placed), pend_mask.eq(mask | lanes),
                             pend_addr.eq(dst >> lb << lb), word.eq(0), mask.eq(0)]
            with m.Else():
                m.d.sync += [word.eq(word | placed), mask.eq(mask | lanes), waddr.eq(dst >> lb << lb)]
        max_at = Signal(BUF_ADDR_BITS)
        m.d.comb += max_at.eq(self.out_addr + (self.n << 2))
        max_lane = max_at[:max(1, lb)] if lb else Const(0, 1)
        max_word = rotate_bytes(m, Cat(best, Const(0, 8 * max(0, w - 4)))[:8 * w], max_lane, w)
        max_mask = (Const(0xF, w) << max_lane)[:w]
        # ---- start, the LUT, the results, the last partial word
        with m.FSM():
            with m.State("IDLE"):
                with m.If(self.start):
                    m.d.sync += [*rec_q.start(self.scale_addr, self.n * REQUANT.size),
                                 *res_q.start(self.out_addr, self.n << 2), lut_asked.eq(0), lut_got.eq(0),
                                 word.eq(0), mask.eq(0), best.eq(-(1 << 31)), best_written.eq(0)]
                    m.next = "LUT"
            with m.State("LUT"):
                m.d.comb += loading.eq(self.lut & (mode == int(OutMode.REQ_I8)))
                with m.If(~loading | (lut_got == lut_words)):
                    m.next = "RUN"
            with m.State("RUN"):
                m.d.comb += running.eq(1)
                with m.If(self.res_end & ~pend):
                    with m.If(mask != 0):
                        m.d.sync += [pend.eq(1), pend_word.eq(word), pend_mask.eq(mask), pend_addr.eq(waddr),
                                     mask.eq(0)]
                    with m.Elif(self.out_max & ~best_written):
                        m.d.sync += [pend.eq(1), pend_word.eq(max_word), pend_mask.eq(max_mask),
                                     pend_addr.eq(max_at >> lb << lb), best_written.eq(1)]
                    with m.Else():
                        m.d.comb += self.done.eq(1)
                        m.next = "IDLE"
        return m
