"""Pass ``fuse``: merge element-wise work into the op that produces its input.

- MV/MM + SiLU or ReLU: a linear whose only consumer is a LUT activation gets that LUT in its output
  stage, so the activation costs no SFU pass and no buffer round trip.
- MV/MM + RoPE: a Q or K projection whose only consumer is RoPE rotates its on-chip output in
  place, right after its last tile, before anything reads it.
- QK^T + softmax + PV is one IR node (attention) already and is lowered as one on-chip sequence.
"""
from __future__ import annotations

from flightc.ir.graph import LUT_ACTIVATIONS, GraphIR, OpKind, Stage
from flightc.isa.table import OutMode


def fuse(graph: GraphIR) -> GraphIR:
    out = graph.copy(stage=Stage.FUSED)
    for act in [n for n in out.order() if out.node(n)["op"] in LUT_ACTIVATIONS]:
        (src,) = out.node(act)["inputs"]
        prod = out.node(src)
        if prod["op"] is OpKind.LINEAR and prod["out_mode"] is OutMode.REQ_I8 and out.consumers(src) == [act]:
            prod["lut"] = out.node(act)["lut"]
            prod["scale"] = out.node(act)["scale"]
            prod["fused"] = prod.get("fused", []) + [act]
            out.remove_and_bypass(act, src)
    for rope in list(out.nodes_of(OpKind.ROPE)):
        (src,) = out.node(rope)["inputs"]
        prod = out.node(src)
        if prod["op"] is OpKind.LINEAR and prod["out_mode"] is OutMode.REQ_I8 and out.consumers(src) == [rope]:
            prod["rope"] = True
            prod["fused"] = prod.get("fused", []) + [rope]
            out.remove_and_bypass(rope, src)
    return out
