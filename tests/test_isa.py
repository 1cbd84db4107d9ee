import dataclasses
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flightc.errors import EncodingError
from flightc.isa import ISA, decode, encode, make
from flightc.isa.codec import decode_program, encode_program
from flightc.isa.docgen import render
from flightc.config import Buffer
from flightc.isa.table import Field, FieldKind, InstrClass, MiscOp, Opcode, PlacedField, _lay_out, check_coverage

ROOT = Path(__file__).resolve().parents[1]


def _relaid(cls, layout):
    return dataclasses.replace(cls, layout=tuple(layout))


def test_a_broken_isa_table_is_refused():
    """The checks that run when the table is imported catch overlaps, gaps, a misplaced opcode, narrow enums."""
    sys_cls = ISA[Opcode.SYS]
    op = sys_cls.index["op"]
    check_coverage([sys_cls])  # the real one passes
    overlap = [p if p is not op else PlacedField(p.field, p.lo - 1) for p in sys_cls.layout]
    with pytest.raises(AssertionError, match="SYS bits covered other than once"):
        check_coverage([_relaid(sys_cls, overlap)])
    with pytest.raises(AssertionError, match="SYS bits covered other than once"):
        check_coverage([_relaid(sys_cls, [p for p in sys_cls.layout if p is not op])])  # a gap
    with pytest.raises(AssertionError, match="must start with the opcode"):
        check_coverage([_relaid(sys_cls, sys_cls.layout[1:] + sys_cls.layout[:1])])
    narrow = [p if p is not op else PlacedField(dataclasses.replace(p.field, bits=1), p.lo) for p in sys_cls.layout]
    narrow.append(PlacedField(Field("reserved", 2, FieldKind.RESERVED, ""), op.lo + 1))
    with pytest.raises(AssertionError, match="SYS.op too narrow for its enum"):
        check_coverage([_relaid(sys_cls, sorted(narrow, key=lambda p: p.lo))])
    too_wide = InstrClass("SYS", Opcode.SYS, sys_cls.unit, 32, "", sys_cls.fields + (Field("x", 8, FieldKind.UINT,
                                                                                             ""),) * 2)
    with pytest.raises(AssertionError, match="needs 48 bits but is 32 wide"):
        _lay_out(too_wide)


@st.composite
def instructions(draw):
    cls = draw(st.sampled_from(list(ISA.values())))
    values = {}
    for p in cls.layout:
        f = p.field
        if f.kind is FieldKind.RESERVED or f.name == "opcode":
            continue
        if f.kind is FieldKind.ENUM:
            values[f.name] = int(draw(st.sampled_from(list(f.allowed))))
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
    data = bytearray(encode(make("MISC", rows=3)))
    data[-1] |= 0x80  # MISC's top bits are reserved
    with pytest.raises(EncodingError, match="reserved"):
        decode(bytes(data))
    with pytest.raises(EncodingError, match="truncated"):
        decode(encode(make("MV"))[:20])


def test_generated_isa_doc_is_current():
    assert (ROOT / "docs" / "isa.md").read_text() == render(), "run `flightc isa-doc -o docs/isa.md`"


@pytest.mark.parametrize("field", ["src_buf", "dst_buf"])
def test_the_sfu_names_only_act_and_acc(field):
    """ISA 1.8: an SFU operation reads and writes ACT and ACC only; the encoder and decoder refuse another buffer by
    name, and the ISA document lists only those two."""
    ok = make("MISC", op=MiscOp.REQ, rows=1, cols=4, **{field: Buffer.ACC})
    with pytest.raises(EncodingError, match=rf"MISC.{field} = WGT: MISC takes only ACT, ACC"):
        make("MISC", op=MiscOp.REQ, rows=1, cols=4, **{field: Buffer.WGT})
    lo = ISA[Opcode.MISC].placed(field).lo
    word = bytearray(encode(ok))
    value = int.from_bytes(word, "little") & ~(0b111 << lo) | (int(Buffer.KV) << lo)
    with pytest.raises(EncodingError, match=rf"MISC.{field} = KV"):
        decode(value.to_bytes(len(word), "little"))
    assert f"| `{field}` | enum Buffer: ACT=0, ACC=2 |" in render()
