"""One backend interface for every executor of a bundle: functional simulator, performance model, RTL, boards."""
from __future__ import annotations

from typing import Protocol

from flightc.bundle import Bundle
from flightc.errors import BundleError, FlightcError


class Backend(Protocol):
    """Memory access and program execution on one device holding one loaded bundle."""

    name: str

    def write(self, channel: int, addr: int, data: bytes) -> None: ...

    def read(self, channel: int, addr: int, nbytes: int) -> bytes: ...

    def run(self, program: bytes) -> dict: ...


class FunctionalBackend:
    """The bit-exact functional simulator (flightc.sim.functional)."""

    name = "fsim"

    def __init__(self, bundle: Bundle, check_hazards: bool = True):
        from flightc.sim.functional import Machine

        self.machine = Machine.from_bundle(bundle, check_hazards=check_hazards)

    def write(self, channel: int, addr: int, data: bytes) -> None:
        self.machine.write_hbm(channel, addr, data)

    def read(self, channel: int, addr: int, nbytes: int) -> bytes:
        return self.machine.read_hbm(channel, addr, nbytes)

    def run(self, program: bytes):
        return self.machine.run(program)


class PerfBackend:
    """The cycle-level performance model (flightc.sim.perf): the functional simulator computes the values,
    the model the cycles each program takes on the generated hardware, with the RTL's counter names."""

    name = "perf"

    def __init__(self, bundle: Bundle, check_hazards: bool = True, trace: str | None = None):
        self.data = FunctionalBackend(bundle, check_hazards)
        self.cfg = bundle.config
        self.trace = trace
        self.steps: list = []  # (program name, Schedule) of every run, for reports and the timeline trace

    def write(self, channel: int, addr: int, data: bytes) -> None:
        self.data.write(channel, addr, data)

    def read(self, channel: int, addr: int, nbytes: int) -> bytes:
        return self.data.read(channel, addr, nbytes)

    def run(self, program: bytes | list[bytes]):
        from flightc.isa.codec import decode_program
        from flightc.sim.perf.report import busy_counters
        from flightc.sim.perf.schedule import schedule

        streams = [program] if isinstance(program, (bytes, bytearray)) else list(program)
        counters = self.data.run(streams)
        sched = schedule(self.cfg, [list(decode_program(p)) for p in streams])
        counters.cycles = busy_counters(sched)
        self.steps.append((f"step {len(self.steps)}", sched))
        return counters

    def close(self) -> None:
        if self.trace:
            from flightc.sim.perf.trace import write_trace

            write_trace(self.steps, self.trace)


def _rtl(bundle: Bundle, check_hazards: bool = True, **options) -> Backend:
    """The generated RTL under Verilator (flightc.sim.rtl); imported on demand."""
    from flightc.sim.rtl.backend import RtlBackend

    return RtlBackend(bundle, **options)


def _pynq(bundle: Bundle, check_hazards: bool = True, **options) -> Backend:
    """A PYNQ board (or the virtual board) through pynq (flightc.runtime.pynq_backend)."""
    from flightc.runtime.pynq_backend import PynqBackend

    return PynqBackend(bundle, **options)


def _xrt(bundle: Bundle, check_hazards: bool = True, **options) -> Backend:
    """An Alveo card through XRT's pyxrt (flightc.runtime.xrt_backend)."""
    from flightc.runtime.xrt_backend import XrtBackend

    return XrtBackend(bundle, **options)


BACKENDS = {"fsim": FunctionalBackend, "perf": PerfBackend, "rtl": _rtl, "pynq": _pynq, "xrt": _xrt}


def open_backend(name: str, bundle: Bundle, **options) -> Backend:
    """The backend ``name`` with ``bundle`` loaded: fsim (functional simulator), perf (performance model), rtl
    (cycle-accurate RTL), pynq (a PYNQ board or the virtual board) or xrt (an Alveo card)."""
    if name not in BACKENDS:
        raise FlightcError(f"unknown backend {name!r}; available: {', '.join(BACKENDS)}")
    if bundle.manifest.get("programs_only"):
        raise BundleError("this bundle was compiled with --programs-only: it has programs but no weights, so "
                          f"backend {name!r} cannot compute with it; model its speed with `flightc perf`, or "
                          "compile with weights")
    return BACKENDS[name](bundle, **options)
