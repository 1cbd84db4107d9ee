"""flightc compile: a model to a program bundle."""
from __future__ import annotations

import os
import time

from rich.table import Table

from flightc.cli.render import console, one_of, presets_help, print_cores, print_layers, progress
from flightc.errors import FlightcError


def register(sub) -> None:
    from flightc.compress.allocate import BudgetBits
    from flightc.compress.method import Equalizer, Solver
    from flightc.isa.table import KV_BITS, SPARSITY_NM, WEIGHT_BITS, Sparsity
    from flightc.models.builtin import BUILTIN

    models = ", ".join(f"builtin:{n}" for n in BUILTIN)
    patterns = [f"{n}:{m}" for s, (n, m) in SPARSITY_NM.items() if s is not Sparsity.DENSE]
    solvers = [s.value for s in Solver]
    methods = ", ".join(solvers[:2] + [f"{Solver.GPTQ.value}-act"] + solvers[2:]
                        + [e.value for e in Equalizer if e is not Equalizer.NONE])
    c = sub.add_parser("compile", help="compile a model to a program bundle",
                       epilog="The bundle's memory images grow in temporary files in $TMPDIR (about the bundle's size: "
                              "4.7 GB for LLaMA2-7B W4 g128 8:16 at max_len 4096); where /tmp is a tmpfs, point TMPDIR "
                              "at a disk.")
    c.add_argument("model", help=f"Hugging Face model folder, an .onnx file (torch.onnx.export with dynamo=True), a "
                                   f".pt2 file (torch.export.save), or one of {models}")
    c.add_argument("--hw", default="tiny", help=presets_help())
    c.add_argument("--format", help="default weight format, e.g. w8, w4g128, w4g128s8:16, w2g64s2:4")
    c.add_argument("--bits", type=int, default=8, help=f"weight bits ({', '.join(map(str, WEIGHT_BITS.values()))}) "
                                                       "when --format is not given")
    c.add_argument("--group", type=int, default=0, help="group size along K for sub-8-bit weights (with "
                                                        "--bits-budget: default 128)")
    c.add_argument("--sparsity", default="dense", help=f"N:M pattern: {one_of(patterns + ['dense'])}; with "
                                                         "--bits-budget also auto (chosen per layer)")
    c.add_argument("--method", default="rtn",
                   help=f"how weights are compressed: {methods}, or EQUALIZER+SOLVER such as awq+gptq, "
                        "smoothquant+sparsegpt (calibrated methods use --calib)")
    c.add_argument("--calib", help="calibration data: a text file (tokenized by the model's tokenizer, or as bytes "
                                   "for byte-level models) or a .npy of token ids [sequences, length]; default: the "
                                   "model's task, else random tokens")
    c.add_argument("--calib-count", type=int, default=8, help="calibration sequences taken from --calib")
    c.add_argument("--calib-len", type=int, default=64, help="tokens per calibration sequence from --calib")
    c.add_argument("--bits-budget", type=float, metavar="BITS",
                   help="choose each linear layer's bits (and with --sparsity auto its N:16) from measured "
                        "sensitivity so the average bits per weight (as --budget-counts says) is at most BITS, "
                        "e.g. 3.5")
    c.add_argument("--budget-counts", choices=[b.value for b in BudgetBits], default=BudgetBits.STORED.value,
                   help="what --bits-budget counts a weight: stored (default: its value's bits, the positions' "
                        "metadata and the group multipliers, what it takes in memory) or values (its value's bits "
                        "only, FlightLLM's '3.5-bit')")
    c.add_argument("--density", type=float, help="with --sparsity auto: the average kept fraction, e.g. 0.5")
    c.add_argument("--kv-bits", type=int, default=8, choices=KV_BITS,
                   help="KV cache width in memory (4: INT4, packed two per byte by ST.pack4)")
    c.add_argument("--layer", action="append", metavar="PATTERN=FORMAT",
                   help="per-layer override, e.g. '*.down_proj=w8' (repeatable; later wins)")
    c.add_argument("--max-len", type=int, help="longest sequence (prompt + generated; default: 64, or the model's "
                                                "max_position_embeddings if fewer)")
    c.add_argument("--max-prefill", type=int,
                   help="most prompt tokens one step processes; longer prompts run as several steps (default: the "
                        "longest --prefill-lens, else the longest of 16, 8, 4, 2, 1 that fits the preset's buffers)")
    c.add_argument("--prefill-lens", help="program templates for these step lengths, e.g. 4,8 (default: "
                                          "max-prefill; decode's 1 is always built); prompts run as steps of "
                                          "the longest that fit")
    c.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1),
                   help="processes that lower program templates, and threads that quantize layers with round to "
                        "nearest (default: up to 2)")
    c.add_argument("--bucket", type=int, help="also cut each template's position range every N positions "
                                              "(FlightLLM-style buckets; default: one range wherever it fits)")
    c.add_argument("--random-weights", type=int, metavar="SEED",
                   help="ignore any checkpoint: seeded random weights, produced layer by layer (a config.json "
                        "is enough; see flightc/models/configs/)")
    c.add_argument("--programs-only", action="store_true",
                   help="programs and memory layout without quantizing or packing any weight (fast at 7B scale); "
                        "for the performance model only (`flightc perf`)")
    c.add_argument("--stop-after", metavar="PASS", help="stop after this pass and show its graph IR (each op kind's "
                                                         "nodes and attributes) instead of writing a bundle: one of "
                                                         "frontend, equalize, compress, calibrate, integerize, fuse")
    c.add_argument("-o", "--output", help="bundle file to write (.flb); required unless --stop-after")
    c.set_defaults(func=cmd_compile)


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
    from flightc.compress.allocate import BitBudget, BudgetBits

    if args.bits_budget is None:
        if args.density is not None or args.sparsity == "auto":
            raise FlightcError("--density and --sparsity auto choose formats per layer: they need --bits-budget")
        return None
    if args.format:
        raise FlightcError("--bits-budget chooses each layer's format: drop --format (--layer overrides still apply)")
    sparsity = "dense" if args.sparsity in ("dense", "16:16") else args.sparsity
    return BitBudget(args.bits_budget, sparsity, 1.0 if args.density is None else args.density, args.group or 128,
                     BudgetBits(args.budget_counts))


