"""flightc run (alias sim): generate tokens from a bundle on a backend, optionally beside the float model."""
from __future__ import annotations

import argparse
import json
import time

from flightc.cli.backend_options import add_backend_choice, add_backend_flags, add_sampling_flags, given_options, \
    sampler_of
from flightc.cli.render import console, table
from flightc.errors import FlightcError
from flightc.files import write_atomic

NEW_TOKENS = 16  # run's default number of tokens to generate


def register(sub) -> None:
    from flightc.runtime.backends import backends_epilog

    s = sub.add_parser("run", aliases=["sim"], help="generate tokens from a bundle on a backend",
                       epilog=backends_epilog(), formatter_class=argparse.RawDescriptionHelpFormatter)
    s.add_argument("bundle")
    given = s.add_mutually_exclusive_group(required=True)
    given.add_argument("--prompt", help="prompt text, through the model's tokenizer; the answer is printed as text")
    given.add_argument("--prompt-ids", help="token ids, e.g. 1,2,3")
    s.add_argument("--tokenizer", help="whose tokenizer to use: a folder of Hugging Face tokenizer files or a model "
                                       "(builtin:NAME); default: the model the bundle was compiled from")
    s.add_argument("--max-new-tokens", type=int, help=f"most tokens to generate (fewer at an EOS token; default "
                                                      f"{NEW_TOKENS}, or as many as the bundle's max_len leaves)")
    add_sampling_flags(s)
    add_backend_choice(s)
    add_backend_flags(s)
    s.add_argument("--compare", choices=("reference",),
                   help="reference: also run the float model on the prompt (CUDA when present) and print agreement "
                        "and both speeds")
    s.add_argument("--reference", help="the float model for --compare (default: the model the bundle was compiled "
                                       "from, as its manifest names it)")
    s.add_argument("--json", help="also write tokens and counters to this file (schema flightc.run/2, docs/json.md)")
    s.set_defaults(func=cmd_run)


def _ids(text: str) -> list[int]:
    try:
        return [int(t) for t in text.replace(",", " ").split()]
    except ValueError:
        raise FlightcError(f"--prompt-ids {text!r}: expected integers separated by commas") from None


def cmd_run(args) -> int:
    from flightc.runtime.backends import backend_spec
    from flightc.runtime.session import Session
    from flightc.runtime.text import bundle_codec
    from flightc.schema import RUN_SCHEMA

    spec = backend_spec(args.backend)
    options = given_options(args)
    sampler = sampler_of(args)
    with Session(args.bundle, backend=args.backend, **options) as session:
        codec = bundle_codec(session.bundle, args.tokenizer) if args.prompt is not None else None
        prompt = codec.encode(args.prompt) if codec else _ids(args.prompt_ids)
        if args.max_new_tokens is None:  # the default, or as many as fit
            room = session.bundle.max_len - len(prompt) + 1
            args.max_new_tokens = min(NEW_TOKENS, room) if room >= 1 else NEW_TOKENS
            if args.max_new_tokens < NEW_TOKENS:
                console.print(f"generating at most {args.max_new_tokens} tokens: the bundle's max_len is "
                              f"{session.bundle.max_len}")
        session.check_request(prompt, args.max_new_tokens)
        console.print(f"prompt: {args.prompt!r} ({len(prompt)} tokens)" if codec else f"prompt: {prompt}")
        t0 = time.perf_counter()
        tokens, logits = [], []
        console.print("text: " if codec else "tokens: ", end="")
        stop = codec.eos if codec else frozenset()
        generated = session.generate(prompt, args.max_new_tokens, sampler, stop)

        def ids():
            for token, z in generated:
                tokens.append(token)
                logits.append(z)
                yield token
        if codec:
            for piece in codec.stream(ids()):
                console.print(piece, end="", markup=False, highlight=False)
        else:
            for token in ids():
                console.print(str(token), end=" ")
        console.print()
        wall = time.perf_counter() - t0
    if options.get("trace"):
        what = "timeline (open in ui.perfetto.dev)" if args.backend == "perf" else "waveform"
        console.print(f"{what} written to {options['trace']}")
    c = session.counters
    rows = [(f"{name} instructions", f"{count:,}") for name, count in sorted(c.instructions.items())]
    rows += [("MACs", f"{c.macs:,}"), ("SFU elements", f"{c.sfu_elements:,}"),
             ("memory bytes read", f"{sum(c.hbm_read.values()):,}"),
             ("memory bytes written", f"{sum(c.hbm_written.values()):,}"), ("channels read", f"{len(c.hbm_read)}")]
    check_s = getattr(session.device, "hazard_check_s", 0.0)
    if check_s:
        rows.append(("hazard checks (of the wall time)", f"{check_s:.2f} s"))
    if c.cycles:
        rows += [(f"cycles ({c.cycles_label})", f"{c.cycles['cycles']:,}")]
        cores = session.bundle.config.num_cores
        every = f" (its {cores} cores' sum)" if cores > 1 else ""  # the cycles are the kernel's: its longest core's
        rows += [(f"  busy on {k[5:].upper()}{every}", f"{v:,}") for k, v in c.cycles.items()
                 if k.startswith("busy_") and v]
    speed = "of simulation speed" if spec.simulator else "end to end, host included"
    console.print(table(f"{args.backend}: {len(tokens)} tokens in {wall:.2f} s ({len(tokens) / wall:.1f} tokens/s "
                        f"{speed})", ("counter", "value"), rows))
    reports = _print_perf_steps(session.device.steps, session.steps, len(prompt)) if args.backend == "perf" else []
    compared = _compare_reference(args, session, prompt, tokens, logits, wall) if args.compare else None
    if args.json:
        doc = {"schema": RUN_SCHEMA.version, "backend": args.backend, "prompt": prompt,
               "prompt_text": args.prompt, "tokens": tokens, "text": codec.decode(tokens) if codec else None,
               "sampler": sampler.to_dict(),
               "wall_s": wall, "modeled_steps": [r.to_dict() for r in reports],
               "reference": compared.to_dict() if compared else None, "counters": c.to_dict()}
        write_atomic(args.json, json.dumps(doc, indent=1))
    return 0


