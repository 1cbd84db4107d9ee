"""Length-adaptive compilation: patched templates equal exact-length programs at every bucket boundary."""
from __future__ import annotations

import copy

import numpy as np
import pytest

from conftest import torch_model
from flightc.compiler.adaptive import TemplateSpec, build_template, template_specs
from flightc.compiler.lower import lower_step
from flightc.compiler.pipeline import compile_model
from flightc.compiler.tokens import insert_tokens
from flightc.compress.plan import CompressionPlan
from flightc.config import Buffer
from flightc.errors import BundleError, UnsupportedError
from flightc.isa.codec import encode_program
from flightc.runtime.session import Session
from flightc.sim.functional import Machine

L_MAX = 40
BUCKET = 8
STEP = 4  # max_prefill: tokens per prefill step


@pytest.fixture(scope="module", params=["tiny-llama-gqa", "tiny-mistral"])
def adaptive(request):
    return compile_model(torch_model(request.param), "tiny", CompressionPlan.parse("w4g32", []), max_len=L_MAX,
                         max_prefill=STEP, bucket=BUCKET)


def exact_program(c, length: int, pos0: int) -> list[bytes]:
    """The program of one step compiled for exactly this length and position (no template, no patch)."""
    step = lower_step(c.fused, c.config, c.memory, length, pos0)
    return [encode_program(insert_tokens(p, e, c.config.token_fifo_depth, c.config)) for p, e in zip(step.cores, step.extras)]


