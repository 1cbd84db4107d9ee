"""Functional simulator: executes a bundle's instruction bytes bit-exactly.

Instructions are decoded through the ISA table and dispatched in program order to per-unit
queues. A unit may start its next instruction once every token it waits for is in its FIFO and
every FIFO it releases into has room; the simulator runs whichever unit can go, round robin,
so only the tokens order the units. It refuses a program that deadlocks, leaves tokens behind,
or touches a byte before a token chain orders it after the conflicting access (sim.hazards).
"""
from __future__ import annotations

from bisect import bisect_left, insort
from collections import deque
from functools import lru_cache

import numpy as np

from flightc import numerics as nm
from flightc.bundle import Bundle
from flightc.compress.packing import sparse_positions, unpack_rows
from flightc.compress.stream import rows_of_image
from flightc.config import Buffer, HardwareConfig
from flightc.errors import EncodingError, MemoryRangeError, ProgramError
from flightc.isa.codec import Instruction, decode, instruction_bytes, iter_program
from flightc.isa.footprint import (MISC_DST_BYTES, MISC_SRC_BYTES, Access, check_max_fields, footprint,
                                   gather_channel, gather_rows, kmajor_row_bytes, mpe_macs, mpe_shape,
                                   norm_param_bytes, out_buffer, store_rows, store_target, stream_k, stream_shape,
                                   stream_spans, streamed, stripe_layout, stripe_spans, striped, weight_format)
from flightc.isa.table import OPCODE_BITS, MiscOp, Opcode, OutMode, SysOp, Unit
from flightc.records import NORM, ROPE
from flightc.runtime.counters import Counters
from flightc.sim.hazards import HazardChecker


NUNITS = len(Unit)


def _check_operands(ins: Instruction, cfg: HardwareConfig) -> None:
    """A result may coincide exactly with an operand (in place, or the residual it adds into), never partly."""
    reads, writes = footprint(ins, cfg)
    for w in writes:
        for r in reads:
            if r != w and r.intersects(w):
                raise ProgramError(f"result [{w.lo}, {w.hi}) overlaps an operand [{r.lo}, {r.hi}) of buffer "
                                   f"{Buffer(w.space[1]).name} without coinciding with it")


def static_counters(program: bytes, cfg: HardwareConfig | None = None) -> Counters:
    """What running ``program`` does, counted from its instructions alone (as :class:`Machine` counts it; a
    streamed MV's bytes depend on the config)."""
    c = Counters()
    for ins in _decoded(bytes(program)):
        c.instructions[ins.cls.name] = c.instructions.get(ins.cls.name, 0) + 1
        if ins.opcode in (Opcode.MM, Opcode.MV):
            c.macs += mpe_macs(ins)
            if streamed(ins):
                if cfg is None:
                    raise ValueError("counting a streamed MV's bytes needs the hardware config")
                for ch, _, n in stream_spans(cfg, ins):
                    c.hbm_read[ch] = c.hbm_read.get(ch, 0) + n
        elif ins.opcode is Opcode.MISC:
            c.sfu_elements += ins.rows * ins.cols
        elif striped(ins):
            for ch, _, n in stripe_spans(ins):
                c.hbm_read[ch] = c.hbm_read.get(ch, 0) + n
        elif ins.opcode in (Opcode.LD, Opcode.ST):
            side = c.hbm_read if ins.opcode is Opcode.LD else c.hbm_written
            targets = store_rows(cfg, ins) if ins.opcode is Opcode.ST else [(ins.channel, 0)] * ins.rows
            for ch, _ in targets:
                side[ch] = side.get(ch, 0) + ins.row_bytes
            if ins.opcode is Opcode.LD and ins.gather:
                c.hbm_read[0] = c.hbm_read.get(0, 0) + 4 * ins.rows
    return c


@lru_cache(maxsize=1 << 16)
def _decode_one(raw: bytes) -> Instruction:
    return decode(raw)[0]


