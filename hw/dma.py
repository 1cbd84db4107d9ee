"""The DMA units: LD (memory -> buffer, with the gather mode of embedding lookups) and ST (buffer -> memory).

Both reach the memory channels through the core's AXI master (hw/axi_master.py): LD as a reader
(``rd``: burst requests out, up to ``axi_outstanding`` ahead, beats back), ST as the writer (``wr``).
A channel's byte address is ``channel_base[ch] + hbm_addr`` (the bases are kernel arguments, as
Vitis passes one buffer per HBM channel). Bursts never cross 4 KiB. LD streams: it takes a beat a
cycle and writes it, rotated onto the buffer's lanes, as one buffer word (two when the beat's bytes
straddle a word boundary of the buffer). ST reads a beat's bytes with the word engine and writes
them as one strobed beat.
"""
from __future__ import annotations

from dataclasses import dataclass

from amaranth.hdl import Array, Cat, Const, Module, Mux, Signal, Value
from amaranth.lib import data, wiring
from amaranth.lib.fifo import SyncFIFO
from amaranth.lib.wiring import Out

from flightc import numerics as nm
from flightc.config import HardwareConfig
from flightc.isa.table import BUF_ADDR_BITS, Opcode, Unit
from flightc.hw.address import RowAddress
from flightc.hw.axi import AXI_ADDR_BITS, AXI_BOUNDARY, read_client_signature, write_client_signature
from flightc.hw.buffers import WordEngine, first_lanes
from flightc.hw.decode import BUF_SEL_BITS
from flightc.hw.unit import ExecutionUnit



def burst_beats(addr: Signal, nbytes: Signal, lane_bits: int) -> tuple:
    """Beats needed for ``nbytes`` from ``addr``, capped by the burst limit and the 4 KiB boundary."""
    w = 1 << lane_bits
    lane = addr[:lane_bits]
    want = (lane + nbytes + (w - 1)) >> lane_bits
    to_boundary = (Const(AXI_BOUNDARY, 13) - (addr[:12] & ~Const(w - 1, 12))) >> lane_bits
    return want, to_boundary


def existing_channel(m: Module, f, cfg: HardwareConfig) -> Signal:
    """The instruction's channel, or 0 for one the config lacks (the functional simulator refuses those)."""
    ch = Signal.like(f.channel)
    m.d.comb += ch.eq(Mux(f.channel < cfg.mem_channels, f.channel, 0))
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
        bases, ch = Array(self.channel_base), existing_channel(m, f, self.cfg)
        m.submodules.buf_rows = buf_rows = RowAddress(BUF_ADDR_BITS)
        m.submodules.mem_rows = mem_rows = RowAddress(AXI_ADDR_BITS)
        rows = RowWalk(Signal.like(f.rows), buf_rows.addr, mem_rows.addr, Signal())
        m.d.comb += [buf_rows.base.eq(f.buf_addr), buf_rows.stride.eq(f.buf_stride),
                     mem_rows.base.eq(bases[ch] + f.hbm_addr), mem_rows.stride.eq(f.hbm_stride)]
        for g in (buf_rows, mem_rows):
            m.d.comb += [g.restart.eq(self.start), g.step.eq(rows.step)]
        self.walk(m, f, rows, Signal.like(f.row_bytes), bases, ch, Signal(BUF_ADDR_BITS), Signal(AXI_ADDR_BITS))
        return m

    def end_after_rows(self, m: Module, rows: "RowWalk", f) -> None:
        """In the ROW state: past the last row, report done and go idle (the caller continues with Elif/Else)."""
        with m.If(rows.count == f.rows):
            m.d.comb += self.done.eq(1)
            m.next = "IDLE"


