"""flightc eval and the default model on the simulator."""
import json

import pytest

from flightc.cli import main
from flightc.compiler.pipeline import compile_model
from flightc.compress.plan import CompressionPlan
from flightc.models.builtin import model_input, model_task


@pytest.fixture(scope="module")
def w8_bundle(tmp_path_factory):
    task = model_task("builtin:addition")
    c = compile_model(model_input("builtin:addition"), "tiny", CompressionPlan.parse("w8"),
                      max_len=task.prompt_len + task.answer_len, max_prefill=task.prompt_len,
                      prefill_lengths=[task.prompt_len])
    return c, c.bundle.save(tmp_path_factory.mktemp("eval") / "add-w8.flb")


def test_default_model_runs_bit_exact_and_answers(w8_bundle):
    from flightc.reference.integer import IntegerModel, greedy
    from flightc.runtime.session import Session

    c, _ = w8_bundle
    task = model_task("builtin:addition")
    correct = 0
    for p in task.held_out(6):
        prompt = task.prompt_ids(p)
        ref_tokens, ref_logits = greedy(IntegerModel(c.integer, len(prompt) + task.answer_len), prompt, task.answer_len)
        out = list(Session(c.bundle).generate(prompt, task.answer_len))
        assert [t for t, _ in out] == ref_tokens
        assert all(z.tobytes() == r.tobytes() for (_, z), r in zip(out, ref_logits))
        correct += task.is_correct(p, ref_tokens)
    assert correct >= 5


def test_eval_cli_reports_accuracy(w8_bundle, tmp_path, capsys):
    _, path = w8_bundle
    out = tmp_path / "eval.json"
    assert main(["eval", str(path), "-n", "20", "--json", str(out)]) == 0
    r = json.loads(out.read_text())
    assert r["problems"] == 20 and r["float_exact_match"] >= 0.95
    assert r["compiled_exact_match"] >= 0.85  # W8A8 keeps the task (float vs quantized: a tolerance)
    assert 0 <= r["logit_rel_error"] < 0.5
    assert "exact match" in capsys.readouterr().out


def test_eval_refuses_a_bundle_of_another_model(tmp_path, capsys):
    from conftest import compiled

    path = compiled("tiny-llama", "w8").bundle.save(tmp_path / "other.flb")
    assert main(["eval", str(path), "-n", "2"]) == 2
    assert "does not match the task" in capsys.readouterr().err
