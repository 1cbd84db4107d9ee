"""A weight-stationary array of DSP48E2 chains for prompt steps: each weight waits in a DSP's B register while a run
of token pairs passes it, so a weight streamed once serves a whole step of a prompt.

A lane group (hw/lane_group.py) multiplies every weight once, against one token: decode's matrix-vector product at
the stream's line rate. A prompt of T tokens multiplies each weight T times, so the weights can stay and the
activations move (the prefill half of FlightLLM's design: one weight, two tokens, WP486). Chain ``c`` holds
``length`` weights of one row, a k block of that many columns, one per DSP48E2; each cycle a token pair's
activations of those columns go in, token ``2p`` in the multiplier's low field and token ``2p + 1``
:data:`PACK_SHIFT` bits up (the pre-adder adds them), times the column's weight, and the products add up down the
PCIN cascade a DSP a cycle: column ``i``'s operands are skewed ``i`` cycles, once for all the chains, so no path
runs through more than one DSP. The last DSP's sum splits into the pair's two dot products (the low field
sign-corrected, exact while it stays within :data:`PACK_SHIFT` bits: :func:`chain_length_max`), each times the
chain's group multiplier (a DSP48E2 a field) added to the pair's partial sum, kept in the chain's accumulator
memory (a row of two fields per pair).

The next k block's weights load behind the held ones (each DSP's first B register, a chain a cycle) while pairs
pass, and take over in the wave of a pair (``swap`` with that pair's activations: each DSP's second B register
then, the multiplier as the pair reaches it), so the chain never waits for its weights: a k block costs a cycle per
token pair, and a chain of ``length`` DSPs does ``2 x length`` multiply-accumulates a cycle. What surrounds it
(the weights' stream, the activations' buffer, the requantization of the sums) is the prompt path's to wire;
this is its arithmetic, measured alone (tests/test_prefill_array.py; bench/synth_unit.py for its LUTs per DSP).
"""
from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Mux, Signal, Value, signed
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from flightc.hw.arith import delayed
from flightc.hw.dsp48e2 import D_BITS, OPMODE_M, OPMODE_M_PCIN, P_BITS, PACK_SHIFT, dsp, registered_product
from flightc.hw.hierarchy import generating_verilog
from flightc.hw.latency_rules import PRODUCT_LATENCY

ACT_BITS = 9  # an activation byte as a signed operand: INT8, or unsigned 0..255 (a_unsigned)
DSP_STAGES = 4  # a DSP's operands to its P register: A and D, the pre-adder's AD, M, P


def chain_length_max(weight_bits: int) -> int:
    """Most DSPs whose products one chain sums exactly: the low field's sum (``length`` products of a stored
    weight, at most 2^(bits-1) in size, by an activation, at most 255) must stay within :data:`PACK_SHIFT` signed
    bits."""
    return ((1 << (PACK_SHIFT - 1)) - 1) // ((1 << (weight_bits - 1)) * 255)


def check_chain(length: int, weight_bits: int) -> None:
    """Refuse a chain too long for ``weight_bits``-bit weights to sum exactly (:func:`chain_length_max`)."""
    if length > chain_length_max(weight_bits):
        raise ValueError(f"a chain of {length} DSPs: at most {chain_length_max(weight_bits)} sum "
                         f"{weight_bits}-bit weights exactly in a {PACK_SHIFT}-bit field")


def sums_at(length: int) -> int:
    """Cycles from a pair's activations in to its chain sums (the last column's P register: the skew, then
    :data:`DSP_STAGES`)."""
    return length - 1 + DSP_STAGES


def load_gap(length: int) -> int:
    """Cycles after a swap before the next weights may load: the last column's B register and the multiplier take
    the loaded ones by then."""
    return sums_at(length) + 1


def pass_cycles(chains: int, length: int, pairs: int, blocks: int) -> int:
    """Cycles from the first pair in to the last of ``blocks`` k blocks' passes over ``pairs`` token pairs, each
    block's weights loaded a chain a cycle as soon as the array allows (:func:`load_gap` after the swap before) and
    each pass started once its weights are in and the pass before is: a pass costs its pairs, or the loads' gap and
    the chains where the pairs are fewer (the timing a performance model of the array starts from)."""
    return (blocks - 1) * max(pairs, load_gap(length) + chains) + pairs