def _words(program: bytes) -> list[bytes]:
    """The program cut into its instructions' bytes (the opcode in each one's low bits gives its length)."""
    out, at = [], 0
    mask = (1 << OPCODE_BITS) - 1
    while at < len(program):
        n = instruction_bytes(program[at] & mask)
        out.append(program[at:at + n])
        at += n
    return out


@lru_cache(maxsize=512)
def _decoded_words(program: bytes) -> tuple[tuple[Instruction, bytes], ...]:
    """Each instruction of ``program`` with its bytes. Decoding is pure: a session runs the same few templates
    over and over, and a template patched to a position differs from the last one in a few instructions, so each
    distinct instruction is decoded once."""
    try:
        words = _words(program)
        return tuple((_decode_one(w), w) for w in words)
    except EncodingError:
        tuple(iter_program(program))  # the same error, saying at which byte
        raise


def _decoded(program: bytes) -> tuple[Instruction, ...]:
    return tuple(ins for ins, _ in _decoded_words(program))


@lru_cache(maxsize=1 << 12)
def _token_units(wait: int, release: int) -> tuple[tuple[Unit, ...], tuple[Unit, ...]]:
    """The units an instruction waits for tokens from and releases tokens to."""
    return tuple(v for v in Unit if wait >> int(v) & 1), tuple(v for v in Unit if release >> int(v) & 1)


@lru_cache(maxsize=1 << 16)
def _footprint(raw: bytes, cfg: HardwareConfig) -> tuple[tuple[Access, ...], tuple[Access, ...]]:
    """:func:`flightc.isa.footprint.footprint` once per distinct instruction."""
    reads, writes = footprint(_decode_one(raw), cfg)
    return tuple(reads), tuple(writes)


@lru_cache(maxsize=1 << 16)
def _operands_checked(raw: bytes, cfg: HardwareConfig) -> None:
    """:func:`_check_operands` once per distinct instruction (it depends on the fields alone)."""
    _check_operands(_decode_one(raw), cfg)


CHUNK = 512  # K a float32 product of INT8 operands sums exactly: 512 x 255 x 128 < 2^24


def int8_products(a: np.ndarray, w: np.ndarray) -> np.ndarray:
    """``a @ w.T`` exactly, as int64, for 8-bit activations ``a`` [m, k] (signed or unsigned) and weights ``w``
    [n, k]: float32 products over K in chunks of :data:`CHUNK`, so that BLAS does the work and every partial sum,
    an integer below 2^24 in magnitude whatever order BLAS adds in, is exact; the chunks' sums are added in int64.
    Other operands take the int64 product."""
    if a.dtype not in (np.int8, np.uint8) or w.dtype != np.int8:
        return a.astype(np.int64) @ w.astype(np.int64).T
    k = a.shape[1]
    acc = np.zeros((a.shape[0], w.shape[0]), np.int64)
    for c in range(0, k, CHUNK):
        acc += (a[:, c:c + CHUNK].astype(np.float32) @ w[:, c:c + CHUNK].astype(np.float32).T).astype(np.int64)
    return acc


