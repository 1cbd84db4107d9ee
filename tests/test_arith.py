"""The SFU's divider (hw/arith.py) in Amaranth's simulator: floor division of unsigned operands, bit for bit, in
width / step_bits + 1 cycles (what flightc.sim.perf.timing.div_cycles charges), one to four restoring steps a cycle,
for the extremes (a zero numerator, a denominator of one, the largest operands, a denominator above the numerator)
and random operands."""
from __future__ import annotations

import random

import pytest
from amaranth.sim import Simulator

from flightc.hw.arith import Divider


def run_divider(width: int, step_bits: int, pairs: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Each (numerator, denominator) through one divider: its quotient and the cycles from start to done."""
    dut = Divider(width, step_bits)
    out = []

    async def bench(ctx):
        for n, d in pairs:
            ctx.set(dut.numerator, n)
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


@pytest.mark.parametrize("width,step_bits", [(12, 1), (12, 2), (12, 3), (12, 4), (72, 4)])
def test_divider_floor_quotient(width, step_bits):
    rng = random.Random(width * 10 + step_bits)
    top = (1 << width) - 1
    pairs = [(0, 1), (top, 1), (top, top), (top, 3), (5, 7), (1 << (width - 1), top), (top, 1 << (width - 1))]
    pairs += [(rng.getrandbits(width), max(1, rng.getrandbits(rng.randint(1, width)))) for _ in range(40)]
    for (n, d), (q, cycles) in zip(pairs, run_divider(width, step_bits, pairs)):
        assert q == n // d, (n, d)
        assert cycles == width // step_bits + 1  # the timing flightc.sim.perf.timing charges a division


def test_times_constant_and_place_bytes_match_their_arithmetic():
    """The output stage's adders for n * 12 (hw/arith.times_constant) and its operand queues' byte placement two
    shift bits a stage (hw/stream_out.place_bytes) against Python's * and << for random operands and every shift."""
    from amaranth.hdl import Module, Signal

    from flightc.hw.arith import times_constant
    from flightc.hw.stream_out import place_bytes

    m = Module()
    n, amount, value = Signal(16), Signal(8), Signal(8 * 5)
    product, placed = Signal(20), Signal(8 * 140)
    m.d.comb += [product.eq(times_constant(n, 12)), placed.eq(place_bytes(m, value, amount, 140, "p"))]
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
