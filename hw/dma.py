"""What the DMA units share (the walk over an instruction's rows) and ST (buffer -> memory); LD is hw/load.py.

Both reach the memory channels through the core's AXI masters (hw/axi_master.py): LD's lanes as
readers (burst requests out, up to ``axi_outstanding`` ahead, beats back), ST as the writer of the
master its channel belongs to (``wr``). A channel's byte address is ``channel_base[ch] + hbm_addr``
(the bases are kernel arguments, as Vitis passes one buffer per HBM channel). Bursts never cross
4 KiB. ST reads a beat's bytes with the word engine and writes them as one strobed beat.
"""
from __future__ import annotations

from dataclasses import dataclass

from amaranth.hdl import Array, Cat, Const, Module, Mux, Signal, Value
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from flightc import numerics as nm
from flightc.config import HardwareConfig
from flightc.isa.table import BUF_ADDR_BITS, Opcode, Unit
from flightc.hw.address import RowAddress
from flightc.hw.axi import AXI_ADDR_BITS, write_client_signature
from flightc.hw.axi_rules import ST_PAIRED_GROUPS_LOG2
from flightc.hw.buffers import WordEngine, first_lanes, shift_bytes
from flightc.hw.store_rows import RowPlacer
from flightc.hw.unit import ExecutionUnit


def existing_channel(m: Module, channel: Value, cfg: HardwareConfig) -> Signal:
    """The instruction's channel, or 0 for one the config lacks (the functional simulator refuses those)."""
    ch = Signal(range(max(2, cfg.mem_channels)))
    m.d.comb += ch.eq(Mux(channel < cfg.mem_channels, channel, 0))
    return ch


@dataclass(frozen=True)
class RowWalk:
    """The rows a DMA instruction walks: their count, the current row's first buffer and memory address (running
    sums, :class:`flightc.hw.address.RowAddress`) and the pulse that moves to the next row."""

    count: Signal
    buf: Value
    mem: Value
    step: Signal

    def next(self, m: Module) -> None:
        m.d.sync += self.count.eq(self.count + 1)
        m.d.comb += self.step.eq(1)


class DmaUnit(ExecutionUnit):
    """LD and ST: a beat of ``axi_data_bytes`` at a time between a memory channel and a buffer."""

    def __init__(self, cfg: HardwareConfig, channel_base: list[Signal], **members: wiring.Member):
        super().__init__(cfg, **members)
        self.channel_base = channel_base
        self.beat_bytes = cfg.axi_data_bytes  # the generator builds buffer words as wide (check_rtl_config)
        self.lane_bits = self.beat_bytes.bit_length() - 1

    OPCODE: Opcode

    def elaborate(self, platform):
        """What LD and ST both walk — the instruction's fields, the rows (their count and each row's first buffer
        and memory address), the bytes left of the row, the channel bases and the channel, the buffer address
        and the memory address — then the unit's own state machine (:meth:`walk`)."""
        m = Module()
        f = self.fields(self.OPCODE)
        count = Signal.like(f.rows)
        channel, hbm_addr, stride = self.target(m, f, count)
        bases, ch = Array(self.channel_base), existing_channel(m, channel, self.cfg)
        m.submodules.buf_rows = buf_rows = RowAddress(BUF_ADDR_BITS)
        m.submodules.mem_rows = mem_rows = RowAddress(AXI_ADDR_BITS)
        rows = RowWalk(count, buf_rows.addr, mem_rows.addr, Signal())
        m.d.comb += [buf_rows.base.eq(f.buf_addr), buf_rows.stride.eq(f.buf_stride),
                     mem_rows.base.eq(bases[ch] + hbm_addr), mem_rows.stride.eq(stride)]
        for g in (buf_rows, mem_rows):
            m.d.comb += [g.restart.eq(self.start), g.step.eq(rows.step)]
        self.walk(m, f, rows, Signal.like(f.row_bytes), bases, ch, Signal(BUF_ADDR_BITS), Signal(AXI_ADDR_BITS))
        return m

    def target(self, m: Module, f, row: Signal) -> tuple[Value, Value, Value]:
        """The channel and address of the instruction's first row (or of row ``row``), and the memory stride."""
        return f.channel, f.hbm_addr, f.hbm_stride


