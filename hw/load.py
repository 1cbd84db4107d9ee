"""LD, memory -> buffer, as one lane per memory master: each lane reads its share of a striped row through its
own master, so every channel of a striped matrix streams at once.

A lane is the LD of one master: an *issuer* asks for bursts, up to ``axi_outstanding`` ahead, and
queues a descriptor for each (where its bytes go, how far its beats rotate onto the buffer's lanes, its
bytes and its first beat's); a *receiver* takes the beats as they come, a beat a cycle, the descriptor
from a register at the head of its queue, and writes each rotated onto the buffer's lanes (a second
cycle when its bytes straddle two buffer words). Both are pipelined so that no path between registers
is deeper than 225 MHz allows (hw/latency_rules.py ``LD_*``; the performance model follows them).
Every lane sees every LD: of a striped row (:func:`flightc.isa.footprint.stripe_layout`) lane k
takes the units on master k's channels, in the row's order; lane 0 also takes plain and gathered
rows, through whichever master holds them (a gathered row first reads its id on channel 0 and waits
for it). Once a lane's issuer has asked for every burst it queues an end marker; LD is ``ready``
for the next instruction when every issuer is, and ``done`` when every lane's receiver has reached
the instruction's marker.
"""
from __future__ import annotations

from functools import reduce
from operator import and_

from amaranth.hdl import Array, Cat, Const, Elaboratable, Module, Mux, Signal, Value
from amaranth.lib import data, wiring
from amaranth.lib.fifo import SyncFIFO
from amaranth.lib.wiring import Out

from flightc.config import HardwareConfig
from flightc.hw.address import master_of, own_block
from flightc.hw.axi import AXI_ADDR_BITS, read_client_signature
from flightc.hw.axi_rules import AXI_BOUNDARY, LD_IN_FLIGHT
from flightc.hw.dsp48e2 import registered_product
from flightc.hw.latency_rules import GATHER_HALF_BITS, PRODUCT_LATENCY
from flightc.hw.lut6 import select
from flightc.hw.buffers import first_lanes, rotate_bytes, word_port_signature
from flightc.hw.decode import BUF_SEL_BITS
from flightc.hw.dma import DmaUnit
from flightc.hw.unit import unit_signature
from flightc.isa.table import BUF_ADDR_BITS, HBM_ADDR_BITS, Opcode, Unit


class DescriptorQueue(Elaboratable):
    """A queue whose head is a register (SyncFIFOBuffered's ports and timing: an entry at the head two cycles after
    it is written, ``depth`` entries in all, room again the cycle after the head is taken), its other entries in a
    SyncFIFO's flip-flops — too few to take a block RAM, whose unregistered read would sit in front of every path
    from the head."""

    def __init__(self, width: int, depth: int):
        self.width, self.depth = width, depth
        self.w_data, self.w_en, self.w_rdy = Signal(width), Signal(), Signal()
        self.r_data, self.r_en, self.r_rdy = Signal(width), Signal(), Signal()

    def elaborate(self, platform):
        m = Module()
        m.submodules.behind = behind = SyncFIFO(width=self.width, depth=max(1, self.depth - 1))
        # (one deep: the entry passes through ``behind`` on its way to the head, which must be empty for it)
        room = behind.w_rdy if self.depth > 1 else behind.w_rdy & ~self.r_rdy
        m.d.comb += [behind.w_data.eq(self.w_data), behind.w_en.eq(self.w_en), self.w_rdy.eq(room)]
        move = behind.r_rdy & (~self.r_rdy | self.r_en)
        m.d.comb += behind.r_en.eq(move)
        with m.If(move):
            m.d.sync += [self.r_data.eq(behind.r_data), self.r_rdy.eq(1)]
        with m.Elif(self.r_en):
            m.d.sync += self.r_rdy.eq(0)
        return m


