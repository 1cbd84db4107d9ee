"""Instruction footprints for the compiler's passes, worked out once per distinct instruction and config: a compile
asks for the same instruction's several times (the tokens pass on each step's program, the early-tiles pass; 3.5
times on average over the builtin models), and compiling every builtin model for every preset took 65 s instead
of 42 (measured 2026-12-06)."""
from __future__ import annotations

from flightc.config import HardwareConfig
from flightc.isa.codec import Instruction
from flightc.isa.footprint import Access, footprint

_KEPT: dict = {}  # by config and instruction
_MOST = 1 << 15  # (a 7B compile has about 18,500 distinct instructions: about 100 MB kept)


def footprint_once(ins: Instruction,
                   cfg: HardwareConfig | None = None) -> tuple[tuple[Access, ...], tuple[Access, ...]]:
    """(reads, writes) of one instruction, as :func:`flightc.isa.footprint.footprint` gives them, as tuples (shared
    between callers: never changed)."""
    key = (cfg, ins.opcode, tuple(ins.fields.items()))
    got = _KEPT.get(key)
    if got is None:
        if len(_KEPT) >= _MOST:
            _KEPT.clear()
        reads, writes = footprint(ins, cfg)
        got = _KEPT[key] = (tuple(reads), tuple(writes))
    return got
