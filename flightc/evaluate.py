"""``flightc eval``: task accuracy (addition) or held-out perplexity (text) of the float model vs the compiled
model on a backend."""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from typing import Callable

import numpy as np

from flightc.bundle import Bundle
from flightc.errors import UnsupportedError
from flightc.tasks.addition import AdditionTask, Problem
from flightc.tasks.text import TextTask, mean_nll


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
             progress: Callable[[int, int], None] | None = None, **options) -> EvalResult:
    """Held-out problems on the float model and on the compiled model (``options``: the backend's)."""
    from flightc.runtime.session import Session

    if bundle.manifest.model["vocab_size"] != task.vocab_size:
        raise UnsupportedError(f"bundle vocabulary {bundle.manifest.model['vocab_size']} does not match the "
                               f"task's {task.vocab_size}: is this bundle compiled from the task's model?")
    problems = task.held_out(n)
    t0 = time.perf_counter()
    fl = float_answers(ref, task, problems)
    scale = bundle.manifest.io["logit_scale"]
    compiled, zq_all, zf_all, tf = [], [], [], []
    for i, p in enumerate(problems):
        with Session(bundle, backend=backend, **options) as s:
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


@dataclass
class PerplexityResult:
    windows: int
    predicted_tokens: int
    float_perplexity: float
    compiled_perplexity: float
    top1_agreement: float  # same argmax from both models, teacher-forced
    logit_rel_error: float
    backend: str
    float_device: str
    wall_s: float

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1)


def compiled_logits(bundle: Bundle, ids: list[int], backend: str = "fsim", **options) -> np.ndarray:
    """Teacher-forced logits of a compiled model at positions 0 .. len(ids) - 2 (one decode step each), dequantized."""
    from flightc.runtime.session import Session

    with Session(bundle, backend=backend, **options) as s:
        z = [s.prefill(ids[:1])] + [s.decode(t) for t in ids[1:-1]]
    return np.stack(z).astype(np.float64) * bundle.manifest.io["logit_scale"]


def evaluate_text(bundle: Bundle, ref, task: TextTask, n: int, backend: str = "fsim",
                  progress: Callable[[int, int], None] | None = None, **options) -> PerplexityResult:
    """Held-out perplexity of the float model and of the compiled model on a backend, over ``n`` windows."""
    if bundle.manifest.model["vocab_size"] != task.vocab_size:
        raise UnsupportedError(f"bundle vocabulary {bundle.manifest.model['vocab_size']} does not match the "
                               f"task's {task.vocab_size}: is this bundle compiled from the task's model?")
    if task.seq_len > bundle.max_len:
        raise UnsupportedError(f"the task's windows of {task.seq_len} tokens exceed the bundle's max_len "
                               f"{bundle.max_len}; compile with --max-len {task.seq_len}")
    return perplexity(bundle, ref, task.held_out(n), backend, progress, **options)


def perplexity(bundle: Bundle, ref, windows: np.ndarray, backend: str = "fsim",
               progress: Callable[[int, int], None] | None = None, **options) -> PerplexityResult:
    """Perplexity of the float model and of the compiled model on a backend over token windows (each predicts
    its tokens from the ones before it)."""
    t0 = time.perf_counter()
    nll_f, nll_q, agree, zq_all, zf_all = [], [], [], [], []
    for i, ids in enumerate(windows):
        ids = ids.tolist()
        zq = compiled_logits(bundle, ids, backend, **options)
        zf = ref.logits(ids[:-1])
        nll_q.append(mean_nll(zq, np.asarray(ids[1:])))
        nll_f.append(mean_nll(zf, np.asarray(ids[1:])))
        agree.append(np.mean(np.argmax(zq, 1) == np.argmax(zf, 1)))
        zq_all.append(zq)
        zf_all.append(zf)
        if progress:
            progress(i + 1, len(windows))
    zq, zf = np.concatenate(zq_all), np.concatenate(zf_all)
    return PerplexityResult(
        windows=len(windows), predicted_tokens=int(zq.shape[0]), float_perplexity=float(np.exp(np.mean(nll_f))),
        compiled_perplexity=float(np.exp(np.mean(nll_q))), top1_agreement=float(np.mean(agree)),
        logit_rel_error=float(np.linalg.norm(zq - zf) / np.linalg.norm(zf)), backend=backend,
        float_device=ref.device, wall_s=time.perf_counter() - t0)


def reference_perplexity(integer, windows: np.ndarray, logit_scale: float) -> float:
    """Held-out perplexity of a compiled model on the integer reference (byte-identical to the simulator's
    logits), each window in one forward pass."""
    from flightc.reference.integer import IntegerModel

    nll = []
    for ids in np.atleast_2d(windows):
        z = IntegerModel(integer, len(ids)).forward_all(ids[:-1]).astype(np.float64) * logit_scale
        nll.append(mean_nll(z, ids[1:]))
    return float(np.exp(np.mean(nll)))


def reference_exact_match(integer, task: AdditionTask, problems: list[Problem]) -> float:
    """Exact-match accuracy of a compiled model's greedy answers on the integer reference."""
    from flightc.reference.integer import IntegerModel, greedy

    max_len = task.prompt_len + task.answer_len
    return float(np.mean([task.is_correct(p, greedy(IntegerModel(integer, max_len), task.prompt_ids(p),
                                                    task.answer_len)[0]) for p in problems]))


def float_perplexity(ref, windows: np.ndarray) -> float:
    return float(np.exp(np.mean([mean_nll(ref.logits(ids[:-1].tolist()), ids[1:]) for ids in np.atleast_2d(windows)])))


def sim_matches_reference(compiled, prompt: list[int], new_tokens: int = 3, check_hazards: bool = True) -> bool:
    """A compiled model's functional-simulator logits equal the integer reference's byte for byte, over a
    prompt and ``new_tokens`` greedy decode steps (``compiled``: flightc.compiler.pipeline.Compiled)."""
    from flightc.reference.integer import IntegerModel
    from flightc.runtime.session import Session

    ref = IntegerModel(compiled.integer, compiled.bundle.max_len)
    session = Session(compiled.bundle, backend="fsim", check_hazards=check_hazards)
    z_sim, z_ref = [session.prefill(prompt)], [ref.forward(prompt)]
    for _ in range(new_tokens):
        t = int(np.argmax(z_ref[-1]))
        z_sim.append(session.decode(t))
        z_ref.append(ref.forward([t]))
    return all(a.tobytes() == b.tobytes() for a, b in zip(z_sim, z_ref))


def reference_answer_nll(integer, task: AdditionTask, problems: list[Problem], logit_scale: float) -> float:
    """Mean negative log-likelihood (nats) of the correct answer digits, teacher-forced, on the integer reference:
    a finer measure than exact match for models that still answer (almost) everything right."""
    from flightc.reference.integer import IntegerModel

    seqs = task.sequences(problems)
    P = task.prompt_len
    nll = []
    for ids in seqs:
        z = IntegerModel(integer, len(ids)).forward_all(ids[:-1]).astype(np.float64) * logit_scale
        nll.append(mean_nll(z[P - 1:], ids[P:]))
    return float(np.mean(nll))


def float_answer_nll(ref, task: AdditionTask, problems: list[Problem]) -> float:
    P = task.prompt_len
    return float(np.mean([mean_nll(ref.logits(ids[:-1].tolist())[P - 1:], ids[P:])
                          for ids in task.sequences(problems)]))
