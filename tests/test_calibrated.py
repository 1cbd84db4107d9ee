"""Calibrated compression (GPTQ, SparseGPT, AWQ, SmoothQuant), the bit-budget allocator and the INT4 KV cache."""
from __future__ import annotations

import numpy as np
import pytest

from flightc import numerics as nm
from flightc.compress.allocate import BitBudget, BudgetBits, allocate
from flightc.compress.equalize import awq, balance_kv, smoothquant
from flightc.compress.formats import WeightFormat, group_scale_max, q_range
from flightc.compress.method import Equalizer, Method, Solver
from flightc.compress.obs import MaskSelect, hessian, obs_quantize, output_error
from flightc.compress.packing import pack_weight, unpack_rows
from flightc.compress.plan import CompressionPlan
from flightc.compress.quantize import quantize_rtn
from flightc.errors import UnsupportedError
from flightc.reference.float_graph import run_float


def correlated_layer(k: int = 256, n: int = 96, seed: int = 0):
    """A weight and inputs with correlated channels of very different scales (as in trained LLMs)."""
    rng = np.random.default_rng(seed)
    mix = rng.normal(size=(k, k)) * 0.15 + np.eye(k)
    x = rng.normal(size=(768, k)) @ mix * np.exp(rng.normal(size=k))
    return rng.normal(size=(n, k)), hessian(x)


def check_hardware_format(qw, fmt: WeightFormat) -> None:
    lo, hi = q_range(fmt.bits)
    assert qw.q.min() >= lo and qw.q.max() <= hi
    if fmt.sparse:
        kept = qw.keep.reshape(qw.q.shape[0], -1, fmt.m).sum(-1)
        assert (kept == fmt.n).all()
        assert (qw.q[~qw.keep] == 0).all()
    if fmt.group:
        assert qw.gs.min() >= 1 and qw.gs.max() <= group_scale_max(fmt.bits)
    assert np.array_equal(unpack_rows(pack_weight(qw), fmt, qw.q.shape[1]), qw.int8_operand())


@pytest.mark.parametrize("fmt", ["w4g128", "w4", "w3g64", "w2g32"])
def test_gptq_beats_round_to_nearest(fmt):
    w, h = correlated_layer()
    f = WeightFormat.parse(fmt)
    gptq = obs_quantize(w, h, f, MaskSelect.MAGNITUDE)
    act = obs_quantize(w, h, f, act_order=True)
    check_hardware_format(gptq, f)
    check_hardware_format(act, f)
    rtn = output_error(w, quantize_rtn(w, f), h)
    margin = 0.9 if f.bits == 2 else 0.7  # at 2 bits rounding dominates whatever the order
    assert output_error(w, gptq, h) < margin * rtn
    assert output_error(w, act, h) < margin * rtn


@pytest.mark.parametrize("fmt", ["w4g128s8:16", "w4g128s2:4", "w8s4:16", "w3g64s8:16"])
def test_sparsegpt_beats_magnitude_pruning(fmt):
    w, h = correlated_layer(seed=1)
    f = WeightFormat.parse(fmt)
    sgpt = obs_quantize(w, h, f, MaskSelect.OBS)
    check_hardware_format(sgpt, f)
    # its mask is its own choice, not the magnitude mask
    assert not np.array_equal(sgpt.keep, quantize_rtn(w, f).keep)
    assert output_error(w, sgpt, h) < 0.6 * output_error(w, quantize_rtn(w, f), h)
    assert output_error(w, sgpt, h) < output_error(w, obs_quantize(w, h, f, MaskSelect.MAGNITUDE), h)


def test_act_order_needs_a_dense_format():
    w, h = correlated_layer(k=64, n=16)
    with pytest.raises(UnsupportedError, match="act-order is for dense formats"):
        obs_quantize(w, h, WeightFormat.parse("w4s8:16"), act_order=True)


