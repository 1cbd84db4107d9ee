"""Train the built-in addition model (seeded; a few minutes on a 2-core CPU).

    python -m flightc.models.addition.train [--out flightc/models/addition/weights] [--steps 2000]

Writes a Hugging Face folder (config.json, model.safetensors, tokenizer files, flightc_task.json)
and prints exact-match accuracy on the held-out problems as it goes.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from flightc.models.addition import WEIGHTS
from flightc.models.training import adamw_warmup_cosine, training_args
from flightc.tasks.addition import TASK_FILE, VOCAB, AdditionTask, save_tokenizer

CONFIG = dict(hidden_size=128, intermediate_size=384, num_hidden_layers=3, num_attention_heads=4,
              num_key_value_heads=4, max_position_embeddings=32, rms_norm_eps=1e-5, rope_theta=10000.0,
              tie_word_embeddings=False, bos_token_id=VOCAB["<bos>"], eos_token_id=VOCAB["<eos>"],
              pad_token_id=VOCAB["<pad>"])


def make_model(task: AdditionTask):
    from transformers import LlamaConfig, LlamaForCausalLM

    return LlamaForCausalLM(LlamaConfig(vocab_size=task.vocab_size, **CONFIG))


@torch.no_grad()
def exact_match(model, task: AdditionTask, problems) -> float:
    """Greedy answers (batched, no KV cache needed at this length) compared exactly."""
    model.eval()
    ids = torch.tensor([task.prompt_ids(p) for p in problems])
    for _ in range(task.answer_len):
        nxt = model(ids).logits[:, -1].argmax(-1, keepdim=True)
        ids = torch.cat([ids, nxt], dim=1)
    answers = ids[:, task.prompt_len:].tolist()
    model.train()
    return float(np.mean([task.is_correct(p, a) for p, a in zip(problems, answers)]))


def train(out: Path, steps: int, batch: int, seed: int, threads: int, lr: float = 3e-3) -> float:
    torch.manual_seed(seed)
    torch.set_num_threads(threads)
    task = AdditionTask()
    model = make_model(task)
    held = task.held_out()
    excluded = {(p.a, p.b) for p in held}
    opt, sched = adamw_warmup_cosine(model, lr, steps)
    P = task.prompt_len
    t0 = time.time()
    model.train()
    for step in range(steps):
        seqs = torch.tensor(task.sequences(task.sample(batch, seed=seed * 1_000_003 + step, exclude=excluded)))
        logits = model(seqs[:, :-1]).logits
        # loss on the answer digits only: positions P-1 .. end predict them
        target = seqs[:, P:]
        loss = torch.nn.functional.cross_entropy(logits[:, P - 1:].reshape(-1, logits.shape[-1]), target.reshape(-1))
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        if (step + 1) % 250 == 0 or step + 1 == steps:
            acc = exact_match(model, task, held[:200])
            print(f"step {step + 1:5d}  loss {loss.item():.4f}  held-out exact match {acc:.1%}  "
                  f"{time.time() - t0:.0f} s", flush=True)
    acc = exact_match(model, task, held)
    out.mkdir(parents=True, exist_ok=True)
    model.eval().save_pretrained(out, safe_serialization=True)
    save_tokenizer(out)
    (out / TASK_FILE).write_text(task.to_json() + "\n")
    print(f"held-out exact match on {len(held)} problems: {acc:.2%}; wrote {out}")
    return acc


def main() -> None:
    args = training_args(__doc__, WEIGHTS, steps=2000, batch=128)
    train(args.out, args.steps, args.batch, args.seed, args.threads, args.lr)


if __name__ == "__main__":
    main()
