"""Instruction decoding derived from the ISA table: no field offset is written here."""
from __future__ import annotations

from amaranth.hdl import Array, Const, Value

from flightc.isa.table import ISA, OPCODE_BITS, FieldKind, InstrClass, Opcode, Unit

MAX_WIDTH = max(c.width for c in ISA.values())
HEADER = ISA[Opcode.SYS]  # opcode, wait and release sit at the same bits in every class
BUF_FIELDS = ("buf", "w_buf", "src_buf", "dst_buf")
BUF_SEL_BITS = ISA[Opcode.LD].placed("buf").field.bits
if {c.placed(n).field.bits for c in ISA.values() for n in BUF_FIELDS if n in c.index} != {BUF_SEL_BITS}:
    raise AssertionError("ISA table: the buffer-select fields differ in width; the buffer bank takes one")


def opcode_of(bits: Value) -> Value:
    """The opcode field of an instruction (every class starts with it)."""
    return bits[:OPCODE_BITS]


def unit_width(unit: Unit) -> int:
    return max(c.width for c in ISA.values() if c.unit is unit)


class Fields:
    """Named views of an instruction's bits as its class lays them out (INT fields are signed)."""

    def __init__(self, bits: Value, cls: InstrClass):
        self._bits, self._cls = bits, cls

    def __getattr__(self, name: str) -> Value:
        p = self._cls.placed(name)
        v = self._bits[p.lo:p.hi + 1]
        return v.as_signed() if p.field.kind is FieldKind.INT else v


def header(bits: Value) -> Fields:
    return Fields(bits, HEADER)


def fields(bits: Value, opcode: Opcode) -> Fields:
    return Fields(bits, ISA[opcode])


def class_words(opcode: Value) -> Value:
    """32-bit words of the instruction class an opcode names (1 for an unused opcode)."""
    return Array([Const(ISA[Opcode(o)].words if o in set(Opcode) else 1, 5) for o in range(1 << OPCODE_BITS)])[opcode]


def class_unit(opcode: Value) -> Value:
    """The unit whose queue an opcode's instructions go to (SYS for an unused opcode)."""
    return Array([Const(int(ISA[Opcode(o)].unit) if o in set(Opcode) else int(Unit.SYS), len(Unit).bit_length())
                  for o in range(1 << OPCODE_BITS)])[opcode]
