"""The datapath's integer arithmetic (flightc.numerics) compiled with numba for the functional simulator's fast path.

Each public function here takes the arguments of, and returns what, its namesake in :mod:`flightc.numerics` returns,
bit for bit: numerics stays the definition (the integer reference and fsim's slow path run it), these are its
compiled form, one loop per element where numpy takes a dozen array passes over a row of a few hundred values
(tests/test_kernels.py checks every one against numerics, edge values included). Where the definition refuses
its input (a norm's radicand past int64, a softmax row that sees nothing), the kernel reports it and numerics
runs instead, so the error says the same.

numba (a registry package: ``make`` installs it) compiles each kernel on first use and keeps the machine code in
``__pycache__`` (``cache=True``), so later processes load it in milliseconds.
"""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
from numba import njit

from flightc import numerics as nm
from flightc.isa.table import OutMode

_EXP2 = nm.exp2_lut()
_I8_MIN, _I8_MAX, _I32_MIN, _I32_MAX = nm.I8_MIN, nm.I8_MAX, nm.I32_MIN, nm.I32_MAX
_RMS_FRAC, _ROPE_FRAC, _EXP_FRAC = nm.RMS_FRAC_BITS, nm.ROPE_FRAC_BITS, nm.EXP_FRAC_BITS
_EXP_INDEX, _RECIP, _PROB = nm.EXP_LUT_INDEX_BITS, nm.SOFTMAX_RECIP_BITS, nm.PROB_BITS
_LUT_ENTRIES = nm.LUT_ENTRIES
_DEN_BITS, _NORM_RECIP, _GUARD = nm.NORM_DEN_BITS, nm.NORM_RECIP_BITS, nm.NORM_GUARD_BITS
_JIT = dict(cache=True)


# ----- shifts as numpy defines them for any count (LLVM leaves counts past 63 undefined) -----

@njit(**_JIT)
def _shr(x, s):
    if s < 0 or s > 63:
        return np.int64(-1) if x < 0 else np.int64(0)
    return x >> s


@njit(**_JIT)
def _shl(x, s):
    if s < 0 or s > 63:
        return np.int64(0)
    return x << s


@njit(**_JIT)
def _round_shift(x, s):
    return _shr(x + (_shl(np.int64(1), s - 1) if s > 0 else np.int64(0)), s)


@njit(**_JIT)
def _clamp(x, lo, hi):
    return lo if x < lo else (hi if x > hi else x)


# ----- the MPE's output stage fused with its accumulator check (the fast path's one call an MPE instruction) -----

# what the output stage writes: flightc.isa.table.OutMode's values, as ints numba compiles in as constants
ACC32, REQ_I8, REQ_I32, REQ_ADD = (int(m) for m in (OutMode.ACC32, OutMode.REQ_I8, OutMode.REQ_I32, OutMode.REQ_ADD))


FITS, OVERFLOW, MISSHAPEN = range(3)  # what the output stage's pass says


@njit(**_JIT)
def _mpe_output(kind, acc, limit, bias, mult, shift, lut, res, out):
    m, n = out.shape
    if acc.shape[0] != m or acc.shape[1] != n or lut.size and lut.size < _LUT_ENTRIES or kind != ACC32 and (
            bias.size < n or mult.size < n or shift.size < n) or kind == REQ_ADD and (
            res.shape[0] < m or res.shape[1] < n):
        return MISSHAPEN  # never a byte past an operand
    for i in range(m):
        for j in range(n):
            v = np.int64(acc[i, j])
            if limit and (v >= limit or v < -limit):
                return OVERFLOW
            if kind == ACC32:
                out[i, j] = v
                continue
            y = _round_shift((v + bias[j]) * mult[j], shift[j])
            if kind == REQ_I8:
                y = _clamp(y, _I8_MIN, _I8_MAX)
                out[i, j] = lut[y + 128] if lut.size else y
            elif kind == REQ_I32:
                out[i, j] = _clamp(y, _I32_MIN, _I32_MAX)
            else:
                out[i, j] = _clamp(np.int64(res[i, j]) + y, _I32_MIN, _I32_MAX)
    return FITS


def _rows(a: np.ndarray) -> np.ndarray:
    """Per-column values as one int64 row (a record's are already)."""
    if type(a) is np.ndarray and a.dtype == np.int64 and a.ndim == 1:
        return a
    return np.ascontiguousarray(a, np.int64).reshape(-1)


