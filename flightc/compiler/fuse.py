"""Pass ``fuse``: fold element-wise activations into the producing MPE output stage (MV/MM + SiLU).

A linear whose only consumer is a LUT activation gets that LUT in its output stage, so the
activation costs no SFU pass and no buffer round trip. Attention (QK^T, softmax, PV) is one IR
node already and is lowered as one fused on-chip sequence; RoPE is applied in place on the
projection's on-chip output.
"""
from __future__ import annotations

from flightc.ir.graph import GraphIR, OpKind
from flightc.isa.table import OutMode


def fuse(graph: GraphIR) -> GraphIR:
    out = graph.copy(stage="fused")
    for act in list(out.nodes_of(OpKind.SILU)):
        (src,) = out.node(act)["inputs"]
        prod = out.node(src)
        if prod["op"] is OpKind.LINEAR and prod["out_mode"] is OutMode.REQ_I8 and out.consumers(src) == [act]:
            prod["lut"] = out.node(act)["lut"]
            prod["scale"] = out.node(act)["scale"]
            prod["fused"] = prod.get("fused", []) + [act]
            out.remove_and_bypass(act, src)
    return out
