"""Pass ``compress``: attach a quantized, pruned weight to every linear layer and to the embedding."""
from __future__ import annotations

import numpy as np

from flightc.compress.formats import WeightFormat
from flightc.compress.plan import CompressionPlan
from flightc.compress.quantize import QuantWeight, quantize_rtn
from flightc.config import HardwareConfig
from flightc.ir.graph import GraphIR, OpKind


def quantize_embedding(table: np.ndarray) -> QuantWeight:
    """Per-tensor symmetric INT8: the DEQ instruction applies one multiplier to every row."""
    table = np.asarray(table, np.float64)
    scale = max(float(np.abs(table).max()) / 127.0, np.finfo(np.float64).tiny)
    q = np.clip(np.round(table / scale), -127, 127).astype(np.int8)
    rows, k = table.shape
    return QuantWeight(WeightFormat(), q, np.zeros((rows, 0), np.uint8), np.full(rows, scale), None)


def compress(graph: GraphIR, plan: CompressionPlan, cfg: HardwareConfig) -> GraphIR:
    out = graph.copy(stage="compressed")
    for name in out.linears():
        node = out.node(name)
        fmt = plan.format_for(name)
        fmt.check(cfg, name, node["weight"].shape[1])
        node["qweight"] = quantize_rtn(node["weight"], fmt)
    for name in out.nodes_of(OpKind.EMBED):
        node = out.node(name)
        node["qembed"] = quantize_embedding(node["weight"])
        if "positions" in node:
            node["qpositions"] = quantize_embedding(node["positions"])
    return out
