"""Float64 interpreter of the graph IR: calibration ranges and the float view of a compressed model."""
from __future__ import annotations

import numpy as np

from flightc.ir.graph import GraphIR, OpKind


def rope_float(x: np.ndarray, positions: np.ndarray, head_dim: int, theta: float) -> np.ndarray:
    inv = 1.0 / (theta ** (np.arange(0, head_dim, 2, dtype=np.float64) / head_dim))
    ang = positions[:, None].astype(np.float64) * inv[None, :]
    c, s = np.cos(ang)[:, None, :], np.sin(ang)[:, None, :]
    t = x.reshape(x.shape[0], -1, head_dim)
    half = head_dim // 2
    x1, x2 = t[..., :half], t[..., half:]
    return np.concatenate([x1 * c - x2 * s, x2 * c + x1 * s], axis=-1).reshape(x.shape)


def attention_float(q: np.ndarray, k: np.ndarray, v: np.ndarray, heads: int, kv_heads: int, head_dim: int,
                    q_offset: int = 0) -> np.ndarray:
    """Causal GQA attention; q rows are positions q_offset.., k/v rows positions 0.."""
    L, T = q.shape[0], k.shape[0]
    qh = q.reshape(L, heads, head_dim)
    kh = k.reshape(T, kv_heads, head_dim)
    vh = v.reshape(T, kv_heads, head_dim)
    out = np.zeros((L, heads, head_dim))
    mask = np.arange(T)[None, :] <= (np.arange(L)[:, None] + q_offset)
    for h in range(heads):
        j = h // (heads // kv_heads)
        s = qh[:, h, :] @ kh[:, j, :].T / np.sqrt(head_dim)
        s = np.where(mask, s, -np.inf)
        p = np.exp(s - s.max(axis=1, keepdims=True))
        p /= p.sum(axis=1, keepdims=True)
        out[:, h, :] = p @ vh[:, j, :]
    return out.reshape(L, heads * head_dim)


def run_float(graph: GraphIR, ids: np.ndarray, compressed: bool = False) -> dict[str, np.ndarray]:
    """Every node's output for one causal sequence; ``compressed`` uses the dequantized weights."""
    s = graph.spec
    pos = np.arange(len(ids))
    out: dict[str, np.ndarray] = {}
    for name in graph.order():
        n = graph.node(name)
        xs = [out[i] for i in n["inputs"]]
        op = n["op"]
        if op is OpKind.EMBED:
            table = n["qembed"].dequantized() if compressed and "qembed" in n else n["weight"]
            y = table[np.asarray(ids)]
        elif op is OpKind.RMSNORM:
            x = xs[0]
            y = x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + s.rms_eps) * n["weight"]
        elif op is OpKind.LINEAR:
            w = n["qweight"].dequantized() if compressed and "qweight" in n else n["weight"]
            y = xs[0] @ w.T
        elif op is OpKind.ROPE:
            y = rope_float(xs[0], pos, s.head_dim, s.rope_theta)
        elif op is OpKind.ATTENTION:
            y = attention_float(*xs, s.num_heads, s.num_kv_heads, s.head_dim)
        elif op is OpKind.SILU:
            y = xs[0] / (1.0 + np.exp(-xs[0]))
        elif op is OpKind.MUL:
            y = xs[0] * xs[1]
        elif op is OpKind.ADD:
            y = xs[0] + xs[1]
        else:  # pragma: no cover - the frontend only emits the kinds above
            raise NotImplementedError(op)
        out[name] = y
    return out
