"""DSP48E2 cascades: a lane group's packed products summed inside the DSPs through PCIN, as Vivado builds them from
the primitive (yosys builds no cascade from behavioural Verilog, and would leave the sums in LUTs).

Outside :func:`flightc.hw.hierarchy.to_verilog` (Amaranth's simulator) the sum is plain arithmetic; inside it, a
chain of DSP48E2 instances, each adding its pre-adder's ``(hi << shift) + lo`` times its activation to the one
before, the last registering the sum. Verilator runs the chain on :data:`MODEL`, a behavioural model of that one
configuration; the board flows and ``flightc hw synth`` take the vendor's primitive.
"""
from __future__ import annotations

from pathlib import Path

from amaranth.hdl import ClockSignal, Const, Instance, Module, Signal, Value, signed

from flightc.hw.arith import tree
from flightc.hw.hierarchy import generating_verilog

MODEL = Path(__file__).with_name("dsp48e2_model.v")
P_BITS = 48  # the DSP48E2's accumulator
A_BITS, B_BITS, D_BITS = 30, 18, 27  # its A, B and D ports (the pre-adder and the multiplier's A side: 27 bits)
OPMODE_M = 0b00_000_01_01  # W = 0, Z = 0, Y:X = the multiplier's product
OPMODE_M_PCIN = 0b00_001_01_01  # the same plus PCIN (Z = 001)
INMODE_D_PLUS_A = 0b00100  # the pre-adder: D + A


def cascade_sum(m: Module, name: str, slots: list[tuple[Value, Value, Value]], shift: int, enable: Value) -> Signal:
    """``sum((hi << shift) + lo) * act`` over ``slots`` of (lo, hi, act) signed operands, registered while
    ``enable``: a signed :data:`P_BITS`-bit signal, a cycle after its operands."""
    out = Signal(signed(P_BITS), name=name)
    if not generating_verilog():
        products = [((Value.cast(hi).as_signed() << shift) + lo) * act for lo, hi, act in slots]
        with m.If(enable):
            m.d.sync += out.eq(tree(products))
        return out
    pcout = None
    for k, (lo, hi, act) in enumerate(slots):
        last = k == len(slots) - 1
        a, b, d = Signal(A_BITS, name=f"{name}_a{k}"), Signal(B_BITS, name=f"{name}_b{k}"), \
            Signal(D_BITS, name=f"{name}_d{k}")
        m.d.comb += [a.eq(Value.cast(lo).as_signed()), b.eq(Value.cast(act).as_signed()),
                     d.eq(Value.cast(hi).as_signed() << shift)]
        p, nxt = Signal(P_BITS, name=f"{name}_p{k}"), Signal(P_BITS, name=f"{name}_pcout{k}")
        ports = dict(i_CLK=ClockSignal("sync"), i_A=a, i_B=b, i_D=d,
                     i_OPMODE=Const(OPMODE_M if pcout is None else OPMODE_M_PCIN, 9), i_ALUMODE=Const(0, 4),
                     i_INMODE=Const(INMODE_D_PLUS_A, 5), i_CARRYINSEL=Const(0, 3), i_CARRYIN=Const(0, 1),
                     i_CEP=enable if last else Const(0, 1), o_P=p, o_PCOUT=nxt)
        for ce in ("CEA1", "CEA2", "CEB1", "CEB2", "CEC", "CED", "CEAD", "CEM", "CECTRL", "CEINMODE", "CEALUMODE",
                   "CECARRYIN", "RSTA", "RSTB", "RSTC", "RSTD", "RSTM", "RSTP", "RSTCTRL", "RSTINMODE", "RSTALUMODE",
                   "RSTALLCARRYIN"):
            ports[f"i_{ce}"] = Const(0, 1)
        if pcout is not None:
            ports["i_PCIN"] = pcout
        params = {f"p_{r}": 0 for r in ("AREG", "BREG", "CREG", "DREG", "ADREG", "MREG", "ACASCREG", "BCASCREG",
                                         "INMODEREG", "OPMODEREG", "ALUMODEREG", "CARRYINREG", "CARRYINSELREG")}
        params.update(p_PREG=int(last), p_AMULTSEL="AD", p_BMULTSEL="B", p_PREADDINSEL="A", p_USE_MULT="MULTIPLY",
                      p_A_INPUT="DIRECT", p_B_INPUT="DIRECT", p_USE_SIMD="ONE48")
        m.submodules[f"{name}_dsp{k}"] = Instance("DSP48E2", **params, **ports)
        pcout = nxt
        if last:
            m.d.comb += out.eq(p.as_signed())
    return out
