"""A streamed MV's reader (hw/stream.py ``StreamReader``) in Amaranth's simulator: its "beats left" flag, a register
kept beside its count so that the drain decides a pop from a register, says what the count says every cycle, through
a share started, a tile read ahead of the next MV and that MV resuming it."""
from __future__ import annotations

import random

from amaranth.hdl import Signal
from amaranth.sim import Simulator

from flightc.config import PRESETS
from flightc.hw.axi import AXI_ADDR_BITS
from flightc.hw.stream import StreamReader


def test_a_readers_beats_left_flag_follows_its_count():
    cfg = PRESETS["tiny"]
    bases = [Signal(AXI_ADDR_BITS, name=f"base{c}") for c in range(cfg.mem_channels)]
    rdr = StreamReader(cfg, 0, bases)
    unit_beats = cfg.stripe_bytes // cfg.axi_data_bytes
    rng = random.Random(7)
    seen = {"cycles": 0, "nonzero": 0, "resumed": 0}

    async def bench(ctx):
        pending: list[int] = []  # beats of bursts granted, not yet returned

        async def cycle(ready_p: float = 0.5):
            assert seen["cycles"] < 5000, "the reader's share never drained"
            ctx.set(rdr.rd.ar.ready, 1)
            if ctx.get(rdr.rd.ar.valid):
                pending.extend([0] * unit_beats)
            ctx.set(rdr.rd.r.valid, bool(pending) and rng.random() < 0.8)
            if ctx.get(rdr.rd.r.valid):
                pending.pop()
            ctx.set(rdr.beats.ready, rng.random() < ready_p)
            await ctx.tick()
            left, flag = ctx.get(rdr.left), ctx.get(rdr.any_left)
            assert flag == (left != 0), (seen["cycles"], left, flag)
            seen["cycles"] += 1
            seen["nonzero"] += left != 0

        for rounds in (3, 0, 2):
            # a share started, then half of it popped
            ctx.set(rdr.covers, 1), ctx.set(rdr.rounds, rounds), ctx.set(rdr.any_rounds, rounds != 0)
            ctx.set(rdr.start, 1)
            await cycle()
            ctx.set(rdr.start, 0)
            while ctx.get(rdr.asking):  # (a tile is read ahead once every burst of this one was asked for)
                await cycle()
            # the next MV's tile read ahead while this one drains, then resumed once every beat was popped
            ctx.set(rdr.rounds, 1), ctx.set(rdr.any_rounds, 1), ctx.set(rdr.start, 1), ctx.set(rdr.ahead, 1)
            await cycle()
            ctx.set(rdr.start, 0), ctx.set(rdr.ahead, 0)
            while ctx.get(rdr.left):
                await cycle(ready_p=0.7)
            ctx.set(rdr.resume, 1)
            await cycle(ready_p=0.0)
            ctx.set(rdr.resume, 0)
            seen["resumed"] += ctx.get(rdr.left) == cfg.channels_per_master * unit_beats
            while ctx.get(rdr.left):
                await cycle(ready_p=0.7)

    sim = Simulator(rdr)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    assert seen["nonzero"] > 10 and seen["resumed"] == 3, seen
