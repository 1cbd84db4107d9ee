"""RTL simulation speed: simulated cycles per second of wall time for the full tiny core.

Runs a 1-layer LLaMA bundle and the built-in default model (a prompt step, then greedy decode
steps) and a batch of random programs on the Verilator model of the kernel testbench, and prints
cycles per step, simulated cycles and tokens per wall second, and the device's tokens per second
at the preset's clock by the RTL's own cycle count. Python stays out of
the per-cycle path (the GPI clock drives ap_clk; the harness sleeps until the interrupt).

    python bench/rtl_speed.py [--decode 4] [--random 50] [--model builtin:addition]
"""
from __future__ import annotations

import argparse
import time

import numpy as np
from rich.console import Console
from rich.table import Table


def _steps(rtl, bundle, prompt: list[int], decode: int) -> list[tuple[str, int, int, float]]:
    """(name, tokens, simulated cycles, wall s) of a prompt step and ``decode`` greedy decode steps."""
    ids, logits = bundle.region("io.ids"), bundle.region("io.logits")
    vocab = bundle.manifest.model["vocab_size"]
    rows, tokens = [], list(prompt)
    for i in range(decode + 1):
        step = tokens if i == 0 else tokens[-1:]
        rtl.write(ids["channel"], ids["addr"], np.asarray(step, "<i4").tobytes())
        c = rtl.run(bundle.step(len(step), len(tokens) - len(step)))
        rows.append((f"prefill/{len(step)}" if i == 0 else f"decode at {len(tokens) - 1}", len(step),
                     c.cycles["cycles"], rtl.last_wall_s))
        z = np.frombuffer(rtl.read(logits["channel"], logits["addr"], 4 * vocab), "<i4")
        tokens.append(int(np.argmax(z)))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--decode", type=int, default=3, help="decode steps after the prefill")
    ap.add_argument("--random", type=int, default=50, help="random programs to run")
    ap.add_argument("--model", default="builtin:addition", help="the built-in model whose decode is timed too "
                                                               "(none: skip it)")
    args = ap.parse_args()

    from flightc.compiler.pipeline import compile_model
    from flightc.compress.plan import CompressionPlan
    from flightc.config import PRESETS
    from flightc.models.builtin import load_torch_model
    from flightc.models.seeded import random_model
    from flightc.runtime.backends import open_backend
    from flightc.sim.rtl.backend import RtlSimulator
    from flightc.sim.rtl.differential import memory_bytes_for, run_rtl
    from flightc.sim.rtl.random_programs import random_case

    console = Console()
    cfg = PRESETS["tiny"]
    model = random_model("llama", 0, num_hidden_layers=1, hidden_size=64, intermediate_size=128)
    workloads = [("1-layer LLaMA (hidden 64, W4 g32 8:16)", model, "w4g32s8:16", [5, 77, 130, 9])]
    if args.model != "none":
        workloads.append((f"{args.model} (W8)", load_torch_model(args.model), "w8", [1, 2, 3, 4]))
    rows = []
    start_s = 0.0
    for label, torch_model, fmt, prompt in workloads:
        bundle = compile_model(torch_model, "tiny", CompressionPlan.parse(fmt, []),
                               max_len=len(prompt) + args.decode + 1, max_prefill=len(prompt),
                               prefill_lengths=[len(prompt)]).bundle
        t0 = time.perf_counter()
        rtl = open_backend("rtl", bundle)
        start_s = max(start_s, time.perf_counter() - t0)
        rows += [(f"{label}: {name}", *rest) for name, *rest in _steps(rtl, bundle, prompt, args.decode)]
        rtl.close()
    sim = RtlSimulator(cfg, memory_bytes_for(cfg))
    total_c = 0
    total_w = 0.0
    for seed in range(args.random):
        _, counters = run_rtl(sim, random_case(cfg, seed))
        total_c += counters["cycles"]
        total_w += counters["wall_s"]
    sim.close()
    rows.append((f"{args.random} random programs", 0, total_c, total_w))
    t = Table(title=f"RTL simulation speed, tiny preset at {cfg.clock_mhz:g} MHz (model start-up incl. build "
                    f"check: {start_s:.1f} s)")
    for col in ("workload", "simulated cycles", "wall s", "cycles / s", "simulated tokens / s",
                "device tokens / s (RTL cycles)"):
        t.add_column(col, justify="right")
    for name, tokens, cyc, wall in rows:
        t.add_row(name, f"{cyc:,}", f"{wall:.2f}", f"{cyc / wall:,.0f}", f"{tokens / wall:.3f}" if tokens else "-",
                  f"{tokens * cfg.clock_mhz * 1e6 / cyc:,.2f}" if tokens else "-")
    console.print(t)


if __name__ == "__main__":
    main()
