"""Pass ``integerize``: static scales and every integer constant the datapath needs.

Scales: INT8 activations use amax / 127; the residual stream is INT32 with one scale for the
whole model, chosen so the largest calibrated value sits at 2^RESIDUAL_BITS (headroom for the rest).
"""
from __future__ import annotations

import math

import numpy as np

from flightc import numerics as nm
from flightc.compiler.calibrate import int4_kv_tensors
from flightc.errors import UnsupportedError
from flightc.ir.graph import LUT_ACTIVATIONS, GraphIR, OpKind, Stage
from flightc.isa.table import OutMode

RESIDUAL_BITS = 20
LOGIT_BITS = 20
RMS_SHIFT = nm.NORM_SHIFT_MAX  # default extra shift of the RMSNorm divisor (lowered when a gain would not fit INT32)


def _mults(reals: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pairs = [nm.quantize_multiplier(float(r)) for r in np.atleast_1d(reals)]
    return np.array([p[0] for p in pairs], np.int64), np.array([p[1] for p in pairs], np.int64)


def _int32(layer: str, what: str, values: np.ndarray) -> np.ndarray:
    if np.abs(values).max(initial=0) >= 2 ** 31:
        raise UnsupportedError(f"layer {layer}: the {what} does not fit INT32 in accumulator units "
                               f"(max {np.abs(values).max():.3g})")
    return values.astype(np.int64)


def integerize(graph: GraphIR) -> GraphIR:
    out = graph.copy(stage=Stage.INTEGER)
    g, s = out, out.spec
    res_nodes = [n for n in g.order() if g.node(n)["op"] in (OpKind.EMBED, OpKind.ADD)]
    s_res = max(g.node(n)["amax"] for n in res_nodes) / (1 << RESIDUAL_BITS)
    scale: dict[str, float] = {}

    kv4 = int4_kv_tensors(g)

    def int8_scale(name: str) -> float:
        """amax / 127, or the calibrated clip / 7 for a tensor that goes to an INT4 KV cache (ST.pack4
        saturates what lies beyond)."""
        node = g.node(name)
        amax = node["amax"]
        ropes = [c for c in g.consumers(name) if g.node(c)["op"] is OpKind.ROPE]
        if name in kv4:
            return (g.node(ropes[0]) if ropes else node)["kv_clip"] / nm.I4_MAX
        if node["op"] is OpKind.LINEAR:  # a projection feeding RoPE shares its scale with the rotated output
            for c in ropes:
                amax = max(amax, g.node(c)["amax"])
        return amax / 127.0

    for name in g.order():
        node = g.node(name)
        op = node["op"]
        ins = node["inputs"]
        if op is OpKind.EMBED:
            node["deq"] = nm.quantize_multiplier(float(node["qembed"].row_scale[0]) / s_res)
            if "qpositions" in node:
                node["pos_deq"] = nm.quantize_multiplier(float(node["qpositions"].row_scale[0]) / s_res)
            scale[name] = s_res
        elif op is OpKind.ADD:
            scale[name] = s_res
        elif op in (OpKind.RMSNORM, OpKind.LAYERNORM):
            s_out = int8_scale(name)
            shift = RMS_SHIFT
            gamma = np.asarray(node["weight"], np.float64)
            gain = gamma / s_out * 2.0 ** (nm.RMS_FRAC_BITS + shift)
            while np.abs(gain).max() >= 2 ** 30 and shift > 0:
                shift -= 1
                gain = gain / 2
            if np.abs(gain).max() >= 2 ** 30:
                raise UnsupportedError(f"layer {name}: norm gain {np.abs(gamma).max():.3g} is too large "
                                       f"for the INT32 gain of the RMSNorm unit")
            node["gain"] = np.round(gain).astype(np.int64)
            node["norm_shift"] = shift
            node["eps_q"] = int(round(s.rms_eps / s_res ** 2 * 2.0 ** (2 * nm.RMS_FRAC_BITS)))
            if op is OpKind.LAYERNORM:
                node["beta_q"] = _int32(name, "norm bias", np.round(np.asarray(node["bias"], np.float64) / s_out))
            scale[name] = s_out
        elif op is OpKind.LINEAR:
            consumers = g.consumers(name)
            if not consumers:
                mode, s_out = OutMode.REQ_I32, node["amax"] / (1 << LOGIT_BITS)
            elif all(g.node(c)["op"] is OpKind.ADD for c in consumers):
                mode, s_out = OutMode.REQ_ADD, s_res
            else:
                mode, s_out = OutMode.REQ_I8, int8_scale(name)
            node["out_mode"] = mode
            acc_scale = scale[ins[0]] * node["qweight"].row_scale  # real value of one accumulator unit, per row
            node["mult"], node["shift"] = _mults(acc_scale / s_out)
            node["bias_q"] = (_int32(name, "bias", np.round(np.asarray(node["bias"], np.float64) / acc_scale))
                              if "bias" in node
                              else np.zeros(len(acc_scale), np.int64))
            scale[name] = s_out
        elif op is OpKind.ROPE:
            scale[name] = scale[ins[0]]
        elif op is OpKind.ATTENTION:
            s_q, s_k, s_v = (scale[i] for i in ins)
            s_out = int8_scale(name)
            node["softmax"] = nm.quantize_multiplier(s_q * s_k / math.sqrt(s.head_dim) * math.log2(math.e)
                                                     * (1 << nm.EXP_FRAC_BITS))
            node["pv"] = nm.quantize_multiplier(s_v / (1 << nm.PROB_BITS) / s_out)
            scale[name] = s_out
        elif op in LUT_ACTIVATIONS:
            s_out = int8_scale(name)
            fn = {OpKind.SILU: nm.silu, OpKind.GELU_TANH: nm.gelu_tanh, OpKind.RELU: nm.relu}[op]
            node["lut"] = nm.activation_lut(fn, scale[ins[0]], s_out)
            scale[name] = s_out
        elif op is OpKind.MUL:
            s_out = int8_scale(name)
            node["emul"] = nm.quantize_multiplier(scale[ins[0]] * scale[ins[1]] / s_out)
            scale[name] = s_out
        else:  # pragma: no cover
            raise NotImplementedError(op)
        node["scale"] = scale[name]
    return out
