"""Functional simulator: executes a bundle's instruction bytes bit-exactly.

Instructions are decoded through the ISA table and dispatched in program order to per-unit
queues. A unit may start its next instruction once every token it waits for is in its FIFO and
every FIFO it releases into has room; the simulator runs whichever unit can go, round robin,
so only the tokens order the units. It refuses a program that deadlocks, leaves tokens behind,
or touches a byte before a token chain orders it after the conflicting access (sim.hazards).
"""
from __future__ import annotations

import logging
import time
import weakref
from bisect import bisect_left, insort
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from flightc import numerics as nm
from flightc.bundle import Bundle
from flightc.compress.packing import unpack_rows
from flightc.compress.stream import rows_of_image
from flightc.compress.formats import WeightFormat
from flightc.config import Buffer, HardwareConfig
from flightc.errors import EncodingError, MemoryRangeError, ProgramError
from flightc.isa.codec import Instruction, decode, encode, instruction_bytes, iter_program
from flightc.isa.footprint import (MISC_DST_BYTES, MISC_SRC_BYTES, Access, byte_selector, check_max_fields, footprint,
                                   gather_channel, gather_rows, kmajor_row_bytes, mpe_macs, mpe_shape, partial_sums,
                                   norm_param_bytes, out_buffer, store_rows, store_target, stream_k, stream_shape,
                                   stream_spans, streamed, stripe_layout, stripe_spans, striped, weight_format)
from flightc.isa.table import OPCODE_BITS, MiscOp, Opcode, OutMode, SoftmaxPart, Unit
from flightc.records import NORM, ROPE, SOFTMAX_STATS
from flightc.runtime.counters import Counters
from flightc.sim import kernels
from flightc.sim.hazards import HazardChecker, check_early_tiles
from flightc.sim.static_check import TokenPlan, build_plan, check_against_plan
from flightc.sim.tokens import run_in_token_order, token_skeleton


NUNITS = len(Unit)
log = logging.getLogger(__name__)


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


@lru_cache(maxsize=512)
def _class_counts_of(programs: tuple[bytes, ...]) -> tuple[tuple[str, int], ...]:
    counts: dict[str, int] = {}
    for program in programs:
        for ins, _ in _decoded_words(program):
            counts[ins.cls.name] = counts.get(ins.cls.name, 0) + 1
    return tuple(counts.items())


def _class_counts(programs: tuple[bytes, ...]) -> dict[str, int]:
    """Instructions per class of one stream per core."""
    return dict(_class_counts_of(programs))


def _decoded(program: bytes) -> tuple[Instruction, ...]:
    return tuple(ins for ins, _ in _decoded_words(program))


@lru_cache(maxsize=1 << 16)
def _footprint(raw: bytes, cfg: HardwareConfig) -> tuple[tuple[Access, ...], tuple[Access, ...]]:
    """:func:`flightc.isa.footprint.footprint` once per distinct instruction."""
    reads, writes = footprint(_decode_one(raw), cfg)
    return tuple(reads), tuple(writes)


@lru_cache(maxsize=1 << 16)
def _operands_checked(raw: bytes, cfg: HardwareConfig) -> None:
    """:func:`_check_operands` once per distinct instruction (it depends on the fields alone)."""
    _check_operands(_decode_one(raw), cfg)


_MISSING = object()
FLOAT_TILE_BYTES = 256 << 20  # streamed tiles kept as float32 too (a small model's all; a 7B model's few)
STRIPED_CACHE_BYTES = 64 << 20  # striped LDs' bytes kept until a write touches them (a layer's records every step)
CHUNK = 512  # K a float32 product of INT8 operands sums exactly: 512 x 255 x 128 < 2^24


@dataclass(frozen=True)
class _MpeForm:
    """What an MM/MV reads and writes, as its fields alone decide: worked out once per distinct instruction."""

    m: int
    n: int
    k: int
    a: Access
    a_dtype: type
    fmt: WeightFormat
    streamed: bool
    kmajor: bool
    w_buf: Buffer
    w: Access | None  # buffered weights (None when streamed)
    mode: OutMode
    out_buf: Buffer
    out: Access
    out_max: Access | None  # MV.out_max: the largest raw sum, just past the row
    rec: Access | None  # requantization records
    lut: Access | None
    macs: int
    part: Access | None  # acc_in's INT32 partial sums (ISA 1.11)


@lru_cache(maxsize=1 << 16)
def _mpe_form(raw: bytes) -> _MpeForm:
    ins = _decode_one(raw)
    check_max_fields(ins)
    m, a_stride, out_stride = mpe_shape(ins)
    n, k = ins.n, ins.k
    fmt = weight_format(ins)
    wb = Buffer(ins.w_buf)
    is_streamed = streamed(ins)
    w = None
    if not is_streamed and ins.w_kmajor:
        if fmt.bits not in (8, 4) or fmt.sparse or fmt.group:
            raise ProgramError("K-major weight operands must be dense 8-bit or dense 4-bit")
        w = Access(("buf", wb), ins.w_addr, k, kmajor_row_bytes(ins), ins.w_stride)
    elif not is_streamed:
        for size, what in ((fmt.m if fmt.sparse else 1, "sparsity block"), (fmt.group or 1, "quantization group")):
            if k % size:
                raise ProgramError(f"K = {k} is not a multiple of the {size}-column {what} of its weights "
                                   f"({fmt.label()}): the packed rows cannot be read")
        w = Access(("buf", wb), ins.w_addr, n, fmt.row_bytes(k), ins.w_stride)
    mode = OutMode(ins.out_mode)
    out_buf = out_buffer(mode)
    out = Access(("buf", out_buf), ins.out_addr, m, n * (1 if mode is OutMode.REQ_I8 else 4), out_stride)
    acc_only = mode is OutMode.ACC32
    return _MpeForm(
        m, n, k, Access(("buf", Buffer.ACT), ins.a_addr, m, k, a_stride), np.uint8 if ins.a_unsigned else np.int8,
        fmt, is_streamed, bool(not is_streamed and ins.w_kmajor), wb, w, mode, out_buf, out,
        Access(("buf", out_buf), ins.out_addr + 4 * n, 1, 4, 0) if acc_only and ins.opcode is Opcode.MV and ins.out_max
        else None,
        None if acc_only else Access(("buf", Buffer.PRM), ins.scale_addr, 1, nm.REQUANT_RECORD_BYTES * n, 0),
        Access(("buf", Buffer.PRM), ins.lut_addr, 1, nm.LUT_ENTRIES, 0) if mode is OutMode.REQ_I8 and ins.lut
        else None,
        mpe_macs(ins), partial_sums(ins) if ins.acc_in else None)


