"""Train builtin:pylm, a byte-level LLaMA on the Python standard library's source (seeded).

    python -m flightc.models.pylm.train [--out flightc/models/pylm/weights] [--steps 2500]

Files are split into training and held-out sets by a hash of their path (flightc.tasks.text).
Writes a Hugging Face folder (config.json, model.safetensors, flightc_task.json) plus the
held-out and calibration samples, and prints held-out perplexity as it goes.
"""
from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import torch

from flightc.models.pylm import WEIGHTS
from flightc.models.training import adamw_warmup_cosine, training_args
from flightc.tasks import TASK_FILE
from flightc.tasks.text import CALIB_FILE, HELDOUT_FILE, TextTask, ascii_bytes, is_held_out, stdlib_files

CONFIG = dict(hidden_size=128, intermediate_size=384, num_hidden_layers=4, num_attention_heads=4,
              num_key_value_heads=2, max_position_embeddings=128, rms_norm_eps=1e-5, rope_theta=10000.0,
              tie_word_embeddings=False, bos_token_id=None, eos_token_id=None, pad_token_id=None)
CONTEXT = 128
HELDOUT_BYTES = 1 << 15
CALIB_BYTES = 1 << 13


def corpus() -> tuple[np.ndarray, np.ndarray]:
    """(training bytes, held-out bytes), files joined in path order."""
    train, held = [], []
    for path in stdlib_files():
        (held if is_held_out(path) else train).append(ascii_bytes(path.read_text(errors="ignore")))
    as_array = lambda parts: np.frombuffer(b"\n".join(parts), np.uint8).astype(np.int64)  # noqa: E731
    return as_array(train), as_array(held)


def make_model(vocab_size: int, config: dict | None = None):
    from transformers import LlamaConfig, LlamaForCausalLM

    return LlamaForCausalLM(LlamaConfig(vocab_size=vocab_size, **(config or CONFIG)))


@torch.no_grad()
def held_out_nll(model, windows: np.ndarray) -> float:
    model.eval()
    x = torch.tensor(windows)
    logits = model(x[:, :-1]).logits
    nll = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), x[:, 1:].reshape(-1))
    model.train()
    return float(nll)


def train(out: Path, steps: int, batch: int, seed: int, threads: int, lr: float, config: dict | None = None,
          context: int = CONTEXT, heldout_bytes: int = HELDOUT_BYTES, probe_windows: int = 64) -> float:
    """Train from ``seed`` on windows of ``context`` bytes and write the model's folder; the held-out mean NLL over
    the first ``heldout_bytes`` of the held-out text (``probe_windows`` of them printed as it goes)."""
    torch.manual_seed(seed)
    torch.set_num_threads(threads)
    rng = np.random.default_rng(seed)
    train_bytes, held_bytes = corpus()
    print(f"corpus: {len(train_bytes) / 1e6:.1f} MB training, {len(held_bytes) / 1e6:.2f} MB held out", flush=True)
    task = TextTask(out)
    model = make_model(task.vocab_size, config)
    probe = held_bytes[: (heldout_bytes // context) * context].reshape(-1, context)
    opt, sched = adamw_warmup_cosine(model, lr, steps)
    t0 = time.time()
    model.train()
    for step in range(steps):
        starts = rng.integers(0, len(train_bytes) - context - 1, size=batch)
        seqs = torch.tensor(np.stack([train_bytes[s:s + context + 1] for s in starts]))
        logits = model(seqs[:, :-1]).logits
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), seqs[:, 1:].reshape(-1))
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        if (step + 1) % 250 == 0 or step + 1 == steps:
            nll = held_out_nll(model, probe[:probe_windows])
            print(f"step {step + 1:5d}  loss {loss.item():.3f}  held-out {nll:.3f} nats/byte "
                  f"(ppl {math.exp(nll):.2f})  {time.time() - t0:.0f} s", flush=True)
    nll = held_out_nll(model, probe)
    out.mkdir(parents=True, exist_ok=True)
    model.eval().save_pretrained(out, safe_serialization=True)
    (out / HELDOUT_FILE).write_bytes(bytes(held_bytes[:heldout_bytes].astype(np.uint8)))
    start = int(rng.integers(0, len(train_bytes) - CALIB_BYTES))
    (out / CALIB_FILE).write_bytes(bytes(train_bytes[start:start + CALIB_BYTES].astype(np.uint8)))
    (out / TASK_FILE).write_text(task.to_json() + "\n")
    print(f"held-out perplexity over {len(probe)} windows of {context} bytes: {math.exp(nll):.3f}; wrote {out}")
    return nll


def main() -> None:
    args = training_args(__doc__, WEIGHTS, steps=2500, batch=32)
    train(args.out, args.steps, args.batch, args.seed, args.threads, args.lr)


if __name__ == "__main__":
    main()
