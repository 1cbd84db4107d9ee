"""The configurable sparse DSP chain: ``chain_length`` multiply lanes fed through a sparse MUX.

Each lane holds one stored (non-zero) weight with its in-block position. The sparse MUX picks the
lane's activation among the M = 16 candidates of its block (4 for 2:4); dense formats skip the
MUX. With ``macs_per_dsp = 2`` one DSP48E2 multiplies a weight by two activations packed into its
27-bit A port (tokens t and t + 1): A = a1 * 2^18 + a0, so P = a1*w*2^18 + a0*w, and the two
products are recovered exactly because |a0 * w| < 2^17. A reduction tree sums the lanes.

The datapath is pipelined for 225 MHz: the lanes' operands are taken at ``enable`` (the sparse MUX,
the stored q and its group multiplier), then each weight dequantized (two steps) and the tokens packed, the
product in a DSP48E2 (M and P registers), each quarter's fields summed, the chain's sums:
``sums`` take the step's dot products ``CHAIN_LATENCY`` cycles after ``enable``
(hw/latency_rules.py, which the MPE and the performance model read) and hold them. Each stage is
written inside a branch on its step's arrival, so a simulator evaluates it only on the cycles the
chain works (Verilator runs the whole core faster).
"""
from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Mux, Signal, signed
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from flightc.config import HardwareConfig
from flightc.hw.arith import delayed, tree
from flightc.hw.dsp48e2 import PACK_SHIFT, registered_product
from flightc.hw.latency_rules import CHAIN_LATENCY, PRODUCT_LATENCY
from flightc.isa.table import SPARSITY_NM, WEIGHT_BITS

QUARTER = 4  # lanes whose fields one register sums before the chain's sum (two adder levels)


def low_byte_partials(q, gs) -> tuple:
    """The low byte of ``q * gs`` (what unpack_rows keeps) as two halves to add: the byte's partial products of
    ``gs``'s low and high nibbles, each summed in a tree that yosys leaves in LUTs (a whole multiplier it would map
    to a DSP48E2 without registers, 7.5 levels; the eight partial products in one tree, 7.5 too)."""
    terms = [Mux(gs[i], Cat(Const(0, i), q[:8 - i]), 0) for i in range(8)]
    return tree(terms[:4])[:8], tree(terms[4:])[:8]


