"""The RTL's view of the PRM records (flightc.records): ``amaranth.lib.data`` layouts derived from the one
declaration, so a unit reads ``rec.mult`` where it used to slice bits by hand."""
from __future__ import annotations

from amaranth.hdl import signed, unsigned
from amaranth.lib import data

from flightc.records import REQUANT, Record


def record_layout(record: Record) -> data.FlexibleLayout:
    """A layout of the record's size with each field at its byte offset, signed where the field is."""
    return data.FlexibleLayout(8 * record.size, {
        f.name: data.Field((signed if f.signed else unsigned)(8 * f.nbytes), 8 * f.offset) for f in record.fields})


REQUANT_LAYOUT = record_layout(REQUANT)
