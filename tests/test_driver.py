"""The host-side driver sequence (flightc.runtime.driver), on a register file and memory held in Python.

The RTL backend runs the same driver over the Verilator testbench (tests/rtl/); here the sequence
itself is checked: layout, identity checks, and what one run writes.
"""
from __future__ import annotations

import pytest

from conftest import compiled
from flightc.errors import BundleError, FlightcError
from flightc.hw import regs as R
from flightc.runtime.driver import PAGE, KernelDriver, align, buffer_sizes


class RegisterFile:
    """Registers by name and a flat memory; start_and_wait records the program it was started with."""

    def __init__(self, cfg, memory_bytes: int, isa_word: int | None = None, config_hash: str | None = None):
        self.regs = {r.name: 0 for r in R.register_map(cfg)}
        self.regs["isa_version"] = R.isa_version_word() if isa_word is None else isa_word
        self.regs["config_hash"] = int(config_hash or cfg.hash, 16)
        self.mem = bytearray(memory_bytes)
        self.started = []
        self.allocated = {}

    def allocate(self, name, nbytes):
        addr = sum(align(n) for n in self.allocated.values())
        self.allocated[name] = nbytes
        return addr

    def reg_read(self, name):
        return self.regs[name]

    def reg_write(self, name, value):
        self.regs[name] = value

    def write_mem(self, addr, data):
        self.mem[addr:addr + len(data)] = data

    def read_mem(self, addr, nbytes):
        return bytes(self.mem[addr:addr + nbytes])

    def start_and_wait(self):
        """Core c's stream is recorded; it ran 1234 + c cycles, c + 1 of them busy with each class."""
        cores = sum(1 for name in self.regs if name.startswith("program_addr"))
        streams = []
        for c in range(cores):
            a, n = self.regs[R.core_register("program_addr", c)], self.regs[R.core_register("program_bytes", c)]
            streams.append(bytes(self.mem[a:a + n]))
            for name in R.COUNTERS:
                self.regs[R.core_register(name, c)] = 1234 + c if name == "cycles" else c + 1
        self.started.append(streams[0] if cores == 1 else streams)


def _total(b) -> int:
    return sum(align(n) for n in buffer_sizes(b).values())


def test_buffers_are_allocated_loaded_and_passed_as_arguments():
    b = compiled("tiny-llama", "w8").bundle
    port = RegisterFile(b.config, _total(b))
    driver = KernelDriver(b, port, "the test port")
    assert list(port.allocated) == [f"channel{c}" for c in range(b.config.mem_channels)] + ["program"]
    extent = b.manifest.memory_map["extent"]
    for ch in range(b.config.mem_channels):
        assert port.allocated[f"channel{ch}"] == max(extent.get(str(ch), 0), 1)
    bases = [driver.channel_base[ch] for ch in range(b.config.mem_channels)]
    assert bases == sorted(bases) and all(x % PAGE == 0 for x in bases) and driver.program_addr[0] % PAGE == 0
    for ch, image in b.images.items():
        assert driver.read(ch, 0, len(image)) == bytes(image)
        assert port.regs[f"channel_base{ch}"] == driver.channel_base[ch]
    assert port.regs["program_addr"] == driver.program_addr[0]
    program = b.step(1, 3)[0]
    counters = driver.run([program])
    assert port.started == [program] and counters["cycles"] == 1234 and set(counters) == set(R.COUNTERS)


def test_each_core_of_a_kernel_gets_its_stream_and_its_copy_of_the_arguments():
    """A 3-core kernel: a stream buffer per core, every core's window given every channel's base and its own
    stream; the kernel's cycles are the longest core's, its busy counters the sum over the cores."""
    from flightc.config import PRESETS

    cfg = PRESETS["tiny"].replace(name="tiny-3core", num_cores=3, mem_channels=6, axi_masters=3)
    b = compiled("tiny-llama", "w8", hw=cfg).bundle
    port = RegisterFile(cfg, _total(b) + 2 * align(buffer_sizes(b)["program"]))
    driver = KernelDriver(b, port, "the test port")
    assert list(port.allocated)[-3:] == ["program", "program_c1", "program_c2"]
    for c in range(3):
        assert port.regs[R.core_register("program_addr", c)] == driver.program_addr[c]
        for ch in range(cfg.mem_channels):
            assert port.regs[R.core_register(f"channel_base{ch}", c)] == driver.channel_base[ch]
    streams = b.step(1, 3)
    assert len(streams) == 3 and len(set(streams)) == 3
    counters = driver.run(streams)
    assert port.started == [list(streams)]
    assert counters["cycles"] == 1236 and counters["busy_mv"] == 1 + 2 + 3
    with pytest.raises(FlightcError, match="2 instruction streams for a kernel of 3 cores"):
        driver.run(streams[:2])


def test_a_kernel_of_another_config_or_isa_is_refused():
    b = compiled("tiny-llama", "w8").bundle
    with pytest.raises(BundleError, match=f"compiled for config hash {b.config.hash}.*reports 00000000deadbeef"):
        KernelDriver(b, RegisterFile(b.config, _total(b), config_hash="deadbeef"), "the board")
    with pytest.raises(BundleError, match=r"the board implements ISA 9\.1, but the bundle was compiled for ISA"):
        KernelDriver(b, RegisterFile(b.config, _total(b), isa_word=9 << 16 | 1), "the board")
