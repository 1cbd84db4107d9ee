"""Pass ``calibrate``: record the largest magnitude of every node's output on calibration sequences."""
from __future__ import annotations

import numpy as np

from flightc.ir.graph import GraphIR
from flightc.reference.float_graph import run_float


def default_calibration(vocab_size: int, seed: int = 0, sequences: int = 4, length: int = 32) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, vocab_size, size=(sequences, length))


def calibrate(graph: GraphIR, sequences: np.ndarray) -> GraphIR:
    """Runs the compressed model in float64 (dequantized weights) and stores ``amax`` on each node."""
    out = graph.copy(stage="calibrated")
    for name, y in run_float(out, np.atleast_2d(sequences), compressed=True).items():
        out.node(name)["amax"] = max(float(np.abs(y).max()), 1e-6)
    return out


def nominal_calibration(graph: GraphIR) -> GraphIR:
    """Every node's ``amax`` set to 1 without running the model: for programs-only compiles, whose
    instruction streams and timing do not depend on the scales (only immediates do, and those are
    never run)."""
    out = graph.copy(stage="calibrated")
    for name in out.order():
        out.node(name)["amax"] = 1.0
    return out
