"""One backend interface for every executor of a bundle: functional simulator, performance model, RTL, boards.

:class:`Backend` is the contract; :data:`BACKENDS` is the registry: each backend's name, what it is, the
options it takes, what it needs and where its cycles come from. The CLI's ``--backend`` choices, its
per-backend flags and their checks derive from it, and :func:`open_backend` refuses an option a backend does
not take instead of ignoring it.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Protocol

from flightc.bundle import Bundle
from flightc.errors import BundleError, FlightcError
from flightc.runtime.counters import Counters, CycleSource


class Backend(Protocol):
    """Memory access and program execution on one device holding one loaded bundle."""

    name: str

    def write(self, channel: int, addr: int, data: bytes) -> None: ...

    def read(self, channel: int, addr: int, nbytes: int) -> bytes: ...

    def run(self, program: bytes | list[bytes]) -> Counters:
        """Run one step's instruction streams (one per core); what it did, cycles with their provenance."""
        ...

    def close(self) -> None:
        """Release the device (processes, sockets, boards) and write any trace asked for."""
        ...


class BackendOptionError(FlightcError):
    """An option the chosen backend does not take."""


@dataclass(frozen=True)
class BackendOption:
    """A keyword a backend constructor takes, and the ``flightc run`` flag that sets it (None: API only)."""

    name: str
    flag: str | None
    help: str
    type: type = str
    store_false: bool = False  # a --no-X flag: giving it sets the option False (the constructors hold defaults)
    store_true: bool = False  # a switch: giving it sets the option True


OPTIONS: dict[str, BackendOption] = {o.name: o for o in (
    BackendOption("overlay", "--overlay", "pynq: the overlay's .bit (with its .hwh and .flightc.json); xrt: the "
                  ".xclbin (with its .flightc.json) -- as `flightc hw bitstream` writes them"),
    BackendOption("board", "--board", "pynq: the board's address, ADDRESS[:PORT] (default: pynq's choice, e.g. "
                  "PYNQ_REMOTE_DEVICES or the board this runs on)"),
    BackendOption("device_index", "--device-index", "xrt: which card (default 0)", int),
    BackendOption("timeout_s", "--board-timeout", "pynq/xrt: seconds one step may take before the run is abandoned",
                  float),
    BackendOption("check_hazards", "--no-hazard-check", "skip the token-ordering checks (faster)", bool,
                  store_false=True),
    BackendOption("slow_path", "--slow-path", "fsim/perf: schedule and hazard-check every instruction as it runs, "
                  "computing with flightc.numerics itself (the reference the fast path is tested against; slower) "
                  "instead of running each template's order, checked once, with the compiled arithmetic", bool,
                  store_true=True),
    BackendOption("tile_cache_mb", "--tile-cache-mb", "fsim: MiB of dequantized streamed weights kept between "
                  "steps (default 1024; a 7B model's take about 6,300), and up to 256 MiB more of them as float32", int),
    BackendOption("trace", "--trace", "perf: write a Chrome/Perfetto timeline (JSON) of every unit and memory "
                  "channel; rtl: write a VCD waveform of the whole session (a separate, slower build; large for long "
                  "runs)"),
    BackendOption("stall_rate", "--stall-rate", "rtl: the simulated memory withholds ready/valid with probability "
                  "N/256 per cycle", int),
    BackendOption("max_cycles", None, "rtl: cycles one step may take before it counts as a deadlock", int),
)}


def _said(name: str) -> str:
    """An option as both the API and the CLI spell it."""
    flag = OPTIONS[name].flag if name in OPTIONS else None
    return f"{name} ({flag})" if flag else name


@dataclass(frozen=True)
class BackendSpec:
    """One registered backend."""

    name: str
    summary: str  # what it is, in a few words (the CLI's help)
    factory: str  # "module:attribute", imported on first use
    options: tuple[str, ...]  # keys of OPTIONS it takes
    needs: str  # what must be present for it to run
    cycles: CycleSource  # where its cycle counts come from (a virtual board says its own)
    simulator: bool  # runs on this machine (its tokens/s is simulation speed, not the device's)

    def check_options(self, options: dict) -> None:
        """Refuse, by name, every option this backend does not take, saying which backends take it."""
        unknown = [k for k in options if k not in self.options]
        if not unknown:
            return
        parts = []
        for k in unknown:
            takers = [b.name for b in BACKENDS.values() if k in b.options]
            parts.append(f"{_said(k)}, an option of {', '.join(takers)}" if takers else f"{k}, which no backend takes")
        takes = ", ".join(_said(k) for k in self.options) or "no options"
        raise BackendOptionError(f"backend {self.name!r} does not take {'; '.join(parts)}; it takes {takes}")

    def open(self, bundle: Bundle, **options) -> Backend:
        module, _, attr = self.factory.partition(":")
        return getattr(importlib.import_module(module), attr)(bundle, **options)