def latency(length: int) -> int:
    """Cycles from a pair's activations in to ``rd_pair`` reading its partial sums: its chain sums, their split,
    their products (the partial sum read beside them), the write."""
    return sums_at(length) + 1 + PRODUCT_LATENCY + 1


class WeightArray(wiring.Component):
    """``chains`` chains of ``length`` DSP48E2s, each with an accumulator of ``pairs`` token pairs.

    Each cycle with ``valid``: ``acts`` (``length`` columns of two bytes: token ``2 * pair`` then ``2 * pair + 1``;
    signed INT8, or unsigned with ``a_unsigned``) pass every chain; ``first``: the pair's partial sums start from
    zero (the first k block of a pass) instead of adding to what the accumulator holds; ``swap``: the weights
    loaded last take over from this pair on. ``load``: chain ``load_chain`` takes ``weights`` (``length`` signed
    bytes, the stored q of its columns) and ``mult`` behind the held ones, at least :func:`load_gap` cycles
    after the last swap. ``rd_pair``: every chain's two sums of that pair come out on ``rd_data`` a cycle later
    (while no pair is in flight). Two passes over the same pairs have a swap between them, so the second reads a
    pair's partial sum at least :func:`load_gap` cycles after the first, long after the first wrote it."""

    def __init__(self, chains: int, length: int, pairs: int, weight_bits: int = 4, acc_bits: int = 32,
                 mult_bits: int = 8):
        check_chain(length, weight_bits)
        self.chains, self.length, self.pairs = chains, length, pairs
        self.weight_bits, self.acc_bits, self.mult_bits = weight_bits, acc_bits, mult_bits
        super().__init__({
            "valid": In(1), "acts": In(16 * length), "a_unsigned": In(1), "pair": In(range(pairs)),
            "first": In(1), "swap": In(1),
            "load": In(1), "load_chain": In(range(chains)), "weights": In(8 * length), "mult": In(mult_bits),
            "rd_pair": In(range(pairs)), "rd_data": Out(2 * acc_bits * chains),
        })

    def elaborate(self, platform):
        m = Module()
        L = self.length
        byte = [self.acts[8 * j:8 * (j + 1)] for j in range(2 * L)]
        act = [Mux(self.a_unsigned, Cat(b, Const(0, 1)), Cat(b, b[7])).as_signed() for b in byte]
        # the skew, shared: column i's pair i cycles on (DSP i's A and D registers take it then)
        lo = [delayed(m, act[2 * i], i, f"lo{i}") for i in range(L)]
        hi = [delayed(m, act[2 * i + 1], i, f"hi{i}") for i in range(L)]
        # column i's second B register takes the loaded weight as the swapping pair's operands reach its pre-adder
        swap_at = [delayed(m, self.swap, i + 1, f"swap{i}") for i in range(L)]
        out_at = sums_at(L)
        split_band = delayed(m, Cat(self.valid, self.first, self.pair), out_at + 1, "split_band")
        valid_s, pair_s = split_band[0], split_band[2:]
        # the multipliers take the loaded ones as the swapping pair's sums reach them; the writes, the products
        write_band = delayed(m, split_band, PRODUCT_LATENCY, "write_band")
        mult_swap = delayed(m, self.swap, out_at, "mult_swap")
        rd_data = []
        for c in range(self.chains):
            mine = self.load & (self.load_chain == c)
            sums = self._chain(m, f"c{c}", lo, hi, self.weights, mine, swap_at)
            # the two fields: the low one sign-corrected, the high one what is left
            # (the high field's sum is as small as the low one's: products of the same operands)
            lo_f, hi_f = Signal(signed(PACK_SHIFT), name=f"c{c}_lo"), Signal(signed(PACK_SHIFT), name=f"c{c}_hi")
            m.d.sync += [lo_f.eq(sums[:PACK_SHIFT].as_signed()),
                         hi_f.eq((sums - sums[:PACK_SHIFT].as_signed()) >> PACK_SHIFT)]
            shadow, held = Signal(self.mult_bits, name=f"c{c}_mult_next"), Signal(self.mult_bits, name=f"c{c}_mult")
            with m.If(mine):
                m.d.sync += shadow.eq(self.mult)
            with m.If(mult_swap):
                m.d.sync += held.eq(shadow)
            products = [registered_product(m, f"c{c}_p{f}", field, Cat(held, Const(0, 1)).as_signed())
                        for f, field in enumerate((lo_f, hi_f))]
            acc = Memory(shape=2 * self.acc_bits, depth=self.pairs, init=[])
            m.submodules[f"c{c}_acc"] = acc
            rd = acc.read_port()
            wr = acc.write_port()
            m.d.comb += rd.addr.eq(Mux(valid_s, pair_s, self.rd_pair))
            old = delayed(m, rd.data, PRODUCT_LATENCY - 1, f"c{c}_old")
            new = [Signal(signed(self.acc_bits), name=f"c{c}_new{f}") for f in range(2)]
            for f in range(2):
                prev = old[f * self.acc_bits:(f + 1) * self.acc_bits].as_signed()
                m.d.comb += new[f].eq(products[f][:self.acc_bits].as_signed() + Mux(write_band[1], 0, prev))
            m.d.comb += [wr.en.eq(write_band[0]), wr.addr.eq(write_band[2:]), wr.data.eq(Cat(*new))]
            rd_data.append(rd.data)
        m.d.comb += self.rd_data.eq(Cat(*rd_data))
        return m

    def _chain(self, m: Module, name: str, lo: list[Value], hi: list[Value], weights: Value, load: Value,
               swap_at: list[Value]) -> Value:
        """One chain's P cascade: the sum of its columns' (hi << PACK_SHIFT) + lo times their held weights,
        ``length - 1 + DSP_STAGES`` cycles after column 0's pair."""
        L = self.length
        w = [weights[8 * i:8 * (i + 1)].as_signed() for i in range(L)]
        if not generating_verilog():
            # the DSPs' registers as the primitive keeps them (hw/dsp48e2_model.v)
            p_prev = None
            for i in range(L):
                b1, b2 = Signal(signed(8), name=f"{name}_b1_{i}"), Signal(signed(8), name=f"{name}_b2_{i}")
                with m.If(load):
                    m.d.sync += b1.eq(w[i])
                with m.If(swap_at[i]):
                    m.d.sync += b2.eq(b1)
                a_q, d_q = Signal(signed(ACT_BITS), name=f"{name}_a{i}"), Signal(signed(ACT_BITS), name=f"{name}_d{i}")
                ad, mq = Signal(signed(D_BITS), name=f"{name}_ad{i}"), Signal(signed(P_BITS), name=f"{name}_m{i}")
                p = Signal(signed(P_BITS), name=f"{name}_p{i}")
                m.d.sync += [a_q.eq(lo[i]), d_q.eq(hi[i]), ad.eq((d_q << PACK_SHIFT) + a_q), mq.eq(ad * b2),
                             p.eq(mq + (p_prev if p_prev is not None else 0))]
                p_prev = p
            return p_prev
        pcout = None
        for i in range(L):
            a, d = Signal(30, name=f"{name}_a{i}"), Signal(D_BITS, name=f"{name}_d{i}")
            b = Signal(18, name=f"{name}_b{i}")
            m.d.comb += [a.eq(lo[i]), d.eq(hi[i].as_signed() << PACK_SHIFT), b.eq(w[i])]
            p, nxt = Signal(P_BITS, name=f"{name}_p{i}"), Signal(P_BITS, name=f"{name}_pcout{i}")
            ports = dict(i_A=a, i_B=b, i_D=d, i_OPMODE=Const(OPMODE_M if pcout is None else OPMODE_M_PCIN, 9),
                         o_P=p, o_PCOUT=nxt)
            if pcout is not None:
                ports["i_PCIN"] = pcout
            dsp(m, f"{name}_dsp{i}", ports, dict(AREG=1, DREG=1, ADREG=1, BREG=2, MREG=1, PREG=1),
                enables=dict(CEB1=load, CEB2=swap_at[i]))
            pcout = nxt
        return p.as_signed()
