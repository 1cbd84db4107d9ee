"""The SFU's divider (hw/arith.py) in Amaranth's simulator: floor division of unsigned operands, bit for bit, in
bits / step_bits + 1 cycles (what flightc.sim.perf.timing.div_cycles charges), one to four quotient bits a cycle
(radix-4 steps and a restoring one), for the extremes (a zero numerator, a denominator of one, the largest operands,
a denominator above the numerator) and random operands, over the whole width or a numerator's top bits alone."""
from __future__ import annotations

import random

import pytest
from amaranth.sim import Simulator

from flightc.hw.arith import Divider


def run_divider(width: int, step_bits: int, pairs: list[tuple[int, int]], bits: int | None = None
                ) -> list[tuple[int, int]]:
    """Each (numerator, denominator) through one divider (numerators below 2^bits, given shifted to its top bits):
    its quotient and the cycles from start to done."""
    dut = Divider(width, step_bits)
    out = []
    bits = width if bits is None else bits

    async def bench(ctx):
        for n, d in pairs:
            ctx.set(dut.numerator, n << (width - bits))
            ctx.set(dut.bits, bits)
            ctx.set(dut.denominator, d)
            ctx.set(dut.start, 1)
            await ctx.tick()
            ctx.set(dut.start, 0)
            cycles = 1
            while not ctx.get(dut.done):
                await ctx.tick()
                cycles += 1
            out.append((ctx.get(dut.quotient), cycles))

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    return out


@pytest.mark.parametrize("width,step_bits,bits", [(12, 1, 12), (12, 2, 12), (12, 3, 12), (12, 4, 12), (72, 2, 72),
                                                  (72, 4, 72), (72, 2, 42), (72, 3, 66), (72, 1, 41)])
def test_divider_floor_quotient(width, step_bits, bits):
    rng = random.Random(width * 10 + step_bits + bits)
    top, full = (1 << bits) - 1, (1 << width) - 1
    pairs = [(0, 1), (top, 1), (top, top), (top, 3), (5, 7), (1 << (bits - 1), full), (top, 1 << (bits - 1)),
             (top, full)]
    pairs += [(rng.getrandbits(bits), max(1, rng.getrandbits(rng.randint(1, width)))) for _ in range(40)]
    for (n, d), (q, cycles) in zip(pairs, run_divider(width, step_bits, pairs, bits)):
        assert q == n // d, (n, d)
        assert cycles == bits // step_bits + 1  # the timing flightc.sim.perf.timing charges a division


def test_times_constant_and_byte_placement_match_their_arithmetic():
    """The output stage's adders for n * 12 (hw/arith.times_constant) and its operand queues' byte placement two
    shift bits a stage (hw/lut6.shift by bytes) against Python's * and << for random operands and every shift."""
    from amaranth.hdl import Module, Signal

    from flightc.hw.arith import times_constant
    from flightc.hw.lut6 import shift

    m = Module()
    n, amount, value = Signal(16), Signal(8), Signal(8 * 5)
    product, placed = Signal(20), Signal(8 * 140)
    m.d.comb += [product.eq(times_constant(n, 12)), placed.eq(shift(m, "p", value, amount, 8 * 140, step=8))]
    rng = random.Random(3)
    cases = [(rng.randrange(1 << 16), a, rng.randrange(1 << 40)) for a in range(141)]
    got = []

    async def bench(ctx):
        for x, a, v in cases:
            ctx.set(n, x)
            ctx.set(amount, a)
            ctx.set(value, v)
            got.append((ctx.get(product), ctx.get(placed)))

    sim = Simulator(m)
    sim.add_testbench(bench)
    sim.run()
    want = [((x * 12) % (1 << 20), (v << (8 * a)) % (1 << (8 * 140))) for x, a, v in cases]
    assert got == want
    assert times_constant(Signal(4), 0).value == 0


