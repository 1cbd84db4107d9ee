"""A streamed MV's weight reader for one memory master: its channels' units of the tile, in order, into a FIFO.

A streamed tile (MV.w_stream; ``flightc.compress.stream``) is striped over ``w_stripe`` channels a unit
(``stripe_bytes``, one burst) at a time, in whole rounds; master g's group reads the units on its own channels,
round by round, each as one burst. Bursts are asked for only while the FIFO has room for every beat already asked
for, so the reader always takes the beats the master hands it (it never holds up the read channel the other
readers share) and its lane group's feed pops them a beat a cycle.
"""
from __future__ import annotations

from functools import reduce
from operator import or_

from amaranth.hdl import Cat, Module, Mux, Signal, signed
from amaranth.lib import stream, wiring
from amaranth.lib.fifo import SyncFIFO, SyncFIFOBuffered
from amaranth.lib.wiring import In, Out

from flightc.config import HardwareConfig, SparseEncoding
from flightc.hw.axi import AXI_ADDR_BITS, read_client_signature
from flightc.hw.hierarchy import separate
from flightc.hw.lane_feed import LaneFeed
from flightc.hw.lane_group import LaneGroup, config_kinds
from flightc.hw.latency_rules import RESULT_QUEUE, RESULTS_AHEAD
from flightc.hw.tile_plan import ROUNDS_BITS
from flightc.isa.table import HBM_ADDR_BITS, Sparsity, WeightBits


