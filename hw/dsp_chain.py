"""The configurable sparse DSP chain: ``chain_length`` multiply lanes fed through a sparse MUX.

Each lane holds one stored (non-zero) weight with its in-block position. The sparse MUX picks the
lane's activation among the M = 16 candidates of its block (4 for 2:4); dense formats skip the
MUX. With ``macs_per_dsp = 2`` one DSP48E2 multiplies a weight by two activations packed into its
27-bit A port (tokens t and t + 1): A = a1 * 2^18 + a0, so P = a1*w*2^18 + a0*w, and the two
products are recovered exactly because |a0 * w| < 2^17. A reduction tree sums the lanes.
"""
from __future__ import annotations

from amaranth.hdl import Cat, Const, Elaboratable, Module, Mux, Signal, signed

from flightc.config import HardwareConfig

PACK_SHIFT = 18  # lane of the second activation in the DSP48E2 A port


class SparseDspChain(Elaboratable):
    """One chain: operands in, per-token dot-product contribution of this step out (combinational)."""

    def __init__(self, cfg: HardwareConfig, span_max: int, name: str = "chain"):
        L = cfg.chain_length
        self.cfg, self.span_max, self.L, self.T = cfg, span_max, L, cfg.macs_per_dsp
        self.vals = Signal(8 * L)  # packed values of this step's L stored weights
        self.idx = Signal(4 * L)  # their in-block positions (sparse formats)
        self.gsb = Signal(8 * max(1, span_max // 16))  # group multipliers covering the window
        self.window = Signal(8 * span_max * self.T)  # activations, token-major
        self.a_unsigned = Signal()
        self.bits_code = Signal(2)
        self.sparse = Signal()
        self.m4 = Signal()  # the 2:4 pattern (2-bit positions, blocks of 4)
        self.log2n = Signal(3)  # log2 of the stored weights per block
        self.group_log2 = Signal(4)
        self.valid_lanes = Signal(range(L + 1))
        self.sums = [Signal(signed(cfg.acc_bits), name=f"sum{t}") for t in range(self.T)]

    def elaborate(self, platform):
        m = Module()
        L, T = self.L, self.T
        prods = [[] for _ in range(T)]
        for lane in range(L):
            # dequantizer lane: the b-bit value (WeightBits 0..3 = 2, 3, 4, 8 bits) times its group multiplier,
            # kept to 8 bits exactly as flightc.compress.packing.unpack_rows defines the operand
            q = Signal(signed(8), name=f"q{lane}")
            col = Signal(16, name=f"col{lane}")
            pos = Signal(4, name=f"pos{lane}")
            gs = Signal(8, name=f"gs{lane}")
            w = Signal(signed(8), name=f"w{lane}")
            v = self.vals
            with m.Switch(self.bits_code):
                for code, qq in enumerate((v[2 * lane:2 * lane + 2], v[3 * lane:3 * lane + 3],
                                           v[4 * lane:4 * lane + 4], v[8 * lane:8 * lane + 8])):
                    with m.Case(code):
                        m.d.comb += q.eq(qq.as_signed())
            m.d.comb += pos.eq(Mux(self.m4, self.idx[2 * lane:2 * lane + 2], self.idx[4 * lane:4 * lane + 4]))
            block = Signal(8, name=f"block{lane}")
            m.d.comb += block.eq(lane >> self.log2n)
            with m.If(~self.sparse):
                m.d.comb += col.eq(lane)
            with m.Elif(self.m4):
                m.d.comb += col.eq(Cat(pos[:2], block))
            with m.Else():
                m.d.comb += col.eq(Cat(pos, block))
            gsel = (col >> self.group_log2)[:max(1, (len(self.gsb) // 8 - 1).bit_length())]
            m.d.comb += gs.eq(Mux(self.group_log2 == 0, 1, self.gsb.word_select(gsel, 8)))
            m.d.comb += w.eq((q * gs)[:8])
            acts = []
            for t in range(T):
                a = Signal(signed(9), name=f"a{t}_{lane}")
                raw = self.window.word_select(t * self.span_max + col[:max(1, (self.span_max - 1).bit_length())], 8)
                m.d.comb += a.eq(Mux(self.a_unsigned, Cat(raw, Const(0, 1)), Cat(raw, raw[7])).as_signed())
                acts.append(a)
            on = Signal(name=f"on{lane}")
            m.d.comb += on.eq(lane < self.valid_lanes)
            if T == 2:
                packed = Signal(signed(27), name=f"A{lane}")
                m.d.comb += packed.eq((acts[1] << PACK_SHIFT) + acts[0])
                p = Signal(signed(36), name=f"P{lane}")
                m.d.comb += p.eq(packed * w)  # one DSP48E2: 27 x 8 bits
                lo = Signal(signed(PACK_SHIFT), name=f"lo{lane}")
                hi = Signal(signed(18), name=f"hi{lane}")
                m.d.comb += [lo.eq(p[:PACK_SHIFT].as_signed()), hi.eq((p - lo) >> PACK_SHIFT)]
                parts = (lo, hi)
            else:
                p = Signal(signed(18), name=f"P{lane}")
                m.d.comb += p.eq(acts[0] * w)
                parts = (p,)
            for t in range(T):
                prods[t].append(Mux(on, parts[t], 0))
        for t in range(T):
            m.d.comb += self.sums[t].eq(_tree(prods[t]))
        return m


def _tree(terms: list):
    """Balanced adder tree (the chain's reduction nodes)."""
    while len(terms) > 1:
        terms = [terms[i] + terms[i + 1] if i + 1 < len(terms) else terms[i] for i in range(0, len(terms), 2)]
    return terms[0]
