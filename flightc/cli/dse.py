"""flightc dse: the Pareto front of modeled speed against FPGA resources for a model on a part."""
from __future__ import annotations

import os
from pathlib import Path

from rich.markup import escape
from rich.table import Table

from flightc.cli.render import console, parts_help, progress


def register(sub) -> None:
    from flightc.dse.search import OBJECTIVES
    from flightc.models.builtin import DEFAULT_MODEL

    x = sub.add_parser("dse", help="design-space exploration: Pareto front of modeled speed against FPGA "
                                   "resources for a model on a part; writes tables, plots and config files")
    x.add_argument("--model", default=DEFAULT_MODEL,
                   help=f"model: a name in flightc/models/configs (llama2-7b, opt-6.7b), a Hugging Face folder or "
                        f"builtin:NAME (default {DEFAULT_MODEL})")
    x.add_argument("--part", default="u280", help=f"FPGA part: {parts_help()}")
    x.add_argument("--format", default="w4g128s8:16", help="weight format of the model's linear layers (the LM "
                                                           "head keeps W8)")
    x.add_argument("--objectives", default="tokens_per_s,dsp",
                   help=f"comma-separated: {', '.join(OBJECTIVES)}")
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


def cmd_dse(args) -> int:
    from flightc.dse import default_workload, run_dse
    from flightc.dse.clock import timing_estimate
    from flightc.dse.report import COLUMNS, row
    from flightc.dse.space import SearchSpace

    name = Path(str(args.model).replace("builtin:", "")).name
    out = Path(args.out or f"out/dse-{name}-{args.part}")
    workload = default_workload(args.model, args.prompt, args.decode, args.max_prefill)
    overrides = SearchSpace.load_overrides(args.space) if args.space else None
    best: dict = {}
    with progress() as bar:
        task = bar.add_task("exploring", total=args.trials)

        def report(done, total, trial):
            r = trial.result if trial else None
            if r is not None and r.feasible and r.decode_tokens_per_s > best.get("tps", 0.0):
                best.update(tps=r.decode_tokens_per_s, dsp=r.resources["DSP"], n=trial.number)
            label = (f"exploring; best {best['tps']:.4g} tok/s at {best['dsp']:,} DSP (trial {best['n']})"
                     if best else "exploring")
            bar.update(task, completed=done, total=total, description=label)

        result = run_dse(args.model, args.part, args.format, args.objectives, args.trials, out, args.seed, args.jobs,
                         args.executor, args.address, args.storage, workload, args.max_cores, overrides,
                         args.sampler, args.population, report,
                         status=lambda text: bar.update(task, description=text))
    m = result.minimums
    console.print(f"{args.model}, prompt {workload.prompt} + decode {workload.decode}: needs at least "
                  + ", ".join(f"{k.split('_')[0].upper()} {v} KiB" for k, v in m.items() if k.endswith("_kib"))
                  + f" of buffers and {m['memory_bytes'] / 2**30:.2f} GiB off chip; {result.space.size():,} "
                    f"configurations in the space", highlight=False)
    clocks = result.space.choices["clock_mhz"]
    est = timing_estimate()
    console.print(f"clocks searched: {', '.join(f'{c:g}' for c in clocks)} MHz (timing estimate: {est.depth:.2f} logic "
                  f"levels in {est.where}; {', '.join(f'{c:g}' for c in clocks if not est.supports(c)) or 'none'}"
                  f" past it)", highlight=False)
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
