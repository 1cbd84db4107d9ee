"""RoPE's rotary frequencies, with the scalings transformers implements for LLaMA-family models.

A model's ``rope_scaling`` (``rope_parameters`` in newer configs) changes only the inverse frequencies and, for
YaRN, a factor on cos and sin; the integer tables (flightc.numerics.rope_table) and the float reference both take
them from :meth:`RopeScaling.inv_freq` and :attr:`RopeScaling.attention_factor`, computed as
``transformers.modeling_rope_utils`` computes them (in float64 rather than float32).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from enum import Enum
from typing import Any, Mapping

import numpy as np

from flightc.errors import UnsupportedError


class RopeType(Enum):
    DEFAULT = "default"
    LINEAR = "linear"  # positions divided by ``factor``
    LLAMA3 = "llama3"  # LLaMA 3.1's: low frequencies divided by ``factor``, a smooth ramp to the high ones
    YARN = "yarn"  # interpolation blended with extrapolation per dimension, cos and sin scaled
    # NTK-aware: the default frequencies up to max_position_embeddings, recomputed past it as a sequence grows,
    # which fixed tables cannot follow (the compiler refuses a max_len past max_position_embeddings for any model)
    DYNAMIC = "dynamic"


# what transformers also has but flightc does not compute: refused by name
REFUSED = {"longrope": "LongRoPE's per-dimension factors", "su": "LongRoPE's per-dimension factors (su)",
           "proportional": "proportional RoPE"}


@dataclass(frozen=True)
class RopeScaling:
    """One model's RoPE scaling: the fields its config gives for its type (the others keep their defaults)."""

    type: RopeType = RopeType.DEFAULT
    factor: float = 1.0
    low_freq_factor: float = 1.0  # LLaMA 3
    high_freq_factor: float = 4.0  # LLaMA 3
    original_max_positions: int = 0  # LLaMA 3, YaRN: the context the model was pretrained at
    beta_fast: float = 32.0  # YaRN
    beta_slow: float = 1.0  # YaRN
    truncate: bool = True  # YaRN: the correction range rounded outward
    attention: float = 1.0  # YaRN: the factor on cos and sin

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> "RopeScaling":
        """From a Hugging Face config: ``rope_parameters`` (newer configs) or ``rope_scaling`` (``type`` or
        ``rope_type``), whichever is not the default."""
        def kind_of(rope: Mapping[str, Any]) -> str:
            return rope.get("rope_type", rope.get("type", "default"))

        given = [r for r in (cfg.get("rope_parameters"), cfg.get("rope_scaling")) if r]
        rope = next((r for r in given if kind_of(r) != "default"), {})
        name = kind_of(rope)
        if name in REFUSED:
            raise UnsupportedError(f"config field rope_scaling: rope_type {name!r} ({REFUSED[name]}) is not supported")
        try:
            kind = RopeType(name)
        except ValueError:
            raise UnsupportedError(f"config field rope_scaling: unknown rope_type {name!r} (supported: "
                                   f"{', '.join(t.value for t in RopeType)})") from None
        if kind is RopeType.DEFAULT:
            return cls()

        def need(key: str) -> Any:
            if rope.get(key) is None:
                raise UnsupportedError(f"config field rope_scaling: rope_type {name!r} needs {key}")
            return rope[key]

        if rope.get("partial_rotary_factor", 1.0) != 1.0:
            raise UnsupportedError("config field rope_scaling.partial_rotary_factor != 1 is not supported")
        factor = float(need("factor"))
        if kind is RopeType.LLAMA3:
            return cls(kind, factor, float(need("low_freq_factor")), float(need("high_freq_factor")),
                       int(need("original_max_position_embeddings")))
        if kind is RopeType.YARN:
            original = int(rope.get("original_max_position_embeddings") or cfg.get("max_position_embeddings", 0))
            attention = rope.get("attention_factor")
            if attention is None:
                mscale, mscale_all = rope.get("mscale"), rope.get("mscale_all_dim")
                attention = (_yarn_mscale(factor, mscale) / _yarn_mscale(factor, mscale_all) if mscale and mscale_all
                             else _yarn_mscale(factor))
            return cls(kind, factor, original_max_positions=original,
                       beta_fast=float(rope.get("beta_fast") or 32), beta_slow=float(rope.get("beta_slow") or 1),
                       truncate=bool(rope.get("truncate", True)), attention=float(attention))
        return cls(kind, factor)

    def inv_freq(self, head_dim: int, theta: float) -> np.ndarray:
        """The head_dim/2 inverse frequencies, float64."""
        dim = head_dim
        base = 1.0 / (theta ** (np.arange(0, dim, 2, dtype=np.float64) / dim))
        if self.type in (RopeType.DEFAULT, RopeType.DYNAMIC):  # dynamic: unchanged within the trained context
            return base
        if self.type is RopeType.LINEAR:
            return base / self.factor
        if self.type is RopeType.LLAMA3:
            old = self.original_max_positions
            low_wavelen, high_wavelen = old / self.low_freq_factor, old / self.high_freq_factor
            wavelen = 2 * math.pi / base
            scaled = np.where(wavelen > low_wavelen, base / self.factor, base)
            smooth = (old / wavelen - self.low_freq_factor) / (self.high_freq_factor - self.low_freq_factor)
            smoothed = (1 - smooth) * scaled / self.factor + smooth * scaled
            medium = ~(wavelen < high_wavelen) & ~(wavelen > low_wavelen)
            return np.where(medium, smoothed, scaled)
        # YaRN: per dimension, interpolation (base / factor) blended with extrapolation (base) along a linear ramp
        def correction_dim(rotations: float) -> float:
            return dim * math.log(self.original_max_positions / (rotations * 2 * math.pi)) / (2 * math.log(theta))

        low, high = correction_dim(self.beta_fast), correction_dim(self.beta_slow)
        if self.truncate:
            low, high = math.floor(low), math.ceil(high)
        low, high = max(low, 0), min(high, dim - 1)
        if low == high:
            high += 0.001
        ramp = np.clip((np.arange(dim // 2, dtype=np.float64) - low) / (high - low), 0, 1)
        extrapolate = 1 - ramp
        return base / self.factor * (1 - extrapolate) + base * extrapolate

    @property
    def attention_factor(self) -> float:
        """The factor on cos and sin (YaRN's attention scaling; 1 otherwise)."""
        return self.attention if self.type is RopeType.YARN else 1.0

    def to_dict(self) -> dict:
        d = asdict(self)
        d["type"] = self.type.value
        return d


def _yarn_mscale(scale: float, mscale: float = 1.0) -> float:
    return 1.0 if scale <= 1 else 0.1 * mscale * math.log(scale) + 1.0
