"""The requantization's rounding, pipelined: (raw + bias) x mult, rounded half up and shifted right by ``shift``
(flightc.numerics' requantization before its saturation), for the MPE's two output stages.

The product is four DSP48E2 products (the biased sum's low 26 bits and the rest, by the multiplier's low 17 bits
and the rest) with their M and P registers, summed with the rounding half in the register after them;
:data:`flightc.hw.latency_rules.ROUNDING_LATENCY` cycles from the operands to the rounded value.
"""
from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Mux, Signal, Value, signed

from flightc.hw.arith import delayed
from flightc.hw.dsp48e2 import registered_product
from flightc.hw.latency_rules import PRODUCT_LATENCY, ROUNDING_LATENCY


def rounded_product(m: Module, prefix: str, raw: Value, bias: Value, mult: Value, shift: Value,
                    acc_bits: int) -> Signal:
    """The 72-bit rounded value of the operands ``raw``, ``bias``, ``mult`` and ``shift`` (registers, or held) of
    ``ROUNDING_LATENCY`` cycles before: the biased sum, the products, their sum with the rounding half, the shift."""
    if ROUNDING_LATENCY != 1 + PRODUCT_LATENCY + 1 + 1:  # the steps below
        raise AssertionError("the rounding's registers and hw/latency_rules.py disagree")

    def reg(value, name: str, shape) -> Signal:
        r = Signal(shape, name=f"{prefix}_{name}")
        m.d.sync += r.eq(value)
        return r

    biased = reg(raw + bias, "biased", signed(acc_bits + 2))
    mult = delayed(m, mult, 1, f"{prefix}_mult")
    x_lo, x_hi = Cat(biased[:26], Const(0, 1)).as_signed(), biased[26:].as_signed()
    y_lo, y_hi = Cat(mult[:17], Const(0, 1)).as_signed(), mult[17:].as_signed()
    ll = registered_product(m, f"{prefix}_ll", x_lo, y_lo)
    lh = registered_product(m, f"{prefix}_lh", x_lo, y_hi)
    hl = registered_product(m, f"{prefix}_hl", x_hi, y_lo)
    hh = registered_product(m, f"{prefix}_hh", x_hi, y_hi)
    # the sum's width: the product's, or enough for the rounding half of a shift up to 71 (of 72-bit results), and a
    # sign; from a shift of tw - 1 on the rounded value is 0
    tw = max(acc_bits + 2 + 32, 72) + 1
    big = shift >= tw - 1
    half = reg(((Const(1, tw) << shift[:7]) >> 1)[:tw - 1], "half", tw - 1)
    half = delayed(m, half, PRODUCT_LATENCY, f"{prefix}_half")
    shift_p = delayed(m, Cat(shift[:7], big), PRODUCT_LATENCY + 1, f"{prefix}_shift")
    total = reg(ll[:44].as_unsigned() + (lh[:42].as_signed() << 17) + (hl[:42].as_signed() << 26)
                + (hh[:40].as_signed() << 43) + half, "total", signed(tw))
    shift_t = reg(shift_p, "shift_t", len(shift_p))
    return reg(Mux(shift_t[7], 0, total >> shift_t[:7]), "rounded", signed(72))
