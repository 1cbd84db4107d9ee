"""DSP48E2 cascades: a lane group's packed products summed inside the DSPs through PCIN, as Vivado builds them from
the primitive (yosys builds no cascade from behavioural Verilog, and would leave the sums in LUTs).

Outside :func:`flightc.hw.hierarchy.to_verilog` (Amaranth's simulator) the sum is plain arithmetic through as many
registers; inside it, a chain of DSP48E2 instances, each adding its pre-adder's ``(hi << shift) + lo`` times its
activation to the one before, pipelined so that no path between registers runs through more than two of them (the
lane groups' products at 225 MHz, hw/timing.py). Verilator runs the chain on :data:`MODEL`, a behavioural model of
the registers and arithmetic flightc uses; the board flows and ``flightc hw synth`` take the vendor's primitive.
"""
from __future__ import annotations

from pathlib import Path

from amaranth.hdl import Cat, ClockSignal, Const, Instance, Module, Signal, Value, signed

from flightc.hw.arith import delayed, tree
from flightc.hw.hierarchy import generating_verilog
from flightc.hw.latency_rules import CASCADE_LATENCY, CASCADE_STEP, PRODUCT_LATENCY

MODEL = Path(__file__).with_name("dsp48e2_model.v")
P_BITS = 48  # the DSP48E2's accumulator
A_BITS, B_BITS, D_BITS = 30, 18, 27  # its A, B and D ports (the pre-adder and the multiplier's A side: 27 bits)
# a wide product's limbs: unsigned, each zero-extended within the multiplier's signed 27-bit and 18-bit sides
A_LIMB_BITS, B_LIMB_BITS = 26, 17
# two INT8 operands packed into the multiplier's 27-bit A side share a B operand: the second one's field starts
# at bit 18 (8-bit q1 << 18 fits in 27 bits), so each product keeps 18 bits of its own
PACK_SHIFT = 18
OPMODE_M = 0b00_000_01_01  # W = 0, Z = 0, Y:X = the multiplier's product
OPMODE_M_PCIN = 0b00_001_01_01  # the same plus PCIN (Z = 001)
INMODE_D_PLUS_A = 0b00100  # the pre-adder: D + A


def dsp(m: Module, name: str, ports: dict, regs: dict, enables: dict | None = None) -> None:
    """One DSP48E2: every register in ``regs`` (AREG, BREG, DREG, ADREG, MREG, PREG) runs every cycle but those
    whose clock enable ``enables`` names (CEB1, CEB2: a weight held); the rest are off."""
    for ce in ("CEA1", "CEA2", "CEB1", "CEB2", "CEC", "CED", "CEAD", "CEM", "CECTRL", "CEINMODE", "CEALUMODE",
               "CECARRYIN", "CEP"):
        ports[f"i_{ce}"] = (enables or {}).get(ce, Const(1, 1))
    for rst in ("RSTA", "RSTB", "RSTC", "RSTD", "RSTM", "RSTP", "RSTCTRL", "RSTINMODE", "RSTALUMODE",
                "RSTALLCARRYIN"):
        ports[f"i_{rst}"] = Const(0, 1)
    params = {f"p_{r}": 0 for r in ("AREG", "BREG", "CREG", "DREG", "ADREG", "MREG", "PREG", "ACASCREG", "BCASCREG",
                                     "INMODEREG", "OPMODEREG", "ALUMODEREG", "CARRYINREG", "CARRYINSELREG")}
    params.update({f"p_{r}": v for r, v in regs.items()})
    params["p_ACASCREG"], params["p_BCASCREG"] = regs.get("AREG", 0), regs.get("BREG", 0)
    params.update(p_AMULTSEL="AD", p_BMULTSEL="B", p_PREADDINSEL="A", p_USE_MULT="MULTIPLY", p_A_INPUT="DIRECT",
                  p_B_INPUT="DIRECT", p_USE_SIMD="ONE48")
    m.submodules[name] = Instance("DSP48E2", **params, i_CLK=ClockSignal("sync"), i_ALUMODE=Const(0, 4),
                                  i_CARRYINSEL=Const(0, 3), i_CARRYIN=Const(0, 1), **ports)


