"""Hugging Face LLaMA-family causal LMs (a local folder or an in-memory model) -> graph IR."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

import networkx as nx
import numpy as np

from flightc.errors import UnsupportedError
from flightc.ir.graph import GraphIR, ModelSpec, OpKind

SUPPORTED_ARCHITECTURES = ("LlamaForCausalLM",)

# config fields whose non-default values change the math; each is checked and named when unsupported
_MUST_BE = {
    "hidden_act": ("silu",),
    "attention_bias": (False, None),
    "mlp_bias": (False, None),
    "rope_scaling": (None,),
    "pretraining_tp": (1, None),
}


def spec_from_config(cfg: Mapping[str, Any]) -> ModelSpec:
    archs = cfg.get("architectures") or []
    model_type = cfg.get("model_type")
    if model_type != "llama" or (archs and archs[0] not in SUPPORTED_ARCHITECTURES):
        raise UnsupportedError(f"model_type {model_type!r} / architectures {archs}: this frontend reads "
                               f"{', '.join(SUPPORTED_ARCHITECTURES)} (model_type 'llama')")
    for key, allowed in _MUST_BE.items():
        if cfg.get(key) not in allowed:
            raise UnsupportedError(f"config field {key} = {cfg.get(key)!r} is not supported (allowed: {allowed})")
    rope = cfg.get("rope_parameters") or {}
    if rope and rope.get("rope_type", "default") != "default":
        raise UnsupportedError(f"config field rope_parameters.rope_type = {rope.get('rope_type')!r} is not "
                               f"supported (only 'default' RoPE)")
    theta = rope.get("rope_theta", cfg.get("rope_theta", 10000.0))
    heads = cfg["num_attention_heads"]
    kv_heads = cfg.get("num_key_value_heads") or heads
    hidden = cfg["hidden_size"]
    head_dim = cfg.get("head_dim") or hidden // heads
    if heads % kv_heads:
        raise UnsupportedError(f"num_attention_heads {heads} is not a multiple of num_key_value_heads {kv_heads}")
    if head_dim % 2:
        raise UnsupportedError(f"head_dim {head_dim} must be even for rotate-half RoPE")
    return ModelSpec(family="llama", vocab_size=cfg["vocab_size"], hidden_size=hidden,
                     intermediate_size=cfg["intermediate_size"], num_layers=cfg["num_hidden_layers"],
                     num_heads=heads, num_kv_heads=kv_heads, head_dim=head_dim, rope_theta=float(theta),
                     rms_eps=float(cfg.get("rms_norm_eps", 1e-6)),
                     max_positions=int(cfg.get("max_position_embeddings", 2048)))


def build_graph(spec: ModelSpec, weights: Mapping[str, np.ndarray], tied: bool) -> GraphIR:
    """LLaMA decoder as IR nodes with float64 weights attached (HF parameter names)."""
    def w(name: str) -> np.ndarray:
        if name not in weights:
            raise UnsupportedError(f"weight {name!r} missing from the checkpoint")
        return np.asarray(weights[name], dtype=np.float64)

    graph = GraphIR(spec, nx.DiGraph())
    x = graph.add("embed", OpKind.EMBED, [], weight=w("model.embed_tokens.weight"))
    for i in range(spec.num_layers):
        p = f"model.layers.{i}."
        pre = f"L{i}."
        xn = graph.add(pre + "attn_norm", OpKind.RMSNORM, [x], i, weight=w(p + "input_layernorm.weight"))
        q = graph.add(pre + "q_proj", OpKind.LINEAR, [xn], i, weight=w(p + "self_attn.q_proj.weight"))
        k = graph.add(pre + "k_proj", OpKind.LINEAR, [xn], i, weight=w(p + "self_attn.k_proj.weight"))
        v = graph.add(pre + "v_proj", OpKind.LINEAR, [xn], i, weight=w(p + "self_attn.v_proj.weight"))
        qr = graph.add(pre + "q_rope", OpKind.ROPE, [q], i)
        kr = graph.add(pre + "k_rope", OpKind.ROPE, [k], i)
        a = graph.add(pre + "attn", OpKind.ATTENTION, [qr, kr, v], i)
        o = graph.add(pre + "o_proj", OpKind.LINEAR, [a], i, weight=w(p + "self_attn.o_proj.weight"))
        x = graph.add(pre + "attn_res", OpKind.ADD, [x, o], i)
        xn = graph.add(pre + "mlp_norm", OpKind.RMSNORM, [x], i, weight=w(p + "post_attention_layernorm.weight"))
        gate = graph.add(pre + "gate_proj", OpKind.LINEAR, [xn], i, weight=w(p + "mlp.gate_proj.weight"))
        up = graph.add(pre + "up_proj", OpKind.LINEAR, [xn], i, weight=w(p + "mlp.up_proj.weight"))
        act = graph.add(pre + "act", OpKind.SILU, [gate], i)
        mul = graph.add(pre + "mul", OpKind.MUL, [act, up], i)
        down = graph.add(pre + "down_proj", OpKind.LINEAR, [mul], i, weight=w(p + "mlp.down_proj.weight"))
        x = graph.add(pre + "mlp_res", OpKind.ADD, [x, down], i)
    xn = graph.add("final_norm", OpKind.RMSNORM, [x], weight=w("model.norm.weight"))
    head = w("model.embed_tokens.weight") if tied else w("lm_head.weight")
    graph.add("lm_head", OpKind.LINEAR, [xn], weight=head)
    _check_shapes(graph)
    return graph


def _check_shapes(graph: GraphIR) -> None:
    s = graph.spec
    want = {"q_proj": (s.num_heads * s.head_dim, s.hidden_size), "k_proj": (s.num_kv_heads * s.head_dim, s.hidden_size),
            "v_proj": (s.num_kv_heads * s.head_dim, s.hidden_size), "o_proj": (s.hidden_size, s.num_heads * s.head_dim),
            "gate_proj": (s.intermediate_size, s.hidden_size), "up_proj": (s.intermediate_size, s.hidden_size),
            "down_proj": (s.hidden_size, s.intermediate_size), "lm_head": (s.vocab_size, s.hidden_size)}
    for n in graph.linears():
        shape = graph.node(n)["weight"].shape
        if shape != want[n.split(".")[-1]]:
            raise UnsupportedError(f"layer {n}: weight shape {shape}, expected {want[n.split('.')[-1]]}")


def load_hf(model: str | Path | Any) -> GraphIR:
    """Load a LLaMA-family model from a local folder (config.json + *.safetensors) or a transformers model."""
    if isinstance(model, (str, Path)):
        folder = Path(model)
        cfg_path = folder / "config.json"
        if not cfg_path.exists():
            raise UnsupportedError(f"{folder}: no config.json (expected a Hugging Face model folder)")
        cfg = json.loads(cfg_path.read_text())
        files = sorted(folder.glob("*.safetensors"))
        if not files:
            raise UnsupportedError(f"{folder}: no *.safetensors weights")
        from safetensors.torch import load_file  # the torch reader also takes bf16 checkpoints

        weights: dict[str, np.ndarray] = {}
        for f in files:
            weights.update({k: v.float().numpy() for k, v in load_file(str(f)).items()})
    else:
        cfg = model.config.to_dict()
        weights = {k: v.detach().float().cpu().numpy() for k, v in model.state_dict().items()}
    spec = spec_from_config(cfg)
    tied = bool(cfg.get("tie_word_embeddings", False)) or "lm_head.weight" not in weights
    return build_graph(spec, weights, tied)
