"""ST's row placer: where each row an ST writes lies, worked out a few rows ahead of the writer.

A row's place (its buffer address, its channel's master and memory address, and for an ST.img_col the rows a
buffer word read brings) takes shifts by instruction fields, three-input sums, a channel check and a 32:1 choice of
the channel's base: far more than a cycle's logic levels. :class:`RowPlacer` works it out in
``ST_PLACE_STAGES`` registered steps, two rows a cycle (the most the writer takes: a paired column's two rows), and
keeps the placed rows in a ring of ``ST_PLACE_DEPTH``, enough that the writer never waits once the first row is
placed. The writer sees the next two rows as registers (``head``, ``second``) and takes 0, 1 or 2 a cycle (``take``).
"""
from __future__ import annotations

from dataclasses import dataclass, fields

from amaranth.hdl import Cat, Const, Elaboratable, Module, Mux, Signal, Value

from flightc.config import HardwareConfig
from flightc.hw import lut6
from flightc.hw.address import existing_channel, master_of
from flightc.hw.axi import AXI_ADDR_BITS
from flightc.hw.axi_rules import ST_PLACE_DEPTH, ST_PLACE_STAGES
from flightc.isa.table import BUF_ADDR_BITS, HBM_ADDR_BITS

PLACE_ADDR_BITS = HBM_ADDR_BITS + 1  # an image row's address in its channel before the channel's base


@dataclass(frozen=True)
class PlacedRow:
    """One row as the writer needs it: its first buffer byte, its memory byte address (the channel's base added),
    its master; its first beat's bytes (``n``, to the row's end or the beat's), whether that beat is the row's last,
    the buffer bytes that beat reads (twice ``n`` with pack4) and the buffer words they touch; and for an ST.img_col
    the rows the word read that starts at it brings (dealt: every other byte; its read's bytes are then those rows'
    and it touches one word)."""

    buf: Signal
    mem: Signal
    master: Signal
    n: Signal
    last: Signal
    read_bytes: Signal
    words: Signal
    col_rows: Signal
    apart: Signal  # its master is not the walk's row before's (a pair's second row may go beside it)

    @classmethod
    def like(cls, cfg: HardwareConfig, name: str) -> "PlacedRow":
        w = cfg.axi_data_bytes
        return cls(Signal(BUF_ADDR_BITS, name=f"{name}_buf"), Signal(AXI_ADDR_BITS, name=f"{name}_mem"),
                   Signal(range(max(2, cfg.axi_masters)), name=f"{name}_master"), Signal(range(w + 1), name=f"{name}_n"),
                   Signal(name=f"{name}_last"), Signal(range(2 * w + 1), name=f"{name}_read_bytes"),
                   Signal(range(4), name=f"{name}_words"), Signal(range(w + 1), name=f"{name}_col_rows"),
                   Signal(name=f"{name}_apart"))

    def signals(self) -> list[Signal]:
        return [getattr(self, f.name) for f in fields(self)]

    def cat(self) -> Value:
        return Cat(*self.signals())

    def eq(self, word: Value) -> list:
        """Assignments of ``word`` (a :meth:`cat` of such a row) to this row's fields."""
        out, at = [], 0
        for s in self.signals():
            out.append(s.eq(word[at:at + len(s)]))
            at += len(s)
        return out


def saturated(value: Value, most: int) -> Value:
    """``value``, at most ``most``."""
    return Mux(value > most, most, value)


