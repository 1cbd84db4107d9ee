"""The real-size configs load with lazily generated, seeded weights (the full compile is in bench/compile_real.py)."""
import numpy as np
import pytest

from flightc.frontend.hf import load_hf
from flightc.frontend.lazy import LazyArray
from flightc.models.builtin import trained_folder

CONFIGS = trained_folder("addition").parents[1] / "configs"


@pytest.mark.parametrize("name, want", [
    ("llama2-7b", dict(family="llama", vocab_size=32000, hidden_size=4096, intermediate_size=11008, num_layers=32,
                       num_heads=32, num_kv_heads=32, head_dim=128)),
    ("opt-6.7b", dict(family="opt", vocab_size=50272, hidden_size=4096, intermediate_size=16384, num_layers=32,
                      num_heads=32, num_kv_heads=32, head_dim=128, learned_positions=2050)),
    ("tinyllama-1.1b", dict(family="llama", vocab_size=32000, hidden_size=2048, intermediate_size=5632,
                            num_layers=22, num_heads=32, num_kv_heads=4, head_dim=64)),
])
def test_published_shapes_and_lazy_weights(name, want):
    g = load_hf(CONFIGS / name, random_weights=0)
    for key, value in want.items():
        assert getattr(g.spec, key) == value, key
    params = sum(int(np.prod(g.node(n)["weight"].shape)) for n in g.linears())
    assert (0.9e9 < params < 1.1e9) if name == "tinyllama-1.1b" else (6.0e9 < params < 7.2e9)
    w = g.node("L3.fc1" if name == "opt-6.7b" else "L3.up_proj")["weight"]
    assert isinstance(w, LazyArray)  # nothing materialized by loading
    a, b = np.asarray(w), np.asarray(w)
    assert np.array_equal(a, b) and a.dtype == np.float32
    assert abs(a.std() - 0.02) < 0.002
    other = np.asarray(load_hf(CONFIGS / name, random_weights=1).node("L3.q_proj")["weight"])
    assert not np.array_equal(np.asarray(g.node("L3.q_proj")["weight"]), other)
