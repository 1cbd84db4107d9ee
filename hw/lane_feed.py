"""A lane group's feed: the beats of one weight stream in, a chunk and its segment multipliers a cycle out.

The stream is laid out by ``flightc.compress.stream`` (``StreamShape``): the group's row pairs one after another,
each a run of *blocks*; a block of a grouped format opens with a beat of multipliers (a byte per row per group,
for ``beat / 2`` groups), then its chunks back to back, each ``chunk_stride`` bytes (a multiple of 16), padded to
whole beats. The feed holds a window of the block's bytes past the chunks it has sent: it sends the next chunk from
the window where the window holds it, else from the window and the beat it takes that cycle, else it only takes the
beat (``flightc.compress.stream.feed_step``, the performance model's rule too). So a chunk may straddle beats (48
bytes of W4 8:16 with a bitmask, four to three 64-byte beats), and the feed keeps up with a beat a cycle whatever
the format, and a chunk a cycle where a chunk is at most a beat. The multipliers shift along as the chunks use
them, so each segment's is picked from the register's first bytes.
"""
from __future__ import annotations

from amaranth.hdl import Cat, Module, Mux, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from flightc.compress.formats import GROUP_MAX, GROUP_MIN
from flightc.compress.stream import SEGMENT, chunk_bytes, chunk_stride, feed_holds, feed_window
from flightc.hw.lane_group import Kinds, chunk_layout, format_case, formats
from flightc.config import SparseEncoding
from flightc.isa.table import Sparsity, WeightBits

GROUP_LOG2_MIN, GROUP_LOG2_MAX = GROUP_MIN.bit_length() - 1, GROUP_MAX.bit_length() - 1


