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


def shape_only(fmt: WeightFormat, shape: tuple[int, int]) -> QuantWeight:
    """A quantized weight with its format and shape but no values (programs-only compiles): every array
    is a zero-strided view of a single zero, so nothing of the model's size is allocated."""
    rows, k = shape

    def zeros(dtype, cols: int) -> np.ndarray:
        return np.lib.stride_tricks.as_strided(np.zeros(1, dtype), (rows, cols), (0, 0), writeable=False)

    return QuantWeight(fmt, zeros(np.int8, k), zeros(np.uint8, k // fmt.group if fmt.group else 0),
                       np.ones(rows), None)


def compress(graph: GraphIR, plan: CompressionPlan, cfg: HardwareConfig, values: bool = True) -> GraphIR:
    """``values=False`` checks every format against the hardware but quantizes nothing (see shape_only)."""
    out = graph.copy(stage="compressed")
    for name in out.linears():
        node = out.node(name)
        fmt = plan.format_for(name)
        fmt.check(cfg, name, node["weight"].shape[1])
        node["qweight"] = quantize_rtn(node["weight"], fmt) if values else shape_only(fmt, node["weight"].shape)
    for name in out.nodes_of(OpKind.EMBED):
        node = out.node(name)
        for src, dst in (("weight", "qembed"), ("positions", "qpositions")):
            if src in node:
                node[dst] = quantize_embedding(node[src]) if values else shape_only(WeightFormat(), node[src].shape)
    return out
