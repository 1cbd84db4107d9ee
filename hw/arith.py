"""Sequential integer units of the SFU: a restoring divider and a bit-by-bit integer square root.

Both are exact (floor), so the SFU's norms and softmax match flightc.numerics bit for bit; the
divider settles ``step_bits`` quotient bits per cycle (config.sfu_div_step_bits), the square root
one result bit per cycle.
"""
from __future__ import annotations

import operator
from typing import Callable

from amaranth.hdl import Cat, Const, Elaboratable, Module, Mux, Signal, Value, signed


def round_shift(x, shift, width: int):
    """x / 2^shift rounded half up (flightc.numerics.round_shift), in ``width`` bits."""
    half = (Const(1, width + 1) << shift) >> 1
    return (x + half) >> shift


def saturate(x, bits: int):
    """x clamped to a signed ``bits``-bit range."""
    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    return Mux(x > hi, hi, Mux(x < lo, lo, x))


def tree(terms: list, combine: Callable = operator.add):
    """``terms`` combined pairwise in a balanced tree (log2 levels): the chains' adder trees, the SFU's sums and
    maxima across its lanes."""
    while len(terms) > 1:
        terms = [combine(terms[i], terms[i + 1]) if i + 1 < len(terms) else terms[i] for i in range(0, len(terms), 2)]
    return terms[0]


def times_constant(value, k: int):
    """``value * k`` as the sum of its shifts by ``k``'s set bits: adders, where a multiplier yosys would map to an
    unregistered DSP48E2 (7.5 levels, hw/timing.py)."""
    terms = [Value.cast(value) << b for b in range(k.bit_length()) if k >> b & 1]
    return tree(terms) if terms else Const(0)


def delayed(m: Module, value: Value, cycles: int, name: str) -> Value:
    """``value`` through ``cycles`` registers that take it every cycle (a pipeline's side band, or what a DSP48E2's
    registers do in Amaranth's simulator)."""
    for k in range(cycles):
        reg = Signal.like(value, name=f"{name}_r{k}")
        m.d.sync += reg.eq(value)
        value = reg
    return value


