"""How a host drives one generated core: the register and memory sequence of every board-like backend.

The sequence is the Vitis RTL-kernel one of ``hw/regs.py``: check the identification registers
against the bundle, place each memory channel's image and pass its base address as a kernel argument,
then per step write the instruction stream, its address and length, start the kernel and read the
cycle counters. The RTL backend runs it over the Verilator testbench; board backends will run the
same class over their own transport (a :class:`KernelPort`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from flightc.bundle import Bundle
from flightc.errors import BundleError, FlightcError
from flightc.hw import regs as R

PAGE = 4096  # channel images and the instruction stream start on 4 KiB boundaries (AXI bursts never cross one)


class KernelPort(Protocol):
    """A transport to one kernel: its registers by name (hw/regs.py), its memory by byte address, and a run."""

    def reg_read(self, name: str) -> int: ...

    def reg_write(self, name: str, value: int) -> None: ...

    def write_mem(self, addr: int, data: bytes) -> None: ...

    def read_mem(self, addr: int, nbytes: int) -> bytes: ...

    def start_and_wait(self) -> None:
        """Set ap_start and return when the kernel reports done (raise on a timeout)."""


def _align(n: int) -> int:
    return -(-n // PAGE) * PAGE


@dataclass(frozen=True)
class MemoryLayout:
    """Where each memory channel and the instruction stream live in the device's memory."""

    channel_base: dict[int, int]
    program_addr: int
    program_capacity: int

    @property
    def total_bytes(self) -> int:
        return self.program_addr + self.program_capacity


def memory_layout(bundle: Bundle) -> MemoryLayout:
    """Channels one after another (each its bundle extent, page aligned), then room for the longest stream."""
    extent = {int(k): v for k, v in bundle.manifest["memory_map"]["extent"].items()}
    base, offset = {}, 0
    for ch in range(bundle.config.mem_channels):
        base[ch] = offset
        offset += _align(max(extent.get(ch, 0), 1))
    longest = max((len(p) for streams in bundle.programs.values() for p in streams), default=PAGE)
    return MemoryLayout(base, offset, _align(longest))


def check_identity(bundle: Bundle, port: KernelPort, where: str) -> None:
    """The kernel's ISA version and config hash registers must match the bundle's."""
    isa = port.reg_read("isa_version")
    if isa != R.isa_version_word():
        have = f"{isa >> 16}.{isa & 0xFFFF}"
        raise BundleError(f"{where} implements ISA {have}, but the bundle was compiled for ISA "
                          f"{bundle.manifest['isa_version']}; rebuild the hardware or recompile")
    cfg = bundle.config
    hw_hash = f"{port.reg_read('config_hash'):016x}"
    if hw_hash != cfg.hash:
        raise BundleError(f"the bundle was compiled for config hash {cfg.hash} ({cfg.name!r}), but {where} reports "
                          f"{hw_hash}; recompile with --hw for this hardware")


class KernelDriver:
    """One bundle loaded on one kernel through a port; the step-by-step host side of every board-like backend."""

    def __init__(self, bundle: Bundle, port: KernelPort, layout: MemoryLayout, where: str):
        if bundle.config.num_cores != 1:
            raise FlightcError(f"{where} has one core; the bundle was compiled for {bundle.config.num_cores}")
        check_identity(bundle, port, where)
        self.bundle, self.port, self.layout = bundle, port, layout
        for ch, image in bundle.images.items():
            port.write_mem(layout.channel_base[ch], bytes(image))
        for ch, addr in layout.channel_base.items():
            port.reg_write(f"channel_base{ch}", addr)
        port.reg_write("program_addr", layout.program_addr)

    def write(self, channel: int, addr: int, data: bytes) -> None:
        self.port.write_mem(self.layout.channel_base[channel] + addr, data)

    def read(self, channel: int, addr: int, nbytes: int) -> bytes:
        return self.port.read_mem(self.layout.channel_base[channel] + addr, nbytes)

    def run(self, program: bytes) -> dict[str, int]:
        """Run one instruction stream; the kernel's cycle counters (hw/regs.py COUNTERS) afterwards."""
        if len(program) > self.layout.program_capacity:
            raise FlightcError(f"a {len(program)}-byte program does not fit the {self.layout.program_capacity} bytes "
                               f"reserved for it")
        word = self.bundle.config.buffer_port_bytes
        self.port.write_mem(self.layout.program_addr, bytes(program) + bytes(-len(program) % word))
        self.port.reg_write("program_bytes", len(program))
        self.port.start_and_wait()
        return {name: self.port.reg_read(name) for name in R.COUNTERS}
