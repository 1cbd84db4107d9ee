"""Sequential integer units of the SFU: a restoring divider and a bit-by-bit integer square root.

Both are exact (floor), so the SFU's norms and softmax match flightc.numerics bit for bit; the
divider settles ``step_bits`` quotient bits per cycle (config.sfu_div_step_bits), the square root
one result bit per cycle.
"""
from __future__ import annotations

import operator
from typing import Callable

from amaranth.hdl import Cat, Const, Elaboratable, Module, Mux, Signal, Value


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
    """quotient = floor(numerator / denominator) for unsigned operands of ``width`` bits, ``step_bits`` a cycle."""

    def __init__(self, width: int = 72, step_bits: int = 1):
        if width % step_bits:
            raise ValueError(f"divider width {width} is not a multiple of {step_bits} bits per cycle")
        self.width, self.step_bits = width, step_bits
        self.start = Signal()
        self.numerator = Signal(width)
        self.denominator = Signal(width)
        self.quotient = Signal(width)
        self.done = Signal()

    def elaborate(self, platform):
        m = Module()
        W = self.width
        rem = Signal(W + 1)
        num = Signal(W)
        den = Signal(W)
        count = Signal(range(W + 1))
        busy = Signal()
        m.d.sync += self.done.eq(0)
        with m.If(self.start):
            m.d.sync += [num.eq(self.numerator), den.eq(self.denominator), rem.eq(0), count.eq(W), busy.eq(1),
                         self.quotient.eq(0)]
        with m.Elif(busy):
            r, q = rem, self.quotient
            for i in range(self.step_bits):  # restoring steps, chained within the cycle
                trial = Signal(W + 1, name=f"trial{i}")
                m.d.comb += trial.eq((r << 1) | num[W - 1 - i])
                fits = trial >= den
                r, q = Mux(fits, trial - den, trial)[:W + 1], Cat(fits, q)[:W]
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