class SparseDspChain(wiring.Component):
    """One chain: operands in; per token, the sum over valid lanes of activation x dequantized weight."""

    def __init__(self, cfg: HardwareConfig, span_max: int):
        L = cfg.chain_length
        self.cfg, self.span_max, self.L, self.T = cfg, span_max, L, cfg.macs_per_dsp
        super().__init__({
            "enable": In(1),  # take the operands this cycle; sums hold the result CHAIN_LATENCY cycles on
            "vals": In(8 * L),  # packed values of this step's L stored weights
            "idx": In(4 * L),  # their in-block positions (sparse formats)
            "gsb": In(8 * max(1, span_max // 16)),  # group multipliers covering the window
            "window": In(8 * span_max * self.T),  # activations, token-major
            "a_unsigned": In(1),
            "bits_code": In(2),  # WeightBits
            "sparse": In(1),
            "m4": In(1),  # the 2:4 pattern (2-bit positions, blocks of 4)
            "log2n": In(3),  # log2 of the stored weights per block
            "group_log2": In(4),
            "valid_lanes": In(range(L + 1)),
            **{f"sum{t}": Out(signed(cfg.acc_bits)) for t in range(self.T)},
        })

    def lane_operand(self, lane: int, group_shift):
        """(stored q, its group multiplier) of one lane: what the dequantizer multiplies.
        ``group_shift``: how far right a lane's number shifts to its group's (:meth:`group_shift`)."""
        q = Const(0, signed(8))
        for code, b in WEIGHT_BITS.items():
            q = Mux(self.bits_code == int(code), self.vals[b * lane:b * (lane + 1)].as_signed(), q)
        gsel = (Const(lane, 8) >> group_shift)[:max(1, (len(self.gsb) // 8 - 1).bit_length())]
        gs = Mux(self.group_log2 == 0, 1, self.gsb.word_select(gsel, 8))
        return q, gs

    def group_shift(self, m: Module) -> Signal:
        """The lane's group is its column's (block x M + position) >> group_log2; a group (GROUP_MIN columns or more,
        an ISA rule) holds whole blocks and the lane's block is lane >> log2 N, so it is lane >> (group_log2 +
        log2 N - log2 M) for sparse rows, lane >> group_log2 for dense: one shift shared by the lanes, not waiting
        for the position (meaningless without groups, where the multiplier is 1)."""
        shift = Signal(range(32))
        m.d.comb += shift.eq(Mux(self.sparse, self.group_log2 + self.log2n - Mux(self.m4, 2, 4), self.group_log2))
        return shift

    def activation(self, t: int, lane: int):
        """The lane's activation of token ``t``: the window byte at its column. A lane's stored weight lies in
        block ``lane // n`` of each N:M pattern, so the sparse MUX chooses among those few blocks and then the
        position inside one: a block-sized multiplexer per pattern, not one across the whole window."""
        span = self.span_max
        token = self.window[8 * span * t:8 * span * (t + 1)]

        def block_byte(first: int, size: int, sel):
            if first >= span:  # past the window: only lanes beyond the step's valid ones land here
                return Const(0, 8)
            return token[8 * first:8 * min(span, first + size)].word_select(sel[:(size - 1).bit_length()], 8)

        # each pattern's candidate, and the lane's own column (dense, or no pattern chosen), selected one-hot in a
        # balanced AND-OR rather than a chain of multiplexers (one level a pattern)
        picks, chosen = [], []
        for n_keep, size in sorted(set(SPARSITY_NM.values())):
            if n_keep == size:
                continue
            log2n = n_keep.bit_length() - 1
            chosen.append(self.sparse & (self.m4 == (size == 4)) & (self.log2n == log2n))
            # the position straight from the lane's index bits of this pattern's width (no multiplexer before)
            at = self.idx[2 * lane:2 * lane + 2] if size == 4 else self.idx[4 * lane:4 * lane + 4]
            picks.append(Mux(chosen[-1], block_byte((lane >> log2n) * size, size, at), 0))
        own = token[8 * lane:8 * lane + 8] if lane < span else Const(0, 8)
        picks.append(Mux(~Cat(*chosen).any(), own, 0))
        raw = tree(picks, lambda x, y: x | y)
        return Mux(self.a_unsigned, Cat(raw, Const(0, 1)), Cat(raw, raw[7])).as_signed()

    def elaborate(self, platform):
        m = Module()
        L, T = self.L, self.T
        if CHAIN_LATENCY != 1 + 2 + PRODUCT_LATENCY + 1 + 1:  # the stages below
            raise AssertionError("the chain's registers and hw/latency_rules.py disagree")
        # ---- taken at enable (held otherwise, so the sums hold too): each lane's stored q, its group multiplier,
        # its activations out of the sparse MUX, whether it is one of the step's valid lanes
        lanes = []
        group_shift = self.group_shift(m)
        for lane in range(L):
            q, gs = self.lane_operand(lane, group_shift)
            r = {"q": Signal(signed(8), name=f"q{lane}"), "gs": Signal(8, name=f"gs{lane}"),
                 "on": Signal(name=f"on{lane}"), "acts": [Signal(signed(9), name=f"a{t}_{lane}") for t in range(T)]}
            with m.If(self.enable):
                m.d.sync += [r["q"].eq(q), r["gs"].eq(gs), r["on"].eq(Const(lane, 8) < self.valid_lanes)]
                m.d.sync += [a.eq(self.activation(t, lane)) for t, a in enumerate(r["acts"])]
            lanes.append(r)
        # each later stage works the cycle its step reaches it (a simulator evaluates it then only)
        go = [self.enable]
        for k in range(CHAIN_LATENCY - 1):
            go.append(delayed(m, go[-1], 1, f"go{k + 1}"))
        # ---- the dequantized weight (kept to 8 bits, as unpack_rows keeps it) in two steps, and the packed tokens
        prods, on = [], []
        for lane, r in enumerate(lanes):
            low, high = Signal(8, name=f"wlo{lane}"), Signal(8, name=f"whi{lane}")
            w = Signal(signed(8), name=f"w{lane}")
            packed, operand = Signal(signed(27), name=f"packed{lane}"), Signal(signed(27), name=f"operand{lane}")
            acts = r["acts"]
            with m.If(go[1]):
                m.d.sync += [Cat(low, high).eq(Cat(*low_byte_partials(r["q"], r["gs"]))),
                             packed.eq(((acts[1] << PACK_SHIFT) + acts[0])[:27].as_signed() if T == 2 else acts[0])]
            with m.If(go[2]):
                m.d.sync += [w.eq((low + high)[:8].as_signed()), operand.eq(packed)]
            # ---- the product, one DSP48E2 a lane (27 x 8 bits: two tokens packed)
            prods.append(registered_product(m, f"lane{lane}", operand, w))
            on.append(delayed(m, r["on"], 2 + PRODUCT_LATENCY, f"on{lane}"))
        # ---- each token's field of each product (the upper one read as its bits above the lower, plus one where
        # the lower is negative: counted per quarter of the chain instead of subtracted per lane), a quarter's sums
        quarters = [range(i, min(L, i + QUARTER)) for i in range(0, L, QUARTER)]
        part = [[Signal(signed(self.cfg.acc_bits), name=f"part{t}_{k}") for k in range(len(quarters))]
                for t in range(T)]
        at_products = 3 + PRODUCT_LATENCY  # cycles after enable's that the products are there
        with m.If(go[at_products]):
            for k, lanes_k in enumerate(quarters):
                if T == 2:
                    lo = [Mux(on[i], prods[i][:PACK_SHIFT].as_signed(), 0) for i in lanes_k]
                    hi = [Mux(on[i], prods[i][PACK_SHIFT:2 * PACK_SHIFT].as_signed(), 0) for i in lanes_k]
                    borrow = [on[i] & prods[i][PACK_SHIFT - 1] for i in lanes_k]
                    m.d.sync += [part[0][k].eq(tree(lo)), part[1][k].eq(tree(hi) + tree(borrow))]
                else:
                    m.d.sync += part[0][k].eq(tree([Mux(on[i], prods[i][:18].as_signed(), 0) for i in lanes_k]))
        # ---- the step's dot products
        with m.If(go[at_products + 1]):
            for t in range(T):
                m.d.sync += getattr(self, f"sum{t}").eq(tree(part[t]))
        return m