class StreamReader(wiring.Component):
    """Master ``master``'s share of a streamed tile: ``start`` with whether the tile ``covers`` the master's channels,
    its address and its rounds (units per channel; ``any_rounds``: not none), from the tile's plan
    (hw/tile_plan.py); ``beats`` out; ``mine`` while the MV's tile covers its channels;
    ``left``: beats of the MV's share not yet popped (``any_left``: not none, a register kept beside it);
    ``asking`` while bursts of the tile are left to ask for.

    ``ahead`` with ``start``: the tile is the next MV's, read while this one's last beats drain (they come first in
    the FIFO) or while the MPE is idle (MV.w_early), a burst whenever the FIFO has room for it; its beats are
    counted apart and become the MV's with ``resume``."""

    def __init__(self, cfg: HardwareConfig, master: int, channel_base: list[Signal]):
        """``channel_base``: the base address of each of the core's own channels (a master's tile lies on its
        own)."""
        self.cfg, self.master, self.bases = cfg, master, channel_base
        bits = 8 * cfg.axi_data_bytes
        super().__init__({
            "rd": Out(read_client_signature(bits)), "beats": Out(stream.Signature(bits)),
            "start": In(1), "ahead": In(1), "resume": In(1),
            "covers": In(1), "hbm_addr": In(HBM_ADDR_BITS), "rounds": In(ROUNDS_BITS), "any_rounds": In(1),
            "mine": Out(1), "left": Out(32), "any_left": Out(1), "asking": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        cfg = self.cfg
        cpm = cfg.channels_per_master
        unit_beats = cfg.stripe_bytes // cfg.axi_data_bytes
        depth = cfg.lane_fifo_beats
        m.submodules.fifo = fifo = SyncFIFOBuffered(width=8 * cfg.axi_data_bytes, depth=depth)
        first = self.master * cpm  # the master's channels, among the core's own
        covers = self.covers
        round_ = Signal.like(self.rounds)
        rounds = Signal.like(self.rounds)
        hbm_addr = Signal.like(self.hbm_addr)
        k = Signal(range(max(2, cpm)))  # the channel of the master's the next unit is on
        asking = self.asking
        asked = Signal(range(depth + 1))  # beats asked for and not yet popped
        mine_next = Signal()
        left_next = Signal(32)
        left = self.left
        popped = self.beats.valid & self.beats.ready
        ar = self.rd.ar
        at = Signal(AXI_ADDR_BITS)
        base = self.bases[first] if cpm == 1 else Mux(k == 0, self.bases[first], 0)
        if cpm > 1:
            for j in range(1, cpm):
                base = Mux(k == j, self.bases[first + j], base)
        m.d.comb += [at.eq(base + hbm_addr + round_ * cfg.stripe_bytes),
                     ar.payload.addr.eq(at), ar.payload.len.eq(unit_beats - 1),
                     ar.valid.eq(asking & (asked + unit_beats <= depth))]
        took = ar.valid & ar.ready
        m.d.sync += asked.eq(asked + Mux(took, unit_beats, 0) - popped)
        share = Mux(covers, self.rounds * (cpm * unit_beats), 0)
        with m.If(self.start):  # (the tile before has asked for all of its bursts)
            m.d.sync += [round_.eq(0), k.eq(0), asking.eq(covers & self.any_rounds), rounds.eq(self.rounds),
                         hbm_addr.eq(self.hbm_addr)]
            with m.If(self.ahead):
                m.d.sync += [left_next.eq(share), mine_next.eq(covers)]
            with m.Else():
                m.d.sync += self.mine.eq(covers)
        with m.Elif(took):
            m.d.sync += k.eq(k + 1)
            with m.If(k == cpm - 1):
                m.d.sync += [k.eq(0), round_.eq(round_ + 1)]
                with m.If(round_ + 1 == rounds):
                    m.d.sync += asking.eq(0)
        # whether beats are left, worked out for each way ``left`` moves (the drain decides a pop from it)
        any_next = Signal()
        with m.If(self.start & self.ahead):
            m.d.sync += any_next.eq(covers & self.any_rounds)
        with m.If(self.start & ~self.ahead):
            m.d.sync += [left.eq(share), self.any_left.eq(covers & self.any_rounds)]
        with m.Elif(self.resume):  # the MV before is done: every beat of its share was popped
            m.d.sync += [left.eq(left_next), self.any_left.eq(any_next), self.mine.eq(mine_next)]
        with m.Else():
            m.d.sync += [left.eq(left - popped),
                         self.any_left.eq(Mux(popped, left > 1, self.any_left))]
        # beats in: always taken (the FIFO has room for every beat asked for); out to the feed
        m.d.comb += [fifo.w_en.eq(self.rd.r.valid), fifo.w_data.eq(self.rd.r.payload.data), self.rd.r.ready.eq(1),
                     self.beats.valid.eq(fifo.r_rdy), self.beats.payload.eq(fifo.r_data), fifo.r_en.eq(self.beats.ready)]
        return m


class StreamMv(wiring.Component):
    """The streamed-MV datapath of a core: a reader, a feed and a lane group per memory master, and the groups'
    results in row order. The MPE ``start``s it with the instruction's fields (the readers begin at once), writes
    the activation vector into every group's copy (``act_*``), says ``go`` (the feeds begin), takes each result
    (``res_*``, popped with ``res_pop``) and waits for ``done`` (every result taken, every reader drained).

    The MV's format fields and its tile's plan (``chunks``, ``pairs``, ``span``, ``span_log2``, ``g0``:
    hw/tile_plan.py) are held from ``start`` (or ``resume``) on. The readers take their tile from the ``r_*``
    plan: the MV's own at ``start``; with ``prefetch``, the next MV's, once every reader has asked for all of this
    MV's bursts (``asked``) — the next MV then ``resume``s instead of starting, its beats already in the FIFOs; or,
    with ``prefetch`` while the MPE is idle, a tile no instruction writes (MV.w_early), as much of it as the FIFOs
    hold."""

    def __init__(self, cfg: HardwareConfig, channel_base: list[Signal]):
        self.cfg, self.bases = cfg, channel_base
        bits = 8 * cfg.axi_data_bytes
        S = cfg.lane_slots
        self.act_words = cfg.lane_k_max // S
        super().__init__({
            "rd": Out(read_client_signature(bits)).array(cfg.axi_masters),
            "start": In(1), "go": In(1),
            "bits_code": In(WeightBits), "sparsity": In(Sparsity), "sparse_enc": In(SparseEncoding), "group_log2": In(4),
            "a_unsigned": In(1),
            "chunks": In(range(self.act_words + 1)), "pairs": In(16), "span": In(range(cfg.axi_masters + 1)),
            "span_log2": In(range(max(2, cfg.axi_masters.bit_length()))), "g0": In(range(max(2, cfg.axi_masters))),
            "prefetch": In(1), "resume": In(1), "asked": Out(1),
            "r_covers": In(cfg.axi_masters), "r_hbm_addr": In(HBM_ADDR_BITS), "r_rounds": In(ROUNDS_BITS),
            "r_any_rounds": In(1),
            "act_we": In(1), "act_addr": In(range(self.act_words)), "act_data": In(8 * S),
            "res_valid": Out(1), "res_data": Out(signed(cfg.acc_bits)), "res_row": Out(17), "res_pop": In(1),
            "pair_valid": Out(cfg.stream_out_pairs), "pair_data": Out(2 * cfg.acc_bits * cfg.stream_out_pairs),
            "pair_take": In(range(cfg.stream_out_pairs + 1)),
            "res_end": Out(1), "done": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        cfg = self.cfg
        G, S, B = cfg.axi_masters, cfg.lane_slots, cfg.axi_data_bytes
        acc = cfg.acc_bits
        kinds = config_kinds(cfg)
        # the stream's groups: a power of two of masters from the first channel's
        chunks, pairs, span, span_log2, g0 = self.chunks, self.pairs, self.span, self.span_log2, self.g0
        begin = Signal()  # the MV begins: started, or resumed with its tile read ahead
        m.d.comb += begin.eq(self.start | self.resume)
        readers, feeds, groups, queues = [], [], [], []
        for g in range(G):
            rdr = StreamReader(cfg, g, self.bases)
            feed = separate(LaneFeed, S, B, self.act_words, 1 << 15, kinds)
            grp = separate(LaneGroup, S, self.act_words, acc, kinds)
            q = SyncFIFO(width=2 * acc, depth=RESULT_QUEUE)
            m.submodules[f"reader{g}"], m.submodules[f"feed{g}"] = rdr, feed
            m.submodules[f"group{g}"], m.submodules[f"results{g}"] = grp, q
            readers.append(rdr), feeds.append(feed), groups.append(grp), queues.append(q)
            wiring.connect(m, wiring.flipped(self.rd[g]), rdr.rd)
            m.d.comb += [rdr.start.eq(self.start | self.prefetch), rdr.ahead.eq(self.prefetch),
                         rdr.resume.eq(self.resume), rdr.covers.eq(self.r_covers[g]),
                         rdr.hbm_addr.eq(self.r_hbm_addr), rdr.rounds.eq(self.r_rounds),
                         rdr.any_rounds.eq(self.r_any_rounds),
                         feed.bits_code.eq(self.bits_code), feed.sparsity.eq(self.sparsity),
                         feed.sparse_enc.eq(self.sparse_enc),
                         feed.group_log2.eq(self.group_log2), feed.chunks.eq(chunks), feed.pairs.eq(pairs),
                         feed.start.eq(self.go & rdr.mine),
                         grp.bits_code.eq(self.bits_code), grp.sparsity.eq(self.sparsity),
                         grp.sparse_enc.eq(self.sparse_enc),
                         grp.a_unsigned.eq(self.a_unsigned), grp.grouped.eq(self.group_log2 != 0),
                         grp.act_we.eq(self.act_we), grp.act_addr.eq(self.act_addr), grp.act_data.eq(self.act_data),
                         grp.chunk.valid.eq(feed.chunk.valid), grp.chunk.payload.eq(feed.chunk.payload),
                         q.w_en.eq(grp.result.valid),
                         q.w_data.eq(Cat(grp.result.payload.row0, grp.result.payload.row1))]
            # hold the feed while RESULTS_AHEAD results are queued or on their way (a pair's last chunk emitted, its
            # sums not yet out of the group's pipeline)
            coming = Signal(range(RESULT_QUEUE + 1), name=f"coming{g}")
            m.d.sync += coming.eq(coming + (feed.chunk.valid & feed.chunk.payload.last) - grp.result.valid)
            m.d.comb += feed.hold.eq(q.r_level + coming >= RESULTS_AHEAD)
            # the feed takes the reader's beats; once it is done, the stream's padding is dropped
            fed = Signal(name=f"fed{g}")
            with m.If(begin):
                m.d.sync += fed.eq(0)
            with m.Elif(self.go):
                m.d.sync += fed.eq(rdr.mine)
            draining = fed & ~feed.busy & rdr.any_left  # (past the MV's share: the next MV's tile)
            m.d.comb += [feed.beats.valid.eq(rdr.beats.valid & ~draining), feed.beats.payload.eq(rdr.beats.payload),
                         rdr.beats.ready.eq(Mux(draining, 1, feed.beats.ready))]
        m.d.comb += self.asked.eq(~reduce(or_, [r.asking for r in readers]))
        # results in row order: pair q of stream group j (master g0 + j) holds rows 2 (q x span + j) and the next
        q_i = Signal(16)
        j_i = Signal(range(max(2, G)))
        r_i = Signal()
        g_i = Signal(range(max(2, G)))
        m.d.comb += g_i.eq(g0 + j_i)
        head = Signal(2 * acc)
        ready = Signal()
        with m.Switch(g_i):
            for g, q in enumerate(queues):
                with m.Case(g):
                    m.d.comb += [head.eq(q.r_data), ready.eq(q.r_rdy)]
        # pairs left past q_i: any, and more than one (registers, kept with q_i)
        left_any, left_more = Signal(), Signal()
        m.d.comb += [self.res_end.eq(~left_any), self.res_valid.eq(ready & left_any),
                     self.res_data.eq(Mux(r_i, head[acc:], head[:acc])),
                     self.res_row.eq(Cat(r_i, (q_i << span_log2) + j_i))]
        # whole pairs (the output stage's raw-sum word): position t is the pair after t others in row order, the head
        # of group j_i + t round the stream's groups (t < span: each group once), taken ``pair_take`` at a time
        P = cfg.stream_out_pairs
        for t in range(P):
            at = Signal(range(2 * max(2, G)), name=f"pair_at{t}")
            m.d.comb += at.eq(j_i + t)
            wraps = Signal(name=f"pair_wraps{t}")
            m.d.comb += wraps.eq(at >= span)
            with m.Switch(g0 + Mux(wraps, at - span, at)):
                for g, q in enumerate(queues):
                    with m.Case(g):
                        m.d.comb += [self.pair_valid[t].eq(q.r_rdy & (t < span) & Mux(wraps, left_more, left_any)),
                                     self.pair_data.word_select(t, 2 * acc).eq(q.r_data)]
        for g, q in enumerate(queues):
            rel = Signal(range(2 * max(2, G)), name=f"pair_rel{g}")  # g's position after j_i, if in the stream
            m.d.comb += rel.eq(Mux(g - g0 >= j_i, g - g0 - j_i, g - g0 + span - j_i))
            inside = (g >= g0) & (g - g0 < span)
            m.d.comb += q.r_en.eq(Mux(g == g_i, self.res_pop & r_i, 0) | (inside & (rel < self.pair_take)))
        moved = Signal(range(2 * max(2, G) + 1))
        m.d.comb += moved.eq(j_i + self.pair_take)
        next_pair = [q_i.eq(q_i + 1), left_any.eq(left_more), left_more.eq(q_i + 2 < pairs)]
        with m.If(begin):
            m.d.sync += [q_i.eq(0), j_i.eq(0), r_i.eq(0), left_any.eq(pairs != 0), left_more.eq(pairs > 1)]
        with m.Elif(self.res_pop):
            m.d.sync += r_i.eq(~r_i)
            with m.If(r_i):
                m.d.sync += j_i.eq(j_i + 1)
                with m.If(j_i + 1 == span):
                    m.d.sync += [j_i.eq(0), *next_pair]
        with m.Elif(self.pair_take != 0):
            with m.If(moved >= span):
                m.d.sync += [j_i.eq(moved - span), *next_pair]
            with m.Else():
                m.d.sync += j_i.eq(moved)
        m.d.comb += self.done.eq(self.res_end & ~reduce(or_, [r.any_left for r in readers]))
        return m
