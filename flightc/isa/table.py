"""The instruction set as one declarative table.

Encoder, decoder, disassembler, docs/isa.md and the RTL decoder are all derived from
:data:`ISA`. Each class lists its fields from bit 0 upwards; the layout pass fills the
rest of the class width with a reserved field that must be zero. Nothing else in the
project states a field position or width.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum, IntEnum
from typing import Type

from flightc.config import Buffer, SparseEncoding

ISA_VERSION = "1.11"
WORD_BITS = 32


class Unit(IntEnum):
    """Execution units of a core; each has its own instruction queue (decoupled execution)."""

    LD = 0
    ST = 1
    MPE = 2  # matrix processing engine: runs both MM and MV (same DSP chains, two modes)
    SFU = 3
    SYS = 4


class Opcode(IntEnum):
    LD = 0
    ST = 1
    MM = 2
    MV = 3
    MISC = 4
    SYS = 5


class WeightBits(IntEnum):
    """Width of the packed weights of an MPE operand (code -> bits via :data:`WEIGHT_BITS`)."""

    B2 = 0
    B3 = 1
    B4 = 2
    B8 = 3


WEIGHT_BITS = {WeightBits.B2: 2, WeightBits.B3: 3, WeightBits.B4: 4, WeightBits.B8: 8}


def group_scale_max(bits: int) -> int:
    """Largest group multiplier of a ``bits``-wide weight (an ISA rule since 1.4): q x multiplier stays an INT8
    operand for every stored q, so the MACs may multiply q by the activation and apply the multiplier to the
    group's partial sum, exactly (1 for 8-bit weights, which take no multipliers)."""
    return 1 if bits == 8 else 127 // (1 << (bits - 1))


class Sparsity(IntEnum):
    """N:M pattern of an MPE weight operand along K."""

    DENSE = 0
    N2_16 = 1
    N4_16 = 2
    N8_16 = 3
    N2_4 = 4


SPARSITY_NM = {Sparsity.DENSE: (16, 16), Sparsity.N2_16: (2, 16), Sparsity.N4_16: (4, 16),
               Sparsity.N8_16: (8, 16), Sparsity.N2_4: (2, 4)}


class OutMode(IntEnum):
    """What the MPE's output stage does with each INT32 accumulator."""

    ACC32 = 0  # write the raw INT32 to ACC
    REQ_I8 = 1  # requantize per row to INT8 into ACT (optionally through a 256-entry LUT: fused activation)
    REQ_ADD = 2  # requantize per row to the residual scale and add into ACC (saturating INT32)
    REQ_I32 = 3  # requantize per row to one common scale, INT32 into ACC (logits)


class MiscOp(IntEnum):
    """Special-function unit operations; each is an exact integer algorithm (flightc.numerics)."""

    RMSNORM = 0
    ROPE = 1
    SOFTMAX = 2
    EMUL = 3
    DEQ = 4
    DEQ_ADD = 5  # INT8 -> residual scale, added into INT32 (learned positional embeddings)
    LAYERNORM = 6
    REQ = 7  # INT32 -> INT8: x * imm >> shift rounded and saturated (the MPE's REQ_I8 without a record: raw P.V sums)


class SoftmaxPart(IntEnum):
    """What a SOFTMAX computes (ISA 1.11): the whole softmax of its rows, or one part of a blocked softmax, whose
    columns are a block of a longer row and whose rows' statistics (flightc.records.SOFTMAX_STATS) carry the row
    from block to block: the maxima over every block, then the sums of powers over every block, then each block's
    probabilities, exactly the whole softmax's."""

    WHOLE = 0
    MAX = 1  # the statistics' maximum becomes the largest visible score so far
    SUM = 2  # the powers of the visible scores (given that maximum) added into the statistics' sum
    NORM = 3  # the block's probabilities, from the maximum and the sum's reciprocal


class SysOp(IntEnum):
    NOP = 0
    BARRIER = 1
    END = 2


class FieldKind(Enum):
    UINT = "uint"
    INT = "int"
    BOOL = "bool"
    ENUM = "enum"
    MASK = "mask"  # one bit per Unit; the instruction's own unit's bit must be zero
    RESERVED = "reserved"