def test_wide_products_and_pipelined_trees_are_exact_at_their_latency():
    """The SFU lanes' wide products (hw/dsp48e2.wide_product: DSP48E2-sized limbs summed) at the operand widths the
    lanes use, and a pipelined sum and maximum over 48 terms (hw/arith.pipelined_tree), against Python's arithmetic
    for the extremes and random operands, each exactly its latency_rules latency after its operands (the SFU's
    trees, a register a level, and a tree of two levels a register)."""
    from amaranth.hdl import Module, Mux, Signal, signed

    from flightc.hw.arith import pipelined_tree
    from flightc.hw.dsp48e2 import wide_product
    from flightc.hw.latency_rules import SFU_MAX_LEVELS, SFU_SUM_LEVELS, WIDE_PRODUCT_LATENCY, tree_stages

    widths = [(34, 34), (48, 32), (27, 34), (19, 42), (8, 8)]
    m = Module()
    ops = [(Signal(signed(wa), name=f"a{i}"), Signal(signed(wb), name=f"b{i}")) for i, (wa, wb) in enumerate(widths)]
    products = [wide_product(m, f"p{i}", a, b) for i, (a, b) in enumerate(ops)]
    terms = [Signal(signed(34), name=f"t{k}") for k in range(48)]
    total = pipelined_tree(m, "sum", list(terms), levels_per_stage=SFU_SUM_LEVELS)
    biggest = pipelined_tree(m, "max", list(terms), lambda p, q: Mux(q > p, q, p), levels_per_stage=SFU_MAX_LEVELS)
    pair_sum = pipelined_tree(m, "pairs", list(terms), levels_per_stage=2)
    rng = random.Random(7)

    def draw(bits):
        lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
        return rng.choice([lo, hi, 0, -1, 1, rng.randint(lo, hi), rng.randint(lo, hi)])

    cases = [([draw(wa) for wa, _ in widths], [draw(wb) for _, wb in widths], [draw(34) for _ in terms])
             for _ in range(60)]
    sum_stages, max_stages = tree_stages(len(terms), SFU_SUM_LEVELS), tree_stages(len(terms), SFU_MAX_LEVELS)
    pair_stages = tree_stages(len(terms), 2)
    latency = max(WIDE_PRODUCT_LATENCY, sum_stages, max_stages, pair_stages)
    assert (sum_stages, max_stages, pair_stages) == (6, 6, 3)
    seen = []

    async def bench(ctx):
        for step in range(len(cases) + latency):
            if step < len(cases):
                a_s, b_s, t_s = cases[step]
                for (a, b), va, vb in zip(ops, a_s, b_s):
                    ctx.set(a, va)
                    ctx.set(b, vb)
                for t, v in zip(terms, t_s):
                    ctx.set(t, v)
            await ctx.tick()
            seen.append(([ctx.get(p) for p in products], ctx.get(total), ctx.get(biggest), ctx.get(pair_sum)))

    sim = Simulator(m)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    for step, (a_s, b_s, t_s) in enumerate(cases):
        assert seen[step + WIDE_PRODUCT_LATENCY - 1][0] == [va * vb for va, vb in zip(a_s, b_s)], step
        assert seen[step + sum_stages - 1][1] == sum(t_s), step
        assert seen[step + max_stages - 1][2] == max(t_s), step
        assert seen[step + pair_stages - 1][3] == sum(t_s), step


def test_leading_zeros_by_four_way_groups():
    """The SFU's norm divisor's leading zeros (hw/arith.leading_zeros) at its 40 bits and at widths that leave a
    group short: every single bit, zero, all ones and random values."""
    from amaranth.hdl import Module, Signal

    from flightc.hw.arith import leading_zeros

    rng = random.Random(3)
    for width in (40, 7, 1):
        m = Module()
        value = Signal(width)
        zeros = leading_zeros(m, "lz", value)
        cases = [0, (1 << width) - 1, *(1 << i for i in range(width)), *(rng.getrandbits(width) for _ in range(30))]

        async def bench(ctx, value=value, zeros=zeros, width=width, cases=cases):
            for v in cases:
                ctx.set(value, v)
                assert ctx.get(zeros) == width - v.bit_length(), (width, v)

        sim = Simulator(m)
        sim.add_testbench(bench)
        sim.run()
