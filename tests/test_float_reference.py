"""The float reference (PyTorch) and the compressed model's distance from it."""
import numpy as np

from conftest import MAX_LEN, PROMPT, compiled, torch_model
from flightc.reference.float_ref import FloatReference, agreement
from flightc.reference.integer import IntegerModel, greedy


def test_reference_runs_on_its_device_and_is_causal():
    """The model sits where the reference says it runs, and a position's logits ignore later tokens."""
    ref = FloatReference(torch_model("tiny-llama"))
    assert {p.device.type for p in ref.model.parameters()} == {ref.device}
    full, prefix = ref.logits(PROMPT), ref.logits(PROMPT[:3])
    assert full.dtype == np.float64 and full.shape == (len(PROMPT), ref.model.config.vocab_size)
    assert np.allclose(prefix, full[:3], atol=1e-4) and not np.allclose(full[3], full[2], atol=1e-2)


def test_reference_generate_matches_its_own_logits():
    ref = FloatReference(torch_model("tiny-llama"))
    tokens = ref.generate(PROMPT, 6)
    z = ref.logits(PROMPT + tokens[:-1])
    assert np.argmax(z[len(PROMPT) - 1:], axis=1).tolist() == tokens


def test_w8_is_close_and_harder_formats_drift_further():
    """8-bit weights stay close to the float model; 4-bit + 8:16 pruning (round-to-nearest) drifts further."""
    ref = FloatReference(torch_model("tiny-llama"))
    errors = {}
    for fmt in ("w8", "w4g128s8:16"):
        c = compiled("tiny-llama", fmt)
        tokens, logits = greedy(IntegerModel(c.integer, MAX_LEN), PROMPT, 16)
        a = agreement(ref, PROMPT, tokens, logits, c.bundle.manifest.io["logit_scale"])
        errors[fmt] = a
    assert errors["w8"].logit_rel_error < 0.15 and errors["w8"].logit_cosine > 0.98
    assert errors["w8"].teacher_forced_match >= 0.6
    assert errors["w4g128s8:16"].logit_rel_error > errors["w8"].logit_rel_error


def test_agreement_of_the_float_model_with_itself_is_perfect():
    ref = FloatReference(torch_model("tiny-llama"))
    tokens = ref.generate(PROMPT, 5)
    z = ref.logits(PROMPT + tokens[:-1])[len(PROMPT) - 1:]
    scale = 1e-3
    a = agreement(ref, PROMPT, tokens, [np.round(r / scale) for r in z], scale)
    assert a.greedy_match == 1.0 and a.first_divergence is None and a.teacher_forced_match == 1.0
    assert a.logit_rel_error < 1e-3