NO_ROWS = np.zeros(0, np.int64)
NO_LUT = np.zeros(0, np.int8)
NO_RES = np.zeros((0, 0), np.int32)
# The compiled pass itself, for a caller holding its arguments ready (fsim's bound MPE instructions): ``kind``, the
# sums, the limit 2^(bits - 1) (0: none), per-column int64 bias, mult and shift (NO_ROWS for ACC32), a LUT of
# LUT_ENTRIES or NO_LUT, the residual rows or NO_RES, and ``out`` [m, n] to fill. Says FITS, OVERFLOW, or MISSHAPEN
# where an operand is not the size the output asks for (nothing is read or written then).
output_stage = _mpe_output


def acc_within(acc: np.ndarray, bits: int) -> bool:
    """Whether every accumulator of ``acc`` [m, n] fits ``bits`` signed bits (the MPE refuses an overflow)."""
    return _mpe_output(ACC32, acc, np.int64(1) << (bits - 1), NO_ROWS, NO_ROWS, NO_ROWS, NO_LUT, NO_RES,
                       np.empty(acc.shape, np.int32)) == FITS


def mpe_output(kind: int, acc: np.ndarray, bits: int, bias: np.ndarray | None = None, mult: np.ndarray | None = None,
               shift: np.ndarray | None = None, lut: np.ndarray | None = None,
               res: np.ndarray | None = None) -> np.ndarray | None:
    """What the MPE's output stage writes for the raw sums ``acc`` [m, n] (int64, or float32 holding integers
    exactly), by ``kind`` (an OutMode's value): ACC32 the sums as INT32, REQ_I8 :func:`mpe_requant_i8` of acc + bias
    (through ``lut`` if given), REQ_I32 :func:`requant_i32`, REQ_ADD :func:`residual_add` into ``res``; None where a
    sum does not fit ``bits`` signed bits (the MPE refuses the instruction). One pass over the sums."""
    if lut is not None and np.size(lut) < nm.LUT_ENTRIES:
        raise ValueError(f"an activation LUT has {nm.LUT_ENTRIES} entries, not {np.size(lut)}")
    out = np.empty(acc.shape, np.int8 if kind == REQ_I8 else np.int32)
    per_column = [NO_ROWS if v is None else _rows(v) for v in (bias, mult, shift)]
    said = _mpe_output(kind, acc, np.int64(1) << (bits - 1), *per_column,
                       NO_LUT if lut is None else np.asarray(lut, np.int8), NO_RES if res is None else res, out)
    if said == MISSHAPEN:
        raise ValueError(f"output stage: sums {acc.shape}, {len(per_column[0])} records, residual "
                         f"{None if res is None else res.shape}: not the same rows and columns")
    return out if said == FITS else None


def mpe_requant_i8(acc: np.ndarray, mult: np.ndarray, shift: np.ndarray, lut: np.ndarray | None) -> np.ndarray:
    """:func:`flightc.numerics.mpe_requant_i8`; ``acc`` [m, n] int64 (the bias in), per-column ``mult``/``shift``."""
    if lut is not None and np.size(lut) < nm.LUT_ENTRIES:
        return nm.mpe_requant_i8(acc, mult, shift, lut)  # which says what is wrong with it
    return _unchecked(REQ_I8, acc, mult, shift, lut, None)


def requant_i32(acc: np.ndarray, mult: np.ndarray, shift: np.ndarray) -> np.ndarray:
    """``sat_i32(requantize(acc, mult, shift))`` of :mod:`flightc.numerics` (the MPE's REQ_I32)."""
    return _unchecked(REQ_I32, acc, mult, shift, None, None)


def residual_add(res: np.ndarray, acc: np.ndarray, mult: np.ndarray, shift: np.ndarray) -> np.ndarray:
    """:func:`flightc.numerics.residual_add` (as int32)."""
    return _unchecked(REQ_ADD, acc, mult, shift, None, res)


def _unchecked(kind: int, acc, mult, shift, lut, res) -> np.ndarray:
    """The output stage of sums that already hold their bias, with no accumulator limit."""
    out = np.empty(acc.shape, np.int8 if kind == REQ_I8 else np.int32)
    if _mpe_output(kind, acc, 0, np.zeros(acc.shape[1], np.int64), _rows(mult), _rows(shift),
                   NO_LUT if lut is None else np.asarray(lut, np.int8), NO_RES if res is None else res,
                   out) == MISSHAPEN:
        raise ValueError(f"output stage: sums {acc.shape} with {np.size(mult)} multipliers, {np.size(shift)} shifts, "
                         f"residual {None if res is None else np.shape(res)}")
    return out


# ----- special-function unit -----

@njit(**_JIT)
def _isqrt(v):
    r = np.int64(np.sqrt(np.float64(v)))
    while r > 0 and r > v // r:
        r -= 1
    while (r + 1) <= v // (r + 1):
        r += 1
    return r


