"""Per-channel equalization folded into the float model: AWQ, SmoothQuant and K/V channel balancing.

Each transform divides a tensor's channels by scales ``s`` where the tensor is produced and
multiplies the consuming weights' input columns by the same ``s``, so the float model computes the
same function while the ranges the quantizers see change:

* AWQ (Lin et al., MLSys 2024): ``s = mean|x|^alpha`` with alpha searched per input group for the
  smallest output error of the quantized consumers; salient input channels get finer weight steps.
* SmoothQuant (Xiao et al., ICML 2023): ``s = max|x|^alpha / max|w|^(1-alpha)``, moving activation
  outliers into the weights so INT8 activations lose less.
* K/V balancing: keys are scaled per channel against the queries (q * s, k / s leaves Q K^T
  unchanged; RoPE pairs share a scale), values per channel against the output projection, so that
  the per-tensor INT8/INT4 KV cache sees flat channel ranges — the static counterpart of KIVI's
  per-channel key quantization (Liu et al., ICML 2024).

Where a tensor's channels can be divided: a norm's gain (and bias), the rows of the linear feeding
a MUL or a ReLU (both commute with positive per-channel scales), and for the attention output the
rows of V (with grouped-query attention, one scale per KV channel, shared by the heads that read it).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from flightc.compress.formats import WeightFormat
from flightc.compress.quantize import quantize_rtn
from flightc.ir.graph import GraphIR, OpKind
from flightc.reference.float_graph import run_float

AWQ_GRID = 20
SMOOTH_ALPHA = 0.5
KV_ALPHA = 0.5
MIN_SCALE = 1e-5


@dataclass(frozen=True)
class InputGroup:
    """Linear layers that read the same tensor, and the node producing it."""

    producer: str
    linears: tuple[str, ...]


def input_groups(graph: GraphIR) -> list[InputGroup]:
    """Every tensor read by linears whose producer can absorb a per-channel division."""
    groups = []
    for name in graph.order():
        linears = tuple(c for c in graph.consumers(name) if graph.node(c)["op"] is OpKind.LINEAR)
        if linears and _absorber(graph, name) is not None:
            groups.append(InputGroup(name, linears))
    return groups


def _absorber(graph: GraphIR, producer: str) -> str | None:
    """The node whose parameters take the division: the producer itself or the linear behind it."""
    node = graph.node(producer)
    op = node["op"]
    if op in (OpKind.RMSNORM, OpKind.LAYERNORM):
        return producer
    if op is OpKind.ATTENTION:
        v = node["inputs"][2]
        return v if graph.node(v)["op"] is OpKind.LINEAR else None
    if op in (OpKind.MUL, OpKind.RELU):
        for i in reversed(node["inputs"]):
            if graph.node(i)["op"] is OpKind.LINEAR and len(graph.consumers(i)) == 1:
                return i
    return None


def _ties_kv(graph: GraphIR, producer: str) -> bool:
    """An attention output: its channels' scales must be one per KV channel, shared by the heads reading it."""
    return graph.node(producer)["op"] is OpKind.ATTENTION


def _tie_kv(graph: GraphIR, stat: np.ndarray, reduce) -> np.ndarray:
    """Per-channel statistics of the attention output [H*d] -> one per KV channel [KV*d]."""
    s = graph.spec
    return reduce(stat.reshape(s.num_kv_heads, s.kv_group, s.head_dim), axis=1).reshape(-1)


def _expand_kv(graph: GraphIR, t: np.ndarray) -> np.ndarray:
    """KV-channel scales [KV*d] -> attention-output channel scales [H*d]."""
    s = graph.spec
    return np.repeat(t.reshape(s.num_kv_heads, 1, s.head_dim), s.kv_group, axis=1).reshape(-1)


def _divide_rows(node: dict, rows: np.ndarray) -> None:
    """Divide a node's output channels by ``rows``: a linear's weight rows (and bias), or a norm's gain (and bias)."""
    w = np.asarray(node["weight"], np.float64)
    node["weight"] = w / (rows[:, None] if node["op"] is OpKind.LINEAR else rows)
    if "bias" in node:
        node["bias"] = np.asarray(node["bias"], np.float64) / rows


def fold(graph: GraphIR, group: InputGroup, s: np.ndarray) -> None:
    """Divide the group's input channels by ``s`` at the absorber and multiply the linears' columns by it
    (in place on ``graph``, whose arrays are replaced, never written)."""
    s = np.asarray(s, np.float64)
    target = _absorber(graph, group.producer)
    assert target is not None
    rows = s
    if _ties_kv(graph, group.producer):  # the V projection's rows: one per KV channel
        spec = graph.spec
        rows = s.reshape(spec.num_kv_heads, spec.kv_group, spec.head_dim)[:, 0, :].reshape(-1)
    _divide_rows(graph.node(target), rows)
    for name in group.linears:
        lin = graph.node(name)
        lin["weight"] = np.asarray(lin["weight"], np.float64) * s[None, :]


def _inputs(graph: GraphIR, calibration: np.ndarray) -> dict[str, np.ndarray]:
    return {n: v.reshape(-1, v.shape[-1]) for n, v in run_float(graph, calibration).items()}


