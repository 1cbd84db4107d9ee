"""Instruction decoding derived from the ISA table: no field offset is written here."""
from __future__ import annotations

from amaranth.hdl import Value

from flightc.isa.table import ISA, FieldKind, InstrClass, Opcode, Unit

MAX_WIDTH = max(c.width for c in ISA.values())
HEADER = ISA[Opcode.SYS]  # opcode, wait and release sit at the same bits in every class


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
