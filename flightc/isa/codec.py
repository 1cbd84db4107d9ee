"""Encoder and decoder derived from the ISA table; instructions are little-endian bit fields."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Iterator, Mapping

from flightc.errors import EncodingError
from flightc.isa.table import ISA, OPCODE_BITS, WORD_BITS, FieldKind, InstrClass, Opcode, Unit


@dataclass(frozen=True)
class Instruction:
    """One decoded instruction: its class and every non-reserved field's value."""

    opcode: Opcode
    fields: Mapping[str, int]

    @property
    def cls(self) -> InstrClass:
        return ISA[self.opcode]

    @property
    def unit(self) -> Unit:
        return self.cls.unit

    def __getattr__(self, name: str) -> int:
        try:
            return self.__dict__["fields"][name]
        except KeyError:
            raise AttributeError(name) from None

    def replace(self, **changes: int) -> "Instruction":
        """A copy with some fields changed (only those are checked again)."""
        unknown = set(changes) - set(self.fields)
        if unknown:
            raise EncodingError(f"{self.cls.name}: unknown fields {sorted(unknown)}")
        for name, value in changes.items():
            _check(self.cls, name, int(value))
        return Instruction(self.opcode, {**self.fields, **{k: int(v) for k, v in changes.items()}})


def _rules(cls: InstrClass) -> dict[str, tuple[int, int, frozenset | None, int]]:
    """Per field: lowest and highest value, the enum's values (or None), and the bit a mask must not set."""
    out = {}
    for p in cls.layout:
        f = p.field
        if f.kind is FieldKind.RESERVED:
            continue
        values = frozenset(int(e) for e in f.allowed) if f.kind is FieldKind.ENUM and f.enum is not None else None
        out[f.name] = (f.lo_value, f.hi_value, values, (1 << int(cls.unit)) if f.kind is FieldKind.MASK else 0)
    return out


_RULES = {op: _rules(cls) for op, cls in ISA.items()}
_NAMES = {op: tuple(sorted(n for n in r if n != "opcode")) for op, r in _RULES.items()}


def make(opcode: Opcode | str, **values: int) -> Instruction:
    """Build an instruction, filling unnamed fields with zero and checking every value's range."""
    cls = ISA[Opcode[opcode] if isinstance(opcode, str) else Opcode(opcode)]
    rules = _RULES[cls.opcode]
    unknown = [n for n in values if n not in rules or n == "opcode"]
    if unknown:
        raise EncodingError(f"{cls.name}: unknown fields {sorted(unknown)}; it has {list(_NAMES[cls.opcode])}")
    full = {n: int(values.get(n, 0)) for n in _NAMES[cls.opcode]}
    for name, value in full.items():
        _check(cls, name, value)
    return Instruction(cls.opcode, full)


def _check(cls: InstrClass, name: str, value: int) -> None:
    lo, hi, enum_values, own = _RULES[cls.opcode][name]
    if not lo <= value <= hi:
        raise EncodingError(f"{cls.name}.{name} = {value} is out of range [{lo}, {hi}]")
    if enum_values is not None and value not in enum_values:
        f = cls.placed(name).field
        if f.only is None or value not in {int(e) for e in f.enum}:
            raise EncodingError(f"{cls.name}.{name} = {value} is not a {f.enum.__name__}")
        raise EncodingError(f"{cls.name}.{name} = {f.enum(value).name}: {cls.name} takes only "
                            f"{', '.join(e.name for e in f.allowed)} here")
    if own and value & own:
        raise EncodingError(f"{cls.name}.{name} marks its own unit {cls.unit.name}; tokens go between units")


def encode(instr: Instruction) -> bytes:
    cls = instr.cls
    word = 0
    for p in cls.layout:
        if p.field.kind is FieldKind.RESERVED:
            continue
        value = int(cls.opcode) if p.field.name == "opcode" else instr.fields[p.field.name]
        _check(cls, p.field.name, value)
        word |= (value & ((1 << p.field.bits) - 1)) << p.lo
    return word.to_bytes(cls.width // 8, "little")


def instruction_bytes(opcode_bits: int) -> int:
    """Length in bytes of the instruction whose low bits hold this opcode."""
    try:
        return ISA[Opcode(opcode_bits)].width // 8
    except ValueError:
        raise EncodingError(f"unknown opcode {opcode_bits}") from None


def decode(data: bytes | memoryview, offset: int = 0) -> tuple[Instruction, int]:
    """Decode one instruction at ``offset``; returns it and the offset of the next one."""
    if offset + WORD_BITS // 8 > len(data):
        raise EncodingError(f"truncated instruction at byte {offset}")
    opcode = data[offset] & ((1 << OPCODE_BITS) - 1)
    size = instruction_bytes(opcode)
    if offset + size > len(data):
        raise EncodingError(f"truncated {ISA[Opcode(opcode)].name} instruction at byte {offset}")
    word = int.from_bytes(bytes(data[offset:offset + size]), "little")
    cls = ISA[Opcode(opcode)]
    values: dict[str, int] = {}
    for p in cls.layout:
        raw = (word >> p.lo) & ((1 << p.field.bits) - 1)
        if p.field.kind is FieldKind.RESERVED:
            if raw:
                raise EncodingError(f"{cls.name} at byte {offset}: reserved bits [{p.hi}:{p.lo}] are set")
            continue
        if p.field.kind is FieldKind.INT and raw >> (p.field.bits - 1):
            raw -= 1 << p.field.bits
        if p.field.name != "opcode":
            _check(cls, p.field.name, raw)
            values[p.field.name] = raw
    return Instruction(cls.opcode, values), offset + size


def encode_program(instrs: Iterable[Instruction]) -> bytes:
    return b"".join(encode(i) for i in instrs)


def iter_program(data: bytes | memoryview) -> Iterator[Instruction]:
    offset = 0
    while offset < len(data):
        instr, offset = decode(data, offset)
        yield instr


def decode_program(data: bytes | memoryview) -> list[Instruction]:
    return list(iter_program(data))


def field_value_name(cls: InstrClass, name: str, value: int) -> str:
    """How the disassembler and docs show a value: enum member names, unit lists for masks."""
    f = cls.placed(name).field
    if f.kind is FieldKind.ENUM and f.enum is not None:
        return f.enum(value).name
    if f.kind is FieldKind.MASK:
        return "|".join(u.name for u in Unit if value & (1 << int(u))) or "-"
    return str(value)