@dataclass(frozen=True)
class Field:
    name: str
    bits: int
    kind: FieldKind
    doc: str
    enum: Type[IntEnum] | None = None
    only: tuple[IntEnum, ...] | None = None  # the enum's values the field may take (None: all of them)

    @property
    def allowed(self) -> tuple[IntEnum, ...]:
        """The enum values an ENUM field may name."""
        assert self.enum is not None
        return self.only if self.only is not None else tuple(self.enum)

    @property
    def lo_value(self) -> int:
        return -(1 << (self.bits - 1)) if self.kind is FieldKind.INT else 0

    @property
    def hi_value(self) -> int:
        if self.kind is FieldKind.INT:
            return (1 << (self.bits - 1)) - 1
        if self.kind is FieldKind.ENUM:
            assert self.enum is not None
            return max(self.enum)
        return (1 << self.bits) - 1


@dataclass(frozen=True)
class PlacedField:
    field: Field
    lo: int  # lowest bit within the instruction

    @property
    def hi(self) -> int:
        return self.lo + self.field.bits - 1


@dataclass(frozen=True)
class InstrClass:
    name: str
    opcode: Opcode
    unit: Unit
    width: int  # bits, a multiple of WORD_BITS
    doc: str
    fields: tuple[Field, ...]
    layout: tuple[PlacedField, ...] = field(default=(), compare=False)
    index: dict[str, PlacedField] = field(default_factory=dict, compare=False, repr=False)

    @property
    def words(self) -> int:
        return self.width // WORD_BITS

    def placed(self, name: str) -> PlacedField:
        try:
            return self.index[name]
        except KeyError:
            raise KeyError(f"{self.name} has no field {name!r}") from None


def _u(name: str, bits: int, doc: str) -> Field:
    return Field(name, bits, FieldKind.UINT, doc)


def _i(name: str, bits: int, doc: str) -> Field:
    return Field(name, bits, FieldKind.INT, doc)


def _b(name: str, doc: str) -> Field:
    return Field(name, 1, FieldKind.BOOL, doc)


def _e(name: str, bits: int, enum: Type[IntEnum], doc: str, only: tuple[IntEnum, ...] | None = None) -> Field:
    return Field(name, bits, FieldKind.ENUM, doc, enum, only)


# The buffers an SFU operation reads its operands from and writes its results to (ISA 1.8): only those, so the
# weight, parameter and KV buffers take writes from LD alone and need no write multiplexer (hw/buffers.py)
SFU_BUFFERS = (Buffer.ACT, Buffer.ACC)


KV_BITS = (8, 4)  # KV cache widths in memory: INT8, or INT4 packed by ST.pack4 (read back by the MPE's 4-bit path)

OPCODE_BITS = 3
UNIT_MASK_BITS = len(Unit)
BUF_ADDR_BITS = 24  # on-chip byte address: 16 MiB per buffer
HBM_ADDR_BITS = 32  # byte address within one memory channel: 4 GiB

HEADER = (
    _e("opcode", OPCODE_BITS, Opcode, "instruction class"),
    Field("wait", UNIT_MASK_BITS, FieldKind.MASK, "pop one token from each marked unit before starting"),
    Field("release", UNIT_MASK_BITS, FieldKind.MASK, "push one token to each marked unit after finishing"),
)

_TRANSFER = (
    _e("buf", 3, Buffer, "on-chip buffer"),
    _u("buf_addr", BUF_ADDR_BITS, "byte address in the buffer"),
    _u("channel", 6, "memory channel"),
    _u("hbm_addr", HBM_ADDR_BITS, "byte address in the channel"),
    _u("rows", 16, "number of rows moved"),
    _u("row_bytes", 20, "contiguous bytes per row"),
    _u("hbm_stride", HBM_ADDR_BITS, "bytes between rows in memory (gather: bytes per id)"),
    _u("buf_stride", BUF_ADDR_BITS, "bytes between rows in the buffer"),
)

