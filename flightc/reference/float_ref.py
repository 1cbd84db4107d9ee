"""The float reference: the original model in PyTorch (CUDA when present, else CPU), and how far
the compressed model on a backend is from it."""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np


def reference_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


class FloatReference:
    """Greedy decoding and teacher-forced logits of a transformers causal LM.

    The model is moved to ``device`` (CUDA when present) in place, as ``nn.Module.to`` does.
    """

    def __init__(self, model, device: str | None = None):
        import torch

        self.device = device or reference_device()
        self.model = model.to(self.device).eval()
        self.dtype = torch.float32

    def logits(self, ids: list[int]) -> np.ndarray:
        """Logits at every position of ``ids`` (float64 numpy, [len(ids), vocab])."""
        import torch

        with torch.no_grad():
            x = torch.tensor([ids], device=self.device)
            return self.model(x).logits[0].double().cpu().numpy()

    def generate(self, prompt: list[int], max_new_tokens: int) -> list[int]:
        import torch

        with torch.no_grad():
            x = torch.tensor([prompt], device=self.device)
            out = self.model.generate(x, max_new_tokens=max_new_tokens, do_sample=False, min_new_tokens=max_new_tokens,
                                      pad_token_id=0, eos_token_id=None)
        return out[0, len(prompt):].tolist()


@dataclass(frozen=True)
class Agreement:
    """Compressed model vs float model on one prompt."""

    greedy_match: float  # fraction of generated positions where both greedy sequences agree
    first_divergence: int | None  # index of the first differing generated token
    teacher_forced_match: float  # on the compressed model's own tokens: float argmax == its token
    logit_rel_error: float  # ||z_q - z_f|| / ||z_f|| over those positions (dequantized logits)
    logit_cosine: float

    def to_dict(self) -> dict:
        return asdict(self)


def agreement(ref: FloatReference, prompt: list[int], tokens: list[int], int_logits: list[np.ndarray],
              logit_scale: float) -> Agreement:
    """Compare a backend's greedy tokens and INT32 logits with the float model."""
    n = len(tokens)
    ref_tokens = ref.generate(prompt, n)
    same = [a == b for a, b in zip(tokens, ref_tokens)]
    first = next((i for i, s in enumerate(same) if not s), None)
    zf = ref.logits(prompt + tokens[:-1])[len(prompt) - 1:]
    zq = np.stack([np.asarray(z, np.float64) * logit_scale for z in int_logits])
    tf = float(np.mean(np.argmax(zf, axis=1) == np.asarray(tokens)))
    rel = float(np.linalg.norm(zq - zf) / np.linalg.norm(zf))
    cos = float(np.mean(np.sum(zq * zf, axis=1) / (np.linalg.norm(zq, axis=1) * np.linalg.norm(zf, axis=1))))
    return Agreement(float(np.mean(same)), first, tf, rel, cos)


@dataclass(frozen=True)
class Comparison:
    """A backend's generation next to the float model's on the same prompt (``flightc run --compare reference``)."""

    source: str
    device: str  # where PyTorch ran
    tokens: list[int]  # the float model's greedy tokens
    wall_s: float
    device_tokens_per_s: float | None  # the backend's tokens over its cycles at the clock; None without cycles
    agreement: Agreement

    def to_dict(self) -> dict:
        """The ``reference`` object of ``flightc run --json`` (flightc/schema.py)."""
        return {"source": self.source, "device": self.device, "tokens": self.tokens, "wall_s": self.wall_s,
                "device_tokens_per_s": self.device_tokens_per_s, **self.agreement.to_dict()}


def compare_with_reference(source: str, bundle, prompt: list[int], tokens: list[int], int_logits: list[np.ndarray],
                           cycles: int | None) -> Comparison:
    """Run the float model ``source`` (a Hugging Face folder or builtin:NAME) on ``prompt`` for as many tokens as
    the backend generated; its tokens and speed, and how far the backend's logits are from it."""
    import time

    from flightc.models.builtin import load_torch_model

    ref = FloatReference(load_torch_model(source))
    t0 = time.perf_counter()
    ref_tokens = ref.generate(prompt, len(tokens))
    wall = time.perf_counter() - t0
    agree = agreement(ref, prompt, tokens, int_logits, bundle.manifest.io["logit_scale"])
    device_tps = len(tokens) / (cycles / (bundle.config.clock_mhz * 1e6)) if cycles else None
    return Comparison(str(source), ref.device, ref_tokens, wall, device_tps, agree)
