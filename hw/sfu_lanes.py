"""The SFU's lanes as a pipeline: a chunk's operands taken in one cycle, its results at their op's stage
(latency_rules.sfu_result_latency cycles later), a register a step so that no path between them is deeper than
225 MHz allows (hw/timing.py).

Every lane computes every op's arithmetic of flightc.numerics on its element; the op and pass pick what goes on.
The row's statistics (a norm's sum of squares or elements, softmax's maximum and sum of powers) are summed across
the lanes by pipelined trees into their accumulators, which the SFU reads once they are in (the pass boundary,
:func:`flightc.hw.latency_rules.sfu_stat_drain`). Products wider than a DSP48E2 are built from its limbs
(hw/dsp48e2.py wide_product).
"""
from __future__ import annotations

from dataclasses import dataclass

from amaranth.hdl import Array, Cat, Const, Module, Mux, Signal, Value, signed

from flightc import numerics as nm
from flightc.hw.arith import delayed, pipelined_tree, round_shift, saturate
from flightc.hw.dsp48e2 import registered_product, wide_product
from flightc.hw.lut6 import mux4
from flightc.isa.table import MiscOp
from flightc.hw.latency_rules import (SFU_DEQ_ADD_LATENCY, SFU_EXP, SFU_NORM_LATENCY, SFU_NORM_PRODUCT,
                                      SFU_MAX_LEVELS, SFU_OUT_LATENCY, SFU_REQUANT_LATENCY, SFU_ROPE_LATENCY,
                                      SFU_SOFTMAX_LATENCY, SFU_SUM_LEVELS,
                                      WIDE_PRODUCT_LATENCY, sfu_result_latency, sfu_stat_drain, tree_stages)

MAX_NONE = -(1 << 32)  # softmax's running maximum before any element (below every INT32)
# the stages an op's results may leave the lanes at, in the order LaneControl.result_stage indexes them
RESULT_STAGES = (SFU_REQUANT_LATENCY, SFU_DEQ_ADD_LATENCY, SFU_NORM_LATENCY, SFU_SOFTMAX_LATENCY)


def result_stage(op: MiscOp) -> int:
    """``op``'s index into RESULT_STAGES (the lanes' multiplexers select a tap with it)."""
    return RESULT_STAGES.index(sfu_result_latency(op))


@dataclass
class LaneControl:
    """What the lanes read besides their operands: the op (constant through an instruction), the pass (read as a
    chunk is taken, and by a statistics pass's sums, which end before the next pass begins), the instruction's
    multiplier and shift, and the row's statistics from the passes before."""

    is_ln: Value  # LayerNorm
    is_norm: Value
    is_sm: Value  # softmax
    is_emul: Value
    deq: Value  # DEQ: INT32 results
    deq_add: Value
    ln_first: Value  # LayerNorm's first pass: the elements are summed, not squared
    stat_pass: Value  # a norm's statistics pass, or softmax's two
    out_pass: Value  # a norm's output pass
    sm_pass: Value  # softmax's pass (0: maximum, 1: sum of powers, 2: probabilities)
    imm: Value
    shift: Value
    mean: Value  # LayerNorm's rounded mean (signed)
    recip: Value  # softmax's floor(2^40 / sum)
    den_e: Value  # a norm's divisor: its bit length - 1
    den_m: Value  # and the reciprocal of its normalized form
    result_stage: Value  # the op's result stage, an index into RESULT_STAGES (registered with the op)


@dataclass
class LaneResults:
    y: list[Value]  # each lane's result at its op's stage (INT8 or INT32 in 32 bits)
    valid: Value  # a chunk's results are at that stage
    col: Value  # its first column
    count: Value  # and its elements
    busy: Value  # a chunk's results or statistics are still on their way


