"""Where a decode step's cycles go: busy cycles by kind of instruction, modeled for a config-folder model.

Usage: python bench/decode_breakdown.py [--model flightc/models/configs/llama2-7b] [--hw u280] [--plan w4g128s8:16]
                                        [--context 512]

Compiles the programs only (no weights), schedules the decode step at ``--context`` with the performance model and
prints, per kind of instruction (streamed MVs, MVs and MMs through a buffer, each SFU operation, loads, stores),
how many there are and the cycles their unit is busy with them, against the step's cycles and the HBM roofline
(nominal bandwidth over the bytes the step streams). Units overlap, so the busy cycles add up to more than the step;
a second table counts each cycle of the step once, for the first of a list of activities busy in it (the linear
layers' weights streaming first), which says where the cycles beyond the weights' go.
"""
from __future__ import annotations

import argparse
import time

import numpy as np
from collections import defaultdict
from pathlib import Path

from flightc.compiler.pipeline import compile_model
from flightc.compress.plan import CompressionPlan
from flightc.isa.footprint import streamed
from flightc.config import Buffer
from flightc.isa.table import MiscOp, Opcode, OutMode
from flightc.sim.perf.schedule import fetch_cycles, schedule
from flightc.sim.perf.workload import WorkloadModel


def kind_of(ins) -> str:
    if streamed(ins):
        return ("MV, values streamed from their images (P·V)" if ins.a_unsigned else
                "MV, keys streamed from their image (Q·Kᵀ)" if ins.out_mode == OutMode.ACC32 else
                "MV, weights streamed (linear layers)")
    if ins.opcode is Opcode.ST and ins.img:
        return "ST.img_col (a value column into its stream images)" if ins.img_col else \
            "ST.img (a key into its stream image)"
    if ins.opcode is Opcode.MV:
        what = ("" if ins.w_buf != Buffer.KV else " (Q·Kᵀ)" if ins.out_mode == OutMode.ACC32 else
                " (P·V, k-major)" if ins.w_kmajor else " (P·V)")
        return f"MV through the {Buffer(ins.w_buf).name} buffer{what}"
    if ins.opcode is Opcode.MISC:
        return f"SFU {MiscOp(ins.op).name}"
    return ins.opcode.name


# what a cycle of the step is spent on: the first of these with an instruction running in it
ACTIVITIES = (
    ("the linear layers' weights streaming", lambda k: k == "MV, weights streamed (linear layers)"),
    ("attention: Q·Kᵀ and P·V", lambda k: k.startswith("MV, keys") or k.startswith("MV, values") or "KV buffer" in k),
    ("attention: softmax and REQ", lambda k: k in ("SFU SOFTMAX", "SFU REQ")),
    ("attention: key and value stores", lambda k: k.startswith("ST.img")),
    ("norms", lambda k: k in ("SFU RMSNORM", "SFU LAYERNORM")),
    ("other SFU (RoPE, the gated product, DEQ)", lambda k: k.startswith("SFU")),
    ("loads and stores", lambda k: k in ("LD", "ST")),
    ("other MVs and MMs", lambda k: k in ("MV", "MM") or k.startswith("MV") or k.startswith("MM")),
)


def activities(s, progs) -> list[tuple[str, int]]:
    """(activity, cycles) of the step, each cycle counted once for the first activity busy in it; the cycles no
    unit is busy in (fetch, dispatch, tokens and barriers) last."""
    claimed = np.zeros(s.cycles + 1, bool)
    out = []
    for name, match in ACTIVITIES:
        mark = np.zeros(s.cycles + 2, np.int64)
        for core, prog in zip(s.cores, progs):
            for i, ins in enumerate(prog):
                if match(kind_of(ins)):
                    mark[core.start[i]] += 1
                    mark[core.end[i] + 1] -= 1
        busy = np.cumsum(mark)[:s.cycles + 1] > 0
        out.append((name, int((busy & ~claimed).sum())))
        claimed |= busy
    out.append(("no unit busy (fetch, dispatch, tokens, barriers)", int((~claimed).sum())))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=str(Path(__file__).resolve().parents[1] / "flightc/models/configs/llama2-7b"))
    ap.add_argument("--hw", default="u280")
    ap.add_argument("--plan", default="w4g128s8:16")
    ap.add_argument("--context", type=int, default=512)
    args = ap.parse_args()
    t0 = time.perf_counter()
    c = compile_model(Path(args.model), args.hw, CompressionPlan.parse(args.plan), max_len=args.context + 1,
                      max_prefill=1, prefill_lengths=[1], random_weights=0, weights=False)
    wm = WorkloadModel(c.bundle)
    progs = wm.programs(1, args.context)
    s = schedule(c.config, progs)
    busy: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for core, prog in zip(s.cores, progs):
        for i, ins in enumerate(prog):
            b = busy[kind_of(ins)]
            b[0] += 1
            b[1] += int(core.end[i] - core.start[i])
    cfg = c.config
    tb = wm.token_bytes(args.context)
    step_s = s.cycles / (cfg.clock_mhz * 1e6)
    roof_s = tb.total / cfg.mem_bytes_per_s
    print(f"{Path(args.model).name} on {cfg.name}, {args.plan}, decode at context {args.context} (modeled in "
          f"{time.perf_counter() - t0:.0f} s): {s.cycles:,} cycles, {1 / step_s:.2f} tokens/s, "
          f"{roof_s / step_s:.1%} of the HBM roofline ({1 / roof_s:.1f} tokens/s for {tb.total / 1e6:,.0f} MB)\n")
    print("| instructions | count | busy cycles | of the step |")
    print("|---|---:|---:|---:|")
    for kind, (n, cycles) in sorted(busy.items(), key=lambda kv: -kv[1][1]):
        if kind != "SYS":
            print(f"| {kind} | {n:,} | {cycles:,} | {cycles / s.cycles:.1%} |")
    n = sum(len(p) for p in progs)
    words = sum(ins.cls.words for p in progs for ins in p)
    fetch = sum(int(fetch_cycles(cfg, p).sum()) for p in progs)
    print(f"\ninstruction fetch: {n:,} instructions, {words:,} words, the fetcher busy {fetch:,} cycles "
          f"({fetch / s.cycles:.1%} of the step, ahead of the units)\n")
    print("| the step's cycles, each counted once for the first of these busy in it | cycles | of the step |")
    print("|---|---:|---:|")
    for name, cycles in activities(s, progs):
        print(f"| {name} | {cycles:,} | {cycles / s.cycles:.1%} |")


if __name__ == "__main__":
    main()