def own_banks_signal(cfg: HardwareConfig, f, first_channel: Value | int = 0):
    """:func:`flightc.isa.footprint.own_banks` of the LD in ``f`` (its decoded fields), as logic; ``cfg`` is the
    core's, its own channels from ``first_channel``."""
    chans = len(cfg.core_channels)
    if chans & (chans - 1) or cfg.axi_masters == 1 or not cfg.banked_buffers:
        return Const(0)
    banked = Cat(*[f.buf == int(b) for b in cfg.banked_buffers]).any()
    sbl = cfg.stripe_bytes.bit_length() - 1
    cbits = chans.bit_length() - 1
    row_in = f.buf_addr[sbl:sbl + cbits] == f.channel[:cbits] if cbits else Const(1)
    one_round = f.row_bytes <= (f.stripe << sbl)
    is_own, local = own_block(cfg, f.channel, Value.cast(first_channel))
    mine = is_own & (local + f.stripe <= chans)  # on the core's own channels
    return (banked & (f.stripe > 1) & ~f.gather & (f.stripe_log2 == sbl) & (f.hbm_addr[:sbl] == 0) & (f.buf_addr[:sbl] == 0)
            & row_in & mine & (one_round | (f.stripe == chans)))


class LoadLane(DmaUnit):
    """The LD of one memory master (``lane``); lane 0 reads through every master (``rd[g]``: master g), the
    others through their own (``rd[0]``)."""

    UNIT, OPCODE = Unit.LD, Opcode.LD

    def __init__(self, cfg: HardwareConfig, channel_base: list[Signal], lane: int = 0,
                 own_base: list[Signal] | None = None, first_channel: Value | None = None):
        """``channel_base``: every channel's base; ``own_base``: those of the core's own channels, which start at
        ``first_channel`` (by default the view's: :attr:`HardwareConfig.first_master`)."""
        self.lane = lane
        first = cfg.first_master * cfg.channels_per_master
        self.own_base = own_base if own_base is not None else channel_base[first:first + len(cfg.core_channels)]
        self.first_channel = first_channel if first_channel is not None else Const(first, range(max(2, first + 1)))
        self.reach = cfg.axi_masters if lane == 0 else 1
        bits = 8 * cfg.axi_data_bytes
        super().__init__(cfg, channel_base, rd=Out(read_client_signature(bits)).array(self.reach), ready=Out(1))

    def walk(self, m, f, rows, left, bases, ch, dst, src) -> None:
        cfg, w, lb, port = self.cfg, self.beat_bytes, self.lane_bits, self.port
        rds = [self.rd[g] for g in range(self.reach)]
        cpm = cfg.channels_per_master
        burst_bytes = cfg.axi_burst_beats * w
        # a burst's descriptor: where its bytes go, how far its beats are rotated onto the buffer's lanes (the same
        # for every beat), its bytes, those of its first beat, whether it is one beat or two at most, whose it is
        desc = data.StructLayout({"dst": BUF_ADDR_BITS, "buf": BUF_SEL_BITS, "rot": max(1, lb),
                                  "nbytes": range(burst_bytes + 1), "first_nb": range(w + 1), "single": 1,
                                  "double": 1, "ident": 1, "end": 1,
                                  "master": max(1, (self.reach - 1).bit_length())})
        # (the head is a register: a descriptor is at the head LD_HEAD_LATENCY cycles after it is written)
        m.submodules.bursts = queue = DescriptorQueue(desc.size, cfg.axi_outstanding)
        head = desc(queue.r_data)
        entry = Signal(desc)
        m.d.comb += queue.w_data.eq(entry.as_value())
        ident = Signal(32)
        id_ready = Signal()  # the receiver has the gathered row's id
        gather_phase = Signal()  # the issuer is reading the id of the current row
        # ---- receiver: the head descriptor's beats (from its master); past its first (``mid``), ``taken`` bytes of
        # it so far and ``left`` still to come (``left_small``: at most a beat's)
        r_valid = Signal()
        r_ready = Signal()
        r_data = Signal(8 * w)
        m.d.comb += [r_valid.eq(select(m, "beat_valid", head.master, [r.r.valid for r in rds])),
                     r_data.eq(select(m, "beat", head.master, [r.r.payload.data for r in rds]))]
        for g, r in enumerate(rds):
            m.d.comb += r.r.ready.eq(r_ready & (head.master == g))
        pend = Signal()
        pend_second = Signal()  # its first word is written; the rest goes to the next word
        pend_data = Signal(8 * w)
        pend_addr = Signal(BUF_ADDR_BITS)
        pend_n = Signal(range(w + 1))
        pend_buf = Signal(BUF_SEL_BITS)
        full = self.lane == 0  # lanes past the first take only striped rows: no plain or gathered rows to build
        # and those rows' units start at stripe units in memory and in the buffer (footprint.own_banks): every beat
        # is one whole buffer word (its last one's first bytes), so it goes in as it came, in one cycle
        pend_head = pend_addr[:lb] if full else Const(0, lb)
        straddles = Signal()  # the pending write's bytes go on into the next word
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
        mid = Signal()
        taken = Signal(range(burst_bytes + 1))
        left = Signal(range(burst_bytes + 1))
        left_small = Signal()
        nb = Signal(range(w + 1))
        last = Signal()  # the beat ends the burst
        m.d.comb += [nb.eq(Mux(mid, Mux(left_small, left, w), head.first_nb)),
                     last.eq(Mux(mid, left_small, head.single)), r_ready.eq(queue.r_rdy & ~head.end & free)]
        with m.If(queue.r_rdy & head.end & ~pend):  # every byte of the instruction written
            m.d.comb += [queue.r_en.eq(1), self.done.eq(1)]
        # the beat's bytes from its first lane on, rotated straight to the buffer word's lanes from its address (one
        # rotation: the bytes it wraps around fall outside the write's mask); a gathered row's id to byte 0
        rotated = rotate_bytes(m, r_data, head.rot, w) if full else r_data
        id_beat = Signal()  # an id's beat is in pend_data, its bytes from byte id_have on new
        id_have = Signal(3)
        id_last = Signal()
        if full:
            m.d.sync += id_beat.eq(0)
            keep = Cat(*[b.replicate(8) for b in first_lanes(id_have, 4)])
            with m.If(id_beat):
                m.d.sync += ident.eq((ident & keep) | (pend_data[:32] & ~keep))
                with m.If(id_last):
                    m.d.sync += id_ready.eq(1)
        with m.If(r_valid & r_ready):
            with m.If(last):
                m.d.comb += queue.r_en.eq(1)
                m.d.sync += [taken.eq(0), mid.eq(0)]
            with m.Else():
                m.d.sync += [taken.eq(taken + nb), mid.eq(1),
                             left.eq(Mux(mid, left - w, head.nbytes - head.first_nb)),
                             left_small.eq(Mux(mid, left <= 2 * w, head.double))]
            is_id = Const(0)  # a gathered row's id, not bytes for the buffer (lane 0 alone takes gathers)
            if full:
                is_id = head.ident
                with m.If(is_id):
                    m.d.sync += [id_beat.eq(1), id_have.eq(Mux(mid, taken[:3], 0)), id_last.eq(last),
                                 pend_data.eq(rotated)]
            with m.If(~is_id):
                addr = head.dst + taken
                m.d.sync += [pend.eq(1), pend_second.eq(0), pend_addr.eq(addr), pend_n.eq(nb), pend_buf.eq(head.buf),
                             pend_data.eq(rotated)]
                if full:
                    m.d.sync += straddles.eq(addr[:lb] + nb > w)
        # ---- issuer: a pipeline of registers (hw/latency_rules.py: LD_*), so that no path between them is deeper
        # than 225 MHz allows. PREP and PREP2 register what the instruction's fields decide once (its stripe's
        # shifts, the lane's channels of it, a plain row's channel base); UNIT and UNIT2 place a striped row's next
        # unit (its bytes and buffer place, its channel's base, its address); SIZE works out the next burst's bytes
        # from the piece's address and what is left of it; ISSUE asks for it (``issuing``). Decisions that would
        # compare counters are registers kept as the counters move (``ending``, ``k_more``, ``u0_in``).
        # A piece — a plain row, a striped unit, a gathered row or its id — is walked as ``at`` (its next byte in
        # memory), ``limit`` (its bytes left) and ``to`` (where they go in the buffer), running sums.
        striping = Signal()  # a gather's stripe cuts its table in blocks instead
        own = Signal()  # each unit lands in its master's bank, so each lane writes its own (footprint.own_banks)
        whole = Signal()  # lane 0 takes every unit of a striped row that does not
        target = Signal(max(1, (self.reach - 1).bit_length()))  # the master of the piece's bursts (lane 0)
        # the lane's channels of the stripe, [lo, hi): master `lane`'s channels, shifted by the row's first; lane 0
        # takes every channel of a row that does not land in the masters' own banks (a row that does lies on the
        # core's own channels: counted from their first)
        first, past = self.lane * cpm, (self.lane + 1) * cpm
        _, local_ch = own_block(cfg, f.channel, self.first_channel)
        lo, hi = Signal.like(f.stripe), Signal.like(f.stripe)
        unit = Signal(17)  # a stripe unit's bytes
        round_bytes = Signal.like(f.row_bytes)  # a round of the stripe: a unit on each channel
        lo_base = Signal.like(f.row_bytes)  # where the lane's first unit of a round starts, from the round's
        lo_ch = Mux(local_ch < first, first - local_ch, 0)
        hi_ch = Mux(local_ch < past, past - local_ch, 0)
        stripe_k = Signal.like(f.stripe)  # the unit's channel within the stripe
        k_ch = Signal(len(f.channel) + 1)  # its channel: f.channel + stripe_k
        k_last = Signal()  # stripe_k + 1 == hi: the unit is the lane's last of its round
        k_more = Signal()  # stripe_k < hi: the lane has a unit in this round
        lo_lt_hi = Signal()  # ... at the round's first
        u0_in = Signal()  # u0 < f.row_bytes: the unit starts in the row
        row_base = Signal.like(f.row_bytes)  # where the lane's first unit of this round starts in the row
        u0 = Signal(len(f.row_bytes) + 1)  # where the unit starts in the row
        chan_addr = Signal(AXI_ADDR_BITS)  # the row's address on each channel this round: hbm_addr, a unit a round
        at = Signal(AXI_ADDR_BITS)
        limit = Signal.like(f.row_bytes)
        to = Signal(BUF_ADDR_BITS)
        nbytes = Signal(range(burst_bytes + 1))  # the next burst's (SIZE)
        piece_ends = Signal()  # ... and it ends the piece
        row_empty = Signal()  # f.row_bytes == 0
        piece_empty = Signal()  # the piece has no bytes (an empty plain or gathered row)
        stripe_ch = Signal.like(f.channel)  # k_ch, or 0 for a channel the config lacks (fsim refuses those)
        unit_base = Signal(AXI_ADDR_BITS)  # stripe_ch's base (UNIT), added to the round's address in UNIT2
        ch_r = Signal.like(ch)  # a plain row's channel ...
        ch_base = Signal(AXI_ADDR_BITS)  # ... and its base
        row_off = Signal(AXI_ADDR_BITS)  # the row's address in its channel: hbm_addr, a stride a row

        def to_unit(m, k):
            """The next unit on channel f.channel + ``k``'s stripe place (``k``: its running sum)."""
            m.d.sync += [k_ch.eq(k), stripe_ch.eq(Mux(k < cfg.mem_channels, k, 0))]

        def base_of(channel):
            """Where a channel starts: any for lane 0, one of the lane's own for the others (no multiplexer over
            every channel's 64-bit base)."""
            if full:
                return bases[channel]
            own_bases = self.own_base[first:past]
            return own_bases[0] if cpm == 1 else Array(own_bases)[channel[:(cpm - 1).bit_length()]]

        end_mark = Signal()  # ROW queues the instruction's end marker
        # every row asked for (or none of the instruction the lane's: past the first lane, striped rows into own
        # banks alone): in ROW, the end marker is queued
        ending = Signal()
        rows_left = Signal.like(f.rows)  # f.rows - rows.count, counted down (no compare of the two)

        def next_row(m):
            rows.next(m)
            m.d.sync += [rows_left.eq(rows_left - 1), row_off.eq(row_off + f.hbm_stride), ending.eq(rows_left == 1)]
            m.next = "ROW"
        # a gathered row's address, a register a cycle: its id's part (masked to a block of the table), the id's
        # partial products with the stride (a DSP48E2 each, PRODUCT_LATENCY), their sum with hbm_addr, the base
        block_ch, row_ch = Signal.like(f.channel), Signal.like(f.channel)
        g_base = Signal(AXI_ADDR_BITS)
        part = Signal(32)  # the id, or its row within its block
        block = Signal.like(f.channel)  # the id's block (a table cut in blocks, a block a channel)
        g_addr = Signal(HBM_ADDR_BITS)
        if full:
            half = GATHER_HALF_BITS
            pieces = ((part[:half], f.hbm_stride[:half]), (part[:half], f.hbm_stride[half:HBM_ADDR_BITS]),
                      (part[half:32], f.hbm_stride[:half]))  # (the high halves' product is past 32 bits)
            products = [registered_product(m, f"gather_p{k}", Cat(a, Const(0, 1)), Cat(b, Const(0, 1)))
                        for k, (a, b) in enumerate(pieces)]  # (unsigned: a zero above each)
        # ---- the ask (ISSUE), from a register of its own rather than the state's decoding
        issuing = Signal()
        asked = Signal()
        # (a master answers only the reader that asks, hw/axi_master.py, and the lane asks only `target`: no
        # multiplexer over the masters' answers)
        ar_ready = Cat(*[r.ar.ready for r in rds]).any()
        lane = at[:lb] if lb else Const(0, 1)
        span = Signal(range(burst_bytes + w + 1))  # the burst's bytes from its first beat's first lane, less one
        beats_m1 = span >> lb
        m.d.comb += span.eq(lane + nbytes - 1)
        for g, r in enumerate(rds):
            m.d.comb += [r.ar.valid.eq(issuing & queue.w_rdy & (target == g)),
                         r.ar.payload.addr.eq(at & ~Const(w - 1, AXI_ADDR_BITS)), r.ar.payload.len.eq(beats_m1)]
        with m.If(issuing):
            m.d.comb += [entry.dst.eq(to), entry.buf.eq(f.buf), entry.nbytes.eq(nbytes),
                         entry.rot.eq(Mux(gather_phase, 0, to) - lane), entry.single.eq(beats_m1 == 0),
                         entry.double.eq(beats_m1 <= 1), entry.first_nb.eq(Mux(beats_m1 == 0, nbytes, w - lane)),
                         entry.ident.eq(gather_phase), entry.master.eq(target)]
        m.d.comb += [asked.eq(issuing & queue.w_rdy & ar_ready), end_mark.eq(ending & queue.w_rdy),
                     queue.w_en.eq(asked | end_mark)]
        with m.If(ending):
            m.d.comb += entry.end.eq(1)
        with m.If(end_mark):
            m.d.sync += ending.eq(0)
        with m.If(asked):
            m.d.sync += issuing.eq(0)
        with m.FSM() as fsm:
            self.idle(m, "PREP", rows.count.eq(0))
            with m.State("PREP"):
                m.d.sync += [striping.eq((f.stripe > 1) & ~f.gather),
                             own.eq(own_banks_signal(cfg, f, self.first_channel)),
                             unit.eq(Const(1, 17) << f.stripe_log2), round_bytes.eq(f.stripe << f.stripe_log2),
                             lo.eq(Mux(lo_ch >= f.stripe, f.stripe, lo_ch)),
                             hi.eq(Mux(hi_ch >= f.stripe, f.stripe, hi_ch)), ch_r.eq(ch), row_off.eq(f.hbm_addr),
                             row_empty.eq(f.row_bytes == 0)]
                m.next = "PREP2"
            with m.State("PREP2"):
                works = Const(1) if full else striping & own  # the lane has a part in the instruction
                m.d.sync += [whole.eq(striping & ~own if full else 0), rows_left.eq(f.rows), ch_base.eq(bases[ch_r]),
                             ending.eq((f.rows == 0) | ~works)]
                with m.If(striping & ~own if full else Const(0)):
                    m.d.sync += [lo.eq(0), hi.eq(f.stripe), lo_base.eq(0)]
                with m.Else():
                    m.d.sync += lo_base.eq(lo << f.stripe_log2)
                m.next = "ROW"
            with m.State("ROW"):
                with m.If(ending):  # (the end marker is queued)
                    with m.If(queue.w_rdy):
                        m.next = "IDLE"
                with m.Elif(striping):
                    m.d.sync += [dst.eq(rows.buf), stripe_k.eq(lo), u0.eq(lo_base),
                                 row_base.eq(lo_base), chan_addr.eq(f.hbm_addr), gather_phase.eq(0),
                                 k_more.eq(lo < hi), lo_lt_hi.eq(lo < hi), u0_in.eq(lo_base < f.row_bytes)]
                    to_unit(m, f.channel + lo)
                    m.next = "UNIT"
                if full:
                    with m.Elif(f.gather):
                        m.d.sync += [at.eq(bases[0] + f.ids_addr + (rows.count << 2)), limit.eq(4), target.eq(0),
                                     piece_empty.eq(0),
                                     gather_phase.eq(1), id_ready.eq(0), dst.eq(rows.buf), to.eq(rows.buf)]
                        m.next = "SIZE"
                    with m.Else():
                        m.d.sync += [at.eq(ch_base + row_off), limit.eq(f.row_bytes), piece_empty.eq(row_empty),
                                     gather_phase.eq(0),
                                     dst.eq(rows.buf), to.eq(rows.buf), target.eq(master_of(ch_r, cfg))]
                        m.next = "SIZE"
            with m.State("UNIT"):  # (past the first lane, every row is striped)
                # the master is held while a unit is placed and its burst sized, as if it were asked for already
                rest_row = f.row_bytes - u0
                unit_master = Mux(whole, master_of(stripe_ch, cfg), 0)
                m.d.comb += [r.hold.eq(unit_master == g) for g, r in enumerate(rds)]
                with m.If(k_more & u0_in):
                    m.d.sync += [unit_base.eq(base_of(stripe_ch)), to.eq(dst + u0),
                                 limit.eq(Mux(rest_row < unit, rest_row, unit)), piece_empty.eq(0),
                                 k_last.eq(stripe_k + 1 == hi),
                                 target.eq(unit_master)]
                    m.next = "UNIT2"
                with m.Else():
                    next_row(m)
            with m.State("UNIT2"):  # the unit's address: its channel's base and the round's running address
                m.d.comb += [r.hold.eq(target == g) for g, r in enumerate(rds)]
                m.d.sync += at.eq(unit_base + chan_addr)
                m.next = "SIZE"
            with m.State("SIZE"):
                # a burst takes the piece's bytes up to the burst's beats and the 4 KiB boundary
                cap = Signal(13)
                by_page = Const(AXI_BOUNDARY, 13) - at[:12]
                # (a burst past 4 KiB from its first lane also passes the boundary: the page decides)
                by_beats = Const(min(burst_bytes, AXI_BOUNDARY), 13) - (at[:lb] if lb else 0)
                m.d.comb += cap.eq(Mux(by_page < by_beats, by_page, by_beats))
                m.d.sync += [nbytes.eq(Mux(limit < cap, limit, cap)), piece_ends.eq(limit <= cap)]
                m.d.comb += [r.hold.eq(target == g) for g, r in enumerate(rds)]
                with m.If(piece_empty):  # an empty row
                    next_row(m)
                with m.Else():
                    m.d.sync += issuing.eq(1)
                    m.next = "ISSUE"
            with m.State("ISSUE"):
                with m.If(asked):
                    m.d.sync += [at.eq(at + nbytes), limit.eq(limit - nbytes), to.eq(to + nbytes)]
                    with m.If(~piece_ends):
                        m.next = "SIZE"
                    with m.Elif(striping):  # on to the lane's next unit, on its next channel
                        m.d.sync += [stripe_k.eq(stripe_k + 1), u0.eq(u0 + unit), u0_in.eq(u0 + unit < f.row_bytes)]
                        to_unit(m, Mux(k_last, f.channel + lo, k_ch + 1))
                        with m.If(k_last):  # the next round of the stripe
                            m.d.sync += [stripe_k.eq(lo), u0.eq(row_base + round_bytes),
                                         row_base.eq(row_base + round_bytes), chan_addr.eq(chan_addr + unit),
                                         k_more.eq(lo_lt_hi), u0_in.eq(row_base + round_bytes < f.row_bytes)]
                        m.next = "UNIT"
                    if full:
                        with m.Elif(gather_phase):
                            m.next = "ID"
                    with m.Else():
                        next_row(m)
            if full:
                with m.State("ID"):  # a table cut in blocks of 2^stripe_log2 rows, a block a channel
                    with m.If(id_ready):
                        m.d.sync += [part.eq(Mux(f.stripe > 1, ident & ((Const(1, 33) << f.stripe_log2) - 1), ident)),
                                     block.eq(ident >> f.stripe_log2)]
                        m.next = "PRODUCT0"
                assert PRODUCT_LATENCY >= 2, "the gathered row's channel is found while its products settle"
                for k in range(PRODUCT_LATENCY):  # (the row's channel meanwhile)
                    with m.State(f"PRODUCT{k}"):
                        if k == 0:
                            m.d.sync += block_ch.eq(Mux(f.stripe > 1, f.channel + block, ch))
                        if k == 1:
                            m.d.sync += row_ch.eq(Mux(block_ch < cfg.mem_channels, block_ch, 0))
                        m.next = f"PRODUCT{k + 1}" if k + 1 < PRODUCT_LATENCY else "OFFSET"
                with m.State("OFFSET"):  # the row's address in its channel (the product's low 32 bits: fsim
                    # refuses a gathered row outside the channel's 4 GiB at most), and the channel's base
                    m.d.sync += [g_addr.eq(f.hbm_addr + products[0] + ((products[1] + products[2]) << half)),
                                 g_base.eq(bases[row_ch])]
                    m.next = "GATHERED"
                with m.State("GATHERED"):
                    m.d.sync += [at.eq(g_base + g_addr), limit.eq(f.row_bytes), piece_empty.eq(row_empty), to.eq(dst),
                                 target.eq(master_of(row_ch, cfg)), gather_phase.eq(0)]
                    m.next = "SIZE"
        m.d.comb += self.ready.eq(fsm.ongoing("IDLE"))


