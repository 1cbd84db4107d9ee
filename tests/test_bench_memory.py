"""The RTL testbench's memory (hw/sim_memory.py) behind the core's AXI master, in Amaranth's simulator: a burst's
first beat comes the configured latency after its request, bursts in flight are answered back to back, and a
throttled channel passes beats at its sustained rate."""
from __future__ import annotations

import pytest
from amaranth.hdl import Module
from amaranth.lib import wiring
from amaranth.sim import Simulator

from flightc.hw.axi_master import AxiMaster
from flightc.hw.sim_memory import RATE_FRAC_BITS, AxiMemory

BEAT = 8


def stream(latency: int, outstanding: int, bursts: int, beats: int, rate: float | None = None):
    """Ask for ``bursts`` bursts of ``beats`` beats, one a cycle while the master takes them: the cycles the
    requests were taken, and (cycle, data, last) of every beat."""
    m = Module()
    rate_q = None if rate is None else int(rate * BEAT * (1 << RATE_FRAC_BITS))
    m.submodules.mem = mem = AxiMemory(BEAT, 256, latency=latency, outstanding=outstanding, rate_q=rate_q)
    mem.storage.init = [1000 + i for i in range(256)]
    m.submodules.master = master = AxiMaster(BEAT, readers=1, outstanding=outstanding)
    wiring.connect(m, master.bus, mem.axi[0])
    rd = master.read[0]
    asked, got = [], []

    async def bench(ctx):
        ctx.set(rd.r.ready, 1)
        cycle = 0
        while len(got) < bursts * beats and cycle < 2000:
            k = len(asked)
            ctx.set(rd.ar.valid, k < bursts)
            ctx.set(rd.ar.payload.addr, BEAT * beats * k)
            ctx.set(rd.ar.payload.len, beats - 1)
            taken = k < bursts and ctx.get(rd.ar.ready)
            beat = (cycle, ctx.get(rd.r.payload.data), ctx.get(rd.r.payload.last)) if ctx.get(rd.r.valid) else None
            await ctx.tick()
            if taken:
                asked.append(cycle)
            if beat:
                got.append(beat)
            cycle += 1

    sim = Simulator(m)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    return asked, got


def test_bursts_in_flight_arrive_back_to_back_after_the_latency():
    asked, got = stream(latency=16, outstanding=4, bursts=4, beats=4)
    assert asked == [0, 1, 2, 3]
    assert [c for c, _, _ in got] == list(range(16, 32))  # the first beat 16 cycles on, then one a cycle
    assert [d for _, d, _ in got] == [1000 + i for i in range(16)]
    assert [c for c, _, last in got if last] == [19, 23, 27, 31]


def test_one_burst_in_flight_waits_out_the_latency_each_time():
    asked, got = stream(latency=16, outstanding=1, bursts=3, beats=4)
    assert asked == [0, 20, 40]  # the next request the cycle after the last beat
    assert [c for c, _, _ in got] == [16, 17, 18, 19, 36, 37, 38, 39, 56, 57, 58, 59]


@pytest.mark.parametrize("rate", [0.9, 0.6])
def test_a_throttled_channel_passes_its_sustained_rate(rate):
    _, got = stream(latency=2, outstanding=4, bursts=8, beats=8, rate=rate)
    span = got[-1][0] - got[0][0]
    assert [d for _, d, _ in got] == [1000 + i for i in range(64)]
    assert 63 / span == pytest.approx(rate, rel=0.03)


def write_burst_stream(latency: int, outstanding: int, bursts: int):
    """Offer ``bursts`` single-beat write bursts (address and beat together) a cycle at a time, taking every
    response: the cycles each burst was taken and each response came, and the memory's words after."""
    m = Module()
    m.submodules.mem = mem = AxiMemory(BEAT, 256, latency=latency, outstanding=outstanding)
    m.submodules.master = master = AxiMaster(BEAT, readers=1, outstanding=outstanding)
    wiring.connect(m, master.bus, mem.axi[0])
    wr = master.write
    taken, responses, words = [], [], []

    async def bench(ctx):
        ctx.set(wr.b.ready, 1)
        for cycle in range(200):
            k = len(taken)
            ctx.set(wr.aw.valid, k < bursts)
            ctx.set(wr.w.valid, k < bursts)
            ctx.set(wr.aw.payload.addr, BEAT * (k + 3))
            ctx.set(wr.w.payload.data, 0x5000 + k)
            ctx.set(wr.w.payload.strb, 0xFF)
            ctx.set(wr.w.payload.last, 1)
            went = k < bursts and ctx.get(wr.aw.ready) and ctx.get(wr.w.ready)
            answered = ctx.get(wr.b.valid)
            await ctx.tick()
            if went:
                taken.append(cycle)
            if answered:
                responses.append(cycle)
        words.extend(ctx.get(mem.storage.data[3 + k]) for k in range(bursts))

    sim = Simulator(m)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    return taken, responses, words


def test_writes_stay_in_flight_and_answer_after_the_latency():
    """Write bursts go a cycle each while fewer than ``outstanding`` await their responses; each response comes
    ``latency`` cycles after its beat, and the next burst goes the cycle after a response frees a place."""
    taken, responses, words = write_burst_stream(latency=16, outstanding=4, bursts=6)
    assert words == [0x5000 + k for k in range(6)]
    assert taken[:4] == [0, 1, 2, 3]
    assert responses[:4] == [16, 17, 18, 19]
    assert taken[4:] == [17, 18]  # a place frees the cycle after each response
    assert responses[4:] == [33, 34]
