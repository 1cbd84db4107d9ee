"""A streamed MV's tile plan: what its readers, feeds and result order need of the instruction, worked out from its
fields in registered steps.

The plan of a tile (MV.w_stream; ``flightc.compress.stream``) — its row pairs a lane group, the beats a pair
takes, the rounds of units on each channel, whether a master's share fits its reader's FIFO, which masters it
covers — takes products and variable shifts of the fields: in one cycle, the MPE's deepest paths. Here each step
is a register (within hw/timing.py's 7 levels at 225 MHz), :data:`TILE_PLAN_STAGES` of them, the products in
DSP48E2s with their M and P registers; the plan is ``valid`` once the fields have been held that many cycles since
``restart``.
"""
from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Mux, Signal, Value
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from flightc.compress.stream import chunk_stride
from flightc.config import HardwareConfig, SparseEncoding
from flightc.hw.address import master_of, own_block
from flightc.hw.dsp48e2 import registered_product
from flightc.hw.lane_feed import GROUP_LOG2_MAX, GROUP_LOG2_MIN
from flightc.hw.lane_group import config_kinds, format_case, formats
from flightc.hw.latency_rules import PRODUCT_LATENCY, TILE_PLAN_STAGES
from flightc.isa.table import HBM_ADDR_BITS, Sparsity, WeightBits

ROUNDS_BITS = 24


def _u(value: Value) -> Value:
    """An unsigned value as a DSP48E2's signed operand (a zero above it)."""
    return Cat(value, Const(0, 1))


class _Steps:
    """Registers tagged with the step they belong to: a value computed from step k's registers is step k + 1's."""

    def __init__(self, m: Module):
        self.m, self.step, self.carried = m, {}, {}

    def reg(self, name: str, value, width: int, step: int) -> Signal:
        s = Signal(width, name=name)
        self.m.d.sync += s.eq(value)
        self.step[name] = step
        return s

    def mark(self, signal: Signal, step: int) -> Signal:
        self.step[signal.name] = step
        return signal

    def at(self, signal: Signal, step: int) -> Signal:
        """``signal`` carried through registers to ``step``."""
        k, base = self.step[signal.name], signal.name
        if k > step:
            raise AssertionError(f"{base} is step {k}'s, past {step}")
        while k < step:
            k += 1
            if (base, k) not in self.carried:
                self.carried[base, k] = self.reg(f"{base}_at{k}", signal, len(signal), k)
            signal = self.carried[base, k]
        return signal


