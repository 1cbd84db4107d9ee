"""``flightc eval``: task accuracy of the float model vs the compiled model on a backend."""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from typing import Callable

import numpy as np

from flightc.bundle import Bundle
from flightc.errors import UnsupportedError
from flightc.tasks.addition import AdditionTask, Problem


@dataclass
class EvalResult:
    problems: int
    float_exact_match: float
    compiled_exact_match: float
    answer_agreement: float  # same answer from both
    digit_agreement: float  # same token at each answer position (greedy, each on its own)
    teacher_forced_agreement: float  # float argmax == compiled token, on the compiled model's tokens
    logit_rel_error: float  # ||z_q - z_f|| / ||z_f|| at the answer positions, teacher-forced
    backend: str
    float_device: str
    wall_s: float
    examples: list[dict] = field(default_factory=list)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1)


def float_answers(ref, task: AdditionTask, problems: list[Problem]) -> list[list[int]]:
    """Greedy answers of the float model, batched (all prompts have the same length)."""
    import torch

    with torch.no_grad():
        ids = torch.tensor([task.prompt_ids(p) for p in problems], device=ref.device)
        for _ in range(task.answer_len):
            nxt = ref.model(ids).logits[:, -1].argmax(-1, keepdim=True)
            ids = torch.cat([ids, nxt], dim=1)
    return ids[:, task.prompt_len:].cpu().tolist()


def evaluate(bundle: Bundle, ref, task: AdditionTask, n: int, backend: str = "fsim",
             progress: Callable[[int, int], None] | None = None, check_hazards: bool = False) -> EvalResult:
    from flightc.runtime.session import Session

    if bundle.manifest["model"]["vocab_size"] != task.vocab_size:
        raise UnsupportedError(f"bundle vocabulary {bundle.manifest['model']['vocab_size']} does not match the "
                               f"task's {task.vocab_size}: is this bundle compiled from the task's model?")
    problems = task.held_out(n)
    t0 = time.perf_counter()
    fl = float_answers(ref, task, problems)
    scale = bundle.manifest["io"]["logit_scale"]
    compiled, zq_all, zf_all, tf = [], [], [], []
    for i, p in enumerate(problems):
        s = Session(bundle, backend=backend, check_hazards=check_hazards)
        out = list(s.generate(task.prompt_ids(p), task.answer_len))
        toks = [t for t, _ in out]
        compiled.append(toks)
        zq = np.stack([z for _, z in out]).astype(np.float64) * scale
        zf = ref.logits(task.prompt_ids(p) + toks[:-1])[task.prompt_len - 1:]
        zq_all.append(zq)
        zf_all.append(zf)
        tf.append(np.mean(np.argmax(zf, axis=1) == np.asarray(toks)))
        if progress:
            progress(i + 1, len(problems))
    zq, zf = np.concatenate(zq_all), np.concatenate(zf_all)
    examples = [{"prompt": task.prompt_text(p), "expected": p.answer, "float": task.read_answer(f),
                 "compiled": task.read_answer(c)} for p, f, c in zip(problems[:10], fl, compiled)]
    return EvalResult(
        problems=len(problems),
        float_exact_match=float(np.mean([task.is_correct(p, a) for p, a in zip(problems, fl)])),
        compiled_exact_match=float(np.mean([task.is_correct(p, a) for p, a in zip(problems, compiled)])),
        answer_agreement=float(np.mean([a == b for a, b in zip(fl, compiled)])),
        digit_agreement=float(np.mean([x == y for a, b in zip(fl, compiled) for x, y in zip(a, b)])),
        teacher_forced_agreement=float(np.mean(tf)),
        logit_rel_error=float(np.linalg.norm(zq - zf) / np.linalg.norm(zf)),
        backend=backend, float_device=ref.device, wall_s=time.perf_counter() - t0, examples=examples)
