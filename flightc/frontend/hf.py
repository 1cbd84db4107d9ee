"""Hugging Face causal LMs (a local folder or an in-memory transformers model) -> graph IR.

Families: LLaMA (with grouped-query attention and optional biases), Mistral (sliding-window
attention), Qwen2 (QKV biases), Phi-3 (fused Q/K/V and gate/up projections, a sliding window), Gemma (GELU,
a scaled embedding, RMSNorm gains of 1 + w) and OPT (LayerNorm, ReLU, learned positions, biases). Any config
field that changes the math and is not supported raises an error naming it.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

from flightc.errors import UnsupportedError
from flightc.frontend.config_fields import ConfigFields, audit
from flightc.frontend.lazy import LazyArray, RandomWeights
from flightc.ir.graph import GraphIR, ModelSpec, OpKind
from flightc.rope import RopeScaling

Weights = Mapping[str, np.ndarray]


def _require(cfg: Mapping[str, Any], rules: Mapping[str, tuple]) -> None:
    for key, allowed in rules.items():
        if cfg.get(key) not in allowed:
            raise UnsupportedError(f"config field {key} = {cfg.get(key)!r} is not supported (allowed: {allowed})")


def _rope_theta(cfg: Mapping[str, Any]) -> float:
    rope = cfg.get("rope_parameters") or {}
    return float(rope.get("rope_theta", cfg.get("rope_theta", 10000.0)))


def _f32(x: float) -> float:
    """Epsilons as the float32 models use them (so that every frontend reads the same value)."""
    return float(np.float32(x))


def _llama_like_spec(cfg: Mapping[str, Any], family: str, window: int = 0, acts: tuple = ("silu",)) -> ModelSpec:
    _require(cfg, {"hidden_act": acts, "pretraining_tp": (1, None),
                   "rope_interleaved": (False, None),  # SmolLM2 states rotate-half RoPE; interleaved pairs differ
                   "use_mrope": (False, None)})  # Qwen2-VL's multimodal RoPE
    heads = cfg["num_attention_heads"]
    kv_heads = cfg.get("num_key_value_heads") or heads
    hidden = cfg["hidden_size"]
    head_dim = cfg.get("head_dim") or hidden // heads
    if heads % kv_heads:
        raise UnsupportedError(f"num_attention_heads {heads} is not a multiple of num_key_value_heads {kv_heads}")
    if head_dim % 2:
        raise UnsupportedError(f"head_dim {head_dim} must be even for rotate-half RoPE")
    return ModelSpec(family=family, vocab_size=cfg["vocab_size"], hidden_size=hidden,
                     intermediate_size=cfg["intermediate_size"], num_layers=cfg["num_hidden_layers"],
                     num_heads=heads, num_kv_heads=kv_heads, head_dim=head_dim, rope_theta=_rope_theta(cfg),
                     rope_scaling=RopeScaling.from_config(cfg),
                     rms_eps=_f32(cfg.get("rms_norm_eps", 1e-6)),
                     max_positions=int(cfg.get("max_position_embeddings", 2048)), sliding_window=window)


def _mistral_spec(cfg: Mapping[str, Any]) -> ModelSpec:
    return _llama_like_spec(cfg, "mistral", int(cfg.get("sliding_window") or 0))


def _phi3_spec(cfg: Mapping[str, Any]) -> ModelSpec:
    """Phi-3: LLaMA's layers with the Q/K/V and the gate/up projections each fused into one matrix (split on
    loading), and Mistral's sliding window where the config sets one."""
    return _llama_like_spec(cfg, "phi3", int(cfg.get("sliding_window") or 0))


GEMMA_ACTS = ("gelu_pytorch_tanh", "gelu")  # "gelu": the first releases' spelling, which transformers reads as tanh


def _gemma_spec(cfg: Mapping[str, Any]) -> ModelSpec:
    """Gemma (1): LLaMA's layers with a GELU (tanh) gated MLP, the embedding scaled by sqrt(hidden), RMSNorm gains
    of 1 + w, and the head tied to the embedding table (unscaled)."""
    if cfg.get("hidden_activation") not in (None, *GEMMA_ACTS):
        raise UnsupportedError(f"config field hidden_activation = {cfg['hidden_activation']!r} is not supported "
                               f"(allowed: {GEMMA_ACTS})")
    if cfg.get("use_bidirectional_attention"):
        raise UnsupportedError("config field use_bidirectional_attention = True is not supported (flightc runs "
                               "causal attention)")
    return _llama_like_spec(cfg, "gemma", acts=GEMMA_ACTS)