def lane_pipeline(m: Module, x: list, b: list, cc: list, visible: list, lane_on: list, take: Value, col: Value,
                  count: Value, ctl: LaneControl, acc: Signal, total: Signal, mx: Signal) -> LaneResults:
    """The lanes' stages from operand registers ``x``, ``b``, ``cc`` (taken when ``take``, with the chunk's first
    column ``col``, its ``count`` and each lane's ``visible`` and ``lane_on``); the statistics pass's sums go into
    ``acc`` (a norm's), ``total`` (softmax's powers) and ``mx`` (softmax's maximum). What a chunk is for is taken
    with it (a flag that moves down the stages beside it), since its pass may end, and the next begin, while its
    results or sums are still on their way: ``busy`` holds until they are in (sfu_result_latency, sfu_stat_drain
    cycles after the take)."""
    G = len(x)

    def flags(name: str, first: Value, stages: int) -> list[Value]:
        chain = [first] + [Signal(name=f"{name}{s}") for s in range(1, stages + 1)]
        for s in range(1, stages + 1):
            m.d.sync += chain[s].eq(chain[s - 1])
        return chain

    tree, max_tree = tree_stages(G, SFU_SUM_LEVELS), tree_stages(G, SFU_MAX_LEVELS)
    valid = flags("valid", take & ~ctl.stat_pass, SFU_OUT_LATENCY)  # a chunk whose results are written
    summed = flags("summed", take & ctl.stat_pass & ~ctl.is_sm, sfu_stat_drain(MiscOp.RMSNORM, 0, G))  # a norm's
    maxed = flags("maxed", take & ctl.is_sm & (ctl.sm_pass == 0), sfu_stat_drain(MiscOp.SOFTMAX, 0, G))
    powered = flags("powered", take & ctl.is_sm & (ctl.sm_pass == 1), sfu_stat_drain(MiscOp.SOFTMAX, 1, G))
    G_ = nm.NORM_GUARD_BITS
    lim = Signal(nm.NORM_DEN_BITS + 10)  # |x * gain| is clamped to 2^(e + 9) (numerics.norm_apply)
    right, left = Signal.like(ctl.den_e), Signal.like(ctl.den_e)  # the product's scaling to G_ fraction bits
    m.d.sync += [lim.eq(Const(1, len(lim)) << (ctl.den_e + 9)), right.eq(Mux(ctl.den_e > G_, ctl.den_e - G_, 0)),
                 left.eq(Mux(ctl.den_e < G_, G_ - ctl.den_e, 0))]
    rounding = Signal(72)  # the requantization's rounding half (none for softmax's floored exponent)
    m.d.sync += rounding.eq(Mux(ctl.is_sm, 0, (Const(1, 72) << ctl.shift) >> 1))
    lut = Array(Const(int(v), 18) for v in nm.exp2_lut())
    sums, powers, maxima, y = [], [], [], []
    for k in range(G):
        def reg(value, name, k=k):
            r = Signal(Value.cast(value).shape(), name=f"{name}{k}")
            m.d.sync += r.eq(value)
            return r

        # stage 1: the centred element (LayerNorm: x - mean), the products' second operand (a gain or itself),
        # the difference from softmax's maximum
        centred = Mux(ctl.is_ln, x[k] - ctl.mean, x[k])
        d1 = reg(centred, "d")
        f1 = reg(Mux(ctl.out_pass, b[k], centred), "f")
        a1 = reg(Mux(ctl.is_sm, x[k] - mx, x[k]), "a")
        vis1, on1 = reg(visible[k], "vis"), reg(lane_on[k], "on")
        emul = registered_product(m, f"emul{k}", x[k][:8].as_signed(), b[k][:8].as_signed())  # stage 2
        # the norms: d * d (statistics) or d * gain (stage 4), clamped and scaled to G_ fraction bits of the
        # divisor's leading one (7), times the row's reciprocal (10), rounded with LayerNorm's bias (11), saturated
        p = wide_product(m, f"p{k}", d1, f1)
        pc = reg(Mux(p > lim, lim, Mux(p < -lim, -lim, p)), "pc")
        qr = reg(pc >> right, "qr")
        q = reg((qr << left)[:G_ + 11].as_signed(), "q")
        qm = wide_product(m, f"qm{k}", q, Cat(ctl.den_m, Const(0, 1)).as_signed())
        bias = delayed(m, cc[k], SFU_NORM_PRODUCT + 3 + WIDE_PRODUCT_LATENCY, f"bias{k}")  # stage 10
        norm = reg(round_shift(qm, G_ + nm.NORM_RECIP_BITS, len(qm) + 1) + Mux(ctl.is_ln, bias, 0), "norm")
        norm8 = reg(saturate(norm, 8), "norm8")  # stage 12
        # the requantization: a * imm (EMUL's a: the INT8 product), its rounding half (6), shifted (8)
        a2 = Mux(ctl.is_emul, emul[:len(a1)].as_signed(), delayed(m, a1, 1, f"a{k}"))
        t = wide_product(m, f"t{k}", a2, ctl.imm)
        t6 = reg(t + rounding, "t6")
        t7 = reg(t6 >> ctl.shift[:3], "t7")
        t8 = reg(t7 >> Cat(Const(0, 3), ctl.shift[3:]), "t8")
        sat8, sat32 = reg(saturate(t8, 8), "sat8"), reg(saturate(t8, 32), "sat32")  # stage 9
        residual = delayed(m, b[k], 9, f"res{k}")
        deq_add = reg(saturate(reg(residual + sat32, "da"), 32), "deq_add")  # stage 11
        # softmax: the exponent clamped at -32 (9), its LUT entry and integer part (10), 2^u (11); the probability
        # e * recip rounded off 32 bits (15)
        low = -(32 << nm.EXP_FRAC_BITS)
        u = reg(Mux(t8 < low, low, t8)[:nm.EXP_FRAC_BITS + 7].as_signed(), "u")
        entry = reg(lut[u[nm.EXP_FRAC_BITS - nm.EXP_LUT_INDEX_BITS:nm.EXP_FRAC_BITS]], "entry")
        ishift = reg((-(u >> nm.EXP_FRAC_BITS))[:7], "ishift")
        e = reg(entry >> ishift, "e")
        vis11 = delayed(m, vis1, SFU_EXP - 1, f"vis{k}_")
        prob = wide_product(m, f"prob{k}", Cat(e, Const(0, 1)).as_signed(), Cat(ctl.recip, Const(0, 1)).as_signed())
        vis14 = delayed(m, vis11, WIDE_PRODUCT_LATENCY, f"vis{k}_p")
        rounded = (prob + (1 << 31)) >> 32
        soft = reg(Mux(vis14, Mux(rounded > 255, 255, rounded), 0), "soft")  # stage 15
        # the op's results, each at its own stage
        out = Signal(32, name=f"y{k}")
        m.d.comb += out.eq(mux4(m, f"y_at{k}", ctl.result_stage, (Mux(ctl.deq, sat32, sat8), deq_add, norm8, soft)))
        y.append(out)
        # the statistics' terms: LayerNorm's elements, then the squares (stage 4), softmax's candidates for the
        # maximum (1) and its powers (11)
        x1 = delayed(m, x[k], 1, f"x{k}_")
        x4 = delayed(m, x1, SFU_NORM_PRODUCT - 1, f"x{k}_4")
        on4 = delayed(m, on1, SFU_NORM_PRODUCT - 1, f"on{k}_")
        sums.append(Mux(on4, Mux(ctl.ln_first, x4, p), 0))
        maxima.append(Mux(vis1, x1, MAX_NONE))
        powers.append(Mux(vis11, e, 0))
    if (SFU_REQUANT_LATENCY, SFU_DEQ_ADD_LATENCY, SFU_NORM_LATENCY, SFU_SOFTMAX_LATENCY, SFU_ROPE_LATENCY) != \
            (9, 11, 12, 15, 4):
        raise AssertionError("the SFU lanes' stages and hw/latency_rules.py disagree")
    chunk_sum = pipelined_tree(m, "sum", sums, levels_per_stage=SFU_SUM_LEVELS)
    chunk_max = pipelined_tree(m, "max", maxima, lambda p, q: Mux(q > p, q, p), levels_per_stage=SFU_MAX_LEVELS)
    chunk_total = pipelined_tree(m, "total", powers, levels_per_stage=SFU_SUM_LEVELS)
    with m.If(summed[SFU_NORM_PRODUCT + tree]):
        m.d.sync += acc.eq(acc + chunk_sum)
    with m.If(maxed[1 + max_tree]):
        m.d.sync += mx.eq(Mux(chunk_max > mx, chunk_max, mx))
    with m.If(powered[SFU_EXP + tree]):
        m.d.sync += total.eq(total + chunk_total)
    # the chunk's place beside its results: at the requantization's stage, then each later op's
    cols, counts = {}, {}
    at, c_at, n_at = 0, col, count
    for stage in sorted({SFU_REQUANT_LATENCY, SFU_DEQ_ADD_LATENCY, SFU_NORM_LATENCY, SFU_SOFTMAX_LATENCY}):
        c_at, n_at = delayed(m, c_at, stage - at, f"col{stage}_"), delayed(m, n_at, stage - at, f"count{stage}_")
        cols[stage], counts[stage], at = c_at, n_at, stage

    def at_stage(name: str, taps):
        """The op's tap of ``taps`` (by stage): a 4:1 multiplexer on a registered selector."""
        return mux4(m, name, ctl.result_stage, tuple(Value.cast(taps[stage]) for stage in RESULT_STAGES))

    # busy until the results are queued, or the statistics summed (their flags run a stage past the sums: the
    # accumulator's register): a countdown from each take, as long as its kind's flags (a pass's chunks are of one
    # kind, and the next pass starts once the lanes are idle), where an OR of the flags takes a LUT chain
    written = Array(Const(n, range(SFU_OUT_LATENCY + 1)) for n in RESULT_STAGES)[ctl.result_stage]
    for_kind = Mux(~ctl.stat_pass, written, Mux(~ctl.is_sm, len(summed) - 1,
                                                 Mux(ctl.sm_pass == 0, len(maxed) - 1, len(powered) - 1)))
    draining = Signal(range(max(SFU_OUT_LATENCY, len(summed), len(maxed), len(powered)) + 1), name="draining")
    m.d.sync += draining.eq(Mux(take, for_kind, Mux(draining != 0, draining - 1, 0)))
    busy = Signal()  # draining != 0, a register (a take always starts a nonzero count)
    m.d.sync += busy.eq(take | (draining > 1))
    return LaneResults(y=y, valid=at_stage("valid_at", valid), col=at_stage("col_at", cols),
                       count=at_stage("count_at", counts), busy=busy)