_MPE_COMMON = (
    _u("n", 16, "output rows (weight rows) of the tile"),
    _u("k", 20, "reduction length"),
    _u("a_addr", BUF_ADDR_BITS, "ACT address of the activation row(s), INT8"),
    _b("a_unsigned", "activations are UINT8 (attention probabilities)"),
    _e("w_buf", 3, Buffer, "buffer holding the weight operand (WGT, or KV for attention)"),
    _u("w_addr", BUF_ADDR_BITS, "byte address of the weight tile"),
    _b("w_kmajor", "weight operand stored K-major (V cache rows); dense 8-bit, or dense 4-bit (INT4 KV cache)"),
    _u("w_stride", BUF_ADDR_BITS, "bytes between weight rows (K-major: between K steps)"),
    _e("w_bits", 2, WeightBits, "packed weight width"),
    _e("sparsity", 3, Sparsity, "N:M pattern of the weights"),
    _e("sparse_enc", 2, SparseEncoding, "how a sparse weight stores its kept positions (ISA 1.10): POSITIONS, each "
                                        "kept value's position in its block, log2(M) bits; BITMASK, M bits a block, "
                                        "bit i set where position i is kept; RANK, the block's kept set as its rank "
                                        "among the C(M, N) sets of N positions in ascending order of their bitmasks, "
                                        "ceil(log2 C(M, N)) bits. POSITIONS for dense weights"),
    _u("group_log2", 4, "log2 of the quantization group along K; 0: no group scales"),
    _e("out_mode", 2, OutMode, "output stage"),
    _u("out_addr", BUF_ADDR_BITS, "output byte address (ACT for REQ_I8, ACC otherwise)"),
    _u("scale_addr", BUF_ADDR_BITS, "PRM address of per-row requantization records"),
    _b("lut", "pass the INT8 result through a 256-entry LUT (fused activation)"),
    _u("lut_addr", BUF_ADDR_BITS, "PRM address of the LUT"),
    _b("acc_in", "the sums start from INT32 partial sums (ISA 1.11): the sum of row i and "
                 "weight row j starts from the INT32 at acc_addr + 4 (i n + j) in ACC (rows of n sums, packed: what "
                 "an ACC32 over other K columns wrote with out_stride 4 n), before the output stage. A product split "
                 "along K is so summed exactly, its bias and requantization applied once, by its last part. Not with "
                 "w_stream"),
    _u("acc_addr", BUF_ADDR_BITS, "ACC address of the partial sums (with acc_in; zero without)"),
)