def _qwen2_spec(cfg: Mapping[str, Any]) -> ModelSpec:
    if cfg.get("use_sliding_window"):
        raise UnsupportedError("config field use_sliding_window = True is not supported for qwen2 (its window "
                               "applies to some layers only)")
    windowed = [i for i, t in enumerate(cfg.get("layer_types") or []) if t != "full_attention"]
    if windowed:
        raise UnsupportedError(f"config field layer_types: layers {windowed} are "
                               f"{cfg['layer_types'][windowed[0]]!r}; flightc runs full attention in every layer")
    return _llama_like_spec(cfg, "qwen2")


def _opt_spec(cfg: Mapping[str, Any]) -> ModelSpec:
    _require(cfg, {"activation_function": ("relu",), "do_layer_norm_before": (True,),
                   "layer_norm_elementwise_affine": (True, None), "_remove_final_layer_norm": (False, None)})
    hidden = cfg["hidden_size"]
    if cfg.get("word_embed_proj_dim", hidden) != hidden:
        raise UnsupportedError(f"config field word_embed_proj_dim = {cfg['word_embed_proj_dim']} differs from "
                               f"hidden_size {hidden} (project_in/project_out are not supported)")
    heads = cfg["num_attention_heads"]
    max_pos = int(cfg.get("max_position_embeddings", 2048))
    return ModelSpec(family="opt", vocab_size=cfg["vocab_size"], hidden_size=hidden,
                     intermediate_size=cfg["ffn_dim"], num_layers=cfg["num_hidden_layers"], num_heads=heads,
                     num_kv_heads=heads, head_dim=hidden // heads, rope_theta=0.0, rms_eps=_f32(1e-5),
                     max_positions=max_pos, learned_positions=max_pos + 2, position_offset=2)


SPECS: dict[str, Callable[[Mapping[str, Any]], ModelSpec]] = {
    "llama": lambda cfg: _llama_like_spec(cfg, "llama"), "mistral": _mistral_spec, "qwen2": _qwen2_spec,
    "phi3": _phi3_spec, "gemma": _gemma_spec, "opt": _opt_spec}


# families close to a supported one whose difference the datapath does not compute, and what it is
NOT_FITTING = {
    "gemma2": "its config fields attn_logit_softcapping and final_logit_softcapping cap the attention scores and the "
              "logits with tanh (the SFU's softmax and the logits' output stage have no tanh), and sliding_window "
              "applies to every other layer only; flightc reads Gemma (1)",
}


def spec_from_config(cfg: Mapping[str, Any]) -> ModelSpec:
    """The model's shape from its config; a field flightc neither reads nor knows to leave aside is refused by
    name (:mod:`flightc.frontend.config_fields`)."""
    fields = ConfigFields(cfg)
    model_type = fields.get("model_type")
    if model_type in NOT_FITTING:
        raise UnsupportedError(f"model_type {model_type!r}: {NOT_FITTING[model_type]}")
    if model_type not in SPECS:
        raise UnsupportedError(f"model_type {model_type!r} (architectures {fields.get('architectures')}) is not "
                               f"supported; flightc reads {', '.join(SPECS)}")
    spec = SPECS[model_type](fields)
    audit(fields, model_type)
    return spec


class _Reader:
    """Weights by Hugging Face name, as float64, with a clear error for a missing one."""

    def __init__(self, weights: Weights):
        self.weights = weights

    def __call__(self, name: str) -> np.ndarray:
        if name not in self.weights:
            raise UnsupportedError(f"weight {name!r} missing from the checkpoint")
        return self._read(name)

    def optional(self, name: str) -> np.ndarray | None:
        return self._read(name) if name in self.weights else None

    def _read(self, name: str):
        w = self.weights[name]
        return w if isinstance(w, LazyArray) else np.asarray(w, dtype=np.float64)


