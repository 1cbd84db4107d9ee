"""The GPU path at full size, FlightLLM's "GPU-naive" baseline: a config with seeded random weights
(LLaMA2-7B by default) as the float model in bfloat16 and float16 (transformers' generate with its KV
cache, batch 1) and as flightc's integer reference (W4 g128 8:16, LM head W8; the linear layers' products
on the GPU, exact), with tokens/s, prefill time and agreement.

    python bench/gpu_reference.py [--model flightc/models/configs/llama2-7b] [--workloads 128:512,512:512]
                                  [--int-decode 32] [--agree-tokens 64] [--check-layers 2]
                                  [--json results.json]

Needs a CUDA GPU: without one it says so and exits with status 2 (the float and integer references still
run on the CPU: `flightc run --compare reference`, `flightc eval`). `--device cpu --layers 2` runs the same
steps on a cut-down model to check the script; such figures are not a GPU's. Prints markdown tables
(recorded in docs/performance.md, "The GPU beside it").

Agreement: the reduced-precision float models' first ``--agree-tokens`` greedy tokens against float32's on
the first workload's prompt; the integer reference against float32 as `flightc run --compare reference` measures it (greedy
match, teacher-forced match, logit cosine); and the integer reference on the device against the numpy
integer reference (the exact definition) byte for byte on a ``--check-layers``-layer cut of the same config.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_MODEL = ROOT / "flightc" / "models" / "configs" / "llama2-7b"
STEPS = 16  # single-token forwards timed beside generate
NEEDS_GPU = ("bench/gpu_reference.py needs a CUDA GPU and torch.cuda.is_available() is False here. Without one, "
             "the float model and the integer reference run on the CPU (flightc run --compare reference, "
             "flightc eval); `--device cpu --layers 2` checks this script on a cut-down model.")


def parse_workloads(text: str) -> list[tuple[int, int]]:
    out = []
    for item in text.split(","):
        p, _, d = item.partition(":")
        if not (p.strip().isdigit() and d.strip().isdigit()) or int(p) < 1 or int(d) < 2:
            raise SystemExit(f"--workloads: {item!r} is not PREFILL:DECODE with PREFILL >= 1 and DECODE >= 2")
        out.append((int(p), int(d)))
    return out


class Clock:
    """Wall-clock seconds of work on ``device``, synchronized so queued GPU work is counted."""

    def __init__(self, device: str):
        import torch

        self.sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)

    def __call__(self, fn, *args, **kw):
        self.sync()
        t = time.perf_counter()
        out = fn(*args, **kw)
        self.sync()
        return out, time.perf_counter() - t


def config_with_layers(model: Path, layers: int | None) -> dict:
    cfg = json.loads((model / "config.json").read_text())
    if layers:
        cfg["num_hidden_layers"] = layers
    return cfg


def float_runs(model32, device: str, dtypes: list[str], workloads: list[tuple[int, int]],
               prompts: dict[int, list[int]], clock: Clock) -> tuple[list[dict], dict[str, list[int]]]:
    """Prefill and decode of the float model in each dtype (a copy of the float32 one); its greedy tokens on
    the first workload."""
    import copy

    import torch

    rows, tokens = [], {}
    p0 = workloads[0][0]
    with torch.no_grad():
        z32 = model32(torch.tensor([prompts[p0]], device=device)).logits[0].double()
    for name in dtypes:
        free(device)
        model, load_s = clock(lambda: copy.deepcopy(model32).to(getattr(torch, name)))

        def generate(ids: list[int], n: int) -> list[int]:
            with torch.no_grad():
                x = torch.tensor([ids], device=device)
                out = model.generate(x, max_new_tokens=n, min_new_tokens=n, do_sample=False, pad_token_id=0,
                                     eos_token_id=None)
            return out[0, len(ids):].tolist()

        def prefill(ids: list[int]):
            with torch.no_grad():
                return model(torch.tensor([ids], device=device)).logits

        def decode_forwards(ids: list[int], n: int) -> None:
            """``n`` single-token forwards on the prompt's KV cache: generate's steps without its logits
            processing, so the table can tell the model's step from the loop around it."""
            with torch.no_grad():
                out = model(torch.tensor([ids], device=device), use_cache=True)
                cache, tok = out.past_key_values, out.logits[:, -1:].argmax(-1)
                for _ in range(n):
                    out = model(tok, past_key_values=cache, use_cache=True)
                    cache, tok = out.past_key_values, out.logits[:, -1:].argmax(-1)

        generate(prompts[p0][:16], 8)  # warm-up: kernels chosen, caches allocated
        z = prefill(prompts[p0])[0].double()
        cosine = float(torch.nn.functional.cosine_similarity(z, z32, dim=1).mean())
        argmax = float((z.argmax(1) == z32.argmax(1)).double().mean())
        for p, d in workloads:
            prefill(prompts[p])
            _, prefill_s = clock(prefill, prompts[p])
            out, total_s = clock(generate, prompts[p], d)
            _, steps_s = clock(decode_forwards, prompts[p], STEPS)
            if (p, d) == workloads[0]:
                tokens[name] = out
            rows.append({"path": f"float {name}", "workload": [p, d], "prefill_ms": prefill_s * 1e3,
                         "decode_tokens_s": (d - 1) / max(total_s - prefill_s, 1e-9), "end_to_end_s": total_s,
                         "load_s": load_s, "peak_gb": peak_gb(device),
                         "step_ms": (steps_s - prefill_s) / STEPS * 1e3, "logit_cosine": cosine,
                         "argmax_match": argmax})
            print(f"float {name} [{p}, {d}]: prefill {prefill_s * 1e3:.1f} ms, {rows[-1]['decode_tokens_s']:.2f} "
                  f"tokens/s, end to end {total_s:.2f} s, one decode forward {rows[-1]['step_ms']:.1f} ms, peak "
                  f"{rows[-1]['peak_gb']:.1f} GB; on the prompt against float32: logit cosine {cosine:.4f}, "
                  f"argmax {argmax:.1%}", flush=True)
        model = None
        free(device)
    return rows, tokens


