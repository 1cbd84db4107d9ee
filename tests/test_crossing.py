"""What a core's signals pass on their way across an SLR boundary, in Amaranth's simulator: a register slice
(hw/crossing.py) hands on every beat once, in order, a beat a cycle when nothing stalls; the write router
(hw/write_router.py) deals ST's two writers' bursts to their masters in the order ST sent them, with the masters
stalling at random, through register slices (a kernel of several cores) as straight (one core)."""
from __future__ import annotations

import random

import pytest
from amaranth.hdl import ClockDomain, Module
from amaranth.sim import Simulator

from flightc.config import PRESETS
from flightc.hw.crossing import RegisterSlice
from flightc.hw.write_router import WriteRouter


def run_slice(beats: list[int], stall: float, seed: int) -> tuple[list[int], int]:
    """Offer ``beats`` (holding each until taken) while the far side stalls a ``stall`` share of cycles: what came
    out, and the cycles it took."""
    m = Module()
    m.submodules.s = s = RegisterSlice(16)
    rng = random.Random(seed)
    got, cycles = [], []

    async def bench(ctx):
        k, cycle = 0, 0
        while len(got) < len(beats) and cycle < 20 * len(beats) + 20:
            ctx.set(s.i.valid, k < len(beats))
            ctx.set(s.i.payload, beats[k] if k < len(beats) else 0)
            ready = rng.random() >= stall
            ctx.set(s.o.ready, ready)
            taken = k < len(beats) and ctx.get(s.i.ready)
            out = ctx.get(s.o.payload) if ctx.get(s.o.valid) and ready else None
            await ctx.tick()
            k += taken
            if out is not None:
                got.append(out)
            cycle += 1
        cycles.append(cycle)

    sim = Simulator(m)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    return got, cycles[0]


def test_a_register_slice_passes_every_beat_once_in_order_a_beat_a_cycle():
    beats = list(range(1000, 1100))
    got, cycles = run_slice(beats, stall=0.0, seed=1)
    assert got == beats and cycles == len(beats) + 1  # one cycle's latency, then a beat a cycle
    for seed in range(3):
        got, _ = run_slice(beats, stall=0.4, seed=seed)
        assert got == beats


CFG = PRESETS["hbm4"]  # four masters, 64-byte beats


def route(stages: int, seed: int, rounds: list[list[tuple[int, int]]]) -> tuple[dict, dict]:
    """ST's way of writing: each round the first writer's write and, in some, the second writer's (to another
    master), each (master, address) offered (address and beat together) until taken, the next round once both are;
    the masters take addresses and beats at random. Per master: the (address, beat's first word) pairs in the order
    its write channels took them (the beat matched to the address taken in the same place of its own channel's
    order), and the addresses in the order ST offered them."""
    m = Module()
    m.domains.sync = ClockDomain()  # (straight, the router has no registers of its own)
    m.submodules.r = r = WriteRouter(CFG, stages)
    rng = random.Random(seed)
    aws = {g: [] for g in range(CFG.axi_masters)}
    ws = {g: [] for g in range(CFG.axi_masters)}
    issued = {g: [] for g in range(CFG.axi_masters)}

    def masters_take(ctx, stall: bool) -> list[tuple]:
        """Each master ready for an address and a beat (at random while ``stall``): what each takes this cycle."""
        for x in r.bus:
            ctx.set(x.awready, rng.random() < 0.5 if stall else 1)
            ctx.set(x.wready, rng.random() < 0.5 if stall else 1)
        return [(g, ctx.get(x.awvalid) and ctx.get(x.awready), ctx.get(x.awaddr),
                 ctx.get(x.wvalid) and ctx.get(x.wready), ctx.get(x.wdata) & 0xFFFFFFFF) for g, x in enumerate(r.bus)]

    def record(seen: list[tuple]) -> None:
        for g, took_address, addr, took_beat, word in seen:
            if took_address:
                aws[g].append(addr)
            if took_beat:
                ws[g].append(word)

    async def bench(ctx):
        wr = (r.core.wr, r.core.wr2)
        sel = (r.core.master, r.core.master2)
        left = list(rounds)
        offered: dict = {}
        for _ in range(20 * len(rounds) + 50):
            if not offered:
                if not left:
                    break
                offered = dict(enumerate(left.pop(0)))
                for g, a in offered.values():
                    issued[g].append(a)
                done = {(k, ch): False for k in offered for ch in ("aw", "w")}
            for k in (0, 1):
                o = offered.get(k)
                ctx.set(wr[k].aw.valid, o is not None and not done[k, "aw"])
                ctx.set(wr[k].w.valid, o is not None and not done[k, "w"])
                if o is not None:
                    ctx.set(sel[k], o[0])
                    ctx.set(wr[k].aw.payload.addr, o[1])
                    ctx.set(wr[k].aw.payload.len, 0)
                    ctx.set(wr[k].w.payload.data, o[1] * 3 + 1)
                    ctx.set(wr[k].w.payload.strb, (1 << 64) - 1)
                    ctx.set(wr[k].w.payload.last, 1)
            seen = masters_take(ctx, stall=True)
            took = {(k, ch): not done[k, ch] and ctx.get(getattr(wr[k], ch).ready)
                    for k in offered for ch in ("aw", "w")}
            await ctx.tick()
            record(seen)
            for key, t in took.items():
                done[key] = done[key] or t
            if all(done.values()):
                offered = {}
        for k in (0, 1):
            ctx.set(wr[k].aw.valid, 0)
            ctx.set(wr[k].w.valid, 0)
        for _ in range(10):  # what is still on its way
            seen = masters_take(ctx, stall=False)
            await ctx.tick()
            record(seen)

    sim = Simulator(m)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    return {g: list(zip(aws[g], ws[g])) + [("unmatched", len(aws[g]), len(ws[g]))] * (len(aws[g]) != len(ws[g]))
            for g in aws}, issued


@pytest.mark.parametrize("stages", [0, 1, 2])
def test_the_write_router_deals_each_master_its_writes_in_st_order(stages):
    """Every write reaches its master once, its beat with its address, in the order ST offered that master's
    writes; the same through register slices as straight."""
    rng = random.Random(7)
    rounds, addr = [], 0
    for _ in range(80):
        first = rng.randrange(CFG.axi_masters)
        addr += 64
        this = [(first, addr)]
        if rng.random() < 0.6:
            addr += 64
            this.append(((first + rng.randrange(1, CFG.axi_masters)) % CFG.axi_masters, addr))
        rounds.append(this)
    got, issued = route(stages, seed=stages + 11, rounds=rounds)
    assert sum(len(v) for v in issued.values()) == sum(len(r) for r in rounds)
    for g in range(CFG.axi_masters):
        assert got[g] == [(a, (a * 3 + 1) & 0xFFFFFFFF) for a in issued[g]]
