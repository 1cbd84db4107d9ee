"""Which memories a core's buffers are and which units reach them (pure Python: the RTL generator builds from it,
and the resource model counts from it without importing Amaranth).

A buffer the config banks (``HardwareConfig.banked_buffers``) is a memory per memory master, the others one memory
each; a memory that fills :data:`URAM_MIN` URAM288s or more is asked for UltraRAM, the rest for block RAM.
"""
from __future__ import annotations

from dataclasses import dataclass

from flightc.config import Buffer, HardwareConfig
from flightc.isa.footprint import MPE_OUT_BUFFERS
from flightc.isa.table import ISA, Opcode

URAM_ROWS, URAM_BITS = 4096, 64  # one URAM288 as a byte-writable memory: 4,096 rows of eight 8-bit bytes
URAM_WORD = 72  # its whole word, into which yosys folds the memory's bits (a 4,096 x 512-bit memory takes 8)
URAM_MIN = 8  # a memory that fills at least this many URAM288s whole is asked for UltraRAM


def ultra(width: int, depth: int) -> bool:
    """Whether a memory of ``depth`` words of ``width`` bits goes in UltraRAM: a whole URAM288 deep and at least
    :data:`URAM_MIN` of them (a core's large one-memory buffers); smaller ones stay in block RAM, which wastes no
    rows of theirs and leaves the URAM columns (64 on a KV260) to buffers that fill them."""
    return depth % URAM_ROWS == 0 and width * depth >= URAM_MIN * URAM_ROWS * URAM_BITS


def uram288(width: int, depth: int) -> int:
    """URAM288s an :func:`ultra` memory takes (0 for one in block RAM) as yosys maps it: its bits over whole
    4,096 x 72-bit words (measured: 8, 15 and 29 for 512 bits x 4,096, 8,192 and 16,384 rows; Vivado, which keeps
    8-bit bytes on 9-bit byte lanes, would take 8, 16 and 32)."""
    return -(-(width * depth) // (URAM_ROWS * URAM_WORD)) if ultra(width, depth) else 0


def buffer_rows(cfg: HardwareConfig, buf: Buffer) -> int:
    """Words of ``buffer_port_bytes`` in each memory of ``buf`` (a bank of a banked buffer, or the whole buffer)."""
    return cfg.buffer_bytes(buf) // cfg.buffer_port_bytes // cfg.banks(buf)


def buffer_memories(cfg: HardwareConfig) -> list[tuple[int, int, int]]:
    """(memories, width in bits, rows) of each of one core's five buffers."""
    return [(cfg.banks(b), 8 * cfg.buffer_port_bytes, buffer_rows(cfg, b)) for b in Buffer]


ALL_BUFFERS = frozenset(Buffer)


@dataclass(frozen=True)
class PortRole:
    """What one word port of a buffer bank does: the buffers it reads (a word-wide read multiplexer over every
    memory of each) and writes (a candidate of each memory's write arbiter), whether it is an LD lane (``shared``:
    the lanes write a bank through one path between them) and whether it writes one bank only."""

    reads: frozenset[Buffer] = ALL_BUFFERS
    writes: frozenset[Buffer] = ALL_BUFFERS
    shared: bool = False
    bank: int | None = None  # the one bank it writes (an LD lane past the first: its master's); None: every bank


def lane_port_name(cfg: HardwareConfig, lane: int) -> str:
    """The buffer-bank port of an LD lane ("ld" when there is one)."""
    return "ld" if cfg.axi_masters == 1 else f"ld{lane}"


def core_roles(cfg: HardwareConfig) -> dict[str, PortRole]:
    """The core's buffer ports: an LD lane's per master (writes only, one a cycle per bank; past the first lane, to
    its master's bank only), ST's (reads only), the MPE's (writes only where its output stage may: ACT and ACC), the
    SFU's operands' (reads only, its operand buffers and PRM's RoPE rows and epsilon), its results' (writes only, to
    its result buffers) and its parameters' (reads from PRM only)."""
    sfu_bufs = frozenset(ISA[Opcode.MISC].placed("dst_buf").field.allowed)
    none = frozenset()
    roles = {lane_port_name(cfg, k): PortRole(reads=none, shared=True, bank=k or None) for k in range(cfg.axi_masters)}
    roles.update({"st": PortRole(writes=none), "mpe": PortRole(writes=MPE_OUT_BUFFERS),
                  "sfu": PortRole(reads=frozenset(ISA[Opcode.MISC].placed("src_buf").field.allowed) | {Buffer.PRM},
                                  writes=none),
                  "sfu_results": PortRole(reads=none, writes=sfu_bufs),
                  "sfu_params": PortRole(reads=frozenset({Buffer.PRM}), writes=none)})
    return roles


def direct_writer(role: PortRole, b: Buffer, cut: bool) -> bool:
    """Whether a port writes buffer ``b``'s memory itself rather than through the LD lanes' shared path of a bank:
    every writer but the LD lanes, and of them the one writing every bank (lane 0) where ``b`` is one memory."""
    return b in role.writes and (not role.shared or (not cut and role.bank is None))


def multiplexer_inputs(cfg: HardwareConfig, roles: dict[str, PortRole]) -> tuple[int, int]:
    """(read, write): the words the read data multiplexers choose among, summed over the reading ports (a memory per
    bank of each buffer a port reads), and those the write paths choose among, summed over the memories with more
    than one writer and the shared LD paths of more than one lane, as ``hw/buffers.py`` builds them: what the
    resource model charges for the buffers' fabric."""
    rs = list(roles.values())
    banked = [b for b in Buffer if cfg.banks(b) > 1]
    read = sum(cfg.banks(b) for r in rs for b in r.reads)
    write = 0
    for k in range(cfg.axi_masters if banked else 0):
        here = [r for r in rs if r.shared and r.bank in (None, k)]
        if len(here) > 1 and any(b in r.writes for r in here for b in banked):
            write += len(here)
    for b in Buffer:
        cut = b in banked
        n = int(cut and any(r.shared and b in r.writes for r in rs)) + sum(direct_writer(r, b, cut) for r in rs)
        write += (n if n > 1 else 0) * cfg.banks(b)
    return read, write