class TilePlan(wiring.Component):
    """The plan of the streamed MV whose fields are on the inputs (held from ``restart`` on): ``valid``
    :data:`TILE_PLAN_STAGES` cycles after ``restart``'s last cycle, with ``chunks`` a pair, ``pairs`` a lane group,
    the masters it ``span``s (and their log2) from ``g0``, the masters it ``covers`` (a bit each), the ``rounds`` of
    units on each of their channels (``any_rounds``: not none), whether a master's share ``fits`` its reader's FIFO,
    and the tile's ``hbm_addr``; ``is_streamed`` and ``is_early`` carry the ``streamed`` (the instruction is a
    streamed MV) and ``early`` (MV.w_early) inputs along, so that what reads the head's tile ahead decides from
    registers."""

    def __init__(self, cfg: HardwareConfig):
        self.cfg = cfg
        G = cfg.axi_masters
        super().__init__({
            "restart": In(1), "streamed": In(1), "early": In(1),
            "bits_code": In(WeightBits), "sparsity": In(Sparsity), "sparse_enc": In(SparseEncoding), "group_log2": In(4),
            "k": In(20), "n": In(16),
            "w_channel": In(6), "w_stripe": In(6), "w_hbm_addr": In(HBM_ADDR_BITS),
            "first_channel": In(range(max(2, cfg.mem_channels))),
            "valid": Out(1), "is_streamed": Out(1), "is_early": Out(1),
            "chunks": Out(range(cfg.lane_k_max // cfg.lane_slots + 1)), "pairs": Out(16),
            "span": Out(range(G + 1)), "span_log2": Out(range(max(2, G.bit_length()))), "g0": Out(range(max(2, G))),
            "covers": Out(G), "rounds": Out(ROUNDS_BITS), "any_rounds": Out(1), "fits": Out(1),
            "hbm_addr": Out(HBM_ADDR_BITS),
        })

    def elaborate(self, platform):
        m = Module()
        cfg = self.cfg
        G, S, B, cpm = cfg.axi_masters, cfg.lane_slots, cfg.axi_data_bytes, cfg.channels_per_master
        lb = B.bit_length() - 1
        kinds = config_kinds(cfg)
        st = _Steps(m)
        # ---- step 1: the fields' direct consequences
        # (dense rows may end mid-chunk: zero activations past K)
        chunks = st.reg("chunks1", (self.k + S - 1) >> (S.bit_length() - 1), len(self.chunks), 1)
        widest = max(chunk_stride(f[3], S) for f in formats(S, kinds))
        stride_of = Signal(range(widest + 1))
        key, case = format_case(self.sparsity, self.bits_code, self.sparse_enc, formats(S, kinds))
        with m.Switch(key):
            for f in formats(S, kinds):
                with m.Case(case(f)):
                    m.d.comb += stride_of.eq(chunk_stride(f[3], S))
        stride = st.reg("stride1", stride_of, len(stride_of), 1)
        # a grouped format's block: the chunks whose multipliers one beat holds (a power of two: its log2)
        block_log2, grouped_of = Signal(range(32)), Signal()
        with m.Switch(self.group_log2):
            for g in range(GROUP_LOG2_MIN, GROUP_LOG2_MAX + 1):
                with m.Case(g):
                    m.d.comb += [block_log2.eq(max(1, (B // 2 << g) // S).bit_length() - 1), grouped_of.eq(1)]
        block_log2 = st.reg("block_log2", block_log2, len(block_log2), 1)
        grouped = st.reg("grouped1", grouped_of, 1, 1)
        span_of = Signal.like(self.span)
        m.d.comb += span_of.eq(self.w_stripe // cpm)
        span_log2_of = Signal.like(self.span_log2)
        for b in range(G.bit_length()):
            with m.If(span_of == (1 << b)):
                m.d.comb += span_log2_of.eq(b)
        span = st.reg("span1", span_of, len(span_of), 1)
        span_log2 = st.reg("span_log2_1", span_log2_of, len(span_log2_of), 1)
        n = st.reg("n1", self.n, len(self.n), 1)
        g0 = st.reg("g0_1", master_of(self.w_channel, cfg), len(self.g0), 1)
        # each master's first channel, among the core's own (which start at first_channel: a constant the kernel
        # drives); a tile on other channels covers none of them
        is_own, local = own_block(cfg, self.w_channel, self.first_channel)
        own = [g * cpm for g in range(G)]
        covers = st.reg("covers1", Cat(*[is_own & (local <= ch) & (ch < local + self.w_stripe) for ch in own]), G, 1)
        hbm_addr = st.reg("hbm1", self.w_hbm_addr, len(self.w_hbm_addr), 1)
        streamed, early = st.reg("streamed1", self.streamed, 1, 1), st.reg("early1", self.early, 1, 1)
        # ---- step 2: a group's rows padded to whole pairs of its span; a block's whole chunks, the rest, its bytes
        padded = st.reg("padded2", n + (span << 1) - 1, len(n) + len(span) + 2, 2)
        full = st.reg("full2", chunks >> block_log2, len(chunks), 2)
        part = st.reg("part2", chunks & ((Const(1, len(chunks) + 1) << block_log2) - 1), len(chunks), 2)
        block_bytes = st.reg("block_bytes2", stride << block_log2, len(stride) + 16, 2)
        # ---- step 3: a group's pairs, a block's beats (its multipliers' beat and its chunks')
        pairs = st.reg("pairs3", padded >> (st.at(span_log2, 2) + 1), len(self.pairs), 3)
        per_block = st.reg("per_block3", 1 + ((block_bytes + B - 1) >> lb), 17, 3)
        # the rest's bytes, a dense pair's bytes (from step 2) and the whole blocks' beats (from step 3): products
        part_bytes = st.mark(registered_product(m, "part_bytes", _u(part), _u(st.at(stride, 2))), 2 + PRODUCT_LATENCY)
        dense_bytes = st.mark(registered_product(m, "dense_bytes", _u(st.at(chunks, 2)), _u(st.at(stride, 2))),
                              2 + PRODUCT_LATENCY)
        s = 3 + PRODUCT_LATENCY
        blocks = st.mark(registered_product(m, "blocks", _u(st.at(full, 3)), _u(per_block)), s)
        # ---- a pair's beats: the rest's and a dense pair's rounded to beats, then the one the format takes
        rest = st.reg("rest_beats", Mux(st.at(part, s) != 0, 1 + ((st.at(part_bytes, s)[:32] + B - 1) >> lb), 0),
                      24, s + 1)
        dense = st.reg("dense_beats", (st.at(dense_bytes, s)[:40] + B - 1) >> lb, 32, s + 1)
        pair_beats = st.reg("pair_beats", Mux(st.at(grouped, s + 1), st.at(blocks, s + 1)[:32] + rest, dense), 32,
                            s + 2)
        # ---- a group's beats, then the rounds of units on each of its channels
        group_beats = st.mark(registered_product(m, "group_beats", _u(pair_beats[:26]),
                                                                _u(st.at(pairs, s + 2))),
                              s + 2 + PRODUCT_LATENCY)
        step = cfg.stripe_bytes // B * cpm  # a round's beats on a master (a power of two)
        last = s + 3 + PRODUCT_LATENCY
        rounds = st.reg("rounds_of", (group_beats[:40] + step - 1) >> (step.bit_length() - 1), ROUNDS_BITS, last)
        if last + 1 != TILE_PLAN_STAGES:
            raise AssertionError("the tile plan's steps and hw/latency_rules.py disagree")
        m.d.sync += [self.rounds.eq(rounds), self.any_rounds.eq(rounds != 0),
                     self.fits.eq(rounds <= cfg.lane_fifo_beats // step)]
        out = TILE_PLAN_STAGES
        m.d.comb += [self.chunks.eq(st.at(chunks, out)), self.pairs.eq(st.at(pairs, out)),
                     self.span.eq(st.at(span, out)), self.span_log2.eq(st.at(span_log2, out)),
                     self.g0.eq(st.at(g0, out)), self.covers.eq(st.at(covers, out)),
                     self.hbm_addr.eq(st.at(hbm_addr, out)), self.is_streamed.eq(st.at(streamed, out)),
                     self.is_early.eq(st.at(early, out))]
        # ---- valid: the fields held TILE_PLAN_STAGES cycles since the last restart
        age = Signal(range(TILE_PLAN_STAGES + 1))
        with m.If(self.restart):
            m.d.sync += age.eq(0)
        with m.Elif(age != TILE_PLAN_STAGES):
            m.d.sync += age.eq(age + 1)
        m.d.comb += self.valid.eq(age == TILE_PLAN_STAGES)
        return m