class LoadUnit(DmaUnit):
    """LD: ``rows`` rows of ``row_bytes`` from a channel into a buffer (or gathered by INT32 ids).

    Two halves share the walk: the *issuer* asks for the bursts of each row, up to ``axi_outstanding``
    ahead (a striped row a unit at a time, round its channels), and queues a descriptor for each (where
    its bytes go, its first lane, its byte count); the *receiver* takes the beats as they come, a beat a
    cycle, and writes each rotated onto the buffer's lanes (a second cycle when its bytes straddle two
    buffer words). A gathered row first reads its id
    and waits for it before asking for the row. Once the issuer has asked for every burst it queues an
    end marker and is ``ready`` for the next instruction, whose bursts follow the last ones without a
    gap; the receiver reports ``done`` when it reaches the marker with every byte before it written.
    """

    UNIT, OPCODE = Unit.LD, Opcode.LD

    def __init__(self, cfg: HardwareConfig, channel_base: list[Signal]):
        super().__init__(cfg, channel_base, rd=Out(read_client_signature(8 * cfg.axi_data_bytes)), ready=Out(1))

    def walk(self, m, f, rows, left, bases, ch, dst, src) -> None:
        cfg, rd, w, lb, port = self.cfg, self.rd, self.beat_bytes, self.lane_bits, self.port
        burst_bytes = cfg.axi_burst_beats * w
        desc = data.StructLayout({"dst": BUF_ADDR_BITS, "buf": BUF_SEL_BITS, "lane": max(1, lb),
                                  "nbytes": range(burst_bytes + 1), "ident": 1, "end": 1})
        m.submodules.bursts = queue = SyncFIFO(width=desc.size, depth=cfg.axi_outstanding)
        head = desc(queue.r_data)
        entry = Signal(desc)
        m.d.comb += queue.w_data.eq(entry.as_value())
        ident = Signal(32)
        id_ready = Signal()  # the receiver has the gathered row's id
        gather_phase = Signal()  # the issuer is reading the id of the current row
        # ---- receiver: the head descriptor's beats, ``taken`` bytes of it so far
        pend = Signal()
        pend_second = Signal()  # its first word is written; the rest goes to the next word
        pend_data = Signal(8 * w)
        pend_addr = Signal(BUF_ADDR_BITS)
        pend_n = Signal(range(w + 1))
        pend_buf = Signal(BUF_SEL_BITS)
        pend_head = pend_addr[:lb]
        straddles = pend_head + pend_n > w
        m.d.comb += [port.buf.eq(pend_buf), port.we.eq(1), port.req.eq(pend), port.wdata.eq(pend_data),
                     port.addr.eq(Mux(pend_second, pend_addr + w, pend_addr)),
                     port.wmask.eq(Mux(pend_second, first_lanes((pend_head + pend_n - w)[:lb + 1], w),
                                       first_lanes(Mux(straddles, w - pend_head, pend_n), w) << pend_head))]
        finishing = port.gnt & (pend_second | ~straddles)
        free = ~pend | finishing
        with m.If(port.gnt):
            m.d.sync += pend_second.eq(~pend_second & straddles)
            with m.If(finishing):
                m.d.sync += pend.eq(0)
        taken = Signal(range(burst_bytes + 1))
        lane = Mux(taken == 0, head.lane, 0)
        rest = head.nbytes - taken
        nb = Signal(range(w + 1))
        m.d.comb += [nb.eq(Mux(rest < (w - lane), rest, w - lane)), rd.r.ready.eq(queue.r_rdy & ~head.end & free)]
        with m.If(queue.r_rdy & head.end & ~pend):  # every byte of the instruction written
            m.d.comb += [queue.r_en.eq(1), self.done.eq(1)]
        beat = rd.r.payload.data >> (lane * 8)  # the wanted bytes from byte 0
        with m.If(rd.r.valid & rd.r.ready):
            with m.If(nb == rest):
                m.d.comb += queue.r_en.eq(1)
                m.d.sync += taken.eq(0)
            with m.Else():
                m.d.sync += taken.eq(taken + nb)
            with m.If(head.ident):
                m.d.sync += ident.eq(Mux(taken == 0, beat[:32], ident | (beat << (taken * 8))[:32]))
                with m.If(nb == rest):
                    m.d.sync += id_ready.eq(1)
            with m.Else():
                addr = head.dst + taken
                m.d.sync += [pend.eq(1), pend_second.eq(0), pend_addr.eq(addr), pend_n.eq(nb), pend_buf.eq(head.buf),
                             pend_data.eq((Cat(beat, beat) << (addr[:lb] * 8))[8 * w:16 * w])]  # rotated
        # ---- issuer: a row's bursts, each queued with its descriptor while fewer than axi_outstanding are
        striping = (f.stripe > 1) & ~f.gather  # a gather's stripe cuts its table in blocks instead
        stripe_k = Signal.like(f.stripe)  # the unit's channel within the stripe
        unit_row = Signal.like(f.row_bytes)  # the unit's index / stripe: units before it on its channel
        unit_off = Signal(range(1 << 16))  # bytes of the unit asked for
        unit_left = (Const(1, 17) << f.stripe_log2) - unit_off
        stripe_ch = Signal.like(f.channel)
        m.d.comb += stripe_ch.eq(Mux(f.channel + stripe_k < self.cfg.mem_channels, f.channel + stripe_k, 0))
        with m.FSM() as fsm:
            self.idle(m, "ROW", rows.count.eq(0), stripe_k.eq(0), unit_row.eq(0), unit_off.eq(0))
            with m.State("ROW"):
                with m.If(rows.count == f.rows):
                    m.d.comb += [entry.end.eq(1), queue.w_en.eq(queue.w_rdy)]
                    with m.If(queue.w_rdy):
                        m.next = "IDLE"
                with m.Elif(f.gather):
                    m.d.sync += [src.eq(bases[0] + f.ids_addr + (rows.count << 2)), left.eq(4),
                                 gather_phase.eq(1), id_ready.eq(0), dst.eq(rows.buf)]
                    m.next = "AR"
                with m.Else():
                    m.d.sync += [src.eq(rows.mem), left.eq(f.row_bytes), gather_phase.eq(0), dst.eq(rows.buf)]
                    m.next = "AR"
            with m.State("AR"):
                with m.If(left == 0):
                    with m.If(gather_phase):
                        with m.If(id_ready):  # a table cut in blocks of 2^stripe_log2 rows, a block a channel
                            block_ch = Signal.like(f.channel)
                            within = (ident & ((Const(1, 33) << f.stripe_log2) - 1)) * f.hbm_stride
                            offset = Mux(f.stripe > 1, within, ident.as_signed() * f.hbm_stride)
                            m.d.comb += block_ch.eq(Mux(f.stripe > 1, f.channel + (ident >> f.stripe_log2), ch))
                            m.d.sync += [src.eq(bases[Mux(block_ch < self.cfg.mem_channels, block_ch, 0)] + f.hbm_addr
                                                + offset),
                                         left.eq(f.row_bytes), gather_phase.eq(0)]
                    with m.Else():
                        rows.next(m)
                        m.next = "ROW"
                with m.Else():
                    # a striped row reads its units round the channels: unit u of the row is on channel
                    # channel + u % stripe at hbm_addr + (u / stripe) units (flightc.isa.footprint.stripe_layout)
                    at = Mux(striping, bases[stripe_ch] + f.hbm_addr + (unit_row << f.stripe_log2) + unit_off, src)
                    want, to_b = burst_beats(at, left, lb)
                    n = Mux(want < to_b, want, to_b)
                    n = Mux(n < cfg.axi_burst_beats, n, cfg.axi_burst_beats)
                    room = (n << lb) - at[:lb]
                    fits = Mux(left < room, left, room)
                    nbytes = Signal(range(burst_bytes + 1))
                    m.d.comb += nbytes.eq(Mux(striping & (unit_left < fits), unit_left, fits))
                    m.d.comb += [rd.ar.valid.eq(queue.w_rdy), rd.ar.payload.addr.eq(at & ~Const(w - 1, AXI_ADDR_BITS)),
                                 rd.ar.payload.len.eq(((at[:lb] + nbytes + (w - 1)) >> lb) - 1),
                                 entry.dst.eq(dst), entry.buf.eq(f.buf), entry.lane.eq(at[:max(1, lb)]),
                                 entry.nbytes.eq(nbytes),
                                 entry.ident.eq(gather_phase), queue.w_en.eq(rd.ar.valid & rd.ar.ready)]
                    with m.If(queue.w_en):
                        m.d.sync += [src.eq(src + nbytes), left.eq(left - nbytes)]
                        with m.If(~gather_phase):
                            m.d.sync += dst.eq(dst + nbytes)
                        with m.If(striping & (unit_left == nbytes)):  # on to the next unit, on the next channel
                            m.d.sync += [unit_off.eq(0), stripe_k.eq(stripe_k + 1)]
                            with m.If(stripe_k + 1 == f.stripe):
                                m.d.sync += [stripe_k.eq(0), unit_row.eq(unit_row + 1)]
                        with m.Elif(striping):
                            m.d.sync += unit_off.eq(unit_off + nbytes)
        m.d.comb += self.ready.eq(fsm.ongoing("IDLE"))


