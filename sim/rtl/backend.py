"""The RTL backend: runs a bundle's programs on the generated Verilog under Verilator, through cocotb.

The host side is flightc.runtime.driver, the sequence a board host performs: one buffer per memory
channel and one for the instruction stream, laid out one after another in the simulated memory (4 KiB
aligned), their addresses passed as kernel arguments, identity registers checked. The simulator runs in its own process, driven over a
Unix socket, and keeps its state between programs like a board does.
"""
from __future__ import annotations

import logging
import os
import shutil
import socket
import tempfile
from pathlib import Path

from flightc.bundle import Bundle
from flightc.config import HardwareConfig
from flightc.errors import FlightcError, ProgramError
from flightc.files import atomic_path
from flightc.hw import regs as R
from flightc.runtime.driver import DriverBackend, KernelDriver, align, buffer_sizes
from flightc.runtime.counters import Counters, CycleSource
from flightc.sim.rtl import wire
from flightc.sim.rtl.build import RtlBuild, build, launch

log = logging.getLogger(__name__)

DEFAULT_MAX_CYCLES = 200_000_000


def _align(n: int, a: int) -> int:
    return -(-n // a) * a


class RtlSimulator:
    """One running Verilator process of the kernel testbench, and the commands it understands."""

    def __init__(self, cfg: HardwareConfig, memory_bytes: int, trace: str | Path | None = None):
        from flightc.hw.core import check_rtl_config

        check_rtl_config(cfg)
        self.cfg = cfg
        self.regs = R.by_name(cfg)
        self.build: RtlBuild = build(cfg, memory_bytes, trace=bool(trace))
        self._tmp = tempfile.TemporaryDirectory(prefix="flightc-rtl-")
        path = os.path.join(self._tmp.name, "sock")
        server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        server.bind(path)
        server.listen(1)
        env = {"FLIGHTC_RTL_SOCKET": path, "FLIGHTC_RTL_WORD_BYTES": str(cfg.axi_data_bytes)}
        self._log = open(os.path.join(self._tmp.name, "sim.log"), "w+")
        self._proc = launch(self.build, "flightc.sim.rtl.cocotb_kernel", self._tmp.name, env, bool(trace), self._log)
        self._trace_target = Path(trace) if trace else None
        server.settimeout(0.5)
        try:
            while True:
                try:
                    self.sock, _ = server.accept()
                    break
                except socket.timeout:
                    if self._proc.poll() is not None:
                        raise FlightcError(f"the RTL simulator did not start:\n{self._log_tail()}") from None
        finally:
            server.close()
        self.sock.settimeout(None)
        tag, _ = self._call_raw_recv()
        assert tag == "ready"

    def _log_tail(self) -> str:
        self._log.flush()
        self._log.seek(0)
        return self._log.read()[-4000:]

    def _call_raw_recv(self):
        try:
            return wire.recv(self.sock)
        except ConnectionError:
            raise FlightcError(f"the RTL simulator stopped:\n{self._log_tail()}") from None

    def _call(self, cmd: str, *args):
        try:
            wire.send(self.sock, (cmd, args))
            tag, reply = wire.recv(self.sock)
        except (ConnectionError, BrokenPipeError):
            raise FlightcError(f"the RTL simulator stopped:\n{self._log_tail()}") from None
        if tag == "error":
            raise FlightcError(f"RTL simulator: {reply}")
        return reply

    # ----- memory and registers
    def write_mem(self, addr: int, data: bytes) -> None:
        w = self.cfg.axi_data_bytes
        lo, hi = addr - addr % w, _align(addr + len(data), w)
        if (lo, hi) != (addr, addr + len(data)):
            old = bytearray(self.read_mem(lo, hi - lo))
            old[addr - lo: addr - lo + len(data)] = data
            data = bytes(old)
        self._call("write_mem", lo, data)

    def read_mem(self, addr: int, nbytes: int) -> bytes:
        return self._call("read_mem", addr, nbytes)

    def reg_write(self, name: str, value: int) -> None:
        r = self.regs[name]
        self._call("reg_write", r.offset, value, r.bits)

    def reg_read(self, name: str) -> int:
        r = self.regs[name]
        return self._call("reg_read", r.offset, r.bits)

    def run(self, stall_rate: int = 0, max_cycles: int = DEFAULT_MAX_CYCLES, throttle: bool = True) -> dict:
        """Start the kernel, wait for its interrupt; the cycle counters and the wall time it took. ``throttle``
        False lifts the bench memory's channel throttle for this run (hw/sim_memory.py)."""
        reply = self._call("run", stall_rate, max_cycles, throttle)
        if reply["timeout"]:
            raise ProgramError(f"the RTL kernel did not finish within {max_cycles:,} cycles (deadlock?)")
        out = {name: self.reg_read(name) for name in R.COUNTERS}
        out["wall_s"] = reply["wall_s"]
        return out


    def close(self) -> None:
        if getattr(self, "sock", None) is not None:
            try:
                self._call("stop")
            finally:
                self.sock.close()
                self.sock = None
                self._proc.wait(timeout=60)
                self._log.close()
                if self._trace_target is not None:
                    dumps = sorted(Path(self._tmp.name).glob("*.fst")) + sorted(Path(self._tmp.name).glob("*.vcd"))
                    if dumps:
                        with atomic_path(self._trace_target) as tmp:
                            shutil.copyfile(dumps[0], tmp)
                self._tmp.cleanup()

    def __del__(self):  # pragma: no cover - best effort
        try:
            self.close()
        except Exception:
            pass


class RtlPort:
    """The simulator as a :class:`flightc.runtime.driver.KernelPort`."""

    def __init__(self, sim: RtlSimulator, stall_rate: int, max_cycles: int):
        self.sim, self.stall_rate, self.max_cycles = sim, stall_rate, max_cycles
        self.last_wall_s = 0.0
        self._next = 0  # buffers one after another from address 0 of the testbench's memory

    def allocate(self, name: str, nbytes: int) -> int:
        addr, self._next = self._next, self._next + align(nbytes)
        if self._next > self.sim.build.memory_bytes:
            raise FlightcError(f"buffer {name} ({nbytes:,} bytes) does not fit the testbench's "
                               f"{self.sim.build.memory_bytes:,}-byte memory")
        return addr

    def reg_read(self, name: str) -> int:
        return self.sim.reg_read(name)

    def reg_write(self, name: str, value: int) -> None:
        self.sim.reg_write(name, value)

    def write_mem(self, addr: int, data: bytes) -> None:
        self.sim.write_mem(addr, data)

    def read_mem(self, addr: int, nbytes: int) -> bytes:
        return self.sim.read_mem(addr, nbytes)

    def start_and_wait(self) -> None:
        reply = self.sim._call("run", self.stall_rate, self.max_cycles, True)
        if reply["timeout"]:
            raise ProgramError(f"the RTL kernel did not finish within {self.max_cycles:,} cycles (deadlock?)")
        self.last_wall_s = reply["wall_s"]


class RtlBackend(DriverBackend):
    """The generated RTL, cycle by cycle, behind the same interface as the functional simulator; the host
    side is flightc.runtime.driver, as for a board."""

    name = "rtl"
    cycle_source = CycleSource.RTL

    def __init__(self, bundle: Bundle, stall_rate: int = 0, trace: str | Path | None = None,
                 max_cycles: int | None = None):
        from flightc.hw.sim_memory import STALL_RATE_BITS

        if not 0 <= stall_rate < 1 << STALL_RATE_BITS:  # before the (slow, first-time) Verilator build
            raise FlightcError(f"stall_rate (--stall-rate) {stall_rate}: must be 0 to {(1 << STALL_RATE_BITS) - 1} "
                               f"(the memory stalls with probability N/{1 << STALL_RATE_BITS} per cycle)")
        if max_cycles is not None and max_cycles < 1:
            raise FlightcError(f"max_cycles {max_cycles}: must be positive")
        total = sum(align(n) for n in buffer_sizes(bundle).values())
        memory = 1 << 20
        while memory < total:
            memory <<= 1
        self.sim = RtlSimulator(bundle.config, memory, trace)
        self.port = RtlPort(self.sim, stall_rate, max_cycles or DEFAULT_MAX_CYCLES)
        self.driver = KernelDriver(bundle, self.port, "the RTL")

    def run(self, program: bytes | list[bytes]) -> Counters:
        counters = super().run(program)
        self.last_wall_s = self.port.last_wall_s
        return counters

    def close(self) -> None:
        self.sim.close()
