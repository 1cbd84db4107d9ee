"""The packed weight layout in memory and the dequantizer that reads it back.

One packed row of length K (``WeightFormat.row_bytes``):
  values   nnz b-bit two's-complement values, LSB first, ascending by column
  indices  which positions each block of M keeps (sparse formats only), LSB first, in the format's encoding:
           POSITIONS: nnz log2(M)-bit positions within their blocks, ascending in each;
           BITMASK: an M-bit mask a block, bit i set where position i is kept;
           RANK: a ceil(log2 C(M, N))-bit rank a block, the kept set's mask's index among the masks of N set
           bits in ascending order (the combinatorial number system's colex rank)
  groups   K / group unsigned 8-bit multipliers (grouped formats only), each at most
           ``group_scale_max(bits)`` (an ISA rule: q x multiplier is an INT8 operand)
The dequantizer (:func:`unpack_rows`) is what the hardware's MMU does; the integer reference
never calls it, so a packing bug shows up as a simulator/reference mismatch.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np

from flightc.compress.formats import SparseEncoding, WeightFormat, group_scale_max
from flightc.compress.quantize import QuantWeight, pack_nibbles
from flightc.errors import ProgramError, UnsupportedError


def _pack_bits(values: np.ndarray, bits: int) -> np.ndarray:
    """Pack each row of small integers (two's complement kept to ``bits``) LSB first into bytes."""
    rows, count = values.shape
    if bits == 8:
        return np.asarray(values).astype(np.int8).view(np.uint8).reshape(rows, count)
    if bits == 4 and count % 2 == 0:  # the common case, without the bit-plane detour
        return pack_nibbles(values)
    u = np.asarray(values, np.int64) & ((1 << bits) - 1)
    bit_planes = ((u[..., None] >> np.arange(bits)) & 1).astype(np.uint8).reshape(rows, count * bits)
    return np.packbits(bit_planes, axis=1, bitorder="little")


def _unpack_bits(data: np.ndarray, count: int, bits: int, signed: bool, dtype=np.int64) -> np.ndarray:
    """``count`` ``bits``-bit fields of each row, little-endian, as ``dtype`` (two's complement if ``signed``)."""
    rows = data.shape[0]
    if bits == 8:  # one field a byte: the bytes themselves
        return (data[:, :count].view(np.int8) if signed else data[:, :count]).astype(dtype)
    if 8 % bits == 0:  # whole fields in every byte: shifted out of the bytes, no bit planes
        shifts = np.arange(0, 8, bits, dtype=np.uint8)
        u = ((data[:, :, None] >> shifts) & np.uint8((1 << bits) - 1)).reshape(rows, -1)[:, :count].astype(dtype)
    else:
        plane = np.unpackbits(data, axis=1, bitorder="little")[:, : count * bits].reshape(rows, count, bits)
        u = (plane.astype(dtype) << np.arange(bits, dtype=dtype)).sum(axis=-1, dtype=dtype)
    if signed:
        half = dtype(1 << (bits - 1))
        u = (u ^ half) - half  # sign extension
    return u


@lru_cache(maxsize=None)
def _positions_of_masks(n: int, m: int) -> tuple[np.ndarray, np.ndarray]:
    """For every ``m``-bit keep mask: how many bits it sets, and (for those setting ``n``) the ascending positions
    of its set bits, [2^m, n] (zeros for the others)."""
    bits = (np.arange(1 << m)[:, None] >> np.arange(m)) & 1
    count = bits.sum(axis=1)
    pos = np.zeros((1 << m, n), np.uint8)
    sel = count == n
    pos[sel] = np.nonzero(bits[sel])[1].reshape(-1, n)
    return count, pos


@lru_cache(maxsize=None)
def _masks_by_rank(n: int, m: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``m``-bit masks of ``n`` set bits in ascending order (a rank's mask), and each mask's rank (-1 for the
    masks of another count)."""
    count, _ = _positions_of_masks(n, m)
    masks = np.flatnonzero(count == n)
    rank = np.full(1 << m, -1, np.int64)
    rank[masks] = np.arange(masks.size)
    return masks, rank


def _block_masks(keep_bits: np.ndarray, k: int, m: int) -> np.ndarray | None:
    """Each block's keep mask as an integer, [rows, k // m], from a row's mask bits (LSB first); None where
    blocks do not sit whole in bytes or in a 16-bit integer."""
    rows = keep_bits.shape[0]
    if k % 8 or m > 16:
        return None
    b = keep_bits[:, :k // 8].astype(np.int32)
    if m % 8 == 0:
        b = b.reshape(rows, k // m, m // 8)
        return b[..., 0] if m == 8 else b[..., 0] | (b[..., 1] << 8)
    if 8 % m == 0:
        return ((b[:, :, None] >> (m * np.arange(8 // m))) & ((1 << m) - 1)).reshape(rows, k // m)
    return None


def _block_positions(keep_bits: np.ndarray, k: int, n: int, m: int) -> np.ndarray:
    """In-block positions of the kept weights, ascending per block, [rows, k // m, n], from the keep mask's bits
    [rows, ceil(k / 8)]: each block's mask read as an integer looks its positions up (no index arrays of every
    kept weight, which made a 1B model's packing slow)."""
    rows = keep_bits.shape[0]
    mask = _block_masks(keep_bits, k, m)
    if mask is None:
        keep = np.unpackbits(keep_bits, axis=1, count=k, bitorder="little").reshape(rows, k // m, m)
        _refuse_other_counts(keep.sum(axis=2), n, m)
        return np.nonzero(keep)[2].reshape(rows, k // m, n)
    count, pos = _positions_of_masks(n, m)
    _refuse_other_counts(count[mask], n, m)
    return pos[mask]


def _refuse_other_counts(counts: np.ndarray, n: int, m: int) -> None:
    """Raise, naming the first, if a block [rows, blocks] keeps other than ``n`` weights."""
    wrong = counts != n
    if wrong.any():
        r, b = np.argwhere(wrong)[0]
        raise UnsupportedError(f"weight row {r}, block {b} keeps {int(counts[r, b])} of {m} weights where its "
                               f"{n}:{m} format keeps {n}; prune with flightc.compress.quantize")


def padded_keep(keep: np.ndarray, columns: int, n: int, m: int) -> np.ndarray:
    """A keep mask [rows, K] widened to ``columns`` (whole blocks of ``m``): each block keeps ``n`` positions, its
    real kept ones first and then its first padded columns, which hold zeros (so positions stay ascending)."""
    rows, k = keep.shape
    out = np.zeros((rows, columns), bool)
    out[:, :k] = keep
    short = -k % m  # padded columns of the partial block (none when k is whole blocks)
    real = keep[:, k - k % m:].sum(axis=1, dtype=np.int64)  # the partial block's kept real columns
    j = np.arange(columns - k)  # the padded columns, from k on
    in_partial = j < short
    at = np.where(in_partial, j, (j - short) % m)  # each one's rank among its block's padded columns
    out[:, k:] = at[None, :] < np.where(in_partial, n - real[:, None], n)
    return out


def pack_weight(qw: QuantWeight, columns: int | None = None) -> np.ndarray:
    """Packed rows, uint8 [N, row_bytes(columns)]: the weight zero-padded to ``columns`` (default: its own K
    rounded up to whole blocks and groups), padded columns zero, padded groups' multipliers zero."""
    fmt = qw.fmt
    rows, k = qw.shape
    columns = fmt.whole(k) if columns is None else columns
    if columns < k or columns % fmt.unit:
        raise ValueError(f"{fmt.label()}: cannot pack K = {k} into {columns} columns (whole {fmt.unit}-column "
                         f"blocks and groups, at least K)")
    q = qw.q if columns == k else np.pad(qw.q, ((0, 0), (0, columns - k)))
    nnz = fmt.nnz(columns)
    if fmt.sparse:
        bits = qw.keep_bits if columns == k else np.packbits(padded_keep(qw.keep, columns, fmt.n, fmt.m), axis=1,
                                                             bitorder="little")
        pos = _block_positions(bits, columns, fmt.n, fmt.m)
        vals = np.take_along_axis(q.reshape(rows, columns // fmt.m, fmt.m), pos, axis=2).reshape(rows, nnz)
        parts = [_pack_bits(vals, fmt.bits), _pack_metadata(pos, fmt)]
    else:
        parts = [_pack_bits(q, fmt.bits)]
    if fmt.group:
        big = np.argwhere(np.asarray(qw.gs) > group_scale_max(fmt.bits))
        if big.size:
            r, g = big[0]
            raise UnsupportedError(f"{fmt.label()}: group multiplier {int(qw.gs[r, g])} of row {r}, group {g} exceeds "
                                   f"{group_scale_max(fmt.bits)}, the largest the ISA allows for {fmt.bits}-bit "
                                   f"weights (q x multiplier must stay INT8); quantize with flightc.compress.quantize")
        gs = np.asarray(qw.gs).astype(np.uint8)
        parts.append(np.pad(gs, ((0, 0), (0, columns // fmt.group - gs.shape[1]))))
    out = np.concatenate(parts, axis=1)
    assert out.shape[1] == fmt.row_bytes(columns)
    return out


def _pack_metadata(pos: np.ndarray, fmt: WeightFormat) -> np.ndarray:
    """The indices part of packed rows from the kept positions [rows, blocks, n] (ascending in each block)."""
    rows, blocks, _ = pos.shape
    if fmt.chosen is SparseEncoding.POSITIONS:
        return _pack_bits(pos.reshape(rows, blocks * fmt.n), fmt.index_bits)
    masks = (np.int64(1) << pos.astype(np.int64)).sum(axis=2)
    if fmt.encoding is SparseEncoding.BITMASK:
        return _pack_bits(masks, fmt.m)
    return _pack_bits(_masks_by_rank(fmt.n, fmt.m)[1][masks], fmt.block_meta_bits)


def sparse_positions(rows_bytes: np.ndarray, fmt: WeightFormat, k: int, dtype=np.int64) -> np.ndarray:
    """In-block positions of the stored weights of sparse packed rows, [n, nnz], as their encoding stores them; a
    mask or a rank that names other than N positions is refused (ProgramError), and so are POSITIONS that do not
    ascend in their block (the lane groups' zero insertion relies on it, hw/lane_group.py)."""
    values, meta, _ = fmt.row_parts(k)
    rows, blocks = rows_bytes.shape[0], k // fmt.m
    raw = rows_bytes[:, values:values + meta]
    if fmt.chosen is SparseEncoding.POSITIONS:
        pos = _unpack_bits(raw, blocks * fmt.n, fmt.index_bits, signed=False, dtype=dtype)
        rising = np.diff(pos.reshape(rows, blocks, fmt.n), axis=2) > 0
        if not rising.all():
            r, b, _ = np.argwhere(~rising)[0]
            raise ProgramError(f"weight row {r}, block {b}: sparse positions "
                               f"{pos[r, b * fmt.n:(b + 1) * fmt.n].tolist()} are not distinct and ascending, as the "
                               f"ISA requires; pack with flightc.compress.packing.pack_weight")
        return pos
    code = _unpack_bits(raw, blocks, fmt.block_meta_bits, signed=False)
    if fmt.encoding is SparseEncoding.BITMASK:
        masks, what = code, "bitmask"
    else:
        by_rank = _masks_by_rank(fmt.n, fmt.m)[0]
        masks, what = by_rank[np.minimum(code, by_rank.size - 1)], "rank"
        over = code >= by_rank.size
        if over.any():
            r, b = np.argwhere(over)[0]
            raise ProgramError(f"weight row {r}, block {b}: sparse rank {int(code[r, b])} is past the "
                               f"{by_rank.size} sets of {fmt.n} of {fmt.m} positions; pack with "
                               f"flightc.compress.packing.pack_weight")
    count, pos = _positions_of_masks(fmt.n, fmt.m)
    wrong = count[masks] != fmt.n
    if wrong.any():
        r, b = np.argwhere(wrong)[0]
        raise ProgramError(f"weight row {r}, block {b}: the sparse {what} keeps {int(count[masks[r, b]])} of "
                           f"{fmt.m} positions where {fmt.label()} keeps {fmt.n}; pack with "
                           f"flightc.compress.packing.pack_weight")
    return pos[masks].reshape(rows, blocks * fmt.n).astype(dtype)


def unpack_rows(rows_bytes: np.ndarray, fmt: WeightFormat, k: int) -> np.ndarray:
    """Dequantizer: packed rows -> INT8 operand rows [n, k] (q * group multiplier at each kept position).

    A multiplier above ``group_scale_max(bits)`` breaks an ISA rule and is refused (ProgramError), so the product is
    always an INT8 value: the hardware may apply multipliers to group partial sums instead, with the same result."""
    if fmt.bits == 8 and not fmt.sparse and not fmt.group:  # the bytes are the operands (an INT8 KV cache's keys)
        return rows_bytes[:, :k].view(np.int8).copy()
    n = rows_bytes.shape[0]
    nnz = fmt.nnz(k)
    vbytes, ibytes, _ = fmt.row_parts(k)
    vals = _unpack_bits(rows_bytes[:, :vbytes], nnz, fmt.bits, signed=True, dtype=np.int16)
    if fmt.sparse:
        pos = sparse_positions(rows_bytes, fmt, k, np.int16)
        block = np.arange(nnz) // fmt.n
        cols = block[None, :] * fmt.m + pos
        dense = np.zeros((n, k), np.int16)  # q x multiplier: at most 255 x 255 in magnitude, well inside int16
        np.put_along_axis(dense, cols, vals, axis=1)
    else:
        dense = vals
    if fmt.group:
        gs = rows_bytes[:, vbytes + ibytes: vbytes + ibytes + k // fmt.group].astype(np.int16)
        big = np.argwhere(gs > group_scale_max(fmt.bits))
        if big.size:
            r, g = big[0]
            raise ProgramError(f"weight row {r}, group {g}: multiplier {int(gs[r, g])} exceeds "
                               f"{group_scale_max(fmt.bits)}, the largest the ISA allows for {fmt.bits}-bit weights "
                               f"(q x multiplier must stay INT8)")
        dense = dense * np.repeat(gs, fmt.group, axis=1)
    return dense.astype(np.int8)
