"""What the DMA units share, LD's walk over an instruction's rows, and ST (buffer -> memory; its rows placed ahead
by hw/store_rows.py); LD is hw/load.py.

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
from flightc.hw.address import RowAddress, existing_channel
from flightc.hw.axi import AXI_ADDR_BITS, write_client_signature
from flightc.hw.axi_rules import ST_PAIRED_GROUPS_LOG2
from flightc.hw import lut6
from flightc.hw.buffers import WordEngine, first_lanes
from flightc.hw.decode import fields
from flightc.hw.store_rows import RowPlacer, saturated
from flightc.hw.unit import ExecutionUnit, one_hot


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
        """What LD walks — the instruction's fields, the rows (their count and each row's first buffer and memory
        address), the bytes left of the row, the channel bases and the channel, the buffer address and the memory
        address — then the unit's own state machine (:meth:`walk`). ST has its own (:class:`StoreUnit`)."""
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



@dataclass(frozen=True)
class StoreKind:
    """What kind of walk an ST is, as registers set the cycle after it starts (its first row is placed well after):
    ``column``, an ST.img_col of consecutive bytes (a byte a row); ``dealt``, such a column over pairs dealt round
    several masters with an even number of rows (the pairs' first rows, then their second rows, so that every row's
    master is another than the row before's); ``spread``, a column over several masters; ``paired``, a dealt column
    over ``2^ST_PAIRED_GROUPS_LOG2`` masters or more (two rows a cycle); ``empty``, rows of no bytes."""

    column: Signal
    dealt: Signal
    spread: Signal
    paired: Signal
    empty: Signal

    @classmethod
    def registered(cls, m: Module, f) -> "StoreKind":
        kind = cls(*(Signal(name=n) for n in ("column", "dealt", "spread", "paired", "empty")))
        column = f.img & f.img_col & ~f.pack4 & (f.buf_stride == 1) & (f.row_bytes == 1)
        spread = column & (f.img_groups_log2 != 0)
        m.d.sync += [kind.column.eq(column), kind.spread.eq(spread), kind.dealt.eq(spread & ~f.rows[0]),
                     kind.paired.eq(spread & ~f.rows[0] & (f.img_groups_log2 >= ST_PAIRED_GROUPS_LOG2)),
                     kind.empty.eq(f.row_bytes == 0)]
        return kind