def _calibration(args):
    """--calib FILE: token sequences for calibration (None: the model's task, or random tokens)."""
    if not args.calib:
        return None
    from flightc.compress.calibration_data import calibration_from_file
    from flightc.models.builtin import model_input

    return calibration_from_file(args.calib, model_input(args.model), args.calib_count, args.calib_len)


def cmd_compile(args) -> int:
    from flightc.compiler.pipeline import STEPS, compile_model
    from flightc.compress.method import Method
    from flightc.files import output_folder
    from flightc.models.builtin import model_input

    labels = {step.name: step.label for step in STEPS}
    plan = _plan(args)
    if not args.output and not args.stop_after:
        raise FlightcError("flightc compile needs -o BUNDLE.flb (or --stop-after PASS to look at a pass's graph)")
    for flag, value in (("--max-len", args.max_len), ("--max-prefill", args.max_prefill)):
        if value is not None and value < 1:
            raise FlightcError(f"{flag} {value}: at least 1 token")
    if args.output:
        output_folder(args.output)  # before the compile, not after it
    t0 = time.perf_counter()
    with progress() as bar:
        task = bar.add_task("compiling", total=None)

        def report(stage, done, total):
            label = labels[stage].format(method=args.method)
            bar.update(task, description=label, completed=done, total=total if total > 1 else None)

        lengths = [int(x) for x in args.prefill_lens.split(",")] if args.prefill_lens else None
        compiled = compile_model(model_input(args.model), args.hw, plan, max_len=args.max_len,
                                 max_prefill=args.max_prefill, progress=report, prefill_lengths=lengths,
                                 random_weights=args.random_weights, bucket=args.bucket,
                                 jobs=args.jobs, weights=not args.programs_only, source=str(args.model),
                                 method=Method.parse(args.method), budget=_budget(args),
                                 calibration=_calibration(args), keep_integer=False, stop_after=args.stop_after)
    if args.stop_after:
        _print_graph(compiled, args.stop_after)
        return 0
    path = compiled.bundle.save(args.output)
    m = compiled.bundle.manifest
    console.print(f"[green]wrote[/] {path} ({path.stat().st_size / 1e6:.2f} MB) for [bold]{m.config['name']}[/] "
                  f"(config {m.config_hash}, ISA {m.isa_version}) in {time.perf_counter() - t0:.1f} s")
    st = m.storage
    console.print(f"instructions: {len(m.programs)} templates, {st['template_bytes'] / 1e3:,.1f} kB + "
                  f"{st['patch_bytes'] / 1e3:,.1f} kB of patch tables serve every length up to {m.max_len} "
                  f"(one program per length would take {st['per_length_bytes'] / 1e6:,.1f} MB)")
    chosen = [f"max_len {m.max_len}" for _ in [0] if args.max_len is None]
    chosen += [f"max_prefill {m.max_prefill}" for _ in [0] if args.max_prefill is None]
    if chosen:
        console.print(f"chose {' and '.join(chosen)} (--max-len and --max-prefill override)")
    if compiled.allocation:
        _print_allocation(compiled.allocation)
    print_layers(m)
    print_cores(m)
    return 0


def _print_allocation(a) -> None:
    t = Table(title=f"bit allocation: budget {a.budget.bits:g} {a.budget.counts.value} bits/weight, sparsity "
                    f"{a.budget.sparsity}"
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


def _print_graph(graph, after: str) -> None:
    """A pass's graph IR: each op kind's node count and the attributes its nodes carry (docs/ir.md says what each
    means)."""
    from rich.table import Table

    from flightc.ir.schema import verify

    verify(graph, after)
    table = Table(title=f"graph IR after pass {after}: stage {graph.stage.value}, {len(graph)} nodes "
                        f"({graph.spec.family}, {graph.spec.num_layers} layers)")
    for col in ("op", "nodes", "attributes (docs/ir.md)"):
        table.add_column(col)
    kinds: dict = {}
    for name in graph.order():
        node = graph.node(name)
        count, keys = kinds.get(node["op"], (0, set()))
        kinds[node["op"]] = (count + 1, keys | set(node) - {"op", "inputs", "layer"})
    for op, (count, keys) in kinds.items():
        table.add_row(op.value, str(count), ", ".join(sorted(keys)) or "-")
    console.print(table)
