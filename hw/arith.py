"""Sequential integer units of the SFU: a restoring divider and a bit-by-bit integer square root.

Both are exact (floor), one result bit per cycle, so the SFU's norms and softmax match
flightc.numerics bit for bit.
"""
from __future__ import annotations

from amaranth.hdl import Const, Elaboratable, Module, Signal


class Divider(Elaboratable):
    """quotient = floor(numerator / denominator) for unsigned operands of ``width`` bits."""

    def __init__(self, width: int = 72):
        self.width = width
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
            trial = Signal(W + 1)
            m.d.comb += trial.eq((rem << 1) | num[W - 1])
            with m.If(trial >= den):
                m.d.sync += [rem.eq(trial - den), self.quotient.eq((self.quotient << 1) | 1)]
            with m.Else():
                m.d.sync += [rem.eq(trial), self.quotient.eq(self.quotient << 1)]
            m.d.sync += [num.eq(num << 1), count.eq(count - 1)]
            with m.If(count == 1):
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