class LoadUnit(wiring.Component):
    """LD as ``axi_masters`` lanes (:class:`LoadLane`) behind one instruction handshake: ``port[k]`` is lane k's
    buffer port, ``rd[k]`` its own master's reader, ``far[g - 1]`` lane 0's reader on master g."""

    UNIT = Unit.LD

    def __init__(self, cfg: HardwareConfig, channel_base: list[Signal], own_base: list[Signal] | None = None,
                 first_channel: Value | None = None):
        self.cfg = cfg
        n = cfg.axi_masters
        bits = 8 * cfg.axi_data_bytes
        self.lanes = [LoadLane(cfg, channel_base, k, own_base, first_channel) for k in range(n)]
        members = {"ctl": Out(unit_signature(Unit.LD)), "ready": Out(1),
                   "port": Out(word_port_signature(cfg.buffer_port_bytes)).array(n),
                   "rd": Out(read_client_signature(bits)).array(n)}
        if n > 1:
            members["far"] = Out(read_client_signature(bits)).array(n - 1)
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        lanes = self.lanes
        for k, lane in enumerate(lanes):
            m.submodules[f"lane{k}"] = lane
            wiring.connect(m, wiring.flipped(self.port[k]), lane.port)
            wiring.connect(m, wiring.flipped(self.rd[k]), lane.rd[0])
            m.d.comb += [lane.ctl.start.eq(self.ctl.start), lane.ctl.instr.eq(self.ctl.instr)]
            if k:
                wiring.connect(m, wiring.flipped(self.far[k - 1]), lanes[0].rd[k])
        m.d.comb += self.ready.eq(reduce(and_, [lane.ready for lane in lanes]))
        if len(lanes) == 1:
            m.d.comb += self.ctl.done.eq(lanes[0].done)
            return m
        # done in order once every lane is: each counts the instructions it has finished and LD has not
        have = []
        for k, lane in enumerate(lanes):
            ahead = Signal(range(LD_IN_FLIGHT + 1), name=f"ahead{k}")
            have.append((ahead, lane.done, (ahead != 0) | lane.done))
        every = reduce(and_, [h for _, _, h in have])
        m.d.comb += self.ctl.done.eq(every)
        for ahead, done, _ in have:
            m.d.sync += ahead.eq(ahead + done - every)
        return m
