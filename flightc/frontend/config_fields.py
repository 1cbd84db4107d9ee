"""Every field of a model's config.json is read, left aside for a stated reason, or refused by name.

A field flightc does not know may change the arithmetic (a pre-quantized checkpoint, interleaved RoPE, a new
attention variant): compiling past it would give a wrong answer without a word. :func:`audit` refuses such a
field and names it. The fields the frontend reads are recorded as it reads them (:class:`ConfigFields`), so the
tables here hold only what it does not read: :data:`ELSEWHERE` (read by another part of flightc), :data:`IGNORED`
and :data:`IGNORED_BY_FAMILY` (no effect on what a decoder computes at inference). transformers' own generic
fields (output options, label maps, its version) are ignored as well; they come from the installed transformers.
"""
from __future__ import annotations

import functools
from typing import Any, Iterator, Mapping

from flightc.errors import UnsupportedError

_DROPOUT = "dropout: training only, off at inference"
_BIAS = "the biases are the checkpoint's own (a ...bias tensor beside each weight)"
_TOKENS = "a token id for generation and tokenization (flightc run reads BOS and EOS from the folder)"
_STORAGE = "the checkpoint's storage type: weights are read as float and quantized by the format"

# field -> where flightc reads it outside the frontend's spec
ELSEWHERE: dict[str, str] = {
    "tie_word_embeddings": "flightc.frontend.hf.load_hf (the LM head is the embedding table)",
    "initializer_range": "flightc.frontend.lazy.RandomWeights (the spread of --random-weights)",
    "init_std": "flightc.frontend.lazy.RandomWeights (the spread of --random-weights)",
    "bos_token_id": "flightc.runtime.text (" + _TOKENS + ")",
    "eos_token_id": "flightc.runtime.text (" + _TOKENS + "; a list is several EOS ids)",
}

# field -> why it changes nothing flightc computes
IGNORED: dict[str, str] = {
    "attention_dropout": _DROPOUT, "dropout": _DROPOUT, "activation_dropout": _DROPOUT, "layerdrop": _DROPOUT,
    "attention_bias": _BIAS, "mlp_bias": _BIAS, "enable_bias": _BIAS,
    "pad_token_id": _TOKENS, "prefix": "OPT's tokenizer prefix (" + _TOKENS + ")",
    "torch_dtype": _STORAGE, "dtype": _STORAGE,
    "use_cache": "transformers' generation option (flightc always keeps a KV cache)",
    "is_llama_config": "SmolLM2's marker that its config is a LLaMA one",
    "tokenizer_class": "the tokenizer's class, read by transformers' AutoTokenizer",
    "_name_or_path": "where transformers loaded the config from",
    "auto_map": "the remote-code classes transformers could load instead of its own (flightc reads the config itself)",
    "transformers_version": "the transformers release that wrote the config",
}

# model_type -> field -> why that family's field changes nothing flightc computes
IGNORED_BY_FAMILY: dict[str, dict[str, str]] = {
    "phi3": {"embd_pdrop": _DROPOUT, "resid_pdrop": _DROPOUT,
             "original_max_position_embeddings": "the trained context that longrope scaling (refused) extends; "
                                                 "default RoPE does not read it"},
    "qwen2": {"sliding_window": "the window that use_sliding_window (refused) would apply",
              "max_window_layers": "the layers that use_sliding_window (refused) would window"},
}


@functools.cache
def _generic() -> frozenset[str]:
    """transformers' fields of every config (output options, label maps, its version): none is the network's."""
    import transformers

    return frozenset(transformers.PretrainedConfig().to_dict())


class ConfigFields(Mapping[str, Any]):
    """A config that records which fields were read (``read``), for :func:`audit`."""

    def __init__(self, cfg: Mapping[str, Any]):
        self._cfg = dict(cfg)
        self.read: set[str] = set()

    def __getitem__(self, key: str) -> Any:
        self.read.add(key)
        return self._cfg[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._cfg)

    def __len__(self) -> int:
        return len(self._cfg)


def unknown_fields(fields: ConfigFields, family: str) -> list[str]:
    """The fields neither read, read elsewhere, ignored for a reason nor transformers' generic ones."""
    known = fields.read | ELSEWHERE.keys() | IGNORED.keys() | IGNORED_BY_FAMILY.get(family, {}).keys() | _generic()
    return sorted(k for k in fields if k not in known)


def audit(fields: ConfigFields, family: str) -> None:
    """Refuse a config with a field flightc does not know, by name."""
    unknown = unknown_fields(fields, family)
    if unknown:
        names = ", ".join(f"{k} = {fields._cfg[k]!r}" for k in unknown)
        raise UnsupportedError(
            f"config field{'s' if len(unknown) > 1 else ''} {names} not known to flightc for model_type {family!r}: "
            f"it may change what the model computes, so flightc does not guess. If it does not (a field another "
            f"tool added), remove it from config.json; the fields flightc leaves aside and why are listed in "
            f"flightc/frontend/config_fields.py")