def _linear(graph: GraphIR, name: str, x: str, layer: int | None, w: _Reader, prefix: str,
            rows: tuple[int, int] | None = None) -> str:
    """A linear layer from ``prefix``'s weight (and bias, if any); ``rows`` takes those output rows of a fused one."""
    bias = w.optional(prefix + ".bias")
    attrs = {"weight": w(prefix + ".weight")}
    if bias is not None:
        attrs["bias"] = bias
    if rows is not None:
        attrs = {k: (v.rows(*rows) if isinstance(v, LazyArray) else v[rows[0]:rows[1]]) for k, v in attrs.items()}
    return graph.add(name, OpKind.LINEAR, [x], layer, **attrs)


def _projections(spec: ModelSpec, w: _Reader, p: str) -> dict[str, tuple[str, tuple[int, int] | None]]:
    """Where each of a layer's projections is: its own weight, or rows of Phi-3's fused ``qkv_proj`` (Q, K, V in
    that order) and ``gate_up_proj`` (gate, then up) where the checkpoint has them (an exported graph's are split)."""
    if p + "self_attn.qkv_proj.weight" not in w.weights:
        return {r: (p + f"self_attn.{r}", None) for r in ("q_proj", "k_proj", "v_proj")} | \
               {r: (p + f"mlp.{r}", None) for r in ("gate_proj", "up_proj")}
    q, kv, inter = spec.num_heads * spec.head_dim, spec.num_kv_heads * spec.head_dim, spec.intermediate_size
    qkv, gate_up = p + "self_attn.qkv_proj", p + "mlp.gate_up_proj"
    return {"q_proj": (qkv, (0, q)), "k_proj": (qkv, (q, q + kv)), "v_proj": (qkv, (q + kv, q + 2 * kv)),
            "gate_proj": (gate_up, (0, inter)), "up_proj": (gate_up, (inter, 2 * inter))}


def embed_scale(cfg: Mapping[str, Any]) -> float:
    """Gemma's embedding scale: sqrt(hidden) in the checkpoint's dtype, as transformers holds it for a model loaded
    in that dtype (bfloat16 for the published checkpoints: sqrt(2048) = 45.25, not 45.2548)."""
    import torch

    dtype = {"bfloat16": torch.bfloat16, "float16": torch.float16}.get(cfg.get("torch_dtype") or cfg.get("dtype"),
                                                                        torch.float32)
    return float(torch.tensor(math.sqrt(cfg["hidden_size"]), dtype=dtype))


def _build_llama_like(spec: ModelSpec, weights: Weights, tied: bool, scale: float = 1.0) -> GraphIR:
    w = _Reader(weights)
    graph = GraphIR(spec)
    table = w("model.embed_tokens.weight")
    if scale != 1.0:  # Gemma: the embedding times its scale (in float32); the tied head reads the table as is (its
        # norms' gains of 1 + w come in with the weights: GemmaGains)
        table = table.scaled(scale) if isinstance(table, LazyArray) else \
            (np.asarray(table, np.float32) * np.float32(scale)).astype(np.float64)
    activation = OpKind.GELU_TANH if spec.family == "gemma" else OpKind.SILU
    x = graph.add("embed", OpKind.EMBED, [], weight=table)
    for i in range(spec.num_layers):
        p, pre = f"model.layers.{i}.", f"L{i}."
        at = _projections(spec, w, p)
        xn = graph.add(pre + "attn_norm", OpKind.RMSNORM, [x], i, weight=w(p + "input_layernorm.weight"))
        q, k, v = (_linear(graph, pre + r, xn, i, w, *at[r]) for r in ("q_proj", "k_proj", "v_proj"))
        qr = graph.add(pre + "q_rope", OpKind.ROPE, [q], i)
        kr = graph.add(pre + "k_rope", OpKind.ROPE, [k], i)
        a = graph.add(pre + "attn", OpKind.ATTENTION, [qr, kr, v], i)
        o = _linear(graph, pre + "o_proj", a, i, w, p + "self_attn.o_proj")
        x = graph.add(pre + "attn_res", OpKind.ADD, [x, o], i)
        xn = graph.add(pre + "mlp_norm", OpKind.RMSNORM, [x], i, weight=w(p + "post_attention_layernorm.weight"))
        gate, up = (_linear(graph, pre + r, xn, i, w, *at[r]) for r in ("gate_proj", "up_proj"))
        act = graph.add(pre + "act", activation, [gate], i)
        mul = graph.add(pre + "mul", OpKind.MUL, [act, up], i)
        down = _linear(graph, pre + "down_proj", mul, i, w, p + "mlp.down_proj")
        x = graph.add(pre + "mlp_res", OpKind.ADD, [x, down], i)
    xn = graph.add("final_norm", OpKind.RMSNORM, [x], weight=w("model.norm.weight"))
    graph.add("lm_head", OpKind.LINEAR, [xn], weight=w("model.embed_tokens.weight" if tied else "lm_head.weight"))
    return graph


