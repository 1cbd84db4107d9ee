"""Round-to-nearest quantization with magnitude N:M pruning (the basic methods; calibrated ones come later).

A quantized row is ``w ~= row_scale * gs[k // group] * q[k]``: q is the stored b-bit value, gs a small
group multiplier chosen so that ``q * gs`` is always an INT8 operand for the DSPs.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from flightc.compress.formats import WeightFormat, group_scale_max, q_range
from flightc.errors import UnsupportedError


def pack_nibbles(q: np.ndarray) -> np.ndarray:
    """Rows of values in -8..7 (any integer type), two a byte, even columns in the low nibble: the layout of a
    packed 4-bit row (flightc.compress.packing) and of the values a QuantWeight holds."""
    u = np.asarray(q).astype(np.uint8) & np.uint8(0xF)
    return u[:, 0::2] | (u[:, 1::2] << np.uint8(4))


def _from_nibbles(b: np.ndarray) -> np.ndarray:
    """The inverse of :func:`pack_nibbles`: int8 values, sign-extended."""
    out = np.empty((b.shape[0], 2 * b.shape[1]), np.int8)
    out[:, 0::2] = ((b & np.uint8(0xF)) ^ np.uint8(8)).view(np.int8) - np.int8(8)
    out[:, 1::2] = ((b >> np.uint8(4)) ^ np.uint8(8)).view(np.int8) - np.int8(8)
    return out


class ReleasedWeightError(UnsupportedError):
    """A compressed weight's values were dropped once packed into the bundle (``compile_model(keep_integer=False)``)."""