def int4(byte):
    """An INT8 saturated to [-8, 7], as the low nibble ST.pack4 keeps (flightc.numerics.sat_i4)."""
    v = byte.as_signed()
    return Mux(v > nm.I4_MAX, nm.I4_MAX, Mux(v < nm.I4_MIN, nm.I4_MIN, v))[:4]


class StoreUnit(DmaUnit):
    """ST: ``rows`` rows of ``row_bytes`` from a buffer to a channel, one strobed beat per write burst; with
    ``pack4`` each memory byte packs two buffer bytes saturated to INT4, low nibble first (the INT4 KV cache).
    ``master``: the memory master of the instruction's channel, which takes its bursts; ``responses``: a write
    response taken from master g this cycle (every master's are always taken).

    Writes stay in flight: a burst goes as soon as its beat is formed, up to ``axi_outstanding`` waiting for their
    responses on each master. Once an instruction has sent its last write it becomes an *older* one (HANDOFF, once
    fewer than two older ones await their responses) and ST is ``ready`` for the next, whose writes go while the
    older ones' responses come back; an older one is done (its tokens released) once its last response is back.
    Up to ``ST_IN_FLIGHT`` STs (two older, one sending) are in flight, done in the order they started, as LD's
    are: a short ST (a key's two pieces) hands off at once behind a long one still awaiting its responses. An
    ST.img_col whose rows are consecutive buffer bytes reads a word of them at once and forms a row's beat every other cycle from it, but
    the first row of a pair in the cycle after the row before's write (``live``) where the image deals its pairs
    round several groups (that row's master is another, and so each master still takes a beat at most every other
    cycle); with an even number of rows over such groups it walks the pairs' first rows, then their second rows
    (``dealt``: every other byte of the word), each row's beat in the cycle after the one before's. Over
    ``2^ST_PAIRED_GROUPS_LOG2`` groups or more, a dealt column's rows after a word's first go two a cycle: the
    walk's next row on the second writer (``wr2``, to ``master2``), so that a value column of a 128-wide head is
    sent in about half the cycles."""

    UNIT, OPCODE = Unit.ST, Opcode.ST

    def __init__(self, cfg: HardwareConfig, channel_base: list[Signal]):
        master_bits = max(1, (cfg.axi_masters - 1).bit_length())
        super().__init__(cfg, channel_base, wr=Out(write_client_signature(8 * cfg.axi_data_bytes)),
                         wr2=Out(write_client_signature(8 * cfg.axi_data_bytes)), master=Out(master_bits),
                         master2=Out(master_bits), responses=In(cfg.axi_masters), ready=Out(1))

    def elaborate(self, platform):
        """The rows' places worked out ahead (hw/store_rows.py), then the writer's state machine (:meth:`walk`)."""
        m = Module()
        f = self.fields(self.OPCODE)
        # an img_col of consecutive bytes over pairs dealt round several masters walks the pairs' first rows, then
        # their second rows, so every row's master is another than the row before's (``dealt``)
        self.column = f.img & f.img_col & ~f.pack4 & (f.buf_stride == 1) & (f.row_bytes == 1)  # a byte a row
        self.dealt = self.column & (f.img_groups_log2 != 0) & ~f.rows[0]
        m.submodules.places = places = self.places = RowPlacer(self.cfg, f, self.channel_base, self.column, self.dealt)
        m.d.comb += places.restart.eq(self.start)
        self.walk(m, f, places)
        return m

    def walk(self, m, f, places: RowPlacer) -> None:
        cfg, wr, wr2, w, lb = self.cfg, self.wr, self.wr2, self.beat_bytes, self.lane_bits
        G, limit = cfg.axi_masters, cfg.axi_outstanding
        count = Signal.like(f.rows)  # the walk's rows sent: places.head is row ``count``, places.second the next
        src, dst, left = Signal(BUF_ADDR_BITS), Signal(AXI_ADDR_BITS), Signal.like(f.row_bytes)
        dst2 = places.second.mem  # the second writer's row: the walk's next
        m.d.comb += [self.master.eq(places.head.master), self.master2.eq(places.second.master)]
        moved, moved2 = Signal(), Signal()  # the walk moves past a row (or two) this cycle

        def next_row() -> None:
            m.d.sync += count.eq(count + 1)
            m.d.comb += moved.eq(1)

        m.d.comb += places.take.eq(Mux(moved2, 2, moved))
        m.submodules.eng = eng = WordEngine(cfg.buffer_port_bytes, max_bytes=2 * w)  # pack4: two bytes a byte
        wiring.connect(m, wiring.flipped(self.port), eng.port)
        # ---- responses outstanding per master
        pending = [Signal(range(limit + 1), name=f"pending{g}") for g in range(G)]
        sent, sent2 = Signal(), Signal()  # a burst's address and beat both taken this cycle (on each writer)
        for g, p in enumerate(pending):
            m.d.sync += p.eq(p + (sent & (self.master == g)) + (sent2 & (self.master2 == g)) - self.responses[g])
        room = Array(p < limit for p in pending)[self.master]
        room2 = Array(p < limit for p in pending)[self.master2]
        # ---- the older instructions (up to two, the oldest first): their writes still awaiting responses, per master
        # (a master answers in order, so its first responses are the oldest's)
        oldest = [Signal(range(limit + 1), name=f"older{g}") for g in range(G)]
        second = [Signal(range(limit + 1), name=f"second{g}") for g in range(G)]
        has_oldest, has_second = Signal(), Signal()
        handoff = Signal()
        oldest_done = Signal()
        m.d.comb += oldest_done.eq(has_oldest & ~Cat(*[o != 0 for o in oldest]).any())
        m.d.comb += self.done.eq(oldest_done)
        room_older = ~has_second | oldest_done  # HANDOFF: a place among the older ones (one may leave this cycle)
        for g, (a, b, p) in enumerate(zip(oldest, second, pending)):
            to_a = self.responses[g] & (a != 0)
            a_next = a - to_a
            b_next = b - (self.responses[g] & (a == 0) & (b != 0))
            cur = p - self.responses[g] - a_next - b_next  # this instruction's writes awaiting responses
            with m.If(oldest_done & handoff):
                m.d.sync += [a.eq(Mux(has_second, b_next, cur)), b.eq(Mux(has_second, cur, 0))]
            with m.Elif(oldest_done):
                m.d.sync += [a.eq(b_next), b.eq(0)]
            with m.Elif(handoff):
                m.d.sync += [a.eq(Mux(has_oldest, a_next, cur)), b.eq(Mux(has_oldest, cur, 0))]
            with m.Else():
                m.d.sync += [a.eq(a_next), b.eq(b_next)]
        with m.If(oldest_done & handoff):
            m.d.sync += [has_oldest.eq(1), has_second.eq(has_second)]
        with m.Elif(oldest_done):
            m.d.sync += [has_oldest.eq(has_second), has_second.eq(0)]
        with m.Elif(handoff):
            with m.If(has_oldest):
                m.d.sync += has_second.eq(1)
            with m.Else():
                m.d.sync += has_oldest.eq(1)
        # ---- a row starts at the walk's addresses (``fresh``); an ST.img_col of consecutive bytes keeps a word
        column, dealt = self.column, self.dealt
        fresh = Signal()
        held = Signal(8 * w)  # the column's next buffer bytes, the next row's first
        held_rows = Signal(range(w + 1))
        read_rows = Signal(range(w + 1))  # rows the column's read in flight brings
        cur_src, cur_dst = Mux(fresh, places.head.buf, src), Mux(fresh, places.head.mem, dst)
        cur_left = Mux(fresh, f.row_bytes, left)
        nb = Signal(range(w + 1))
        data = Signal(8 * w)
        aw_done = Signal()
        w_done = Signal()
        aw2_done, w2_done = Signal(), Signal()
        in_beat = Signal()
        live = Signal()  # this WRITE's beat is the next column row's, formed from the held word this cycle
        # a dealt column's live WRITE sends the walk's next row from the held word too, on the second writer (its
        # master another, the pairs dealt round 2^ST_PAIRED_GROUPS_LOG2 or more); ``pair``: the ordinary WRITE
        # that follows a live one not yet done still has it
        pair_now, pair, two = Signal(), Signal(), Signal()
        m.d.comb += [pair_now.eq(live & dealt & (f.img_groups_log2 >= ST_PAIRED_GROUPS_LOG2) & (held_rows > 1)
                                 & (count + 1 < f.rows) & places.second_ready & (self.master2 != self.master)),
                     two.eq(Mux(live, pair_now, pair))]
        raw = Signal(16 * w)
        m.d.comb += raw.eq(Mux(in_beat, held, eng.rdata))
        packed = Cat(*[Cat(int4(raw.word_select(2 * i, 8)), int4(raw.word_select(2 * i + 1, 8))) for i in range(w)])
        formed = shift_bytes(m, Mux(f.pack4, packed, raw[:8 * w]), Mux(in_beat, cur_dst, dst)[:lb], w, left=True)
        # a column's read: its rows to the end of the buffer word (a column's row is always fresh when read)
        column_rows = places.head.col_rows  # rows the read brings (dealt: every other byte of it)
        read_bytes = Signal(range(w + 1))
        m.d.comb += read_bytes.eq(Mux(dealt, (column_rows << 1) - 1, column_rows))
        step = Mux(dealt, 16, 8)  # held bytes a row takes
        with m.FSM() as fsm:
            self.idle(m, "BEAT", count.eq(0), fresh.eq(1), held_rows.eq(0), live.eq(0))
            with m.State("BEAT"):
                m.d.comb += in_beat.eq(1)
                with m.If(fresh & (count == f.rows)):
                    m.next = "HANDOFF"
                with m.Elif(fresh & ~places.head_ready):
                    pass  # the row's place is still being worked out (the instruction's first rows)
                with m.Elif(cur_left == 0):
                    next_row()
                    m.d.sync += fresh.eq(1)
                with m.Else():
                    room_w = w - cur_dst[:lb]
                    n = Mux(cur_left < room_w, cur_left, room_w)
                    m.d.sync += [nb.eq(n), src.eq(cur_src), dst.eq(cur_dst), left.eq(cur_left), fresh.eq(0)]
                    m.d.sync += [pair.eq(0), aw2_done.eq(0), w2_done.eq(0)]
                    with m.If(column & (held_rows != 0)):
                        m.d.sync += [data.eq(formed), aw_done.eq(0), w_done.eq(0), held.eq(held >> step),
                                     held_rows.eq(held_rows - 1)]
                        m.next = "WRITE"
                    with m.Else():
                        eng.read(m, f.buf, cur_src, Mux(column, read_bytes, Mux(f.pack4, n << 1, n)))
                        m.d.sync += read_rows.eq(column_rows)
                        m.next = "GET"
            with m.State("GET"):
                with m.If(eng.done):
                    m.d.sync += [data.eq(formed), aw_done.eq(0), w_done.eq(0)]
                    with m.If(column):
                        m.d.sync += [held.eq(eng.rdata[:8 * w] >> step), held_rows.eq(read_rows - 1)]
                    m.next = "WRITE"
            with m.State("WRITE"):
                w_dst = Mux(live, cur_dst, dst)
                strb = first_lanes(Mux(live, 1, nb), w) << w_dst[:lb]
                # one beat a burst; each field set here, with the others (a constant bit of a payload would
                # become a sensitivity-less ``always @*`` that Verilator never evaluates)
                m.d.comb += [wr.aw.valid.eq(~aw_done & room), wr.aw.payload.addr.eq(w_dst & ~Const(w - 1, AXI_ADDR_BITS)),
                             wr.aw.payload.len.eq(0), wr.w.valid.eq(~w_done & room),
                             wr.w.payload.data.eq(Mux(live, formed, data)), wr.w.payload.strb.eq(strb),
                             wr.w.payload.last.eq(1)]
                # the second writer's beat: the next row's byte in every lane (its strobe picks the one)
                byte2 = Mux(live, held[16:24], held[:8])
                m.d.comb += [wr2.aw.valid.eq(two & ~aw2_done & room2),
                             wr2.aw.payload.addr.eq(dst2 & ~Const(w - 1, AXI_ADDR_BITS)), wr2.aw.payload.len.eq(0),
                             wr2.w.valid.eq(two & ~w2_done & room2), wr2.w.payload.data.eq(Cat(*[byte2] * w)),
                             wr2.w.payload.strb.eq(Const(1, w) << dst2[:lb]), wr2.w.payload.last.eq(1)]
                with m.If(live):  # from the next cycle on, an ordinary WRITE of this row's beat
                    m.d.comb += in_beat.eq(1)
                    m.d.sync += [live.eq(0), data.eq(formed), src.eq(cur_src), dst.eq(cur_dst), left.eq(1), nb.eq(1),
                                 fresh.eq(0), held.eq(held >> step), held_rows.eq(held_rows - 1), pair.eq(pair_now)]
                with m.If(wr.aw.valid & wr.aw.ready):
                    m.d.sync += aw_done.eq(1)
                with m.If(wr.w.valid & wr.w.ready):
                    m.d.sync += w_done.eq(1)
                with m.If(wr2.aw.valid & wr2.aw.ready):
                    m.d.sync += aw2_done.eq(1)
                with m.If(wr2.w.valid & wr2.w.ready):
                    m.d.sync += w2_done.eq(1)
                first_in = (aw_done | (wr.aw.valid & wr.aw.ready)) & (w_done | (wr.w.valid & wr.w.ready))
                second_in = (aw2_done | (wr2.aw.valid & wr2.aw.ready)) & (w2_done | (wr2.w.valid & wr2.w.ready))
                m.d.comb += [sent.eq(first_in & ~(aw_done & w_done)), sent2.eq(two & second_in & ~(aw2_done & w2_done))]
                with m.If(first_in & (~two | second_in)):
                    with m.If(live):
                        next_row()
                        m.d.sync += fresh.eq(1)
                    with m.Else():
                        m.d.sync += [src.eq(src + Mux(f.pack4, nb << 1, nb)), dst.eq(dst + nb), left.eq(left - nb)]
                        with m.If(left == nb):  # the row's last beat
                            next_row()
                            m.d.sync += fresh.eq(1)
                    with m.If(two):  # the second writer's row too
                        m.d.comb += moved2.eq(1)
                        m.d.sync += [count.eq(count + 2), held.eq(Mux(live, held >> 32, held >> 16)),
                                     held_rows.eq(held_rows - Mux(live, 2, 1))]
                    # the next row starts a pair on another group's master: its beat goes in the next cycle (once
                    # placed: the placer keeps ahead of the walk, so it is)
                    more = Mux(live, held_rows - 1, held_rows) > two
                    placed = places.queued + places.arriving >= 2 + two
                    with m.If(column & (count[0] | dealt) & (f.img_groups_log2 != 0) & more
                              & (count + 1 + two < f.rows) & placed):
                        m.d.sync += [live.eq(1), aw_done.eq(0), w_done.eq(0), aw2_done.eq(0), w2_done.eq(0)]
                    with m.Else():
                        m.next = "BEAT"
            with m.State("HANDOFF"):  # every write sent: an older one once there is room among them, then the next
                with m.If(room_older):
                    m.d.comb += handoff.eq(1)
                    m.next = "IDLE"
        m.d.comb += self.ready.eq(fsm.ongoing("IDLE"))
