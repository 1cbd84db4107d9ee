"""How a host drives a generated kernel: the register and memory sequence of every board-like backend.

The sequence is the Vitis RTL-kernel one of ``hw/regs.py``: check the identification registers
against the bundle, allocate one buffer per memory channel and one per core for its instruction stream,
place each channel's image and pass the buffers' device addresses as kernel arguments (each core has its
own copy of the channels' arguments), then per step write each core's instruction stream and its length,
start the kernel and read the cycle counters. The RTL backend
runs it over the Verilator testbench, the pynq backend over a PYNQ board (or the virtual one), the xrt
backend over an Alveo card: each is a :class:`KernelPort`.
"""
from __future__ import annotations

from typing import Protocol

from flightc.bundle import Bundle
from flightc.errors import BundleError, FlightcError
from flightc.hw import regs as R
from flightc.runtime.counters import CycleSource

PAGE = 4096  # buffers start on 4 KiB boundaries (AXI bursts never cross one)


class KernelPort(Protocol):
    """A transport to one kernel: its registers by name (hw/regs.py), device memory by address, and a run."""

    def reg_read(self, name: str) -> int: ...

    def reg_write(self, name: str, value: int) -> None: ...

    def allocate(self, name: str, nbytes: int) -> int:
        """A new device buffer of ``nbytes`` for ``name`` (channel0.., program); its device address."""

    def write_mem(self, addr: int, data: bytes) -> None: ...

    def read_mem(self, addr: int, nbytes: int) -> bytes: ...

    def start_and_wait(self) -> None:
        """Set ap_start and return when the kernel reports done (raise on a timeout)."""


def align(n: int) -> int:
    return -(-n // PAGE) * PAGE


def buffer_sizes(bundle: Bundle) -> dict[str, int]:
    """The buffers a host allocates for a bundle: each memory channel's extent, then the longest stream."""
    extent = {int(k): v for k, v in bundle.manifest.memory_map["extent"].items()}
    sizes = {f"channel{ch}": max(extent.get(ch, 0), 1) for ch in range(bundle.config.mem_channels)}
    sizes["program"] = max((len(p) for streams in bundle.programs.values() for p in streams), default=PAGE)
    return sizes


def check_identity(bundle: Bundle, port: KernelPort, where: str) -> None:
    """The kernel's ISA version and config hash registers must match the bundle's."""
    isa = port.reg_read("isa_version")
    if isa != R.isa_version_word():
        have = f"{isa >> 16}.{isa & 0xFFFF}"
        raise BundleError(f"{where} implements ISA {have}, but the bundle was compiled for ISA "
                          f"{bundle.manifest.isa_version}; rebuild the hardware or recompile")
    cfg = bundle.config
    hw_hash = f"{port.reg_read('config_hash'):016x}"
    if hw_hash != cfg.hash:
        raise BundleError(f"the bundle was compiled for config hash {cfg.hash} ({cfg.name!r}), but {where} reports "
                          f"{hw_hash}; recompile with --hw for this hardware")


def refuse_several_cores(bundle: Bundle, where: str) -> None:
    """Boards whose overlays are built one core to a kernel so far say so before anything is loaded."""
    if bundle.config.num_cores != 1:
        raise FlightcError(f"{where} has one core; the bundle was compiled for {bundle.config.num_cores} (its "
                           f"overlays are built with one core so far; the rtl backend runs several)")


class KernelDriver:
    """One bundle loaded on one kernel through a port; the step-by-step host side of every board-like backend."""

    def __init__(self, bundle: Bundle, port: KernelPort, where: str):
        check_identity(bundle, port, where)
        self.bundle, self.port = bundle, port
        cores = bundle.config.num_cores
        sizes = buffer_sizes(bundle)
        word = bundle.config.buffer_port_bytes
        self.program_capacity = -(-sizes["program"] // word) * word
        self.channel_base = {ch: port.allocate(f"channel{ch}", sizes[f"channel{ch}"])
                             for ch in range(bundle.config.mem_channels)}
        self.program_addr = [port.allocate(R.core_register("program", c), self.program_capacity)
                             for c in range(cores)]
        for ch, image in bundle.images.items():
            port.write_mem(self.channel_base[ch], bytes(image))
        for c in range(cores):
            for ch, addr in self.channel_base.items():
                port.reg_write(R.core_register(f"channel_base{ch}", c), addr)
            port.reg_write(R.core_register("program_addr", c), self.program_addr[c])

    def write(self, channel: int, addr: int, data: bytes) -> None:
        self.port.write_mem(self.channel_base[channel] + addr, data)

    def read(self, channel: int, addr: int, nbytes: int) -> bytes:
        return self.port.read_mem(self.channel_base[channel] + addr, nbytes)

    def run(self, programs: list[bytes]) -> dict[str, int]:
        """Run one instruction stream per core; the kernel's cycle counters (hw/regs.py COUNTERS) afterwards: its
        cycles the longest core's, each busy counter the sum over the cores."""
        cores = self.bundle.config.num_cores
        if len(programs) != cores:
            raise FlightcError(f"{len(programs)} instruction streams for a kernel of {cores} cores; compile the "
                               f"program for this kernel's config")
        word = self.bundle.config.axi_data_bytes
        for c, program in enumerate(programs):
            if len(program) > self.program_capacity:
                raise FlightcError(f"a {len(program)}-byte program does not fit the {self.program_capacity} "
                                   f"bytes reserved for it")
            self.port.write_mem(self.program_addr[c], bytes(program) + bytes(-len(program) % word))
            self.port.reg_write(R.core_register("program_bytes", c), len(program))
        self.port.start_and_wait()
        per_core = [{name: self.port.reg_read(R.core_register(name, c)) for name in R.COUNTERS}
                    for c in range(cores)]
        return {name: (max if name == "cycles" else sum)(x[name] for x in per_core) for name in R.COUNTERS}


class DriverBackend:
    """The backend interface (flightc.runtime.backends) of a kernel driven through ``self.driver``: the RTL, pynq
    and xrt backends differ only in their port."""

    name = ""
    driver: KernelDriver
    cycle_source = CycleSource.BOARD  # the RTL backend's are measured on the RTL; a virtual board says its own
    cycles_where = ""

    def write(self, channel: int, addr: int, data: bytes) -> None:
        self.driver.write(channel, addr, data)

    def read(self, channel: int, addr: int, nbytes: int) -> bytes:
        return self.driver.read(channel, addr, nbytes)

    def run(self, program: bytes | list[bytes]):
        """Counters of one step: instruction counts from the stream, cycles from the kernel's counters."""
        from flightc.sim.functional import static_counters

        programs = [bytes(program)] if isinstance(program, (bytes, bytearray)) else [bytes(p) for p in program]
        cfg = self.driver.bundle.config
        counters = static_counters(programs[0], cfg)
        for p in programs[1:]:
            counters.add(static_counters(p, cfg))
        counters.cycles = self.driver.run(programs)
        counters.cycle_source, counters.cycles_where = self.cycle_source, self.cycles_where
        return counters

    def close(self) -> None:
        pass