class RowPlacer(Elaboratable):
    """Places an ST's rows in walk order (``restart`` with the ST's start; the instruction's fields are read from
    the next cycle on). ``f``: the ST's fields; ``bases``: the channels' base addresses; ``column``/``dealt``: the
    walk's kind (hw/dma.py :class:`StoreUnit`). ``head``/``second`` are the walk's next rows, valid with
    ``head_ready``/``second_ready``; ``take`` (0, 1 or 2) moves past that many of them this cycle. ``arriving``
    says how many rows join the ring this cycle (the writer's look ahead)."""

    def __init__(self, cfg: HardwareConfig, f, bases: list[Signal], column: Value, dealt: Value):
        self.cfg, self.f, self.bases, self.column, self.dealt = cfg, f, bases, column, dealt
        self.restart = Signal()
        self.take = Signal(2)
        self.head, self.second = PlacedRow.like(cfg, "head"), PlacedRow.like(cfg, "second")
        self.head_ready, self.second_ready, self.third_ready = Signal(), Signal(), Signal()  # rows queued: 1, 2, 3
        self.queued = Signal(range(ST_PLACE_DEPTH + 1))  # placed rows not yet taken (head and second among them)
        self.arriving = Signal(2)

    def elaborate(self, platform):
        m = Module()
        cfg, f = self.cfg, self.f
        w = cfg.axi_data_bytes
        lb = w.bit_length() - 1
        per_log2, unit_log2 = cfg.channels_per_master.bit_length() - 1, cfg.stripe_bytes.bit_length() - 1
        s_log2 = cfg.lane_slots.bit_length() - 1
        D = ST_PLACE_DEPTH
        half = f.rows >> 1

        # ---- issue: two rows a cycle while the ring has room for them and all in flight
        r = Signal.like(f.rows, name="issue_row")
        credit = Signal(range(D + 1), name="credit")  # ring places neither filled nor claimed by a row in flight
        off_buf = Signal(BUF_ADDR_BITS)  # r x buf_stride, r x the memory stride
        off_mem = Signal(PLACE_ADDR_BITS)
        mem_stride = Signal(PLACE_ADDR_BITS)
        m.d.comb += mem_stride.eq(Mux(f.img & f.img_col, 0, f.hbm_stride))
        issue = Signal()
        m.d.comb += issue.eq(~self.restart & (r < f.rows) & (credit >= 2))
        with m.If(self.restart):
            m.d.sync += [r.eq(0), credit.eq(D), off_buf.eq(0), off_mem.eq(0)]
        with m.Else():
            spent = Signal.like(credit)
            m.d.comb += spent.eq(credit - Mux(issue, 2, 0))
            m.d.sync += credit.eq(lut6.mux4(m, "credit_next", self.take, (spent, spent + 1, spent + 2, spent + 2)))
            with m.If(issue):
                m.d.sync += [r.eq(r + 2), off_buf.eq(off_buf + (f.buf_stride << 1)),
                             off_mem.eq(off_mem + (mem_stride << 1))]

        valid = [Signal(name=f"placing{k}") for k in range(ST_PLACE_STAGES + 1)]
        m.d.sync += valid[1].eq(issue & ~self.restart)
        for k in range(1, ST_PLACE_STAGES):
            m.d.sync += valid[k + 1].eq(valid[k] & ~self.restart)

        def stage(name: str, value: Value, width: int | range | None = None) -> Signal:
            s = Signal(width or len(Value.cast(value)), name=name)
            m.d.sync += s.eq(value)
            return s

        placed, masters8 = [], []
        for j in (0, 1):
            # stage 1: the row's index and its running sums
            q = stage(f"q{j}", r + j, len(r) + 1)
            ob = stage(f"ob{j}", off_buf)
            om = stage(f"om{j}", off_mem)
            # stage 2: the walk's row (dealt: the pairs' first rows, then their second rows), the rows left
            below = q < half
            walk = stage(f"walk{j}", Mux(self.dealt, Mux(below, q << 1, ((q - half) << 1) | 1), q), len(f.rows))
            rows_left = stage(f"rows_left{j}", saturated(f.rows - q, w), range(w + 1))
            half_left = stage(f"half_left{j}", saturated(Mux(below, half - q, f.rows - q), w), range(w + 1))
            ob2 = stage(f"ob2_{j}", ob + (f.buf_stride if j else 0), BUF_ADDR_BITS)
            om2 = stage(f"om2_{j}", om + (mem_stride if j else 0), PLACE_ADDR_BITS)
            # stage 3: the image row's pair, group and pieces of its offset; the row's buffer address
            img_row = Signal(len(f.img_row), name=f"img_row{j}")
            m.d.comb += img_row.eq(Mux(f.img_col, walk, f.img_row))
            pair = img_row >> 1
            group = stage(f"group{j}", pair & ((Const(1, 9) << f.img_groups_log2) - 1), 8)
            pair_at = stage(f"pair_at{j}", lut6.shift(m, f"pair_shift{j}", pair, f.img_groups_log2, len(pair),
                                                        left=False))
            second_at = stage(f"second_at{j}", Mux(img_row[0], Const(1, 32) << f.img_half_log2, 0), 32)
            col = stage(f"col{j}", Mux(f.img_col, ((f.img_row >> s_log2) << f.img_stride_log2) + f.img_row[:s_log2],
                                       0), PLACE_ADDR_BITS)
            buf = stage(f"buf{j}", f.buf_addr + Mux(self.dealt, walk, ob2), BUF_ADDR_BITS)
            om3, rows_left3, half_left3 = stage(f"om3_{j}", om2), stage(f"rows_left3_{j}", rows_left), \
                stage(f"half_left3_{j}", half_left)
            to_end = Signal(range(w + 1), name=f"to_end{j}")
            m.d.comb += to_end.eq(w - buf[:lb])
            # stage 4: the pair's offset shifted into place; the word read's rows
            pair_off = stage(f"pair_off{j}", lut6.shift(m, f"pair_off_shift{j}", pair_at, f.img_pair_log2,
                                                          PLACE_ADDR_BITS))
            piece = stage(f"piece{j}", second_at + col, PLACE_ADDR_BITS)
            every_other = (to_end + 1) >> 1
            col_rows = stage(f"col_rows{j}", Mux(self.dealt, Mux(half_left3 < every_other, half_left3, every_other),
                                                 Mux(rows_left3 < to_end, rows_left3, to_end)), range(w + 1))
            buf4, om4, group4 = stage(f"buf4_{j}", buf), stage(f"om4_{j}", om3), stage(f"group4_{j}", group)
            # stage 5: the row's channel and its address in the channel
            o = Signal(PLACE_ADDR_BITS, name=f"o{j}")
            m.d.comb += o.eq(pair_off + piece)
            n = o >> unit_log2
            squeezed = Cat(o[:unit_log2], (n >> per_log2))  # o without its bits that pick the master's channel
            channel = stage(f"channel{j}", Mux(f.img, f.channel + (group4 << per_log2) + (n & ((1 << per_log2) - 1)),
                                               f.channel), 8)
            addr = stage(f"addr{j}", f.hbm_addr + om4 + Mux(f.img, squeezed, 0), PLACE_ADDR_BITS)
            buf5, col_rows5 = stage(f"buf5_{j}", buf4), stage(f"col_rows5_{j}", col_rows)
            # stage 6: the channel checked (0 for one the config lacks: the functional simulator refuses those)
            ch = stage(f"ch{j}", existing_channel(m, channel, cfg))
            addr6, buf6, col_rows6 = stage(f"addr6_{j}", addr), stage(f"buf6_{j}", buf5), stage(f"col_rows6_{j}",
                                                                                                  col_rows5)
            # stage 7: the channel's base added
            base = lut6.select(m, f"base{j}", ch, self.bases) if len(self.bases) > 1 else self.bases[0]
            mem = stage(f"mem{j}", base + addr6, AXI_ADDR_BITS)
            master = stage(f"master{j}", master_of(ch, cfg), range(max(2, cfg.axi_masters)))
            buf7, col_rows7 = stage(f"buf7_{j}", buf6), stage(f"col_rows7_{j}", col_rows6)
            # stage 8: the first beat's bytes, to the row's end or the beat's
            room = Signal(range(w + 1), name=f"room{j}")
            m.d.comb += room.eq(w - mem[:lb])
            n8 = stage(f"n{j}", Mux(f.row_bytes < room, f.row_bytes, room), range(w + 1))
            last8 = stage(f"last{j}", f.row_bytes <= room)
            mem8, master8, buf8, col_rows8 = (stage(f"mem8_{j}", mem), stage(f"master8_{j}", master),
                                              stage(f"buf8_{j}", buf7), stage(f"col_rows8_{j}", col_rows7))
            # stage 9: the buffer bytes the beat reads, and the buffer words they touch (a column: its rows to the
            # end of a word, dealt every other byte)
            row = PlacedRow.like(cfg, f"placed{j}")
            read_bytes = Mux(f.pack4, n8 << 1, n8)
            end = Signal(lb + 2, name=f"end{j}")
            m.d.comb += end.eq(buf8[:lb] + read_bytes)
            m.d.sync += [row.buf.eq(buf8), row.mem.eq(mem8), row.master.eq(master8), row.n.eq(n8), row.last.eq(last8),
                         row.read_bytes.eq(Mux(self.column, Mux(self.dealt, (col_rows8 << 1) - 1, col_rows8),
                                               read_bytes)),
                         row.words.eq(Mux(self.column, 1, 1 + (end > w) + (end > 2 * w))), row.col_rows.eq(col_rows8)]
            placed.append(row)
            masters8.append(master8)
        # (stage 9) whether each row's master is the walk's row before's: the pair's first against the last row
        # placed before it
        before = Signal.like(masters8[1], name="master_before")
        with m.If(valid[ST_PLACE_STAGES - 1]):
            m.d.sync += before.eq(masters8[1])
        m.d.sync += [placed[0].apart.eq(masters8[0] != before), placed[1].apart.eq(masters8[1] != masters8[0])]
        assert ST_PLACE_STAGES == 9  # the stages above

        # ---- the ring: slot head_at + k holds the walk's row head + k; head and second mirror its first two slots.
        # What changes by ``take`` is worked out for each of its values from registers, then chosen by a LUT6 a bit.
        def by_take(name: str, options: tuple[Value, Value, Value]) -> Signal:
            return lut6.mux4(m, name, self.take, (*options, options[2]))

        width = len(self.head.cat())
        ring = [Signal(width, name=f"ring{k}") for k in range(D)]
        at_bits = (D - 1).bit_length()
        slot = [Signal(at_bits, name=f"slot{k}", init=k) for k in range(4)]  # head_at + k
        tail_at, tail_next = Signal(at_bits), Signal(at_bits, init=1)
        push = valid[ST_PLACE_STAGES]
        m.d.comb += self.arriving.eq(Mux(push, 2, 0))
        queued_in = Signal.like(self.queued)
        m.d.comb += queued_in.eq(self.queued + self.arriving)
        with m.If(self.restart):
            m.d.sync += [*(a.eq(k) for k, a in enumerate(slot)), tail_at.eq(0), tail_next.eq(1), self.queued.eq(0)]
        with m.Else():
            m.d.sync += [*(a.eq(by_take(f"slot{k}_next", (a, (a + 1)[:at_bits], (a + 2)[:at_bits])))
                           for k, a in enumerate(slot)),
                         self.queued.eq(by_take("queued_next", (queued_in, queued_in - 1, queued_in - 2)))]
            with m.If(push):
                m.d.sync += [tail_at.eq(tail_at + 2), tail_next.eq(tail_next + 2)]
        for k, entry in enumerate(ring):
            with m.If(push & (tail_at == k)):
                m.d.sync += entry.eq(placed[0].cat())
            with m.Elif(push & (tail_next == k)):
                m.d.sync += entry.eq(placed[1].cat())
        # the slots head_at + k after this cycle's writes (k = 0..3), from registers only
        after = []
        for k in range(4):
            kept = (self.head.cat(), self.second.cat())[k] if k < 2 else lut6.select(m, f"ring_read{k}", slot[k], ring)
            new = Signal(width, name=f"slot{k}_after")
            m.d.comb += new.eq(Mux(push & (slot[k] == tail_at), placed[0].cat(),
                                   Mux(push & (slot[k] == tail_next), placed[1].cat(), kept)))
            after.append(new)
        with m.If(~self.restart):
            m.d.sync += [*self.head.eq(by_take("head_next", tuple(after[:3]))),
                         *self.second.eq(by_take("second_next", tuple(after[1:4])))]
        # whether the walk's next rows are placed, as registers: from the rows queued and arriving, by ``take``
        with m.If(self.restart):
            m.d.sync += [self.head_ready.eq(0), self.second_ready.eq(0), self.third_ready.eq(0)]
        with m.Else():
            m.d.sync += [self.head_ready.eq(by_take("head_ready_next", (queued_in >= 1, queued_in >= 2, queued_in >= 3))),
                         self.second_ready.eq(by_take("second_ready_next",
                                                      (queued_in >= 2, queued_in >= 3, queued_in >= 4))),
                         self.third_ready.eq(by_take("third_ready_next", (queued_in >= 3, queued_in >= 4, queued_in >= 5)))]
        return m