_CLASSES = (
    InstrClass("LD", Opcode.LD, Unit.LD, 224, "Copy rows from a memory channel into an on-chip buffer.",
               HEADER + _TRANSFER + (
                   _b("gather", "row r comes from hbm_addr + ids[r] * hbm_stride (token embedding lookup)"),
                   _u("ids_addr", HBM_ADDR_BITS, "channel-0 address of the INT32 ids used by gather"),
                   _u("stripe", 6, "channels the data is spread over from `channel` (0 or 1: one channel). A striped "
                                   "LD moves one row: its byte o is on channel channel + (o >> stripe_log2) % stripe "
                                   "at hbm_addr + ((o >> stripe_log2) / stripe << stripe_log2) + o % 2^stripe_log2. "
                                   "A gather's table is cut in blocks of 2^stripe_log2 rows: row id on channel "
                                   "channel + (id >> stripe_log2) at hbm_addr + (id % 2^stripe_log2) x hbm_stride"),
                   _u("stripe_log2", 4, "log2 of the bytes a stripe puts on one channel before the next (a "
                                        "gather: of the table rows a block puts on one channel)"),
               )),
    InstrClass("ST", Opcode.ST, Unit.ST, 224, "Copy rows from an on-chip buffer to a memory channel.",
               HEADER + _TRANSFER + (
                   _b("pack4", "saturate each INT8 to INT4 and pack two per byte, low nibble first (KV cache "
                               "rows): a row reads 2 x row_bytes buffer bytes"),
                   _b("img", "the rows are the pieces of row `img_row` of a stream image (a K cache that MV.w_stream "
                             "reads, ISA 1.5), which start in one stripe_bytes unit: row pair p = img_row >> 1 is in "
                             "group g = p mod 2^img_groups_log2 at offset o = (p >> img_groups_log2) << img_pair_log2, "
                             "plus 2^img_half_log2 for the pair's second row; a group's stream is dealt a stripe_bytes "
                             "unit at a time round its master's channels, so the first row goes to channel channel + "
                             "g x channels_per_master + (o / stripe_bytes) mod channels_per_master at hbm_addr + "
                             "(o / stripe_bytes / channels_per_master) x stripe_bytes + o mod stripe_bytes"),
                   _u("img_row", 16, "the image row the pieces belong to (with img)"),
                   _u("img_groups_log2", 3, "log2 of the lane groups (masters) the image is dealt to (with img)"),
                   _u("img_pair_log2", 5, "log2 of the bytes of one row pair's record (with img)"),
                   _u("img_half_log2", 5, "log2 of the offset of a pair's second row in its record (with img)"),
                   _b("img_col", "with img, the rows are one byte each of image column `img_row` (INT8, a V cache "
                                 "kept transposed, ISA 1.5): row i is image row i, in the pair record of row pair "
                                 "i >> 1 (placed as above), at ((img_row / lane_slots) << img_stride_log2) + "
                                 "img_row mod lane_slots past its row's start; each row goes to its own channel"),
                   _u("img_stride_log2", 4, "log2 of the bytes between a record's chunks (with img_col)"),
               )),
    InstrClass("MM", Opcode.MM, Unit.MPE, 320,
               "Matrix-matrix product on the MPE: out[m, n] = sum_k a[m, k] * w[n, k] for m activation rows.",
               HEADER + _MPE_COMMON + (
                   _u("m", 16, "activation rows (tokens)"),
                   _u("a_stride", BUF_ADDR_BITS, "bytes between activation rows"),
                   _u("out_stride", BUF_ADDR_BITS, "bytes between output rows"),
               )),
    InstrClass("MV", Opcode.MV, Unit.MPE, 288,
               "Matrix-vector product on the MPE (one activation row): out[n] = sum_k a[k] * w[n, k].",
               HEADER + _MPE_COMMON + (
                   _b("w_stream", "the weights stream from memory straight into the lane groups (ISA 1.4): a tile "
                                  "laid out by flightc.compress.stream (row pairs of lane groups, one group per "
                                  "master), striped over `w_stripe` channels from `w_channel` at `w_hbm_addr`, "
                                  "stripe_bytes at a time; w_buf, w_addr, w_stride and w_kmajor are zero, a_addr is "
                                  "a buffer word's, K at most the config's lane_k_max. The tile is read after the "
                                  "MV's waits (never ahead of them, unless w_early): a tile the program writes, a K cache's image "
                                  "(ST.img), is ordered after its writes by them. Dense, ungrouped rows may have any "
                                  "K: the tile holds whole chunks and the columns past K multiply zero activations"),
                   _u("w_channel", 6, "first memory channel of a streamed tile (a master's first)"),
                   _u("w_hbm_addr", HBM_ADDR_BITS, "byte address of a streamed tile on each of its channels (a "
                                                   "multiple of stripe_bytes)"),
                   _u("w_stripe", 6, "channels a streamed tile is striped over: a power of two of whole masters"),
                   _b("out_max", "with w_stream and ACC32 (ISA 1.7): also write the largest of the n sums, INT32, at "
                                 "out_addr + 4 n, where a SOFTMAX with max_given takes its row maximum"),
                   _b("w_early", "with w_stream (ISA 1.9): no instruction of the program writes a byte of the tile "
                                 "(a layer's weights), so its readers may read it before the MV's waits are met, "
                                 "while the MPE is idle or drains the MV before (the compiler sets it; a program "
                                 "that writes such a tile is refused)"),
               )),
    InstrClass("MISC", Opcode.MISC, Unit.SFU, 320, "Special-function operation over rows x cols elements.",
               HEADER + (
                   _e("op", 4, MiscOp, "operation"),
                   _u("rows", 16, "rows (tokens)"),
                   _u("cols", 20, "elements per row"),
                   _e("src_buf", 3, Buffer, "buffer of the operands", SFU_BUFFERS),
                   _u("src_addr", BUF_ADDR_BITS, "first operand"),
                   _u("src_stride", BUF_ADDR_BITS, "bytes between rows of the operands"),
                   _u("src2_addr", BUF_ADDR_BITS, "second operand (EMUL), same buffer"),
                   _e("dst_buf", 3, Buffer, "buffer of the result", SFU_BUFFERS),
                   _u("dst_addr", BUF_ADDR_BITS, "result"),
                   _u("dst_stride", BUF_ADDR_BITS, "bytes between result rows"),
                   _u("prm_addr", BUF_ADDR_BITS, "PRM address of parameters (gains, RoPE rows)"),
                   _i("imm", 32, "multiplier / epsilon / head size, by op"),
                   _u("shift", 6, "right shift applied after imm"),
                   _i("offset", 20, "causal offset: row r sees columns <= r + offset (SOFTMAX)"),
                   _u("window", 20, "sliding window: row r sees only the last `window` of those columns; 0: all"),
                   _b("max_given", "SOFTMAX (ISA 1.7): each row's maximum over its visible columns is the INT32 just "
                                   "past the row (src + 4 cols, as MV.out_max writes it), so no pass looks for it; a "
                                   "program whose given maximum differs from the visible columns' is in error"),
                   _e("part", 2, SoftmaxPart, "SOFTMAX (ISA 1.11): the whole softmax, or a part of a blocked one over "
                                              "a block of columns (offset and window then count from the block's "
                                              "first column; a row may see none of it). Each row's statistics are "
                                              "8 bytes at stats_addr + 8 r in ACC (INT32 max, UINT32 sum, "
                                              "flightc.records.SOFTMAX_STATS). MAX writes the largest visible score "
                                              "(and the max read, unless first) as an INT32 at dst_addr + dst_stride "
                                              "r in dst_buf, which must be ACC (the row's max field); SUM writes so "
                                              "the sum of the visible scores' powers given the max read (and the "
                                              "sum read, unless first; the row's sum field); NORM writes the "
                                              "probabilities given the max and floor(2^40 / sum). Every MAX, then "
                                              "every SUM, then every NORM of a row, over its blocks, make the whole "
                                              "softmax's probabilities"),
                   _b("first", "SOFTMAX part MAX or SUM: the row's first block (no statistic before it to add)"),
                   _u("stats_addr", BUF_ADDR_BITS, "SOFTMAX with a part: ACC address of the rows' statistics (zero "
                                                   "for the whole softmax)"),
               )),
    InstrClass("SYS", Opcode.SYS, Unit.SYS, 32, "Synchronization and program control.",
               HEADER + (
                   _e("op", 3, SysOp, "operation"),
                   _u("arg", 16, "barrier id"),
               )),
)


