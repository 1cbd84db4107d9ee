"""Train builtin:pylm1k, builtin:pylm's byte-level LLaMA trained on windows of 1,024 bytes (seeded).

    python -m flightc.models.pylm1k.train [--out flightc/models/pylm1k/weights] [--steps 3000]

The same corpus, split and optimizer as builtin:pylm (flightc/models/pylm/train.py), on windows eight times as long
and positions up to 1,024; prints held-out perplexity at 128 to 1,024 bytes of context at the end
(:func:`perplexities`).
"""
from __future__ import annotations

import math

import numpy as np
import torch

from flightc.models.pylm.train import CONFIG as PYLM_CONFIG, train
from flightc.models.pylm1k import WEIGHTS
from flightc.models.training import training_args
from flightc.tasks.text import HELDOUT_FILE, text_windows

CONTEXT = 1024
CONFIG = {**PYLM_CONFIG, "max_position_embeddings": CONTEXT}
HELDOUT_BYTES = 1 << 16  # 64 windows of 1,024
EVAL_CONTEXTS = (128, 256, 512, 1024)
TAIL = 64  # the bytes at the end of a window whose perplexity is measured at each context


@torch.no_grad()
def perplexities(model, held: np.ndarray, contexts: tuple[int, ...] = EVAL_CONTEXTS,
                 tail: int = TAIL) -> dict[int, float]:
    """Per context n: held-out perplexity of the last ``tail`` bytes of every window of ``CONTEXT`` bytes of the
    held-out text, read as the last n bytes of the window (so each predicted from n - ``tail`` to n - 1 bytes before
    it): the same bytes at every n, so what changes is only how far back the model may look."""
    if min(contexts) <= tail or max(contexts) > CONTEXT:
        raise ValueError(f"contexts {contexts}: each past the {tail} bytes measured and at most {CONTEXT}")
    x = torch.tensor(text_windows(held, CONTEXT))
    out = {}
    for n in contexts:
        total = 0.0
        for rows in x[:, CONTEXT - n:].split(8):
            logits = model(rows[:, :-1]).logits[:, -tail:]
            total += float(torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]),
                                                             rows[:, -tail:].reshape(-1), reduction="sum"))
        out[n] = math.exp(total / (x.shape[0] * tail))
    return out


def main() -> None:
    args = training_args(__doc__, WEIGHTS, steps=3000, batch=8)
    train(args.out, args.steps, args.batch, args.seed, args.threads, args.lr, CONFIG, CONTEXT, HELDOUT_BYTES,
          probe_windows=8)
    from transformers import LlamaForCausalLM

    model = LlamaForCausalLM.from_pretrained(str(args.out), dtype="float32").eval()
    held = np.frombuffer((args.out / HELDOUT_FILE).read_bytes(), np.uint8).astype(np.int64)
    for n, ppl in perplexities(model, held).items():
        print(f"held-out perplexity of the last {TAIL} bytes of a window at {n:5d} bytes of context: {ppl:.3f}")


if __name__ == "__main__":
    main()