def _build_opt(spec: ModelSpec, weights: Weights, tied: bool, scale: float = 1.0) -> GraphIR:
    w = _Reader(weights)
    d = "model.decoder."
    graph = GraphIR(spec)
    x = graph.add("embed", OpKind.EMBED, [], weight=w(d + "embed_tokens.weight"),
                  positions=w(d + "embed_positions.weight"))
    for i in range(spec.num_layers):
        p, pre = f"{d}layers.{i}.", f"L{i}."
        xn = graph.add(pre + "attn_norm", OpKind.LAYERNORM, [x], i, weight=w(p + "self_attn_layer_norm.weight"),
                       bias=w(p + "self_attn_layer_norm.bias"))
        q = _linear(graph, pre + "q_proj", xn, i, w, p + "self_attn.q_proj")
        k = _linear(graph, pre + "k_proj", xn, i, w, p + "self_attn.k_proj")
        v = _linear(graph, pre + "v_proj", xn, i, w, p + "self_attn.v_proj")
        a = graph.add(pre + "attn", OpKind.ATTENTION, [q, k, v], i)
        o = _linear(graph, pre + "o_proj", a, i, w, p + "self_attn.out_proj")
        x = graph.add(pre + "attn_res", OpKind.ADD, [x, o], i)
        xn = graph.add(pre + "mlp_norm", OpKind.LAYERNORM, [x], i, weight=w(p + "final_layer_norm.weight"),
                       bias=w(p + "final_layer_norm.bias"))
        h = _linear(graph, pre + "fc1", xn, i, w, p + "fc1")
        act = graph.add(pre + "act", OpKind.RELU, [h], i)
        down = _linear(graph, pre + "fc2", act, i, w, p + "fc2")
        x = graph.add(pre + "mlp_res", OpKind.ADD, [x, down], i)
    xn = graph.add("final_norm", OpKind.LAYERNORM, [x], weight=w(d + "final_layer_norm.weight"),
                   bias=w(d + "final_layer_norm.bias"))
    graph.add("lm_head", OpKind.LINEAR, [xn], weight=w(d + "embed_tokens.weight" if tied else "lm_head.weight"))
    return graph


BUILDERS = {"llama": _build_llama_like, "mistral": _build_llama_like, "qwen2": _build_llama_like,
            "phi3": _build_llama_like, "gemma": _build_llama_like, "opt": _build_opt}


def build_graph(spec: ModelSpec, weights: Weights, tied: bool, embed_scale: float = 1.0) -> GraphIR:
    """The float graph of ``spec`` from its weights by Hugging Face name; ``embed_scale`` multiplies the embedding
    (Gemma)."""
    graph = BUILDERS[spec.family](spec, weights, tied, embed_scale)
    _check_shapes(graph)
    return graph


def _check_shapes(graph: GraphIR) -> None:
    s = graph.spec
    H, I, qw, kvw = s.hidden_size, s.intermediate_size, s.num_heads * s.head_dim, s.num_kv_heads * s.head_dim
    want = {"q_proj": (qw, H), "k_proj": (kvw, H), "v_proj": (kvw, H), "o_proj": (H, qw), "gate_proj": (I, H),
            "up_proj": (I, H), "down_proj": (H, I), "fc1": (I, H), "fc2": (H, I), "lm_head": (s.vocab_size, H)}
    for n in graph.linears():
        node = graph.node(n)
        shape = node["weight"].shape
        role = n.split(".")[-1]
        if shape != want[role]:
            raise UnsupportedError(f"layer {n}: weight shape {shape}, expected {want[role]}")
        if "bias" in node and node["bias"].shape != (shape[0],):
            raise UnsupportedError(f"layer {n}: bias shape {node['bias'].shape}, expected ({shape[0]},)")


