"""The RTL's view of the PRM records (flightc.records): ``amaranth.lib.data`` layouts derived from the one
declaration, so a unit reads ``rec.mult`` where it used to slice bits by hand."""
from __future__ import annotations

from amaranth.hdl import signed, unsigned
from amaranth.lib import data

from flightc.records import REQUANT, Record


def record_layout(record: Record) -> data.FlexibleLayout:
    """A layout of the record's size with each field at its byte offset, signed where the field is."""
    fields = {}
    for f in record.fields:
        lo, hi = f.bits
        fields[f.name] = data.Field((signed if f.signed else unsigned)(hi - lo), lo)
    return data.FlexibleLayout(8 * record.size, fields)


REQUANT_LAYOUT = record_layout(REQUANT)