BACKENDS: dict[str, BackendSpec] = {b.name: b for b in (
    BackendSpec("fsim", "functional simulator", "flightc.runtime.backends:FunctionalBackend",
                ("check_hazards", "tile_cache_mb", "slow_path"),
                "nothing", CycleSource.NONE, True),
    BackendSpec("perf", "fsim values with cycles from the performance model",
                "flightc.runtime.backends:PerfBackend", ("check_hazards", "trace", "slow_path"), "nothing", CycleSource.MODELED,
                True),
    BackendSpec("rtl", "the generated Verilog under Verilator, cycle by cycle", "flightc.sim.rtl.backend:RtlBackend",
                ("stall_rate", "trace", "max_cycles"), "Verilator and cocotb (installed with flightc); a one-core "
                "config", CycleSource.RTL, True),
    BackendSpec("pynq", "a PYNQ board, or the virtual board of `flightc board serve`",
                "flightc.runtime.pynq_backend:PynqBackend", ("overlay", "board", "timeout_s"),
                "an overlay from `flightc hw bitstream` and a PYNQ board (or `flightc board serve`)",
                CycleSource.BOARD, False),
    BackendSpec("xrt", "an Alveo card through XRT", "flightc.runtime.xrt_backend:XrtBackend",
                ("overlay", "device_index", "timeout_s"), "XRT's pyxrt, an Alveo card and its .xclbin",
                CycleSource.BOARD, False),
)}


def backend_spec(name: str) -> BackendSpec:
    if name not in BACKENDS:
        raise FlightcError(f"unknown backend {name!r}; available: {', '.join(BACKENDS)}")
    return BACKENDS[name]


def backends_help() -> str:
    """The registry as one sentence: 'fsim (functional simulator), perf (…) or xrt (…)'."""
    items = [f"{b.name} ({b.summary})" for b in BACKENDS.values()]
    return ", ".join(items[:-1]) + " or " + items[-1]


def backends_epilog() -> str:
    """Each backend, what it needs and where its cycles come from: the epilog of `flightc run --help`."""
    lines = ["backends:"]
    for b in BACKENDS.values():
        flags = ", ".join(OPTIONS[k].flag for k in b.options if OPTIONS[k].flag) or "no flags"
        lines.append(f"  {b.name:5} needs {b.needs}; cycles: {b.cycles.describe()}; takes {flags}")
    return "\n".join(lines)


def open_backend(name: str, bundle: Bundle, **options) -> Backend:
    """The backend ``name`` with ``bundle`` loaded; ``options`` must be ones the backend takes (BACKENDS)."""
    spec = backend_spec(name)
    spec.check_options(options)
    if bundle.manifest.programs_only:
        raise BundleError("this bundle was compiled with --programs-only: it has programs but no weights, so "
                          f"backend {name!r} cannot compute with it; model its speed with `flightc perf`, or "
                          "compile with weights")
    return spec.open(bundle, **options)


class FunctionalBackend:
    """The bit-exact functional simulator (flightc.sim.functional)."""

    name = "fsim"

    def __init__(self, bundle: Bundle, check_hazards: bool = True, tile_cache_mb: int = 1024, slow_path: bool = False):
        """``tile_cache_mb``: MiB of dequantized streamed weights kept between steps (a 7B model's take 6,300);
        ``slow_path``: schedule and check every instruction as it runs (sim.functional.Machine.run)."""
        from flightc.sim.functional import Machine

        self.machine = Machine.from_bundle(bundle, check_hazards=check_hazards, tile_cache_bytes=tile_cache_mb << 20,
                                           slow_path=slow_path)

    def write(self, channel: int, addr: int, data: bytes) -> None:
        self.machine.write_hbm(channel, addr, data)

    def read(self, channel: int, addr: int, nbytes: int) -> bytes:
        return self.machine.read_hbm(channel, addr, nbytes)

    def run(self, program: bytes | list[bytes]) -> Counters:
        return self.machine.run(program)

    @property
    def hazard_check_s(self) -> float:
        """Seconds the fast path spent on hazard checks (each token structure once, then what moved)."""
        return self.machine.check_s

    def close(self) -> None:
        self.machine.release()  # for the next session on this bundle, its decoded weights in it


class PerfBackend:
    """The cycle-level performance model (flightc.sim.perf): the functional simulator computes the values,
    the model the cycles each program takes on the generated hardware, with the RTL's counter names."""

    name = "perf"

    def __init__(self, bundle: Bundle, check_hazards: bool = True, trace: str | None = None, slow_path: bool = False):
        self.data = FunctionalBackend(bundle, check_hazards, slow_path=slow_path)
        self.cfg = bundle.config
        self.trace = trace
        self.steps: list = []  # (program name, Schedule) of every run, for reports and the timeline trace

    def write(self, channel: int, addr: int, data: bytes) -> None:
        self.data.write(channel, addr, data)

    def read(self, channel: int, addr: int, nbytes: int) -> bytes:
        return self.data.read(channel, addr, nbytes)

    @property
    def hazard_check_s(self) -> float:
        return self.data.hazard_check_s

    def run(self, program: bytes | list[bytes]) -> Counters:
        from flightc.isa.codec import decode_program
        from flightc.sim.perf.report import busy_counters
        from flightc.sim.perf.schedule import schedule

        streams = [program] if isinstance(program, (bytes, bytearray)) else list(program)
        counters = self.data.run(streams)
        sched = schedule(self.cfg, [list(decode_program(p)) for p in streams])
        counters.cycles = busy_counters(sched)
        counters.cycle_source = CycleSource.MODELED
        self.steps.append((f"step {len(self.steps)}", sched))
        return counters

    def close(self) -> None:
        if self.trace:
            from flightc.sim.perf.trace import write_trace

            write_trace(self.steps, self.trace)