def _lay_out(cls: InstrClass) -> InstrClass:
    """Assign bit positions in table order from bit 0 and pad the class width with a reserved field."""
    placed, lo = [], 0
    for f in cls.fields:
        placed.append(PlacedField(f, lo))
        lo += f.bits
    if lo > cls.width or cls.width % WORD_BITS:
        raise AssertionError(f"ISA table: class {cls.name} needs {lo} bits but is {cls.width} wide")
    if lo < cls.width:
        placed.append(PlacedField(Field("reserved", cls.width - lo, FieldKind.RESERVED, "must be zero"), lo))
    return InstrClass(cls.name, cls.opcode, cls.unit, cls.width, cls.doc, cls.fields, tuple(placed),
                      {p.field.name: p for p in placed})


ISA: dict[Opcode, InstrClass] = {c.opcode: _lay_out(c) for c in _CLASSES}
BY_NAME: dict[str, InstrClass] = {c.name: c for c in ISA.values()}


def check_coverage(classes=None) -> None:
    """Every bit of every class (default: the ISA's) is covered exactly once, the opcode sits at bits [2:0],
    and every enum field is wide enough for its values; runs when this module is imported."""
    for cls in ISA.values() if classes is None else classes:
        seen = [0] * cls.width
        for p in cls.layout:
            for b in range(p.lo, p.hi + 1):
                seen[b] += 1
        if any(s != 1 for s in seen):
            bad = [b for b, s in enumerate(seen) if s != 1]
            raise AssertionError(f"ISA table: class {cls.name} bits covered other than once: {bad[:8]}")
        if cls.layout[0].field.name != "opcode" or cls.layout[0].lo != 0:
            raise AssertionError(f"ISA table: class {cls.name} must start with the opcode")
        for p in cls.layout:
            if p.field.kind is FieldKind.ENUM and p.field.hi_value >= (1 << p.field.bits):
                raise AssertionError(f"ISA table: {cls.name}.{p.field.name} too narrow for its enum")


check_coverage()
