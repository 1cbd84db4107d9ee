"""Compile the real-size configs (LLaMA2-7B, OPT-6.7B) with seeded random weights for every length up to
--max-len: time, peak memory, instruction storage with length-adaptive templates and (computed) without.

    python bench/compile_real.py [--format w4g128s8:16] [--hw u280] [--max-len 4096] [--max-prefill 4]
                                 [--keep DIR]

Each model compiles in a child process so that its peak resident memory is its own. Prints a
markdown table (recorded in docs/scale.md). --keep saves the bundles (for bench/performance.py).
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
                      max_prefill=args.max_prefill, random_weights=0, jobs=args.jobs, weights=not args.programs_only,
                      keep_integer=False)
    compile_s = time.perf_counter() - t0
    tag = "-programs" if args.programs_only else ""
    out = Path(args.keep or args.out) / f"{args.model}-{args.format.replace(':', '_')}-{args.hw}-{args.max_len}{tag}.flb"
    t1 = time.perf_counter()
    c.bundle.save(out)
    m = c.bundle.manifest
    decode = [p for p in m.programs if p["length"] == 1]
    st = m.storage
    print(json.dumps({
        "model": args.model, "format": args.format, "hw": args.hw, "compile_s": round(compile_s, 1),
        "save_s": round(time.perf_counter() - t1, 1), "passes": {k: round(v, 1) for k, v in c.timings.items()},
        "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
        "bundle_gb": round(out.stat().st_size / 1e9, 2),
        "weight_bytes_gb": round(sum(r["nbytes"] for r in m.memory_map["regions"] if r["kind"] == "weight") / 1e9, 2),
        "max_len": args.max_len, "templates": len(m.programs), "decode_instructions": decode[-1]["instructions"],
        "decode_program_kb": round(decode[-1]["bytes"] / 1e3, 1),
        "instructions_mb": round((st["template_bytes"] + st["patch_bytes"]) / 1e6, 2),
        "patch_kb": round(st["patch_bytes"] / 1e3, 1), "per_length_gb": round(st["per_length_bytes"] / 1e9, 1)}))
    if not args.keep:
        out.unlink()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--format", default="w4g128s8:16")
    ap.add_argument("--hw", default="u280")
    ap.add_argument("--max-len", type=int, default=4096)
    ap.add_argument("--max-prefill", type=int, default=4)
    ap.add_argument("--jobs", type=int, default=2, help="processes lowering program templates")
    ap.add_argument("--out", default="out")
    ap.add_argument("--keep", help="save the bundles in this folder")
    ap.add_argument("--programs-only", action="store_true", help="compile programs only (no weights quantized)")
    ap.add_argument("--model", help=argparse.SUPPRESS)
    ap.add_argument("--models", default="llama2-7b,opt-6.7b")
    args = ap.parse_args()
    if args.model:
        return child(args)
    Path(args.out).mkdir(exist_ok=True)
    rows = []
    for model in args.models.split(","):
        # a model with learned positions cannot go past its table (OPT-6.7B: 2,048)
        limit = json.loads((CONFIGS / model / "config.json").read_text()).get("max_position_embeddings", args.max_len)
        max_len = min(args.max_len, limit)
        if max_len < args.max_len:
            print(f"{model}: max_len {max_len}, its max_position_embeddings", file=sys.stderr)
        cmd = [sys.executable, __file__, "--model", model, f"--max-len={max_len}"]
        cmd += [f"--{k.replace('_', '-')}={v}" for k, v in vars(args).items()
                if k not in ("model", "models", "programs_only", "max_len") and v is not None]
        cmd += ["--programs-only"] if args.programs_only else []
        res = subprocess.run(cmd, stdout=subprocess.PIPE, text=True)
        if res.returncode:
            sys.exit(f"{model}: compile failed")
        rows.append(json.loads(res.stdout.strip().splitlines()[-1]))
        print(json.dumps(rows[-1]), flush=True)
    what = "compile s (programs only)" if args.programs_only else "compile s"
    print(f"| model | weights | hw | max_len | {what} | programs s (lower, tokens, patch tables) | "
          "peak RSS GB | weights GB | bundle GB | templates | instructions MB (patch tables kB) | "
          "one program per length GB (computed) | instructions per decode step |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['model']} | {r['format']} | {r['hw']} | {r['max_len']} | {r['compile_s']} | "
              f"{r['passes']['lower']} | {r['peak_rss_gb']} | {r['weight_bytes_gb']} | {r['bundle_gb']} | "
              f"{r['templates']} | {r['instructions_mb']} ({r['patch_kb']}) | {r['per_length_gb']:,} | "
              f"{r['decode_instructions']:,} |")


if __name__ == "__main__":
    main()