INDEX = "model.safetensors.index.json"


def _checkpoint_files(folder: Path) -> list[Path]:
    """The safetensors files of a checkpoint: the shards its index names (every one must be there), else every
    ``*.safetensors`` in the folder."""
    index = folder / INDEX
    if not index.exists():
        return sorted(folder.glob("*.safetensors"))
    try:
        weight_map = json.loads(index.read_text())["weight_map"]
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as e:
        raise UnsupportedError(f"{index}: not a safetensors index with a weight_map ({e})") from None
    shards = sorted(set(weight_map.values()))
    missing = [s for s in shards if not (folder / s).exists()]
    if missing:
        raise UnsupportedError(f"{index} names {len(shards)} shards; {', '.join(missing)} "
                               f"{'is' if len(missing) == 1 else 'are'} not in {folder} (download every shard)")
    return [folder / s for s in shards]


def load_hf(model: str | Path | Any, random_weights: int | None = None) -> GraphIR:
    """Load a supported causal LM from a local folder (config.json and its safetensors: one file, or the shards
    ``model.safetensors.index.json`` names; float32, float16 or bfloat16) or a transformers model.

    ``random_weights=SEED`` ignores any checkpoint and gives every parameter seeded random values produced
    on demand (a config alone is enough; a 7B model compiles in bounded memory).
    """
    if isinstance(model, (str, Path)):
        folder = Path(model)
        cfg_path = folder / "config.json"
        if not cfg_path.exists():
            raise UnsupportedError(f"{folder}: no config.json (expected a Hugging Face model folder)")
        try:
            cfg = json.loads(cfg_path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise UnsupportedError(f"{cfg_path}: not valid JSON ({e})") from None
        if random_weights is not None:
            spec = spec_from_config(cfg)
            weights = RandomWeights(cfg, random_weights)
            return build_graph(spec, _gains(spec, weights), _tied(cfg, weights), _embed_scale_of(spec, cfg))
        files = _checkpoint_files(folder)
        if not files:
            raise UnsupportedError(f"{folder}: no *.safetensors weights (use random_weights=SEED / "
                                   f"--random-weights SEED to compile the config with seeded random weights)")
        from safetensors import SafetensorError
        from safetensors.torch import load_file  # the torch reader also takes bf16 checkpoints

        weights: dict[str, np.ndarray] = {}
        for f in files:
            try:
                tensors = load_file(str(f))
            except (SafetensorError, OSError) as e:
                raise UnsupportedError(f"{f}: not a readable safetensors file ({e}); is it truncated or damaged?") \
                    from None
            weights.update({k: v.float().numpy() for k, v in tensors.items()})
    else:
        cfg = model.config.to_dict()
        weights = {k: v.detach().float().cpu().numpy() for k, v in model.state_dict().items()}
    spec = spec_from_config(cfg)
    return build_graph(spec, _gains(spec, weights), _tied(cfg, weights), _embed_scale_of(spec, cfg))


def _gains(spec: ModelSpec, weights: Weights) -> Weights:
    return GemmaGains(weights) if spec.family == "gemma" else weights


def _embed_scale_of(spec: ModelSpec, cfg: Mapping[str, Any]) -> float:
    return embed_scale(cfg) if spec.family == "gemma" else 1.0


class GemmaGains(Mapping[str, Any]):
    """A Gemma checkpoint's weights with each RMSNorm weight w read as the gain the model multiplies by, 1 + w in
    float32 (as transformers computes it, so that the graph exported models give holds the same values)."""

    def __init__(self, weights: Weights):
        self.weights = weights

    def __getitem__(self, name: str):
        w = self.weights[name]
        if name.endswith("norm.weight"):
            return np.float32(1.0) + np.asarray(w, np.float32)
        return w

    def __iter__(self):
        return iter(self.weights)

    def __len__(self) -> int:
        return len(self.weights)


def _tied(cfg: Mapping[str, Any], weights: Weights) -> bool:
    """Whether the LM head is the embedding table: the config says so, or the checkpoint has no head of its own
    (OPT's configs leave tie_word_embeddings to the family's default, true)."""
    return bool(cfg.get("tie_word_embeddings", False)) or "lm_head.weight" not in weights
