"""Happens-before checking for decoupled units: vector clocks carried by wait/release tokens.

Every byte of every on-chip buffer remembers which unit last wrote it (and that unit's
instruction count then) and, per unit, the count of its last read. An access by unit U is legal
only if U's clock has seen the conflicting access: that is, a chain of tokens orders them.
Memory channels are tracked as the intervals written by ST (weights are written by the host
before the program starts and never race).
"""
from __future__ import annotations

import numpy as np

from flightc.config import Buffer, HardwareConfig
from flightc.errors import ProgramError
from flightc.isa.footprint import Access
from flightc.isa.table import Unit

NUNITS = len(Unit)


class HazardChecker:
    def __init__(self, cfg: HardwareConfig):
        self.clock = np.zeros((NUNITS, NUNITS), np.int64)  # clock[u] = what unit u has seen of every unit
        size = {b: cfg.buffer_bytes(b) for b in Buffer}
        self.writer = {b: np.full(size[b], -1, np.int8) for b in Buffer}
        self.write_seq = {b: np.zeros(size[b], np.int64) for b in Buffer}
        self.read_seq = {b: np.zeros((NUNITS, size[b]), np.int64) for b in Buffer}
        self.hbm_writes: list[tuple[Access, int, int]] = []  # (access, unit, seq)
        self.hbm_reads: list[tuple[Access, int, int]] = []

    def snapshot(self, unit: Unit) -> np.ndarray:
        return self.clock[unit].copy()

    def merge(self, unit: Unit, token_clock: np.ndarray) -> None:
        np.maximum(self.clock[unit], token_clock, out=self.clock[unit])

    def _seen(self, unit: int, other: np.ndarray, seq: np.ndarray) -> np.ndarray:
        return (other == unit) | (other < 0) | (self.clock[unit][np.maximum(other, 0)] >= seq)

    def access(self, unit: Unit, where: str, reads: list[Access], writes: list[Access]) -> None:
        """Check then record one instruction's accesses; its sequence number is clock[unit][unit] + 1."""
        u = int(unit)
        seq = self.clock[u, u] + 1
        for a in reads:
            self._check(u, a, where, write=False)
        for a in writes:
            self._check(u, a, where, write=True)
        for a in reads:
            self._record(u, seq, a, write=False)
        for a in writes:
            self._record(u, seq, a, write=True)
        self.clock[u, u] = seq

    def _check(self, u: int, a: Access, where: str, write: bool) -> None:
        kind, idx = a.space
        if kind == "hbm":
            others = self.hbm_writes + (self.hbm_reads if write else [])
            for b, v, s in others:
                if v != u and b.overlaps(a) and self.clock[u, v] < s:
                    raise ProgramError(f"{where}: {'writes' if write else 'reads'} channel {idx} bytes "
                                       f"[{a.lo}, {a.hi}) racing an unordered access by {Unit(v).name} "
                                       f"(no token chain orders them)")
            return
        b = Buffer(idx)
        ix = a.indices()
        if ix.size == 0:
            return
        if ix.max() >= len(self.writer[b]):
            raise ProgramError(f"{where}: {b.name} access [{a.lo}, {a.hi}) beyond the buffer ({len(self.writer[b])})")
        ok = self._seen(u, self.writer[b][ix].astype(np.int64), self.write_seq[b][ix])
        if not ok.all():
            first = int(ix[np.argmin(ok)])
            raise ProgramError(f"{where}: {'writes' if write else 'reads'} {b.name}[{first}] before the write by "
                               f"{Unit(int(self.writer[b][first])).name} has been released to "
                               f"{Unit(u).name} (missing wait/release token)")
        if write:
            for v in range(NUNITS):
                if v != u and (self.read_seq[b][v][ix] > self.clock[u, v]).any():
                    raise ProgramError(f"{where}: overwrites {b.name} [{a.lo}, {a.hi}) while {Unit(v).name} may "
                                       f"still read it (missing wait/release token)")

    def _record(self, u: int, seq: int, a: Access, write: bool) -> None:
        kind, idx = a.space
        if kind == "hbm":
            (self.hbm_writes if write else self.hbm_reads).append((a, u, seq))
            return
        b = Buffer(idx)
        ix = a.indices()
        if write:
            self.writer[b][ix] = u
            self.write_seq[b][ix] = seq
        else:
            self.read_seq[b][u][ix] = seq
