"""Seeded random models of each supported family (transformers), for tests and demos."""
from __future__ import annotations

from pathlib import Path

import torch

TINY_LLAMA = dict(vocab_size=256, hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=128, rms_norm_eps=1e-5,
                  rope_theta=10000.0, tie_word_embeddings=False)

# family -> (transformers config class, model class, tiny config)
FAMILIES = {
    "llama": ("LlamaConfig", "LlamaForCausalLM", TINY_LLAMA),
    "qwen2": ("Qwen2Config", "Qwen2ForCausalLM", {**TINY_LLAMA, "num_key_value_heads": 2}),
    "mistral": ("MistralConfig", "MistralForCausalLM", {**TINY_LLAMA, "num_key_value_heads": 2, "head_dim": 32,
                                                        "sliding_window": 8}),
    "phi3": ("Phi3Config", "Phi3ForCausalLM", {**TINY_LLAMA, "num_key_value_heads": 2, "sliding_window": 8,
                                               "pad_token_id": 0, "bos_token_id": 1, "eos_token_id": 2}),
    "gemma": ("GemmaConfig", "GemmaForCausalLM", {**TINY_LLAMA, "num_key_value_heads": 1, "head_dim": 64,
                                                  "tie_word_embeddings": True, "hidden_act": "gelu_pytorch_tanh",
                                                  "pad_token_id": 0, "bos_token_id": 2, "eos_token_id": 1}),
    "opt": ("OPTConfig", "OPTForCausalLM", dict(vocab_size=256, hidden_size=128, ffn_dim=256, num_hidden_layers=2,
                                               num_attention_heads=4, max_position_embeddings=128,
                                               word_embed_proj_dim=128, dropout=0.0)),
}


def family_config(family: str, **overrides):
    import transformers

    cfg_cls, _, tiny = FAMILIES[family]
    return getattr(transformers, cfg_cls)(**{**tiny, **overrides})


def random_model(family: str = "llama", seed: int = 0, init_std: float = 0.08, **overrides):
    """A tiny model of ``family`` with normal(0, init_std) matrices, norm gains near 1 and small biases.

    init_std is larger than transformers' 0.02 so that a 2-layer model's next-token choices depend on
    the prompt (with 0.02 every logit row is nearly flat and greedy decoding says little).
    """
    import transformers

    torch.manual_seed(seed)
    model = getattr(transformers, FAMILIES[family][1])(family_config(family, **overrides)).eval()
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=gen)
            if p.ndim == 1 and "norm" in name and name.endswith("weight"):
                p.copy_(1.0 + 0.1 * noise)  # norm gains
            elif p.ndim == 1:
                p.copy_(0.1 * noise)  # biases
            else:
                p.copy_(init_std * noise)
    return model


def save_random_model(folder: str | Path, family: str = "llama", seed: int = 0, **overrides) -> Path:
    folder = Path(folder)
    random_model(family, seed, **overrides).save_pretrained(folder, safe_serialization=True)
    return folder
