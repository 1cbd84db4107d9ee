"""Seeded random weights produced on demand, so that a 7B-parameter config compiles in bounded memory."""
from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass
from typing import Iterator, Mapping

import numpy as np


@dataclass(frozen=True)
class LazyArray:
    """A float32 tensor generated from (seed, name) each time it is read; nothing is kept."""

    name: str
    shape: tuple[int, ...]
    seed: int
    kind: str  # "matrix", "gain" or "bias"
    std: float = 0.02
    part: tuple[int, int] | None = None  # rows r0:r1 of the tensor named (a fused projection's share)
    scale: float = 1.0  # a factor on every value (Gemma's embedding scale)

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def rows(self, r0: int, r1: int) -> "LazyArray":
        """Rows ``r0`` to ``r1`` of this tensor, still generated on demand."""
        base = 0 if self.part is None else self.part[0]
        return LazyArray(self.name, (r1 - r0, *self.shape[1:]), self.seed, self.kind, self.std, (base + r0, base + r1),
                         self.scale)

    def scaled(self, factor: float) -> "LazyArray":
        """This tensor times ``factor`` (in float32, as a float32 model multiplies), still generated on demand."""
        return dataclasses.replace(self, scale=self.scale * factor)

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        digest = hashlib.sha256(f"{self.seed}:{self.name}".encode()).digest()
        rng = np.random.default_rng(int.from_bytes(digest[:8], "little"))
        # uniform integers are ~20x faster to draw than normals; the scale matches std
        if self.part is None:
            raw = rng.integers(-127, 128, size=self.shape, dtype=np.int8).astype(np.float32)
        else:  # the whole tensor's draw, so that a share holds the rows the whole one would
            whole = rng.integers(-127, 128, size=(self.part[1], *self.shape[1:]), dtype=np.int8)
            raw = whole[self.part[0]:].astype(np.float32)
        raw *= np.float32(self.std / 73.3)
        if self.kind == "gain":
            raw += np.float32(1.0)
        if self.scale != 1.0:
            raw *= np.float32(self.scale)
        out = raw if dtype is None else raw.astype(dtype)
        return out


class RandomWeights(Mapping[str, LazyArray]):
    """The parameter names and shapes of a transformers model built from a config, with lazy values."""

    def __init__(self, config: dict, seed: int):
        import torch
        import transformers

        cfg = transformers.AutoConfig.for_model(**config)
        with torch.device("meta"):  # shapes only: no memory for a 7B model
            model = transformers.AutoModelForCausalLM.from_config(cfg)
        std = float(config.get("initializer_range", config.get("init_std", 0.02)))
        self._arrays = {}
        # one name a tensor: a tied LM head is the embedding's own parameter, absent from the checkpoint as
        # transformers saves it
        seen: set[int] = set()
        for name, t in model.state_dict(keep_vars=True).items():
            if id(t) in seen:
                continue
            seen.add(id(t))
            kind = "matrix" if t.ndim > 1 else ("gain" if "norm" in name and name.endswith("weight") else "bias")
            self._arrays[name] = LazyArray(name, tuple(t.shape), seed, kind, std)

    def __getitem__(self, name: str) -> LazyArray:
        return self._arrays[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._arrays)

    def __len__(self) -> int:
        return len(self._arrays)


def lazy_weights_model(config: dict, seed: int, device: str = "cpu", jobs: int = 1):
    """The transformers model of ``config`` (float32, on ``device``) holding the seeded random weights that
    ``load_hf(folder, random_weights=seed)`` compiles: the float reference of a random-weight compile.
    ``jobs`` threads draw the values (numpy's generators release the GIL)."""
    from concurrent.futures import ThreadPoolExecutor

    import torch
    import transformers

    cfg = transformers.AutoConfig.for_model(**config)
    weights = RandomWeights(config, seed)
    with torch.device(device):
        model = transformers.AutoModelForCausalLM.from_config(cfg).to(torch.float32)
    state = {n: t for n, t in model.state_dict().items() if n in weights}  # (a tied head follows its embedding)
    with torch.no_grad(), ThreadPoolExecutor(max(1, jobs)) as pool:
        for name, values in zip(state, pool.map(lambda n: np.asarray(weights[n]), state)):
            state[name].copy_(torch.from_numpy(values))
    return model.eval()
