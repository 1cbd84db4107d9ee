"""RoPE scalings (flightc.rope): the frequencies and YaRN's factor as transformers computes them, the float model
against transformers' with each type, and a scaled model compiled and run exactly on the functional simulator."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from flightc.errors import UnsupportedError
from flightc.frontend.hf import load_hf, spec_from_config
from flightc.models.seeded import family_config, random_model
from flightc.reference.float_graph import run_float
from flightc.rope import RopeScaling, RopeType

# (rope_scaling as a config.json gives it, a max_position_embeddings that makes it meaningful); head_dim 32
SCALINGS = {
    "linear": ({"rope_type": "linear", "factor": 4.0}, 128),
    "llama3": ({"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                "original_max_position_embeddings": 64}, 512),
    "yarn": ({"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32}, 128),
    "yarn-mscale": ({"rope_type": "yarn", "factor": 8.0, "original_max_position_embeddings": 64, "mscale": 0.707,
                     "mscale_all_dim": 1.0, "beta_fast": 16, "beta_slow": 2, "truncate": False}, 512),
    "yarn-attention": ({"rope_type": "yarn", "factor": 2.0, "original_max_position_embeddings": 64,
                        "attention_factor": 1.25}, 128),
    "dynamic": ({"type": "dynamic", "factor": 2.0}, 128),  # the older key, as LLaMA-2-era configs have it
}


def _config(case: str, theta: float = 10000.0):
    rope, positions = SCALINGS[case]
    return family_config("llama", rope_scaling=dict(rope), rope_theta=theta, max_position_embeddings=positions)


@pytest.mark.parametrize("case", list(SCALINGS))
def test_frequencies_and_factor_are_transformers(case):
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    for theta in (10000.0, 500000.0):
        cfg = _config(case, theta)
        rope = RopeScaling.from_config(cfg.to_dict())
        assert rope.type is RopeType(SCALINGS[case][0].get("rope_type", SCALINGS[case][0].get("type")))
        inv, factor = ROPE_INIT_FUNCTIONS[rope.type.value](cfg)
        head = cfg.hidden_size // cfg.num_attention_heads
        # float64 here, float32 there: a float-to-float comparison
        np.testing.assert_allclose(rope.inv_freq(head, theta), inv.double().numpy(), rtol=2e-6)
        assert rope.attention_factor == pytest.approx(factor, rel=1e-12)
    if case == "linear":  # the scaled frequencies differ from the default ones, as they should
        assert not np.allclose(rope.inv_freq(32, 10000.0), RopeScaling().inv_freq(32, 10000.0))


@pytest.mark.parametrize("case", ["llama3", "yarn-mscale"])
def test_float_interpreter_matches_transformers_with_scaled_rope(case):
    rope, positions = SCALINGS[case]
    model = random_model("llama", 3, rope_scaling=dict(rope), max_position_embeddings=positions)
    ids = [5, 9, 200, 3, 77, 1, 14, 250, 31, 8]
    g = load_hf(model)
    assert g.spec.rope_scaling.type is not RopeType.DEFAULT
    ours = run_float(g, np.array(ids))["lm_head"]
    device = next(model.parameters()).device
    with torch.no_grad():
        theirs = model(torch.tensor([ids], device=device)).logits[0].double().cpu().numpy()
    assert np.abs(ours - theirs).max() < 1e-4
    plain = run_float(load_hf(random_model("llama", 3, max_position_embeddings=positions)), np.array(ids))["lm_head"]
    assert np.abs(plain - theirs).max() > 1e-3  # the scaling shows in the logits


@pytest.mark.parametrize("rope, message", [
    ({"rope_type": "longrope", "factor": 2.0, "short_factor": [1.0], "long_factor": [1.0]}, "'longrope'.*LongRoPE"),
    ({"type": "su", "factor": 2.0}, "'su'"),
    ({"rope_type": "ntk-by-parts", "factor": 2.0}, "unknown rope_type 'ntk-by-parts'.*llama3, yarn"),
    ({"rope_type": "llama3", "factor": 8.0}, "'llama3' needs low_freq_factor"),
    ({"rope_type": "linear", "factor": 2.0, "partial_rotary_factor": 0.5}, "partial_rotary_factor"),
])
def test_unsupported_rope_scalings_are_named(rope, message):
    cfg = family_config("llama").to_dict()
    cfg.pop("rope_parameters", None)
    cfg["rope_scaling"] = rope
    with pytest.raises(UnsupportedError, match=f"rope_scaling.*{message}"):
        spec_from_config(cfg)


def test_a_model_with_llama3_rope_runs_exactly_on_the_simulator():
    """The integer tables come from the scaled frequencies: the compiled model's logits equal the integer
    reference's byte for byte, and differ from a compile of the same weights with the default RoPE."""
    from flightc.compiler.pipeline import compile_model
    from flightc.compress.plan import CompressionPlan
    from flightc.reference.integer import IntegerModel, greedy
    from flightc.runtime.session import Session

    rope, positions = SCALINGS["llama3"]
    prompt = [3, 17, 99, 5, 42, 7]

    def run(**overrides):
        model = random_model("llama", 4, max_position_embeddings=positions, **overrides)
        c = compile_model(model, "tiny", CompressionPlan.parse("w8"), max_len=32, max_prefill=len(prompt),
                          prefill_lengths=[len(prompt)])
        ref_tokens, ref_logits = greedy(IntegerModel(c.integer, 32), prompt, 4)
        got = list(Session(c.bundle).generate(prompt, 4))
        assert [t for t, _ in got] == ref_tokens
        assert all(a.tobytes() == b.tobytes() for (_, a), b in zip(got, ref_logits))
        return c, ref_logits

    c, scaled = run(rope_scaling=dict(rope))
    assert c.bundle.manifest.model["rope_scaling"]["type"] == "llama3"
    _, plain = run()
    assert any(a.tobytes() != b.tobytes() for a, b in zip(scaled, plain))
