"""A prompt step whose window is longer than a key block runs attention as a blocked softmax (key blocks of
lower.key_block columns, Q.K^T made again for each part, P.V summed over the blocks by MM.acc_in): bit-exact with
the integer reference, with the recomputed Q.K^T the only extra work."""
import dataclasses

import numpy as np
import pytest

from conftest import torch_model
from flightc.compiler.adaptive import template_specs
from flightc.compiler.lower import key_block
from flightc.compiler.pipeline import compile_model
from flightc.compress.plan import CompressionPlan
from flightc.config import PRESETS
from flightc.isa.codec import decode_program
from flightc.isa.table import MiscOp, Opcode, SoftmaxPart
from flightc.reference.integer import IntegerModel, greedy
from flightc.runtime.session import Session

STEP, PROMPT_LEN, NEW = 32, 64, 4  # two 32-token steps: the second sees 64 K/V rows, two key blocks on tiny
TINY = PRESETS["tiny"]
ROOMY = dataclasses.replace(TINY, name="tiny-roomy", acc_buffer_kib=64, act_buffer_kib=64)  # one key block of 64


def _compiled(hw):
    return compile_model(torch_model("tiny-llama"), hw, CompressionPlan.parse("w8", []), max_len=PROMPT_LEN + NEW,
                         max_prefill=STEP, prefill_lengths=[STEP])


@pytest.fixture(scope="module")
def blocked():
    return _compiled("tiny")


def _prompt() -> list[int]:
    return [int(t) for t in np.random.default_rng(7).integers(0, 256, PROMPT_LEN)]


def test_the_second_step_is_blocked_and_the_first_is_not(blocked):
    assert key_block(TINY, STEP) == STEP  # a window of 64 rows is two blocks; the first step's 32, one
    specs = template_specs(blocked.fused, TINY, STEP, PROMPT_LEN + NEW, mem=blocked.memory)
    assert [(s.p_lo, s.p_hi) for s in specs][:2] == [(0, 0), (1, 32)]  # cut where the window gains a block
    first_step = decode_program(blocked.bundle.step(STEP, 0)[0])
    assert not any(i.opcode is Opcode.MISC and i.part for i in first_step)  # 32 rows: one key block, the whole softmax
    program = decode_program(blocked.bundle.step(STEP, STEP)[0])  # patched to its position
    parts = {(SoftmaxPart(i.part), bool(i.first)) for i in program if i.opcode is Opcode.MISC and i.op == MiscOp.SOFTMAX}
    assert {p for p, _ in parts} == {SoftmaxPart.MAX, SoftmaxPart.SUM, SoftmaxPart.NORM}
    assert any(i.opcode is Opcode.MM and i.acc_in for i in program)


def test_a_blocked_prompt_step_equals_the_integer_reference(blocked):
    prompt = _prompt()
    ref_tokens, ref_logits = greedy(IntegerModel(blocked.integer, PROMPT_LEN + NEW), prompt, NEW)
    got = list(Session(blocked.bundle).generate(prompt, NEW))
    assert [t for t, _ in got] == ref_tokens
    assert all(a.tobytes() == b.tobytes() for (_, a), b in zip(got, ref_logits))


def test_the_only_extra_work_is_q_k_made_again_for_two_parts(blocked):
    """The same prompt on a config whose key block holds the whole window: the blocked run's MACs are more by
    Q.K^T twice over for the blocked step (layers x heads x step x window x head_dim each), nothing else."""
    prompt = _prompt()
    runs = []
    for c in (blocked, _compiled(ROOMY)):
        session = Session(c.bundle)
        list(session.generate(prompt, NEW))
        runs.append(session.counters)
    s = blocked.fused.spec
    qk = s.num_layers * s.num_heads * STEP * PROMPT_LEN * s.head_dim
    assert runs[0].macs - runs[1].macs == 2 * qk
    assert runs[0].instructions["MM"] > runs[1].instructions["MM"]
