"""Patch tables: the position-dependent fields of a length-adaptive program template.

An entry names one field of one instruction (the instruction's byte offset in its stream and the
field's index in its class layout, flightc.isa.table) and how much the field grows per position:
``value = template value + coef * (pos0 - template pos0)``. Applying a table rewrites those bits in
place and checks every new value against its field's range.
"""
from __future__ import annotations

import numpy as np

from flightc.errors import BundleError
from flightc.isa.table import ISA, OPCODE_BITS, FieldKind, Opcode

PATCH_DTYPE = np.dtype([("offset", "<u4"), ("field", "<u2"), ("coef", "<i4")])


def patch_entries(offsets: list[int], fields: list[int], coefs: list[int]) -> np.ndarray:
    table = np.zeros(len(offsets), PATCH_DTYPE)
    table["offset"], table["field"], table["coef"] = offsets, fields, coefs
    return table


def apply_patches(stream: bytes, table: np.ndarray, delta: int) -> bytes:
    """The stream with every patched field moved ``delta`` positions on."""
    if delta == 0 or len(table) == 0:
        return bytes(stream)
    out = bytearray(stream)
    for offset, index, coef in table.tolist():
        cls = ISA[Opcode(out[offset] & ((1 << OPCODE_BITS) - 1))]
        placed = cls.layout[index]
        f = placed.field
        size = cls.width // 8
        word = int.from_bytes(out[offset:offset + size], "little")
        mask = (1 << f.bits) - 1
        value = (word >> placed.lo) & mask
        if f.kind is FieldKind.INT and value >> (f.bits - 1):
            value -= 1 << f.bits
        value += coef * delta
        if not f.lo_value <= value <= f.hi_value:
            raise BundleError(f"patching {cls.name}.{f.name} at byte {offset} by {delta} positions gives {value}, "
                              f"outside [{f.lo_value}, {f.hi_value}]; the bundle's patch table is corrupt")
        word = (word & ~(mask << placed.lo)) | ((value & mask) << placed.lo)
        out[offset:offset + size] = word.to_bytes(size, "little")
    return bytes(out)
