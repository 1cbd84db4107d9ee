"""Pass ``calibrate``: record the largest magnitude of every node's output on calibration sequences.

Tensors that go to an INT4 KV cache also get ``kv_clip``: with 16 levels, clipping a few outliers buys
a finer step for everything else, so the clip with the smallest squared error on the calibration values
is kept (the INT8 tensors use amax: at 255 levels clipping gains little).
"""
from __future__ import annotations

import numpy as np

from flightc import numerics as nm
from flightc.ir.graph import GraphIR, OpKind, Stage, stream_values
from flightc.reference.float_graph import float_handlers

CLIP_GRID = np.linspace(0.3, 1.0, 36)


def int4_kv_cached(graph: GraphIR) -> set[str]:
    """Nodes whose outputs are written to an INT4 KV cache: K (after RoPE, where there is one) and V."""
    return {src for att in graph.nodes_of(OpKind.ATTENTION) if graph.node(att).get("kv_bits", 8) == 4
            for src in graph.node(att)["inputs"][1:]}


def int4_kv_tensors(graph: GraphIR) -> set[str]:
    """int4_kv_cached plus the projections feeding a cached RoPE output (they share its scale)."""
    kv = int4_kv_cached(graph)
    return kv | {graph.node(r)["inputs"][0] for r in kv if graph.node(r)["op"] is OpKind.ROPE}


def mse_clip(values: np.ndarray, levels_max: int = nm.I4_MAX) -> float:
    """The clip c <= amax minimizing the squared error of symmetric rounding to step c / levels_max."""
    x = np.asarray(values, np.float64).ravel()
    amax = max(float(np.abs(x).max(initial=0.0)), 1e-6)
    best, best_c = np.inf, amax
    for r in CLIP_GRID:
        step = r * amax / levels_max
        err = float(np.sum((np.clip(np.round(x / step), -levels_max - 1, levels_max) * step - x) ** 2))
        if err < best:
            best, best_c = err, r * amax
    return best_c


def default_calibration(vocab_size: int, seed: int = 0, sequences: int = 4, length: int = 32) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, vocab_size, size=(sequences, length))


def calibrate(graph: GraphIR, sequences: np.ndarray) -> GraphIR:
    """Runs the compressed model in float64 (dequantized weights) and stores ``amax`` on each node (each node's
    activations dropped once read: a 7B model's would be gigabytes)."""
    out = graph.copy(stage=Stage.CALIBRATED)
    cached = int4_kv_cached(out)
    for name, y in stream_values(out, float_handlers(out, np.atleast_2d(sequences), compressed=True)):
        out.node(name)["amax"] = max(float(np.abs(y).max()), 1e-6)
        if name in cached:  # what the cache holds: K after RoPE, V
            out.node(name)["kv_clip"] = mse_clip(y)
    return out


def nominal_calibration(graph: GraphIR) -> GraphIR:
    """Every node's ``amax`` set to 1 without running the model: for programs-only compiles, whose
    instruction streams and timing do not depend on the scales (only immediates do, and those are
    never run)."""
    out = graph.copy(stage=Stage.CALIBRATED)
    for name in out.order():
        out.node(name)["amax"] = 1.0
    for name in int4_kv_cached(out):
        out.node(name)["kv_clip"] = 1.0
    return out
