"""A compiled model's bundle on the RTL: every memory byte equals the functional simulator's after each program."""
from __future__ import annotations

import pytest

from conftest import run_steps
from flightc.isa.codec import decode_program
from flightc.isa.table import Opcode
from flightc.sim.perf.calibration import PROMPT, calibration_bundle


@pytest.mark.parametrize("kv_bits", [8, 4])
def test_small_model_prefill_and_decode_are_byte_identical(kv_bits):
    bundle = calibration_bundle(kv_bits=kv_bits)  # 1 layer, hidden 64: W4 g32 8:16, W8 down_proj, W2 g16 2:4 v_proj
    assert bundle.manifest.plan["kv_bits"] == kv_bits
    for cyc in run_steps(bundle, [("prefill", len(PROMPT), PROMPT), ("decode", 4, [11]), ("decode", 5, [200])]):
        busy = [v for k, v in cyc.items() if k.startswith("busy_") and v]
        assert cyc["cycles"] >= max(busy) and cyc["busy_mv"] > 0


def test_odd_shapes_padded_to_whole_chunks_are_byte_identical():
    """Dimensions that are no multiple of 16: hidden 68 (W4 g32 8:16 rows end in a partial group and a partial block
    of 4 real columns, so padded positions are kept), intermediate 40 (2:4 g16 down_proj, a partial group), a
    vocabulary of 301. The packed rows run to whole lane-group chunks of zero weights, and the activations they meet
    past the true columns change nothing."""
    from flightc.compiler.pipeline import compile_model
    from flightc.compress.plan import CompressionPlan
    from flightc.models.seeded import random_model

    model = random_model("llama", 0, num_hidden_layers=1, hidden_size=68, intermediate_size=40, num_attention_heads=2,
                         num_key_value_heads=1, head_dim=64, vocab_size=301)
    plan = CompressionPlan.parse("w4g32s8:16", ["*.down_proj=w2g16s2:4", "lm_head=w8"])
    bundle = compile_model(model, "tiny", plan, max_len=12, max_prefill=8, prefill_lengths=[8]).bundle
    mv = next(i for i in decode_program(bundle.program("decode", 8)[0]) if i.opcode is Opcode.MV and i.w_stream)
    assert mv.k == 128  # hidden 68 rounded up to the lane group's 64 columns
    run_steps(bundle, [("prefill", 8, [1, 5, 9, 3, 7, 2, 8, 4]), ("decode", 8, [11]), ("decode", 9, [300])])


def test_a_blocked_prompt_step_is_byte_identical():
    """Two 32-token steps on tiny: the second's 64 K/V rows are two key blocks (a blocked softmax: MAX, SUM and NORM
    parts, P.V summed over the blocks by MM.acc_in)."""
    from flightc.compiler.pipeline import compile_model
    from flightc.compress.plan import CompressionPlan
    from flightc.isa.table import SoftmaxPart
    from flightc.models.seeded import random_model

    model = random_model("llama", 1, num_hidden_layers=1, hidden_size=64, intermediate_size=96, num_attention_heads=2,
                         num_key_value_heads=1, head_dim=32, vocab_size=256)
    bundle = compile_model(model, "tiny", CompressionPlan.parse("w4g32", ["lm_head=w8"]), max_len=66, max_prefill=32,
                           prefill_lengths=[32]).bundle
    second = decode_program(bundle.step(32, 32)[0])
    assert {i.part for i in second if i.opcode is Opcode.MISC} >= {int(p) for p in SoftmaxPart if p}
    assert any(i.opcode is Opcode.MM and i.acc_in for i in second)
    ids = [(7 * t + 3) % 256 for t in range(64)]
    run_steps(bundle, [("step", (32, 0), ids[:32]), ("step", (32, 32), ids[32:]), ("decode", 64, [5])])