def _positions(length: int) -> list[int]:
    """Start positions at bucket boundaries k*B and k*B + 1, and the last one a step of ``length`` can have."""
    last = L_MAX - length
    ps = {last}
    for k in range(L_MAX // BUCKET + 1):
        ps.update(p for p in (k * BUCKET, k * BUCKET + 1) if p <= last)
    return sorted(ps)


def test_patched_steps_equal_exact_length_programs_at_bucket_boundaries(adaptive):
    c = adaptive
    b = c.bundle
    ids = b.region("io.ids")
    rng = np.random.default_rng(0)
    machine = Machine.from_bundle(b)
    # fill the KV cache of every position with a real sequence first, so each step reads meaningful rows
    tokens = rng.integers(0, c.float_graph.spec.vocab_size, L_MAX).tolist()
    for p in range(L_MAX):
        machine.write_hbm(ids["channel"], ids["addr"], np.asarray(tokens[p:p + 1], "<i4").tobytes())
        machine.run(b.step(1, p))
    differ = 0
    checked = 0
    for length in (1, STEP):
        for p in _positions(length):
            patched, exact = b.step(length, p), exact_program(c, length, p)
            differ += patched != exact
            results = []
            for program in (patched, exact):
                m = copy.deepcopy(machine)
                m.write_hbm(ids["channel"], ids["addr"], np.asarray(tokens[p:p + length], "<i4").tobytes())
                m.run(program)
                results.append({ch: mem.tobytes() for ch, mem in m.hbm.items()})
            assert results[0] == results[1], f"{length} tokens at position {p}: memory differs"
            checked += 1
    assert checked >= 2 * (L_MAX // BUCKET) * 2
    assert differ > 0  # the exact programs are laid out differently; only their results must agree


def test_length_beyond_max_len_is_refused(adaptive):
    b = adaptive.bundle
    b.step(1, L_MAX - 1)
    with pytest.raises(BundleError, match=f"beyond the bundle's max_len {L_MAX}"):
        b.step(1, L_MAX)
    with pytest.raises(BundleError, match="beyond the bundle's max_len"):
        b.step(STEP, L_MAX - STEP + 1)
    s = Session(b)
    with pytest.raises(UnsupportedError, match=f"exceeds the bundle's max_len {L_MAX}"):
        s.prefill(list(range(L_MAX + 1)))


def test_long_prompts_run_in_steps_like_the_integer_reference(adaptive):
    from flightc.reference.integer import IntegerModel, greedy

    c = adaptive
    prompt = list(range(3, 3 + 3 * STEP + 2))  # three full steps and a partial one
    ref_tokens, ref_logits = greedy(IntegerModel(c.integer, L_MAX), prompt, 6)
    got = list(Session(c.bundle).generate(prompt, 6))
    assert [t for t, _ in got] == ref_tokens
    assert all(z.tobytes() == r.tobytes() for (_, z), r in zip(got, ref_logits))


def test_templates_are_few_and_small(adaptive):
    m = adaptive.bundle.manifest
    st = m.storage
    decode = [t for t in m.programs if t["length"] == 1]
    assert len(decode) == -(-L_MAX // BUCKET)  # one template per bucket, not one program per position
    assert all(t["patches"] > 0 for t in decode if t["p_hi"] > t["p_lo"])
    assert st["template_bytes"] + st["patch_bytes"] < st["per_length_bytes"] / 5


def test_position_ranges_are_cut_where_one_template_cannot_serve_both_sides():
    mistral = compile_model(torch_model("tiny-mistral"), "tiny", CompressionPlan.parse("w8", []), max_len=24,
                            max_prefill=2, prefill_lengths=[2])
    g, cfg = mistral.fused, mistral.config
    w = g.spec.sliding_window
    assert [(s.p_lo, s.p_hi) for s in template_specs(g, cfg, 1, 24)] == [(0, w - 1), (w, 23)]
    assert [(s.p_lo, s.p_hi) for s in template_specs(g, cfg, 2, 24, bucket=10)] == [(0, w - 1), (w, 9), (10, 19),
                                                                                    (20, 22)]
    # a KV buffer too small to double-buffer long contexts: the range is cut where it stops fitting
    small = cfg.replace(kv_buffer_kib=2)  # 2 KiB: 4 slots of 32-byte rows fit up to 16 rows
    llama = compile_model(torch_model("tiny-llama"), small, CompressionPlan.parse("w8", []), max_len=24,
                          max_prefill=2, prefill_lengths=[2])
    d = llama.fused.spec.head_dim
    fits = small.buffer_bytes(Buffer.KV) // (4 * d)  # the longest window with two K and two V slots
    specs = template_specs(llama.fused, small, 1, 24)
    assert [(s.p_lo, s.p_hi) for s in specs] == [(0, fits - 1), (fits, 23)]


def test_non_affine_step_is_refused_with_the_field_named():
    mistral = compile_model(torch_model("tiny-mistral"), "tiny", CompressionPlan.parse("w8", []), max_len=24,
                            max_prefill=2, prefill_lengths=[2])
    w = mistral.fused.spec.sliding_window
    with pytest.raises(UnsupportedError, match=r"is not affine in the position between 0 and 20"):
        build_template(mistral.fused, mistral.config, mistral.memory, TemplateSpec(1, 0, 20))
    assert w < 20


def test_per_length_storage_is_what_materializing_every_program_would_take(adaptive):
    """The manifest's 'one program per length' figure, computed from template sizes, against the real thing."""
    b = adaptive.bundle
    total = 0
    for n in range(1, L_MAX):  # a prompt of n tokens: its steps, concatenated
        pos = 0
        for length in b.prompt_steps(n):
            total += sum(map(len, b.step(length, pos)))
            pos += length
        total += sum(map(len, b.step(1, n)))  # and the decode step at position n
    assert b.manifest.storage["per_length_bytes"] == total


def test_a_position_run_again_takes_its_patched_programs_as_made_until_the_template_changes(adaptive):
    """Bundle.step keeps the programs it patched (evaluation windows revisit every position): the same bytes
    again, and new ones once a template is replaced."""
    b = copy.copy(adaptive.bundle)
    b.programs = dict(b.programs)
    b._stepped, b._stepped_bytes = {}, 0
    first = b.step(1, 9)
    again = b.step(1, 9)
    assert again == first and all(x is y for x, y in zip(again, first))  # kept, not patched again
    key = next(k for lo, hi, k in b._templates[1] if lo <= 9 <= hi)
    b.programs[key] = [bytes(bytearray(p)) for p in b.programs[key]]  # equal bytes, new objects: patched afresh
    fresh = b.step(1, 9)
    assert fresh == first and not any(x is y for x, y in zip(fresh, first))
