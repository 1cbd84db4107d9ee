"""The pynq backend: a bundle on a PYNQ board (Zynq UltraScale+ / Versal) through pynq 4.0.

The overlay (.bit + .hwh + .flightc.json from ``flightc hw bitstream``) is checked against the bundle,
downloaded with ``pynq.Overlay``, and the kernel is driven through ``pynq.MMIO`` on the register map of
hw/regs.py and ``pynq.allocate`` buffers, by flightc.runtime.driver (the sequence the RTL bench runs).
On a board, pynq finds the board itself; from a host, name one with ``board=ADDRESS`` (pynq's remote
device protocol, as ``PYNQ_REMOTE_DEVICES`` does), for instance the virtual board of ``flightc board serve``.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np

from flightc.bundle import Bundle
from flightc.errors import FlightcError
from flightc.hw import regs as R
from flightc.runtime.counters import CycleSource
from flightc.runtime.driver import DriverBackend, KernelDriver, refuse_several_cores

POLL_S = (0.0005, 0.05)  # done-polling interval: first and longest


class BoardError(FlightcError):
    """The board stopped answering or refused a request."""


def _import_pynq():
    try:
        import pynq
    except ImportError as e:  # pragma: no cover - pynq is a dependency
        raise FlightcError(f"the pynq backend needs pynq 4.0 ({e}); install flightc's dependencies") from None
    return pynq


def board_call(where: str, what: str, fn, *args):
    """``fn(*args)``, with what pynq raises when a board fails or vanishes turned into a BoardError naming both."""
    import grpc

    try:
        return fn(*args)
    except grpc.RpcError as e:
        code = e.code().name if hasattr(e, "code") else "?"
        detail = e.details() if hasattr(e, "details") else str(e)
        raise BoardError(f"{where}: {what} failed ({code}: {detail})") from None
    except (RuntimeError, MemoryError, ValueError) as e:
        raise BoardError(f"{where}: {what} failed: {e}") from None


class PynqPort:
    """A :class:`flightc.runtime.driver.KernelPort` over pynq: MMIO registers and allocated buffers."""

    def __init__(self, device, mmio, cfg, where: str, timeout_s: float):
        self.device, self.mmio, self.where, self.timeout_s = device, mmio, where, timeout_s
        self.regs = R.by_name(cfg)
        self.buffers: list[tuple[int, np.ndarray]] = []  # (device address, pynq buffer)

    def _do(self, what: str, fn, *args):
        return board_call(self.where, what, fn, *args)

    def reg_read(self, name: str) -> int:
        return sum(int(self._do(f"reading register {name}", self.mmio.read, off, 4)) << (32 * k)
                   for k, off in enumerate(self.regs[name].word_offsets))

    def reg_write(self, name: str, value: int) -> None:
        for k, off in enumerate(self.regs[name].word_offsets):
            self._do(f"writing register {name}", self.mmio.write, off, (value >> (32 * k)) & 0xFFFFFFFF)

    def allocate(self, name: str, nbytes: int) -> int:
        pynq = _import_pynq()
        buf = self._do(f"allocating {nbytes:,} bytes for {name}", pynq.allocate, (nbytes,), np.uint8,
                       self.device)
        addr = int(self._do(f"asking where {name} is", lambda: buf.device_address))
        self.buffers.append((addr, buf))
        return addr

    def _find(self, addr: int, nbytes: int):
        for base, buf in self.buffers:
            if base <= addr and addr + nbytes <= base + buf.size:
                return buf, addr - base
        raise FlightcError(f"[{addr:#x}, {addr + nbytes:#x}) is in no buffer this host allocated")

    def write_mem(self, addr: int, data: bytes) -> None:
        buf, off = self._find(addr, len(data))
        buf[off:off + len(data)] = np.frombuffer(data, np.uint8)
        self._do("writing a buffer", buf.flush)

    def read_mem(self, addr: int, nbytes: int) -> bytes:
        buf, off = self._find(addr, nbytes)
        self._do("reading a buffer", buf.invalidate)
        return bytes(buf[off:off + nbytes])

    def start_and_wait(self) -> None:
        self._do("starting the kernel", self.mmio.write, R.CTRL, R.AP_START)
        t0, pause = time.monotonic(), POLL_S[0]
        while not self._do("waiting for the kernel", self.mmio.read, R.CTRL, 4) & R.AP_DONE:
            if time.monotonic() - t0 > self.timeout_s:
                raise BoardError(f"{self.where}: the kernel did not finish within {self.timeout_s:g} s")
            time.sleep(pause)
            pause = min(2 * pause, POLL_S[1])

    def close(self) -> None:
        for _, buf in self.buffers:
            try:
                buf.freebuffer()
            except Exception:  # the board may be gone; nothing to free then
                pass
        self.buffers.clear()


def open_device(board: str | None):
    """The pynq device: a remote board at ``board`` (ADDRESS[:PORT]), else pynq's own choice (its
    PYNQ_REMOTE_DEVICES, or the board this runs on)."""
    pynq = _import_pynq()
    if board is None:
        try:
            return pynq.Device.active_device, f"the PYNQ board ({os.environ.get('PYNQ_REMOTE_DEVICES', 'local')})"
        except Exception as e:
            raise BoardError(f"no PYNQ device: {e}; on a host, name a board with --board ADDRESS (or set "
                             "PYNQ_REMOTE_DEVICES)") from None
    from pynq.pl_server.remote_device import PYNQ_PORT, RemoteDevice

    host, _, port = board.partition(":")
    try:
        device = RemoteDevice(0, host, int(port or PYNQ_PORT))
    except Exception as e:
        raise BoardError(f"no PYNQ board answers at {host}:{port or PYNQ_PORT} ({e}); start one (`flightc board "
                         "serve` for the virtual board) or check the address") from None
    pynq.Device.active_device = device  # pynq's helpers (clocks, registers) talk to the active device
    from pynq.ps import Clocks

    Clocks.device = device  # pynq keeps one clock driver per process, bound to the first board it met
    if "_real_instance" in vars(Clocks):
        delattr(Clocks, "_real_instance")
    return device, f"the board at {host}:{port or PYNQ_PORT}"


class PynqBackend(DriverBackend):
    """A bundle on a PYNQ board; the same interface as the simulators (flightc.runtime.backends)."""

    name = "pynq"

    def __init__(self, bundle: Bundle, overlay: str | Path | None = None, board: str | None = None,
                 timeout_s: float = 600.0):
        from flightc.bitstreams.manifest import read_manifest

        if overlay is None:
            raise FlightcError("the pynq backend needs an overlay: --overlay PATH.bit (built by `flightc hw "
                               "bitstream`, or `flightc hw bitstream --virtual` for the virtual board)")
        overlay = Path(overlay)
        if not overlay.exists():
            raise FlightcError(f"overlay {overlay} does not exist")
        manifest = read_manifest(overlay)
        manifest.check(bundle.manifest, overlay)  # before a download, which takes seconds on silicon
        pynq = _import_pynq()
        self.device, where = open_device(board)
        self.where = where
        ov = board_call(where, f"downloading {overlay.name}",
                        lambda: pynq.Overlay(str(overlay), download=True, device=self.device))
        if manifest.kernel not in ov.ip_dict:
            raise FlightcError(f"{overlay}: no kernel instance {manifest.kernel!r} in its .hwh "
                               f"(found {', '.join(ov.ip_dict) or 'none'})")
        desc = ov.ip_dict[manifest.kernel]
        mmio = pynq.MMIO(desc["phys_addr"], desc["addr_range"], device=self.device)
        self.port = PynqPort(self.device, mmio, bundle.config, where, timeout_s)
        self.overlay = ov
        self.cycles_where = where
        if manifest.virtual and self.device.has_capability("REMOTE"):
            from flightc.sim.board.board import IDENTITY

            if self.device.exists_file(IDENTITY).exists:  # the virtual board says what its counters are
                identity = json.loads(self.device.read_file(IDENTITY))
                self.cycle_source, self.cycles_where = CycleSource(identity["cycle_source"]), identity["where"]
        refuse_several_cores(bundle, where)
        self.driver = KernelDriver(bundle, self.port, where)

    def close(self) -> None:
        self.port.close()
