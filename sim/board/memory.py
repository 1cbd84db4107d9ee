"""The board's DDR as the kernel sees it: physically contiguous buffers (like the CMA buffers pynq allocates)
at physical addresses, and the check that every address the kernel is given lies inside one of them."""
from __future__ import annotations

import itertools
import uuid
from dataclasses import dataclass

import numpy as np

from flightc.errors import FlightcError

PAGE = 4096


class DmaFault(FlightcError):
    """The kernel was pointed at memory outside the allocated buffers (on silicon: a bus error or corruption)."""


@dataclass
class PhysBuffer:
    id: str
    addr: int
    data: np.ndarray  # uint8, the buffer's bytes
    stale: bool = False  # the kernel ran since the host last read it: its bytes must be fetched again

    @property
    def end(self) -> int:
        return self.addr + self.data.size


class BoardMemory:
    """Allocates page-aligned buffers in [base, base + size) and finds the buffer holding an address."""

    def __init__(self, base: int, size: int):
        self.base, self.size = base, size
        self.buffers: dict[str, PhysBuffer] = {}
        self._next = base
        self._ids = itertools.count(1)
        self._boot = uuid.uuid4().hex[:8]  # ids stay unique across restarts: a stale client cannot free a new buffer

    def allocate(self, nbytes: int) -> PhysBuffer:
        if nbytes <= 0:
            raise FlightcError(f"cannot allocate {nbytes} bytes")
        addr = self._next
        if addr + nbytes > self.base + self.size:
            used = sum(b.data.size for b in self.buffers.values())
            raise FlightcError(f"out of board memory: {nbytes:,} bytes requested, {used:,} of {self.size:,} "
                               "in use")
        self._next = addr + -(-nbytes // PAGE) * PAGE
        buf = PhysBuffer(f"{self._boot}-{next(self._ids)}", addr, np.zeros(nbytes, np.uint8))
        self.buffers[buf.id] = buf
        return buf

    def get(self, buffer_id: str) -> PhysBuffer:
        if buffer_id not in self.buffers:
            raise FlightcError(f"no buffer {buffer_id!r} (freed, or never allocated)")
        return self.buffers[buffer_id]

    def free(self, buffer_id: str) -> None:
        self.get(buffer_id)
        del self.buffers[buffer_id]

    def holding(self, addr: int, nbytes: int, what: str) -> tuple[PhysBuffer, int]:
        """The buffer that holds [addr, addr + nbytes) and the offset of addr in it; a DmaFault otherwise."""
        for buf in self.buffers.values():
            if buf.addr <= addr < buf.end:
                if addr + nbytes > buf.end:
                    raise DmaFault(f"{what} [{addr:#x}, {addr + nbytes:#x}) runs past the end of the buffer at "
                                   f"{buf.addr:#x} ({buf.data.size:,} bytes)")
                return buf, addr - buf.addr
        raise DmaFault(f"{what} at {addr:#x} is outside every allocated buffer "
                       f"({', '.join(f'[{b.addr:#x}, {b.end:#x})' for b in self.buffers.values()) or 'none'})")
