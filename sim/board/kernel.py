"""The kernel in the virtual board's fabric, behind its AXI4-Lite registers: the functional simulator
(values; cycles from the performance model) or the generated RTL under Verilator (values and cycles).

Both follow the RTL's ap_ctrl_hs register semantics (hw/control.py): a write of ap_start to CTRL starts
a run, ap_idle drops while it runs, ap_done rises at the end and clears when CTRL is read. Before a run
the kernel's address arguments are checked against the allocated buffers; a fault stops the kernel and
is reported on every later register access until the board is programmed again.
"""
from __future__ import annotations

import logging
import threading

import numpy as np

from flightc.config import HardwareConfig
from flightc.errors import FlightcError, MemoryRangeError, ProgramError
from flightc.hw import regs as R

from .memory import BoardMemory, DmaFault

log = logging.getLogger(__name__)


class FabricKernel:
    """Register words by offset, ap_ctrl_hs, the address checks and the run thread; subclasses execute."""

    def __init__(self, cfg: HardwareConfig, memory: BoardMemory):
        self.cfg, self.memory = cfg, memory
        self.regs = R.by_name(cfg)
        self.words = {off: 0 for r in self.regs.values() for off in r.word_offsets}
        self.rw = {off for r in self.regs.values() if r.access is R.RegAccess.RW for off in r.word_offsets}
        self.ctrl = {"start": 0, "done": 0, "idle": 1, "ready": 0, "gie": 0, "ier": 0, "isr": 0}
        self.fault: str | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    # ----- registers (32-bit words)
    def value(self, name: str) -> int:
        return sum(self.words[off] << (32 * k) for k, off in enumerate(self.regs[name].word_offsets))

    def set_value(self, name: str, value: int) -> None:
        for k, off in enumerate(self.regs[name].word_offsets):
            self.words[off] = (value >> (32 * k)) & 0xFFFFFFFF

    def read(self, offset: int) -> int:
        self._raise_fault()
        c = self.ctrl
        if offset == R.CTRL:
            word = c["start"] | c["done"] << 1 | c["idle"] << 2 | c["ready"] << 3
            c["done"] = 0
            return word
        if offset in (R.GIE, R.IER, R.ISR):
            return c[{R.GIE: "gie", R.IER: "ier", R.ISR: "isr"}[offset]]
        with self._lock:  # counters change at the end of a run
            return self.words.get(offset, 0)

    def write(self, offset: int, value: int) -> None:
        self._raise_fault()
        c = self.ctrl
        if offset == R.CTRL:
            if value & R.AP_START and c["idle"]:
                self._start()
        elif offset == R.GIE:
            c["gie"] = value & 1
        elif offset == R.IER:
            c["ier"] = value & 3
        elif offset == R.ISR:
            c["isr"] ^= value & 3
        elif offset in self.rw:
            self.words[offset] = value & 0xFFFFFFFF

    def _raise_fault(self) -> None:
        if self.fault:
            raise FlightcError(f"the kernel faulted and stopped: {self.fault}; program the board again "
                               "(download the overlay) to reset it")

    # ----- runs
    def _start(self) -> None:
        c = self.ctrl
        c.update(start=0, idle=0, ready=1, done=0)
        self._thread = threading.Thread(target=self._run_thread, name="flightc-kernel-run", daemon=True)
        self._thread.start()

    def _run_thread(self) -> None:
        try:
            program = self._program()
            bases = {ch: self.value(f"channel_base{ch}") for ch in range(self.cfg.mem_channels)}
            counters = self.execute(program, bases)
            with self._lock:
                for name, v in counters.items():
                    self.set_value(name, v)
        except FlightcError as e:  # DmaFault, ProgramError: the kernel's fault, reported on the next access
            self.fault = str(e)
            log.error("kernel fault: %s", e)
        except Exception as e:  # a bug in the board itself: still reported to the client rather than a hang
            self.fault = f"internal error of the virtual board: {type(e).__name__}: {e}"
            log.exception("virtual board")
        for buf in self.memory.buffers.values():
            buf.stale = True
        c = self.ctrl
        c.update(idle=1, done=1, ready=0)
        c["isr"] |= c["ier"]

    def _program(self) -> bytes:
        addr, n = self.value("program_addr"), self.value("program_bytes")
        if n == 0:
            raise DmaFault("program_bytes is 0: no instruction stream to run")
        buf, off = self.memory.holding(addr, n, "the instruction stream (program_addr, program_bytes)")
        return buf.data[off:off + n].tobytes()  # the RTL fetches its own copy from memory; the check is the same

    def execute(self, program: bytes, bases: dict[int, int]) -> dict[str, int]:
        """Run one instruction stream with the memory channels at ``bases``; the counters (hw/regs.py COUNTERS)."""
        raise NotImplementedError

    def wait_idle(self, timeout: float | None = None) -> None:
        if self._thread is not None:
            self._thread.join(timeout)

    # ----- host buffer traffic (the RTL keeps its own copy of memory)
    def host_wrote(self, buf, old: bytes) -> None:
        """The host changed ``buf`` (its bytes before are ``old``)."""

    def host_reads(self, buf) -> None:
        """The host is about to read ``buf``: bring in what the kernel wrote."""
        buf.stale = False

    def close(self) -> None:
        self.wait_idle(5)


