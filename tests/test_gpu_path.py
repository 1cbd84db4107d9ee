"""The GPU path's parts, checked on the CPU: the integer reference with its products in PyTorch equals the numpy
one byte for byte, threaded round-to-nearest compression equals the serial one, the float model built from
seeded random weights is the one the compiler reads, and bench/gpu_reference.py says when it needs a GPU."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import PROMPT, compiled, torch_model
from flightc.compiler.compress import compress
from flightc.compress.plan import CompressionPlan
from flightc.config import load_config
from flightc.frontend.hf import load_hf
from flightc.frontend.lazy import lazy_weights_model
from flightc.reference.float_graph import run_float
from flightc.reference.integer import IntegerModel, greedy

ROOT = Path(__file__).resolve().parents[1]
TINY_LLAMA = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": 512, "hidden_size": 128,
              "intermediate_size": 256, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
              "max_position_embeddings": 256, "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "hidden_act": "silu",
              "tie_word_embeddings": False}


@pytest.mark.parametrize("case", [("tiny-llama", "w4g128s8:16", ()), ("tiny-llama-gqa", "w8", ()),
                                  ("tiny-llama", "w4g32", ("*.q_proj=w2g32s2:4", "*.down_proj=w8"))])
def test_torch_products_equal_numpy_byte_for_byte(case):
    c = compiled(*case)
    n = 12
    ref_tokens, ref_logits = greedy(IntegerModel(c.integer, len(PROMPT) + n), PROMPT, n)
    tokens, logits = greedy(IntegerModel(c.integer, len(PROMPT) + n, device="cpu"), PROMPT, n)
    assert tokens == ref_tokens
    for a, b in zip(logits, ref_logits):
        assert a.dtype == b.dtype and np.array_equal(a, b)


def test_threaded_compression_equals_serial():
    g = load_hf(torch_model("tiny-llama"))
    plan, cfg = CompressionPlan.parse("w4g32s8:16", ["*.down_proj=w3g64"]), load_config("tiny")
    serial, threaded = compress(g, plan, cfg, jobs=1), compress(g, plan, cfg, jobs=3)
    assert serial.linears() == threaded.linears()
    for name in serial.linears():
        a, b = serial.node(name)["qweight"], threaded.node(name)["qweight"]
        assert a.fmt == b.fmt
        for field in ("q", "gs", "row_scale", "keep"):
            assert np.array_equal(getattr(a, field), getattr(b, field)), (name, field)


def test_lazy_weights_model_is_the_float_model_the_compiler_reads(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(TINY_LLAMA))
    ids = np.array([3, 141, 59, 265, 35, 89, 79, 323])
    graph = load_hf(tmp_path, random_weights=7)
    expected = run_float(graph, ids)[graph.output]
    with torch.no_grad():
        got = lazy_weights_model(TINY_LLAMA, 7, jobs=2)(torch.from_numpy(ids[None])).logits[0].double().numpy()
    assert np.abs(got - expected).max() < 1e-4 * np.abs(expected).max()
    other = lazy_weights_model(TINY_LLAMA, 8)(torch.from_numpy(ids[None])).logits[0].double().detach().numpy()
    assert np.abs(other - expected).max() > 0.1 * np.abs(expected).max()  # the seed chooses the weights


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message given without a GPU")
def test_gpu_bench_says_it_needs_a_gpu():
    r = subprocess.run([sys.executable, str(ROOT / "bench" / "gpu_reference.py")], capture_output=True, text=True)
    assert r.returncode == 2
    assert "needs a CUDA GPU" in r.stderr and "torch.cuda.is_available() is False" in r.stderr
    assert "Traceback" not in r.stderr


def test_gpu_bench_steps_run_on_a_cut_down_model(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(TINY_LLAMA))
    out = tmp_path / "result.json"
    r = subprocess.run([sys.executable, str(ROOT / "bench" / "gpu_reference.py"), "--model", str(tmp_path),
                        "--device", "cpu", "--workloads", "16:6,24:4", "--int-decode", "4", "--agree-tokens", "4",
                        "--jobs", "2", "--json", str(out)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    result = json.loads(out.read_text())
    paths = [(row["path"], row["workload"]) for row in result["rows"]]
    assert paths == [("float bfloat16", [16, 6]), ("float bfloat16", [24, 4]), ("float float16", [16, 6]),
                     ("float float16", [24, 4]), ("integer reference", [16, 4])]
    assert all(row["decode_tokens_s"] > 0 and row["prefill_ms"] > 0 for row in result["rows"])
    assert result["exact_check"] == {"layers": 2, "prompt": 16, "tokens": 4, "identical": True}
    assert 0 <= result["integer_vs_float32"]["greedy_match"] <= 1
    assert "| integer reference on cpu = numpy's, byte for byte" in r.stdout
