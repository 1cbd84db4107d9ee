"""Exact integer arithmetic of the datapath.

These functions *define* what the hardware computes. The functional simulator, the integer
reference and the RTL (generated later from the same constants) implement them identically,
so that their outputs agree bit for bit. All math is numpy int64 with explicit rounding:
``round_shift`` rounds half up (add half, arithmetic shift right).
"""
from __future__ import annotations

import math
from functools import lru_cache

import numpy as np

from flightc.records import REQUANT
from flightc.rope import RopeScaling

I8_MIN, I8_MAX = -128, 127
I32_MIN, I32_MAX = -(1 << 31), (1 << 31) - 1

REQUANT_RECORD_BYTES = REQUANT.size  # per output row in PRM (flightc.records.REQUANT)
MULT_BITS = 31  # requantization multipliers are normalized to [2^30, 2^31)
RMS_FRAC_BITS = 8  # the integer RMS carries this many fractional bits
ROPE_FRAC_BITS = 14  # cos / sin are INT16 in Q1.14
EXP_FRAC_BITS = 16  # softmax exponent argument in fixed point
EXP_LUT_INDEX_BITS = 8  # 2^f for f in [0, 1) is looked up with this many bits of f
SOFTMAX_RECIP_BITS = 40  # reciprocal of the row sum: floor(2^40 / sum)
NORM_SHIFT_MAX = 8  # an ISA rule: a norm's shift is at most this, so that its divisor rms << shift < 2^NORM_DEN_BITS
NORM_DEN_BITS = 40  # rms < 2^32 (the square root of an int64)
NORM_RECIP_BITS = 32  # the divisor normalized to [2^32, 2^33); its reciprocal floor(2^64 / d) in (2^31, 2^32]
NORM_GUARD_BITS = 16  # fraction bits of the scaled element x * gain / 2^e
PROB_BITS = 8  # attention probabilities are UINT8: p * 256 saturated to 255
LUT_ENTRIES = 256  # activation LUT indexed by an INT8 value


def round_shift(x: np.ndarray, shift: int | np.ndarray) -> np.ndarray:
    """x / 2^shift rounded half up, for int64 x and shift >= 0."""
    x = np.asarray(x, dtype=np.int64)
    if isinstance(shift, (int, np.integer)):  # one shift for every element: its half as a scalar
        return np.right_shift(x + ((1 << (int(shift) - 1)) if shift > 0 else 0), int(shift))
    shift = np.asarray(shift, dtype=np.int64)
    half = np.where(shift > 0, np.left_shift(np.int64(1), np.maximum(shift - 1, 0)), 0)
    return np.right_shift(x + half, shift)