class DecodedTiles:
    """Streamed weight tiles as INT8 operand rows, by where they lie in memory, so that a weight read and
    dequantized once is not again on every token; a write to memory drops every tile whose bytes it touches.
    At most ``limit`` bytes are kept (the least recently used go first)."""

    def __init__(self, limit: int = 1 << 30):
        self.limit, self.size = limit, 0
        self.hits = self.dropped = 0  # reads served, tiles dropped by writes
        self.entries: dict = {}  # key -> (spans, rows), in use order
        self.on_channel: dict[int, list] = {}  # channel -> [(lo, hi, key)] of the tiles' bytes there, sorted
        self.longest: dict[int, int] = {}  # channel -> the longest span ever put there (how far back to look)

    def get(self, key) -> tuple[list, np.ndarray | None]:
        hit = self.entries.pop(key, None)
        if hit is None:
            return [], None
        self.entries[key] = hit
        self.hits += 1
        return hit

    def put(self, key, spans: list[tuple[int, int, int]], rows: np.ndarray) -> None:
        if rows.nbytes > self.limit:
            return
        while self.entries and self.size + rows.nbytes > self.limit:
            self._drop(next(iter(self.entries)))
        self.entries[key] = (spans, rows)
        self.size += rows.nbytes
        for ch, a, n in spans:
            insort(self.on_channel.setdefault(ch, []), (a, a + n, key), key=lambda e: (e[0], e[1]))
            self.longest[ch] = max(self.longest.get(ch, 0), n)

    def written(self, channel: int, lo: int, hi: int) -> None:
        spans = self.on_channel.get(channel)
        if not spans:
            return
        first = bisect_left(spans, lo - self.longest[channel], key=lambda e: e[0])
        last = bisect_left(spans, hi, key=lambda e: e[0])
        for key in [k for a, b, k in spans[first:last] if b > lo]:
            self._drop(key)
            self.dropped += 1

    def _drop(self, key) -> None:
        spans, rows = self.entries.pop(key)
        self.size -= rows.nbytes
        for ch, a, n in spans:
            on = self.on_channel[ch]
            at = bisect_left(on, (a, a + n), key=lambda e: (e[0], e[1]))
            while on[at][2] != key:
                at += 1
            del on[at]


