"""Dimensions that are no multiple of the hardware's block (16), the group or the lane group's chunk: weights are
quantized over whole blocks and groups (the last group partial, padded columns zero and ranked after every real
weight in N:M pruning), packed to whole lane-group chunks, and run bit-exactly against the integer reference."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from flightc.compress.formats import WeightFormat
from flightc.compress.obs import MaskSelect, hessian, obs_quantize
from flightc.compress.packing import pack_weight, unpack_rows
from flightc.compress.quantize import quantize_rtn
from flightc.config import PRESETS

FORMATS = ["w8", "w4g32", "w4g128s8:16", "w3g64s4:16", "w2g16s2:16", "w2g32s2:4", "w8s8:16"]


@settings(max_examples=60, deadline=None)
@given(st.sampled_from(FORMATS), st.integers(1, 5), st.integers(1, 300), st.integers(0, 2**31))
@example("w2g16s2:16", 1, 2, 0)  # one block in all: the sorting network once ranked it in place (nm_mask)
def test_any_k_packs_to_whole_chunks_of_zero_columns(fmt_text, rows, k, seed):
    fmt = WeightFormat.parse(fmt_text)
    w = np.random.default_rng(seed).standard_t(3, size=(rows, k))
    qw = quantize_rtn(w, fmt)
    assert qw.shape == (rows, k) and qw.int8_operand().shape == (rows, k)
    columns = fmt.packed_columns(PRESETS["u280"], k)
    assert columns >= k and columns % 64 == 0 and columns % fmt.unit == 0 and columns - k < max(64, fmt.unit)
    packed = pack_weight(qw, columns)
    assert packed.shape == (rows, fmt.row_bytes(columns))
    operand = unpack_rows(packed, fmt, columns)
    assert np.array_equal(operand[:, :k], qw.int8_operand())
    assert not operand[:, k:].any()
    if fmt.sparse:  # every real block keeps n, the partial one min(n, its real columns): real weights first
        keep = qw.kept()
        whole = k - k % fmt.m
        assert (keep[:, :whole].reshape(rows, -1, fmt.m).sum(-1) == fmt.n).all()
        assert (keep[:, whole:].sum(-1) == min(fmt.n, k - whole)).all()


def test_a_partial_group_takes_its_multiplier_from_its_real_columns():
    fmt = WeightFormat.parse("w4g32")
    w = np.full((1, 40), 0.01)
    w[0, 0], w[0, 35] = 1.0, 0.4  # the second group: 8 real columns, the largest 0.4
    qw = quantize_rtn(w, fmt)
    assert qw.gs.tolist() == [[15, 6]]  # 15 the largest multiplier, 6 = 15 x 0.4
    assert qw.dequantized()[0, 35] == pytest.approx(0.4)


def test_padded_positions_are_kept_only_where_a_block_has_fewer_than_n_real_ones():
    fmt = WeightFormat.parse("w4g16s8:16")
    w = np.random.default_rng(0).normal(size=(3, 36))  # blocks of 16, 16 and 4 real columns
    qw = quantize_rtn(w, fmt)
    assert (qw.kept()[:, 32:]).all()  # the 4 real columns of the last block, all of them
    packed = pack_weight(qw, 64)
    operand = unpack_rows(packed, fmt, 64)
    assert np.array_equal(operand[:, :36], qw.int8_operand()) and not operand[:, 36:].any()


@pytest.mark.parametrize("fmt_text, select", [("w4g32", MaskSelect.MAGNITUDE), ("w3g32s8:16", MaskSelect.OBS)])
def test_second_order_solvers_take_any_k(fmt_text, select):
    fmt = WeightFormat.parse(fmt_text)
    rng = np.random.default_rng(1)
    x, w = rng.normal(size=(256, 72)), rng.normal(size=(8, 72))
    qw = obs_quantize(w, hessian(x), fmt, select)
    assert qw.shape == (8, 72) and qw.gs.shape == (8, 3)
    rtn = quantize_rtn(w, fmt)
    err = {name: np.linalg.norm(x @ (w - q.dequantized()).T) for name, q in (("obs", qw), ("rtn", rtn))}
    assert err["obs"] < err["rtn"]  # the solver still pays off with a partial group
    if fmt.sparse:
        assert (qw.kept()[:, :64].reshape(8, -1, 16).sum(-1) == 8).all() and (qw.kept()[:, 64:].sum(-1) == 8).all()


ODD = dict(num_hidden_layers=1, hidden_size=68, intermediate_size=40, num_attention_heads=2, num_key_value_heads=1,
           head_dim=64, vocab_size=301)


@pytest.mark.parametrize("hw, shape", [
    ("u280", {}),  # hidden 68, intermediate 40, vocabulary 301: partial blocks and groups, chunks of 64 columns
    ("vhk158", {}),  # chunks of 128 columns
    ("kv260", {"head_dim": 80}),
    ("u280", {"head_dim": 96, "hidden_size": 200}),
    ("u280", {"head_dim": 256, "num_attention_heads": 1, "hidden_size": 120}),
    (PRESETS["tiny"].replace(name="tiny-3core", num_cores=3, mem_channels=6, axi_masters=3),
     {"num_key_value_heads": 2}),  # exchanges
])
def test_odd_shapes_run_bit_exactly(hw, shape):
    from flightc.compiler.pipeline import compile_model
    from flightc.compress.plan import CompressionPlan
    from flightc.models.seeded import random_model
    from flightc.reference.integer import IntegerModel, greedy
    from flightc.runtime.session import Session

    model = random_model("llama", 0, **{**ODD, **shape})
    plan = CompressionPlan.parse("w4g32s8:16", ["*.down_proj=w4g16", "lm_head=w8"])
    prompt, new = [1, 5, 9, 3, 7, 2, 8, 4], 4
    c = compile_model(model, hw, plan, max_len=len(prompt) + new, max_prefill=len(prompt),
                      prefill_lengths=[len(prompt)])
    ref_tokens, ref_logits = greedy(IntegerModel(c.integer, len(prompt) + new), prompt, new)
    got = list(Session(c.bundle).generate(prompt, new))
    assert [t for t, _ in got] == ref_tokens
    assert all(z.tobytes() == r.tobytes() for (_, z), r in zip(got, ref_logits))
