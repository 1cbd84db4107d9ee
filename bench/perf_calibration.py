"""Performance model vs RTL: the distribution of cycle-count errors on the calibration programs.

Runs the calibration sets of flightc.sim.perf.calibration (compiled programs of a 1-layer LLaMA,
each MPE/SFU instruction in isolation, seeded random programs) on the Verilator model of the tiny
kernel and through the performance model, and prints the error distribution per set.

    python bench/perf_calibration.py [--random 200]
"""
from __future__ import annotations

import argparse

import numpy as np
from rich.console import Console
from rich.table import Table


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--random", type=int, default=200, help="random programs to run")
    args = ap.parse_args()

    from flightc.sim.perf.calibration import CFG, Agreement, calibration_bundle, compiled_agreement, model_cycles
    from flightc.sim.perf.timing import instruction_work
    from flightc.sim.rtl.backend import RtlSimulator
    from flightc.sim.rtl.differential import memory_bytes_for, run_rtl
    from flightc.sim.rtl.random_programs import random_case
    from flightc.sim.rtl.replay import isolated_cases

    console = Console()
    bundle = calibration_bundle()
    sets: dict[str, list[Agreement]] = {"compiled programs": [], "isolated MPE/SFU instructions": [],
                                        "random programs": []}
    detail = Table(title="compiled programs (tiny, 1-layer LLaMA)")
    for col in ("program", "RTL cycles", "model cycles", "error"):
        detail.add_column(col, justify="right")
    for a, _, _ in compiled_agreement(bundle):
        sets["compiled programs"].append(a)
        detail.add_row(a.name, f"{a.rtl_cycles:,}", f"{a.model_cycles:,}", f"{a.error:+.3%}")
    console.print(detail)

    sim = RtlSimulator(CFG, memory_bytes_for(CFG))
    try:
        extent = {int(k): v for k, v in bundle.manifest.memory_map["extent"].items()}
        for kind, n in (("prefill", 4), ("decode", 4)):
            for i, ins, case in isolated_cases(CFG, extent, bundle.images, bundle.program(kind, n)[0]):
                _, c = run_rtl(sim, case)
                sets["isolated MPE/SFU instructions"].append(
                    Agreement(f"{kind}/{n}#{i}", c[f"busy_{ins.cls.name.lower()}"], instruction_work(CFG, ins).cycles))
        for seed in range(args.random):
            case = random_case(CFG, seed)
            _, c = run_rtl(sim, case)
            sets["random programs"].append(Agreement(f"seed {seed}", c["cycles"], model_cycles([case.program])["cycles"]))
    finally:
        sim.close()

    t = Table(title="performance model vs RTL cycle counts (tiny preset, Verilator)")
    for col in ("set", "programs", "exact", "median |error|", "p95 |error|", "max |error|", "worst"):
        t.add_column(col, justify="right")
    for name, agreements in sets.items():
        errs = np.array([abs(a.error) for a in agreements])
        worst = agreements[int(errs.argmax())]
        t.add_row(name, str(len(errs)), str(int((errs == 0).sum())), f"{np.median(errs):.3%}",
                  f"{np.percentile(errs, 95):.3%}", f"{errs.max():.3%}", f"{worst.name} ({worst.error:+.2%})")
    console.print(t)


if __name__ == "__main__":
    main()
