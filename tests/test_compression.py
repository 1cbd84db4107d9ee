import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flightc.compress.formats import WeightFormat, group_scale_max, q_range
from flightc.compress.packing import pack_weight, unpack_rows
from flightc.compress.plan import CompressionPlan
from flightc.compress.quantize import nm_mask, quantize_rtn
from flightc.config import PRESETS
from flightc.errors import UnsupportedError

FORMATS = ["w8", "w4", "w4g32", "w4g128s8:16", "w3g64s4:16", "w2g16s2:16", "w2g32s2:4", "w3g16s2:4", "w8s8:16"]


@settings(max_examples=60, deadline=None)
@given(st.sampled_from(FORMATS), st.integers(1, 9), st.integers(1, 4), st.integers(0, 2**31))
def test_pack_then_dequantize_gives_the_int8_operand(fmt_text, rows, blocks, seed):
    fmt = WeightFormat.parse(fmt_text)
    k = 128 * blocks
    w = np.random.default_rng(seed).standard_t(3, size=(rows, k))
    qw = quantize_rtn(w, fmt)
    packed = pack_weight(qw)
    assert packed.shape == (rows, fmt.row_bytes(k))
    assert np.array_equal(unpack_rows(packed, fmt, k), qw.int8_operand())


@pytest.mark.parametrize("fmt_text", FORMATS)
def test_quantized_values_fit_their_formats(fmt_text):
    fmt = WeightFormat.parse(fmt_text)
    w = np.random.default_rng(0).normal(size=(16, 256))
    qw = quantize_rtn(w, fmt)
    lo, hi = q_range(fmt.bits)
    assert qw.q.min() >= lo and qw.q.max() <= hi
    op = qw.int8_operand().astype(int)
    assert op.min() >= -128 and op.max() <= 127
    if fmt.group:
        assert qw.gs.min() >= 1 and qw.gs.max() <= group_scale_max(fmt.bits)
    kept = qw.kept().reshape(16, -1, fmt.m).sum(-1)
    assert (kept == fmt.n).all()
    assert not qw.q[~qw.kept()].any()


def test_error_falls_with_more_bits():
    w = np.random.default_rng(1).normal(size=(32, 256))
    err = {b: np.abs(quantize_rtn(w, WeightFormat(bits=b, group=0 if b == 8 else 32)).dequantized() - w).mean()
           for b in (2, 3, 4, 8)}
    assert err[8] < err[4] < err[3] < err[2]
    assert err[8] < 0.01 * np.abs(w).mean() * 2


def test_nm_mask_keeps_the_largest():
    w = np.array([[0.1, -5, 0.2, 3, 0, 0, 1, -2]])
    keep = nm_mask(w, 2, 4)
    assert keep.tolist() == [[False, True, False, True, False, False, True, True]]


def test_format_checks_name_the_layer():
    cfg = PRESETS["tiny"].replace(weight_bits=(4, 8))
    with pytest.raises(UnsupportedError, match="L3.up_proj: 2-bit weights"):
        WeightFormat(bits=2, group=32).check(cfg, "L3.up_proj", 128)
    with pytest.raises(UnsupportedError, match="L0.q_proj: 3:16"):
        WeightFormat(bits=8, n=3, m=16).check(PRESETS["tiny"], "L0.q_proj", 128)
    with pytest.raises(UnsupportedError, match="L0.o_proj: K = 1000000 exceeds"):
        WeightFormat(bits=4, group=128).check(PRESETS["tiny"], "L0.o_proj", 1_000_000)
    with pytest.raises(UnsupportedError, match="2:4 sparsity is not supported"):
        WeightFormat(bits=8, n=2, m=4).check(PRESETS["tiny"].replace(supports_2_4=False), "x", 128)
    with pytest.raises(UnsupportedError, match="expected e.g."):
        WeightFormat.parse("int4")


def test_plan_patterns_later_wins():
    plan = CompressionPlan.parse("w4g128", ["*.down_proj=w8", "L1.*=w2g32"])
    assert plan.format_for("L0.q_proj").label() == "W4 g128"
    assert plan.format_for("L0.down_proj").label() == "W8"
    assert plan.format_for("L1.down_proj").label() == "W2 g32"
    assert plan.format_for("lm_head").label() == "W8"


@pytest.mark.parametrize("bits", range(1, 9))
@pytest.mark.parametrize("signed", [False, True])
def test_bit_fields_unpack_as_the_bit_order_defines(bits, signed):
    """Every field width, against the definition: field j of a row is bits [j*bits, (j+1)*bits) of the row's bytes
    read as one little-endian integer (two's complement when signed)."""
    from flightc.compress.packing import _unpack_bits

    rng = np.random.default_rng(bits)
    data = rng.integers(0, 256, size=(3, 7), dtype=np.uint8)
    count = (7 * 8) // bits - 1  # a partial last byte too
    for dtype in (np.int64, np.int16):
        got = _unpack_bits(data, count, bits, signed, dtype)
        assert got.dtype == dtype
        for r in range(3):
            word = int.from_bytes(data[r].tobytes(), "little")
            for j in range(count):
                v = (word >> (j * bits)) & ((1 << bits) - 1)
                if signed and v >= 1 << (bits - 1):
                    v -= 1 << bits
                assert got[r, j] == v, (r, j)


def test_nm_mask_of_a_single_block_keeps_its_largest_and_leaves_the_weights_alone():
    """One row of one block: the sorting network once wrote its comparisons into the magnitudes it was ranking (a
    lane of a single block is a view, not a copy), and kept a zero over a real weight (found by hypothesis)."""
    w = np.zeros((1, 16))
    w[0, :2] = [0.15174931, 0.15597726]
    before = w.copy()
    assert nm_mask(w, 2, 16)[0].nonzero()[0].tolist() == [0, 1]
    assert np.array_equal(w, before)
