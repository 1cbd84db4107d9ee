"""LLaMA2-7B (W4 g128 8:16, LM head W8, seeded random weights) generating tokens on the functional simulator on
this machine, checked against the integer reference byte for byte: tokens/s and peak memory of each step.

    python bench/fsim_7b.py [--hw u280] [--prompt 4] [--new 8] [--max-len 64] [--out out/fsim-7b]

Three child processes, so each one's peak resident memory is its own and no two hold the model at once:
``compile`` writes the bundle; ``reference`` rebuilds nothing but runs the integer reference from the compile's
integer graph (saved beside the bundle is too large, so the compile process runs it before it exits, with the
linear layers' products in PyTorch on the CPU from INT8 operands: flightc.reference.integer.TorchProducts); and
``fsim`` loads the bundle and generates. Prints a markdown table (recorded in docs/scale.md).
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

CONFIG = Path(__file__).resolve().parents[1] / "flightc" / "models" / "configs" / "llama2-7b"


def peak_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def prompt_ids(n: int, vocab: int) -> list[int]:
    return np.random.default_rng(1).integers(0, vocab, n).tolist()


def compile_and_reference(args) -> dict:
    """Compile with weights, save the bundle, then run the integer reference from the compile's integer graph."""
    import gc

    from flightc.compiler.pipeline import compile_model
    from flightc.compress.plan import CompressionPlan
    from flightc.reference.integer import IntegerModel, greedy

    t0 = time.perf_counter()
    c = compile_model(args.model, args.hw, CompressionPlan.parse(args.format, ["lm_head=w8"]), max_len=args.max_len,
                      max_prefill=args.max_prefill, random_weights=0, jobs=args.jobs)
    compile_s = time.perf_counter() - t0
    bundle = Path(args.out) / "llama2-7b.flb"
    c.bundle.save(bundle)
    compile_peak = peak_gb()
    graph, vocab = c.integer, c.integer.spec.vocab_size
    del c
    gc.collect()
    prompt = prompt_ids(args.prompt, vocab)
    t1 = time.perf_counter()
    model = IntegerModel(graph, args.prompt + args.new, device="cpu")
    load_s = time.perf_counter() - t1
    t2 = time.perf_counter()
    tokens, logits = greedy(model, prompt, args.new)
    ref_s = time.perf_counter() - t2
    np.savez(Path(args.out) / "reference.npz", tokens=np.array(tokens), logits=np.stack(logits), prompt=prompt)
    return {"compile_s": compile_s, "compile_peak_gb": compile_peak, "bundle_gb": bundle.stat().st_size / 1e9,
            "reference_load_s": load_s, "reference_s": ref_s, "reference_peak_gb": peak_gb()}


def run_fsim(args) -> dict:
    from flightc.runtime.session import Session

    ref = np.load(Path(args.out) / "reference.npz")
    prompt = ref["prompt"].tolist()
    t0 = time.perf_counter()
    with Session(Path(args.out) / "llama2-7b.flb", "fsim", tile_cache_mb=args.tile_cache_gb << 10) as s:
        load_s = time.perf_counter() - t0
        steps, t = [], time.perf_counter()
        out = []
        for tok, z in s.generate(prompt, args.new):
            out.append((tok, z))
            steps.append(time.perf_counter() - t)
            t = time.perf_counter()
    tokens = [tok for tok, _ in out]
    same = tokens == ref["tokens"].tolist() and all(np.array_equal(z, r) for (_, z), r in zip(out, ref["logits"]))
    return {"fsim_load_s": load_s, "fsim_first_s": steps[0], "fsim_decode_tokens_s": (len(steps) - 1) / sum(steps[1:]),
            "fsim_peak_gb": peak_gb(), "tokens": tokens, "identical": bool(same)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=str(CONFIG), help="a config folder (default: LLaMA2-7B's)")
    ap.add_argument("--hw", default="u280")
    ap.add_argument("--format", default="w4g128s8:16")
    ap.add_argument("--prompt", type=int, default=4)
    ap.add_argument("--new", type=int, default=8)
    ap.add_argument("--max-len", type=int, default=64)
    ap.add_argument("--max-prefill", type=int, default=4)
    ap.add_argument("--jobs", type=int, default=2, help="threads quantizing layers, processes lowering templates")
    ap.add_argument("--tile-cache-gb", type=int, default=8, help="fsim: dequantized weights kept between steps")
    ap.add_argument("--reuse", action="store_true", help="take the bundle and reference of an earlier run in --out")
    ap.add_argument("--out", default="out/fsim-7b")
    ap.add_argument("--step", choices=("compile", "fsim"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.step:
        result = compile_and_reference(args) if args.step == "compile" else run_fsim(args)
        print(json.dumps(result))
        return 0
    Path(args.out).mkdir(parents=True, exist_ok=True)
    result = json.loads((Path(args.out) / "compile.json").read_text()) if args.reuse else {}
    for step in ("fsim",) if args.reuse else ("compile", "fsim"):
        cmd = [sys.executable, __file__, "--step", step] + [f"--{k.replace('_', '-')}={v}" for k, v in vars(args).items()
                                                             if k not in ("step", "reuse")]
        res = subprocess.run(cmd, stdout=subprocess.PIPE, text=True)
        if res.returncode:
            sys.exit(f"{step} failed (exit {res.returncode})")
        result.update(json.loads(res.stdout.strip().splitlines()[-1]))
        if step == "compile":
            (Path(args.out) / "compile.json").write_text(json.dumps(result))
        print(json.dumps(result), flush=True)
    r = result
    print("| step | seconds | tokens/s | peak RSS GB |\n|---|---:|---:|---:|")
    print(f"| compile (with weights, max_len {args.max_len}) | {r['compile_s']:.0f} | - | {r['compile_peak_gb']:.1f} |")
    print(f"| integer reference ({args.prompt} + {args.new} tokens; products in PyTorch, CPU) | "
          f"{r['reference_load_s'] + r['reference_s']:.0f} | {args.new / r['reference_s']:.3f} | "
          f"{r['reference_peak_gb']:.1f} |")
    print(f"| fsim: load the bundle | {r['fsim_load_s']:.0f} | - | - |")
    print(f"| fsim: prompt ({args.prompt} tokens) | {r['fsim_first_s']:.0f} | - | - |")
    print(f"| fsim: decode | - | {r['fsim_decode_tokens_s']:.3f} | {r['fsim_peak_gb']:.1f} |")
    print(f"\nfsim tokens {r['tokens']}: {'identical to' if r['identical'] else 'DIFFERENT from'} the integer reference's "
          f"(tokens and INT32 logits)")
    return 0 if r["identical"] else 1


if __name__ == "__main__":
    sys.exit(main())
