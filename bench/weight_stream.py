"""How close the weight traffic of one decode step comes to the HBM's sustained bandwidth (modeled).

Compiles each real-size config programs-only for a preset, keeps only the LDs that bring weight
tiles (flightc.sim.perf.stream) and times them with the performance model: masters, bursts in
flight, the memory's latency, channels shared by cores. The second row of each model is the same
step through one master per core (a config with `axi_masters` = 1), for contrast.

    python bench/weight_stream.py [--hw u280] [--format w4g128s8:16] [--models llama2-7b,opt-6.7b]
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

CONFIGS = Path(__file__).resolve().parents[1] / "flightc" / "models" / "configs"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hw", default="u280")
    ap.add_argument("--format", default="w4g128s8:16")
    ap.add_argument("--models", default="llama2-7b,opt-6.7b")
    args = ap.parse_args()

    from flightc.compiler.pipeline import compile_model
    from flightc.config import load_config
    from flightc.compress.plan import CompressionPlan
    from flightc.sim.perf.stream import weight_stream

    console = Console(width=140)
    base = load_config(args.hw)
    table = Table(title=f"weight LDs of one decode step alone ({args.format}, modeled)")
    for col in ("model", "hw", "masters", "weights MB", "cycles", "GB/s", "of sustained", "of nominal"):
        table.add_column(col, justify="right")
    for model in args.models.split(","):
        for cfg in (base, base.replace(name=f"{base.name}-1m", axi_masters=1)):
            t0 = time.perf_counter()
            with console.status(f"{model} on {cfg.name}: compiling programs ..."):
                c = compile_model(CONFIGS / model, cfg, CompressionPlan.parse(args.format), max_len=16, max_prefill=1,
                                  prefill_lengths=[1], random_weights=0, weights=False)
                w = weight_stream(c.bundle, "decode", 8)
            table.add_row(model, cfg.name, str(cfg.axi_masters), f"{w.bytes / 1e6:,.0f}", f"{w.cycles:,}",
                          f"{w.gbps:.1f}", f"{w.fraction:.1%}", f"{w.gbps / cfg.mem_bandwidth_gbps:.1%}")
            console.log(f"{model} on {cfg.name}: {time.perf_counter() - t0:.0f} s")
    console.print(table)


if __name__ == "__main__":
    main()
