"""Bytes and modeled speed of a decode step for each encoding of the sparse positions (ISA 1.10), one command for all.

    python bench/sparse_encodings.py [--model flightc/models/configs/llama2-7b] [--hw u280] [--context 512]
                                     [--slots 64 128]

Compiles the programs only (no weights) of ``--model`` for ``--hw`` with every encoding allowed
(``sparse_encodings``) and 4:16 and 8:16 among its patterns (``sparse_n``), for dense W4 g128 and for 8:16 and 4:16 in each encoding named in the plan, and for each
lane-group width in ``--slots``; prints per plan the bytes a decode step at ``--context`` streams (every byte the
performance model counts: values, positions, group multipliers, records, KV cache, the rest), their share of dense
W4's, and the modeled decode tokens/s. Everything is modeled (flightc.sim.perf), nothing measured on a board.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

PLANS = ["w4g128", "w4g128s8:16p", "w4g128s8:16m", "w4g128s8:16r", "w4g128s4:16p", "w4g128s4:16m", "w4g128s4:16r"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    root = Path(__file__).resolve().parents[1]
    ap.add_argument("--model", default=str(root / "flightc" / "models" / "configs" / "llama2-7b"))
    ap.add_argument("--hw", default="u280")
    ap.add_argument("--context", type=int, default=512)
    ap.add_argument("--slots", type=int, nargs="+", default=[64], help="lane_slots of the configs to model")
    ap.add_argument("--plans", nargs="+", default=PLANS)
    args = ap.parse_args()

    from flightc.compiler.pipeline import compile_model
    from flightc.compress.plan import CompressionPlan
    from flightc.config import SparseEncoding, load_config
    from flightc.sim.perf.workload import WorkloadModel

    print(f"| lane_slots | plan | MB a decode step (values + positions + multipliers + records + KV + other) | "
          f"of dense W4 | decode tokens/s at context {args.context} | compile s |")
    print("|---|---|---|---|---|---|")
    for slots in args.slots:
        base = load_config(args.hw)
        cfg = base.replace(sparse_encodings=tuple(SparseEncoding), lane_slots=slots,
                           sparse_n=tuple(sorted({4, 8, *base.sparse_n})))
        dense = None
        for plan in args.plans:
            t0 = time.perf_counter()
            c = compile_model(Path(args.model), cfg, CompressionPlan.parse(plan), max_len=args.context + 1,
                              max_prefill=1, prefill_lengths=[1], random_weights=0, weights=False)
            seconds = time.perf_counter() - t0
            wm = WorkloadModel(c.bundle)
            tb = wm.token_bytes(args.context)
            step = wm.step(1, args.context)
            dense = dense or tb.total
            print(f"| {slots} | {plan} | {tb.total / 1e6:,.0f} ({tb.weight_values / 1e6:,.0f} + "
                  f"{tb.sparse_indices / 1e6:,.0f} + {tb.group_scales / 1e6:,.0f} + {tb.requant_records / 1e6:,.1f} + "
                  f"{tb.kv_cache / 1e6:,.0f} + {tb.other / 1e6:,.1f}) | {tb.total / dense:.1%} | "
                  f"{1 / step.seconds:,.1f} | {seconds:.0f} |", flush=True)


if __name__ == "__main__":
    main()
