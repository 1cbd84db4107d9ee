"""Choosing the next token from a step's INT32 logits, on the host, the same for every backend.

The backends agree bit for bit on the logits, so one seeded sampler (a ``numpy.random.Generator``)
gives fsim, the RTL and a board the same tokens for the same seed. Temperature 0 is greedy: the
largest logit, the lowest id on ties.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from flightc.errors import UnsupportedError


@dataclass
class Sampler:
    temperature: float = 0.0  # 0: greedy
    top_k: int = 0  # keep the k most likely tokens (0: all)
    top_p: float = 1.0  # keep the smallest set whose probability reaches p
    repetition_penalty: float = 1.0  # > 1 makes tokens already in the sequence less likely (CTRL's rule)
    seed: int = 0
    _rng: np.random.Generator = field(init=False, repr=False)

    def __post_init__(self) -> None:
        problems = []
        if not (self.temperature >= 0 and np.isfinite(self.temperature)):
            problems.append(f"--temperature {self.temperature}: must be 0 (greedy) or positive")
        if self.top_k < 0:
            problems.append(f"--top-k {self.top_k}: must be 0 (all tokens) or positive")
        if not 0 < self.top_p <= 1:
            problems.append(f"--top-p {self.top_p}: must be in (0, 1]")
        if not self.repetition_penalty > 0:
            problems.append(f"--repetition-penalty {self.repetition_penalty}: must be positive")
        if problems:
            raise UnsupportedError("; ".join(problems))
        self._rng = np.random.default_rng(self.seed)

    def to_dict(self) -> dict:
        return {"temperature": self.temperature, "top_k": self.top_k, "top_p": self.top_p,
                "repetition_penalty": self.repetition_penalty, "seed": self.seed}

    def choose(self, logits: np.ndarray, logit_scale: float, history: list[int]) -> int:
        """The next token from INT32 ``logits`` (``logit_scale`` turns them into the float model's units) after
        the ids of ``history`` (prompt and generated so far)."""
        z = np.asarray(logits, np.float64) * logit_scale
        if self.repetition_penalty != 1.0 and history:
            seen = np.unique(np.asarray(history, np.int64))
            seen = seen[(seen >= 0) & (seen < len(z))]
            z[seen] = np.where(z[seen] > 0, z[seen] / self.repetition_penalty, z[seen] * self.repetition_penalty)
        if self.temperature == 0:
            return int(np.argmax(z))
        z = z / self.temperature
        order = np.argsort(-z, kind="stable")  # most likely first, lower ids first on ties
        if self.top_k:
            order = order[:self.top_k]
        p = np.exp(z[order] - z[order[0]])
        p /= p.sum()
        if self.top_p < 1.0:
            keep = int(np.searchsorted(np.cumsum(p), self.top_p) + 1)
            order, p = order[:keep], p[:keep] / p[:keep].sum()
        return int(order[self._rng.choice(len(order), p=p)])