@njit(**_JIT)
def _norm_row(x, gain, beta, centre, eps_q, shift, out, i):
    """One row of RMSNorm (``centre`` False) or LayerNorm; False where numerics refuses the row."""
    cols = x.shape[1]
    mean = np.int64(0)
    if centre:
        total = np.int64(0)
        for j in range(cols):
            total += x[i, j]
        mean = (2 * total + cols) // (2 * cols)
    sq = np.int64(0)
    for j in range(cols):
        d = x[i, j] - mean
        sq += d * d
    rad = _shl(sq // cols, 2 * _RMS_FRAC) + eps_q
    if rad < 0:
        return False
    rms = max(_isqrt(rad), np.int64(1))
    den = _shl(rms, shift)
    if den < 1 or den >= np.int64(1) << _DEN_BITS:
        return False
    e = np.int64(0)
    while (den >> (e + 1)) > 0:
        e += 1
    d = (den >> max(e - _NORM_RECIP, 0)) << max(_NORM_RECIP - e, 0)
    top = np.uint64(0xFFFFFFFFFFFFFFFF)  # floor(2^64 / d) = floor((2^64 - 1) / d), plus one where d divides 2^64
    du = np.uint64(d)
    q = top // du
    rec = np.int64(q + np.uint64(1)) if top - q * du == du - np.uint64(1) else np.int64(q)
    lim = np.int64(1) << (e + 9)
    for j in range(cols):
        p = _clamp((x[i, j] - mean) * gain[j], -lim, lim)
        p = (p >> max(e - _GUARD, 0)) << max(_GUARD - e, 0)
        y = _round_shift(p * rec, _GUARD + _NORM_RECIP)
        if centre:
            y += beta[j]
        out[i, j] = _clamp(y, _I8_MIN, _I8_MAX)
    return True


@njit(**_JIT)
def _norm(x, gain, beta, centre, eps_q, shift, out):
    if gain.size < x.shape[1] or beta.size < x.shape[1] or out.shape != x.shape:
        return False
    for i in range(x.shape[0]):
        if not _norm_row(x, gain, beta, centre, eps_q, shift, out, i):
            return False
    return True


def rmsnorm(x: np.ndarray, gain: np.ndarray, eps_q: int, shift: int) -> np.ndarray:
    """:func:`flightc.numerics.rmsnorm` (``x`` int64 rows)."""
    out = np.empty(x.shape, np.int8)
    g = np.asarray(gain, np.int64)
    if not _norm(x, g, g, False, np.int64(eps_q), np.int64(shift), out):
        return nm.rmsnorm(x, gain, eps_q, shift)  # which says what it refuses
    return out


def layernorm(x: np.ndarray, gain: np.ndarray, beta: np.ndarray, eps_q: int, shift: int) -> np.ndarray:
    """:func:`flightc.numerics.layernorm` (``x`` int64 rows)."""
    out = np.empty(x.shape, np.int8)
    if not _norm(x, np.asarray(gain, np.int64), np.asarray(beta, np.int64), True, np.int64(eps_q), np.int64(shift),
                 out):
        return nm.layernorm(x, gain, beta, eps_q, shift)
    return out


@njit(**_JIT)
def _rope(x, cos, sin, d, out):
    rows, cols = x.shape
    half = d // 2
    if d <= 0 or d % 2 or cols % d or out.shape != x.shape or cos.shape[0] < rows or sin.shape[0] < rows or (
            cos.shape[1] < half or sin.shape[1] < half):
        return False
    for i in range(rows):
        for h in range(0, cols, d):
            for j in range(half):
                x1, x2 = x[i, h + j], x[i, h + half + j]
                c, s = np.int64(cos[i, j]), np.int64(sin[i, j])
                out[i, h + j] = _clamp(_round_shift(x1 * c - x2 * s, _ROPE_FRAC), _I8_MIN, _I8_MAX)
                out[i, h + half + j] = _clamp(_round_shift(x2 * c + x1 * s, _ROPE_FRAC), _I8_MIN, _I8_MAX)
    return True


def rope(x: np.ndarray, cos: np.ndarray, sin: np.ndarray, head_dim: int) -> np.ndarray:
    """:func:`flightc.numerics.rope` (``x`` int64 rows, ``cos``/``sin`` int16 [rows, head_dim / 2])."""
    out = np.empty(x.shape, np.int8)
    if not _rope(x, np.asarray(cos), np.asarray(sin), head_dim, out):
        return nm.rope(x, cos, sin, head_dim)  # which says what does not fit
    return out


@njit(**_JIT)
def _softmax(s, mult, shift, offset, window, exp2, out):
    rows, cols = s.shape
    if out.shape != s.shape:
        return False
    e = np.empty(cols, np.int64)
    for i in range(rows):
        last = i + offset
        first = last - window + 1 if window else 0
        lo, hi = max(first, 0), min(last, cols - 1)  # the visible columns [lo, hi]
        if lo > hi:
            return False
        m = s[i, lo]
        for j in range(lo + 1, hi + 1):
            m = max(m, s[i, j])
        total = np.int64(0)
        for j in range(lo, hi + 1):
            u = max(_shr((s[i, j] - m) * mult, shift), np.int64(-(32 << _EXP_FRAC)))
            ipart = u >> _EXP_FRAC
            idx = (u & ((1 << _EXP_FRAC) - 1)) >> (_EXP_FRAC - _EXP_INDEX)
            e[j] = exp2[idx] >> -ipart
            total += e[j]
        recip = (np.int64(1) << _RECIP) // total
        for j in range(cols):
            if j < lo or j > hi:
                out[i, j] = 0
            else:
                out[i, j] = min((e[j] * recip + (np.int64(1) << 31)) >> 32, (1 << _PROB) - 1)
    return True


def softmax(scores: np.ndarray, mult: int, shift: int, offset: int, window: int = 0) -> np.ndarray:
    """:func:`flightc.numerics.softmax` (``scores`` int64 rows)."""
    out = np.empty(scores.shape, np.uint8)
    if not _softmax(scores, np.int64(mult), np.int64(shift), np.int64(offset), np.int64(window), _EXP2, out):
        return nm.softmax(scores, mult, shift, offset, window)
    return out


@njit(**_JIT)
def _scaled(a, b, mult, shift, lo, hi, out):
    """out = clamp(round_shift(a * b * mult, shift)) (b None: a * mult); False where the shapes differ."""
    rows, cols = a.shape
    if out.shape != a.shape or b is not None and b.shape != a.shape:
        return False
    for i in range(rows):
        for j in range(cols):
            v = a[i, j] if b is None else a[i, j] * np.int64(b[i, j])
            out[i, j] = _clamp(_round_shift(v * mult, shift), lo, hi)
    return True


@njit(**_JIT)
def _deq_add(res, x, mult, shift, out):
    rows, cols = x.shape
    if out.shape != x.shape or res.shape != x.shape:
        return False
    for i in range(rows):
        for j in range(cols):
            d = _clamp(_round_shift(x[i, j] * mult, shift), _I32_MIN, _I32_MAX)
            out[i, j] = _clamp(np.int64(res[i, j]) + d, _I32_MIN, _I32_MAX)
    return True


def emul(a: np.ndarray, b: np.ndarray, mult: int, shift: int) -> np.ndarray:
    """:func:`flightc.numerics.emul` (``a`` int64 rows, ``b`` INT8 rows)."""
    out = np.empty(a.shape, np.int8)
    if not _scaled(a, b, np.int64(mult), np.int64(shift), _I8_MIN, _I8_MAX, out):
        return nm.emul(a, b, mult, shift)
    return out


def deq(x: np.ndarray, mult: int, shift: int) -> np.ndarray:
    """:func:`flightc.numerics.deq` (``x`` int64 rows)."""
    out = np.empty(x.shape, np.int32)
    _scaled(x, None, np.int64(mult), np.int64(shift), _I32_MIN, _I32_MAX, out)
    return out


def req(x: np.ndarray, mult: int, shift: int) -> np.ndarray:
    """``mpe_requant_i8(x, mult, shift, None)`` of :mod:`flightc.numerics` with one multiplier (MISC REQ)."""
    out = np.empty(x.shape, np.int8)
    _scaled(x, None, np.int64(mult), np.int64(shift), _I8_MIN, _I8_MAX, out)
    return out


def deq_add(res: np.ndarray, x: np.ndarray, mult: int, shift: int) -> np.ndarray:
    """:func:`flightc.numerics.deq_add` (as int32)."""
    out = np.empty(x.shape, np.int32)
    if not _deq_add(res, x, np.int64(mult), np.int64(shift), out):
        return nm.deq_add(res, x, mult, shift)
    return out


# ----- the definitions, under the kernels' names (what the slow path runs, and what the kernels are checked against)

def _requant_i32_definition(acc, mult, shift):
    return nm.sat_i32(nm.requantize(acc, mult, shift))


def _acc_within_definition(acc, bits):
    limit = 1 << (bits - 1)
    return not acc.size or (acc.max() < limit and acc.min() >= -limit)


def _req_definition(x, mult, shift):
    return nm.mpe_requant_i8(x, mult, shift, None)


DEFINITION = SimpleNamespace(
    acc_within=_acc_within_definition,
    mpe_requant_i8=nm.mpe_requant_i8, requant_i32=_requant_i32_definition, residual_add=nm.residual_add,
    rmsnorm=nm.rmsnorm, layernorm=nm.layernorm, rope=nm.rope, softmax=nm.softmax, emul=nm.emul, deq=nm.deq,
    req=_req_definition, deq_add=nm.deq_add)
