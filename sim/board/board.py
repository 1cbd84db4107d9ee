"""The virtual board's state: its files (what pynq reads and writes on a board), its DDR buffers, the PS
registers and the kernel the last bitstream put in the fabric."""
from __future__ import annotations

import json
import logging
import threading

from flightc.bitstreams.boards import Board
from flightc.bitstreams.hwh import IOPLL_CTRL
from flightc.bitstreams.virtual import read_payload
from flightc.errors import FlightcError

from .backends import BOARD_BACKENDS
from .kernel import FabricKernel, FsimKernel, RtlKernel
from .memory import BoardMemory

log = logging.getLogger(__name__)

FPGA_MANAGER = "/sys/class/fpga_manager/fpga0/"
FIRMWARE = "/lib/firmware/"
# PS registers pynq reads when it sets the PL clocks (ZU+ CRL_APB IOPLL/RPLL, CRF_APB DPLL): all at the IOPLL
# rate the .hwh's clock divisors assume
PS_RESET = {0xFF5E0020: IOPLL_CTRL, 0xFF5E0030: IOPLL_CTRL, 0xFD1A002C: IOPLL_CTRL}
IDENTITY = "/etc/flightc/virtual-board"  # hosts read here what kind of board this is, and what its cycles mean


class VirtualBoard:
    """One board: programmed by writing a bitstream's name to the FPGA manager, as pynq does on silicon."""

    def __init__(self, board: Board, backend: str = "fsim", memory_mib: int | None = None, check_hazards: bool = True,
                 max_cycles: int = 200_000_000):
        if backend not in BOARD_BACKENDS:
            raise FlightcError(f"unknown virtual board backend {backend!r}: {' or '.join(BOARD_BACKENDS)}")
        self.board, self.backend = board, backend
        self.check_hazards, self.max_cycles = check_hazards, max_cycles
        # DDR [ddr_base, ddr_base + total): buffers above the first 1/16. The RTL's testbench memory is this DDR,
        # and a small one keeps its Verilog quick to generate (1 MiB is also what the rtl backend builds).
        total = (memory_mib or BOARD_BACKENDS[backend].memory_mib) << 20
        self.memory = BoardMemory(board.ddr_base + total // 16, total - total // 16)
        self.kernel: FabricKernel | None = None
        self.ps_regs: dict[int, int] = dict(PS_RESET)
        self.lock = threading.RLock()
        self.files: dict[str, bytes] = {
            "/proc/version": b"Linux version 6.6.10-xilinx-v2024.2 (flightc virtual board) #1 SMP aarch64\n",
            "/proc/device-tree/chosen/pynq_board": board.name.encode() + b"\x00",
            FPGA_MANAGER + "state": b"operating\n",
            FPGA_MANAGER + "flags": b"0\n",
            IDENTITY: json.dumps({"cycle_source": BOARD_BACKENDS[backend].cycle_source.value,
                                  "where": BOARD_BACKENDS[backend].cycles_where}).encode() + b"\n",
        }

    # ----- files
    def read_file(self, path: str) -> bytes:
        if path not in self.files:
            raise FileNotFoundError(path)
        return self.files[path]

    def write_file(self, path: str, data: bytes) -> None:
        self.files[path] = data
        if path == FPGA_MANAGER + "firmware":
            self.program(data.decode().strip())

    # ----- programming
    def program(self, binfile: str) -> None:
        """Load /lib/firmware/``binfile`` into the fabric: the kernel its payload names."""
        data = self.files.get(FIRMWARE + binfile)
        if data is None:
            raise FlightcError(f"{FIRMWARE}{binfile} does not exist on the board")
        m = read_payload(data)
        if m.board.name != self.board.name:
            raise FlightcError(f"the bitstream was built for {m.board.name} ({m.board.part}); this board is a "
                               f"{self.board.name} ({self.board.part})")
        with self.lock:
            if self.kernel is not None:
                self.kernel.close()
                self.kernel = None
            log.info("programming %s: config %s (%s), %s backend", binfile, m.config.name, m.config.hash,
                     self.backend)
            if self.backend == "fsim":
                self.kernel = FsimKernel(m.config, self.memory, self.check_hazards)
            else:
                self.kernel = RtlKernel(m.config, self.memory, self.max_cycles)
                self._push_all()

    def _push_all(self) -> None:
        """A new RTL model starts with zeroed memory: give it the buffers' current bytes."""
        for buf in self.memory.buffers.values():
            self.kernel.host_wrote(buf, bytes(buf.data.size))

    # ----- register space: the kernel's window, the PS registers elsewhere
    def _kernel_offset(self, addr: int) -> int | None:
        b = self.board
        return addr - b.ctrl_base if b.ctrl_base <= addr < b.ctrl_base + b.ctrl_range else None

    def reg_read(self, addr: int) -> int:
        off = self._kernel_offset(addr)
        if off is None:
            return self.ps_regs.get(addr, 0)
        if self.kernel is None:
            raise FlightcError(f"read at {addr:#x}: no bitstream is loaded, the kernel's registers do not exist")
        return self.kernel.read(off)

    def reg_write(self, addr: int, value: int) -> None:
        off = self._kernel_offset(addr)
        if off is None:
            self.ps_regs[addr] = value
            return
        if self.kernel is None:
            raise FlightcError(f"write at {addr:#x}: no bitstream is loaded, the kernel's registers do not exist")
        self.kernel.write(off, value)

    def close(self) -> None:
        if self.kernel is not None:
            self.kernel.close()
            self.kernel = None
