"""RTL simulation speed: simulated cycles per second of wall time for the full tiny core.

Runs a 1-layer LLaMA bundle (prefill of 4 tokens, then decode steps) and a batch of random
programs on the Verilator model of the kernel testbench, and prints a table. Python stays out of
the per-cycle path (the GPI clock drives ap_clk; the harness sleeps until the interrupt).

    python bench/rtl_speed.py [--decode 4] [--random 50]
"""
from __future__ import annotations

import argparse
import time

import numpy as np
from rich.console import Console
from rich.table import Table


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--decode", type=int, default=3, help="decode steps after the prefill")
    ap.add_argument("--random", type=int, default=50, help="random programs to run")
    args = ap.parse_args()

    from flightc.compiler.pipeline import compile_model
    from flightc.compress.plan import CompressionPlan
    from flightc.config import PRESETS
    from flightc.models.seeded import random_model
    from flightc.runtime.backends import open_backend
    from flightc.sim.rtl.backend import RtlSimulator
    from flightc.sim.rtl.differential import memory_bytes_for, run_rtl
    from flightc.sim.rtl.random_programs import random_case

    console = Console()
    model = random_model("llama", 0, num_hidden_layers=1, hidden_size=64, intermediate_size=128)
    bundle = compile_model(model, "tiny", CompressionPlan.parse("w4g32s8:16", []), max_len=4 + args.decode,
                           max_prefill=4, prefill_lengths=[4]).bundle
    t0 = time.perf_counter()
    rtl = open_backend("rtl", bundle)
    start_s = time.perf_counter() - t0
    ids = bundle.region("io.ids")
    rows = []
    for kind, n, tokens in [("prefill", 4, [5, 77, 130, 9])] + [("decode", 4 + i, [11 + i]) for i in range(args.decode)]:
        rtl.write(ids["channel"], ids["addr"], np.asarray(tokens, "<i4").tobytes())
        c = rtl.run(bundle.program(kind, n))
        cyc = c.cycles["cycles"]
        rows.append((f"{kind}/{n}", cyc, rtl.last_wall_s))
    rtl.close()
    cfg = PRESETS["tiny"]
    sim = RtlSimulator(cfg, memory_bytes_for(cfg))
    total_c = 0
    total_w = 0.0
    for seed in range(args.random):
        _, counters = run_rtl(sim, random_case(cfg, seed))
        total_c += counters["cycles"]
        total_w += counters["wall_s"]
    sim.close()
    rows.append((f"{args.random} random programs", total_c, total_w))
    t = Table(title=f"RTL simulation speed, tiny preset (model start-up incl. build check: {start_s:.1f} s)")
    for col in ("workload", "simulated cycles", "wall s", "cycles / s"):
        t.add_column(col, justify="right")
    for name, cyc, wall in rows:
        t.add_row(name, f"{cyc:,}", f"{wall:.2f}", f"{cyc / wall:,.0f}")
    console.print(t)


if __name__ == "__main__":
    main()
