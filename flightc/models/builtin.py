"""Built-in models, addressed as ``builtin:NAME`` wherever a model path is accepted."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flightc.errors import FlightcError

@dataclass(frozen=True)
class RandomBuiltin:
    description: str
    family: str
    seed: int
    init_std: float = 0.08  # large enough that greedy tokens depend on the prompt
    overrides: tuple[tuple[str, object], ...] = ()


BUILTIN: dict[str, RandomBuiltin] = {
    "tiny-llama": RandomBuiltin("2-layer LLaMA, hidden 128, 4 heads, vocab 256", "llama", 0),
    "tiny-llama-gqa": RandomBuiltin("tiny-llama with grouped-query attention (4 query heads, 2 KV heads)", "llama",
                                    1, overrides=(("num_key_value_heads", 2),)),
    "tiny-llama-hd64": RandomBuiltin("tiny-llama with two 64-wide query heads sharing one KV head (a head a lane "
                                     "group's 64 slots wide: decode streams the keys)", "llama", 6,
                                     overrides=(("num_attention_heads", 2), ("num_key_value_heads", 1))),
    "tiny-qwen2": RandomBuiltin("2-layer Qwen2: QKV biases, 2 KV heads", "qwen2", 2),
    "tiny-mistral": RandomBuiltin("2-layer Mistral: 2 KV heads, sliding window of 8 tokens", "mistral", 3),
    "tiny-phi3": RandomBuiltin("2-layer Phi-3: fused Q/K/V and gate/up projections, 2 KV heads, sliding window of 8 "
                               "tokens", "phi3", 6),
    "tiny-gemma": RandomBuiltin("2-layer Gemma: GELU (tanh), a scaled embedding, RMSNorm gains 1 + w, one KV head of "
                                "64, tied head", "gemma", 7),
    "tiny-opt": RandomBuiltin("2-layer OPT: LayerNorm, ReLU, learned positions, biases", "opt", 5, 0.15),
}
TRAINED = {"addition": "3-layer LLaMA (0.65 M parameters) trained on 4-digit addition; committed weights",
           "pylm": "4-layer byte-level LLaMA (0.8 M parameters, GQA) trained on the Python standard library's source; "
                   "held-out perplexity; committed weights",
           "pylm1k": "pylm's architecture trained on windows of 1,024 bytes (positions up to 1,024): the long-context "
                     "model; committed weights"}
DEFAULT_MODEL = "builtin:addition"


def _name(spec: str) -> str:
    name = spec.split(":", 1)[1]
    if name not in BUILTIN and name not in TRAINED:
        raise FlightcError(f"unknown built-in model {name!r}; available: {', '.join([*TRAINED, *BUILTIN])}")
    return name


def trained_folder(name: str) -> Path:
    import importlib

    weights = importlib.import_module(f"flightc.models.{name}").WEIGHTS
    if not (weights / "config.json").exists():
        raise FlightcError(f"the weights of builtin:{name} are missing from {weights}; "
                           f"run `python -m flightc.models.{name}.train`")
    return weights


def is_builtin(spec: Any) -> bool:
    return isinstance(spec, str) and spec.startswith("builtin:")


def load_builtin(spec: str):
    """The transformers model of a ``builtin:NAME`` spec."""
    from flightc.models.seeded import random_model

    name = _name(spec)
    if name in TRAINED:
        from transformers import LlamaForCausalLM

        return LlamaForCausalLM.from_pretrained(str(trained_folder(name)), dtype="float32").eval()
    b = BUILTIN[name]
    return random_model(b.family, b.seed, b.init_std, **dict(b.overrides))


def load_torch_model(spec: str | Path):
    """The float model behind a model spec (built-in name or Hugging Face folder), for the float reference."""
    if is_builtin(spec):
        return load_builtin(str(spec))
    from transformers import AutoModelForCausalLM

    # safetensors only, and no code from the folder: nothing in a model folder runs (as for `flightc compile`)
    return AutoModelForCausalLM.from_pretrained(str(spec), dtype="float32", use_safetensors=True,
                                                trust_remote_code=False).eval()


def model_input(spec: str | Path):
    """What ``compile_model`` takes: a folder path (trained built-ins too), or a random built-in in memory."""
    if is_builtin(spec):
        name = _name(str(spec))
        return trained_folder(name) if name in TRAINED else load_builtin(str(spec))
    return Path(spec)


def model_task(spec: str | Path):
    """The checkable task a model declares (its folder's flightc_task.json), if any."""
    from flightc.tasks import task_of

    folder = model_input(spec) if is_builtin(spec) else Path(spec)
    return task_of(folder) if isinstance(folder, Path) else None
