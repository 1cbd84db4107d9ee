"""One backend interface for every executor of a bundle (functional simulator now; perf, RTL, boards later)."""
from __future__ import annotations

from typing import Protocol

from flightc.bundle import Bundle
from flightc.errors import FlightcError


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


def _rtl(bundle: Bundle, check_hazards: bool = True, **options) -> Backend:
    """The generated RTL under Verilator (flightc.sim.rtl); imported on demand."""
    from flightc.sim.rtl.backend import RtlBackend

    return RtlBackend(bundle, **options)


BACKENDS = {"fsim": FunctionalBackend, "rtl": _rtl}


def open_backend(name: str, bundle: Bundle, **options) -> Backend:
    """The backend ``name`` with ``bundle`` loaded: fsim (functional simulator) or rtl (cycle-accurate RTL)."""
    if name not in BACKENDS:
        raise FlightcError(f"unknown backend {name!r}; available: {', '.join(BACKENDS)}")
    return BACKENDS[name](bundle, **options)