@pytest.mark.parametrize("model", ["tiny-llama-gqa", "tiny-opt", "tiny-qwen2"])
def test_equalizers_keep_the_float_function(model):
    """AWQ, SmoothQuant and K/V balancing only move ranges between tensors (norms, V rows, up/fc1 rows and
    the consumers' columns); the float model's outputs stay the same while the weights change."""
    from conftest import torch_model
    from flightc.frontend.hf import load_hf

    g = load_hf(torch_model(model))
    ids = np.random.default_rng(0).integers(0, g.spec.vocab_size, (2, 12))
    before = run_float(g, ids)[g.output]
    for transform in (lambda: smoothquant(g, ids), lambda: awq(g, ids, lambda _: WeightFormat.parse("w3g32")),
                      lambda: balance_kv(g, ids)):
        g2 = transform()
        changed = sum(not np.array_equal(np.asarray(g.node(n)["weight"]), np.asarray(g2.node(n)["weight"]))
                      for n in g.linears())
        assert changed >= 2
        after = run_float(g2, ids)[g2.output]
        assert np.abs(after - before).max() <= 1e-9 * np.abs(before).max()


def test_balance_kv_flattens_the_key_channels():
    """An outlier key channel pair (x16, with the queries /16: the same function) is what a per-tensor INT4
    cache cannot hold; balancing takes it back out."""
    from conftest import torch_model
    from flightc.frontend.hf import load_hf

    g = load_hf(torch_model("tiny-llama-gqa"))
    s = g.spec
    rows_k = np.array([3, 3 + s.head_dim // 2])
    wk = np.array(g.node("L0.k_proj")["weight"], np.float64)
    wq = np.array(g.node("L0.q_proj")["weight"], np.float64)
    wk[rows_k] *= 16
    for h in range(s.kv_group):  # the query heads that read KV head 0
        wq[h * s.head_dim + rows_k] /= 16
    g.node("L0.k_proj")["weight"], g.node("L0.q_proj")["weight"] = wk, wq
    ids = np.random.default_rng(1).integers(0, s.vocab_size, (2, 16))

    def spread(graph):
        k = np.abs(run_float(graph, ids)["L0.k_rope"]).max(axis=(0, 1))
        return k.max() / k.min()

    assert spread(g) > 10
    assert spread(balance_kv(g, ids)) < spread(g) / 4


def test_int4_packing_saturates_and_round_trips():
    x = np.array([[-128, -9, -8, -1, 0, 1, 7, 8, 127, 3]], np.int8)
    packed = nm.pack_int4(x)
    assert packed.shape == (1, 5)
    assert nm.unpack_int4(packed, 10).tolist() == [[-8, -8, -8, -1, 0, 1, 7, 7, 7, 3]]
    # the same nibble order as 4-bit weight rows, so the MPE reads a K row as a dense 4-bit weight row
    assert np.array_equal(unpack_rows(packed, WeightFormat(bits=4), 10), nm.unpack_int4(packed, 10))


def test_method_names():
    assert Method.parse("awq+gptq") == Method(Equalizer.AWQ, Solver.GPTQ)
    assert Method.parse("sparsegpt").label() == "sparsegpt"
    assert Method.parse("gptq-act").act_order and Method.parse("awq").label() == "awq"
    for bad in ("gptqq", "rtn-act"):
        with pytest.raises(UnsupportedError):
            Method.parse(bad)
    with pytest.raises(UnsupportedError, match="supported widths"):
        CompressionPlan(kv_bits=2)


def test_allocator_meets_the_budget_where_it_hurts_least():
    f = {b: WeightFormat(bits=b, group=0 if b == 8 else 128) for b in (2, 3, 4, 8)}
    # 'a' is sensitive, 'b' is not: the bits go to 'a'
    sens = {"a": {f[8]: 0.0, f[4]: 0.01, f[3]: 0.1, f[2]: 1.0},
            "b": {f[8]: 0.0, f[4]: 0.001, f[3]: 0.002, f[2]: 0.01}}
    shapes = {"a": (128, 128), "b": (128, 128)}
    alloc = allocate(sens, shapes, BitBudget(3.5, counts=BudgetBits.VALUES))  # FlightLLM's 3.5 value bits
    assert alloc.avg_bits <= 3.5
    chosen = {c.layer: c.fmt.bits for c in alloc.layers}
    assert chosen["a"] > chosen["b"]
    assert {c.layer: c.fmt for c in alloc.layers} == {"a": f[4], "b": f[3]}
    # counting what a weight takes in memory (the default), each g128 group multiplier adds 1/16 of a bit: W4 and W3
    # average 3.5625 bits, over 3.5, so the insensitive layer goes down to W2 (2.0625) instead
    stored = allocate(sens, shapes, BitBudget(3.5))
    assert {c.layer: c.fmt for c in stored.layers} == {"a": f[4], "b": f[2]}
    assert stored.stored_bits_per_weight == (4 + 2 + 2 * 8 / 128) / 2 <= 3.5
    with pytest.raises(UnsupportedError, match="budget of 1.5 stored bits per weight cannot be met: the lowest the "
                                               "hardware's formats reach is 2.0625"):
        allocate(sens, shapes, BitBudget(1.5))
    plan = alloc.plan(CompressionPlan())
    assert plan.format_for("a") == f[4] and plan.format_for("lm_head") == WeightFormat()


def test_a_budget_counts_how_the_positions_are_stored():
    """Stored bits (the default) count a sparse weight's positions: W4 g128 8:16 is 4.0625 bits a weight with 4-bit
    positions and 3.0625 with a bitmask (a bit a position), so a budget of 3.5 keeps W4 where the hardware decodes
    bitmasks and takes W2 (3.0625 bits with positions) where it decodes positions alone."""
    from flightc.config import SparseEncoding

    pos = {b: WeightFormat(b, 8, 16, 128) for b in (2, 4)}
    mask = {b: f.with_encoding(SparseEncoding.BITMASK) for b, f in pos.items()}
    assert (pos[4].stored_bits, mask[4].stored_bits, pos[2].stored_bits) == (4.0625, 3.0625, 3.0625)
    for fmts, want in ((pos, pos[2]), (mask, mask[4])):
        (choice,) = allocate({"a": {fmts[4]: 0.01, fmts[2]: 0.1}}, {"a": (64, 128)}, BitBudget(3.5, "8:16")).layers
        assert choice.fmt == want


def test_allocator_chooses_sparsity_per_layer_under_a_density_target():
    dense, half, quarter = WeightFormat(4, group=128), WeightFormat(4, 8, 16, 128), WeightFormat(4, 4, 16, 128)
    sens = {"a": {dense: 0.0, half: 0.05, quarter: 0.5}, "b": {dense: 0.0, half: 0.01, quarter: 0.02}}
    alloc = allocate(sens, {"a": (64, 128), "b": (64, 128)}, BitBudget(4.0, "auto", density=0.5))
    assert alloc.avg_density <= 0.5
    chosen = {c.layer: c for c in alloc.layers}
    assert chosen["a"].density >= chosen["b"].density  # the sensitive layer keeps more of its weights


def test_calibration_files(tmp_path):
    from flightc.compress.calibration_data import calibration_from_file
    from flightc.models.builtin import model_input

    text = tmp_path / "t.txt"
    text.write_text("def f(x):\n    return x + 1\n" * 20)
    ids = calibration_from_file(text, model_input("builtin:pylm"), count=4, length=32)  # bytes for the byte-level model
    assert ids.shape == (4, 32) and bytes(ids[0].astype(np.uint8)).startswith(b"def f(x):")
    digits = tmp_path / "d.txt"
    digits.write_text("0012+0345=" * 10)
    ids = calibration_from_file(digits, model_input("builtin:addition"), count=2, length=10)  # its tokenizer
    assert ids.shape == (2, 10) and ids.max() < 16
    npy = tmp_path / "ids.npy"
    np.save(npy, np.arange(12).reshape(2, 6))
    assert calibration_from_file(npy, None).tolist() == np.arange(12).reshape(2, 6).tolist()
    with pytest.raises(UnsupportedError, match="no tokenizer"):
        calibration_from_file(text, tmp_path)
    with pytest.raises(UnsupportedError, match="fewer than one window"):
        calibration_from_file(text, model_input("builtin:pylm"), length=10_000)


def test_int4_kv_scale_clips_outliers_for_a_smaller_error():
    from flightc.compiler.calibrate import mse_clip

    x = np.random.default_rng(0).normal(size=4096)
    x[7] = 12.0  # one outlier sets amax
    c = mse_clip(x)
    assert c < 0.6 * 12.0

    def mse(clip):
        step = clip / nm.I4_MAX
        return np.mean((np.clip(np.round(x / step), nm.I4_MIN, nm.I4_MAX) * step - x) ** 2)

    assert mse(c) < 0.5 * mse(12.0)
    flat = np.linspace(-1, 1, 1001)
    assert mse_clip(flat) > 0.9  # nothing to clip in a uniform range
