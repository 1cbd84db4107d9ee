"""The functional simulator's speed against the float model's, measured in one run on this machine.

    python bench/sim_speed.py [--models builtin:pylm,builtin:addition] [--hw u280] [--format w4g128s8:16]
                              [--new 32] [--repeats 3]

For each model: fsim tokens/s with its default settings (the fast path: each token structure planned and checked
once, each program checked once against its plan), as a process's first run (no plan made or program checked yet),
with ``check_hazards=False`` and on the slow path (``slow_path=True``: scheduled and checked instruction by
instruction), and the float model's tokens/s (flightc.reference.float_ref.FloatReference.generate: transformers'
generate with its KV cache, float32, on the CPU here); each after one warm-up run (the float model's first call,
fsim's plans), the best of ``--repeats`` runs of ``--new`` greedy tokens after the same 8-token prompt, taken in
turns so that a noisy moment slows every contender alike. The ratio fsim / float is issue 27's measure (1.0: as
fast as the float model). Prints a markdown table (recorded in docs/scale.md).
"""
from __future__ import annotations

import argparse
import time

PROMPT = [17, 42, 99, 3, 50, 7, 28, 64]


def timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def measure(spec: str, hw: str, fmt: str, new: int, repeats: int) -> dict:
    from flightc.compiler.pipeline import compile_model
    from flightc.compress.plan import CompressionPlan
    from flightc.models.builtin import load_builtin
    from flightc.reference.float_ref import FloatReference
    from flightc.runtime.session import Session
    from flightc.sim import functional

    model = load_builtin(spec)
    prompt = [t % model.config.vocab_size for t in PROMPT]
    new = min(new, model.config.max_position_embeddings - len(prompt))  # builtin:addition knows 32 positions
    c = compile_model(model, hw, CompressionPlan.parse(fmt), max_len=len(prompt) + new)

    def fsim(**options):
        with Session(c.bundle, "fsim", **options) as s:
            list(s.generate(prompt, new))

    def fsim_first():  # as a process's first generate: no plan made, no program checked yet
        functional._PLANS.clear()
        functional._CHECKED.clear()
        fsim()

    ref = FloatReference(model, "cpu")
    runs = {"float": lambda: ref.generate(prompt, new), "fsim": fsim, "fsim_first": fsim_first,
            "fsim_unchecked": lambda: fsim(check_hazards=False), "fsim_slow": lambda: fsim(slow_path=True)}
    for fn in runs.values():  # warm-up: the float model's first call, fsim's plans and caches
        fn()
    best = {k: timed(fn) for k, fn in runs.items()}
    for _ in range(repeats - 1):  # in turns, so that a noisy moment slows every contender alike
        for k, fn in runs.items():
            best[k] = min(best[k], timed(fn))
    row = {"model": spec, "new": new, "params_m": sum(p.numel() for p in model.parameters()) / 1e6,
           **{k: new / t for k, t in best.items()}}
    row["ratio"] = row["fsim"] / row["float"]
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="builtin:pylm,builtin:addition")
    ap.add_argument("--hw", default="u280")
    ap.add_argument("--format", default="w4g128s8:16")
    ap.add_argument("--new", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    rows = [measure(spec, args.hw, args.format, args.new, args.repeats) for spec in args.models.split(",")]
    print("| model | parameters (M) | float tokens/s | fsim tokens/s | fsim / float | fsim tokens/s, first run | fsim "
          "tokens/s, hazard check off | fsim tokens/s, slow path |\n|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['model']} ({args.format}, {args.hw}; 8 + {r['new']} tokens) | {r['params_m']:.2f} | "
              f"{r['float']:.1f} | {r['fsim']:.2f} | {r['ratio']:.3f} | {r['fsim_first']:.2f} | "
              f"{r['fsim_unchecked']:.2f} | {r['fsim_slow']:.2f} |")


if __name__ == "__main__":
    main()