def round_div(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a / b rounded half up, for b > 0 (exact integer division)."""
    a = np.asarray(a, dtype=np.int64)
    b = np.asarray(b, dtype=np.int64)
    return np.floor_divide(2 * a + b, 2 * b)


def clamp(x: np.ndarray, lo: int, hi: int) -> np.ndarray:
    return np.clip(x, lo, hi)


def sat_i8(x: np.ndarray) -> np.ndarray:
    return clamp(x, I8_MIN, I8_MAX).astype(np.int8)


def sat_i32(x: np.ndarray) -> np.ndarray:
    return clamp(x, I32_MIN, I32_MAX).astype(np.int32)


# ----- INT4 KV cache ------------------------------------------------------------------------
I4_MIN, I4_MAX = -8, 7


def sat_i4(x: np.ndarray) -> np.ndarray:
    """What an INT4 KV cache holds for an INT8 value: saturated to [-8, 7] (ST.pack4)."""
    return clamp(x, I4_MIN, I4_MAX).astype(np.int8)


def pack_int4(x: np.ndarray) -> np.ndarray:
    """Rows of an even number of INT8 values -> saturated INT4 pairs, low nibble first (uint8 [rows, cols/2])."""
    u = sat_i4(x).view(np.uint8) & 0xF
    return u[:, 0::2] | (u[:, 1::2] << 4)


def unpack_int4(b: np.ndarray, count: int) -> np.ndarray:
    """Inverse of pack_int4: uint8 [rows, >= count/2] -> sign-extended INT8 [rows, count]."""
    lo, hi = (b & 0xF).astype(np.int8), (b >> 4).astype(np.int8)
    v = np.stack([lo, hi], axis=-1).reshape(b.shape[0], -1)[:, :count]
    return np.where(v >= 8, v - 16, v).astype(np.int8)


# ----- requantization -----------------------------------------------------------------------

def quantize_multiplier(real: float) -> tuple[int, int]:
    """(mult, shift) with mult in [2^30, 2^31) and real ~= mult / 2^shift; shift within 0..63."""
    if real <= 0 or not math.isfinite(real):
        raise ValueError(f"requantization scale must be positive and finite, got {real}")
    mant, exp = math.frexp(real)  # real = mant * 2^exp, mant in [0.5, 1)
    mult = int(round(mant * (1 << MULT_BITS)))
    shift = MULT_BITS - exp
    if mult == 1 << MULT_BITS:
        mult //= 2
        shift -= 1
    while shift > 63:
        mult = (mult + 1) // 2
        shift -= 1
    if shift < 0:
        raise ValueError(f"requantization scale {real} is too large (>= 2^31)")
    return mult, shift


def requantize(acc: np.ndarray, mult: np.ndarray, shift: np.ndarray) -> np.ndarray:
    """acc * mult / 2^shift rounded half up (int64; the caller saturates)."""
    return round_shift(np.asarray(acc, np.int64) * np.asarray(mult, np.int64), shift)


def pack_requant(mult: np.ndarray, shift: np.ndarray, bias: np.ndarray | None = None) -> bytes:
    """One requantization record (flightc.records.REQUANT) per row."""
    values = {"mult": mult, "shift": shift} | ({"bias": bias} if bias is not None else {})
    return REQUANT.pack(len(mult), **values)


def unpack_requant(data: bytes | np.ndarray, rows: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(multiplier, shift, bias) per row."""
    r = REQUANT.unpack(data, rows)
    return r["mult"], r["shift"], r["bias"]


def mpe_requant_i8(acc: np.ndarray, mult: np.ndarray, shift: np.ndarray, lut: np.ndarray | None) -> np.ndarray:
    """MPE output stage REQ_I8: per-row requantization to INT8, optionally through an activation LUT.

    ``acc`` already holds the row bias (the output stage adds it before requantizing)."""
    y = sat_i8(requantize(acc, mult, shift))
    if lut is not None:
        y = np.asarray(lut, np.int8)[y.astype(np.int64) + 128]
    return y


# ----- special-function unit ----------------------------------------------------------------

def isqrt(v: np.ndarray) -> np.ndarray:
    """floor(sqrt(v)) for int64 v >= 0, exact; a negative v is refused (ValueError)."""
    v = np.asarray(v, np.int64)
    if (v < 0).any():
        raise ValueError(f"the square root's radicand is negative ({int(v.min())}): a negative epsilon in the norm "
                         f"record, or a sum of squares past int64")
    return np.array([math.isqrt(x) for x in v.ravel().tolist()], np.int64).reshape(v.shape)


def norm_scale(den: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A norm row's divisor ``den`` (rms << shift, 1 <= den < 2^NORM_DEN_BITS) as (e, m): e = bit length - 1, and
    m = floor(2^64 / d) for d = den normalized to NORM_RECIP_BITS + 1 bits (truncated). One division per row."""
    den = np.asarray(den, np.int64)
    if (den < 1).any() or (den >= 1 << NORM_DEN_BITS).any():
        raise ValueError(f"norm divisor outside [1, 2^{NORM_DEN_BITS})")
    es, ms = [], []
    for v in den.ravel().tolist():
        e = v.bit_length() - 1
        d = (v >> max(e - NORM_RECIP_BITS, 0)) << max(NORM_RECIP_BITS - e, 0)
        es.append(e)
        ms.append((1 << (2 * NORM_RECIP_BITS)) // d)
    return np.array(es, np.int64).reshape(den.shape), np.array(ms, np.int64).reshape(den.shape)


def norm_apply(p: np.ndarray, e: np.ndarray, m: np.ndarray) -> np.ndarray:
    """p / den rounded half up, through the row's (e, m) of :func:`norm_scale`, before saturation: p is clamped to
    +-2^(e+9) (beyond 256 den, where the result saturates anyway), scaled to q = floor(p 2^G / 2^e) with
    G = NORM_GUARD_BITS (|q| <= 2^(G+9)), and q m (about p / den 2^(G + NORM_RECIP_BITS)) is shifted back."""
    p = np.asarray(p, np.int64)
    lim = np.left_shift(np.int64(1), e + 9)
    p = np.clip(p, -lim, lim)
    q = (p >> np.maximum(e - NORM_GUARD_BITS, 0)) << np.maximum(NORM_GUARD_BITS - e, 0)
    return round_shift(q * m, NORM_GUARD_BITS + NORM_RECIP_BITS)


def rmsnorm(x: np.ndarray, gain: np.ndarray, eps_q: int, shift: int) -> np.ndarray:
    """RMSNorm of INT32 rows to INT8: y = x * gain / (rms << shift), rms with RMS_FRAC_BITS fractional bits.

    rms = isqrt((sum(x^2) // cols) << 2*RMS_FRAC_BITS + eps_q); gain folds the norm weight and the output scale.
    The division goes through one reciprocal per row (:func:`norm_scale`, :func:`norm_apply`).
    """
    x = np.asarray(x, np.int64)
    cols = x.shape[-1]
    mean_sq = np.sum(x * x, axis=-1, keepdims=True) // cols
    rms = isqrt((mean_sq << (2 * RMS_FRAC_BITS)) + eps_q)
    rms = np.maximum(rms, 1)
    e, m = norm_scale(rms << shift)
    return sat_i8(norm_apply(x * np.asarray(gain, np.int64), e, m))


def layernorm(x: np.ndarray, gain: np.ndarray, beta: np.ndarray, eps_q: int, shift: int) -> np.ndarray:
    """LayerNorm of INT32 rows to INT8: centre on the rounded mean, then as RMSNorm, plus an INT8-unit bias."""
    x = np.asarray(x, np.int64)
    cols = x.shape[-1]
    xc = x - round_div(np.sum(x, axis=-1, keepdims=True), np.int64(cols))
    var = np.sum(xc * xc, axis=-1, keepdims=True) // cols
    rms = np.maximum(isqrt((var << (2 * RMS_FRAC_BITS)) + eps_q), 1)
    e, m = norm_scale(rms << shift)
    return sat_i8(norm_apply(xc * np.asarray(gain, np.int64), e, m) + np.asarray(beta, np.int64))


def rope(x: np.ndarray, cos: np.ndarray, sin: np.ndarray, head_dim: int) -> np.ndarray:
    """Rotate-half RoPE of INT8 rows (tokens x heads*head_dim); cos/sin are INT16 Q1.14 rows of head_dim/2."""
    x = np.asarray(x, np.int64)
    rows, cols = x.shape
    h = x.reshape(rows, cols // head_dim, head_dim)
    half = head_dim // 2
    x1, x2 = h[..., :half], h[..., half:]
    c = np.asarray(cos, np.int64)[:, None, :]
    s = np.asarray(sin, np.int64)[:, None, :]
    y1 = round_shift(x1 * c - x2 * s, ROPE_FRAC_BITS)
    y2 = round_shift(x2 * c + x1 * s, ROPE_FRAC_BITS)
    return sat_i8(np.concatenate([y1, y2], axis=-1).reshape(rows, cols))


def rope_table(positions: np.ndarray, head_dim: int, theta: float,
               scaling: RopeScaling = RopeScaling()) -> tuple[np.ndarray, np.ndarray]:
    """INT16 Q1.14 cos and sin of LLaMA's rotary angles, positions x head_dim/2 (a compile-time constant), with
    the model's RoPE scaling (its frequencies, and YaRN's factor on cos and sin)."""
    ang = np.asarray(positions, np.float64)[:, None] * scaling.inv_freq(head_dim, theta)[None, :]
    one = (1 << ROPE_FRAC_BITS) * scaling.attention_factor
    return (np.round(np.cos(ang) * one).astype(np.int16), np.round(np.sin(ang) * one).astype(np.int16))


def exp2_lut() -> np.ndarray:
    """2^(i / 256) in Q1.16 for i = 0..255 (17-bit unsigned)."""
    i = np.arange(1 << EXP_LUT_INDEX_BITS, dtype=np.float64)
    return np.round(np.exp2(i / (1 << EXP_LUT_INDEX_BITS)) * (1 << EXP_FRAC_BITS)).astype(np.int64)


_EXP2 = exp2_lut()


def softmax_visible(shape: tuple[int, int], offset: int, window: int = 0, any_row: bool = False) -> np.ndarray:
    """The columns each row of a causal softmax sees: c <= r + offset (and, with a window w > 0, c > r + offset - w)
    (read-only: shared by every softmax of that shape); a row that sees none is refused unless ``any_row`` (a block
    of a blocked softmax)."""
    return _visible(tuple(shape), int(offset), int(window), any_row)


@lru_cache(maxsize=4096)
def _visible(shape: tuple[int, int], offset: int, window: int, any_row: bool = False) -> np.ndarray:
    rows, cols = shape
    last = np.arange(rows)[:, None] + offset
    visible = np.arange(cols)[None, :] <= last
    if window:
        visible &= np.arange(cols)[None, :] > last - window
    if not any_row and not visible.any(axis=1).all():
        raise ValueError("softmax: a row sees no column (offset too small)")
    visible.setflags(write=False)
    return visible


def softmax_row_max(scores: np.ndarray, offset: int, window: int = 0) -> np.ndarray:
    """Each row's maximum over the columns it sees (what MV.out_max hands a SOFTMAX with max_given)."""
    s = np.asarray(scores, np.int64)
    return np.where(softmax_visible(s.shape, offset, window), s, np.int64(-(1 << 40))).max(axis=1)


def softmax(scores: np.ndarray, mult: int, shift: int, offset: int, window: int = 0,
            keep: np.ndarray | None = None) -> np.ndarray:
    """Causal softmax of INT32 score rows to UINT8 probabilities (p * 256, saturated at 255).

    Row r sees columns c <= r + offset (and, with a window w > 0, c > r + offset - w; with ``keep``, a boolean of
    the scores' shape, only where it is set: a block-sparse mask, flightc/compress/block_mask.py). u = (s - max) *
    mult >> shift is (x - max) * log2(e) with EXP_FRAC_BITS fractional bits; 2^u = LUT[frac] >> -int(u); p = e *
    floor(2^40 / sum) >> 32. The blocked softmax's parts (:func:`softmax_part_max`, :func:`softmax_part_sum`,
    :func:`softmax_part_norm`) compute the same over blocks of columns, exactly.
    """
    s = np.asarray(scores, np.int64)
    visible = softmax_visible(s.shape, offset, window)
    if keep is not None:
        visible = visible & keep
        if not visible.any(axis=1).all():
            raise ValueError("softmax: a row sees no column under the mask (a block mask keeps the diagonal)")
    e = _powers(s, _visible_max(s, visible), mult, shift, visible)
    return _normalized(e, softmax_recip(e.sum(axis=1)))


SCORE_NONE = -(1 << 31)  # a blocked softmax's running maximum before any visible column: max(it, s) = s for every INT32
SUM_BITS = 32  # a blocked softmax's running sum is a UINT32 (flightc.records.SOFTMAX_STATS)


def _visible_max(s: np.ndarray, visible: np.ndarray) -> np.ndarray:
    return np.where(visible, s, np.int64(-(1 << 40))).max(axis=1)


def _powers(s: np.ndarray, m: np.ndarray, mult: int, shift: int, visible: np.ndarray) -> np.ndarray:
    """2^((s - max) * log2(e)) in EXP_FRAC_BITS fixed point for the visible scores (0 elsewhere)."""
    u = np.right_shift((np.where(visible, s, m[:, None]) - m[:, None]) * np.int64(mult), shift)  # floor
    u = np.maximum(u, -(32 << EXP_FRAC_BITS))
    ipart = np.right_shift(u, EXP_FRAC_BITS)  # <= 0
    idx = np.right_shift(np.bitwise_and(u, (1 << EXP_FRAC_BITS) - 1), EXP_FRAC_BITS - EXP_LUT_INDEX_BITS)
    return np.where(visible, np.right_shift(_EXP2[idx], -ipart), 0)


def _given_max(s: np.ndarray, row_max: np.ndarray, visible: np.ndarray) -> np.ndarray:
    """A SUM or NORM part's row maxima, refused where a visible score exceeds one (its MAX parts did not run)."""
    m = np.asarray(row_max, np.int64)
    if (np.where(visible, s, m[:, None]) > m[:, None]).any():
        raise ValueError("softmax: a visible score exceeds its row's maximum in the statistics (every block's MAX "
                         "part runs before the SUM and NORM parts)")
    return m


def softmax_recip(total: np.ndarray) -> np.ndarray:
    """floor(2^SOFTMAX_RECIP_BITS / sum) of each row's sum of powers (at least the row maximum's own, 2^16)."""
    return np.floor_divide(np.int64(1) << SOFTMAX_RECIP_BITS, np.asarray(total, np.int64))


def _normalized(e: np.ndarray, recip: np.ndarray) -> np.ndarray:
    p = np.right_shift(e * np.asarray(recip, np.int64)[:, None] + (np.int64(1) << 31), 32)
    return np.minimum(p, (1 << PROB_BITS) - 1).astype(np.uint8)


def softmax_part_max(scores: np.ndarray, offset: int, window: int = 0, before: np.ndarray | None = None) -> np.ndarray:
    """A blocked softmax's MAX part over a block of columns (offset and window from its first column): each row's
    largest visible score, and ``before`` (the blocks before's, unless this is the first); SCORE_NONE where none."""
    s = np.asarray(scores, np.int64)
    m = np.maximum(_visible_max(s, softmax_visible(s.shape, offset, window, any_row=True)), SCORE_NONE)
    return m if before is None else np.maximum(m, np.asarray(before, np.int64))


def softmax_part_sum(scores: np.ndarray, row_max: np.ndarray, mult: int, shift: int, offset: int, window: int = 0,
                     before: np.ndarray | None = None) -> np.ndarray:
    """A blocked softmax's SUM part: each row's sum of the powers of its visible scores given its maximum over every
    block, plus ``before``; refused where it reaches 2^SUM_BITS (a row of about 32,800 columns and more)."""
    s = np.asarray(scores, np.int64)
    visible = softmax_visible(s.shape, offset, window, any_row=True)
    total = _powers(s, _given_max(s, row_max, visible), mult, shift, visible).sum(axis=1)
    if before is not None:
        total = total + np.asarray(before, np.int64)
    if (total >> SUM_BITS).any():
        raise ValueError(f"softmax: a row's sum of powers reaches 2^{SUM_BITS}, beyond a blocked softmax's statistics "
                         f"(rows of about 32,800 columns and more): use the whole softmax")
    return total


def softmax_part_norm(scores: np.ndarray, row_max: np.ndarray, recip: np.ndarray, mult: int, shift: int,
                      offset: int, window: int = 0) -> np.ndarray:
    """A blocked softmax's NORM part: the block's probabilities given each row's maximum and the reciprocal of its
    sum over every block (:func:`softmax_recip`)."""
    s = np.asarray(scores, np.int64)
    visible = softmax_visible(s.shape, offset, window, any_row=True)
    return _normalized(_powers(s, _given_max(s, row_max, visible), mult, shift, visible), recip)


def emul(a: np.ndarray, b: np.ndarray, mult: int, shift: int) -> np.ndarray:
    """Element-wise INT8 x INT8 product requantized to INT8 (the gated MLP's silu(gate) * up)."""
    return sat_i8(requantize(np.asarray(a, np.int64) * np.asarray(b, np.int64), mult, shift))


def deq(x: np.ndarray, mult: int, shift: int) -> np.ndarray:
    """INT8 -> INT32 residual scale (the token embedding entering the residual stream)."""
    return sat_i32(requantize(np.asarray(x, np.int64), mult, shift))


def deq_add(res: np.ndarray, x: np.ndarray, mult: int, shift: int) -> np.ndarray:
    """res + DEQ(x), saturated to INT32 (a second embedding added into the residual stream)."""
    return sat_i32(np.asarray(res, np.int64) + deq(x, mult, shift))


def relu(x: np.ndarray) -> np.ndarray:
    return np.maximum(x, 0.0)


def residual_add(res: np.ndarray, acc: np.ndarray, mult: np.ndarray, shift: np.ndarray) -> np.ndarray:
    """MPE output stage REQ_ADD: res + requantize(acc), saturated to INT32."""
    return sat_i32(np.asarray(res, np.int64) + requantize(acc, mult, shift))


def activation_lut(fn, in_scale: float, out_scale: float) -> np.ndarray:
    """INT8 -> INT8 table of a scalar activation, entry i for input value i - 128 (compile-time constant)."""
    x = (np.arange(LUT_ENTRIES, dtype=np.float64) - 128) * in_scale
    return sat_i8(np.round(fn(x) / out_scale).astype(np.int64))


def silu(x: np.ndarray) -> np.ndarray:
    return x / (1.0 + np.exp(-x))


def gelu_tanh(x: np.ndarray) -> np.ndarray:
    """GELU's tanh approximation, as PyTorch's ``gelu(approximate="tanh")`` (transformers' gelu_pytorch_tanh)."""
    return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)))