def int4(byte):
    """An INT8 saturated to [-8, 7], as the low nibble ST.pack4 keeps (flightc.numerics.sat_i4)."""
    v = byte.as_signed()
    return Mux(v > nm.I4_MAX, nm.I4_MAX, Mux(v < nm.I4_MIN, nm.I4_MIN, v))[:4]


class StoreUnit(DmaUnit):
    """ST: ``rows`` rows of ``row_bytes`` from a buffer to a channel, one strobed beat per write burst; with
    ``pack4`` each memory byte packs two buffer bytes saturated to INT4, low nibble first (the INT4 KV cache)."""

    UNIT, OPCODE = Unit.ST, Opcode.ST

    def __init__(self, cfg: HardwareConfig, channel_base: list[Signal]):
        super().__init__(cfg, channel_base, wr=Out(write_client_signature(8 * cfg.axi_data_bytes)))

    def walk(self, m, f, rows, left, bases, ch, src, dst) -> None:
        cfg, wr, w, lb = self.cfg, self.wr, self.beat_bytes, self.lane_bits
        m.submodules.eng = eng = WordEngine(cfg.buffer_port_bytes, max_bytes=2 * w)  # pack4: two bytes a byte
        wiring.connect(m, wiring.flipped(self.port), eng.port)
        nb = Signal(range(w + 1))
        data = Signal(8 * w)
        aw_done = Signal()
        w_done = Signal()
        with m.FSM():
            self.idle(m, "ROW", rows.count.eq(0))
            with m.State("ROW"):
                self.end_after_rows(m, rows, f)
                with m.Else():
                    m.d.sync += [src.eq(rows.buf), dst.eq(rows.mem), left.eq(f.row_bytes)]
                    m.next = "BEAT"
            with m.State("BEAT"):
                with m.If(left == 0):
                    rows.next(m)
                    m.next = "ROW"
                with m.Else():
                    room = w - dst[:lb]
                    n = Mux(left < room, left, room)
                    m.d.sync += nb.eq(n)
                    eng.read(m, f.buf, src, Mux(f.pack4, n << 1, n))
                    m.next = "GET"
            with m.State("GET"):
                with m.If(eng.done):
                    raw = eng.rdata
                    packed = Cat(*[Cat(int4(raw.word_select(2 * i, 8)), int4(raw.word_select(2 * i + 1, 8)))
                                   for i in range(w)])
                    m.d.sync += [data.eq(Mux(f.pack4, packed, raw[:8 * w]) << (dst[:lb] * 8)), aw_done.eq(0),
                                 w_done.eq(0)]
                    m.next = "WRITE"
            with m.State("WRITE"):
                strb = first_lanes(nb, w) << dst[:lb]
                # one beat a burst; each field set here, with the others (a constant bit of a payload would
                # become a sensitivity-less ``always @*`` that Verilator never evaluates)
                m.d.comb += [wr.aw.valid.eq(~aw_done), wr.aw.payload.addr.eq(dst & ~Const(w - 1, AXI_ADDR_BITS)),
                             wr.aw.payload.len.eq(0), wr.w.valid.eq(~w_done), wr.w.payload.data.eq(data),
                             wr.w.payload.strb.eq(strb), wr.w.payload.last.eq(1)]
                with m.If(wr.aw.valid & wr.aw.ready):
                    m.d.sync += aw_done.eq(1)
                with m.If(wr.w.valid & wr.w.ready):
                    m.d.sync += w_done.eq(1)
                with m.If((aw_done | wr.aw.ready) & (w_done | wr.w.ready)):
                    m.next = "RESP"
            with m.State("RESP"):
                m.d.comb += wr.b.ready.eq(1)
                with m.If(wr.b.valid):
                    m.d.sync += [src.eq(src + Mux(f.pack4, nb << 1, nb)), dst.eq(dst + nb), left.eq(left - nb)]
                    m.next = "BEAT"
