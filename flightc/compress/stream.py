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

import numpy as np

from flightc.compress.formats import WeightFormat
from flightc.errors import UnsupportedError

SEGMENT = 16  # columns whose products share one group multiplier (the smallest group; one N:16 block)


def stored_per_chunk(fmt: WeightFormat, slots: int) -> int:
    """Stored (non-zero) weights of one row in a chunk of ``slots`` columns."""
    return slots * fmt.n // fmt.m


def row_part_bytes(fmt: WeightFormat, slots: int) -> tuple[int, int]:
    """(value bytes, position bytes) of one row in a chunk."""
    nnz = stored_per_chunk(fmt, slots)
    return nnz * fmt.bits // 8, nnz * fmt.index_bits // 8


def chunk_bytes(fmt: WeightFormat, slots: int) -> int:
    """Bytes of one chunk: both rows' values and positions."""
    return 2 * sum(row_part_bytes(fmt, slots))


def check_stream(fmt: WeightFormat, slots: int, k: int) -> None:
    """Raise unless rows of length ``k`` in ``fmt`` cut into whole, byte-aligned chunks of ``slots`` columns."""
    nnz = stored_per_chunk(fmt, slots)
    if slots % SEGMENT or slots % fmt.m or (nnz * fmt.bits) % 8 or (nnz * fmt.index_bits) % 8:
        raise UnsupportedError(f"{fmt.label()}: a chunk of {slots} columns is not a whole number of bytes and "
                               f"{SEGMENT}-column segments; use a multiple of {max(SEGMENT, 8 * fmt.m // fmt.n)} slots")
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
