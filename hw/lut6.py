"""The LUT6 primitive, as a 4:1 multiplexer or as any function of up to six bits: a byte rotation's stage selects
one of four rotations of its word a bit, which a LUT6 does in one level (two select bits, four data bits), as Vivado
maps it; yosys' abc maps the same multiplexer written behaviourally as two LUT3 levels, so a 64-byte rotation
measured six levels instead of three (hw/timing.py). The buffers' arbiters (hw/buffers.py) take their request
decodes, grants and OR trees as LUT6s for the same reason: abc mapped them area first, three to five small LUTs deep
where two LUT6s do (the buffers 9.5 -> 6.0 levels).

Outside :func:`flightc.hw.hierarchy.to_verilog` (Amaranth's simulator) it is a plain multiplexer (or its truth table);
inside it, a LUT6 instance a bit. Verilator runs the instances on :data:`MODEL`; the board flows and ``flightc hw synth`` take the
vendor's primitive.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from amaranth.hdl import Cat, Const, Instance, Module, Mux, Signal, Value

from flightc.hw.hierarchy import generating_verilog

MODEL = Path(__file__).with_name("lut6_model.v")


def truth_table(function: Callable[..., bool], inputs: int) -> int:
    """The truth table of ``function`` of ``inputs`` bools (input k is bit k of the table's index)."""
    return sum(1 << a for a in range(1 << inputs) if function(*[bool(a >> k & 1) for k in range(inputs)]))


def mux4_init() -> int:
    """The LUT6's truth table: O = I[I4 + 2 I5] of its data inputs I0..I3."""
    return truth_table(lambda *i: i[i[4] + 2 * i[5]], 6)


def mux4(m: Module, name: str, select: Value, inputs: tuple[Value, Value, Value, Value]) -> Signal:
    """``inputs[select]`` bit by bit (``select`` two bits; a narrower input extended as its shape says, to the
    widest one's width)."""
    select = Value.cast(select)
    width = max(len(Value.cast(v)) for v in inputs)
    out = Signal(width, name=name)
    if any(len(Value.cast(v)) != width for v in inputs):
        extended = []
        for k, v in enumerate(inputs):
            wide = Signal(width, name=f"{name}_in{k}")
            m.d.comb += wide.eq(v)
            extended.append(wide)
        inputs = tuple(extended)
    if not generating_verilog():
        a, b, c, d = inputs
        m.d.comb += out.eq(Mux(select[1], Mux(select[0], d, c), Mux(select[0], b, a)))
        return out
    init = mux4_init()
    for j in range(width):
        m.submodules[f"{name}_{j}"] = Instance("LUT6", p_INIT=init, o_O=out[j],
                                               **{f"i_I{k}": Value.cast(v)[j] for k, v in enumerate(inputs)},
                                               i_I4=select[0], i_I5=select[1])
    return out


def lut(m: Module, name: str, inputs: list[Value], function: Callable[..., bool]) -> Signal:
    """One LUT6 computing ``function`` (of Python bools, one per input) of up to six one-bit ``inputs``."""
    if len(inputs) > 6:
        raise ValueError(f"a LUT6 takes six inputs, not {len(inputs)} ({name})")
    table = truth_table(function, len(inputs))
    out = Signal(name=name)
    index = Cat(*inputs)
    if not generating_verilog():
        m.d.comb += out.eq(Const(table, 1 << len(inputs)).bit_select(index, 1))
        return out
    init = sum(1 << a for a in range(64) if table >> (a % (1 << len(inputs))) & 1)  # the unused inputs tied low
    m.submodules[name] = Instance("LUT6", p_INIT=init, o_O=out,
                                  **{f"i_I{k}": (index[k] if k < len(inputs) else Const(0, 1)) for k in range(6)})
    return out


def any_of(m: Module, name: str, bits: list[Value]) -> Value:
    """Whether any of ``bits`` is set, as a tree of LUT6 ORs (36 bits in two levels, where abc chained five)."""
    level, depth = [Value.cast(b) for b in bits], 0
    if not level:
        return Const(0, 1)
    while len(level) > 1:
        level = [lut(m, f"{name}_or{depth}_{k}", level[6 * k:6 * k + 6], lambda *x: any(x))
                 for k in range(-(-len(level) // 6))]
        depth += 1
    return level[0]


def count_ones(m: Module, name: str, bits: list[Value]) -> Value:
    """How many of ``bits`` are set: each six's count as LUT6s (a level), then the counts summed (an adder of a few
    bits a level), where an adder tree of one-bit terms took a carry chain a bit."""
    counts = []
    for g in range(0, len(bits), 6):
        group = [Value.cast(b) for b in bits[g:g + 6]]
        counts.append(Cat(*[lut(m, f"{name}_ones{g}_{k}", group, lambda *x, k=k: (sum(x) >> k) & 1)
                            for k in range(len(group).bit_length())]))
    if not counts:
        return Const(0, 1)
    total = counts[0]
    for c in counts[1:]:
        total = total + c
    return total


def prefix_counts(m: Module, name: str, bits: list[Value], width: int) -> list[Value]:
    """For each i, how many of ``bits[:i]`` are set, modulo ``2**width`` (at most 3 bits, so that a bit of a sum of
    two counts is one LUT6 of six inputs): each six's own prefix counts as LUT6s, each whole six's count added once
    to a running base shared by the columns past it, and that base added to a column's count in its six: two to
    four levels for sixteen bits, where an adder tree per column took a carry chain (7.5 levels) or more LUTs."""
    if not 1 <= width <= 3:
        raise ValueError(f"prefix counts of {width} bits: a sum bit of two counts is one LUT6 up to 3 ({name})")
    bits = [Value.cast(b) for b in bits]

    def count(label: str, group: list[Value]) -> list[Value]:
        return [lut(m, f"{name}_{label}_{k}", group, lambda *x, k=k: (sum(x) >> k) & 1)
                for k in range(min(width, len(group).bit_length()))]

    def add(label: str, a: list[Value], b: list[Value]) -> list[Value]:
        a, b = a + [Const(0, 1)] * (width - len(a)), b + [Const(0, 1)] * (width - len(b))

        def sum_bit(k: int) -> Callable[..., bool]:  # bit k of a + b from their bits 0..k, a's first
            return lambda *x: ((sum(x[i] << i for i in range(k + 1)) + sum(x[k + 1 + i] << i for i in range(k + 1)))
                               >> k) & 1

        return [lut(m, f"{name}_{label}_{k}", a[:k + 1] + b[:k + 1], sum_bit(k)) for k in range(width)]

    out: list[Value] = [Const(0, width)]
    base: list[Value] = []
    own: dict[int, list[Value]] = {}
    for i in range(1, len(bits)):
        g = (i - 1) // 6 * 6  # the six holding bit i - 1
        if g and i - 1 == g:  # a new six: the whole one before it joins the base
            base = add(f"base{g}", base, own[g]) if base else own[g]
        own[i] = count(f"c{i}", bits[g:i])
        out.append(Cat(*(add(f"t{i}", base, own[i]) if base else own[i])))
    return out


def select(m: Module, name: str, index: Value, words: list[Value]) -> Value:
    """``words[index]`` as a tree of 4:1 multiplexers (a LUT6 level per two bits of ``index``; a 2:1 multiplexer
    for an odd bit at the last): 32 words in three levels, where yosys maps a behavioural 32:1 multiplexer in four
    or five."""
    index = Value.cast(index)
    level, bit = list(words), 0
    while len(level) > 1:
        if len(level) > 2 and bit + 1 < len(index):
            level += [level[-1]] * (-len(level) % 4)  # (past the last word: never selected)
            level = [mux4(m, f"{name}_l{bit}_{k}", index[bit:bit + 2], tuple(level[4 * k:4 * k + 4]))
                     for k in range(len(level) // 4)]
            bit += 2
        else:
            level += [level[-1]] * (len(level) % 2)
            level = [Mux(index[bit], level[2 * k + 1], level[2 * k]) for k in range(len(level) // 2)]
            bit += 1
    return level[0]


def shift(m: Module, name: str, value: Value, amount: Value, width: int, step: int = 1, left: bool = True) -> Signal:
    """``value`` shifted left (or right) by ``amount`` steps of ``step`` bits, its lowest ``width`` bits: two bits of
    ``amount`` a stage of 4:1 multiplexers (a LUT6 level each, where yosys maps a 2:1 stage a bit to a LUT each),
    a 2:1 stage for an odd top bit, the largest steps first (what a right shift's later stages need shrinks with
    them). ``name`` names the stages and the result, one shift per name in a module."""
    x = Value.cast(value)
    amount = Value.cast(amount)
    if left:
        x = Cat(x, Const(0, width))[:width]
    s = len(amount)
    while s > 0:
        pair = 2 if s >= 2 else 1
        s -= pair
        by = step << s
        keep = width if left else width + by - step  # a right shift keeps the bits its smaller steps still need

        def moved(k: int) -> Value:
            if k == 0:
                part = x[:keep]
            elif left:
                part = Cat(Const(0, k * by), x)[:width] if k * by < width else Const(0, 1)
            else:
                part = x[k * by:k * by + keep] if k * by < len(x) else Const(0, 1)
            return Cat(part, Const(0, keep - len(part))) if len(part) < keep else part

        if pair == 2:
            x = mux4(m, f"{name}{s}", amount[s:s + 2], tuple(moved(k) for k in range(4)))
        else:
            stage = Signal(keep, name=f"{name}{s}")
            m.d.comb += stage.eq(Mux(amount[s], moved(1), moved(0)))
            x = stage
    out = Signal(width, name=name)
    m.d.comb += out.eq(x[:width])
    return out
