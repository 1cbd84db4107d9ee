"""Disassembler: one line per instruction, every field named, derived from the ISA table."""
from __future__ import annotations

from typing import Iterable

from flightc.isa.codec import Instruction, field_value_name
from flightc.isa.table import FieldKind


def format_instruction(instr: Instruction, verbose: bool = False) -> str:
    """``MV  wait=LD release=SFU n=16 k=64 ...``; zero-valued fields are dropped unless verbose."""
    cls = instr.cls
    parts = [f"{cls.name:<4}"]
    for p in cls.layout:
        name = p.field.name
        if p.field.kind is FieldKind.RESERVED or name == "opcode":
            continue
        value = instr.fields[name]
        if value or verbose or p.field.kind in (FieldKind.ENUM,) and name in ("op",):
            parts.append(f"{name}={field_value_name(cls, name, value)}")
    return " ".join(parts)


def disassemble(instrs: Iterable[Instruction], verbose: bool = False) -> list[str]:
    return [f"{i:6d}  {format_instruction(ins, verbose)}" for i, ins in enumerate(instrs)]
