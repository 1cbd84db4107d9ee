"""``make demo``: the main job end to end on the built-in model.

With the trained addition model: compile it in each weight format, answer a few held-out
problems on the functional simulator, and print exact-match accuracy of the float model and of
each compiled model. With a model without a task (a random built-in): greedy tokens from the
simulator next to the integer reference's and the float model's.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

RANDOM_PROMPT = [17, 42, 99, 3, 250, 7, 128, 64]


def run_demo(model: str, hw: str, formats: list[str], n: int, out: Path, console: Console) -> int:
    from flightc.models.builtin import model_task

    out.mkdir(parents=True, exist_ok=True)
    task = model_task(model)
    if task is None:
        return _tokens_demo(model, hw, formats[0], out, console)
    return _task_demo(model, hw, formats, n, out, console, task)


def _compile(model: str, hw: str, fmt: str, out: Path, console: Console, **kw):
    from flightc.compiler.pipeline import compile_model
    from flightc.compress.plan import CompressionPlan
    from flightc.models.builtin import model_input

    t0 = time.perf_counter()
    compiled = compile_model(model_input(model), hw, CompressionPlan.parse(fmt), **kw)
    path = compiled.bundle.save(out / f"model-{fmt.replace(':', '_')}.flb")
    console.print(f"[bold]compiled[/] {model} for {hw} with weights {fmt} in {time.perf_counter() - t0:.1f} s -> "
                  f"{path} ({path.stat().st_size / 1e3:.0f} kB)")
    return compiled


def _task_demo(model: str, hw: str, formats: list[str], n: int, out: Path, console: Console, task) -> int:
    from flightc.evaluate import evaluate, float_answers
    from flightc.models.builtin import load_torch_model
    from flightc.reference.float_ref import FloatReference
    from flightc.runtime.session import Session

    ref = FloatReference(load_torch_model(model))
    max_len = task.prompt_len + task.answer_len
    bundles = {fmt: _compile(model, hw, fmt, out, console, max_len=max_len, max_prefill=task.prompt_len,
                             prefill_lengths=[task.prompt_len]).bundle for fmt in formats}
    shown = task.held_out(n)[:6]
    t = Table(title="held-out problems answered on the functional simulator (answers are written least "
                    "significant digit first; shown here as numbers)")
    t.add_column("problem")
    t.add_column("expected", justify="right")
    t.add_column(f"float ({ref.device})", justify="right")
    for fmt in formats:
        t.add_column(f"{fmt} on fsim", justify="right")
    fl = float_answers(ref, task, shown)
    for p, f in zip(shown, fl):
        row = [task.prompt_text(p), str(p.answer), _mark(task.read_answer(f), p.answer)]
        for fmt in formats:
            toks = [tok for tok, _ in Session(bundles[fmt]).generate(task.prompt_ids(p), task.answer_len)]
            row.append(_mark(task.read_answer(toks), p.answer))
        t.add_row(*row)
    console.print(t)
    acc = Table(title=f"exact match on {n} held-out problems")
    acc.add_column("model")
    acc.add_column("exact match", justify="right")
    acc.add_column("same answer as float", justify="right")
    acc.add_column("logit rel. error", justify="right")
    for i, fmt in enumerate(formats):
        r = evaluate(bundles[fmt], ref, task, n, check_hazards=False)
        if i == 0:
            acc.add_row(f"float model ({r.float_device})", f"{r.float_exact_match:.1%}", "", "")
        acc.add_row(f"{fmt} on the simulator", f"{r.compiled_exact_match:.1%}", f"{r.answer_agreement:.1%}",
                    f"{r.logit_rel_error:.3f}")
    console.print(acc)
    console.print("more: `flightc eval out/demo/model-w8.flb -n 500`, `flightc info …`, `flightc disasm …`")
    return 0


def _mark(got, expected) -> str:
    return f"{got}" if got == expected else f"[red]{got}[/]"


def _tokens_demo(model: str, hw: str, fmt: str, out: Path, console: Console) -> int:
    from flightc.models.builtin import load_torch_model
    from flightc.reference.float_ref import FloatReference, agreement
    from flightc.reference.integer import IntegerModel, greedy
    from flightc.runtime.session import Session

    prompt, new = RANDOM_PROMPT, 24
    compiled = _compile(model, hw, fmt, out, console, max_len=len(prompt) + new, max_prefill=len(prompt),
                        prefill_lengths=[len(prompt)])
    session = Session(compiled.bundle)
    sim = list(session.generate(prompt, new))
    int_tokens, int_logits = greedy(IntegerModel(compiled.integer, len(prompt) + new), prompt, new)
    ref = FloatReference(load_torch_model(model))
    float_tokens = ref.generate(prompt, new)
    t = Table(title=f"greedy tokens after the prompt {prompt}")
    for col in ("#", "simulator", "integer reference", f"float reference ({ref.device})"):
        t.add_column(col, justify="right")
    for i, ((a, _), b, c) in enumerate(zip(sim, int_tokens, float_tokens)):
        t.add_row(str(i), str(a), str(b), str(c) if a == c else f"[yellow]{c}[/]")
    console.print(t)
    exact = [a for a, _ in sim] == int_tokens and all(np.array_equal(z, r) for (_, z), r in zip(sim, int_logits))
    agree = agreement(ref, prompt, [a for a, _ in sim], [z for _, z in sim], compiled.bundle.manifest["io"]["logit_scale"])
    console.print("simulator vs integer reference: " + ("[green]bit-exact[/]" if exact else "[red]MISMATCH[/]"))
    console.print(f"compressed vs float: teacher-forced agreement {agree.teacher_forced_match:.0%}, "
                  f"logit relative error {agree.logit_rel_error:.3f}")
    return 0 if exact else 1