class Divider(Elaboratable):
    """quotient = floor(numerator / denominator) for unsigned operands of ``width`` bits, ``step_bits`` a cycle.

    A cycle's quotient bits come two at a time from radix-4 steps (the remainder's next two bits compared with d,
    2d and 3d at once: about one subtraction and a 4:1 multiplexer deep, where two chained restoring steps are
    two subtractions and two multiplexers), and one from a restoring step for an odd ``step_bits``. A division of a
    numerator below 2^b (``bits`` = b, a multiple of ``step_bits``; ``numerator`` holds it shifted to its top
    ``bits`` bits) takes b / step_bits cycles: the leading zero bits are not walked."""

    def __init__(self, width: int = 72, step_bits: int = 1):
        if width % step_bits:
            raise ValueError(f"divider width {width} is not a multiple of {step_bits} bits per cycle")
        self.width, self.step_bits = width, step_bits
        self.start = Signal()
        self.numerator = Signal(width)
        self.denominator = Signal(width)
        self.bits = Signal(range(width + 1), init=width)
        self.quotient = Signal(width)
        self.done = Signal()

    def elaborate(self, platform):
        m = Module()
        W = self.width
        rem = Signal(W)  # below the denominator
        num = Signal(W)
        den, den2, den3 = Signal(W), Signal(W + 1), Signal(W + 2)
        count = Signal(range(W + 1))
        busy = Signal()
        m.d.sync += self.done.eq(0)
        with m.If(self.start):
            m.d.sync += [num.eq(self.numerator), den.eq(self.denominator), den2.eq(self.denominator << 1),
                         den3.eq(self.denominator + (self.denominator << 1)), rem.eq(0), count.eq(self.bits),
                         busy.eq(1), self.quotient.eq(0)]
        with m.Elif(busy):
            r, q, at = rem, self.quotient, W
            if self.step_bits % 2:  # a restoring step
                trial = Signal(W + 1, name="trial")
                m.d.comb += trial.eq(Cat(num[at - 1], r))
                fits = trial >= den
                r, q, at = Mux(fits, trial - den, trial)[:W], Cat(fits, q)[:W], at - 1
            for i in range(self.step_bits // 2):  # radix-4 steps, chained within the cycle
                trial = Signal(W + 2, name=f"trial4_{i}")
                m.d.comb += trial.eq(Cat(num[at - 2:at], r))
                less = [Signal(signed(W + 4), name=f"less{i}_{k}") for k in (1, 2, 3)]  # trial - k d
                m.d.comb += [less[0].eq(trial - den), less[1].eq(trial - den2), less[2].eq(trial - den3)]
                ge1, ge2, ge3 = ~less[0][-1], ~less[1][-1], ~less[2][-1]
                digit = Mux(ge3, 3, Mux(ge2, 2, Mux(ge1, 1, 0)))
                r = Mux(ge3, less[2], Mux(ge2, less[1], Mux(ge1, less[0], trial)))[:W]
                q, at = Cat(digit[:2], q)[:W], at - 2
            m.d.sync += [rem.eq(r), self.quotient.eq(q), num.eq(num << self.step_bits),
                         count.eq(count - self.step_bits)]
            with m.If(count == self.step_bits):
                m.d.sync += [busy.eq(0), self.done.eq(1)]
        return m


class Isqrt(Elaboratable):
    """root = floor(sqrt(value)) for an unsigned ``width``-bit value (width even)."""

    def __init__(self, width: int = 64):
        self.width = width
        self.start = Signal()
        self.value = Signal(width)
        self.root = Signal(width)
        self.done = Signal()

    def elaborate(self, platform):
        m = Module()
        W = self.width
        v = Signal(W)
        res = Signal(W)
        bit = Signal(W)
        busy = Signal()
        m.d.sync += self.done.eq(0)
        with m.If(self.start):
            m.d.sync += [v.eq(self.value), res.eq(0), bit.eq(Const(1, W) << (W - 2)), busy.eq(1)]
        with m.Elif(busy):
            with m.If(bit == 0):
                m.d.sync += [busy.eq(0), self.done.eq(1), self.root.eq(res)]
            with m.Else():
                with m.If(v >= res + bit):
                    m.d.sync += [v.eq(v - (res + bit)), res.eq((res >> 1) + bit)]
                with m.Else():
                    m.d.sync += res.eq(res >> 1)
                m.d.sync += bit.eq(bit >> 2)
        return m


def pipelined_tree(m: Module, name: str, terms: list, combine: Callable = operator.add,
                   levels_per_stage: int = 2) -> Value:
    """``terms`` combined in a balanced tree as :func:`tree` does, a register after every ``levels_per_stage``
    levels and after the last: the result ``latency_rules.tree_stages(len(terms))`` cycles after the terms (a
    lone term: at once)."""
    level = 0
    while len(terms) > 1:
        terms = [combine(terms[i], terms[i + 1]) if i + 1 < len(terms) else terms[i] for i in range(0, len(terms), 2)]
        level += 1
        if level % levels_per_stage == 0 or len(terms) == 1:
            regs = []
            for j, t in enumerate(terms):
                reg = Signal(Value.cast(t).shape(), name=f"{name}_l{level}_{j}")
                m.d.sync += reg.eq(t)
                regs.append(reg)
            terms = regs
    return terms[0]


def leading_zeros(m: Module, name: str, value: Value, registered_groups: bool = False) -> Signal:
    """The zeros above ``value``'s highest one (its width when it is 0), in a tree of four-way groups: a group's
    "any" and its highest one's place, then the highest group with any and its place (two LUT levels a tree level:
    40 bits in five, where a priority chain takes a level every few bits). With ``registered_groups`` the first
    groups are registers: the count a cycle after ``value``."""
    value = Value.cast(value)
    n = len(value)
    # each node: (any one in it, the place of its highest one within it, its width)
    nodes = [(value[i], Const(0, 1), 1) for i in range(n)]
    while len(nodes) > 1:
        grouped = []
        for i in range(0, len(nodes), 4):
            group = nodes[i:i + 4]
            width = sum(g[2] for g in group)
            bits = max(1, (width - 1).bit_length())
            place = Const(0, bits)
            any_ = Const(0, 1)
            base = 0
            for g_any, g_place, g_width in group:  # a later (higher) group with a one wins
                place = Mux(g_any, base + g_place, place)
                any_ = any_ | g_any
                base += g_width
            p = Signal(bits, name=f"{name}_p{len(nodes)}_{i // 4}")
            a = Signal(name=f"{name}_a{len(nodes)}_{i // 4}")
            domain = m.d.sync if registered_groups and len(nodes) == n else m.d.comb
            domain += [p.eq(place), a.eq(any_)]
            grouped.append((a, p, width))
        nodes = grouped
    zeros = Signal(range(n + 1), name=name)
    m.d.comb += zeros.eq(Mux(nodes[0][0], n - 1 - nodes[0][1], n))
    return zeros
