"""Modeled speed of LLaMA2-7B and OPT-6.7B at FlightLLM's workloads, next to FlightLLM's figures and the HBM roofline.

    python bench/compile_real.py --keep bundles --hw u280      # and --hw vhk158: the 7B bundles
    python bench/performance.py bundles/*.flb [--plot docs/img/roofline.png] [--sample 128]

Every figure comes from the performance model (flightc.sim.perf), which is checked against the RTL
(tests/rtl/test_perf_calibration.py); nothing here is measured on a board. Prints a markdown table.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

WORKLOADS = [(128, 512), (128, 1024), (128, 1536), (512, 512), (512, 1024), (512, 1536)]
# FlightLLM's figures (shared/reference/flightllm-facts.md): U280 measured decode of LLaMA2-7B; VHK158 simulated
# decode of LLaMA2-7B at contexts 512 / 1024 / 2048.
FLIGHTLLM = {("llama2-7b", "u280"): lambda ctx: "55 (measured)",
             ("llama2-7b", "vhk158"): lambda ctx: f"{102 if ctx <= 512 else 94 if ctx <= 1024 else 82} (simulated)"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("bundles", nargs="+")
    ap.add_argument("--sample", type=int, default=128, help="schedule every Nth position exactly, interpolate between")
    ap.add_argument("--plot", help="write a roofline plot (PNG) here")
    args = ap.parse_args()

    from flightc.bundle import load_bundle
    from flightc.sim.perf.workload import WorkloadModel

    rows, points = [], []
    for path in args.bundles:
        t0 = time.perf_counter()
        b = load_bundle(path)
        cfg = b.config
        model = Path(path).name.split("-w")[0]
        w = WorkloadModel(b, args.sample)
        for prompt, new in WORKLOADS:
            r = w.request(prompt, new)
            pre, dec, tb, roof = r.prefill, r.decode, r.token_bytes, r.roofline_tokens_per_s
            busiest = dec.busiest_unit
            flight = FLIGHTLLM.get((model, cfg.name), lambda ctx: "-")(prompt + new)
            rows.append(
                f"| {model} | {cfg.name} | [{prompt}, {new}] | {pre.seconds * 1e3:,.0f} | {dec.tokens_per_s:.3f} | "
                f"{pre.seconds + dec.seconds:,.1f} | {dec.bandwidth_used(cfg):.2%} | "
                f"{pre.macs_used(cfg):.3%} | {tb.total / 1e6:,.0f} ({tb.weight_values / 1e6:,.0f} + "
                f"{tb.sparse_indices / 1e6:,.0f} + {tb.group_scales / 1e6:,.0f} + {tb.requant_records / 1e6:,.1f} + "
                f"{tb.kv_cache / 1e6:,.0f} + {tb.other / 1e6:,.1f}) | {roof:,.1f} | {r.of_roofline:.2%} | "
                f"{flight} | {busiest} busy {dec.unit_busy[busiest]:.0%} |")
            points.append((model, cfg, pre, dec, tb))
        err = w.interpolation_error(128, 512 + args.sample)
        print(f"{path}: {time.perf_counter() - t0:.0f} s, {w.exact_steps} steps scheduled exactly; decode "
              f"interpolation error at midpoints {err:.3%}", flush=True)
    print()
    print("| model | hw | [prefill, decode] | prefill ms | decode tokens/s | end-to-end s | HBM bandwidth used "
          "(decode) | MPE MACs used (prefill) | MB streamed per decode token (weights + indices + group scales "
          "+ requant records + KV + other) | HBM roofline tokens/s | of roofline | FlightLLM tokens/s | limited by "
          "(decode) |")
    print("|---|---|---|---:|---:|---:|---:|---:|---|---:|---:|---|---|")
    for r in rows:
        print(r)
    if args.plot:
        plot_roofline(points, args.plot)
        print(f"\nroofline plot: {args.plot}")


def plot_roofline(points, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, ax = plt.subplots(figsize=(7.5, 5))
    seen = {}
    for model, cfg, pre, dec, tb in points:
        if cfg.name not in seen:
            peak, bw = cfg.peak_macs_per_s, cfg.mem_bytes_per_s
            x = np.logspace(-1, 4, 200)
            line, = ax.loglog(x, np.minimum(peak, bw * x), label=f"{cfg.name} roof ({bw / 1e9:.0f} GB/s, "
                                                                    f"{peak / 1e12:.1f} TMAC/s)")
            seen[cfg.name] = line.get_color()
        color = seen[cfg.name]
        for phase, marker in ((pre, "s"), (dec, "o")):
            ax.loglog(phase.macs / phase.hbm_bytes, phase.macs / phase.seconds, marker, color=color,
                      markerfacecolor="none" if model.startswith("opt") else color)
    ax.plot([], [], "s", color="gray", label="prefill (modeled)")
    ax.plot([], [], "o", color="gray", label="decode (modeled)")
    ax.plot([], [], "o", color="gray", markerfacecolor="none", label="OPT-6.7B (hollow)")
    ax.set_xlabel("MACs per byte from memory")
    ax.set_ylabel("MACs per second")
    ax.set_title("LLaMA2-7B / OPT-6.7B on the generated cores: performance model vs roofline")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    main()
