"""Compile the real-size configs (LLaMA2-7B, OPT-6.7B) with seeded random weights; time and peak memory.

    python bench/compile_real.py [--format w4g128] [--hw u280] [--max-len 32] [--max-prefill 4]

Each model compiles in a child process so that its peak resident memory is its own. Prints a
markdown table (recorded in docs/scale.md).
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

CONFIGS = Path(__file__).resolve().parents[1] / "flightc" / "models" / "configs"


def child(args) -> None:
    import logging

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    from flightc.compiler.pipeline import compile_model
    from flightc.compress.plan import CompressionPlan

    t0 = time.perf_counter()
    c = compile_model(CONFIGS / args.model, args.hw, CompressionPlan.parse(args.format), max_len=args.max_len,
                      max_prefill=args.max_prefill, random_weights=0)
    compile_s = time.perf_counter() - t0
    out = Path(args.out) / f"{args.model}-{args.format}-{args.hw}.flb"
    t1 = time.perf_counter()
    c.bundle.save(out)
    m = c.bundle.manifest
    decode = [p for p in m["programs"] if p["kind"] == "decode"]
    print(json.dumps({
        "model": args.model, "format": args.format, "hw": args.hw, "compile_s": round(compile_s, 1),
        "save_s": round(time.perf_counter() - t1, 1), "passes": {k: round(v, 1) for k, v in c.timings.items()},
        "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
        "bundle_gb": round(out.stat().st_size / 1e9, 2),
        "weight_bytes_gb": round(sum(r["nbytes"] for r in m["memory_map"]["regions"] if r["kind"] == "weight") / 1e9, 2),
        "programs": len(m["programs"]), "decode_instructions": decode[-1]["instructions"],
        "decode_program_kb": round(decode[-1]["bytes"] / 1e3, 1)}))
    out.unlink()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--format", default="w4g128")
    ap.add_argument("--hw", default="u280")
    ap.add_argument("--max-len", type=int, default=32)
    ap.add_argument("--max-prefill", type=int, default=4)
    ap.add_argument("--out", default="out")
    ap.add_argument("--model", help=argparse.SUPPRESS)
    ap.add_argument("--models", default="llama2-7b,opt-6.7b")
    args = ap.parse_args()
    if args.model:
        return child(args)
    Path(args.out).mkdir(exist_ok=True)
    rows = []
    for model in args.models.split(","):
        cmd = [sys.executable, __file__, "--model", model] + [f"--{k.replace('_', '-')}={v}" for k, v in
                                                              vars(args).items() if k not in ("model", "models")]
        res = subprocess.run(cmd, stdout=subprocess.PIPE, text=True)
        if res.returncode:
            sys.exit(f"{model}: compile failed")
        rows.append(json.loads(res.stdout.strip().splitlines()[-1]))
        print(json.dumps(rows[-1]), flush=True)
    print("| model | weights | hw | compile s | peak RSS GB | weights GB | bundle GB | programs | "
          "instructions per decode step | decode program kB | slowest passes (s) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        slow = ", ".join(f"{k} {v}" for k, v in sorted(r["passes"].items(), key=lambda kv: -kv[1])[:3])
        print(f"| {r['model']} | {r['format']} | {r['hw']} | {r['compile_s']} | {r['peak_rss_gb']} | "
              f"{r['weight_bytes_gb']} | {r['bundle_gb']} | {r['programs']} | {r['decode_instructions']:,} | "
              f"{r['decode_program_kb']} | {slow} |")


if __name__ == "__main__":
    main()
