"""The model zoo's twins (flightc/models/zoo.py): each published config shrunk to two layers and a small vocabulary,
keeping its dimensions' residues modulo 16 and the group size, its GQA ratio, head size, tying, biases and RoPE
scaling. Each compiles with seeded weights for the u280 preset in the zoo's format (W4 g128 8:16, the LM head W8) and
generates 16 tokens on fsim byte-identical with the integer reference; its float model agrees with transformers'."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from flightc.compress.plan import CompressionPlan
from flightc.frontend.hf import load_hf, spec_from_config
from flightc.frontend.lazy import lazy_weights_model
from flightc.config import PRESETS
from flightc.models.zoo import published, twin, zoo
from flightc.reference.float_graph import run_float
from flightc.reference.integer import IntegerModel, greedy
from flightc.runtime.session import Session

GROUP = 128
PLAN = "w4g128s8:16"
HW = "u280"  # the preset the zoo is compiled for (the small presets' 16 KiB PRM is too small for Qwen2's twins, hidden 896)
PROMPT = [3, 17, 42, 99, 5, 64, 128, 7]
NEW = 16


@pytest.mark.parametrize("name", zoo())
def test_a_twin_keeps_what_decides_the_layout(name):
    cfg, small = published(name), twin(published(name), GROUP)
    a, b = spec_from_config(cfg), spec_from_config(small)
    for dim in ("hidden_size", "intermediate_size", "vocab_size"):
        for m in (PRESETS[HW].sparse_m, GROUP):  # the sparsity block along K, the group
            assert getattr(a, dim) % m == getattr(b, dim) % m, (dim, m)
    assert (a.num_heads // a.num_kv_heads, a.head_dim) == (b.num_heads // b.num_kv_heads, b.head_dim)
    assert (a.family, a.rope_theta, a.rope_scaling, a.sliding_window, a.rms_eps) == \
        (b.family, b.rope_theta, b.rope_scaling, b.sliding_window, b.rms_eps)
    assert small.get("tie_word_embeddings") == cfg.get("tie_word_embeddings")
    assert b.num_layers == 2 and b.vocab_size < 512


@pytest.mark.parametrize("name", zoo())
def test_a_twin_runs_bit_exactly_and_its_float_model_is_transformers(name, tmp_path):
    from flightc.compiler.pipeline import compile_model

    cfg = twin(published(name), GROUP)
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    plan = CompressionPlan.parse(PLAN, ["lm_head=w8"])
    c = compile_model(tmp_path, HW, plan, max_len=len(PROMPT) + NEW, max_prefill=len(PROMPT), random_weights=0,
                      prefill_lengths=[len(PROMPT)])
    ref_tokens, ref_logits = greedy(IntegerModel(c.integer, len(PROMPT) + NEW), PROMPT, NEW)
    got = list(Session(c.bundle).generate(PROMPT, NEW))
    assert [t for t, _ in got] == ref_tokens
    assert all(z.tobytes() == r.tobytes() for (_, z), r in zip(got, ref_logits))
    ours = run_float(load_hf(tmp_path, random_weights=0), np.array(PROMPT))["lm_head"]
    with torch.no_grad():
        theirs = lazy_weights_model(cfg, 0)(torch.tensor([PROMPT])).logits[0].double().numpy()
    assert np.abs(ours - theirs).max() < 1e-4


def test_a_twin_whose_embedding_outgrows_a_channel_and_logits_the_acc_buffer_runs_bit_exactly(tmp_path):
    """LLaMA-3-8B's twin with a vocabulary of 100,000 and a hidden size of 256, on tiny: its embedding (25.6 MB)
    is larger than one of tiny's memory channels, its logits larger than its ACC buffer; it runs as exactly as the
    others."""
    from flightc.compiler.pipeline import compile_model
    from flightc.config import PRESETS, Buffer

    cfg = {**twin(published("llama3-8b"), GROUP), "vocab_size": 100_000, "hidden_size": 256}
    tiny = PRESETS["tiny"]
    assert cfg["vocab_size"] * cfg["hidden_size"] > tiny.mem_channel_mib << 20
    assert 4 * cfg["vocab_size"] > tiny.buffer_bytes(Buffer.ACC)
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    c = compile_model(tmp_path, "tiny", CompressionPlan.parse(PLAN, ["lm_head=w8"]), max_len=len(PROMPT) + NEW,
                      max_prefill=len(PROMPT), random_weights=0, prefill_lengths=[len(PROMPT)])
    ref_tokens, ref_logits = greedy(IntegerModel(c.integer, len(PROMPT) + NEW), PROMPT, NEW)
    got = list(Session(c.bundle).generate(PROMPT, NEW))
    assert [t for t, _ in got] == ref_tokens and len(set(ref_tokens)) > 3
    assert all(z.tobytes() == r.tobytes() for (_, z), r in zip(got, ref_logits))