def rope_pipeline(m: Module, x: list, b: list, c: list, s: list) -> tuple[list, list]:
    """RoPE's pairs from INT8 elements ``x`` and partners ``b``, INT16 ``c`` (cos) and ``s`` (sin): the first and
    second results (numerics.rope), :data:`SFU_ROPE_LATENCY` cycles after the operands."""
    first, second = [], []
    half = 1 << (nm.ROPE_FRAC_BITS - 1)
    for k in range(len(x)):
        x8, b8 = x[k][:8].as_signed(), b[k][:8].as_signed()
        c16, s16 = c[k][:16].as_signed(), s[k][:16].as_signed()
        xc, bs = registered_product(m, f"rope_xc{k}", x8, c16), registered_product(m, f"rope_bs{k}", b8, s16)
        bc, xs = registered_product(m, f"rope_bc{k}", b8, c16), registered_product(m, f"rope_xs{k}", x8, s16)
        lo, hi = Signal(signed(26), name=f"rope_lo{k}"), Signal(signed(26), name=f"rope_hi{k}")
        m.d.sync += [lo.eq(xc - bs + half), hi.eq(bc + xs + half)]
        y1, y2 = Signal(8, name=f"rope_y{k}"), Signal(8, name=f"rope_y2{k}")
        m.d.sync += [y1.eq(saturate(lo >> nm.ROPE_FRAC_BITS, 8)), y2.eq(saturate(hi >> nm.ROPE_FRAC_BITS, 8))]
        first.append(y1)
        second.append(y2)
    return first, second
