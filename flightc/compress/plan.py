"""Per-layer compression plan: which weight format each linear layer gets."""
from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field

from flightc.compress.formats import WeightFormat


@dataclass(frozen=True)
class CompressionPlan:
    """A default format, overridden per layer by glob patterns over IR node names (``L0.q_proj``, ``*.down_proj``).

    The LM head keeps 8-bit dense weights unless a pattern names it: its outputs are the logits.
    """

    default: WeightFormat = WeightFormat()
    overrides: tuple[tuple[str, WeightFormat], ...] = field(default_factory=tuple)
    head: WeightFormat = WeightFormat()

    def format_for(self, layer: str) -> WeightFormat:
        for pattern, fmt in reversed(self.overrides):
            if fnmatch.fnmatchcase(layer, pattern):
                return fmt
        return self.head if layer == "lm_head" else self.default

    @classmethod
    def parse(cls, default: str = "w8", overrides: list[str] | tuple[str, ...] = ()) -> "CompressionPlan":
        """``default`` like 'w4g128s8:16'; each override 'PATTERN=FORMAT', e.g. '*.down_proj=w8'."""
        pairs = []
        for item in overrides:
            pattern, _, fmt = item.partition("=")
            pairs.append((pattern.strip(), WeightFormat.parse(fmt)))
        return cls(WeightFormat.parse(default), tuple(pairs))

    def describe(self) -> dict:
        return {"default": self.default.label(), "head": self.head.label(),
                "overrides": {p: f.label() for p, f in self.overrides}}
