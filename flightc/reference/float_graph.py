"""Float64 interpreter of the graph IR: calibration ranges and the float view of a compressed model."""
from __future__ import annotations

import numpy as np

from flightc import numerics as nm
from flightc.ir.graph import GraphIR, OpKind, interpret
from flightc.rope import RopeScaling


def rope_float(x: np.ndarray, positions: np.ndarray, head_dim: int, theta: float,
               scaling: RopeScaling = RopeScaling()) -> np.ndarray:
    ang = positions[:, None].astype(np.float64) * scaling.inv_freq(head_dim, theta)[None, :]
    f = scaling.attention_factor
    c, s = f * np.cos(ang)[:, None, :], f * np.sin(ang)[:, None, :]
    t = x.reshape(x.shape[0], -1, head_dim)
    half = head_dim // 2
    x1, x2 = t[..., :half], t[..., half:]
    return np.concatenate([x1 * c - x2 * s, x2 * c + x1 * s], axis=-1).reshape(x.shape)


def attention_float(q: np.ndarray, k: np.ndarray, v: np.ndarray, heads: int, kv_heads: int, head_dim: int,
                    q_offset: int = 0, window: int = 0) -> np.ndarray:
    """Causal GQA attention (optionally a sliding window); q rows are positions q_offset.., k/v rows 0.."""
    L, T = q.shape[0], k.shape[0]
    qh = q.reshape(L, heads, head_dim)
    kh = k.reshape(T, kv_heads, head_dim)
    vh = v.reshape(T, kv_heads, head_dim)
    out = np.zeros((L, heads, head_dim))
    last = np.arange(L)[:, None] + q_offset
    mask = np.arange(T)[None, :] <= last
    if window:
        mask &= np.arange(T)[None, :] > last - window
    for h in range(heads):
        j = h // (heads // kv_heads)
        s = qh[:, h, :] @ kh[:, j, :].T / np.sqrt(head_dim)
        s = np.where(mask, s, -np.inf)
        p = np.exp(s - s.max(axis=1, keepdims=True))
        p /= p.sum(axis=1, keepdims=True)
        out[:, h, :] = p @ vh[:, j, :]
    return out.reshape(L, heads * head_dim)


def run_float(graph: GraphIR, ids: np.ndarray, compressed: bool = False) -> dict[str, np.ndarray]:
    """Every node's output for one causal sequence [T] or a batch of them [B, T].

    ``compressed`` uses the dequantized weights; each weight is read once per call, whatever the batch.
    """
    ids = np.asarray(ids)
    if ids.ndim == 1:
        return {k: v[0] for k, v in run_float(graph, ids[None, :], compressed).items()}
    return interpret(graph, float_handlers(graph, ids, compressed))


def float_handlers(graph: GraphIR, ids: np.ndarray, compressed: bool = False) -> dict:
    """The float64 op handlers for a batch of sequences ``ids`` [B, T] (see run_float)."""
    s = graph.spec
    pos = np.arange(ids.shape[1])

    def weight(n: dict, key: str) -> np.ndarray:
        return n[key].dequantized() if compressed and key in n else np.asarray(n["weight"], np.float64)

    def embed(_, n):
        y = weight(n, "qembed")[np.asarray(ids)]
        if "positions" in n:
            table = n["qpositions"].dequantized() if compressed and "qpositions" in n else np.asarray(n["positions"])
            y = y + table[pos + s.position_offset]
        return y

    def rmsnorm(_, n, x):
        return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + s.rms_eps) * np.asarray(n["weight"])

    def layernorm(_, n, x):
        xc = x - x.mean(axis=-1, keepdims=True)
        return (xc / np.sqrt(np.mean(xc * xc, axis=-1, keepdims=True) + s.rms_eps) * np.asarray(n["weight"])
                + np.asarray(n["bias"]))

    def linear(_, n, x):
        y = x @ weight(n, "qweight").T
        return y + np.asarray(n["bias"]) if "bias" in n else y

    return {
        OpKind.EMBED: embed,
        OpKind.RMSNORM: rmsnorm,
        OpKind.LAYERNORM: layernorm,
        OpKind.LINEAR: linear,
        OpKind.ROPE: lambda _, n, x: np.stack([rope_float(r, pos, s.head_dim, s.rope_theta, s.rope_scaling) for r in x]),
        OpKind.ATTENTION: lambda _, n, q, k, v: np.stack([
            attention_float(*qkv, s.num_heads, s.num_kv_heads, s.head_dim, window=s.sliding_window)
            for qkv in zip(q, k, v)]),
        OpKind.SILU: lambda _, n, x: x / (1.0 + np.exp(-x)),
        OpKind.GELU_TANH: lambda _, n, x: nm.gelu_tanh(x),
        OpKind.RELU: lambda _, n, x: np.maximum(x, 0.0),
        OpKind.MUL: lambda _, n, a, b: a * b,
        OpKind.ADD: lambda _, n, a, b: a + b,
    }
