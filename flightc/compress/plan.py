"""Per-layer compression plan: which weight format each linear layer gets."""
from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field

from flightc.compress.formats import WeightFormat
from flightc.errors import UnsupportedError
from flightc.isa.table import KV_BITS


@dataclass(frozen=True)
class CompressionPlan:
    """A default format, overridden per layer by glob patterns over IR node names (``L0.q_proj``, ``*.down_proj``).

    The LM head keeps 8-bit dense weights unless a pattern names it: its outputs are the logits.
    ``kv_bits`` is the width of the KV cache in memory (8, or 4: two values per byte).
    """

    default: WeightFormat = WeightFormat()
    overrides: tuple[tuple[str, WeightFormat], ...] = field(default_factory=tuple)
    head: WeightFormat = WeightFormat()
    kv_bits: int = 8

    def format_for(self, layer: str) -> WeightFormat:
        for pattern, fmt in reversed(self.overrides):
            if fnmatch.fnmatchcase(layer, pattern):
                return fmt
        return self.head if layer == "lm_head" else self.default

    @classmethod
    def parse(cls, default: str = "w8", overrides: list[str] | tuple[str, ...] = (), kv_bits: int = 8
              ) -> "CompressionPlan":
        """``default`` like 'w4g128s8:16'; each override 'PATTERN=FORMAT', e.g. '*.down_proj=w8'. A sparse format
        without an encoding letter (w4g128s8:16, not w4g128s8:16m) leaves the encoding to the compiler."""
        pairs = []
        for item in overrides:
            pattern, _, fmt = item.partition("=")
            pairs.append((pattern.strip(), WeightFormat.parse(fmt, unspecified=None)))
        return cls(WeightFormat.parse(default, unspecified=None), tuple(pairs), kv_bits=kv_bits)

    def __post_init__(self) -> None:
        if self.kv_bits not in KV_BITS:
            raise UnsupportedError(f"KV cache of {self.kv_bits} bits: supported widths are {list(KV_BITS)}")

    def describe(self) -> dict:
        return {"default": self.default.label(), "head": self.head.label(),
                "overrides": {p: f.label() for p, f in self.overrides}, "kv_bits": self.kv_bits}

    @classmethod
    def from_describe(cls, d: dict) -> "CompressionPlan":
        """The inverse of :meth:`describe`, as bundle manifests record plans (a sparse format that left its encoding
        to the compiler comes back as positions: a label without a letter is either)."""
        return cls(WeightFormat.from_label(d["default"]),
                   tuple((p, WeightFormat.from_label(f)) for p, f in d["overrides"].items()),
                   WeightFormat.from_label(d["head"]), d["kv_bits"])
