"""The streamed MV's tile plan (hw/tile_plan.py), simulated: its pairs, beats, rounds, FIFO fit and masters equal
the stream's shape as the compiler lays it out (flightc.isa.footprint.stream_shape), TILE_PLAN_STAGES cycles after
its fields are held, for every format a lane group cuts, on one master (tiny) and on 32 (u280)."""
from __future__ import annotations

import numpy as np
import pytest
from amaranth.sim import Simulator

from flightc.compress.formats import WeightFormat
from flightc.config import PRESETS
from flightc.errors import ProgramError
from flightc.hw.lane_group import config_kinds, formats
from flightc.hw.latency_rules import TILE_PLAN_STAGES
from flightc.hw.tile_plan import TilePlan
from flightc.isa.codec import make
from flightc.isa.footprint import stream_shape
from flightc.isa.table import OutMode


def _tiles(cfg, rng, count: int) -> list:
    per, out = cfg.channels_per_master, []
    fmts = [f[3] for f in formats(cfg.lane_slots, config_kinds(cfg))]
    while len(out) < count:
        fmt = fmts[rng.integers(len(fmts))]
        if rng.integers(2) and fmt.sparsity == 0 and fmt.bits in (4, 8):  # grouped: every group size of the ISA
            fmt = WeightFormat(fmt.bits, group=int(1 << rng.integers(5, 8)))
        groups = 1 << int(rng.integers(0, cfg.axi_masters.bit_length()))
        first = int(rng.integers(0, cfg.axi_masters // groups)) * groups
        k = int(rng.integers(1, 9)) * max(fmt.group or 1, cfg.lane_slots) - int(rng.integers(2)) * (fmt.group or 0)
        mv = make("MV", n=int(rng.integers(1, 3000 if rng.integers(2) else 64)), k=min(max(k, fmt.group or 1),
                                                                                           cfg.lane_k_max),
                  a_addr=0, w_bits=fmt.bits_code,
                  sparsity=fmt.sparsity, sparse_enc=fmt.chosen, group_log2=fmt.group_log2, out_mode=OutMode.ACC32,
                  out_addr=0, w_stream=1,
                  w_channel=first * per, w_hbm_addr=cfg.stripe_bytes * int(rng.integers(0, 64)),
                  w_stripe=groups * per)
        try:
            out.append((mv, stream_shape(cfg, mv)))
        except ProgramError:  # a K the format does not cut: another
            continue
    return out


@pytest.mark.parametrize("preset", ["tiny", "u280", "hbm4"])
def test_the_tile_plan_is_the_streams_shape(preset):
    cfg = PRESETS[preset]
    tiles = _tiles(cfg, np.random.default_rng(3), 32)
    plan = TilePlan(cfg)
    per = cfg.channels_per_master
    seen = []

    async def bench(ctx):
        for mv, shape in tiles:
            for port, value in (("bits_code", mv.w_bits), ("sparsity", mv.sparsity), ("sparse_enc", mv.sparse_enc),
                                ("group_log2", mv.group_log2),
                                ("k", mv.k), ("n", mv.n), ("w_channel", mv.w_channel), ("w_stripe", mv.w_stripe),
                                ("w_hbm_addr", mv.w_hbm_addr)):
                ctx.set(getattr(plan, port), value)
            ctx.set(plan.restart, 1)
            await ctx.tick()
            ctx.set(plan.restart, 0)
            cycles = 0
            while not ctx.get(plan.valid):
                await ctx.tick()
                cycles += 1
            seen.append((cycles, {p: ctx.get(getattr(plan, p)) for p in
                                  ("chunks", "pairs", "span", "g0", "covers", "rounds", "any_rounds", "fits",
                                   "hbm_addr")}))

    sim = Simulator(plan)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    for (mv, shape), (cycles, got) in zip(tiles, seen, strict=True):
        assert cycles == TILE_PLAN_STAGES
        rounds = shape.group_bytes // (shape.unit * shape.per_group)
        g0 = mv.w_channel // per
        want = {"chunks": -(-shape.k // cfg.lane_slots), "pairs": shape.pairs, "span": shape.groups, "g0": g0,
                "covers": sum(1 << g for g in range(g0, g0 + shape.groups)), "rounds": rounds,
                "any_rounds": int(rounds != 0), "fits": int(shape.group_bytes // shape.beat <= cfg.lane_fifo_beats),
                "hbm_addr": mv.w_hbm_addr}
        assert got == want, (mv, shape)
