"""The weight stream of a matrix-vector product: packed rows re-cut into chunks a lane group takes a cycle at a time.

A lane group (``hw/lane_group.py``) multiplies two output rows against one shared activation in each of its
``slots`` DSP48E2 slots, so it takes the weights of ``slots`` columns of a *row pair* per cycle: a chunk. A chunk
holds, for the pair's first row and then its second, the stored values of those columns followed by their sparse
positions, each as the same LSB-first bit fields as in the packed row (``flightc.compress.packing``): a chunk is
a concatenation of byte ranges of the two packed rows, so the stream carries exactly the bytes of the packed
rows, re-ordered. Group multipliers are applied per *segment* of ``SEGMENT`` columns (the N:M block along K, and
the smallest group), each segment's own multiplier.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from flightc.compress.formats import WeightFormat
from flightc.errors import UnsupportedError

SEGMENT = 16  # columns whose products share one group multiplier (the smallest group; one N:16 block)


def stored_per_chunk(fmt: WeightFormat, slots: int) -> int:
    """Stored (non-zero) weights of one row in a chunk of ``slots`` columns."""
    return slots * fmt.n // fmt.m


def row_part_bytes(fmt: WeightFormat, slots: int) -> tuple[int, int]:
    """(value bytes, position bytes) of one row in a chunk (positions in the format's encoding)."""
    return stored_per_chunk(fmt, slots) * fmt.bits // 8, _chunk_meta_bits(fmt, slots) // 8


def _chunk_meta_bits(fmt: WeightFormat, slots: int) -> int:
    return slots // fmt.m * fmt.block_meta_bits


def chunk_bytes(fmt: WeightFormat, slots: int) -> int:
    """Bytes of one chunk: both rows' values and positions."""
    return 2 * sum(row_part_bytes(fmt, slots))


def check_stream(fmt: WeightFormat, slots: int, k: int) -> None:
    """Raise unless rows of length ``k`` in ``fmt`` cut into whole, byte-aligned chunks of ``slots`` columns."""
    nnz = stored_per_chunk(fmt, slots)
    if slots % SEGMENT or slots % fmt.m or (nnz * fmt.bits) % 8 or _chunk_meta_bits(fmt, slots) % 8:
        whole = max(SEGMENT, 8 * fmt.m // fmt.n, 8 * fmt.m // math.gcd(8, fmt.block_meta_bits or 8))
        raise UnsupportedError(f"{fmt.label()}: a chunk of {slots} columns is not a whole number of bytes and "
                               f"{SEGMENT}-column segments; use a multiple of {whole} slots")
    if k % slots:
        raise UnsupportedError(f"{fmt.label()}: K = {k} is not a multiple of the lane group's {slots} columns")


def segment_multipliers(rows_bytes: np.ndarray, fmt: WeightFormat, k: int) -> np.ndarray:
    """Each row's multiplier per segment of SEGMENT columns, [rows, k // SEGMENT] (1 without groups)."""
    rows = rows_bytes.shape[0]
    if not fmt.group:
        return np.ones((rows, k // SEGMENT), np.int64)
    at = sum(fmt.row_parts(k)[:2])
    gs = rows_bytes[:, at:at + k // fmt.group].astype(np.int64)
    return np.repeat(gs, fmt.group // SEGMENT, axis=1)


def pair_chunks(rows_bytes: np.ndarray, fmt: WeightFormat, k: int, slots: int) -> tuple[np.ndarray, np.ndarray]:
    """A row pair's stream: (chunks uint8 [k // slots, chunk_bytes], multipliers [k // slots, 2, slots // SEGMENT])."""
    check_stream(fmt, slots, k)
    if rows_bytes.shape[0] != 2:
        raise ValueError(f"a row pair has 2 rows, not {rows_bytes.shape[0]}")
    vb, ib = row_part_bytes(fmt, slots)
    values = fmt.row_parts(k)[0]
    steps = k // slots
    parts = []
    for r in range(2):
        row = rows_bytes[r]
        parts.append(row[:steps * vb].reshape(steps, vb))
        parts.append(row[values:values + steps * ib].reshape(steps, ib))
    gs = segment_multipliers(rows_bytes, fmt, k).reshape(2, steps, slots // SEGMENT).transpose(1, 0, 2)
    return np.concatenate(parts, axis=1), gs


# ----------------------------------------------------------------------------------- a tile's stream image
CHUNK_ALIGN = 16  # bytes: every chunk starts this far into its beat or a multiple of it (a lane feed's choices)


def chunk_stride(fmt: WeightFormat, slots: int) -> int:
    """Bytes a chunk takes in the stream: its bytes rounded up to whole CHUNK_ALIGN bytes. Chunks lie back to back
    and may straddle beats (a lane feed assembles them: :func:`feed_step`), so only chunks that are not whole
    16-byte units carry padding: at 64 slots the small sparse ones (12 to 28 bytes, to 16 or 32) and W3's sparse
    ones (40 to 48, 56 to 64)."""
    return -(-chunk_bytes(fmt, slots) // CHUNK_ALIGN) * CHUNK_ALIGN


def feed_step(held: int, stride: int, beat: int) -> tuple[bool, bool, int]:
    """One cycle of a lane feed (hw/lane_feed.py) that holds ``held`` bytes of its block's stream past the chunks it
    has sent: (whether it takes a beat, whether it sends a chunk, the bytes it holds after). It sends a chunk from
    what it holds, else with the beat it takes where that completes one (the cycle the beat arrives), else only
    takes; at a block's end what it holds is padding (a block is padded to whole beats), so it holds 0 again."""
    if held >= stride:
        return False, True, held - stride
    if held + beat >= stride:
        return True, True, held + beat - stride
    return True, False, held + beat


def feed_window(strides: list[int], beat: int) -> int:
    """Bytes a lane feed's window holds: whole beats, enough for its longest chunk (and at least a beat): a feed
    holds fewer than the larger of a chunk and a beat (:func:`feed_step`)."""
    return -(-max(*strides, beat) // beat) * beat


def feed_holds(stride: int, beat: int) -> list[int]:
    """Every ``held`` a lane feed may send a chunk of ``stride`` bytes at, from a block's start: where in its window
    (the beats it holds, then the one it takes) a chunk can start."""
    seen, held = [], 0
    while True:
        take, send, after = feed_step(held, stride, beat)
        if send:
            if held in seen:
                return sorted(seen)
            seen.append(held)
        held = after


def block_columns(fmt: WeightFormat, beat: int) -> int:
    """Columns of a *block*: those whose multipliers one beat holds (two rows, a byte each per group); without
    groups a pair is one block."""
    return (beat // 2) * fmt.group if fmt.group else 0


@dataclass(frozen=True)
class StreamShape:
    """How a tile of ``rows`` x ``k`` weights streams into ``groups`` lane groups of ``slots`` slots through
    ``beat``-byte beats: every group takes ``pairs`` row pairs (rows past the tile's are zero), each a record of
    ``pair_beats`` beats. In memory the tile is striped over ``channels`` channels, ``unit`` bytes at a time; a
    group's stream lies on its master's ``channels // groups`` channels, a unit on each in turn."""

    fmt: WeightFormat
    rows: int
    k: int
    groups: int
    slots: int
    beat: int
    unit: int
    channels: int

    def __post_init__(self) -> None:
        check_stream(self.fmt, self.slots, self.k)
        if self.channels % self.groups or self.unit % self.beat:
            raise UnsupportedError(f"a stream over {self.channels} channels in {self.groups} groups, {self.unit}-byte "
                                   f"units of {self.beat}-byte beats: the channels must split evenly among the "
                                   f"groups and a unit must be whole beats")

    @property
    def per_group(self) -> int:
        """Channels of one group's master."""
        return self.channels // self.groups

    @property
    def pairs(self) -> int:
        return -(-self.rows // (2 * self.groups))

    def blocks(self) -> list[int]:
        """Columns of each block of a pair."""
        per = block_columns(self.fmt, self.beat) or self.k
        return [min(per, self.k - c) for c in range(0, self.k, per)]

    def block_beats(self, cols: int) -> int:
        """Beats of one block: its multipliers (grouped formats), then its chunks, padded to whole beats."""
        chunks = -(-cols // self.slots) * chunk_stride(self.fmt, self.slots)
        return (1 if self.fmt.group else 0) + -(-chunks // self.beat)

    @property
    def pair_beats(self) -> int:
        return sum(self.block_beats(c) for c in self.blocks())

    @property
    def used_bytes(self) -> int:
        """Bytes of one group's row pairs."""
        return self.pairs * self.pair_beats * self.beat

    @property
    def group_bytes(self) -> int:
        """Bytes of one group's stream, padded to whole units on each of its channels (every group's is as long)."""
        step = self.unit * self.per_group
        return -(-self.used_bytes // step) * step

    @property
    def nbytes(self) -> int:
        return self.groups * self.group_bytes


def _unit_order(shape: StreamShape) -> np.ndarray:
    """For each unit of the image in memory order, (group, its unit in the group's stream): unit u lies on channel
    u mod channels, whose master feeds group (u mod channels) // per_group, which reads its channels' units in
    memory order."""
    units = shape.nbytes // shape.unit
    u = np.arange(units)
    channel = u % shape.channels
    group = channel // shape.per_group
    nth = (u // shape.channels) * shape.per_group + channel % shape.per_group
    return np.stack([group, nth], axis=1)


def stream_image(rows_bytes: np.ndarray, shape: StreamShape) -> bytes:
    """A tile's packed rows [rows, row_bytes] as the bytes its striped region holds: row pair p streams into group
    p mod groups as a record of blocks (a beat of the block's group multipliers, row 0's then row 1's of each
    group; then its chunks, each row's values then positions, padded to the chunk stride, the block padded to whole
    beats); each group's stream is cut into units dealt round its master's channels. Every pair is cut the same
    way, so each block is laid out for all of them at once (:func:`rows_of_image` is the inverse)."""
    fmt, S, B, k = shape.fmt, shape.slots, shape.beat, shape.k
    rows = rows_bytes.shape[0]
    if rows != shape.rows:
        raise ValueError(f"{rows} rows, the shape says {shape.rows}")
    G, P, U, PB = shape.groups, shape.pairs, shape.unit, shape.pair_beats * B
    full = np.zeros((2 * P * G, rows_bytes.shape[1]), np.uint8)
    full[:rows] = rows_bytes
    pairs = full.reshape(P, G, 2, -1)  # row 2 (p x groups + g) + r: pair p of group g
    vb, ib = row_part_bytes(fmt, S)
    stride = chunk_stride(fmt, S)
    values, positions, _ = fmt.row_parts(k)
    streams = np.zeros((G, shape.group_bytes), np.uint8)
    recs = streams[:, :P * PB].reshape(G, P, PB)
    at, c0 = 0, 0
    for cols in shape.blocks():
        if fmt.group:
            g0, n = c0 // fmt.group, cols // fmt.group
            mult = pairs[:, :, :, values + positions + g0:values + positions + g0 + n]  # [P, G, row, group]
            recs[:, :, at:at + 2 * n] = mult.transpose(1, 0, 3, 2).reshape(G, P, 2 * n)
            at += B
        nch, j0 = cols // S, c0 // S
        body = recs[:, :, at:at + nch * stride].reshape(G, P, nch, stride)
        for r in range(2):
            base = r * (vb + ib)
            body[..., base:base + vb] = pairs[:, :, r, j0 * vb:(j0 + nch) * vb].reshape(P, G, nch, vb).transpose(1, 0, 2, 3)
            body[..., base + vb:base + vb + ib] = pairs[:, :, r, values + j0 * ib:values + (j0 + nch) * ib].reshape(
                P, G, nch, ib).transpose(1, 0, 2, 3)
        at += -(-nch * stride // B) * B
        c0 += cols
    order = _unit_order(shape)
    return streams.reshape(G, -1, U)[order[:, 0], order[:, 1]].tobytes()


def rows_of_image(image: bytes, shape: StreamShape) -> np.ndarray:
    """The inverse of :func:`stream_image`: the tile's packed rows [rows, row_bytes] (what the functional simulator
    multiplies by). Every pair of every group is cut the same way, so each block is cut for all of them at once."""
    fmt, S, B, k = shape.fmt, shape.slots, shape.beat, shape.k
    data = np.frombuffer(image, np.uint8)
    if data.size != shape.nbytes:
        raise ValueError(f"a stream image of {data.size} bytes; the shape takes {shape.nbytes}")
    G, P, U, PB = shape.groups, shape.pairs, shape.unit, shape.pair_beats * B
    order = _unit_order(shape)
    streams = np.zeros((G, shape.group_bytes // U, U), np.uint8)
    streams[order[:, 0], order[:, 1]] = data.reshape(-1, U)
    recs = streams.reshape(G, -1)[:, :P * PB].reshape(G, P, PB)
    vb, ib = row_part_bytes(fmt, S)
    stride = chunk_stride(fmt, S)
    values, positions, scales = fmt.row_parts(k)
    out = np.zeros((P, G, 2, values + positions + scales), np.uint8)  # row 2 (q x groups + g) + r
    at, c0 = 0, 0
    for cols in shape.blocks():
        if fmt.group:
            g0, n = c0 // fmt.group, cols // fmt.group
            mult = recs[:, :, at:at + 2 * n].reshape(G, P, n, 2)  # each group's multiplier for row 0, then row 1
            out[:, :, :, values + positions + g0:values + positions + g0 + n] = mult.transpose(1, 0, 3, 2)
            at += B
        nch = cols // S
        body = recs[:, :, at:at + nch * stride].reshape(G, P, nch, stride)
        j0 = c0 // S
        for r in range(2):
            base = r * (vb + ib)
            out[:, :, r, j0 * vb:(j0 + nch) * vb] = body[..., base:base + vb].reshape(G, P, -1).transpose(1, 0, 2)
            out[:, :, r, values + j0 * ib:values + (j0 + nch) * ib] = \
                body[..., base + vb:base + vb + ib].reshape(G, P, -1).transpose(1, 0, 2)
        at += -(-nch * stride // B) * B
        c0 += cols
    return out.reshape(2 * P * G, -1)[:shape.rows]


# ----------------------------------------------------------------------------------- an image written row by row
@dataclass(frozen=True)
class ImageRows:
    """How one row of a stream image of dense, ungrouped rows (a K cache, written a position at a time) is stored
    with ST.img: its ``pieces`` chunks of ``piece_bytes`` each, ``piece_stride`` apart in the pair's record, from
    ``piece_columns`` values apart in the buffer; the record and row offsets as the ST's log2 fields."""

    groups_log2: int
    pair_log2: int
    half_log2: int
    pieces: int
    piece_bytes: int
    piece_stride: int
    piece_columns: int


def image_rows(shape: StreamShape) -> ImageRows:
    """The ST.img fields of ``shape``'s rows, or UnsupportedError where a row cannot be written on its own."""
    fmt, S = shape.fmt, shape.slots
    vb, ib = row_part_bytes(fmt, S)
    pair = shape.pair_beats * shape.beat
    if ib or fmt.group or fmt.bits not in (4, 8):
        raise UnsupportedError(f"{fmt.label()}: only dense, ungrouped INT8 or INT4 rows are written a row at a time "
                               f"(ST moves INT8 bytes or packs them to INT4)")
    if pair & (pair - 1) or vb & (vb - 1) or shape.unit % pair:
        raise UnsupportedError(f"{fmt.label()} rows of {shape.k}: a row pair's record ({pair} bytes) and a row's "
                               f"part of a chunk ({vb} bytes) must be powers of two, the record within a "
                               f"{shape.unit}-byte stripe unit")
    return ImageRows(shape.groups.bit_length() - 1, pair.bit_length() - 1, vb.bit_length() - 1, shape.k // S, vb,
                     chunk_stride(fmt, S), S)


def image_cols(shape: StreamShape) -> ImageRows:
    """The ST.img fields of ``shape``'s columns (ST.img_col writes a column, a byte a row: a V cache kept transposed),
    or UnsupportedError where a column cannot be written on its own."""
    fmt, S = shape.fmt, shape.slots
    vb, ib = row_part_bytes(fmt, S)
    pair = shape.pair_beats * shape.beat
    if ib or fmt.group or fmt.bits != 8:
        raise UnsupportedError(f"{fmt.label()}: only dense, ungrouped INT8 rows are written a column at a time")
    if pair & (pair - 1) or vb & (vb - 1):
        raise UnsupportedError(f"{fmt.label()} rows of {shape.k}: a row pair's record ({pair} bytes) and a row's "
                               f"part of a chunk ({vb} bytes) must be powers of two")
    return ImageRows(shape.groups.bit_length() - 1, pair.bit_length() - 1, vb.bit_length() - 1, 1, 1,
                     chunk_stride(fmt, S), 1)


def record_columns(columns: int, slots: int) -> int:
    """Columns of an image whose rows' records are a power of two of chunks: at least ``columns``."""
    chunks = -(-columns // slots)
    return slots << max(0, (chunks - 1).bit_length())
