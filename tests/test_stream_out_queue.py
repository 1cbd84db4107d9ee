"""The output stage's operand queues (hw/stream_out.py ``ByteQueue``: a ring of whole words read at a byte offset)
in Amaranth's simulator: every record and residual taken from the head is the stream's next, from any base byte,
with words asked for and popped at random, the ring as full as the queue's counts let it get."""
from __future__ import annotations

import random

import pytest
from amaranth.hdl import Elaboratable, Module, Signal
from amaranth.sim import Simulator

from flightc.hw.stream_out import ByteQueue
from flightc.isa.table import BUF_ADDR_BITS
from flightc.records import REQUANT


class QueueBench(Elaboratable):
    """One queue with its decisions (a word asked for, its arrival, a pop) and its stream's start as inputs."""

    def __init__(self, word: int, take: int):
        self.word_bytes, self.take = word, take
        self.start, self.base, self.nbytes = Signal(), Signal(BUF_ADDR_BITS), Signal(BUF_ADDR_BITS)
        self.ask, self.arrived, self.arrived_first, self.pop = Signal(), Signal(), Signal(), Signal()
        self.word = Signal(8 * word)
        self.head, self.wants, self.ready = Signal(8 * take), Signal(), Signal()
        self.next, self.first = Signal(BUF_ADDR_BITS), Signal()

    def elaborate(self, platform):
        m = Module()
        q = ByteQueue(m, "q", self.word_bytes, self.take)
        q.update(self.ask, self.arrived, self.word, self.arrived_first, self.pop)
        with m.If(self.start):  # (after the update, as in the output stage's FSM: a start's assignments win)
            m.d.sync += q.start(self.base, self.nbytes, self.nbytes != 0)
        m.d.comb += [self.head.eq(q.head), self.wants.eq(q.wants), self.ready.eq(q.ready), self.next.eq(q.next),
                     self.first.eq(q.first)]
        return m


def memory_byte(addr: int) -> int:
    return (addr * 7 + addr // 13) % 256


@pytest.mark.parametrize("word, take", [(8, REQUANT.size), (8, 4), (32, REQUANT.size), (64, REQUANT.size), (64, 4)])
def test_every_take_is_the_streams_next_bytes(word, take):
    bench = QueueBench(word, take)
    rng = random.Random(word * 100 + take)
    seen = {"pops": 0, "full": 0}

    async def run(ctx):
        for stream in range(12):
            base = rng.randrange(0, 2000) if stream % 3 else rng.randrange(0, 2000 // word) * word
            items = rng.randrange(1, 40)
            ask_p, pop_p = rng.choice((0.2, 1.0)), rng.choice((0.1, 0.6, 1.0))
            ctx.set(bench.start, 1), ctx.set(bench.base, base), ctx.set(bench.nbytes, items * take)
            await ctx.tick()
            ctx.set(bench.start, 0)
            asked, popped = None, 0
            for cycle in range(2000):
                if popped == items:
                    break
                ctx.set(bench.arrived, asked is not None)
                if asked is not None:
                    addr, first = asked
                    ctx.set(bench.word, int.from_bytes(bytes(memory_byte(addr + i) for i in range(word)), "little"))
                    ctx.set(bench.arrived_first, first)
                ask = ctx.get(bench.wants) and rng.random() < ask_p
                asked = (ctx.get(bench.next), ctx.get(bench.first)) if ask else None
                pop = ctx.get(bench.ready) and rng.random() < pop_p
                seen["full"] += ctx.get(bench.ready) and not ctx.get(bench.wants)
                ctx.set(bench.ask, ask), ctx.set(bench.pop, pop)
                if pop:
                    at = base + popped * take
                    want = int.from_bytes(bytes(memory_byte(at + i) for i in range(take)), "little")
                    assert ctx.get(bench.head) == want, (stream, popped, hex(ctx.get(bench.head)), hex(want))
                    popped += 1
                    seen["pops"] += 1
                await ctx.tick()
            else:
                raise AssertionError(f"stream {stream}: {popped} of {items} taken in 2000 cycles")
            ctx.set(bench.ask, 0), ctx.set(bench.pop, 0), ctx.set(bench.arrived, 0)
            await ctx.tick()

    sim = Simulator(bench)
    sim.add_clock(1e-8)
    sim.add_testbench(run)
    sim.run()
    assert seen["pops"] > 100 and seen["full"] > 0, seen  # records taken, and the queue filled up (a pop-starved run)