def _compare_reference(args, session, prompt: list[int], tokens: list[int], logits: list, wall: float):
    """The float model on the same prompt: its tokens and speed next to the backend's, and how far apart."""
    from flightc.reference.float_ref import compare_with_reference

    source = args.reference or session.bundle.manifest.source
    if not source:
        raise FlightcError("--compare reference: the bundle does not name its model (it was compiled from an object "
                           "in memory); pass --reference MODEL (a Hugging Face folder or builtin:NAME)")
    c = session.counters
    cmp = compare_with_reference(source, session.bundle, prompt, tokens, logits, (c.cycles or {}).get("cycles"))
    a = cmp.agreement
    rows = [("tokens", " ".join(map(str, tokens)), " ".join(map(str, cmp.tokens))),
            ("tokens/s (wall clock here)", f"{len(tokens) / wall:,.1f}", f"{len(tokens) / cmp.wall_s:,.1f}")]
    if cmp.device_tokens_per_s is not None:
        rows.append((f"tokens/s on the device (cycles {c.cycles_label} at {session.bundle.config.clock_mhz:g} MHz)",
                     f"{cmp.device_tokens_per_s:,.2f}", ""))
    rows += [("greedy tokens that match", f"{a.greedy_match:.1%}", ""),
             ("first divergence", "-" if a.first_divergence is None else str(a.first_divergence), ""),
             ("teacher-forced match", f"{a.teacher_forced_match:.1%}", ""),
             ("logit rel. error / cosine", f"{a.logit_rel_error:.3f} / {a.logit_cosine:.4f}", "")]
    console.print(table(f"{args.backend} vs the float reference ({source}, {cmp.device})",
                        ("", args.backend, f"float ({cmp.device})"), rows))
    return cmp


def _print_perf_steps(schedules, steps: list[tuple[int, int]], prompt_len: int) -> list:
    from flightc.sim.perf.report import step_report

    names = [f"prefill {n} at {p}" if p < prompt_len else f"decode at {p}" for n, p in steps]
    reps = [step_report(name, s) for name, (_, s) in zip(names, schedules)]
    rows = [(r.name, f"{r.cycles:,}", f"{r.seconds * 1e3:.3f}", f"{r.hbm_utilization:.1%}", f"{r.mpe_utilization:.2%}",
             f"{r.roofline_seconds / r.seconds:.1%}" if r.seconds else "-",
             max(r.unit_busy, key=r.unit_busy.get)) for r in reps]
    console.print(table("performance model (modeled, not measured)",
                        ("step", "cycles", "ms", "memory bandwidth used", "MPE MACs used", "of roofline",
                         "busiest unit"), rows))
    return reps
