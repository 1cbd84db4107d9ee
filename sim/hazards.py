"""Happens-before checking for decoupled units: vector clocks carried by wait/release tokens.

An agent is one unit of one core. Every byte of every on-chip buffer remembers which agent
last wrote it (and that agent's instruction count then) and, per agent, the count of its last
read. An access is legal only if the accessing agent's clock has seen the conflicting access:
that is, a chain of tokens (and barriers, across cores) orders them. Memory channels are
tracked as the intervals that LD and ST touched (the host writes weights before the start).
"""
from __future__ import annotations

import numpy as np

from flightc.config import Buffer, HardwareConfig
from flightc.errors import ProgramError
from flightc.isa.footprint import Access, AccessIndex, byte_selector
from flightc.isa.table import Opcode, Unit

NUNITS = len(Unit)
HBM_UNITS = (Unit.LD, Unit.ST, Unit.MPE)  # the units whose instructions touch memory channels (LD, ST, streamed MVs)


def agent_name(agent: int) -> str:
    core, unit = divmod(agent, NUNITS)
    return f"core{core}.{Unit(unit).name}"


def _selector(a: Access) -> slice | np.ndarray:
    """The bytes of ``a``: a slice where they are one run (no index array to build or gather through)."""
    return byte_selector(a.addr, a.rows, a.width, a.stride)[0]


def check_reach(cfg: HardwareConfig, agent: int, where: str, a: Access) -> None:
    """The limits of every access: only LD, ST and MPE instructions touch memory channels, and a buffer access
    ends inside its buffer."""
    kind, idx = a.space
    if kind == "hbm":
        if Unit(agent % NUNITS) not in HBM_UNITS:
            raise ProgramError(f"{where}: {agent_name(agent)} touches memory channel {idx}; only "
                               f"{', '.join(x.name for x in HBM_UNITS)} instructions do")
    elif a.rows and a.width and a.hi > cfg.buffer_bytes(Buffer(idx)):
        raise ProgramError(f"{where}: {Buffer(idx).name} access [{a.lo}, {a.hi}) beyond the buffer "
                           f"({cfg.buffer_bytes(Buffer(idx))} bytes)")


def memory_race(where: str, write: bool, a: Access, other: int) -> str:
    """Two unordered accesses to a memory channel, one of them a write."""
    return (f"{where}: {'writes' if write else 'reads'} channel {a.space[1]} bytes [{a.lo}, {a.hi}) racing an "
            f"unordered access by {agent_name(other)} (no token chain orders them)")


def unreleased_write(where: str, write: bool, b: Buffer, first: int, writer: int, agent: int) -> str:
    """A buffer byte touched before its last write was released to the agent touching it."""
    return (f"{where}: {'writes' if write else 'reads'} {b.name}[{first}] before the write by {agent_name(writer)} "
            f"has been released to {agent_name(agent)} (missing wait/release token)")


def overwritten_read(where: str, b: Buffer, a: Access, reader: int) -> str:
    """A buffer write over bytes another agent may still be reading."""
    return (f"{where}: overwrites {b.name} [{a.lo}, {a.hi}) while {agent_name(reader)} may still read it "
            f"(missing wait/release token)")


