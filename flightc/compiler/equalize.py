"""Pass ``equalize``: per-channel rescaling of the float model before its weights are compressed.

AWQ or SmoothQuant when the method asks for one, and K/V channel balancing when the KV cache is
INT4 (flightc.compress.equalize). The float model's function is unchanged; only the ranges the
quantizers see move.
"""
from __future__ import annotations

import numpy as np

from flightc.compress.equalize import awq, balance_kv, smoothquant
from flightc.compress.method import Equalizer, Method
from flightc.compress.plan import CompressionPlan
from flightc.ir.graph import GraphIR


def equalize(graph: GraphIR, plan: CompressionPlan, method: Method, calibration: np.ndarray) -> GraphIR:
    """``graph`` itself when there is nothing to rescale."""
    out = graph
    if plan.kv_bits < 8:
        out = balance_kv(out, calibration)
    if method.equalizer is Equalizer.AWQ:
        out = awq(out, calibration, plan.format_for)
    elif method.equalizer is Equalizer.SMOOTHQUANT:
        out = smoothquant(out, calibration)
    return out