def integer_graph(cfg: dict, seed: int, fmt: str, hw: str, jobs: int) -> tuple[object, dict[str, float]]:
    """The passes of flightc.compiler.pipeline up to the integer graph the integer reference runs (the pipeline's
    ``integer``; pass ``fuse`` only prepares lowering)."""
    from flightc.compiler.calibrate import calibrate, default_calibration
    from flightc.compiler.compress import compress
    from flightc.compiler.equalize import equalize
    from flightc.compiler.integerize import integerize
    from flightc.compress.method import Method
    from flightc.compress.plan import CompressionPlan
    from flightc.config import load_config
    from flightc.frontend.hf import load_hf

    timings: dict[str, float] = {}

    def timed(name, fn, *args):
        t = time.perf_counter()
        out = fn(*args)
        timings[name] = time.perf_counter() - t
        print(f"  pass {name}: {timings[name]:.1f} s", flush=True)
        return out

    plan, method = CompressionPlan.parse(fmt), Method()
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "config.json").write_text(json.dumps(cfg))
        g = timed("frontend", load_hf, tmp, seed)
    calibration = default_calibration(g.spec.vocab_size)
    g = timed("equalize", equalize, g, plan, method, calibration)
    g = timed("compress", compress, g, plan, load_config(hw), True, method, calibration, None, jobs)
    g = timed("calibrate", calibrate, g, calibration)
    return timed("integerize", integerize, g), timings


def integer_run(graph, device: str, prompt: list[int], n: int, clock: Clock) -> tuple[dict, list[int], list]:
    """Greedy generation on the integer reference with its products on ``device``."""
    from flightc.reference.integer import IntegerModel

    model, load_s = clock(IntegerModel, graph, len(prompt) + n, device)
    first, prefill_s = clock(model.forward, prompt)
    logits, tokens = [first], [int(np.argmax(first))]
    t = time.perf_counter()
    for _ in range(n - 1):
        logits.append(model.forward([tokens[-1]]))
        tokens.append(int(np.argmax(logits[-1])))
    decode_s = time.perf_counter() - t
    row = {"path": "integer reference", "workload": [len(prompt), n], "prefill_ms": prefill_s * 1e3,
           "decode_tokens_s": (n - 1) / decode_s, "end_to_end_s": prefill_s + decode_s, "load_s": load_s,
           "peak_gb": peak_gb(device)}
    return row, tokens, logits


