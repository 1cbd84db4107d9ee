"""The LD lanes' building blocks for 225 MHz: the descriptor queue whose head is a register (hw/load.py) and the
4:1 multiplexers instantiated as LUT6s (hw/lut6.py), in Amaranth's simulator and, for the LUT6's truth table, against
its Verilator model's addressing."""
from __future__ import annotations

import random

import pytest
from amaranth.hdl import Module, Signal
from amaranth.sim import Simulator

from flightc.hw.buffers import rotate_bytes
from flightc.hw.load import DescriptorQueue
from flightc.hw.lut6 import mux4_init, select


def test_the_lut6_truth_table_selects_its_data_input_by_i4_i5():
    init = mux4_init()
    for address in range(64):
        data, sel = address & 0xF, address >> 4
        assert init >> address & 1 == data >> sel & 1


@pytest.mark.parametrize("depth", [1, 2, 4, 8])
def test_a_descriptor_is_at_the_head_two_cycles_after_it_is_written_and_the_queue_holds_depth(depth):
    q = DescriptorQueue(8, depth)
    sim = Simulator(q)
    sim.add_clock(1e-6)

    async def bench(ctx):
        ctx.set(q.w_data, 7)
        ctx.set(q.w_en, 1)
        await ctx.tick()
        ctx.set(q.w_en, 0)
        assert not ctx.get(q.r_rdy)
        await ctx.tick()
        assert ctx.get(q.r_rdy) and ctx.get(q.r_data) == 7
        held = 1
        while ctx.get(q.w_rdy):
            ctx.set(q.w_data, 7 + held)
            ctx.set(q.w_en, 1)
            await ctx.tick()
            held += 1
        ctx.set(q.w_en, 0)
        await ctx.tick()
        await ctx.tick()
        assert held == depth and not ctx.get(q.w_rdy)
        ctx.set(q.r_en, 1)  # the head taken: room the next cycle
        await ctx.tick()
        ctx.set(q.r_en, 0)
        assert ctx.get(q.w_rdy)
        out = []
        for _ in range(depth + 3):
            ctx.set(q.r_en, ctx.get(q.r_rdy))
            if ctx.get(q.r_rdy):
                out.append(ctx.get(q.r_data))
            await ctx.tick()
        assert out == list(range(8, 7 + depth))

    sim.add_testbench(bench)
    sim.run()


@pytest.mark.parametrize("word", [8, 16, 64])
def test_rotations_and_selections_through_4_to_1_stages(word):
    rng = random.Random(word)
    m = Module()
    value, amount = Signal(8 * word), Signal(range(word))
    rotated = rotate_bytes(m, value, amount, word)
    words = [Signal(8, name=f"w{k}") for k in range(5)]
    index = Signal(3)
    chosen = select(m, "pick", index, words)
    sim = Simulator(m)

    async def bench(ctx):
        for _ in range(40):
            v, a = rng.getrandbits(8 * word), rng.randrange(word)
            ctx.set(value, v)
            ctx.set(amount, a)
            b = v.to_bytes(word, "little")
            assert ctx.get(rotated) == int.from_bytes(bytes(b[(i - a) % word] for i in range(word)), "little")
            vals, k = [rng.randrange(256) for _ in words], rng.randrange(len(words))
            for w, x in zip(words, vals):
                ctx.set(w, x)
            ctx.set(index, k)
            assert ctx.get(chosen) == vals[k]

    sim.add_testbench(bench)
    sim.run()


def test_shifts_and_mixed_widths_through_4_to_1_stages():
    """The SFU's 4:1 stages: a bit shift left (its norm divisor normalized), a byte shift right (its read engines'
    operands from their words) and a multiplexer whose narrower inputs extend as their shapes say."""
    from amaranth.hdl import signed

    from flightc.hw.lut6 import mux4, shift

    rng = random.Random(7)
    m = Module()
    value, bits = Signal(40), Signal(6)
    shifted = shift(m, "left", value, bits, 40)
    raw, lane = Signal(8 * 72), Signal(6)
    out = shift(m, "right", raw, lane, 8 * 20, step=8, left=False)
    sel, narrow, wide = Signal(2), Signal(signed(8)), Signal(32)
    picked = mux4(m, "mixed", sel, (narrow, wide, narrow, wide))
    sim = Simulator(m)

    async def bench(ctx):
        for _ in range(60):
            v, a = rng.getrandbits(40), rng.randrange(40)
            ctx.set(value, v)
            ctx.set(bits, a)
            assert ctx.get(shifted) == (v << a) % (1 << 40)
            r, n = rng.getrandbits(8 * 72), rng.randrange(64)
            ctx.set(raw, r)
            ctx.set(lane, n)
            assert ctx.get(out) == (r >> (8 * n)) % (1 << 160)
            x, y, s = rng.randrange(-128, 128), rng.getrandbits(32), rng.randrange(4)
            ctx.set(narrow, x)
            ctx.set(wide, y)
            ctx.set(sel, s)
            assert ctx.get(picked) == (y if s & 1 else x % (1 << 32))

    sim.add_testbench(bench)
    sim.run()


@pytest.mark.parametrize("width", [1, 6, 7, 15, 16])
def test_count_ones_counts_the_set_bits(width):
    """The MPE's counts of a block's set bits before each column (hw/mpe.py positions_of_masks): LUT6 counts of six
    bits at a time, summed, against Python's count of the bits, every value of a small width or random ones."""
    from flightc.hw.lut6 import count_ones

    rng = random.Random(width)
    m = Module()
    bits = Signal(width)
    total = Signal(width.bit_length())
    m.d.comb += total.eq(count_ones(m, "ones", [bits[i] for i in range(width)]))
    values = range(1 << width) if width <= 7 else [0, (1 << width) - 1] + [rng.getrandbits(width) for _ in range(200)]
    sim = Simulator(m)

    async def bench(ctx):
        for v in values:
            ctx.set(bits, v)
            assert ctx.get(total) == bin(v).count("1"), v

    sim.add_testbench(bench)
    sim.run()


@pytest.mark.parametrize("width, bits", [(1, 4), (3, 7), (3, 16), (2, 13)])
def test_prefix_counts_count_the_set_bits_before_each_one(width, bits):
    """A lane group's counts of a bitmask block's set bits before each column (hw/lane_group.py): LUT6 counts of
    each six's prefixes on a base of the whole sixes before, modulo 2**width, against Python's count for every
    column, every value of a small block or random ones; wider than three bits is refused by name."""
    from flightc.hw.lut6 import prefix_counts

    rng = random.Random(bits)
    m = Module()
    mask = Signal(bits)
    counts = prefix_counts(m, "before", [mask[i] for i in range(bits)], width)
    assert len(counts) == bits
    outs = [Signal(width, name=f"out{i}") for i in range(bits)]
    m.d.comb += [o.eq(c) for o, c in zip(outs, counts)]
    values = range(1 << bits) if bits <= 7 else [0, (1 << bits) - 1] + [rng.getrandbits(bits) for _ in range(200)]
    sim = Simulator(m)

    async def bench(ctx):
        for v in values:
            ctx.set(mask, v)
            for i, o in enumerate(outs):
                assert ctx.get(o) == bin(v % (1 << i)).count("1") % (1 << width), (v, i)

    sim.add_testbench(bench)
    sim.run()
    with pytest.raises(ValueError, match="prefix counts of 4 bits"):
        prefix_counts(Module(), "wide", [mask[0]], 4)