@dataclass(frozen=True, init=False, eq=False)
class QuantWeight:
    """A compressed linear weight [N, K]: stored values, group multipliers and per-row float scales.

    ``q`` (int8 [N, K], zero where pruned) is held two values a byte for formats of 4 bits or fewer, and ``keep``
    (bool [N, K], the positions stored, n of every m; None when dense) as bits: a 7B model's values would take 6.5
    GB as int8 and its masks as much again as bools. ``keep_bits`` passes the mask already packed. A compile that
    does not keep its integer graph releases the values once they are packed (:meth:`release`)."""

    fmt: WeightFormat
    gs: np.ndarray  # uint8 [N, ceil(K / group)] (empty when group == 0): the last group may be partial
    row_scale: np.ndarray  # float64 [N]
    keep_bits: np.ndarray | None  # uint8 [N, ceil(K / 8)]: the keep mask's bits, LSB first (np.packbits, little)

    def __init__(self, fmt: WeightFormat, q: np.ndarray, gs: np.ndarray, row_scale: np.ndarray,
                 keep: np.ndarray | None, keep_bits: np.ndarray | None = None, nibbles: np.ndarray | None = None):
        if keep is not None:
            keep_bits = np.packbits(np.asarray(keep, bool), axis=1, bitorder="little")
        shape = (nibbles.shape[0], 2 * nibbles.shape[1]) if q is None else tuple(q.shape)
        if nibbles is None and fmt.bits <= 4 and shape[1] % 2 == 0 and q.size and 0 not in q.strides \
                and -8 <= q.min() and q.max() <= 7:  # not a shape-only view, nor values a nibble would not hold
            nibbles, q = pack_nibbles(q), None
        for name, value in (("fmt", fmt), ("_q", q), ("_nib", nibbles), ("_shape", shape), ("gs", gs),
                            ("row_scale", row_scale), ("keep_bits", keep_bits), ("_released", False)):
            object.__setattr__(self, name, value)

    @classmethod
    def stacked(cls, parts: list["QuantWeight"]) -> "QuantWeight":
        """The rows of ``parts`` (one format and column count) as one weight, without unpacking their values."""
        first = parts[0]
        cat = (lambda name: None if getattr(first, name) is None else np.concatenate([getattr(p, name) for p in parts]))
        if any(p._nib is None for p in parts):  # some rows held as int8: all of them as int8
            return cls(first.fmt, np.concatenate([p.q for p in parts]), cat("gs"), cat("row_scale"), None,
                       cat("keep_bits"))
        return cls(first.fmt, None, cat("gs"), cat("row_scale"), None, cat("keep_bits"), cat("_nib"))

    def as_dense(self, fmt: WeightFormat) -> "QuantWeight":
        """These values, zeros where pruned, as a dense weight of ``fmt`` (this one's width and groups): how a
        config that decodes no N:M of this weight's pattern stores it (:meth:`WeightFormat.stored_for`)."""
        if (fmt.bits, fmt.group, fmt.sparse) != (self.fmt.bits, self.fmt.group, False):
            raise ValueError(f"{self.fmt.label()} stored as {fmt.label()}: only its dense format of one width and "
                             f"group holds the same values")
        self._check()
        return QuantWeight(fmt, self._q, self.gs, self.row_scale, None, nibbles=self._nib)

    def _check(self) -> None:
        if self._released:
            raise ReleasedWeightError(
                f"this {self.fmt.label()} weight's values were released after packing (a compile that does not keep "
                f"its integer graph, as `flightc compile` does); compile with compile_model(..., keep_integer=True) "
                f"to run the integer reference or repack it")

    def q_rows(self, r0: int = 0, r1: int | None = None) -> np.ndarray:
        """The stored values of rows ``r0`` to ``r1`` as int8."""
        self._check()
        return self._q[r0:r1] if self._nib is None else _from_nibbles(self._nib[r0:r1])

    @property
    def q(self) -> np.ndarray:
        """The stored values, int8 [N, K], zero where pruned."""
        return self.q_rows()

    def release(self) -> None:
        """Drop the values and the mask (they live on packed in the bundle); the format, shape, multipliers and
        scales stay. Anything that needs the values afterwards is refused (:class:`ReleasedWeightError`)."""
        for name in ("_q", "_nib", "keep_bits"):
            object.__setattr__(self, name, None)
        object.__setattr__(self, "_released", True)

    @property
    def keep(self) -> np.ndarray | None:
        self._check()
        if self.keep_bits is None:
            return None
        return np.unpackbits(self.keep_bits, axis=1, count=self._shape[1], bitorder="little").view(bool)

    @property
    def shape(self) -> tuple[int, int]:
        return self._shape

    def int8_operand(self, r0: int = 0, r1: int | None = None) -> np.ndarray:
        """What the dequantizer feeds the DSPs: q * gs, INT8 (of rows ``r0`` to ``r1``)."""
        q = self.q_rows(r0, r1)
        if not self.fmt.group:
            return q.astype(np.int8)
        rows, k = q.shape
        whole = self.fmt.whole(k)
        if whole != k:  # a partial last group: zero columns to whole groups, and back
            q = np.pad(q, ((0, 0), (0, whole - k)))
        g = self.gs[r0:r1].astype(np.int16)[:, :, None]
        return (q.reshape(rows, -1, self.fmt.group).astype(np.int16) * g).astype(np.int8).reshape(rows, whole)[:, :k]

    def columns(self, k: int) -> "QuantWeight":
        """The first ``k`` columns of a weight quantized zero-padded to whole blocks and groups: its last group
        partial, a partial last block keeping its largest real weights (a padded zero ranks after every real one in
        N:M pruning, ties going to the lower column), at most N of them; packing adds the padded positions a block
        of fewer than N real columns still stores (:func:`flightc.compress.packing.padded_keep`)."""
        keep = None if self.keep_bits is None else self.keep[:, :k]
        groups = -(-k // self.fmt.group) if self.fmt.group else 0
        return QuantWeight(self.fmt, self.q[:, :k], self.gs[:, :groups], self.row_scale, keep)

    def kept(self) -> np.ndarray:
        return np.ones(self.shape, dtype=bool) if self.keep is None else self.keep

    def dequantized(self) -> np.ndarray:
        """The float weight the compressed model computes with (a block of rows at a time, in cache)."""
        out = np.empty(self.shape, np.float64)
        for r in range(0, len(out), RTN_ROWS):
            np.multiply(self.int8_operand(r, r + RTN_ROWS), self.row_scale[r:r + RTN_ROWS, None], out=out[r:r + RTN_ROWS])
        return out


@lru_cache(maxsize=None)
def _sorting_network(m: int) -> tuple[tuple[int, int], ...]:
    """Batcher's odd-even merge sort of ``m`` (a power of two) values: compare-exchange pairs (63 for 16)."""
    pairs: list[tuple[int, int]] = []

    def merge(lo: int, hi: int, r: int) -> None:
        step = 2 * r
        if step < hi - lo:
            merge(lo, hi, step)
            merge(lo + r, hi, step)
            pairs.extend((i, i + r) for i in range(lo + r, hi - r, step))
        else:
            pairs.append((lo, lo + r))

    def sort(lo: int, hi: int) -> None:
        if hi > lo:
            mid = (lo + hi) // 2
            sort(lo, mid)
            sort(mid + 1, hi)
            merge(lo, hi, 1)

    sort(0, m - 1)
    return tuple(pairs)


def kth_smallest(blocks: np.ndarray, k: int) -> np.ndarray:
    """The ``k``-th smallest (from 0) of each block along the last axis, [..., 1]. For blocks of a power of two
    up to 16, a sorting network run on all blocks at once: one array operation per comparator, where
    np.partition visits the blocks one by one (the same values either way)."""
    m = blocks.shape[-1]
    if m & (m - 1) or m > 16:
        return np.partition(blocks, k, axis=-1)[..., k:k + 1]
    lanes = [np.array(blocks[..., i]) for i in range(m)]  # copies (a single block's lane would be a view)
    for i, j in _sorting_network(m):
        low = np.minimum(lanes[i], lanes[j])
        np.maximum(lanes[i], lanes[j], out=lanes[j])
        lanes[i] = low
    return lanes[k][..., None]


def nm_mask(w: np.ndarray, n: int, m: int) -> np.ndarray:
    """Keep the n largest-magnitude weights of every block of m along K (ties: lower index). Each block's n-th
    largest magnitude, then everything above it and the first of those equal to it up to n: the first n of a
    stable sort by descending magnitude, without sorting the weights."""
    rows, k = w.shape
    blocks = np.abs(w).reshape(rows, k // m, m)
    nth = kth_smallest(blocks, m - n)
    above, equal = blocks > nth, blocks == nth
    room = n - above.sum(axis=-1, keepdims=True, dtype=np.int16)
    return (above | (equal & (np.cumsum(equal, axis=-1, dtype=np.int16) <= room))).reshape(rows, k)


def q_max(bits: int) -> float:
    """The largest stored value of a b-bit weight (the step is amax / q_max)."""
    return float(max(q_range(bits)[1], 1))


def row_scales(row_amax, fmt: WeightFormat, tiny: float):
    """The float scale of each row: its largest step (amax / q_max) over the largest group multiplier, so
    every group's multiplier fits; the step itself without groups. numpy arrays or torch tensors."""
    step = row_amax / q_max(fmt.bits)
    return (step / group_scale_max(fmt.bits) if fmt.group else step).clip(tiny, None)


def group_multipliers(group_amax, row_scale, bits: int):
    """Each group's step (amax / q_max) in units of its row scale, rounded into 1 .. group_scale_max."""
    return (group_amax / q_max(bits) / row_scale).round().clip(1, group_scale_max(bits))


RTN_ROWS = 256  # rows rounded at a time, so the temporaries stay in cache (each row's result is its own)


def quantize_rtn(w: np.ndarray, fmt: WeightFormat) -> QuantWeight:
    """Prune by magnitude to fmt's N:M pattern, then round to nearest with two-level scales."""
    w = np.asarray(w)
    if w.shape[0] <= RTN_ROWS:
        return _quantize_rows(w, fmt)
    parts = [_quantize_rows(w[r:r + RTN_ROWS], fmt) for r in range(0, w.shape[0], RTN_ROWS)]
    return QuantWeight.stacked(parts)


def _quantize_rows(w: np.ndarray, fmt: WeightFormat) -> QuantWeight:
    """Round to nearest in float64, as the float reference dequantizes. Magnitudes are compared and their maxima
    taken in the weight's own dtype (exact: widening to float64 keeps every value and their order), so only the
    division meets float64 operands, and no mask is applied twice (a pruned weight is 0 and rounds to 0)."""
    w = np.asarray(w)
    if not np.issubdtype(w.dtype, np.floating):
        w = w.astype(np.float64)
    rows, k = w.shape
    if fmt.whole(k) != k:  # quantized as the zero-padded weight of whole blocks and groups, cut back to k columns
        qw = _quantize_rows(np.pad(w, ((0, 0), (0, fmt.whole(k) - k))), fmt)
        return qw.columns(k)
    mask = nm_mask(w, fmt.n, fmt.m) if fmt.sparse else None
    if mask is not None:
        w = np.where(mask, w, w.dtype.type(0))
    lo, hi = q_range(fmt.bits)
    tiny = np.finfo(np.float64).tiny
    mag = np.abs(w)
    group = fmt.group or k
    amax = mag.reshape(rows, k // group, group).max(axis=-1).astype(np.float64)  # [N, G]
    row_scale = row_scales(amax.max(axis=1), fmt, tiny)
    if fmt.group:
        gs = group_multipliers(amax, row_scale[:, None], fmt.bits).astype(np.uint8)
        eff = row_scale[:, None] * gs.astype(np.float64)
    else:
        gs = np.zeros((rows, 0), np.uint8)
        eff = row_scale[:, None]
    x = np.divide(w.reshape(rows, -1, group), eff[:, :, None], dtype=np.float64)
    np.round(x, out=x)
    np.clip(x, lo, hi, out=x)
    q = x.astype(np.int8).reshape(rows, k)
    return QuantWeight(fmt, q, gs, row_scale, mask)
