import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from flightc import numerics as nm


@given(st.integers(0, 2**63 - 1))
def test_isqrt_is_exact(v):
    """Exact up to int64's top (a float square root corrected by squaring overflowed there), rows kept."""
    r = nm.isqrt(np.array([[v], [v // 3]]))
    assert r.shape == (2, 1) and r.dtype == np.int64 and r[:, 0].tolist() == [math.isqrt(v), math.isqrt(v // 3)]


@given(st.floats(1e-12, 1e6))
def test_quantize_multiplier_is_accurate(real):
    mult, shift = nm.quantize_multiplier(real)
    assert (1 << 30) <= mult < (1 << 31) or shift == 63
    assert 0 <= shift <= 63
    if shift < 63:
        assert mult / 2 ** shift == pytest.approx(real, rel=2 ** -29)


def test_round_shift_rounds_half_up():
    assert nm.round_shift(np.array([5, -5, 6, -6, 7]), 1).tolist() == [3, -2, 3, -3, 4]
    x = np.random.default_rng(1).integers(-(1 << 61), 1 << 61, 4096)
    for shift in range(64):  # one shift for all (a scalar half) rounds as a shift per element does
        assert (nm.round_shift(x, shift) == nm.round_shift(x, np.full(x.shape, shift))).all(), shift
    assert nm.round_div(np.array([5, -5, 7]), np.array([2, 2, 7])).tolist() == [3, -2, 1]


def test_softmax_matches_float_and_masks():
    rng = np.random.default_rng(0)
    scores = rng.integers(-3000, 3000, size=(4, 12))
    scale = 1 / 700  # real score = int * scale
    mult, shift = nm.quantize_multiplier(scale * math.log2(math.e) * (1 << nm.EXP_FRAC_BITS))
    p = nm.softmax(scores, mult, shift, offset=8)
    for r in range(4):
        vis = r + 9
        x = scores[r, :vis] * scale
        ref = np.exp(x - x.max()) / np.exp(x - x.max()).sum()
        assert np.abs(p[r, :vis] / 256 - ref).max() < 2 / 256
        assert not p[r, vis:].any()
    with pytest.raises(ValueError):
        nm.softmax(scores, mult, shift, offset=-1)


def test_rmsnorm_matches_float():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3, 64)) * 1e5
    g = rng.uniform(0.5, 1.5, 64)
    s_out = 4 / 127
    gain = np.round(g / s_out * 2 ** (nm.RMS_FRAC_BITS + 8)).astype(np.int64)
    y = nm.rmsnorm(np.round(x).astype(np.int64), gain, 0, 8)
    ref = x / np.sqrt((x ** 2).mean(-1, keepdims=True)) * g / s_out
    assert np.abs(y - np.clip(np.round(ref), -128, 127)).max() <= 1


def test_norm_reciprocal_rounds_like_an_exact_division_but_at_near_ties():
    """norm_apply (one reciprocal per row, ISA 1.6) against round_div over the divisor's whole range, products up to
    2^61 and at the saturation edge: never more than one unit apart, and apart only where p / den lies within a few
    2^-16 of a rounding tie."""
    rng = np.random.default_rng(3)
    n = 50_000
    den = np.concatenate([rng.integers(1, 1 << nm.NORM_DEN_BITS, n), 1 << rng.integers(0, nm.NORM_DEN_BITS, n),
                          rng.integers(1, 300, n)])
    p = np.concatenate([rng.integers(-(1 << 61), 1 << 61, n), rng.integers(-300, 300, n) * den[n:2 * n],
                        rng.integers(-(1 << 16), 1 << 16, n)])
    e, m = nm.norm_scale(den)
    assert ((m > 1 << 31) & (m <= 1 << 32)).all()
    y = nm.sat_i8(nm.norm_apply(p, e, m)).astype(np.int64)
    exact = nm.sat_i8(nm.round_div(np.clip(p, -256 * den, 256 * den), den)).astype(np.int64)
    apart = y != exact
    assert np.abs(y - exact).max() <= 1 and apart.mean() < 1e-3
    frac = (p[apart] % den[apart]) / den[apart]
    assert (np.abs(frac - 0.5) < 2.0 ** -14).all()
    assert (y[n:2 * n] == np.clip(p[n:2 * n] // den[n:2 * n], -128, 127)).all()  # exact multiples: exact
    with pytest.raises(ValueError):
        nm.norm_scale(np.array([1 << nm.NORM_DEN_BITS]))


def test_rope_matches_float_rotation():
    x = np.random.default_rng(0).integers(-100, 100, size=(2, 32))
    cos, sin = nm.rope_table(np.array([3, 4]), 16, 10000.0)
    y = nm.rope(x, cos, sin, 16)
    ang = np.array([3, 4])[:, None] * (1.0 / 10000 ** (np.arange(0, 16, 2) / 16))[None]
    h = x.reshape(2, 2, 16).astype(float)
    ref = np.concatenate([h[..., :8] * np.cos(ang)[:, None] - h[..., 8:] * np.sin(ang)[:, None],
                          h[..., 8:] * np.cos(ang)[:, None] + h[..., :8] * np.sin(ang)[:, None]], -1).reshape(2, 32)
    assert np.abs(y - ref).max() <= 1


def test_requant_record_round_trip():
    mult = np.array([1 << 30, (1 << 31) - 1, 12345])
    shift = np.array([0, 63, 17])
    bias = np.array([-(1 << 31), 0, (1 << 31) - 1])
    m, s, b = nm.unpack_requant(nm.pack_requant(mult, shift, bias), 3)
    assert m.tolist() == mult.tolist() and s.tolist() == shift.tolist() and b.tolist() == bias.tolist()
    assert nm.unpack_requant(nm.pack_requant(mult, shift), 3)[2].tolist() == [0, 0, 0]


def test_layernorm_matches_float():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(3, 64)) * 1e5 + 3e5
    g, beta = rng.uniform(0.5, 1.5, 64), rng.normal(size=64) * 0.1
    s_out = 4 / 127
    gain = np.round(g / s_out * 2 ** (nm.RMS_FRAC_BITS + 8)).astype(np.int64)
    y = nm.layernorm(np.round(x).astype(np.int64), gain, np.round(beta / s_out).astype(np.int64), 0, 8)
    xc = x - x.mean(-1, keepdims=True)
    ref = (xc / np.sqrt((xc ** 2).mean(-1, keepdims=True)) * g + beta) / s_out
    assert np.abs(y - np.clip(np.round(ref), -128, 127)).max() <= 1


def test_softmax_window_sees_only_the_last_columns():
    scores = np.zeros((3, 10), np.int64)
    p = nm.softmax(scores, 1 << 30, 30, offset=7, window=4)
    for r in range(3):
        seen = np.nonzero(p[r])[0]
        assert seen.tolist() == list(range(r + 7 - 3, r + 8))
