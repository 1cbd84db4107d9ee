"""One full-size LLaMA2-7B decoder layer (seeded weights) compressed by GPTQ / SparseGPT, layer by layer.

    python bench/compress_layer.py [--format w4g128s8:16] [--tokens 512] [--methods rtn,gptq,sparsegpt]

The layer's seven linears (q/k/v/o 4096x4096, gate/up 11008x4096, down 4096x11008) get their inputs
from running the layer itself on seeded hidden states, so each Hessian comes from real intermediate
activations (post-norm, attention output, SiLU(gate)*up). Prints per linear: seconds, relative output
error, and the process's peak resident memory, to show a 7B layer fits the 24 GiB CI machine.
"""
from __future__ import annotations

import argparse
import json
import resource
import time
from pathlib import Path

import numpy as np
import torch

from flightc.compiler.compress import solve
from flightc.compress.formats import WeightFormat
from flightc.compress.method import Solver
from flightc.compress.obs import hessian, output_error

CONFIG = Path(__file__).resolve().parents[1] / "flightc" / "models" / "configs" / "llama2-7b" / "config.json"


def peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def seeded_layer(hidden: int, inter: int, seed: int) -> dict[str, np.ndarray]:
    """LLaMA-style initialization (normal, std 0.02), float32."""
    rng = np.random.default_rng(seed)
    shapes = {"q_proj": (hidden, hidden), "k_proj": (hidden, hidden), "v_proj": (hidden, hidden),
              "o_proj": (hidden, hidden), "gate_proj": (inter, hidden), "up_proj": (inter, hidden),
              "down_proj": (hidden, inter)}
    return {n: rng.standard_normal(s, dtype=np.float32) * np.float32(0.02) for n, s in shapes.items()}


def layer_inputs(w: dict[str, np.ndarray], x: np.ndarray, heads: int) -> dict[str, np.ndarray]:
    """Each linear's input when the layer runs on x [T, hidden] (causal attention, no RoPE: shapes are what matter)."""
    def rms(v):
        return v / np.sqrt(np.mean(v * v, axis=-1, keepdims=True) + 1e-5)

    t, hidden = x.shape
    d = hidden // heads
    xn = rms(x)
    q, k, v = (xn @ w[n].T for n in ("q_proj", "k_proj", "v_proj"))
    qh, kh, vh = (a.reshape(t, heads, d).transpose(1, 0, 2) for a in (q, k, v))
    s = qh @ kh.transpose(0, 2, 1) / np.sqrt(d)
    s = np.where(np.tril(np.ones((t, t), bool)), s, -np.inf)
    p = np.exp(s - s.max(-1, keepdims=True))
    attn = ((p / p.sum(-1, keepdims=True)) @ vh).transpose(1, 0, 2).reshape(t, hidden)
    h = x + attn @ w["o_proj"].T
    hn = rms(h)
    gate, up = hn @ w["gate_proj"].T, hn @ w["up_proj"].T
    act = gate / (1 + np.exp(-gate)) * up
    return {"q_proj": xn, "k_proj": xn, "v_proj": xn, "o_proj": attn, "gate_proj": hn, "up_proj": hn,
            "down_proj": act}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--format", default="w4g128s8:16")
    ap.add_argument("--tokens", type=int, default=512, help="calibration tokens (the layer runs on them)")
    ap.add_argument("--methods", default="rtn,gptq,sparsegpt")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cfg = json.loads(CONFIG.read_text())
    hidden, inter, heads = cfg["hidden_size"], cfg["intermediate_size"], cfg["num_attention_heads"]
    fmt = WeightFormat.parse(args.format)
    t0 = time.perf_counter()
    w = seeded_layer(hidden, inter, args.seed)
    x = np.random.default_rng(args.seed + 1).standard_normal((args.tokens, hidden), dtype=np.float32)
    x *= np.exp(np.random.default_rng(args.seed + 2).normal(size=hidden)).astype(np.float32)  # outlier channels
    inputs = layer_inputs(w, x, heads)
    print(f"LLaMA2-7B layer: hidden {hidden}, intermediate {inter}; {args.tokens} calibration tokens; format "
          f"{fmt.label()}; layer run in {time.perf_counter() - t0:.1f} s; peak RSS {peak_rss_gib():.2f} GiB",
          flush=True)
    methods = args.methods.split(",")
    print(f"{'linear':10s} {'shape':>12s} " + " ".join(f"{m + ' err':>14s} {m + ' s':>8s}" for m in methods))
    total = {m: 0.0 for m in methods}
    for name, weight in w.items():
        h = hessian(inputs.pop(name))  # each layer's inputs are dropped once its Hessian is formed
        cells = []
        for m in methods:
            t = time.perf_counter()
            qw = solve(weight, fmt, Solver(m), h)
            dt = time.perf_counter() - t
            total[m] += dt
            cells.append(f"{output_error(weight, qw, h):14.4e} {dt:8.1f}")
            del qw
        print(f"{name:10s} {str(weight.shape):>12s} " + " ".join(cells) + f"   peak RSS {peak_rss_gib():.2f} GiB",
              flush=True)
    print("total seconds: " + ", ".join(f"{m} {s:.0f}" for m, s in total.items()) +
          f"; peak resident memory {peak_rss_gib():.2f} GiB")


if __name__ == "__main__":
    main()
