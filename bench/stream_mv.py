"""How fast a streamed MV takes its weights, by format: the timing contract (sim/perf/streamed.py), modeled.

Usage: python bench/stream_mv.py [--hw hbm4] [--rows 1024] [--k 4096] [--slots 64] [--out REQ_I8]

One MV of ``rows`` x ``k`` weights streamed over every channel of the config (which decodes positions and
bitmasks), on its own: its busy cycles, the stream bytes each channel carries per cycle, and that as a fraction of
a channel's sustained rate. W4 and W8 (dense and 8:16 with positions) fill a 64-column lane group from a 64-byte
beat, so they run at the channels' rate; narrower or sparser formats carry fewer bytes per 64 columns and are bound
by the lane groups' one chunk a cycle, or, with ``--slots 128``, by the output stage's one result a cycle
(``--out ACC32``: raw sums, a word of row pairs a cycle).
"""
from __future__ import annotations

import argparse
import time

from flightc.compress.formats import WeightFormat
from flightc.config import load_config
from flightc.hw.lane_group import RTL_ENCODINGS
from flightc.isa.codec import make
from flightc.isa.table import OutMode
from flightc.sim.perf.memory import channel_bytes_per_cycle
from flightc.sim.perf.timing import instruction_work

FORMATS = ("w4g128", "w4g128s8:16p", "w4g128s8:16m", "w8", "w8s8:16p", "w8s8:16m", "w3g128", "w2g64", "w4g128s4:16p",
           "w4g128s2:16p")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hw", default="hbm4")
    ap.add_argument("--rows", type=int, default=1024)
    ap.add_argument("--k", type=int, default=4096)
    ap.add_argument("--slots", type=int, help="lane_slots (default: the config's)")
    ap.add_argument("--out", default="REQ_I8", choices=[m.name for m in OutMode])
    args = ap.parse_args()
    cfg = load_config(args.hw)
    cfg = cfg.replace(lane_slots=args.slots or cfg.lane_slots, sparse_encodings=RTL_ENCODINGS)
    cfg = cfg.replace(lane_act_kib=max(cfg.lane_act_kib, -(-args.k // 1024)))
    rate = channel_bytes_per_cycle(cfg)
    print(f"{cfg.name}: {cfg.mem_channels} channels, {cfg.axi_masters} masters x {cfg.lane_slots} DSP slots, "
          f"{rate:.1f} bytes a cycle sustained per channel; one {args.rows} x {args.k} MV ({args.out})\n")
    print("| format | stream bytes | cycles | bytes / cycle / channel | of sustained | modeled in |")
    print("|---|---:|---:|---:|---:|---:|")
    for spec in FORMATS:
        fmt = WeightFormat.parse(spec)
        mv = make("MV", n=args.rows, k=args.k, w_bits=fmt.bits_code, sparsity=fmt.sparsity,
                  group_log2=fmt.group_log2, sparse_enc=fmt.chosen, out_mode=OutMode[args.out], w_stream=1, w_channel=0,
                  w_stripe=cfg.mem_channels)
        t = time.perf_counter()
        work = instruction_work(cfg, mv)
        took = time.perf_counter() - t
        per = work.hbm_bytes / cfg.mem_channels / work.cycles
        print(f"| {fmt.label()} | {work.hbm_bytes:,} | {work.cycles:,} | {per:.1f} | {per / rate:.1%} | {took:.2f} s |")


if __name__ == "__main__":
    main()
