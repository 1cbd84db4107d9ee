"""The model zoo (flightc/models/configs): does each published config compile for each card, how long it takes, and
its modeled decode speed.

    python bench/zoo.py [--models llama3-8b,qwen2.5-7b] [--hw u280,vhk158,kv260] [--workload 128:512]
                        [--no-speed]

Each compile is the command a new user would type (programs only, seeded random weights, no other flag):

    flightc compile DIR --hw HW --format w4g128s8:16 --layer lm_head=w8 --random-weights 0 --programs-only
                        --max-len 2048

in a process of its own. A compile that stops is listed with the first line of its error (which names the limit).
Decode tokens/s is modeled (flightc.sim.perf at the workload's prompt and generated tokens), never measured on a
board. Prints a markdown table (docs/models.md records it).
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

FLAGS = ["--format", "w4g128s8:16", "--layer", "lm_head=w8", "--random-weights", "0", "--programs-only",
         "--max-len", "2048"]


def compile_one(model: str, hw: str, out: Path) -> tuple[float, str | None]:
    """Seconds the compile took and, if it stopped, its error (the CLI's 'error:' line onward)."""
    from flightc.models.zoo import CONFIGS

    cli = Path(sys.executable).with_name("flightc")
    env = {**os.environ, "COLUMNS": "400"}  # one line per message
    t0 = time.perf_counter()
    proc = subprocess.run([str(cli), "compile", str(CONFIGS / model), "--hw", hw, *FLAGS, "-o", str(out)],
                          capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - t0
    if proc.returncode == 0:
        return seconds, None
    text = proc.stderr + proc.stdout
    error = next((line for line in text.splitlines() if line.startswith("error:")), text.strip()[-300:])
    return seconds, error.removeprefix("error:").strip()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", help="comma-separated folder names under flightc/models/configs (default: all)")
    ap.add_argument("--hw", default="u280,vhk158,kv260")
    ap.add_argument("--workload", default="128:512", help="PROMPT:GENERATED tokens for the modeled decode speed")
    ap.add_argument("--no-speed", action="store_true", help="compile only (the decode model takes minutes a 7B)")
    args = ap.parse_args()
    from flightc.models.zoo import zoo

    models = args.models.split(",") if args.models else zoo()
    prompt, new = (int(x) for x in args.workload.split(":"))

    from rich.progress import Progress

    from flightc.bundle import load_bundle
    from flightc.sim.perf.workload import WorkloadModel

    rows = []
    with tempfile.TemporaryDirectory(prefix="flightc-zoo-") as tmp, Progress() as bar:
        task = bar.add_task("compiling", total=len(models) * len(args.hw.split(",")))
        for model in models:
            for hw in args.hw.split(","):
                bar.update(task, description=f"{model} on {hw}")
                out = Path(tmp) / f"{model}-{hw}.flb"
                seconds, error = compile_one(model, hw, out)
                if error is None and args.no_speed:
                    rows.append(f"| {model} | {hw} | yes | {seconds:,.0f} | | | |")
                    out.unlink()
                elif error is None:
                    r = WorkloadModel(load_bundle(out), 128).request(prompt, new)
                    rows.append(f"| {model} | {hw} | yes | {seconds:,.0f} | {r.decode.tokens_per_s:,.1f} | "
                                f"{r.of_roofline:.1%} | |")
                    out.unlink()
                else:
                    rows.append(f"| {model} | {hw} | no | {seconds:,.0f} | | | {error.replace('|', '/')} |")
                bar.advance(task)
    print(f"\nflightc compile DIR --hw HW {' '.join(FLAGS)}; decode modeled at [{prompt}, {new}]\n")
    print("| model | hw | compiles | compile s | decode tokens/s (modeled) | of roofline | why not |")
    print("|---|---|---|---:|---:|---:|---|")
    for row in rows:
        print(row)


if __name__ == "__main__":
    main()