class StoreUnit(DmaUnit):
    """ST: ``rows`` rows of ``row_bytes`` from a buffer to a channel, one strobed beat per write burst; with
    ``pack4`` each memory byte packs two buffer bytes saturated to INT4, low nibble first (the INT4 KV cache).
    ``master``: the memory master of the instruction's channel, which takes its bursts; ``responses``: a write
    response taken from master g this cycle (every master's are always taken). Its rows are placed ahead of its
    writer (hw/store_rows.py), the first ``ST_PLACE_STAGES + 1`` cycles after the instruction starts.

    Writes stay in flight: a burst goes as soon as its beat is formed, up to ``axi_write_outstanding`` waiting for their
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

    def __init__(self, cfg: HardwareConfig, channel_base: list[Signal], **members: wiring.Member):
        master_bits = max(1, (cfg.axi_masters - 1).bit_length())
        super().__init__(cfg, channel_base, wr=Out(write_client_signature(8 * cfg.axi_data_bytes)),
                         wr2=Out(write_client_signature(8 * cfg.axi_data_bytes)), master=Out(master_bits),
                         master2=Out(master_bits), responses=In(cfg.axi_masters), ready=Out(1), **members)

    def elaborate(self, platform):
        """The instruction's kind, the rows' places worked out ahead (hw/store_rows.py), then the writer's state
        machine (:meth:`walk`)."""
        m = Module()
        f = self.fields(self.OPCODE)
        kind = StoreKind.registered(m, f)
        m.submodules.places = places = RowPlacer(self.cfg, f, self.channel_base, kind.column, kind.dealt)
        m.d.comb += places.restart.eq(self.start)
        self.walk(m, f, places, kind)
        return m

    def walk(self, m, f, places: RowPlacer, kind: "StoreKind") -> None:
        cfg, wr, wr2, w, lb = self.cfg, self.wr, self.wr2, self.beat_bytes, self.lane_bits
        G, limit = cfg.axi_masters, cfg.axi_write_outstanding
        column, dealt = kind.column, kind.dealt
        src, dst, left = Signal(BUF_ADDR_BITS), Signal(AXI_ADDR_BITS), Signal.like(f.row_bytes)
        dst2 = places.second.mem  # the second writer's row: the walk's next
        m.d.comb += [self.master.eq(places.head.master), self.master2.eq(places.second.master)]
        # ---- the rows left to walk, and what the walk asks of them, as registers kept with the rows taken
        rows_left = Signal.like(f.rows)
        none_left, two_left, three_left = Signal(), Signal(), Signal()  # rows_left == 0, >= 2, >= 3
        odd = Signal()  # an odd number of rows walked
        take = places.take
        take_or_start = Signal(2)  # ``take``, or 3 as an instruction starts: the new one's rows
        rows = fields(self.instr, self.OPCODE).rows

        def by_take(name: str, options: list[Value]) -> Signal:
            return lut6.mux4(m, name, take_or_start, tuple(options))

        m.d.sync += [rows_left.eq(by_take("rows_left_next", [rows_left, rows_left - 1, rows_left - 2, rows])),
                     odd.eq(Mux(self.start, 0, odd ^ take[0])),
                     none_left.eq(by_take("none_left_next", [*(rows_left == k for k in range(3)), rows == 0])),
                     two_left.eq(by_take("two_left_next", [*(rows_left >= k + 2 for k in range(3)), rows >= 2])),
                     three_left.eq(by_take("three_left_next", [*(rows_left >= k + 3 for k in range(3)), rows >= 3]))]
        m.submodules.eng = eng = WordEngine(cfg.buffer_port_bytes, max_bytes=2 * w, contiguous=True, counted=True,
                                            nonempty=True)
        wiring.connect(m, wiring.flipped(self.port), eng.port)
        # ---- responses outstanding per master, and whether each has room for a write, as registers
        pending = [Signal(range(limit + 1), name=f"pending{g}") for g in range(G)]
        has_room = [Signal(name=f"room{g}", init=1) for g in range(G)]
        sent, sent2 = Signal(), Signal()  # a burst's address and beat both taken this cycle (on each writer)
        # the WRITE state's handshakes: each writer's address and beat both in, the cycle's writes all in (LUT6s,
        # so that the decisions hang on the masters' room a level each)
        first_in, second_in, finish = Signal(), Signal(), Signal()
        ups = []  # per master: a write taken this cycle
        for g, p in enumerate(pending):
            # a write to g taken this cycle on either writer (never both: a pair's two rows are on two masters)
            mine, mine2 = Signal(name=f"mine{g}"), Signal(name=f"mine2_{g}")
            m.d.comb += [mine.eq(self.master == g), mine2.eq(self.master2 == g)]
            up = lut6.lut(m, f"up{g}", [sent, mine, sent2, mine2], lambda s, a, s2, b: (s and a) or (s2 and b))
            ups.append(up)
            base, base1 = Signal.like(p, name=f"base{g}"), Signal.like(p, name=f"base1_{g}")
            m.d.comb += [base.eq(p - self.responses[g]), base1.eq(p + 1 - self.responses[g])]
            m.d.sync += [p.eq(Mux(up, base1, base)), has_room[g].eq(Mux(up, base1 < limit, base < limit))]
        if G > 1:
            room = lut6.select(m, "room", self.master, has_room)
            room2 = lut6.select(m, "room2", self.master2, has_room)
        else:
            room = room2 = has_room[0]
        # ---- the older instructions (up to two, the oldest first): their writes still awaiting responses, per master
        # (a master answers in order, so its first responses are the oldest's)
        oldest = [Signal(range(limit + 1), name=f"older{g}") for g in range(G)]
        second = [Signal(range(limit + 1), name=f"second{g}") for g in range(G)]
        has_oldest, has_second = Signal(), Signal()
        handoff = Signal()
        oldest_done = Signal()
        m.d.comb += oldest_done.eq(has_oldest & ~lut6.any_of(m, "oldest_waits", [o != 0 for o in oldest]))
        m.d.comb += self.done.eq(oldest_done)
        room_older = ~has_second | oldest_done  # HANDOFF: a place among the older ones (one may leave this cycle)
        current = [Signal(range(limit + 1), name=f"current{g}") for g in range(G)]  # this instruction's
        for g, (a, b, c) in enumerate(zip(oldest, second, current)):
            resp = self.responses[g]
            a_next = a - (resp & (a != 0))
            b_next = b - (resp & (a == 0) & (b != 0))
            cur = Signal.like(c, name=f"cur{g}")  # this instruction's writes awaiting responses, this cycle's taken
            m.d.comb += cur.eq(c - (resp & (a == 0) & (b == 0) & (c != 0)))
            m.d.sync += c.eq(Mux(handoff, 0, Mux(ups[g], cur + 1, cur)))  # (no write goes in HANDOFF)
            # chosen by (the oldest done, a hand off): neither, the one, the other, both
            older_sel = Cat(oldest_done, handoff)
            m.d.sync += [a.eq(lut6.mux4(m, f"older{g}_next", older_sel,
                                        (a_next, b_next, Mux(has_oldest, a_next, cur), Mux(has_second, b_next, cur)))),
                         b.eq(lut6.mux4(m, f"second{g}_next", older_sel,
                                        (b_next, 0, Mux(has_oldest, cur, 0), Mux(has_second, cur, 0))))]
        with m.If(oldest_done & handoff):
            m.d.sync += [has_oldest.eq(1), has_second.eq(has_second)]
        with m.Elif(oldest_done):
            m.d.sync += [has_oldest.eq(has_second), has_second.eq(0)]
        with m.Elif(handoff):
            with m.If(has_oldest):
                m.d.sync += has_second.eq(1)
            with m.Else():
                m.d.sync += has_oldest.eq(1)
        # ---- a row starts at its placed addresses (``fresh``); an ST.img_col of consecutive bytes keeps a word
        fresh = Signal()
        held = Signal(8 * w)  # the column's next buffer bytes, the next row's first
        held_rows = Signal(range(w + 1))
        read_rows = Signal(range(w + 1))  # rows the column's read in flight brings
        cur_src, cur_dst = Mux(fresh, places.head.buf, src), Mux(fresh, places.head.mem, dst)
        nb = Signal(range(w + 1))
        last = Signal()  # the beat is its row's last
        data = Signal(8 * w)  # the beat's bytes from byte 0 (shifted to their lanes as they go)
        aw_done = Signal()
        w_done = Signal()
        aw2_done, w2_done = Signal(), Signal()
        live = Signal()  # this WRITE's beat is the next column row's, taken from the held word this cycle
        # a dealt column's live WRITE sends the walk's next row from the held word too, on the second writer (its
        # master another, the pairs dealt round 2^ST_PAIRED_GROUPS_LOG2 or more); ``pair``: the ordinary WRITE
        # that follows a live one not yet done still has it
        pair_now, pair, two = Signal(), Signal(), Signal()
        m.d.comb += [pair_now.eq(live & kind.paired & (held_rows > 1) & two_left & places.second_ready
                                 & places.second.apart),
                     two.eq(Mux(live, pair_now, pair))]
        rdata = eng.rdata
        packed = Cat(*[Cat(int4(rdata.word_select(2 * i, 8)), int4(rdata.word_select(2 * i + 1, 8)))
                       for i in range(w)])
        # a continued row's next beat (its memory lanes from 0 on): its bytes and where its buffer bytes start,
        # worked out while this beat is written
        cont_n = Signal(range(w + 1))
        cont_bytes = Signal(range(2 * w + 1))
        cont_lane = Signal(lb)
        cont_last = Signal()
        rest = Signal.like(left)
        m.d.comb += rest.eq(left - nb)
        next_n = saturated(rest, w)
        m.d.sync += [cont_n.eq(next_n), cont_bytes.eq(next_n << f.pack4),
                     cont_last.eq(rest <= w), cont_lane.eq((src + Mux(f.pack4, nb << 1, nb))[:lb])]
        # the beat's read: its bytes, and the buffer words they touch (fresh: worked out as the row was placed)
        n = Mux(fresh, places.head.n, cont_n)
        cont_end = Signal(lb + 2)
        m.d.comb += cont_end.eq(cont_lane + cont_bytes)
        cont_words = 1 + (cont_end > w) + (cont_end > 2 * w)
        column_rows = places.head.col_rows  # rows a column's read brings (dealt: every other byte of it)
        read_bytes = Signal(range(2 * w + 1))
        m.d.comb += read_bytes.eq(Mux(fresh, places.head.read_bytes, cont_bytes))  # (a column's row is fresh)
        words = Mux(fresh, places.head.words, cont_words)

        def past_a_row(x: Value) -> Value:
            """``x`` less the held bits a row takes (16 dealt, else 8): two slices chosen, not a shift by a signal
            (Amaranth's combinational-cycle check walks a shift's every output bit to every input bit: minutes)."""
            return Mux(dealt, x.shift_right(16), x.shift_right(8))

        # the next row starts a pair on another group's master: its beat goes in the next cycle (once placed: the
        # placer keeps ahead of the walk, so it is)
        # (worked out for a WRITE of one row and of two from registers, then chosen by ``two``)
        go_live = Signal()
        placed = [places.arriving[1] | places.second_ready,  # at least 2, 3 rows placed (2 arrive at once)
                  (places.arriving[1] & places.head_ready) | places.third_ready]
        go = [kind.spread & (odd | dealt) & Mux(live, held_rows > k + 1, held_rows > k) & (three_left if k else two_left)
              & placed[k] for k in (0, 1)]
        m.d.comb += go_live.eq(Mux(two, go[1], go[0]))
        with m.FSM() as fsm:
            self.idle(m, "BEAT", fresh.eq(1), live.eq(0))
            with m.State("BEAT"):
                with m.If(fresh & none_left):
                    m.next = "HANDOFF"
                with m.Elif(fresh & ~places.head_ready):
                    pass  # the row's place is still being worked out (the instruction's first rows)
                with m.Elif(fresh & kind.empty):
                    pass  # a row of no bytes: the walk moves past it (``take``)
                with m.Else():
                    m.d.sync += [nb.eq(n), last.eq(Mux(fresh, places.head.last, cont_last)), src.eq(cur_src),
                                 dst.eq(cur_dst), left.eq(Mux(fresh, f.row_bytes, left)), fresh.eq(0)]
                    m.d.sync += pair.eq(0)
                    with m.If(column & (held_rows != 0)):
                        m.d.sync += data.eq(held)
                        m.next = "WRITE"
                    with m.Else():
                        eng.read(m, f.buf, cur_src, read_bytes)
                        m.d.comb += eng.words.eq(words)
                        m.d.sync += read_rows.eq(column_rows)
                        m.next = "GET"
            with m.State("GET"):
                with m.If(eng.done):
                    m.d.sync += data.eq(Mux(f.pack4, packed, rdata[:8 * w]))
                    m.next = "WRITE"
            with m.State("WRITE"):
                w_dst = Mux(live, cur_dst, dst)
                strb = first_lanes(Mux(live, 1, nb), w) << w_dst[:lb]
                beat = lut6.shift(m, "beat", Mux(live, held, data), w_dst[:lb], 8 * w, step=8)
                # one beat a burst; each field set here, with the others (a constant bit of a payload would
                # become a sensitivity-less ``always @*`` that Verilator never evaluates)
                m.d.comb += [wr.aw.valid.eq(~aw_done & room), wr.aw.payload.addr.eq(w_dst & ~Const(w - 1, AXI_ADDR_BITS)),
                             wr.aw.payload.len.eq(0), wr.w.valid.eq(~w_done & room),
                             wr.w.payload.data.eq(beat), wr.w.payload.strb.eq(strb),
                             wr.w.payload.last.eq(1)]
                # the second writer's beat: the next row's byte in every lane (its strobe picks the one)
                byte2 = Mux(live, held[16:24], held[:8])
                m.d.comb += [wr2.aw.valid.eq(two & ~aw2_done & room2),
                             wr2.aw.payload.addr.eq(dst2 & ~Const(w - 1, AXI_ADDR_BITS)), wr2.aw.payload.len.eq(0),
                             wr2.w.valid.eq(two & ~w2_done & room2), wr2.w.payload.data.eq(Cat(*[byte2] * w)),
                             wr2.w.payload.strb.eq(Const(1, w) << dst2[:lb]), wr2.w.payload.last.eq(1)]
                with m.If(live):  # from the next cycle on, an ordinary WRITE of this row's beat
                    m.d.sync += [live.eq(0), data.eq(held), src.eq(cur_src), dst.eq(cur_dst), left.eq(1), nb.eq(1),
                                 last.eq(1), fresh.eq(0), pair.eq(pair_now)]
                with m.If(finish):
                    with m.If(live):
                        m.d.sync += fresh.eq(1)
                    with m.Else():
                        m.d.sync += [src.eq(src + Mux(f.pack4, nb << 1, nb)), dst.eq(dst + nb), left.eq(rest)]
                        with m.If(last):  # the row's last beat
                            m.d.sync += fresh.eq(1)
                    with m.If(go_live):
                        m.d.sync += live.eq(1)
                    with m.Else():
                        m.d.sync += pair.eq(0)  # (``two`` is only ever set in WRITE)
                        m.next = "BEAT"
            with m.State("HANDOFF"):  # every write sent: an older one once there is room among them, then the next
                with m.If(room_older):
                    m.d.comb += handoff.eq(1)
                    m.next = "IDLE"
        one_hot(fsm)
        m.d.comb += self.ready.eq(fsm.ongoing("IDLE"))
        writing = fsm.ongoing("WRITE")
        # the rows the walk moves past this cycle: an empty one in BEAT, the WRITE's (and the second writer's);
        # from the handshakes rather than ``finish``, a level less (``finish`` with ``two`` moves past two rows,
        # without it past the row whose last beat it is); with ``start`` too, what chooses the rows left
        def skip(start: bool) -> Signal:
            return lut6.lut(m, f"skip{int(start)}", [fsm.ongoing("BEAT"), fresh, none_left, places.head_ready,
                                                     kind.empty, self.start if start else Const(0)],
                            lambda beat, fr, none, ready, empty, st: (beat and fr and not none and ready and empty) or st)

        def moves(start: bool) -> Value:
            return Cat(lut6.lut(m, f"take0_{int(start)}", [skip(start), writing, first_in, two, live, last],
                                lambda sk, wr_, f1, t, lv, la: sk or (wr_ and f1 and not t and (lv or la))),
                       lut6.lut(m, f"take1_{int(start)}", [writing, first_in, two, second_in,
                                                           self.start if start else Const(0)],
                                lambda wr_, f1, t, f2, st: (wr_ and f1 and t and f2) or st))

        # a BEAT that sends a beat (``beat_go``), from the held word (``beat_col``); a GET whose column word arrives
        beat_go = Signal()
        m.d.comb += beat_go.eq(fsm.ongoing("BEAT") & ~(fresh & (none_left | ~places.head_ready | kind.empty)))
        beat_col = lut6.lut(m, "beat_col", [beat_go, column, held_rows != 0], lambda g, c, h: g and c and h)
        got = lut6.lut(m, "got", [fsm.ongoing("GET"), eng.done], lambda g, d: g and d)
        get_col = lut6.lut(m, "get_col", [got, column], lambda g, c: g and c)
        # the held word and its rows: kept, less a row, less the second writer's too, or a new word's
        sel = Cat(lut6.lut(m, "held_sel0", [beat_col, live, finish, two, get_col],
                           lambda b, lv, fin, t, g: b or (lv and not (fin and t)) or g),
                  lut6.lut(m, "held_sel1", [finish, two, get_col], lambda fin, t, g: (fin and t) or g))
        m.d.sync += [held.eq(lut6.mux4(m, "held_next", sel, (held, past_a_row(held),
                                                            Mux(live, held.shift_right(32), held.shift_right(16)),
                                                            past_a_row(rdata[:8 * w])))),
                     held_rows.eq(lut6.mux4(m, "held_rows_next", sel,
                                            (held_rows, held_rows - 1, held_rows - Mux(live, 2, 1), read_rows - 1)))]
        with m.If(self.start):
            m.d.sync += held_rows.eq(0)
        # each writer's address and beat taken: set as they go, cleared as a beat is formed
        clear = lut6.lut(m, "clear", [finish, go_live, beat_col, got], lambda fin, g, b, gt: (fin and g) or b or gt)
        clear2 = lut6.lut(m, "clear2", [finish, go_live, beat_go], lambda fin, g, b: (fin and g) or b)
        for flag, clr, room_, ready, valid_when in ((aw_done, clear, room, wr.aw.ready, writing),
                                                    (w_done, clear, room, wr.w.ready, writing),
                                                    (aw2_done, clear2, room2, wr2.aw.ready, two),
                                                    (w2_done, clear2, room2, wr2.w.ready, two)):
            m.d.sync += flag.eq(lut6.lut(m, f"{flag.name}_next", [clr, flag, valid_when, room_, ready],
                                         lambda c, d, v, r, rd: not c and (d or (v and r and rd))))
        m.d.comb += [places.take.eq(moves(False)), take_or_start.eq(moves(True))]

        def both_in(done_a, done_w, room_, ready_a, ready_w) -> bool:
            return (done_a or (room_ and ready_a)) and (done_w or (room_ and ready_w))

        ins = [aw_done, w_done, room, wr.aw.ready, wr.w.ready]
        ins2 = [aw2_done, w2_done, room2, wr2.aw.ready, wr2.w.ready]
        # ``finish`` for each of the two masters' room (chosen last: the room, 32 ways, is the deepest input)
        in_if = [[lut6.lut(m, f"in{k}_if{r}", [a, b, Const(r), ra, rb], both_in) for r in (0, 1)]
                 for k, (a, b, _, ra, rb) in enumerate((ins, ins2))]
        finish_if = [lut6.lut(m, f"finish_if{r2}{r1}", [writing, in_if[0][r1], two, in_if[1][r2]],
                              lambda s, f1, t, f2: s and f1 and (not t or f2)) for r2 in (0, 1) for r1 in (0, 1)]
        m.d.comb += [first_in.eq(lut6.lut(m, "first_in", ins, both_in)),
                     second_in.eq(lut6.lut(m, "second_in", ins2, both_in)),
                     sent.eq(lut6.lut(m, "sent", [writing, *ins],
                                      lambda s, a, b, *rest: s and both_in(a, b, *rest) and not (a and b))),
                     sent2.eq(lut6.lut(m, "sent2", [two, *ins2],
                                       lambda t, a, b, *rest: t and both_in(a, b, *rest) and not (a and b))),
                     finish.eq(lut6.mux4(m, "finish", Cat(room, room2), tuple(finish_if)))]


class StoreAlone(StoreUnit):
    """ST with its channels' base addresses as ports of its own: what the timing estimate synthesizes of it
    (``python bench/synth_unit.py flightc.hw.dma:StoreAlone``)."""

    def __init__(self, cfg: HardwareConfig):
        super().__init__(cfg, [], channel_bases=In(AXI_ADDR_BITS).array(cfg.mem_channels))
        self.channel_base = list(self.channel_bases)