class Machine:
    """The cores with their on-chip buffers and the shared memory channels, loaded from a bundle."""

    def __init__(self, cfg: HardwareConfig, extent: dict[int, int], check_hazards: bool = True,
                 tile_cache_bytes: int = 1 << 30):
        self.cfg = cfg
        self.hbm = {ch: np.zeros(max(n, 1), np.uint8) for ch, n in extent.items()}
        self.cores = [{b: np.zeros(cfg.buffer_bytes(b), np.uint8) for b in Buffer} for _ in range(cfg.num_cores)]
        self.buf = self.cores[0]
        self.check_hazards = check_hazards
        self.tiles = DecodedTiles(tile_cache_bytes)

    @classmethod
    def from_bundle(cls, bundle: Bundle, check_hazards: bool = True, tile_cache_bytes: int = 1 << 30) -> "Machine":
        extent = {int(k): v for k, v in bundle.manifest["memory_map"]["extent"].items()}
        m = cls(bundle.config, extent, check_hazards, tile_cache_bytes)
        for ch, image in bundle.images.items():
            m.write_hbm(ch, 0, image)
        return m

    # ----- host access -----
    def write_hbm(self, channel: int, addr: int, data: bytes) -> None:
        self.hbm[channel][addr:addr + len(data)] = np.frombuffer(data, np.uint8)
        self.tiles.written(channel, addr, addr + len(data))

    def read_hbm(self, channel: int, addr: int, nbytes: int) -> bytes:
        return self.hbm[channel][addr:addr + nbytes].tobytes()

    # ----- typed views -----
    def _get(self, b: Buffer, a: Access, dtype) -> np.ndarray:
        ix = a.indices()
        mem = self.buf[b]
        if ix.size and ix.max() >= mem.size:
            raise ProgramError(f"{b.name} read [{a.lo}, {a.hi}) beyond the buffer ({mem.size} bytes)")
        if not a.rows:  # nothing to read (reshape cannot infer a row length from no bytes)
            return np.zeros((0, a.width // np.dtype(dtype).itemsize), dtype)
        return mem[ix].view(dtype).reshape(a.rows, -1)

    def _put(self, b: Buffer, a: Access, values: np.ndarray) -> None:
        ix = a.indices()
        mem = self.buf[b]
        if ix.size and ix.max() >= mem.size:
            raise ProgramError(f"{b.name} write [{a.lo}, {a.hi}) beyond the buffer ({mem.size} bytes)")
        mem[ix] = np.ascontiguousarray(values).view(np.uint8).ravel()

    def _hbm_rows(self, ch: int, addr: int, rows: int, width: int, stride: int) -> np.ndarray:
        ix = (addr + np.arange(rows, dtype=np.int64)[:, None] * stride + np.arange(width)[None, :]).ravel()
        self._check_range(ch, addr, int(ix.max()) + 1 - addr if ix.size else 0)
        return ix

    def _check_range(self, ch: int, addr: int, nbytes: int) -> None:
        if ch not in self.hbm:
            raise ProgramError(f"memory channel {ch} does not exist (the config has {len(self.hbm)})")
        if nbytes and addr + nbytes > self.hbm[ch].size:
            raise MemoryRangeError(f"channel {ch} access [{addr}, {addr + nbytes}) beyond the used extent "
                                   f"({self.hbm[ch].size})")

    # ----- execution -----
    def run(self, programs: bytes | list[bytes]) -> Counters:
        """Run one instruction stream per core (a single stream for a one-core machine)."""
        if isinstance(programs, (bytes, bytearray)):
            programs = [programs]
        P = self.cfg.num_cores
        if len(programs) != P:
            raise ProgramError(f"{len(programs)} instruction streams for a {P}-core machine")
        queues: dict[tuple[int, Unit], deque[tuple[int, Instruction, bytes]]] = {}
        for core, program in enumerate(programs):
            instrs = _decoded_words(bytes(program))
            if not instrs or instrs[-1][0].opcode is not Opcode.SYS or instrs[-1][0].op != SysOp.END:
                raise ProgramError(f"core {core}: program does not end with SYS END")
            for u in Unit:
                queues[(core, u)] = deque()
            for i, (ins, raw) in enumerate(instrs):
                queues[(core, ins.unit)].append((i, ins, raw))
        fifo = {(c, a, b): deque() for c in range(P) for a in Unit for b in Unit if a != b}
        hz = HazardChecker(self.cfg) if self.check_hazards else None
        counters = Counters()
        depth = self.cfg.token_fifo_depth
        at_barrier: dict[int, int] = {}  # core -> barrier id its SYS unit is waiting at

        def ready(core: int, u: Unit, ins: Instruction) -> bool:
            waits, rels = _token_units(ins.wait, ins.release)
            return all(fifo[(core, v, u)] for v in waits) and all(len(fifo[(core, u, v)]) < depth for v in rels)

        def start(core: int, u: Unit, ins: Instruction) -> None:
            for v in _token_units(ins.wait, ins.release)[0]:
                token = fifo[(core, v, u)].popleft()
                if hz:
                    hz.merge(core * NUNITS + u, token)

        def finish(core: int, u: Unit, ins: Instruction) -> None:
            for v in _token_units(ins.wait, ins.release)[1]:
                fifo[(core, u, v)].append(hz.snapshot(core * NUNITS + u) if hz else None)
            queues[(core, u)].popleft()
            counters.instructions[ins.cls.name] = counters.instructions.get(ins.cls.name, 0) + 1

        while any(queues.values()):
            progressed = False
            for core in range(P):
                for u in Unit:
                    q = queues[(core, u)]
                    while q:
                        i, ins, raw = q[0]
                        if ins.opcode is Opcode.SYS and ins.op == SysOp.BARRIER:
                            if core not in at_barrier and ready(core, u, ins):
                                start(core, u, ins)
                                at_barrier[core] = ins.arg
                                progressed = True
                            break
                        if not ready(core, u, ins):
                            break
                        start(core, u, ins)
                        where = f"core {core} instruction {i} ({ins.cls.name})"
                        if hz:
                            reads, writes = _footprint(raw, self.cfg)
                            if ins.opcode is Opcode.LD and ins.gather:
                                reads = reads + tuple(gather_rows(ins, self._ids(ins)))
                            hz.access(core * NUNITS + u, where, reads, writes)
                        try:
                            self._execute(core, ins, counters, raw)
                        except ProgramError as e:  # the same kind of error, saying where
                            raise type(e)(f"{where}: {e}") from None
                        finish(core, u, ins)
                        progressed = True
            if len(at_barrier) == P:
                if len(set(at_barrier.values())) != 1:
                    raise ProgramError(f"cores meet at different barriers: {at_barrier}")
                if hz:
                    hz.barrier([c * NUNITS + Unit.SYS for c in range(P)])
                for c in range(P):
                    finish(c, Unit.SYS, queues[(c, Unit.SYS)][0][1])
                at_barrier.clear()
                progressed = True
            if not progressed:
                stuck = []
                for (core, u), q in queues.items():
                    if q:
                        i, ins, _ = q[0]
                        need = [v.name for v in Unit if ins.wait >> int(v) & 1 and not fifo[(core, v, u)]]
                        full = [v.name for v in Unit if ins.release >> int(v) & 1 and len(fifo[(core, u, v)]) >= depth]
                        what = "is at a barrier" if core in at_barrier and u is Unit.SYS else (
                            f"waits for tokens from {need or '-'}, release FIFOs full to {full or '-'}")
                        stuck.append(f"core {core} {u.name} at instruction {i} ({ins.cls.name}) {what}")
                raise ProgramError("deadlock: " + "; ".join(stuck))
        left = {f"core{c}.{a.name}->{b.name}": len(q) for (c, a, b), q in fifo.items() if q}
        if left:
            raise ProgramError(f"unbalanced tokens: released but never waited for: {left}")
        return counters

    def _execute(self, core: int, ins: Instruction, c: Counters, raw: bytes | None = None) -> None:
        """Run one instruction; ``raw``, its bytes, lets the checks that depend on its fields alone be cached."""
        self.buf = self.cores[core]
        op = ins.opcode
        if op in (Opcode.MM, Opcode.MV, Opcode.MISC):
            if raw is None:
                _check_operands(ins, self.cfg)
            else:
                _operands_checked(raw, self.cfg)
        if op is Opcode.LD:
            self._load(ins, c)
        elif op is Opcode.ST:
            width = ins.row_bytes * (2 if ins.pack4 else 1)
            data = self._get(Buffer(ins.buf), Access(("buf", ins.buf), ins.buf_addr, ins.rows, width,
                                                     ins.buf_stride), np.uint8)
            if ins.pack4:
                data = nm.pack_int4(data.view(np.int8))
            data = data.reshape(ins.rows, ins.row_bytes)
            if ins.img and ins.img_col:  # each row where its image row lies
                runs = [(ch, a, 1, 0, data[r:r + 1]) for r, (ch, a) in enumerate(store_rows(self.cfg, ins))]
            else:
                channel, addr = store_target(self.cfg, ins)
                runs = [(channel, addr, ins.rows, ins.hbm_stride, data)]
            for channel, addr, rows, stride, part in runs:
                ix = self._hbm_rows(channel, addr, rows, ins.row_bytes, stride)
                self.hbm[channel][ix] = part.ravel()
                if ix.size:
                    self.tiles.written(channel, int(ix.min()), int(ix.max()) + 1)
                c.hbm_written[channel] = c.hbm_written.get(channel, 0) + ix.size
        elif op in (Opcode.MM, Opcode.MV):
            self._mpe(ins, c)
        elif op is Opcode.MISC:
            self._misc(ins, c)

    def _ids(self, ins: Instruction) -> list[int]:
        ids_ix = self._hbm_rows(0, ins.ids_addr, 1, 4 * ins.rows, 0)
        return self.hbm[0][ids_ix].view("<i4").astype(np.int64).tolist()

    def _load(self, ins: Instruction, c: Counters) -> None:
        if striped(ins):
            self._load_striped(ins, c)
            return
        if ins.gather:
            ids = self._ids(ins)
            c.hbm_read[0] = c.hbm_read.get(0, 0) + 4 * ins.rows
            rows = []
            for t in ids:
                ch, addr = gather_channel(ins, int(t))
                rows.append(self.hbm[ch][self._hbm_rows(ch, addr, 1, ins.row_bytes, 0)])
                c.hbm_read[ch] = c.hbm_read.get(ch, 0) + ins.row_bytes
            self._put(Buffer(ins.buf), Access(("buf", ins.buf), ins.buf_addr, ins.rows, ins.row_bytes,
                                              ins.buf_stride), np.concatenate(rows) if rows else np.zeros(0, np.uint8))
            return
        ix = self._hbm_rows(ins.channel, ins.hbm_addr, ins.rows, ins.row_bytes, ins.hbm_stride)
        data = self.hbm[ins.channel][ix]
        self._put(Buffer(ins.buf), Access(("buf", ins.buf), ins.buf_addr, ins.rows, ins.row_bytes, ins.buf_stride),
                  data)
        c.hbm_read[ins.channel] = c.hbm_read.get(ins.channel, 0) + ix.size

    def _read_striped(self, channel: int, hbm_addr: int, nbytes: int, stripe: int, unit: int,
                      c: Counters) -> np.ndarray:
        """``nbytes`` striped over ``stripe`` channels from ``channel``, ``unit`` bytes at a time
        (flightc.isa.footprint.stripe_layout), in order: each channel's share is one run of its memory, and the
        shares interleave a unit at a time."""
        units = -(-nbytes // unit)
        rounds = -(-units // stripe)
        tiles = np.zeros((rounds, stripe, unit), np.uint8)
        for ch, base, n in stripe_layout(channel, hbm_addr, nbytes, stripe, unit):
            self._check_range(ch, base, n)
            share = np.zeros(rounds * unit, np.uint8)
            share[:n] = self.hbm[ch][base:base + n]
            tiles[:, ch - channel] = share.reshape(rounds, unit)
            c.hbm_read[ch] = c.hbm_read.get(ch, 0) + n
        return tiles.reshape(-1)[:nbytes]

    def _load_striped(self, ins: Instruction, c: Counters) -> None:
        if ins.rows != 1:
            raise ProgramError(f"a striped LD (stripe {ins.stripe}) moves one row, not {ins.rows}")
        if ins.channel + ins.stripe > self.cfg.mem_channels:
            raise ProgramError(f"LD striped over channels {ins.channel}..{ins.channel + ins.stripe - 1}: the config "
                               f"has {self.cfg.mem_channels}")
        data = self._read_striped(ins.channel, ins.hbm_addr, ins.row_bytes, ins.stripe, 1 << ins.stripe_log2, c)
        self._put(Buffer(ins.buf), Access(("buf", ins.buf), ins.buf_addr, 1, ins.row_bytes, ins.buf_stride), data)

    def _stream_rows(self, ins: Instruction, c: Counters) -> np.ndarray:
        """A streamed MV's packed rows, read from its tile's stream image (flightc.compress.stream)."""
        shape = stream_shape(self.cfg, ins)
        image = self._read_striped(ins.w_channel, ins.w_hbm_addr, shape.nbytes, ins.w_stripe, shape.unit, c)
        packed = rows_of_image(image.tobytes(), shape)
        if weight_format(ins).sparse:
            self._check_positions(packed, weight_format(ins), ins.k)
        return packed

    def _streamed_operand(self, ins: Instruction, c: Counters) -> np.ndarray:
        """A streamed MV's INT8 operand rows [n, stream K]: read and dequantized once, then taken from
        :class:`DecodedTiles` until a store or the host writes over the tile's bytes."""
        shape = stream_shape(self.cfg, ins)
        key = (ins.w_channel, ins.w_hbm_addr, ins.w_stripe, shape)
        spans, w = self.tiles.get(key)
        if w is None:
            w = unpack_rows(self._stream_rows(ins, Counters()), weight_format(ins), stream_k(self.cfg, ins))
            w = w.astype(np.int8)
            spans = stripe_layout(ins.w_channel, ins.w_hbm_addr, shape.nbytes, ins.w_stripe, shape.unit)
            self.tiles.put(key, spans, w)
        for ch, _, n in spans:
            c.hbm_read[ch] = c.hbm_read.get(ch, 0) + n
        return w

    def _check_positions(self, packed: np.ndarray, fmt, k: int) -> None:
        n = packed.shape[0]
        bad = np.argwhere(np.diff(sparse_positions(packed, fmt, k).reshape(n, k // fmt.m, fmt.n), axis=-1) <= 0)
        if bad.size:
            raise ProgramError(f"weight row {bad[0][0]}, block {bad[0][1]}: sparse positions must be "
                               f"distinct and ascending within a block of {fmt.m}")

    def _mpe(self, ins: Instruction, c: Counters) -> None:
        check_max_fields(ins)
        m, a_stride, out_stride = mpe_shape(ins)
        n, k = ins.n, ins.k
        a = self._get(Buffer.ACT, Access(("buf", Buffer.ACT), ins.a_addr, m, k, a_stride),
                      np.uint8 if ins.a_unsigned else np.int8)
        wb = Buffer(ins.w_buf)
        fmt = weight_format(ins)
        if streamed(ins):
            w = self._streamed_operand(ins, c)[:, :k]  # past K: zero acts
        elif ins.w_kmajor:
            if fmt.bits not in (8, 4) or fmt.sparse or fmt.group:
                raise ProgramError("K-major weight operands must be dense 8-bit or dense 4-bit")
            rows = self._get(wb, Access(("buf", wb), ins.w_addr, k, kmajor_row_bytes(ins), ins.w_stride), np.uint8)
            w = (rows.view(np.int8) if fmt.bits == 8 else nm.unpack_int4(rows, n)).T
        else:
            packed = self._get(wb, Access(("buf", wb), ins.w_addr, n, fmt.row_bytes(k), ins.w_stride), np.uint8)
            if fmt.sparse:
                self._check_positions(packed, fmt, k)
            w = unpack_rows(packed, fmt, k)
        acc = int8_products(a, w)  # [m, n]
        limit = 1 << (self.cfg.acc_bits - 1)
        if acc.size and (acc.max() >= limit or acc.min() < -limit):
            raise ProgramError(f"accumulator overflow: |acc| reaches {int(np.abs(acc).max())}, beyond the "
                               f"{self.cfg.acc_bits}-bit accumulators")
        c.macs += mpe_macs(ins)
        mode = OutMode(ins.out_mode)
        out_buf = out_buffer(mode)
        out = Access(("buf", out_buf), ins.out_addr, m, n * (1 if mode is OutMode.REQ_I8 else 4), out_stride)
        if mode is OutMode.ACC32:
            self._put(out_buf, out, acc.astype("<i4"))
            if ins.opcode is Opcode.MV and ins.out_max:
                self._put(out_buf, Access(("buf", out_buf), ins.out_addr + 4 * n, 1, 4, 0),
                          acc.max(axis=1, keepdims=True).astype("<i4"))
            return
        rec = self._get(Buffer.PRM, Access(("buf", Buffer.PRM), ins.scale_addr, 1, nm.REQUANT_RECORD_BYTES * n, 0),
                        np.uint8)
        mult, shift, bias = nm.unpack_requant(rec, n)
        acc = acc + bias
        if mode is OutMode.REQ_I8:
            lut = None
            if ins.lut:
                lut = self._get(Buffer.PRM, Access(("buf", Buffer.PRM), ins.lut_addr, 1, nm.LUT_ENTRIES, 0),
                                np.int8)[0]
            self._put(out_buf, out, nm.mpe_requant_i8(acc, mult, shift, lut))
        elif mode is OutMode.REQ_I32:
            self._put(out_buf, out, nm.sat_i32(nm.requantize(acc, mult, shift)).astype("<i4"))
        else:
            res = self._get(out_buf, out, "<i4")
            self._put(out_buf, out, nm.residual_add(res, acc, mult, shift).astype("<i4"))

    def _check_given_max(self, ins: Instruction, x: np.ndarray) -> None:
        """SOFTMAX.max_given: the INT32 past each row is the row's visible maximum (the hardware uses it as is)."""
        sb = Buffer(ins.src_buf)
        given = self._get(sb, Access(("buf", sb), ins.src_addr + 4 * ins.cols, ins.rows, 4, ins.src_stride),
                          "<i4")[:, 0].astype(np.int64)
        want = nm.softmax_row_max(x, ins.offset, ins.window)
        bad = np.flatnonzero(given != want)
        if bad.size:
            r = int(bad[0])
            raise ProgramError(f"SOFTMAX.max_given: row {r}'s given maximum {int(given[r])} (at src + 4 cols) is not "
                               f"the maximum {int(want[r])} of its visible scores; write it with the scores' MV.out_max "
                               f"over the same columns, or drop max_given")

    def _misc(self, ins: Instruction, c: Counters) -> None:
        check_max_fields(ins)
        mop = MiscOp(ins.op)
        rows, cols = ins.rows, ins.cols
        sb, db = Buffer(ins.src_buf), Buffer(ins.dst_buf)
        esize = MISC_SRC_BYTES.get(mop, 1)
        src_elem = "<i4" if esize == 4 else np.int8
        x = self._get(sb, Access(("buf", sb), ins.src_addr, rows, cols * esize, ins.src_stride), src_elem)
        x = x.astype(np.int64)
        dst = Access(("buf", db), ins.dst_addr, rows, cols * MISC_DST_BYTES.get(mop, 1), ins.dst_stride)
        c.sfu_elements += rows * cols
        if mop in (MiscOp.RMSNORM, MiscOp.LAYERNORM):
            prm = self._get(Buffer.PRM, Access(("buf", Buffer.PRM), ins.prm_addr, 1, norm_param_bytes(mop, cols), 0),
                            np.uint8)[0]
            eps_q, gain, bias = NORM.unpack(prm, cols, mop is MiscOp.LAYERNORM)
            if ins.shift > nm.NORM_SHIFT_MAX:
                raise ProgramError(f"{mop.name}'s shift {ins.shift} exceeds {nm.NORM_SHIFT_MAX}, the most the ISA allows "
                                   f"(the divisor rms << shift must stay below 2^{nm.NORM_DEN_BITS}); fold the rest "
                                   f"into the gains")
            if mop is MiscOp.RMSNORM:
                y = nm.rmsnorm(x, gain, eps_q, ins.shift)
            else:
                y = nm.layernorm(x, gain, bias, eps_q, ins.shift)
        elif mop is MiscOp.ROPE:
            d = ins.imm
            if d <= 0 or d % 2 or cols % d:
                raise ProgramError(f"ROPE head size {d} must be even and divide cols {cols}")
            row = ROPE.row_bytes(d)
            tab = self._get(Buffer.PRM, Access(("buf", Buffer.PRM), ins.prm_addr, rows, row, row), np.uint8)
            y = nm.rope(x, *ROPE.unpack(tab, rows, d), d)
        elif mop is MiscOp.SOFTMAX:
            try:
                y = nm.softmax(x, ins.imm, ins.shift, ins.offset, ins.window)
            except ValueError as e:
                raise ProgramError(str(e)) from None
            if ins.max_given:
                self._check_given_max(ins, x)
        elif mop is MiscOp.EMUL:
            x2 = self._get(sb, Access(("buf", sb), ins.src2_addr, rows, cols, ins.src_stride), np.int8)
            y = nm.emul(x, x2, ins.imm, ins.shift)
        elif mop is MiscOp.DEQ:
            y = nm.deq(x, ins.imm, ins.shift).astype("<i4")
        elif mop is MiscOp.REQ:
            y = nm.mpe_requant_i8(x, ins.imm, ins.shift, None)
        elif mop is MiscOp.DEQ_ADD:
            res = self._get(db, dst, "<i4")
            y = nm.deq_add(res, x, ins.imm, ins.shift).astype("<i4")
        else:  # pragma: no cover
            raise ProgramError(f"unknown MISC op {mop}")
        self._put(db, dst, y)
