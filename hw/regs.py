"""The AXI4-Lite register map, laid out like a Vitis RTL kernel (ap_ctrl_hs at 0x00, arguments from 0x10).

One table: the RTL's register file, the cocotb harness and board drivers read offsets from here.
"""
from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from flightc.config import HardwareConfig
from flightc.hw.axi import LITE_ADDR_BITS
from flightc.isa.table import ISA, ISA_VERSION


class RegAccess(str, Enum):
    RW = "rw"
    RO = "ro"


CTRL = 0x00  # bit 0 ap_start, 1 ap_done (clear on read), 2 ap_idle, 3 ap_ready
GIE = 0x04
IER = 0x08
ISR = 0x0C
AP_START, AP_DONE, AP_IDLE, AP_READY = 1, 2, 4, 8
ARGS_BASE = 0x10
ID_BASE = 0x400  # read-only identification and counters


@dataclass(frozen=True)
class Register:
    name: str
    offset: int
    bits: int  # 32 or 64 (two words, low first)
    access: RegAccess
    doc: str

    @property
    def word_offsets(self) -> tuple[int, ...]:
        """Offsets of its 32-bit words, low word first (what a 32-bit AXI4-Lite host reads or writes)."""
        return tuple(self.offset + 4 * k for k in range(self.bits // 32))


# cycles of the run, then per instruction class the cycles its unit spent executing instructions of that class
COUNTERS = ("cycles",) + tuple(f"busy_{c.name.lower()}" for c in ISA.values())


CORE_WINDOW = 1 << LITE_ADDR_BITS  # core c's registers lie at c * CORE_WINDOW + the one-core offset


def lite_addr_bits(cfg: HardwareConfig) -> int:
    """Address bits of the kernel's AXI4-Lite slave: a 4 KiB window per core, the number of windows a power of two."""
    return LITE_ADDR_BITS + (cfg.num_cores - 1).bit_length()


def core_register(name: str, core: int) -> str:
    """Core ``core``'s copy of a register: core 0's keeps the one-core name, core c's has the suffix _c{c}."""
    return name if core == 0 else f"{name}_c{core}"


def register_map(cfg: HardwareConfig) -> tuple[Register, ...]:
    """Every core's window, each laid out as a one-core kernel's: its instruction stream, its own copy of the
    channels' base addresses (the arguments of its masters in kernel.xml, so each core's masters are mapped to
    memory like any kernel's), identification and counters. ap_ctrl_hs (0x00 to 0x0C) is the kernel's, in core
    0's window: one start runs every core, done when the last finishes."""
    regs = []
    for core in range(cfg.num_cores):
        base = core * CORE_WINDOW
        regs += [Register(core_register(r.name, core), base + r.offset, r.bits, r.access, r.doc)
                 for r in _window(cfg, core)]
    return tuple(regs)


def window_arguments(cfg: HardwareConfig) -> list[str]:
    """The writable registers of a core's window, under their one-core names."""
    return [r.name for r in _window(cfg, 0) if r.access is RegAccess.RW]


def argument_word(offset: int) -> int:
    """The index of the argument word at ``offset`` of a window (from ARGS_BASE, a word each 4 bytes): what a
    register write carries to a core of several (hw/kernel.py), which keeps its own copy of its arguments."""
    return (offset - ARGS_BASE) // 4


def argument_words(cfg: HardwareConfig) -> dict[int, tuple[str, int]]:
    """Each writable word of a window by its :func:`argument_word` index: (register, which 32-bit word of it)."""
    return {argument_word(off): (r.name, k) for r in _window(cfg, 0) if r.access is RegAccess.RW
            for k, off in enumerate(r.word_offsets)}


def channel_base_word(channel: int) -> int:
    """The :func:`argument_word` index of channel ``channel``'s base address, its low word (the high one next)."""
    return argument_word(ARGS_BASE + 0x10 + 8 * channel)


def _window(cfg: HardwareConfig, core: int) -> list[Register]:
    regs = [
        Register("program_addr", ARGS_BASE, 64, RegAccess.RW, "byte address of the core's instruction stream"),
        Register("program_bytes", ARGS_BASE + 8, 32, RegAccess.RW, "length of the instruction stream in bytes"),
    ]
    for ch in range(cfg.mem_channels):
        regs.append(Register(f"channel_base{ch}", ARGS_BASE + 4 * channel_base_word(ch), 64, RegAccess.RW,
                             f"byte address where memory channel {ch} starts"))
    if regs[-1].offset + 8 > ID_BASE:
        raise ValueError(f"{cfg.mem_channels} channel arguments do not fit below {ID_BASE:#x}")
    regs += [
        Register("isa_version", ID_BASE, 32, RegAccess.RO, "ISA version, major << 16 | minor"),
        Register("config_hash", ID_BASE + 4, 64, RegAccess.RO, "first 16 hex digits of the hardware config hash"),
        Register("core_id", ID_BASE + 0xC, 32, RegAccess.RO, f"index of this core ({core})"),
    ]
    off = ID_BASE + 0x10
    for name in COUNTERS:
        regs.append(Register(name, off, 64, RegAccess.RO,
                             "cycles of the last run" if name == "cycles" else
                             f"cycles spent executing {name[5:].upper()} instructions in the last run"))
        off += 8
    return regs


def isa_version_word() -> int:
    major, minor = (int(x) for x in ISA_VERSION.split("."))
    return major << 16 | minor


def config_hash_word(cfg: HardwareConfig) -> int:
    return int(cfg.hash, 16)


def by_name(cfg: HardwareConfig) -> dict[str, Register]:
    return {r.name: r for r in register_map(cfg)}
