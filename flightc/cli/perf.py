"""flightc perf: the modeled speed of a request on a bundle."""
from __future__ import annotations

import json

from flightc.cli.render import console, progress, table
from flightc.files import write_atomic

PROMPT, DECODE = 128, 512  # FlightLLM's shortest workload


def default_request(max_len: int, prompt: int | None, decode: int | None) -> tuple[int, int]:
    """The request to model: what was asked; where a count was not given, the default, or where the defaults do not
    fit ``max_len``, the part of it they would take (a fifth for the prompt), the other count what is left."""
    if prompt is None and decode is None:
        if PROMPT + DECODE <= max_len:
            return PROMPT, DECODE
        prompt = max(1, max_len * PROMPT // (PROMPT + DECODE))
        return prompt, max_len - prompt
    if prompt is None:
        return max(1, min(PROMPT, max_len - decode)), decode
    if decode is None:
        return prompt, max(0, min(DECODE, max_len - prompt))
    return prompt, decode


def register(sub) -> None:
    f = sub.add_parser("perf", help="model the speed of a request (prompt, then generated tokens) on a bundle")
    f.add_argument("bundle")
    f.add_argument("--prompt", type=int, help=f"prompt tokens (default {PROMPT}, or what fits the bundle's max_len)")
    f.add_argument("--decode", type=int, help=f"generated tokens (default {DECODE}, or what fits the bundle's max_len)")
    f.add_argument("--sample", type=int, default=64,
                   help="schedule every Nth position exactly and interpolate in between (1: every step)")
    f.add_argument("--trace", help="write a Chrome/Perfetto timeline of the first prompt step and the first "
                                   "decode step")
    f.add_argument("--json", help="also write the figures to this file (schema flightc.perf/1, docs/json.md)")
    f.set_defaults(func=cmd_perf)


def _phase_row(name: str, ph, cfg, decimals: int) -> tuple[str, ...]:
    return (name, f"{ph.steps}", f"{ph.seconds * 1e3:,.2f} ms", f"{ph.tokens_per_s:,.{decimals}f}",
            f"{ph.bandwidth_used(cfg):.2%}", f"{ph.macs_used(cfg):.3%}", ph.busiest_unit)


def cmd_perf(args) -> int:
    from flightc.bundle import load_bundle
    from flightc.sim.perf.workload import WorkloadModel

    b = load_bundle(args.bundle)
    cfg = b.config
    prompt, decode = default_request(b.max_len, args.prompt, args.decode)
    if (args.prompt is None and prompt != PROMPT) or (args.decode is None and decode != DECODE):
        console.print(f"modeling {prompt} prompt + {decode} generated tokens (the defaults {PROMPT} + {DECODE} "
                      f"shortened to the bundle's max_len {b.max_len}; --prompt and --decode choose)")
    args.prompt, args.decode = prompt, decode
    w = WorkloadModel(b, args.sample)
    with progress() as bar:
        task = bar.add_task("modeling", total=None)
        r = w.request(args.prompt, args.decode, lambda what: bar.update(task, description=what))
    rows = [_phase_row("prefill", r.prefill, cfg, 2)] + ([_phase_row("decode", r.decode, cfg, 3)] if r.decode else [])
    console.print(table(f"{cfg.name}, {cfg.clock_mhz:g} MHz: modeled by the performance model (checked against "
                        f"the RTL), not measured", ("phase", "steps", "time", "tokens/s", "memory bandwidth used",
                                                    "MPE MACs used", "busiest unit"), rows))
    if r.decode:
        tb = r.token_bytes
        parts = [("weight values", tb.weight_values), ("sparse indices", tb.sparse_indices),
                 ("group scales", tb.group_scales), ("requantization records", tb.requant_records),
                 ("KV cache", tb.kv_cache), ("other", tb.other), ("total", tb.total)]
        console.print(table(f"bytes one decode step streams (at position {r.roofline_position})",
                            ("what", "MB"), [(k, f"{v / 1e6:,.2f}") for k, v in parts]))
        console.print(f"HBM roofline for those bytes: {r.roofline_tokens_per_s:,.1f} tokens/s; modeled "
                      f"{r.decode.tokens_per_s:,.3f} ({r.of_roofline:.2%} of it)")
    if args.trace:
        from flightc.sim.perf.trace import write_trace

        first = b.prompt_steps(args.prompt)[0]
        steps = [(f"prefill {first} at 0", w.schedule_of(first, 0))]
        if r.decode:
            steps.append((f"decode at {args.prompt}", w.schedule_of(1, args.prompt)))
        write_trace(steps, args.trace)
        console.print(f"timeline (open in ui.perfetto.dev) written to {args.trace}")
    if args.json:
        write_atomic(args.json, json.dumps(r.to_dict(), indent=1))
    return 0