def cascade_sum(m: Module, name: str, slots: list[tuple[Value, Value, Value]], shift: int) -> Signal:
    """``sum((hi << shift) + lo) * act`` over ``slots`` of (lo, hi, act) signed operands: a signed :data:`P_BITS`-bit
    signal, :data:`CASCADE_LATENCY` cycles after its operands (every register runs every cycle)."""
    if len(slots) != 2 * CASCADE_STEP:
        raise ValueError(f"a cascade of {len(slots)} slots: two steps of {CASCADE_STEP} are built")
    if CASCADE_LATENCY != 1 + 1 + len(slots) // CASCADE_STEP:  # the input registers, M, a P register a step
        raise AssertionError("the cascade's registers and hw/latency_rules.py disagree")
    out = Signal(signed(P_BITS), name=name)
    if not generating_verilog():
        products = [((Value.cast(hi).as_signed() << shift) + lo) * act for lo, hi, act in slots]
        m.d.comb += out.eq(delayed(m, tree(products), CASCADE_LATENCY, name))
        return out
    pcout = None
    for k, (lo, hi, act) in enumerate(slots):
        step, last_of_step = k // CASCADE_STEP, k % CASCADE_STEP == CASCADE_STEP - 1
        a, b, d = Signal(A_BITS, name=f"{name}_a{k}"), Signal(B_BITS, name=f"{name}_b{k}"), \
            Signal(D_BITS, name=f"{name}_d{k}")
        m.d.comb += [a.eq(Value.cast(lo).as_signed()), b.eq(Value.cast(act).as_signed()),
                     d.eq(Value.cast(hi).as_signed() << shift)]
        p, nxt = Signal(P_BITS, name=f"{name}_p{k}"), Signal(P_BITS, name=f"{name}_pcout{k}")
        ports = dict(i_A=a, i_B=b, i_D=d, i_OPMODE=Const(OPMODE_M if pcout is None else OPMODE_M_PCIN, 9),
                     i_INMODE=Const(INMODE_D_PLUS_A, 5), o_P=p, o_PCOUT=nxt)
        if pcout is not None:
            ports["i_PCIN"] = pcout
        # the second step's slots: their products a cycle later (the pre-adder's register, B's second), to meet
        # the first step's sum at the P register that closes it
        regs = dict(AREG=1, DREG=1, BREG=1 + step, ADREG=step, MREG=1, PREG=int(last_of_step))
        dsp(m, f"{name}_dsp{k}", ports, regs)
        pcout = nxt
        if k == len(slots) - 1:
            m.d.comb += out.eq(p.as_signed())
    return out


def registered_product(m: Module, name: str, a: Value, b: Value) -> Signal:
    """``a * b`` of signed operands (``a`` within 27 bits, ``b`` within 18) in a DSP48E2, its M and P registers
    closed: a signed :data:`P_BITS`-bit signal :data:`PRODUCT_LATENCY` cycles after the operands."""
    out = Signal(signed(P_BITS), name=name)
    if PRODUCT_LATENCY != 2:  # M, then P
        raise AssertionError("the product's registers and hw/latency_rules.py disagree")
    if not generating_verilog():
        m.d.comb += out.eq(delayed(m, Value.cast(a).as_signed() * Value.cast(b).as_signed(), PRODUCT_LATENCY, name))
        return out
    pa, pb = Signal(A_BITS, name=f"{name}_a"), Signal(B_BITS, name=f"{name}_b")
    p = Signal(P_BITS, name=f"{name}_p")
    m.d.comb += [pa.eq(Value.cast(a).as_signed()), pb.eq(Value.cast(b).as_signed())]
    dsp(m, f"{name}_dsp", dict(i_A=pa, i_B=pb, i_D=Const(0, D_BITS), i_OPMODE=Const(OPMODE_M, 9),
                                i_INMODE=Const(INMODE_D_PLUS_A, 5), o_P=p), dict(MREG=1, PREG=1))
    m.d.comb += out.eq(p.as_signed())
    return out


def _limbs(value: Value, bits: int) -> list[tuple[Value, int]]:
    """A signed ``value`` as limbs of ``bits`` unsigned bits (each zero-extended to a signed operand) under a signed
    top limb of at most ``bits + 1`` bits: (limb, its shift)."""
    value = Value.cast(value).as_signed()
    limbs, at = [], 0
    while len(value) - at > bits + 1:
        limbs.append((Cat(value[at:at + bits], Const(0, 1)).as_signed(), at))
        at += bits
    limbs.append((value[at:].as_signed(), at))
    return limbs


def wide_product(m: Module, name: str, a: Value, b: Value) -> Signal:
    """``a * b`` of signed operands wider than one DSP48E2's multiplier: the products of ``a``'s 26-bit limbs and
    ``b``'s 17-bit ones, each in its own DSP48E2 (:func:`registered_product`), summed in the register after them:
    ``latency_rules.WIDE_PRODUCT_LATENCY`` cycles after the operands (tests/test_arith.py checks it). At most four
    partial products (two adder levels)."""
    a, b = Value.cast(a).as_signed(), Value.cast(b).as_signed()
    parts = [registered_product(m, f"{name}_{i}{j}", la, lb) << (sa + sb)
             for i, (la, sa) in enumerate(_limbs(a, A_LIMB_BITS)) for j, (lb, sb) in enumerate(_limbs(b, B_LIMB_BITS))]
    if len(parts) > 4:
        raise ValueError(f"{name}: a {len(a)}-bit by {len(b)}-bit product needs {len(parts)} partial products; "
                         "at most four are summed in one cycle")
    out = Signal(signed(len(a) + len(b)), name=name)
    m.d.sync += out.eq(tree(parts))
    return out
