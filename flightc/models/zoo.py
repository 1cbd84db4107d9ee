"""The model zoo (the published configs in ``flightc/models/configs``) and its twins: each config shrunk to a model
that compiles and simulates in seconds but keeps what decides how flightc lays it out and computes it."""
from __future__ import annotations

import json
from pathlib import Path

CONFIGS = Path(__file__).resolve().parent / "configs"
TWIN_LAYERS = 2
TWIN_VOCAB = 256  # plus the published vocabulary's residue modulo the group size


def zoo() -> list[str]:
    """The zoo's model names (its folders), sorted."""
    return sorted(p.parent.name for p in CONFIGS.glob("*/config.json"))


def published(name: str) -> dict:
    """A zoo model's published config.json."""
    return json.loads((CONFIGS / name / "config.json").read_text())


def twin(cfg: dict, group: int = 128) -> dict:
    """``cfg`` with two layers and a vocabulary of a few hundred, its hidden and MLP sizes cut to ``group`` plus their
    residues modulo ``group`` (a multiple of 16, so the residues modulo 16 stay too; the hidden size a multiple of the
    heads, as transformers requires), and as many heads as keep its
    query-to-KV ratio and its head size; tying, biases, RoPE and its scaling, norms and every other field as
    published. Where the family derives the head size from the hidden size (no ``head_dim`` field: Qwen2, OPT), the
    twin's hidden size is its heads times the head size, with the fewest KV heads that keep the residue."""
    import transformers

    from flightc.frontend.hf import spec_from_config

    spec = spec_from_config(cfg)
    family, head_dim, ratio = spec.family, spec.head_dim, spec.num_heads // spec.num_kv_heads
    hidden = group + cfg["hidden_size"] % group
    has_head_dim = "head_dim" in transformers.AutoConfig.for_model(family).to_dict()
    if has_head_dim:
        kv_t = 2 if ratio == 1 else 1  # (several heads even without grouping)
        while hidden % (kv_t * ratio):  # transformers wants whole heads' worth of hidden size even with head_dim
            hidden += group
        out = {"head_dim": head_dim}
    else:
        kv_t = next(k for k in range(1, 64) if (k * ratio * head_dim - cfg["hidden_size"]) % group == 0)
        hidden = kv_t * ratio * head_dim
        out = {}
    mlp = "ffn_dim" if family == "opt" else "intermediate_size"
    out |= {"num_hidden_layers": TWIN_LAYERS, "vocab_size": TWIN_VOCAB + cfg["vocab_size"] % group,
            "hidden_size": hidden, mlp: group + cfg[mlp] % group, "num_attention_heads": kv_t * ratio}
    if "num_key_value_heads" in cfg:
        out["num_key_value_heads"] = kv_t
    if family == "opt":
        out["word_embed_proj_dim"] = hidden
    for token in ("bos_token_id", "eos_token_id", "pad_token_id"):  # ids the twin's vocabulary holds
        if token in cfg and cfg[token] is not None:
            ids = cfg[token] if isinstance(cfg[token], list) else [cfg[token]]
            small = [i % out["vocab_size"] for i in ids]
            out[token] = small if isinstance(cfg[token], list) else small[0]
    return {**cfg, **out}