class LaneFeed(wiring.Component):
    """Feeds one :class:`flightc.hw.lane_group.LaneGroup` of ``slots`` slots from ``beat``-byte beats; ``start``
    with the format, chunks per pair and pairs held until ``done``; ``hold`` pauses it (its group's results have
    nowhere to go); ``kinds``: the weight formats it cuts (as its group's)."""

    def __init__(self, slots: int, beat: int, max_chunks: int, max_pairs: int, kinds: Kinds | None = None):
        if beat & (beat - 1) or beat < 8:
            raise ValueError(f"a {beat}-byte beat: the weight stream needs a power of two of at least 8 bytes")
        self.slots, self.beat, self.max_chunks, self.kinds = slots, beat, max_chunks, kinds
        super().__init__({
            "beats": In(stream.Signature(8 * beat)),
            "chunk": Out(stream.Signature(chunk_layout(slots, kinds), always_ready=True)),
            "start": In(1), "bits_code": In(WeightBits), "sparsity": In(Sparsity),
            "sparse_enc": In(SparseEncoding), "group_log2": In(4),
            "chunks": In(range(max_chunks + 1)), "pairs": In(range(max_pairs + 1)), "done": Out(1),
            "hold": In(1), "busy": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        S, B = self.slots, self.beat
        N_SEG = S // SEGMENT
        widest = len(self.chunk.payload.bytes) // 8
        strides = {f[0:3]: chunk_stride(f[3], S) for f in formats(S, self.kinds)}
        W = feed_window(list(strides.values()), B)
        stride = Signal(range(W + 1))
        key, case = format_case(self.sparsity, self.bits_code, self.sparse_enc, formats(S, self.kinds))
        with m.Switch(key):
            for f in formats(S, self.kinds):
                with m.Case(case(f)):
                    m.d.comb += stride.eq(strides[f[0:3]])
        grouped = self.group_log2 != 0
        # chunks of a block: those whose multipliers one beat holds (beat / 2 groups), or the whole pair
        blk_chunks = Signal(range(max(self.max_chunks, (B // 2 << GROUP_LOG2_MAX) // S) + 1))
        with m.Switch(self.group_log2):
            for g in range(GROUP_LOG2_MIN, GROUP_LOG2_MAX + 1):
                with m.Case(g):
                    m.d.comb += blk_chunks.eq(max(1, (B // 2 << g) // S))
            with m.Default():
                m.d.comb += blk_chunks.eq(self.chunks)
        pairs_left = Signal.like(self.pairs)
        chunks_left = Signal.like(self.chunks)  # of the pair, this chunk included
        blk_left = Signal.like(blk_chunks)
        j_blk = Signal.like(blk_chunks)  # the chunk's index in its block
        window = Signal(8 * W)  # the block's bytes held, the last ``held`` of them not yet sent
        held = Signal(range(W + 1))
        mult = Signal(8 * B)
        out = self.chunk
        m.d.sync += [out.valid.eq(0), self.done.eq(0)]

        def emit(m, data):
            """The chunk goes out next cycle with its segments' multipliers; the counters move on."""
            p = out.payload
            m.d.sync += [out.valid.eq(1), p.bytes.eq(data), p.first.eq(chunks_left == self.chunks),
                         p.last.eq(chunks_left == 1)]
            for r in range(2):
                for s in range(N_SEG):
                    gs = p.gs.word_select(r * N_SEG + s, 8)
                    with m.Switch(self.group_log2):
                        for g in range(GROUP_LOG2_MIN, GROUP_LOG2_MAX + 1):
                            with m.Case(g):
                                m.d.sync += gs.eq(mult.word_select(2 * ((SEGMENT * s) >> g) + r, 8))
                        with m.Default():
                            m.d.sync += gs.eq(1)
            # the multipliers this chunk used leave the register: 2 x slots / group bytes, or 2 at a group's end
            with m.Switch(self.group_log2):
                for g in range(GROUP_LOG2_MIN, GROUP_LOG2_MAX + 1):
                    with m.Case(g):
                        if (1 << g) <= S:
                            m.d.sync += mult.eq(mult >> (16 * (S >> g)))
                        else:
                            per = (1 << g) // S
                            with m.If(j_blk % per == per - 1):
                                m.d.sync += mult.eq(mult >> 16)
            m.d.sync += [chunks_left.eq(chunks_left - 1), blk_left.eq(blk_left - 1), j_blk.eq(j_blk + 1)]
            with m.If((chunks_left == 1) | (blk_left == 1)):  # the rest of the block's last beat is padding
                m.d.sync += held.eq(0)
            with m.If(chunks_left == 1):  # the pair's last chunk
                m.d.sync += [pairs_left.eq(pairs_left - 1), chunks_left.eq(self.chunks), j_blk.eq(0)]
                with m.If(pairs_left == 1):
                    m.d.sync += self.done.eq(1)
                    m.next = "IDLE"
                with m.Elif(grouped):
                    m.next = "MULT"
                with m.Else():
                    m.d.sync += blk_left.eq(blk_chunks)
            with m.Elif(blk_left == 1):  # the block's last chunk: the next block's multipliers
                m.d.sync += j_blk.eq(0)
                m.next = "MULT"

        with m.FSM() as fsm:
            with m.State("IDLE"):
                with m.If(self.start):
                    m.d.sync += [pairs_left.eq(self.pairs), chunks_left.eq(self.chunks), j_blk.eq(0), held.eq(0),
                                 blk_left.eq(blk_chunks)]
                    with m.If(self.pairs == 0):
                        m.d.sync += self.done.eq(1)
                    with m.Elif(grouped):
                        m.next = "MULT"
                    with m.Else():
                        m.next = "CHUNKS"
            with m.State("MULT"):
                m.d.comb += self.beats.ready.eq(~self.hold)
                with m.If(self.beats.valid & ~self.hold):
                    m.d.sync += [mult.eq(self.beats.payload),
                                 blk_left.eq(Mux(chunks_left < blk_chunks, chunks_left, blk_chunks))]
                    m.next = "CHUNKS"
            with m.State("CHUNKS"):
                # the window, then the beat on offer: a chunk starts W - held bytes in, at a place feed_holds lists
                ext = Cat(window, self.beats.payload)
                piece = Signal(8 * widest)
                with m.Switch(key):
                    for f in formats(S, self.kinds):
                        with m.Case(case(f)):
                            st = strides[f[0:3]]
                            with m.Switch(held):
                                for h in feed_holds(st, B):
                                    with m.Case(h):
                                        m.d.comb += piece.eq(ext[8 * (W - h):8 * (W - h + chunk_bytes(f[3], S))])
                whole = held >= stride
                m.d.comb += self.beats.ready.eq(~whole & ~self.hold)
                with m.If(~self.hold & (whole | self.beats.valid)):
                    with m.If(whole):
                        m.d.sync += held.eq(held - stride)
                        emit(m, piece)
                    with m.Else():
                        m.d.sync += window.eq(ext[8 * B:])
                        with m.If(held + B >= stride):
                            m.d.sync += held.eq(held + B - stride)
                            emit(m, piece)
                        with m.Else():
                            m.d.sync += held.eq(held + B)
        m.d.comb += self.busy.eq(~fsm.ongoing("IDLE"))
        return m
