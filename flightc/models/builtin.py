"""Built-in models, addressed as ``builtin:NAME`` wherever a model path is accepted."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from flightc.errors import FlightcError

# name -> (description, seed, config overrides of flightc.models.random_llama.TINY_LLAMA)
BUILTIN: dict[str, tuple[str, int, dict]] = {
    "tiny-llama": ("2-layer LLaMA, hidden 128, 4 heads, vocab 256, seeded random weights", 0, {}),
    "tiny-llama-gqa": ("tiny-llama with grouped-query attention (4 query heads, 2 KV heads)", 1,
                       {"num_key_value_heads": 2}),
}
DEFAULT_MODEL = "builtin:tiny-llama"


def is_builtin(spec: Any) -> bool:
    return isinstance(spec, str) and spec.startswith("builtin:")


def load_builtin(spec: str):
    """The transformers model of a ``builtin:NAME`` spec."""
    from flightc.models.random_llama import random_llama

    name = spec.split(":", 1)[1]
    if name not in BUILTIN:
        raise FlightcError(f"unknown built-in model {name!r}; available: {', '.join(BUILTIN)}")
    _, seed, overrides = BUILTIN[name]
    return random_llama(seed, **overrides)


def load_torch_model(spec: str | Path):
    """The float model behind a model spec (built-in name or Hugging Face folder), for the float reference."""
    if is_builtin(spec):
        return load_builtin(str(spec))
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(str(spec), torch_dtype="float32")


def model_input(spec: str | Path):
    """What ``compile_model`` takes: a folder path, or the in-memory model of a built-in."""
    return load_builtin(str(spec)) if is_builtin(spec) else Path(spec)