@lru_cache(maxsize=4096)
def _requant_records(records: bytes, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`flightc.numerics.unpack_requant` once per distinct record bytes (read-only: a layer's records are
    loaded again on every step)."""
    out = nm.unpack_requant(np.frombuffer(records, np.uint8), n)
    for a in out:
        a.setflags(write=False)
    return out


@lru_cache(maxsize=4096)
def _norm_params(record: bytes, cols: int, layernorm: bool) -> tuple:
    """A norm's parameter record (flightc.records.NORM) once per distinct bytes (read-only arrays)."""
    eps_q, gain, bias = NORM.unpack(record, cols, layernorm)
    for a in (gain, bias):
        if a is not None:
            a.setflags(write=False)
    return eps_q, gain, bias


def _nothing(c: Counters) -> None:
    """A SYS instruction on the fast path: the tokens it carries are the plan's."""


@lru_cache(maxsize=1 << 16)
def _stream_key(raw: bytes, cfg: HardwareConfig):
    """A streamed MV's tile: where it lies and its shape (the key of :class:`DecodedTiles`), and the shape."""
    ins = _decode_one(raw)
    shape = stream_shape(cfg, ins)
    return (ins.w_channel, ins.w_hbm_addr, ins.w_stripe, shape), shape


@lru_cache(maxsize=1 << 16)
def _misc_form(raw: bytes) -> tuple:
    """A MISC's op, rows and columns, source and destination buffers, the rows it reads (with their element type)
    and writes, and a norm's parameter record (checked once per distinct instruction: its fields decide these)."""
    ins = _decode_one(raw)
    check_max_fields(ins)
    mop = MiscOp(ins.op)
    rows, cols = ins.rows, ins.cols
    sb, db = Buffer(ins.src_buf), Buffer(ins.dst_buf)
    esize = MISC_SRC_BYTES.get(mop, 1)
    src = Access(("buf", sb), ins.src_addr, rows, cols * esize, ins.src_stride)
    dst = Access(("buf", db), ins.dst_addr, rows, cols * MISC_DST_BYTES.get(mop, 1), ins.dst_stride)
    prm = (Access(("buf", Buffer.PRM), ins.prm_addr, 1, norm_param_bytes(mop, cols), 0)
           if mop in (MiscOp.RMSNORM, MiscOp.LAYERNORM) else None)
    return mop, rows, cols, sb, db, src, "<i4" if esize == 4 else np.int8, dst, prm


@lru_cache(maxsize=1 << 16)
def _ld_form(raw: bytes) -> tuple:
    """A plain LD's channel, first address, span and bytes moved, the selector of its memory rows, its buffer and
    first address there, and the selector of the buffer rows it fills with the end of their span."""
    ins = _decode_one(raw)
    src, end = byte_selector(ins.hbm_addr, ins.rows, ins.row_bytes, ins.hbm_stride)
    dst, dst_end = byte_selector(ins.buf_addr, ins.rows, ins.row_bytes, ins.buf_stride)
    return (ins.channel, ins.hbm_addr, max(end - ins.hbm_addr, 0), ins.rows * ins.row_bytes, src, Buffer(ins.buf),
            ins.buf_addr, dst, dst_end)


@lru_cache(maxsize=1 << 16)
def _st_form(raw: bytes, cfg: HardwareConfig) -> tuple[Access, bool, int, int, tuple]:
    """An ST's buffer rows, whether it packs INT4, its rows and row bytes, and where they go: (row, channel,
    address, rows, stride) runs, one of all the rows (row None), or an ST.img column's one a row, each where its
    image row lies."""
    ins = _decode_one(raw)
    width = ins.row_bytes * (2 if ins.pack4 else 1)
    onchip = Access(("buf", ins.buf), ins.buf_addr, ins.rows, width, ins.buf_stride)
    if ins.img and ins.img_col:
        targets = tuple((r, ch, a, 1, 0) for r, (ch, a) in enumerate(store_rows(cfg, ins)))
    else:
        channel, addr = store_target(cfg, ins)
        targets = ((None, channel, addr, ins.rows, ins.hbm_stride),)
    return onchip, bool(ins.pack4), ins.rows, ins.row_bytes, targets


_PLANS: dict[tuple, TokenPlan] = {}  # (config, checked, token structure) -> its plan, shared by machines
_CHECKED: dict[tuple, None] = {}  # (config, programs) checked once (their gathers' rows are checked every run)

_BLAS: list = []  # threadpoolctl's controller of the BLAS numpy loaded, made on first use


def _one_blas_thread():
    """A context in which BLAS runs on one thread: the simulator's products are many and small, and BLAS's
    threads, which gain little on them, stall them several-fold whenever another process wants the cores."""
    if not _BLAS:
        from threadpoolctl import ThreadpoolController

        _BLAS.append(ThreadpoolController())
    return _BLAS[0].limit(limits=1, user_api="blas")


def int8_products(a: np.ndarray, w: np.ndarray | None, w32: np.ndarray | None = None,
                  float_sums: bool = False) -> np.ndarray:
    """``a @ w.T`` exactly, as int64, for 8-bit activations ``a`` [m, k] (signed or unsigned) and weights ``w``
    [n, k]: float32 products over K in chunks of :data:`CHUNK`, so that BLAS does the work and every partial sum,
    an integer below 2^24 in magnitude whatever order BLAS adds in, is exact; the chunks' sums are added in int64.
    ``w32``, if given, is INT8 weights as float32 already (a kept tile's; ``w`` may then be None). Other operands
    take the int64 product. ``float_sums``: where one float32 product covers K, its float32 result as it is (every
    value an integer, exactly: what sim.kernels.mpe_output takes without a conversion pass)."""
    if a.dtype not in (np.int8, np.uint8) or (w32 is None and w.dtype != np.int8):
        return a.astype(np.int64) @ w.astype(np.int64).T
    k = a.shape[1]
    if w32 is None:
        w32 = w.astype(np.float32)
    a32 = a.astype(np.float32)
    if k <= CHUNK:
        return a32 @ w32.T if float_sums else (a32 @ w32.T).astype(np.int64)
    acc = np.zeros((a.shape[0], w32.shape[0]), np.int64)
    for c in range(0, k, CHUNK):
        acc += (a32[:, c:c + CHUNK] @ w32[:, c:c + CHUNK].T).astype(np.int64)
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


IDLE_BYTES = 1 << 30  # the largest machine kept idle for the next session on its bundle (Machine.release)
RESTORE_GAP = 4096  # bytes between two runs a restore writes back as one (Machine._restore)
_IDLE: dict[tuple, "Machine"] = {}  # (bundle id, options) -> the machine a closed session left


class Machine:
    """The cores with their on-chip buffers and the shared memory channels, loaded from a bundle."""

    def __init__(self, cfg: HardwareConfig, extent: dict[int, int], check_hazards: bool = True,
                 tile_cache_bytes: int = 1 << 30, slow_path: bool = False):
        self.cfg = cfg
        self.hbm = {ch: np.zeros(max(n, 1), np.uint8) for ch, n in extent.items()}
        self.cores = [{b: np.zeros(cfg.buffer_bytes(b), np.uint8) for b in Buffer} for _ in range(cfg.num_cores)]
        self.buf = self.cores[0]
        self.check_hazards = check_hazards
        self.tiles = DecodedTiles(tile_cache_bytes)
        self.tiles32 = DecodedTiles(min(tile_cache_bytes, FLOAT_TILE_BYTES))  # the same tiles as float32
        self.striped = DecodedTiles(STRIPED_CACHE_BYTES)  # striped LDs' bytes (records, tables), by where they lie
        self.slow_path = slow_path
        self.plans: dict[tuple, TokenPlan] = {}  # token structure -> its checked order (sim.static_check)
        self.check_s = 0.0  # seconds spent on hazard checks by the fast path
        self._forms: dict = {}  # (form, instruction bytes) -> what the form says of them (Machine._form)
        self._kept_reads = np.zeros(cfg.mem_channels, np.int64)  # bytes per channel of kept reads, this run
        self._kept_of: dict = {}  # (cache, key) -> a kept read's bytes per channel
        self._ops: dict = {}  # (core, instruction bytes) -> the instruction bound to this machine (Machine._bound)

    def __getstate__(self) -> dict:
        """A copy (copy.deepcopy) binds its instructions to its own buffers, and is nobody's idle machine."""
        state = dict(self.__dict__)
        state["_ops"] = {}
        for name in ("_bundle", "_pool_key"):
            state.pop(name, None)
        return state

    @property
    def math(self):
        """The datapath's arithmetic: numerics on the slow path (the definition), its compiled form (sim.kernels)
        on the fast one."""
        return kernels.DEFINITION if self.slow_path else kernels

    @classmethod
    def from_bundle(cls, bundle: Bundle, check_hazards: bool = True, tile_cache_bytes: int = 1 << 30,
                    slow_path: bool = False) -> "Machine":
        """A machine holding ``bundle``'s images: the one a closed session on the same bundle left (see
        :meth:`release`), with its memory put back as the images have it, or a new one."""
        extent = {int(k): v for k, v in bundle.manifest.memory_map["extent"].items()}
        key = (id(bundle), check_hazards, tile_cache_bytes, slow_path)
        m = _IDLE.pop(key, None)
        if m is not None and m._bundle() is bundle and m.cfg == bundle.config and m._extent == extent:
            m._restore(bundle)
            return m
        m = cls(bundle.config, extent, check_hazards, tile_cache_bytes, slow_path)
        for ch, image in bundle.images.items():
            m.write_hbm(ch, 0, image)
        m._bundle, m._extent, m._pool_key = weakref.ref(bundle), extent, key
        return m

    def release(self) -> None:
        """Done with: kept for the next :meth:`from_bundle` of the same bundle and options, which finds the
        weights it dequantized still decoded (an evaluation opens a session for each problem). The idle machines
        hold at most :data:`IDLE_BYTES` in all; the longest idle goes first."""
        key = getattr(self, "_pool_key", None)
        if key is None or self.nbytes() > IDLE_BYTES:
            return
        _IDLE.pop(key, None)
        _IDLE[key] = self
        while sum(m.nbytes() for m in _IDLE.values()) > IDLE_BYTES:
            _IDLE.pop(next(iter(_IDLE)))

    def nbytes(self) -> int:
        """Bytes of memory, buffers and kept tiles this machine holds."""
        return (sum(m.size for m in self.hbm.values()) + sum(b.size for core in self.cores for b in core.values())
                + self.tiles.size + self.tiles32.size + self.striped.size)

    def _restore(self, bundle: Bundle) -> None:
        """Memory as ``bundle`` loads it (only what differs is written back, so what was kept of the rest stays),
        buffers zeroed, counts cleared."""
        for ch, mem in self.hbm.items():
            image = np.frombuffer(bundle.images.get(ch, b""), np.uint8)
            want = np.zeros(mem.size, np.uint8)
            want[:image.size] = image
            differ = np.flatnonzero(mem != want)
            if not differ.size:
                continue
            cuts = np.flatnonzero(np.diff(differ) > RESTORE_GAP) + 1  # runs of differing bytes, near ones joined
            for run in np.split(differ, cuts):
                lo, hi = int(run[0]), int(run[-1]) + 1
                mem[lo:hi] = want[lo:hi]
                self._written(ch, lo, hi)
        for core in self.cores:
            for b in core.values():
                b.fill(0)
        self.buf = self.cores[0]
        self.check_s = 0.0
        self._kept_reads[:] = 0

    # ----- host access -----
    def write_hbm(self, channel: int, addr: int, data: bytes) -> None:
        self.hbm[channel][addr:addr + len(data)] = np.frombuffer(data, np.uint8)
        self._written(channel, addr, addr + len(data))

    def _written(self, channel: int, lo: int, hi: int) -> None:
        """Bytes [lo, hi) of a channel were written: what was read from them and kept is dropped."""
        self.tiles.written(channel, lo, hi)
        self.tiles32.written(channel, lo, hi)
        self.striped.written(channel, lo, hi)

    def read_hbm(self, channel: int, addr: int, nbytes: int) -> bytes:
        return self.hbm[channel][addr:addr + nbytes].tobytes()

    # ----- typed views -----
    def _get(self, b: Buffer, a: Access, dtype) -> np.ndarray:
        """The bytes of ``a`` as rows of ``dtype`` (a copy: later writes to the buffer do not show in it)."""
        mem = self.buf[b]
        sel, end = byte_selector(a.addr, a.rows, a.width, a.stride)
        if end > mem.size:
            raise ProgramError(f"{b.name} read [{a.lo}, {a.hi}) beyond the buffer ({mem.size} bytes)")
        if not a.rows:  # nothing to read (reshape cannot infer a row length from no bytes)
            return np.zeros((0, a.width // np.dtype(dtype).itemsize), dtype)
        data = mem[sel]
        if type(sel) is slice:  # a view: copied, as an index array's gather is
            data = data.copy()
        return data.view(dtype).reshape(a.rows, -1)

    def _put(self, b: Buffer, a: Access, values: np.ndarray) -> None:
        mem = self.buf[b]
        sel, end = byte_selector(a.addr, a.rows, a.width, a.stride)
        if end > mem.size:
            raise ProgramError(f"{b.name} write [{a.lo}, {a.hi}) beyond the buffer ({mem.size} bytes)")
        mem[sel] = np.ascontiguousarray(values).view(np.uint8).ravel()

    def _hbm_rows(self, ch: int, addr: int, rows: int, width: int, stride: int) -> slice | np.ndarray:
        """The bytes of ``rows`` runs of memory channel ``ch`` (a slice where they are one run), range-checked."""
        sel, end = byte_selector(addr, rows, width, stride)
        self._check_range(ch, addr, end - addr if end > addr else 0)
        return sel

    def _check_range(self, ch: int, addr: int, nbytes: int) -> None:
        if ch not in self.hbm:
            raise ProgramError(f"memory channel {ch} does not exist (the config has {len(self.hbm)})")
        if nbytes and addr < 0:
            raise MemoryRangeError(f"channel {ch} access at {addr}, before the channel's first byte")
        if nbytes and addr + nbytes > self.hbm[ch].size:
            raise MemoryRangeError(f"channel {ch} access [{addr}, {addr + nbytes}) beyond the used extent "
                                   f"({self.hbm[ch].size})")

    # ----- execution -----
    def run(self, programs: bytes | list[bytes]) -> Counters:
        """Run one instruction stream per core (a single stream for a one-core machine).

        The fast path (the default) runs each token structure's order, found and hazard-checked once
        (sim.static_check), with no per-instruction bookkeeping; the slow path schedules and checks every
        instruction as it runs. Both execute the same instructions in the same order."""
        if isinstance(programs, (bytes, bytearray)):
            programs = [programs]
        self._kept_reads[:] = 0  # what a run that failed left
        with _one_blas_thread():
            return self._run(programs)

    def _run(self, programs: list[bytes]) -> Counters:
        programs = [bytes(p) for p in programs]
        streams = [_decoded_words(p) for p in programs]
        if self.slow_path:
            return self._run_slow(streams)
        if len(streams) != self.cfg.num_cores:  # the token order refuses it, saying so
            return self._run_slow(streams)
        skeleton = token_skeleton(streams)
        plan = self.plans.get(skeleton)
        fresh = False
        if plan is None:
            key = (self.cfg, self.check_hazards, skeleton)
            plan = _PLANS.get(key)  # another machine's, for the same tokens
            if plan is None:
                plan = build_plan(streams, self.cfg, self.check_hazards, self._footprint_of, self._ids)
                if len(_PLANS) >= 64:
                    _PLANS.pop(next(iter(_PLANS)))
                _PLANS[key] = plan
                self.check_s += plan.check_s
                fresh = True  # checked as it was planned
                if plan.ids_written:
                    log.info("a gather's token ids are written by the program itself: it runs on the slow path, "
                             "checked as it goes")
            self.plans[skeleton] = plan
        checked = (self.cfg, tuple(programs))  # race freedom is the program's: what needs no second look
        if plan.checked and not fresh and not plan.ids_written:
            t = time.perf_counter()
            check_against_plan(plan, streams, self.cfg, self._footprint_of, self._ids,
                               gathers_only=checked in _CHECKED)
            self.check_s += time.perf_counter() - t
        if plan.checked:
            if len(_CHECKED) >= 4096:
                _CHECKED.pop(next(iter(_CHECKED)))
            _CHECKED[checked] = None
        if plan.ids_written:
            return self._run_slow(streams)
        # (a plan serves every program of its token structure: an MV where another had an MM has the same tokens)
        counters = Counters(instructions=_class_counts(tuple(programs)))
        ops = self._ops
        for core, i in plan.order:
            ins, raw = streams[core][i]
            op = ops.get((core, raw)) or self._bound(core, ins, raw)
            try:
                op(counters)
            except ProgramError as e:  # the same kind of error, saying where
                raise type(e)(f"core {core} instruction {i} ({ins.cls.name}): {e}") from None
        self._fold_kept(counters)
        return counters

    def _footprint_of(self, raw: bytes) -> tuple[tuple[Access, ...], tuple[Access, ...]]:
        return self._form(_footprint, raw)

    def _form(self, form, raw: bytes):
        """``form(raw, cfg)`` (one of the module's caches of what an instruction's bytes decide under a config),
        kept by this machine under the bytes alone: the shared caches hash the config on every lookup."""
        key = (form, raw)
        out = self._forms.get(key, _MISSING)
        if out is _MISSING:
            if len(self._forms) >= 1 << 16:
                self._forms.clear()
            out = self._forms[key] = form(raw, self.cfg)
        return out

    def _run_slow(self, streams: list) -> Counters:
        """Schedule by tokens as the program runs, checking every instruction's accesses as it starts."""
        hz = HazardChecker(self.cfg) if self.check_hazards else None
        if hz:
            check_early_tiles(streams, self._footprint_of)
        counters = Counters()

        def visit(core: int, i: int, ins: Instruction, raw: bytes) -> None:
            where = f"core {core} instruction {i} ({ins.cls.name})"
            if hz:
                reads, writes = self._footprint_of(raw)
                if ins.opcode is Opcode.LD and ins.gather:
                    reads = reads + tuple(gather_rows(ins, self._ids(ins)))
                hz.access(core * NUNITS + ins.unit, where, reads, writes)
            try:
                self._execute(core, ins, counters, raw)
            except ProgramError as e:  # the same kind of error, saying where
                raise type(e)(f"{where}: {e}") from None

        counters.instructions = run_in_token_order(streams, self.cfg, visit, hz)
        self._fold_kept(counters)
        return counters

    def _execute(self, core: int, ins: Instruction, c: Counters, raw: bytes | None = None) -> None:
        """Run one instruction; ``raw``, its bytes, lets the checks that depend on its fields alone be cached."""
        self.buf = self.cores[core]
        op = ins.opcode
        if raw is None:
            raw = encode(ins)
        if op in (Opcode.MM, Opcode.MV, Opcode.MISC):
            self._form(_operands_checked, raw)
        if op is Opcode.LD:
            self._load(ins, c, raw)
        elif op is Opcode.ST:
            onchip, pack4, rows, row_bytes, targets = self._form(_st_form, raw)
            data = self._get(Buffer(ins.buf), onchip, np.uint8)
            if pack4:
                data = nm.pack_int4(data.view(np.int8))
            data = data.reshape(rows, row_bytes)
            for r, channel, addr, n, stride in targets:
                part = data if r is None else data[r:r + 1]
                ix = self._hbm_rows(channel, addr, n, row_bytes, stride)
                self.hbm[channel][ix] = part.ravel()
                if n and row_bytes:
                    self._written(channel, addr, byte_selector(addr, n, row_bytes, stride)[1])
                c.hbm_written[channel] = c.hbm_written.get(channel, 0) + n * row_bytes
        elif op in (Opcode.MM, Opcode.MV):
            self._mpe(ins, c, raw)
        elif op is Opcode.MISC:
            self._misc(ins, c, raw)

    # ----- the fast path's instructions, bound once to this machine -----
    def _bound(self, core: int, ins: Instruction, raw: bytes):
        """``raw`` on ``core`` as a function of the run's counters, with what its fields decide worked out once
        (buffers, selectors, forms, range checks): the same work as :meth:`_execute` with the compiled arithmetic
        and none of its per-run lookups. Where a check of the fields fails, or for the rarer forms, it is
        :meth:`_execute` itself, which says what is wrong as the slow path does; and a bound instruction whose
        values are refused (an overflow, a norm out of range) hands over to it to say so."""
        if len(self._ops) >= 1 << 16:
            self._ops.clear()

        def generic(c: Counters) -> None:
            self._execute(core, ins, c, raw)
        try:
            op = self._bind(core, ins, raw, generic) or generic
        except (ProgramError, ValueError):
            op = generic
        self._ops[(core, raw)] = op
        return op

    def _bind(self, core: int, ins: Instruction, raw: bytes, generic):
        op, bufs = ins.opcode, self.cores[core]
        if op is Opcode.SYS:
            return _nothing
        if op is Opcode.LD and not ins.gather:
            return self._bind_striped(ins, bufs, generic) if striped(ins) else self._bind_load(raw, bufs)
        if op is Opcode.ST:
            return self._bind_store(raw, bufs)
        if op in (Opcode.MM, Opcode.MV):
            self._form(_operands_checked, raw)
            return self._bind_mpe(ins, raw, bufs, generic)
        if op is Opcode.MISC:
            self._form(_operands_checked, raw)
            return self._bind_misc(ins, raw, bufs, generic)
        return None

    @staticmethod
    def _selector(mem: np.ndarray, a: Access):
        """``a``'s bytes in ``mem`` (None where they run past it, or there are none)."""
        sel, end = byte_selector(a.addr, a.rows, a.width, a.stride)
        return sel if a.rows and a.width and end <= mem.size else None

    def _bind_load(self, raw: bytes, bufs: dict):
        channel, addr, span, moved, src, b, _, dst, dst_end = _ld_form(raw)
        mem, onchip = self.hbm.get(channel), bufs[b]
        if mem is None or span and (addr < 0 or addr + span > mem.size) or dst_end > onchip.size:
            return None

        def load(c: Counters) -> None:
            onchip[dst] = mem[src]
            read = c.hbm_read
            read[channel] = read.get(channel, 0) + moved
        return load

    def _bind_store(self, raw: bytes, bufs: dict):
        onchip, pack4, rows, row_bytes, targets = self._form(_st_form, raw)
        src = bufs[Buffer(onchip.space[1])]
        sel = self._selector(src, onchip)
        if sel is None:
            return None
        buf_rows = onchip.rows
        runs = []  # (row or None, memory, selector, channel, first byte, one past the last or None, bytes)
        for r, channel, addr, n, stride in targets:
            mem = self.hbm.get(channel)
            ix, end = byte_selector(addr, n, row_bytes, stride)
            if mem is None or n and row_bytes and (addr < 0 or end > mem.size):
                return None
            runs.append((r, mem, ix, channel, addr, end if n and row_bytes else None, n * row_bytes))

        def store(c: Counters) -> None:
            data = src[sel].reshape(buf_rows, -1)
            if pack4:
                data = nm.pack_int4(data.view(np.int8))
            data = data.reshape(rows, row_bytes)
            written = c.hbm_written
            for r, mem, ix, channel, addr, end, nbytes in runs:
                mem[ix] = (data if r is None else data[r:r + 1]).ravel()
                if end is not None:
                    self._written(channel, addr, end)
                written[channel] = written.get(channel, 0) + nbytes
        return store

    def _bind_striped(self, ins: Instruction, bufs: dict, generic):
        onchip = bufs[Buffer(ins.buf)]
        dst = self._selector(onchip, Access(("buf", ins.buf), ins.buf_addr, 1, ins.row_bytes, ins.buf_stride))
        if ins.rows != 1 or ins.channel + ins.stripe > self.cfg.mem_channels or dst is None:
            return None
        key, kept = (ins.channel, ins.hbm_addr, ins.row_bytes, ins.stripe, ins.stripe_log2), self.striped

        def load(c: Counters) -> None:
            spans, data = kept.get(key)
            if data is None:  # read (and kept) as the generic path reads it
                return generic(c)
            self._count_kept(kept, key, spans)
            onchip[dst] = data
        return load

    def _bind_mpe(self, ins: Instruction, raw: bytes, bufs: dict, generic):
        f = _mpe_form(raw)
        if f.kmajor or not f.streamed and f.fmt.sparse or f.part is not None:
            return None
        act, out_mem, prm = bufs[Buffer.ACT], bufs[f.out_buf], bufs[Buffer.PRM]
        a_sel, out_sel = self._selector(act, f.a), self._selector(out_mem, f.out)
        if a_sel is None or out_sel is None:
            return None
        w_mem = w_sel = None
        if not f.streamed:
            w_mem = bufs[f.w_buf]
            w_sel = self._selector(w_mem, f.w)
            if w_sel is None:
                return None
        max_sel = rec_sel = lut_sel = None
        if f.out_max is not None and (max_sel := self._selector(out_mem, f.out_max)) is None:
            return None
        if f.rec is not None and (rec_sel := self._selector(prm, f.rec)) is None:
            return None
        if f.lut is not None and (lut_sel := self._selector(prm, f.lut)) is None:
            return None
        m, n, k, fmt, a_dtype, macs = f.m, f.n, f.k, f.fmt, f.a_dtype, f.macs
        kind = int(f.mode)
        out_dtype, limit = np.int8 if kind == kernels.REQ_I8 else np.int32, 1 << (self.cfg.acc_bits - 1)
        w_rows = f.w.rows if f.w is not None else 0
        one_chunk = k <= CHUNK and np.dtype(a_dtype).itemsize == 1  # one float32 product sums exactly
        whole_tile = f.streamed and stream_k(self.cfg, ins) == k
        output_stage, fits = kernels.output_stage, kernels.FITS
        no_rows, no_lut, no_res = kernels.NO_ROWS, kernels.NO_LUT, kernels.NO_RES

        def mpe(c: Counters) -> None:
            a = act[a_sel].view(a_dtype).reshape(m, -1)
            if w_mem is None:
                w32 = self._streamed_operand(ins, c, raw)[1]
                if not whole_tile:
                    w32 = w32[:, :k]  # past K: zero activations
                acc = a.astype(np.float32) @ w32.T if one_chunk else int8_products(a, None, w32)
            else:
                acc = int8_products(a, unpack_rows(w_mem[w_sel].reshape(w_rows, -1), fmt, k), float_sums=True)
            out = np.empty((m, n), out_dtype)
            if kind == kernels.ACC32:
                said = output_stage(kind, acc, limit, no_rows, no_rows, no_rows, no_lut, no_res, out)
            else:
                mult, shift, bias = _requant_records(prm[rec_sel].tobytes(), n)
                said = output_stage(kind, acc, limit, bias, mult, shift,
                                    no_lut if lut_sel is None else prm[lut_sel].view(np.int8),
                                    out_mem[out_sel].view("<i4").reshape(m, n) if kind == kernels.REQ_ADD else no_res,
                                    out)
            if said != fits:
                return generic(c)  # which says how far a sum overflows (or what else is wrong)
            c.macs += macs
            out_mem[out_sel] = out.view(np.uint8).ravel()
            if max_sel is not None:
                out_mem[max_sel] = acc.max(axis=1).astype(np.int64).astype("<i4").view(np.uint8)
        return mpe

    def _bind_misc(self, ins: Instruction, raw: bytes, bufs: dict, generic):
        mop, rows, cols, sb, db, src, src_elem, dst, prm_at = _misc_form(raw)
        src_mem, dst_mem, prm = bufs[sb], bufs[db], bufs[Buffer.PRM]
        s_sel, d_sel = self._selector(src_mem, src), self._selector(dst_mem, dst)
        if s_sel is None or d_sel is None:
            return None
        imm, shift = ins.imm, ins.shift
        if mop in (MiscOp.RMSNORM, MiscOp.LAYERNORM):
            p_sel, layer = self._selector(prm, prm_at), mop is MiscOp.LAYERNORM
            if p_sel is None or shift > nm.NORM_SHIFT_MAX:
                return None

            def compute(x):
                eps_q, gain, bias = _norm_params(prm[p_sel].tobytes(), cols, layer)
                return (kernels.layernorm(x, gain, bias, eps_q, shift) if layer
                        else kernels.rmsnorm(x, gain, eps_q, shift))
        elif mop is MiscOp.ROPE:
            d = imm
            if d <= 0 or d % 2 or cols % d:
                return None
            row = ROPE.row_bytes(d)
            t_sel = self._selector(prm, Access(("buf", Buffer.PRM), ins.prm_addr, rows, row, row))
            if t_sel is None:
                return None

            def compute(x):
                return kernels.rope(x, *ROPE.unpack(prm[t_sel], rows, d), d)
        elif mop is MiscOp.SOFTMAX and not ins.max_given and ins.part == SoftmaxPart.WHOLE:
            offset, window = ins.offset, ins.window

            def compute(x):
                return kernels.softmax(x, imm, shift, offset, window)
        elif mop is MiscOp.EMUL:
            x2_sel = self._selector(src_mem, Access(("buf", sb), ins.src2_addr, rows, cols, ins.src_stride))
            if x2_sel is None:
                return None

            def compute(x):
                return kernels.emul(x, src_mem[x2_sel].view(np.int8).reshape(rows, -1), imm, shift)
        elif mop is MiscOp.DEQ:
            def compute(x):
                return kernels.deq(x, imm, shift)
        elif mop is MiscOp.REQ:
            def compute(x):
                return kernels.req(x, imm, shift)
        elif mop is MiscOp.DEQ_ADD:
            def compute(x):
                return kernels.deq_add(dst_mem[d_sel].view("<i4").reshape(rows, -1), x, imm, shift)
        else:
            return None
        elements = rows * cols

        def misc(c: Counters) -> None:
            x = src_mem[s_sel].view(src_elem).reshape(rows, -1).astype(np.int64)
            try:
                y = compute(x)
            except ValueError:
                return generic(c)  # which says what is refused, as the slow path does
            c.sfu_elements += elements
            dst_mem[d_sel] = y.view(np.uint8).ravel()
        return misc

    def _ids(self, ins: Instruction) -> list[int]:
        ids_ix = self._hbm_rows(0, ins.ids_addr, 1, 4 * ins.rows, 0)
        return self.hbm[0][ids_ix].view("<i4").astype(np.int64).tolist()

    def _load(self, ins: Instruction, c: Counters, raw: bytes) -> None:
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
        channel, addr, span, moved, src, buf, buf_addr, dst, dst_end = _ld_form(raw)
        mem = self.hbm.get(channel)
        if mem is None or span and (addr < 0 or addr + span > mem.size):
            self._check_range(channel, addr, span)  # says what is wrong
        onchip = self.buf[buf]
        if dst_end > onchip.size:
            raise ProgramError(f"{buf.name} write [{buf_addr}, {dst_end}) beyond the buffer ({onchip.size} bytes)")
        onchip[dst] = mem[src]
        c.hbm_read[channel] = c.hbm_read.get(channel, 0) + moved

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
        key = (ins.channel, ins.hbm_addr, ins.row_bytes, ins.stripe, ins.stripe_log2)
        spans, data = self.striped.get(key)
        if data is None:
            data = self._read_striped(ins.channel, ins.hbm_addr, ins.row_bytes, ins.stripe, 1 << ins.stripe_log2,
                                      Counters())
            spans = stripe_layout(ins.channel, ins.hbm_addr, ins.row_bytes, ins.stripe, 1 << ins.stripe_log2)
            data.setflags(write=False)
            self.striped.put(key, spans, data)
        self._count_kept(self.striped, key, spans)
        self._put(Buffer(ins.buf), Access(("buf", ins.buf), ins.buf_addr, 1, ins.row_bytes, ins.buf_stride), data)

    def _count_kept(self, cache: "DecodedTiles", key, spans: list[tuple[int, int, int]]) -> None:
        """A kept read's bytes, counted per channel as reading them again would count them (folded into the run's
        counters as it ends: one vector sum a read, not a dictionary entry a channel)."""
        per_channel = self._kept_of.get((id(cache), key))
        if per_channel is None:
            if len(self._kept_of) >= 1 << 16:
                self._kept_of.clear()
            per_channel = np.zeros_like(self._kept_reads)
            for ch, _, n in spans:
                per_channel[ch] += n
            self._kept_of[(id(cache), key)] = per_channel
        self._kept_reads += per_channel

    def _fold_kept(self, c: Counters) -> None:
        read = c.hbm_read
        for ch in np.flatnonzero(self._kept_reads).tolist():
            read[ch] = read.get(ch, 0) + int(self._kept_reads[ch])
        self._kept_reads[:] = 0

    def _stream_rows(self, ins: Instruction, c: Counters) -> np.ndarray:
        """A streamed MV's packed rows, read from its tile's stream image (flightc.compress.stream)."""
        shape = stream_shape(self.cfg, ins)
        image = self._read_striped(ins.w_channel, ins.w_hbm_addr, shape.nbytes, ins.w_stripe, shape.unit, c)
        return rows_of_image(image.tobytes(), shape)  # the dequantizer refuses positions the ISA does not allow

    def _streamed_operand(self, ins: Instruction, c: Counters, raw: bytes) -> tuple[np.ndarray | None, np.ndarray]:
        """A streamed MV's INT8 operand rows [n, stream K] and the same as float32 (what the products take): read
        and dequantized once, then taken from :class:`DecodedTiles` until a store or the host writes over the
        tile's bytes (the float32 rows from a smaller cache of their own: four times the bytes; where they are
        kept, the INT8 rows are not looked up and come back None)."""
        key, shape = self._form(_stream_key, raw)
        spans, w32 = self.tiles32.get(key)
        if w32 is not None:
            self._count_kept(self.tiles32, key, spans)
            return None, w32
        spans, w = self.tiles.get(key)
        if w is None:
            w = unpack_rows(self._stream_rows(ins, Counters()), weight_format(ins), stream_k(self.cfg, ins))
            w = w.astype(np.int8)
            w.setflags(write=False)
            spans = stripe_layout(ins.w_channel, ins.w_hbm_addr, shape.nbytes, ins.w_stripe, shape.unit)
            self.tiles.put(key, spans, w)
        w32 = w.astype(np.float32)
        w32.setflags(write=False)
        self.tiles32.put(key, spans, w32)
        self._count_kept(self.tiles, key, spans)
        return w, w32

    def _mpe(self, ins: Instruction, c: Counters, raw: bytes) -> None:
        f = _mpe_form(raw)
        a = self._get(Buffer.ACT, f.a, f.a_dtype)
        fmt, w32 = f.fmt, None
        if f.streamed:
            w, w32 = self._streamed_operand(ins, c, raw)
            w32 = w32[:, :f.k]  # past K: zero acts
            w = None if w is None else w[:, :f.k]
        elif f.kmajor:
            rows = self._get(f.w_buf, f.w, np.uint8)
            w = (rows.view(np.int8) if fmt.bits == 8 else nm.unpack_int4(rows, f.n)).T
        else:
            w = unpack_rows(self._get(f.w_buf, f.w, np.uint8), fmt, f.k)  # refuses positions the ISA does
        acc = int8_products(a, w, w32)  # [m, n]
        if f.part is not None:
            acc = acc + self._get(Buffer.ACC, f.part, "<i4").astype(np.int64).reshape(f.m, f.n)
        if not self.math.acc_within(acc, self.cfg.acc_bits):
            raise ProgramError(f"accumulator overflow: |acc| reaches {int(np.abs(acc).max())}, beyond the "
                               f"{self.cfg.acc_bits}-bit accumulators")
        c.macs += f.macs
        mode, out_buf, out = f.mode, f.out_buf, f.out
        if mode is OutMode.ACC32:
            self._put(out_buf, out, acc.astype("<i4"))
            if f.out_max is not None:
                self._put(out_buf, f.out_max, acc.max(axis=1, keepdims=True).astype("<i4"))
            return
        mult, shift, bias = _requant_records(self._get(Buffer.PRM, f.rec, np.uint8).tobytes(), f.n)
        acc = acc + bias
        math = self.math
        if mode is OutMode.REQ_I8:
            lut = self._get(Buffer.PRM, f.lut, np.int8)[0] if f.lut is not None else None
            self._put(out_buf, out, math.mpe_requant_i8(acc, mult, shift, lut))
        elif mode is OutMode.REQ_I32:
            self._put(out_buf, out, math.requant_i32(acc, mult, shift).astype("<i4"))
        else:
            res = self._get(out_buf, out, "<i4")
            self._put(out_buf, out, math.residual_add(res, acc, mult, shift).astype("<i4"))

    def _softmax_part(self, ins: Instruction, x: np.ndarray, db: Buffer, dst: Access) -> None:
        """A part of a blocked softmax (ISA 1.11) over the block's scores ``x``: its rows' statistics read
        (flightc.records.SOFTMAX_STATS), MAX's or SUM's new one written at dst, NORM's probabilities."""
        part, rows = SoftmaxPart(ins.part), ins.rows
        stat = {name: Access(("buf", Buffer.ACC), ins.stats_addr + SOFTMAX_STATS.field(name).offset, rows, 4,
                             SOFTMAX_STATS.size) for name in ("max", "sum")}
        row_max = self._get(Buffer.ACC, stat["max"], "<i4")[:, 0].astype(np.int64)
        total = self._get(Buffer.ACC, stat["sum"], "<u4")[:, 0].astype(np.int64)
        m, offset, window = ins.imm, ins.offset, ins.window
        out = Access(("buf", db), ins.dst_addr, rows, 4, ins.dst_stride)  # a MAX's or SUM's statistic, a row's
        if part is SoftmaxPart.MAX:
            new = nm.softmax_part_max(x, offset, window, None if ins.first else row_max)
            self._put(db, out, new.astype("<i4")[:, None])
            return
        if part is SoftmaxPart.SUM:
            try:
                new = nm.softmax_part_sum(x, row_max, m, ins.shift, offset, window, None if ins.first else total)
            except ValueError as e:
                raise ProgramError(str(e)) from None
            self._put(db, out, new.astype("<u4")[:, None])
            return
        if not total.all():
            raise ProgramError(f"SOFTMAX NORM: row {int(np.argmin(total))}'s sum of powers is 0: it saw no column "
                               f"in any block (or its SUM parts did not run first)")
        try:
            self._put(db, dst, nm.softmax_part_norm(x, row_max, nm.softmax_recip(total), m, ins.shift, offset,
                                                    window))
        except ValueError as e:
            raise ProgramError(str(e)) from None

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

    def _misc(self, ins: Instruction, c: Counters, raw: bytes) -> None:
        mop, rows, cols, sb, db, src, src_elem, dst, prm_at = _misc_form(raw)
        x = self._get(sb, src, src_elem).astype(np.int64)
        math = self.math
        c.sfu_elements += rows * cols
        if mop in (MiscOp.RMSNORM, MiscOp.LAYERNORM):
            prm = self._get(Buffer.PRM, prm_at, np.uint8)[0]
            eps_q, gain, bias = NORM.unpack(prm, cols, mop is MiscOp.LAYERNORM)
            if ins.shift > nm.NORM_SHIFT_MAX:
                raise ProgramError(f"{mop.name}'s shift {ins.shift} exceeds {nm.NORM_SHIFT_MAX}, the most the ISA allows "
                                   f"(the divisor rms << shift must stay below 2^{nm.NORM_DEN_BITS}); fold the rest "
                                   f"into the gains")
            try:
                if mop is MiscOp.RMSNORM:
                    y = math.rmsnorm(x, gain, eps_q, ins.shift)
                else:
                    y = math.layernorm(x, gain, bias, eps_q, ins.shift)
            except ValueError as e:
                raise ProgramError(f"{mop.name} over {rows} rows of {cols}: {e} (the divisor is the rows' rms << "
                                   f"shift {ins.shift}): scale the input down or lower the shift") from None
        elif mop is MiscOp.ROPE:
            d = ins.imm
            if d <= 0 or d % 2 or cols % d:
                raise ProgramError(f"ROPE head size {d} must be even and divide cols {cols}")
            row = ROPE.row_bytes(d)
            tab = self._get(Buffer.PRM, Access(("buf", Buffer.PRM), ins.prm_addr, rows, row, row), np.uint8)
            y = math.rope(x, *ROPE.unpack(tab, rows, d), d)
        elif mop is MiscOp.SOFTMAX and ins.part != SoftmaxPart.WHOLE:
            self._softmax_part(ins, x, db, dst)
            return
        elif mop is MiscOp.SOFTMAX:
            try:
                y = math.softmax(x, ins.imm, ins.shift, ins.offset, ins.window)
            except ValueError as e:
                raise ProgramError(str(e)) from None
            if ins.max_given:
                self._check_given_max(ins, x)
        elif mop is MiscOp.EMUL:
            x2 = self._get(sb, Access(("buf", sb), ins.src2_addr, rows, cols, ins.src_stride), np.int8)
            y = math.emul(x, x2, ins.imm, ins.shift)
        elif mop is MiscOp.DEQ:
            y = math.deq(x, ins.imm, ins.shift).astype("<i4")
        elif mop is MiscOp.REQ:
            y = math.req(x, ins.imm, ins.shift)
        elif mop is MiscOp.DEQ_ADD:
            res = self._get(db, dst, "<i4")
            y = math.deq_add(res, x, ins.imm, ins.shift).astype("<i4")
        else:  # pragma: no cover
            raise ProgramError(f"unknown MISC op {mop}")
        self._put(db, dst, y)
