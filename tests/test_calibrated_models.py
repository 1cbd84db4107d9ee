"""Calibrated compression on the trained models, end to end: compile, integer reference, functional simulator."""
from __future__ import annotations

import functools
import json

import numpy as np
import pytest

from flightc.cli import main
from flightc.compiler.pipeline import compile_model
from flightc.compress.allocate import BitBudget, BudgetBits
from flightc.compress.method import Method
from flightc.compress.plan import CompressionPlan
from flightc.evaluate import reference_perplexity, sim_matches_reference
from flightc.models.builtin import model_input, model_task
from flightc.reference.integer import IntegerModel

MAX_LEN = {"addition": 32, "pylm": 64}


@functools.lru_cache(maxsize=None)
def compiled(model: str, fmt: str, method: str, kv_bits: int = 8, budget: BitBudget | None = None):
    return compile_model(model_input(f"builtin:{model}"), "tiny", CompressionPlan.parse(fmt, kv_bits=kv_bits),
                         max_len=MAX_LEN[model], max_prefill=16, method=Method.parse(method), budget=budget)


def prompt(model: str) -> list[int]:
    task = model_task(f"builtin:{model}")
    return task.prompt_ids(task.held_out(1)[0]) if model == "addition" else task.held_out(1)[0][:12].tolist()


@pytest.mark.parametrize("model,fmt,method,kv_bits,budget", [
    ("addition", "w4g128s8:16", "sparsegpt", 4, None),
    ("addition", "w8", "rtn", 8, BitBudget(3.5, "8:16", counts=BudgetBits.VALUES)),
    ("addition", "w8", "smoothquant", 4, None),
    ("pylm", "w4g128", "awq+gptq", 4, None),
    ("pylm", "w3g128s2:4", "awq+sparsegpt", 8, None),
])
def test_compressed_configurations_are_bit_exact_on_the_simulator(model, fmt, method, kv_bits, budget):
    """Configurations of the accuracy table (docs/compression.md): the functional simulator's INT32 logits equal
    the integer reference's byte for byte over a prompt and greedy decode steps, INT4 KV cache included."""
    c = compiled(model, fmt, method, kv_bits, budget)
    m = c.bundle.manifest
    assert m.plan["kv_bits"] == kv_bits and m.method == Method.parse(method).label()
    if budget:
        assert c.allocation.avg_bits <= budget.bits and len({f for f in c.bundle.manifest.layers.values()}) > 2
    assert sim_matches_reference(c, prompt(model), new_tokens=3)


def teacher_forced_error(c, sequences: np.ndarray, float_logits: list[np.ndarray]) -> float:
    scale = c.bundle.manifest.io["logit_scale"]
    num = den = 0.0
    for ids, zf in zip(sequences, float_logits):
        zq = IntegerModel(c.integer, len(ids)).forward_all(ids).astype(np.float64) * scale
        num += float(np.sum((zq - zf) ** 2))
        den += float(np.sum(zf ** 2))
    return np.sqrt(num / den)


def test_calibrated_methods_beat_round_to_nearest_on_the_trained_model():
    """W4 g128 + 8:16 on the addition model: SparseGPT and AWQ+SparseGPT keep the logits closer to the float
    model than magnitude pruning with round-to-nearest (teacher-forced, held-out problems, integer datapath)."""
    from flightc.models.builtin import load_torch_model
    from flightc.reference.float_ref import FloatReference

    task = model_task("builtin:addition")
    seqs = task.sequences(task.held_out(40))
    ref = FloatReference(load_torch_model("builtin:addition"), device="cpu")
    zf = [ref.logits(s.tolist()) for s in seqs]
    err = {m: teacher_forced_error(compiled("addition", "w4g128s8:16", m), seqs, zf)
           for m in ("rtn", "sparsegpt", "awq+sparsegpt")}
    assert err["sparsegpt"] < 0.8 * err["rtn"]
    assert err["awq+sparsegpt"] < 0.8 * err["rtn"]


def test_int4_kv_cache_halves_the_kv_traffic():
    from flightc.sim.perf.workload import WorkloadModel

    kv8, kv4 = compiled("addition", "w8", "rtn", 8), compiled("addition", "w8", "rtn", 4)
    b8, b4 = WorkloadModel(kv8.bundle).token_bytes(20), WorkloadModel(kv4.bundle).token_bytes(20)
    assert b8.kv_cache > 0 and b4.kv_cache * 2 == b8.kv_cache
    assert b4.weight_values == b8.weight_values


def test_text_eval_on_the_simulator_equals_the_integer_reference():
    """`flightc eval`'s perplexity on a backend (teacher-forced decode steps) is the integer reference's."""
    from flightc.evaluate import evaluate_text
    from flightc.models.builtin import load_torch_model
    from flightc.reference.float_ref import FloatReference
    from flightc.tasks.text import TextTask

    c = compiled("pylm", "w4g128s8:16", "sparsegpt", 4)
    task = TextTask(model_input("builtin:pylm"), seq_len=12)
    ref = FloatReference(load_torch_model("builtin:pylm"), device="cpu")
    r = evaluate_text(c.bundle, ref, task, 1, backend="fsim", check_hazards=False)
    expected = reference_perplexity(c.integer, task.held_out(1), c.bundle.manifest.io["logit_scale"])
    assert r.compiled_perplexity == pytest.approx(expected, rel=1e-12)
    # the float side against PyTorch's own cross-entropy on the same window
    import torch

    ids = torch.tensor(task.held_out(1))
    with torch.no_grad():
        nll = torch.nn.functional.cross_entropy(ref.model(ids[:, :-1]).logits[0].double(), ids[0, 1:])
    assert r.float_perplexity == pytest.approx(float(torch.exp(nll)), rel=1e-5)


def test_cli_compiles_with_a_method_a_budget_calibration_text_and_int4_kv(tmp_path, capsys):
    calib = tmp_path / "calib.txt"
    calib.write_text("".join(f"{a:04d}+{b:04d}={a + b:05d}"[::-1] for a, b in [(12, 3456), (999, 1), (4321, 77)] * 8))
    out = tmp_path / "m.flb"
    assert main(["compile", "builtin:addition", "--max-len", "32", "--method", "awq+sparsegpt", "--calib", str(calib),
                 "--calib-len", "16", "--bits-budget", "3.5", "--sparsity", "8:16", "--kv-bits", "4",
                 "-o", str(out)]) == 0
    text = capsys.readouterr().out
    assert "bit allocation: budget 3.5" in text and "L2.down_proj" in text
    assert main(["info", str(out)]) == 0
    assert "compression: awq+sparsegpt, KV cache INT4; bit budget 3.5" in " ".join(capsys.readouterr().out.split())
    assert main(["info", str(out), "--json"]) == 0
    m = json.loads(capsys.readouterr().out)
    assert m["method"] == "awq+sparsegpt" and m["plan"]["kv_bits"] == 4
    assert m["allocation"]["avg_bits"] <= 3.5 and m["allocation"]["avg_density"] == 0.5
    assert main(["compile", "builtin:addition", "--density", "0.5", "-o", str(out)]) == 2
    assert "need --bits-budget" in " ".join(capsys.readouterr().err.split())
    bad = tmp_path / "ids.npy"
    np.save(bad, np.full((2, 8), 99))
    assert main(["compile", "builtin:addition", "--method", "gptq", "--calib", str(bad), "-o", str(out)]) == 2
    assert "outside the model's vocabulary" in " ".join(capsys.readouterr().err.split())
