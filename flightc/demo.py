"""``make demo``: the main job end to end on the built-in model.

With the trained addition model: compile it in each weight format, answer a few held-out
problems on the functional simulator, and print exact-match accuracy of the float model and of
each compiled model; then answer one problem on the generated RTL under Verilator (cycles
measured), and model the decode speed of the built-in model and of LLaMA2-7B (programs only, no
weights; one- and two-layer copies extrapolated to its 32 layers) on the U280 against the HBM roofline
and FlightLLM's measured 55 tokens/s, with the resources the kernels need. With a model without a task
(a random built-in): greedy tokens from the simulator next to the integer reference's and the float model's.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

RANDOM_PROMPT = [17, 42, 99, 3, 250, 7, 128, 64]


PARTS_SHOWN = ("fsim", "rtl", "speed")  # what the demo shows, in order
LLAMA_7B = Path(__file__).resolve().parent / "models" / "configs" / "llama2-7b"


def run_demo(model: str, hw: str, formats: list[str], n: int, out: Path, console: Console,
             parts: tuple[str, ...] = PARTS_SHOWN) -> int:
    from flightc.errors import FlightcError
    from flightc.models.builtin import model_task

    unknown = sorted(set(parts) - set(PARTS_SHOWN))
    if unknown:
        raise FlightcError(f"--parts {','.join(unknown)}: choose among {','.join(PARTS_SHOWN)}")
    out.mkdir(parents=True, exist_ok=True)
    task = model_task(model)
    if task is None:
        return _tokens_demo(model, hw, formats[0], out, console)
    bundles = _task_demo(model, hw, formats, n, out, console, task)
    bundle = bundles[formats[0]]
    if "rtl" in parts:
        _rtl_answer(bundle, task, console)
    if "speed" in parts:
        _speed_and_resources(model, bundle, task, console)
    console.print("more: `flightc eval out/demo/model-w8.flb -n 500`, `flightc run out/demo/model-w8.flb --prompt "
                  "1234+5678= --max-new-tokens 5`, `flightc info …`, `flightc disasm …`")
    return 0


def _compile(model: str, hw: str, fmt: str, out: Path, console: Console, stem: str = "model", **kw):
    from flightc.compiler.pipeline import compile_model
    from flightc.compress.plan import CompressionPlan
    from flightc.models.builtin import model_input

    t0 = time.perf_counter()
    compiled = compile_model(model_input(model), hw, CompressionPlan.parse(fmt), **kw)
    path = compiled.bundle.save(out / f"{stem}-{fmt.replace(':', '_')}.flb")
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
    return bundles


def _rtl_answer(bundle, task, console: Console) -> None:
    """One held-out problem on the generated Verilog under Verilator: the answer and the cycles it took."""
    from flightc.runtime.session import Session

    p = task.held_out(1)[0]
    cfg = bundle.config
    with console.status("building the kernel's Verilog with Verilator (the first time takes a few minutes; "
                        "cached in ~/.cache/flightc/rtl) and answering on it"):
        with Session(bundle, backend="rtl") as s:
            tokens = []
            for token, _ in s.generate(task.prompt_ids(p), task.answer_len):
                if not tokens:  # the first token comes from the prompt step alone
                    prompt_cycles = s.counters.cycles["cycles"]
                tokens.append(token)
            decode_cycles = (s.counters.cycles["cycles"] - prompt_cycles) / max(1, task.answer_len - 1)
    t = Table(title=f"{task.prompt_text(p)} on the generated RTL ({cfg.name} preset, Verilator; cycles measured "
                    f"by the kernel's counters)")
    for col in ("expected", "RTL answer", "prompt cycles", "cycles per decode token",
                f"decode tokens/s at {cfg.clock_mhz:g} MHz"):
        t.add_column(col, justify="right")
    t.add_row(str(p.answer), _mark(task.read_answer(tokens), p.answer), f"{prompt_cycles:,}", f"{decode_cycles:,.0f}",
              f"{cfg.clock_mhz * 1e6 / decode_cycles:,.1f}")
    console.print(t)


def _speed_and_resources(model: str, bundle, task, console: Console) -> None:
    """Decode speed modeled by the performance model (the RTL's timing contract) for the built-in model on its
    preset and for LLaMA2-7B on the U280, against the HBM roofline and FlightLLM; then the
    modeled resources of those kernels against the U280."""
    from flightc.compiler.pipeline import compile_model
    from flightc.compress.plan import CompressionPlan
    from flightc.config import PRESETS
    from flightc.dse.evaluate import layer_copies, resolve_model
    from flightc.dse.resources import estimate_resources
    from flightc.parts import FLIGHTLLM_U280, part
    from flightc.sim.perf.workload import WorkloadModel, extrapolated

    u280 = PRESETS["u280"]
    _, layers, _ = resolve_model(LLAMA_7B)
    t0 = time.perf_counter()
    with console.status("compiling and modeling LLaMA2-7B for the U280 (programs only: no weights) on one- and "
                        "two-layer copies"):
        with layer_copies(LLAMA_7B, (1, 2)) as copies:
            reports = [WorkloadModel(compile_model(c, "u280", CompressionPlan.parse("w4g128s8:16"), max_len=64,
                                                   max_prefill=4, weights=False, random_weights=0).bundle)
                       .request(16, 32) for c in copies]
        llama = extrapolated(*reports, layers)
    console.print(f"[bold]modeled[/] LLaMA2-7B on u280 from one- and two-layer copies, extrapolated to its {layers} "
                  f"layers (bytes exactly, times within 0.1% of a full compile: tests/test_dse.py) in "
                  f"{time.perf_counter() - t0:.1f} s")
    rows = []
    with console.status("modeling decode"):
        for name, r, prompt, new in ((model, WorkloadModel(bundle).request(task.prompt_len, task.answer_len),
                                      task.prompt_len, task.answer_len),
                                     ("LLaMA2-7B (W4 g128 8:16, stored dense on u280)", llama, 16, 32)):
            flight = (f"{FLIGHTLLM_U280['decode_tokens_per_s']:g} (measured)" if r is llama else "-")
            rows.append((name, r.cfg.name, f"{prompt} + {new}", f"{r.decode.tokens_per_s:,.1f}",
                         f"{r.roofline_tokens_per_s:,.1f}", f"{r.of_roofline:.1%}", flight))
    t = Table(title="decode speed, modeled by the performance model (checked against the RTL in `make test`), not "
                    "measured on a board")
    for col in ("model", "hw", "prompt + generated", "tokens/s", "HBM roofline tokens/s", "of roofline",
                "FlightLLM on U280 tokens/s"):
        t.add_column(col, justify="right" if col != "model" else "left")
    for row in rows:
        t.add_row(*row)
    console.print(t)
    p = part("u280")
    cap = p.capacity()
    kinds = ("DSP", "LUT", "BRAM36", "URAM")
    estimates = {cfg.name: estimate_resources(cfg).as_dict() for cfg in (bundle.config, u280)}
    share = ", ".join(f"{k} {estimates[u280.name][k] / cap[k]:.0%}" for k in kinds if cap.get(k))
    res = Table(title=f"FPGA resources, modeled (yosys-calibrated resource model): the u280 kernel takes {share} of "
                      "the U280")
    for col in ("kernel", "DSP48E2", *kinds[1:]):
        res.add_column(col, justify="right" if col != "kernel" else "left")
    cores = f"{u280.num_cores} core{'s' if u280.num_cores > 1 else ''}"
    for name, cfg in ((bundle.config.name, bundle.config), (f"u280 ({cores})", u280)):
        res.add_row(name, *(f"{estimates[cfg.name][k]:,}" for k in kinds))
    res.add_row("U280 part", *(f"{cap[k]:,}" if cap.get(k) else "-" for k in kinds))
    res.add_row("FlightLLM on U280 (measured)", *(f"{FLIGHTLLM_U280[k]:,}" for k in kinds))
    console.print(res)


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
    agree = agreement(ref, prompt, [a for a, _ in sim], [z for _, z in sim], compiled.bundle.manifest.io["logit_scale"])
    console.print("simulator vs integer reference: " + ("[green]bit-exact[/]" if exact else "[red]MISMATCH[/]"))
    console.print(f"compressed vs float: teacher-forced agreement {agree.teacher_forced_match:.0%}, "
                  f"logit relative error {agree.logit_rel_error:.3f}")
    return 0 if exact else 1
