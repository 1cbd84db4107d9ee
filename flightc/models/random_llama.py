"""Seeded random LLaMA-family models (transformers), for tests and the demo."""
from __future__ import annotations

from pathlib import Path

import torch

TINY_LLAMA = dict(vocab_size=256, hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=128, rms_norm_eps=1e-5,
                  rope_theta=10000.0, tie_word_embeddings=False)


def llama_config(**overrides):
    from transformers import LlamaConfig

    return LlamaConfig(**{**TINY_LLAMA, **overrides})


def random_llama(seed: int = 0, init_std: float = 0.08, **overrides):
    """A LlamaForCausalLM with normal(0, init_std) weights and norm gains near 1, from ``seed``.

    init_std is larger than transformers' 0.02 so that a 2-layer model's next-token choices depend on
    the prompt (with 0.02 every logit row is nearly flat and greedy decoding says little).
    """
    from transformers import LlamaForCausalLM

    torch.manual_seed(seed)
    model = LlamaForCausalLM(llama_config(**overrides)).eval()
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim == 1:  # norm gains
                p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=gen))
            else:
                p.copy_(init_std * torch.randn(p.shape, generator=gen))
    return model


def save_random_llama(folder: str | Path, seed: int = 0, **overrides) -> Path:
    folder = Path(folder)
    random_llama(seed, **overrides).save_pretrained(folder, safe_serialization=True)
    return folder