class HazardChecker:
    def __init__(self, cfg: HardwareConfig):
        self.cfg = cfg
        self.agents = cfg.num_cores * NUNITS
        self.clock = np.zeros((self.agents, self.agents), np.int64)  # clock[a] = what agent a has seen of each
        self.writer: dict[tuple[int, Buffer], np.ndarray] = {}
        self.write_seq: dict[tuple[int, Buffer], np.ndarray] = {}
        self.read_seq: dict[tuple[int, Buffer], np.ndarray] = {}
        for core in range(cfg.num_cores):
            for b in Buffer:
                size = cfg.buffer_bytes(b)
                self.writer[(core, b)] = np.full(size, -1, np.int16)
                self.write_seq[(core, b)] = np.zeros(size, np.int64)
                self.read_seq[(core, b)] = np.zeros((NUNITS, size), np.int64)
        self.hbm_agents = [core * NUNITS + u for core in range(cfg.num_cores) for u in HBM_UNITS]
        self.hbm_writes: dict[int, list[tuple[Access, int, int]]] = {}  # channel -> [(access, agent, seq)]
        self.hbm_reads: dict[int, list[tuple[Access, int, int]]] = {}

    def snapshot(self, agent: int) -> np.ndarray:
        return self.clock[agent].copy()

    def merge(self, agent: int, token_clock: np.ndarray) -> None:
        np.maximum(self.clock[agent], token_clock, out=self.clock[agent])

    def barrier(self, agents: list[int]) -> None:
        """Agents meeting at a barrier leave it having seen everything any of them had seen."""
        merged = self.clock[agents].max(axis=0)
        self.clock[agents] = merged

    def _seen(self, agent: int, other: np.ndarray, seq: np.ndarray) -> np.ndarray:
        return (other == agent) | (other < 0) | (self.clock[agent][np.maximum(other, 0)] >= seq)

    def access(self, agent: int, where: str, reads: list[Access], writes: list[Access]) -> None:
        """Check then record one instruction's accesses; its sequence number is clock[agent][agent] + 1."""
        u = agent
        seq = self.clock[u, u] + 1
        for a in reads:
            self._check(u, a, where, write=False)
        for a in writes:
            self._check(u, a, where, write=True)
        for a in reads:
            self._record(u, seq, a, write=False)
        for a in writes:
            self._record(u, seq, a, write=True)
        self.clock[u, u] = seq

    def _check(self, u: int, a: Access, where: str, write: bool) -> None:
        check_reach(self.cfg, u, where, a)
        kind, idx = a.space
        if kind == "hbm":
            others = self.hbm_writes.get(idx, []) + (self.hbm_reads.get(idx, []) if write else [])
            seen = self.clock[u]
            for b, v, s in others:
                if v != u and seen[v] < s and b.intersects(a):
                    raise ProgramError(memory_race(where, write, a, v))
            return
        if not a.rows or not a.width:
            return
        core = u // NUNITS
        key = (core, Buffer(idx))
        ix = _selector(a)
        ok = self._seen(u, self.writer[key][ix].astype(np.int64), self.write_seq[key][ix])
        if not ok.all():
            first = a.lo + int(np.argmin(ok)) if isinstance(ix, slice) else int(ix[np.argmin(ok)])
            raise ProgramError(unreleased_write(where, write, key[1], first, int(self.writer[key][first]), u))
        if write:
            for unit in range(NUNITS):
                v = core * NUNITS + unit
                if v != u and (self.read_seq[key][unit][ix] > self.clock[u, v]).any():
                    raise ProgramError(overwritten_read(where, key[1], a, v))

    def _record(self, u: int, seq: int, a: Access, write: bool) -> None:
        kind, idx = a.space
        if kind == "hbm":
            log = (self.hbm_writes if write else self.hbm_reads).setdefault(idx, [])
            log.append((a, u, seq))
            if len(log) >= 64 and len(log).bit_count() == 1:  # now and then: forget what every agent that
                everyone = self.clock[self.hbm_agents].min(axis=0)  # touches memory has seen
                log[:] = [(b, v, s) for b, v, s in log if everyone[v] < s]
            return
        core, unit = divmod(u, NUNITS)
        key = (core, Buffer(idx))
        ix = _selector(a)
        if write:
            self.writer[key][ix] = u
            self.write_seq[key][ix] = seq
        else:
            self.read_seq[key][unit][ix] = seq


def early_tile_reads(streams, footprint_of) -> list[tuple[Access, str, tuple[int, int]]]:
    """The memory an MV may read before its waits (MV.w_early, ISA 1.9), with where each read is, in words and as
    (core, index)."""
    out = []
    for core, stream in enumerate(streams):
        for i, (ins, raw) in enumerate(stream):
            if ins.opcode is Opcode.MV and ins.w_early:
                out += [(a, f"core {core} instruction {i} (MV)", (core, i)) for a in footprint_of(raw)[0]
                        if a.space[0] == "hbm"]
    return out


def early_index(early: list[tuple[Access, str, tuple[int, int]]]) -> AccessIndex:
    """:func:`early_tile_reads` indexed by their bytes (a plan keeps it: programs checked against the plan write
    in a few places, and each write is looked up)."""
    return AccessIndex((a, (where, at)) for a, where, at in early)


def check_early_writes(early: AccessIndex, writes: list[tuple[Access, str]],
                       skip: frozenset[tuple[int, int]] | set[tuple[int, int]] = frozenset()) -> None:
    """Refuse a write into a tile read ahead of its waits (MV.w_early): the hardware's readers may fetch such a
    tile while the writes it would wait for are still to come. ``early`` is :func:`early_index`'s; the MVs at
    ``skip`` (core, index) are left out."""
    for w, writer in writes:
        for a, (where, at) in early.sharing(w):
            if at not in skip:
                raise ProgramError(f"{where}: MV.w_early says nothing writes its tile, but {writer} writes memory "
                                   f"channel {a.space[1]} bytes {max(a.lo, w.lo)}..{min(a.hi, w.hi) - 1} of it; "
                                   f"clear w_early (the compiler sets it only on tiles no instruction writes)")


def memory_writes(streams, footprint_of) -> list[tuple[Access, str]]:
    """Every memory-channel write of the streams, with where it is."""
    return [(a, f"core {core} instruction {i} ({ins.cls.name})") for core, stream in enumerate(streams)
            for i, (ins, raw) in enumerate(stream) for a in footprint_of(raw)[1] if a.space[0] == "hbm"]


def check_early_tiles(streams, footprint_of) -> None:
    """:func:`check_early_writes` over a whole program."""
    check_early_writes(early_index(early_tile_reads(streams, footprint_of)), memory_writes(streams, footprint_of))
