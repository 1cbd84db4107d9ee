"""A generation session: one sequence, one bundle, one backend chosen by name."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Iterator

import numpy as np

from flightc.bundle import Bundle, load_bundle
from flightc.config import HardwareConfig
from flightc.errors import UnsupportedError
from flightc.runtime.backends import open_backend
from flightc.runtime.counters import Counters

if TYPE_CHECKING:
    from flightc.runtime.sampling import Sampler


class Session:
    """Generation on one backend; ``options`` are the backend's (flightc.runtime.backends.BACKENDS). Close it, or
    use it as a context manager, to release the device."""

    def __init__(self, bundle: Bundle | str | Path, backend: str = "fsim", hw: HardwareConfig | None = None,
                 **options):
        if not isinstance(bundle, Bundle):
            bundle = load_bundle(bundle, expect=hw)
        elif hw is not None:
            from flightc.bundle import check_manifest

            check_manifest(bundle.manifest, "bundle", hw)
        self.bundle = bundle
        self.device = open_backend(backend, bundle, **options)
        self.ids = bundle.region("io.ids")
        self.logits_region = bundle.region("io.logits")
        self.vocab = bundle.manifest.model["vocab_size"]
        self.pos = 0
        self.counters: Counters | None = None
        self.steps: list[tuple[int, int]] = []  # (tokens, first position) of every step run

    def close(self) -> None:
        self.device.close()

    def __enter__(self) -> "Session":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _step(self, ids: list[int]) -> np.ndarray:
        if self.pos + len(ids) > self.bundle.max_len:
            raise UnsupportedError(f"sequence length {self.pos + len(ids)} exceeds the bundle's max_len "
                                   f"{self.bundle.max_len}")
        bad = [t for t in ids if not 0 <= t < self.vocab]
        if bad:
            raise UnsupportedError(f"token ids {bad} outside the vocabulary (0..{self.vocab - 1})")
        self.device.write(self.ids["channel"], self.ids["addr"], np.asarray(ids, "<i4").tobytes())
        program = self.bundle.step(len(ids), self.pos)
        self.steps.append((len(ids), self.pos))
        counters = self.device.run(program)
        if self.counters is None:
            self.counters = counters
        else:
            self.counters.add(counters)
        self.pos += len(ids)
        raw = self.device.read(self.logits_region["channel"], self.logits_region["addr"], 4 * self.vocab)
        return np.frombuffer(raw, "<i4").copy()

    def prefill(self, ids: list[int]) -> np.ndarray:
        """Process the prompt in steps (Bundle.prompt_steps: the longest first); the last step's logits."""
        if self.pos:
            raise UnsupportedError("prefill starts a sequence; open a new Session")
        ids = list(ids)
        if not ids:
            raise UnsupportedError("an empty prompt: prefill needs at least one token")
        if len(ids) > self.bundle.max_len:
            raise UnsupportedError(f"prompt of {len(ids)} tokens exceeds the bundle's max_len {self.bundle.max_len}")
        start = 0
        for length in self.bundle.prompt_steps(len(ids)):
            logits = self._step(ids[start:start + length])
            start += length
        return logits

    def decode(self, token: int) -> np.ndarray:
        return self._step([int(token)])

    def check_request(self, prompt: list[int], max_new_tokens: int) -> None:
        """Refuse, before any step, a request that cannot fit the bundle's max_len."""
        need = len(prompt) + max(max_new_tokens, 1) - 1  # the last token is generated, never fed back
        if max_new_tokens < 0 or need > self.bundle.max_len:
            raise UnsupportedError(f"a prompt of {len(prompt)} tokens and {max_new_tokens} new tokens needs "
                                   f"{need} positions; the bundle's max_len is {self.bundle.max_len}: ask for at most "
                                   f"{max(0, self.bundle.max_len - len(prompt) + 1)} new tokens, or recompile with a "
                                   f"larger --max-len")

    def generate(self, prompt: list[int], max_new_tokens: int, sampler: "Sampler | None" = None,
                 stop: frozenset[int] = frozenset()) -> Iterator[tuple[int, np.ndarray]]:
        """Yields (token, the INT32 logits it was chosen from): greedy, or drawn by ``sampler``
        (flightc.runtime.sampling, host-side and seeded, so every backend gives the same tokens); ends after a
        token of ``stop`` (the tokenizer's EOS ids). A request that cannot fit the bundle's max_len is refused
        when this is called, before the first step."""
        self.check_request(prompt, max_new_tokens)
        return self._generate(list(prompt), max_new_tokens, sampler, stop)

    def generate_text(self, prompt: str, max_new_tokens: int, sampler: "Sampler | None" = None,
                      tokenizer: str | Path | None = None) -> Iterator[str]:
        """Text in, text out: ``prompt`` through the tokenizer of the bundle's model (or the folder ``tokenizer``),
        the answer as pieces of text as they are generated, ending at the tokenizer's EOS."""
        from flightc.runtime.text import bundle_codec

        codec = bundle_codec(self.bundle, tokenizer)
        ids = codec.encode(prompt)
        tokens = self.generate(ids, max_new_tokens, sampler, codec.eos)
        return codec.stream(t for t, _ in tokens)

    def _generate(self, prompt: list[int], max_new_tokens: int, sampler, stop) -> Iterator[tuple[int, np.ndarray]]:
        scale = self.bundle.manifest.io["logit_scale"]
        history = list(prompt)
        logits = self.prefill(prompt)
        for i in range(max_new_tokens):
            token = sampler.choose(logits, scale, history) if sampler else int(np.argmax(logits))
            history.append(token)
            yield token, logits
            if token in stop:
                return
            if i + 1 < max_new_tokens:
                logits = self.decode(token)