class FsimKernel(FabricKernel):
    """The functional simulator on the buffers themselves; counters from the performance model."""

    def __init__(self, cfg: HardwareConfig, memory: BoardMemory, check_hazards: bool = True):
        super().__init__(cfg, memory)
        from flightc.sim.functional import Machine

        self.machine = Machine(cfg, {ch: 1 for ch in range(cfg.mem_channels)}, check_hazards)
        self.set_value("isa_version", R.isa_version_word())
        self.set_value("config_hash", R.config_hash_word(cfg))

    def execute(self, program: bytes, bases: dict[int, int]) -> dict[str, int]:
        from flightc.isa.codec import decode_program
        from flightc.sim.perf.report import busy_counters
        from flightc.sim.perf.schedule import schedule

        for ch, base in bases.items():
            buf, off = self.memory.holding(base, 1, f"memory channel {ch} (channel_base{ch})")
            self.machine.hbm[ch] = buf.data[off:]  # the channel reaches to the end of its buffer, no further
        try:
            self.machine.run(program)
        except MemoryRangeError as e:
            raise DmaFault(f"{e}: the access runs past the end of the buffer channel_base points into") from None
        finally:
            for ch in bases:
                self.machine.hbm[ch] = self.machine.hbm[ch][:0]
        return busy_counters(schedule(self.cfg, [list(decode_program(program))]))


class RtlKernel(FabricKernel):
    """The generated Verilog under Verilator; the board's buffers live in the testbench's memory."""

    def __init__(self, cfg: HardwareConfig, memory: BoardMemory, max_cycles: int):
        super().__init__(cfg, memory)
        from flightc.sim.rtl.backend import RtlSimulator

        top = 1 << 20
        while top < memory.base + memory.size:
            top <<= 1
        self.sim = RtlSimulator(cfg, top)  # the testbench's memory is addressed from 0 like the board's DDR
        self.max_cycles = max_cycles
        self._sim_lock = threading.Lock()

    def read(self, offset: int) -> int:
        self._raise_fault()
        if offset == R.CTRL and not self.ctrl["idle"]:
            return R.AP_START  # running: the simulator is busy, and this is what the register says meanwhile
        if offset in (R.GIE, R.IER, R.ISR):
            return super().read(offset)
        with self._sim_lock:
            return self.sim._call("reg_read", offset, 32)

    def write(self, offset: int, value: int) -> None:
        self._raise_fault()
        if offset in (R.CTRL, R.GIE, R.IER, R.ISR):  # the testbench owns start and the interrupt it waits for
            super().write(offset, value)
            return
        with self._sim_lock:
            self.sim._call("reg_write", offset, value, 32)

    def value(self, name: str) -> int:
        with self._sim_lock:
            return self.sim.reg_read(name)

    def execute(self, program: bytes, bases: dict[int, int]) -> dict[str, int]:
        for ch, base in bases.items():
            self.memory.holding(base, 1, f"memory channel {ch} (channel_base{ch})")
        with self._sim_lock:
            reply = self.sim._call("run", 0, self.max_cycles, True)
            if reply["timeout"]:
                raise ProgramError(f"the kernel did not finish within {self.max_cycles:,} cycles (deadlock?)")
            return {name: self.sim.reg_read(name) for name in R.COUNTERS}

    def host_wrote(self, buf, old: bytes) -> None:
        new = buf.data.tobytes()
        w = self.cfg.axi_data_bytes
        with self._sim_lock:
            for lo, hi in _changed(old, new, w, 1 << 16):
                self.sim.write_mem(buf.addr + lo, new[lo:hi])

    def host_reads(self, buf) -> None:
        if buf.stale:
            with self._sim_lock:
                buf.data[:] = memoryview(self.sim.read_mem(buf.addr, buf.data.size))
        buf.stale = False

    def close(self) -> None:
        super().close()
        self.sim.close()


def _changed(old: bytes, new: bytes, word: int, block: int) -> list[tuple[int, int]]:
    """Word-aligned [lo, hi) ranges, one per ``block`` bytes at most, that cover where ``new`` differs from ``old``."""
    diff = np.frombuffer(old, np.uint8) != np.frombuffer(new, np.uint8)
    out = []
    for lo in range(0, len(new), block):
        nz = np.flatnonzero(diff[lo:lo + block])
        if nz.size:
            a, b = lo + int(nz[0]), lo + int(nz[-1]) + 1
            out.append((a - a % word, min(-(-b // word) * word, len(new))))
    return out