def _normalize(s: np.ndarray) -> np.ndarray:
    s = np.maximum(s, MIN_SCALE)
    return s / np.sqrt(s.max() * s.min())


def _migration(a: np.ndarray, b: np.ndarray, alpha: float) -> np.ndarray:
    """SmoothQuant's balance ``a^alpha / b^(1 - alpha)``: the share of a's range moved onto b's side."""
    return _normalize(np.maximum(a, MIN_SCALE) ** alpha / np.maximum(b, MIN_SCALE) ** (1 - alpha))


def _column_amax(graph: GraphIR, linears) -> np.ndarray:
    """Largest |weight| of each input column over the linears that read one tensor."""
    return np.max([np.abs(np.asarray(graph.node(n)["weight"])).max(axis=0) for n in linears], axis=0)


def smoothquant(graph: GraphIR, calibration: np.ndarray, alpha: float = SMOOTH_ALPHA) -> GraphIR:
    """SmoothQuant: s = max|x|^alpha / max|w|^(1 - alpha) for every input group."""
    out = graph.copy()
    acts = _inputs(out, calibration)
    for group in input_groups(out):
        xmax, wmax = np.abs(acts[group.producer]).max(axis=0), _column_amax(out, group.linears)
        if _ties_kv(out, group.producer):
            s = _expand_kv(out, _migration(_tie_kv(out, xmax, np.max), _tie_kv(out, wmax, np.max), alpha))
        else:
            s = _migration(xmax, wmax, alpha)
        fold(out, group, s)
    return out


def awq(graph: GraphIR, calibration: np.ndarray, format_for: Callable[[str], WeightFormat],
        grid: int = AWQ_GRID) -> GraphIR:
    """AWQ: per input group, s = mean|x|^alpha with alpha in [0, 1] chosen for the smallest output error
    of the group's linears quantized to their formats (alpha = 0 is no scaling, so it never gets worse on
    the calibration data). Groups are visited in order on the already-scaled model."""
    out = graph.copy()
    for group in input_groups(graph):
        x = _inputs(out, calibration)[group.producer]
        xmean = np.abs(x).mean(axis=0)
        tie = _ties_kv(out, group.producer)
        if tie:
            xmean = _tie_kv(out, xmean, np.mean)
        ws = [np.asarray(out.node(n)["weight"], np.float64) for n in group.linears]
        fmts = [format_for(n) for n in group.linears]
        if all(f == WeightFormat() for f in fmts):
            continue  # 8-bit dense weights: nothing to protect
        refs = [x @ w.T for w in ws]
        best, best_s = np.inf, None
        for alpha in np.linspace(0.0, 1.0, grid + 1):
            s = _normalize(np.maximum(xmean, MIN_SCALE) ** alpha)
            s_full = _expand_kv(out, s) if tie else s
            err = sum(float(np.sum(((x / s_full) @ quantize_rtn(w * s_full[None, :], f).dequantized().T - r) ** 2))
                      for w, f, r in zip(ws, fmts, refs))
            if err < best:
                best, best_s = err, s_full
        fold(out, group, best_s)
    return out


def balance_kv(graph: GraphIR, calibration: np.ndarray, alpha: float = KV_ALPHA) -> GraphIR:
    """Flatten the K and V caches' per-channel ranges (see the module docstring); the function is unchanged."""
    out = graph.copy()
    spec = out.spec
    d, half = spec.head_dim, spec.head_dim // 2
    acts = _inputs(out, calibration)
    for attn in list(out.nodes_of(OpKind.ATTENTION)):
        q_in, k_in, v_in = out.node(attn)["inputs"]
        roped = out.node(k_in)["op"] is OpKind.ROPE
        q_lin = out.node(q_in)["inputs"][0] if roped else q_in
        k_lin = out.node(k_in)["inputs"][0] if roped else k_in
        if out.node(q_lin)["op"] is not OpKind.LINEAR or out.node(k_lin)["op"] is not OpKind.LINEAR:
            continue
        qa = _tie_kv(out, np.abs(acts[q_in]).max(axis=0), np.max).reshape(spec.num_kv_heads, d)
        ka = np.abs(acts[k_in]).max(axis=0).reshape(spec.num_kv_heads, d)
        if roped:  # a rotation mixes channel i with i + d/2: one scale per pair
            qa, ka = (np.concatenate([np.maximum(a[:, :half], a[:, half:])] * 2, axis=1) for a in (qa, ka))
        t = _migration(ka.reshape(-1), qa.reshape(-1), alpha)
        _divide_rows(out.node(q_lin), 1.0 / _expand_kv(out, t))
        _divide_rows(out.node(k_lin), t)
        if out.node(v_in)["op"] is OpKind.LINEAR:
            linears = tuple(c for c in out.consumers(attn) if out.node(c)["op"] is OpKind.LINEAR)
            wmax = _tie_kv(out, _column_amax(out, linears), np.max)
            s = _migration(np.abs(acts[v_in]).max(axis=0), wmax, alpha)
            fold(out, InputGroup(attn, linears), _expand_kv(out, s))
    return out
