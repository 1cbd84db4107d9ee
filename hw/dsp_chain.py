"""The configurable sparse DSP chain: ``chain_length`` multiply lanes fed through a sparse MUX.

Each lane holds one stored (non-zero) weight with its in-block position. The sparse MUX picks the
lane's activation among the M = 16 candidates of its block (4 for 2:4); dense formats skip the
MUX. With ``macs_per_dsp = 2`` one DSP48E2 multiplies a weight by two activations packed into its
27-bit A port (tokens t and t + 1): A = a1 * 2^18 + a0, so P = a1*w*2^18 + a0*w, and the two
products are recovered exactly because |a0 * w| < 2^17. A reduction tree sums the lanes.

The datapath is registered: ``sums`` take the step's dot products one cycle after ``enable``. It
is written as expressions inside that clocked branch, so a simulator evaluates it only on the
cycles the chain works (Verilator runs the whole core faster), and yosys can absorb the output
register into the DSP48E2.
"""
from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Mux, signed
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from flightc.config import HardwareConfig
from flightc.hw.arith import tree
from flightc.isa.table import SPARSITY_NM, WEIGHT_BITS

PACK_SHIFT = 18  # lane of the second activation in the DSP48E2 A port


class SparseDspChain(wiring.Component):
    """One chain: operands in; per token, the sum over valid lanes of activation x dequantized weight."""

    def __init__(self, cfg: HardwareConfig, span_max: int):
        L = cfg.chain_length
        self.cfg, self.span_max, self.L, self.T = cfg, span_max, L, cfg.macs_per_dsp
        super().__init__({
            "enable": In(1),  # compute this cycle; sums hold the result from the next cycle on
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

    def lane_operand(self, lane: int):
        """(INT8 weight operand, in-block position, column in the window) of one lane: the dequantizer's work."""
        q = Const(0, signed(8))
        for code, b in WEIGHT_BITS.items():
            q = Mux(self.bits_code == int(code), self.vals[b * lane:b * (lane + 1)].as_signed(), q)
        pos = Mux(self.m4, self.idx[2 * lane:2 * lane + 2], self.idx[4 * lane:4 * lane + 4])
        block = (Const(lane, 8) >> self.log2n)[:8]
        col = Mux(~self.sparse, lane, Mux(self.m4, Cat(pos[:2], block), Cat(pos, block)))
        gsel = (col >> self.group_log2)[:max(1, (len(self.gsb) // 8 - 1).bit_length())]
        gs = Mux(self.group_log2 == 0, 1, self.gsb.word_select(gsel, 8))
        w = (q * gs)[:8].as_signed()  # kept to 8 bits, as unpack_rows keeps it
        return w, pos

    def activation(self, t: int, lane: int, pos):
        """The lane's activation of token ``t``: the window byte at its column. A lane's stored weight lies in
        block ``lane // n`` of each N:M pattern, so the sparse MUX chooses among those few blocks and then the
        position inside one: a block-sized multiplexer per pattern, not one across the whole window."""
        span = self.span_max
        token = self.window[8 * span * t:8 * span * (t + 1)]

        def block_byte(first: int, size: int, sel):
            if first >= span:  # past the window: only lanes beyond the step's valid ones land here
                return Const(0, 8)
            return token[8 * first:8 * min(span, first + size)].word_select(sel[:(size - 1).bit_length()], 8)

        raw = token[8 * lane:8 * lane + 8] if lane < span else Const(0, 8)  # dense: the lane's own column
        for n_keep, size in sorted(set(SPARSITY_NM.values())):
            if n_keep == size:
                continue
            log2n = n_keep.bit_length() - 1
            chosen = self.sparse & (self.m4 == (size == 4)) & (self.log2n == log2n)
            raw = Mux(chosen, block_byte((lane >> log2n) * size, size, pos), raw)
        return Mux(self.a_unsigned, Cat(raw, Const(0, 1)), Cat(raw, raw[7])).as_signed()

    def elaborate(self, platform):
        m = Module()
        L, T = self.L, self.T
        terms = [[] for _ in range(T)]
        for lane in range(L):
            w, pos = self.lane_operand(lane)
            acts = [self.activation(t, lane, pos) for t in range(T)]
            on = Const(lane, 8) < self.valid_lanes
            if T == 2:
                packed = ((acts[1] << PACK_SHIFT) + acts[0])[:27].as_signed()
                p = (packed * w)[:36].as_signed()  # one DSP48E2: 27 x 8 bits
                lo = p[:PACK_SHIFT].as_signed()
                hi = ((p - lo) >> PACK_SHIFT)[:18].as_signed()
                parts = (lo, hi)
            else:
                parts = ((acts[0] * w)[:18].as_signed(),)
            for t in range(T):
                terms[t].append(Mux(on, parts[t], 0))
        with m.If(self.enable):
            for t in range(T):
                m.d.sync += getattr(self, f"sum{t}").eq(tree(terms[t]))
        return m

