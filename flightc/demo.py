"""``make demo``: the main job end to end on the built-in model."""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

DEMO_PROMPT = [17, 42, 99, 3, 250, 7, 128, 64]


def run_demo(model: str, hw: str, fmt: str, max_new_tokens: int, out: Path, console: Console) -> int:
    from flightc.compiler.pipeline import compile_model
    from flightc.compress.plan import CompressionPlan
    from flightc.models.builtin import is_builtin, load_torch_model
    from flightc.reference.float_ref import FloatReference, agreement
    from flightc.reference.integer import IntegerModel, greedy
    from flightc.runtime.session import Session

    out.mkdir(parents=True, exist_ok=True)
    torch_model = load_torch_model(model)
    if is_builtin(model):  # go through a Hugging Face folder, as a user's model would
        folder = out / "model"
        torch_model.save_pretrained(folder, safe_serialization=True)
        console.print(f"[bold]model[/] {model} saved as a Hugging Face folder: {folder}")
    else:
        folder = Path(model)
    prompt = DEMO_PROMPT
    max_len = len(prompt) + max_new_tokens
    t0 = time.perf_counter()
    compiled = compile_model(folder, hw, CompressionPlan.parse(fmt), max_len=max_len, max_prefill=len(prompt),
                             prefill_lengths=[len(prompt)])
    bundle_path = compiled.bundle.save(out / "model.flb")
    console.print(f"[bold]compiled[/] for {hw} with weights {fmt} in {time.perf_counter() - t0:.1f} s -> "
                  f"{bundle_path} ({bundle_path.stat().st_size / 1e3:.0f} kB); inspect it with "
                  f"`flightc info {bundle_path}`")

    session = Session(bundle_path)
    t0 = time.perf_counter()
    sim_tokens, sim_logits = [], []
    console.print(f"[bold]prompt[/] {prompt}\n[bold]simulator[/] ", end="")
    for token, logits in session.generate(prompt, max_new_tokens):
        sim_tokens.append(token)
        sim_logits.append(logits)
        console.print(str(token), end=" ")
    sim_wall = time.perf_counter() - t0
    console.print()
    int_tokens, int_logits = greedy(IntegerModel(compiled.integer, max_len), prompt, max_new_tokens)
    ref = FloatReference(torch_model)
    float_tokens = ref.generate(prompt, max_new_tokens)
    agree = agreement(ref, prompt, sim_tokens, sim_logits, compiled.bundle.manifest["io"]["logit_scale"])

    t = Table(title="greedy tokens after the prompt")
    t.add_column("#", justify="right")
    t.add_column("simulator", justify="right")
    t.add_column("integer reference", justify="right")
    t.add_column(f"float reference ({ref.device})", justify="right")
    for i, (a, b, c) in enumerate(zip(sim_tokens, int_tokens, float_tokens)):
        mark = "" if a == c else " [yellow]*[/]"
        t.add_row(str(i), str(a), str(b), f"{c}{mark}")
    console.print(t)
    exact = sim_tokens == int_tokens and all(np.array_equal(a, b) for a, b in zip(sim_logits, int_logits))
    c = session.counters
    console.print(f"simulator vs integer reference: "
                  + ("[green]bit-exact[/] (tokens and every INT32 logit)" if exact else "[red]MISMATCH[/]"))
    console.print(f"compressed vs float model: greedy agreement {agree.greedy_match:.0%}, teacher-forced "
                  f"{agree.teacher_forced_match:.0%}, logit relative error {agree.logit_rel_error:.3f}, "
                  f"cosine {agree.logit_cosine:.4f}  (* = differs from float)")
    console.print(f"simulator: {len(sim_tokens) / sim_wall:.1f} tokens/s of simulation, "
                  f"{c.total_instructions:,} instructions, {c.macs:,} MACs, "
                  f"{sum(c.hbm_read.values()) / 1e6:.1f} MB read from memory")
    return 0 if exact else 1
