"""The host-side driver sequence (flightc.runtime.driver), on a register file and memory held in Python.

The RTL backend runs the same driver over the Verilator testbench (tests/rtl/); here the sequence
itself is checked: layout, identity checks, and what one run writes.
"""
from __future__ import annotations

import pytest

from conftest import compiled
from flightc.errors import BundleError
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
        a, n = self.regs["program_addr"], self.regs["program_bytes"]
        self.started.append(bytes(self.mem[a:a + n]))
        self.regs["cycles"] = 1234


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
    assert bases == sorted(bases) and all(x % PAGE == 0 for x in bases) and driver.program_addr % PAGE == 0
    for ch, image in b.images.items():
        assert driver.read(ch, 0, len(image)) == bytes(image)
        assert port.regs[f"channel_base{ch}"] == driver.channel_base[ch]
    assert port.regs["program_addr"] == driver.program_addr
    program = b.step(1, 3)[0]
    counters = driver.run(program)
    assert port.started == [program] and counters["cycles"] == 1234 and set(counters) == set(R.COUNTERS)


def test_a_kernel_of_another_config_or_isa_is_refused():
    b = compiled("tiny-llama", "w8").bundle
    with pytest.raises(BundleError, match=f"compiled for config hash {b.config.hash}.*reports 00000000deadbeef"):
        KernelDriver(b, RegisterFile(b.config, _total(b), config_hash="deadbeef"), "the board")
    with pytest.raises(BundleError, match=r"the board implements ISA 9\.1, but the bundle was compiled for ISA"):
        KernelDriver(b, RegisterFile(b.config, _total(b), isa_word=9 << 16 | 1), "the board")
