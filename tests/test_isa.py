from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flightc.errors import EncodingError
from flightc.isa import ISA, decode, encode, make
from flightc.isa.codec import decode_program, encode_program
from flightc.isa.docgen import render
from flightc.isa.table import FieldKind, check_coverage

ROOT = Path(__file__).resolve().parents[1]


def test_every_bit_is_covered_exactly_once():
    check_coverage()
    for cls in ISA.values():
        seen = [0] * cls.width
        for p in cls.layout:
            for b in range(p.lo, p.hi + 1):
                seen[b] += 1
        assert seen == [1] * cls.width, cls.name
        assert cls.width % 32 == 0


@st.composite
def instructions(draw):
    cls = draw(st.sampled_from(list(ISA.values())))
    values = {}
    for p in cls.layout:
        f = p.field
        if f.kind is FieldKind.RESERVED or f.name == "opcode":
            continue
        if f.kind is FieldKind.ENUM:
            values[f.name] = int(draw(st.sampled_from(list(f.enum))))
        elif f.kind is FieldKind.MASK:
            values[f.name] = draw(st.integers(0, f.hi_value)) & ~(1 << int(cls.unit))
        else:
            values[f.name] = draw(st.integers(f.lo_value, f.hi_value))
    return make(cls.opcode, **values)


@settings(max_examples=400, deadline=None)
@given(instructions())
def test_encode_decode_encode_round_trips(ins):
    data = encode(ins)
    assert len(data) * 8 == ins.cls.width
    back, end = decode(data)
    assert end == len(data)
    assert back == ins
    assert encode(back) == data


@settings(max_examples=50, deadline=None)
@given(st.lists(instructions(), min_size=1, max_size=20))
def test_programs_round_trip(prog):
    assert decode_program(encode_program(prog)) == prog


def test_out_of_range_values_raise():
    with pytest.raises(EncodingError, match="out of range"):
        make("MV", n=1 << 16)
    with pytest.raises(EncodingError, match="out of range"):
        make("MISC", imm=1 << 31)
    with pytest.raises(EncodingError, match="out of range"):
        make("MISC", offset=-(1 << 19) - 1)
    with pytest.raises(EncodingError, match="out of range"):
        make("MISC", op=15)
    with pytest.raises(EncodingError, match="unknown fields"):
        make("LD", bogus=1)


def test_own_unit_tokens_are_refused():
    with pytest.raises(EncodingError, match="own unit"):
        make("LD", wait=1)  # bit 0 is LD itself


def test_reserved_bits_and_truncation_are_refused():
    data = bytearray(encode(make("MV", n=3)))
    data[-1] |= 0x80  # MV's top bits are reserved
    with pytest.raises(EncodingError, match="reserved"):
        decode(bytes(data))
    with pytest.raises(EncodingError, match="truncated"):
        decode(encode(make("MV"))[:20])


def test_generated_isa_doc_is_current():
    assert (ROOT / "docs" / "isa.md").read_text() == render(), "run `flightc isa-doc -o docs/isa.md`"
