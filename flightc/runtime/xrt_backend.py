"""The xrt backend: a bundle on an Alveo card (U280, VHK158) through XRT's Python bindings, ``pyxrt``.

pyxrt ships with XRT (``source /opt/xilinx/xrt/setup.sh``), not with PyPI, and pynq >= 3.1 dropped its
Alveo support, so this backend talks to XRT directly: load the .xclbin that bitstreams/vitis.py's flow
built, open the compute unit in exclusive mode (register access needs it), allocate memory channel c's
buffer in HBM bank c, and run flightc.runtime.driver's sequence over it.
"""
from __future__ import annotations

import re
import time
from pathlib import Path

from flightc.bundle import Bundle
from flightc.errors import FlightcError
from flightc.hw import regs as R
from flightc.hw.synth import TOP
from flightc.runtime.driver import DriverBackend, KernelDriver

POLL_S = (0.0001, 0.01)


def import_pyxrt():
    try:
        import pyxrt
    except ImportError:
        raise FlightcError("the xrt backend needs XRT's Python bindings (pyxrt), which ship with XRT rather than "
                           "PyPI: install XRT 2.x for your card and `source /opt/xilinx/xrt/setup.sh` (it puts "
                           "pyxrt on PYTHONPATH); no card here? use --backend pynq with the virtual board, or "
                           "fsim/rtl") from None
    return pyxrt


class XrtPort:
    """A :class:`flightc.runtime.driver.KernelPort` over pyxrt: CU registers and one bo per buffer."""

    def __init__(self, pyxrt, device, xclbin, uuid, cu: str, cfg, timeout_s: float):
        self.x, self.device, self.timeout_s = pyxrt, device, timeout_s
        self.kernel = pyxrt.kernel(device, uuid, f"{TOP}:{{{cu}}}", pyxrt.kernel.cu_access_mode.exclusive)
        self.regs = R.by_name(cfg)
        self.banks = {}
        for mem in xclbin.get_mems():
            m = re.fullmatch(r"HBM\[(\d+)\]", mem.get_tag())
            if m and mem.get_used():
                self.banks[int(m.group(1))] = mem.get_index()
        self.buffers: list[tuple[int, object, int]] = []  # (device address, bo, size)

    def reg_read(self, name: str) -> int:
        return sum((self.kernel.read_register(off) & 0xFFFFFFFF) << (32 * k)
                   for k, off in enumerate(self.regs[name].word_offsets))

    def reg_write(self, name: str, value: int) -> None:
        for k, off in enumerate(self.regs[name].word_offsets):
            self.kernel.write_register(off, (value >> (32 * k)) & 0xFFFFFFFF)

    def allocate(self, name: str, nbytes: int) -> int:
        m = re.fullmatch(r"channel(\d+)", name)
        # a channel in its HBM bank; the instruction stream in channel 0's, which master 0 (the fetch's) reaches
        bank = self.banks.get(int(m.group(1)) if m else 0)
        group = bank if bank is not None else self.kernel.group_id(0)
        bo = self.x.bo(self.device, nbytes, self.x.bo.normal, group)
        addr = bo.address()
        self.buffers.append((addr, bo, nbytes))
        return addr

    def _find(self, addr: int, nbytes: int):
        for base, bo, size in self.buffers:
            if base <= addr and addr + nbytes <= base + size:
                return bo, addr - base
        raise FlightcError(f"[{addr:#x}, {addr + nbytes:#x}) is in no buffer this host allocated")

    def write_mem(self, addr: int, data: bytes) -> None:
        bo, off = self._find(addr, len(data))
        bo.write(data, off)
        bo.sync(self.x.xclBOSyncDirection.XCL_BO_SYNC_BO_TO_DEVICE, len(data), off)

    def read_mem(self, addr: int, nbytes: int) -> bytes:
        bo, off = self._find(addr, nbytes)
        bo.sync(self.x.xclBOSyncDirection.XCL_BO_SYNC_BO_FROM_DEVICE, nbytes, off)
        return bytes(bo.read(nbytes, off))

    def start_and_wait(self) -> None:
        self.kernel.write_register(R.CTRL, R.AP_START)
        t0, pause = time.monotonic(), POLL_S[0]
        while not self.kernel.read_register(R.CTRL) & R.AP_DONE:
            if time.monotonic() - t0 > self.timeout_s:
                raise FlightcError(f"the kernel did not finish within {self.timeout_s:g} s")
            time.sleep(pause)
            pause = min(2 * pause, POLL_S[1])


class XrtBackend(DriverBackend):
    """A bundle on an Alveo card; the same interface as the simulators (flightc.runtime.backends)."""

    name = "xrt"

    def __init__(self, bundle: Bundle, overlay: str | Path | None = None, device_index: int = 0,
                 timeout_s: float = 600.0):
        from flightc.bitstreams.manifest import read_manifest

        if overlay is None:
            raise FlightcError("the xrt backend needs the card's .xclbin: --overlay PATH.xclbin (built by the flow "
                               "`flightc hw bitstream --board u280` writes)")
        overlay = Path(overlay)
        manifest = read_manifest(overlay)
        manifest.check(bundle.manifest, overlay)
        pyxrt = import_pyxrt()
        if not overlay.exists():
            raise FlightcError(f"{overlay} does not exist; build it with the Makefile next to its manifest")
        device = pyxrt.device(device_index)
        xclbin = pyxrt.xclbin(str(overlay))
        uuid = device.load_xclbin(xclbin)
        self.where = f"Alveo card {device_index} ({manifest.board.name})"
        self.port = XrtPort(pyxrt, device, xclbin, uuid, manifest.kernel, bundle.config, timeout_s)
        self.driver = KernelDriver(bundle, self.port, self.where)