def exact_check(cfg: dict, layers: int, seed: int, fmt: str, hw: str, jobs: int, device: str) -> dict:
    """The integer reference with device products against the numpy one, byte for byte, on a cut of the config."""
    from flightc.reference.integer import IntegerModel, greedy

    cut = dict(cfg, num_hidden_layers=layers)
    graph, _ = integer_graph(cut, seed, fmt, hw, jobs)
    prompt = list(np.random.default_rng(seed + 1).integers(0, cfg["vocab_size"], 16))
    t_np, z_np = greedy(IntegerModel(graph, 20), prompt, 4)
    t_dev, z_dev = greedy(IntegerModel(graph, 20, device), prompt, 4)
    same = t_np == t_dev and all(np.array_equal(a, b) for a, b in zip(z_np, z_dev))
    return {"layers": layers, "prompt": len(prompt), "tokens": 4, "identical": bool(same)}


def peak_gb(device: str) -> float:
    """The device memory PyTorch held at most since the last :func:`free`."""
    import torch

    return torch.cuda.max_memory_allocated() / 1e9 if device.startswith("cuda") else float("nan")


def free(device: str) -> None:
    import gc

    import torch

    gc.collect()
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def table(rows: list[dict]) -> str:
    lines = ["| path | [prefill, decode] | prefill ms | decode tokens/s | one decode forward ms | end-to-end s | "
             "load s | peak GB |", "|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        p, d = r["workload"]
        step = f"{r['step_ms']:,.1f}" if "step_ms" in r else "-"
        lines.append(f"| {r['path']} | [{p}, {d}] | {r['prefill_ms']:,.1f} | {r['decode_tokens_s']:,.2f} | {step} | "
                     f"{r['end_to_end_s']:,.2f} | {r['load_s']:,.1f} | {r['peak_gb']:.1f} |")
    return "\n".join(lines)


def print_float_agreement(rows: list[dict], versus: dict[str, float], n_agree: int) -> None:
    """The agreement table's float rows (the integer reference's follow it)."""
    print()
    print("| agreement | value |\n|---|---:|")
    for name, v in versus.items():
        print(f"| {name} greedy tokens = float32's (first {n_agree}) | {v:.1%} |")
    for row in (r for r in rows if "logit_cosine" in r):
        print(f"| {row['path']} on the prompt: logit cosine with float32's / argmax = float32's | "
              f"{row['logit_cosine']:.4f} / {row['argmax_match']:.1%} |")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=DEFAULT_MODEL, help="a config folder (default: LLaMA2-7B)")
    ap.add_argument("--layers", type=int, help="cut the model to this many layers (checking the script)")
    ap.add_argument("--seed", type=int, default=0, help="the seeded random weights (as --random-weights)")
    ap.add_argument("--workloads", default="128:512,512:512", help="PREFILL:DECODE,... for the float model")
    ap.add_argument("--dtypes", default="bfloat16,float16")
    ap.add_argument("--format", default="w4g128s8:16", help="the integer reference's compression plan")
    ap.add_argument("--hw", default="u280", help="the preset the formats are checked against")
    ap.add_argument("--int-decode", type=int, default=32,
                    help="tokens the integer reference generates (0: the float models alone)")
    ap.add_argument("--agree-tokens", type=int, default=64, help="greedy tokens compared with float32's")
    ap.add_argument("--check-layers", type=int, default=2, help="layers of the byte-for-byte check (0: none)")
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="threads that quantize layers")
    ap.add_argument("--device", default="cuda", help="cuda (default) or cpu (checking the script only)")
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args(argv)

    import torch
    import transformers

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print(NEEDS_GPU, file=sys.stderr)
        return 2
    workloads = parse_workloads(args.workloads)
    cfg = config_with_layers(args.model, args.layers)
    clock = Clock(args.device)
    gpu = torch.cuda.get_device_name() if args.device.startswith("cuda") else "none (cpu)"
    print(f"device {args.device}: {gpu}; torch {torch.__version__}, transformers {transformers.__version__}; "
          f"{args.model.name}, {cfg['num_hidden_layers']} layers", flush=True)
    rng = np.random.default_rng(args.seed)
    prompts = {p: rng.integers(0, cfg["vocab_size"], p).tolist() for p, _ in workloads}
    result: dict = {"device": gpu, "torch": torch.__version__, "transformers": transformers.__version__,
                    "model": args.model.name, "layers": cfg["num_hidden_layers"], "seed": args.seed}

    from flightc.frontend.lazy import lazy_weights_model
    from flightc.reference.float_ref import FloatReference, agreement

    model32, load_s = clock(lazy_weights_model, cfg, args.seed, args.device, args.jobs)
    print(f"float32 model with the seeded weights: {load_s:.1f} s", flush=True)
    result["float32_load_s"] = load_s
    rows, float_tokens = float_runs(model32, args.device, args.dtypes.split(","), workloads, prompts, clock)

    p0, d0 = workloads[0]
    ref = FloatReference(model32, args.device)
    n_agree = min(d0, args.agree_tokens)
    f32 = ref.generate(prompts[p0], n_agree)
    versus = {name: float(np.mean([a == b for a, b in zip(toks, f32)])) for name, toks in float_tokens.items()}
    print(f"agreement with float32: {', '.join(f'{k} {v:.1%}' for k, v in versus.items())} of {n_agree} greedy "
          "tokens", flush=True)
    result.update({"rows": rows, "float_vs_float32": versus})
    if not args.int_decode:
        print()
        print(table(rows))
        print_float_agreement(rows, versus, n_agree)
        if args.json:
            args.json.write_text(json.dumps(result, indent=1))
        return 0
    print(f"integer graph ({args.format}, {args.jobs} threads):", flush=True)
    graph, passes = integer_graph(cfg, args.seed, args.format, args.hw, args.jobs)
    int_row, int_tokens, int_logits = integer_run(graph, args.device, prompts[p0], args.int_decode, clock)
    print(f"integer reference [{p0}, {args.int_decode}]: load {int_row['load_s']:.1f} s, prefill "
          f"{int_row['prefill_ms']:.1f} ms, {int_row['decode_tokens_s']:.2f} tokens/s, peak {int_row['peak_gb']:.1f} GB",
          flush=True)
    rows.append(int_row)
    logit_scale = float(graph.node(graph.output)["scale"])
    del graph
    free(args.device)

    agree = agreement(ref, prompts[p0], int_tokens, int_logits, logit_scale).to_dict()
    print(f"integer reference against float32: {agree}", flush=True)
    del ref, model32
    free(args.device)
    check = exact_check(cfg, args.check_layers, args.seed, args.format, args.hw, args.jobs, args.device) \
        if args.check_layers else None
    if check:
        print(f"exact check: {check}", flush=True)

    result.update({"rows": rows, "passes": passes, "float_vs_float32": versus, "integer_vs_float32": agree,
                   "exact_check": check})
    print()
    print(table(rows))
    print_float_agreement(rows, versus, n_agree)
    print(f"| integer reference greedy tokens = float32's ({args.int_decode}) | {agree['greedy_match']:.1%} |")
    print(f"| float32 argmax = integer reference's token (teacher-forced) | {agree['teacher_forced_match']:.1%} |")
    print(f"| integer reference logits: cosine with float32's | {agree['logit_cosine']:.4f} |")
    print(f"| integer reference logits: relative error | {agree['logit_rel_error']:.4f} |")
    if check:
        print(f"| integer reference on {args.device} = numpy's, byte for byte ({check['layers']} layers, "
              f"{check['prompt']} + {check['tokens']} tokens) | {'yes' if check['identical'] else 'NO'} |")
    print()
    print("integer graph passes (s): " + ", ".join(f"{k} {v:.1f}" for k, v in passes.items()))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    return 0 if check is None or check["identical"] else 1


if __name__ == "__main__":
    sys.exit(main())
