"""The buffer bank's arbitration (hw/buffers.py) in Amaranth's simulator: its round robin grants the first requester
after the last grant (one-hot), as a plain Python round robin does, and the LD lanes share one write path a bank, each
lane past the first writing only its own bank."""
from __future__ import annotations

import random
import re

import pytest
from amaranth.hdl import ClockDomain, Module, Signal
from amaranth.sim import Simulator

from flightc.config import PRESETS, Buffer
from flightc.hw.buffers import _arbiter
from flightc.hw.core import buffer_bank


def round_robin(last: int, wants: list[bool]) -> int | None:
    n = len(wants)
    for j in range(1, n + 1):
        if wants[(last + j) % n]:
            return (last + j) % n
    return None


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 37])  # pairwise up to PAIRWISE_MOST, a carry chain past it
def test_arbiter_is_a_round_robin(n):
    m = Module()
    m.domains.sync = ClockDomain()  # (one requester has nothing to remember: no register of its own)
    want = Signal(n)
    any_, grant = _arbiter(m, "t", [want[i] for i in range(n)])
    sim = Simulator(m)
    sim.add_clock(1e-6)
    rng = random.Random(n)
    seen = set()

    async def bench(ctx):
        last = 0
        for _ in range(1500):
            bits = rng.getrandbits(n) & (rng.getrandbits(n) if rng.random() < 0.5 else -1)
            wants = [bool(bits >> i & 1) for i in range(n)]
            ctx.set(want, bits)
            expect = round_robin(last, wants)
            assert bool(ctx.get(any_)) == (expect is not None)
            if expect is not None:
                assert ctx.get(grant) == 1 << expect, (last, wants)  # one-hot
                seen.add(expect)
                last = expect
            await ctx.tick()

    sim.add_testbench(bench)
    sim.run()
    assert seen == set(range(n))  # every requester was granted at some point


@pytest.mark.parametrize("case", ["banks", "one memory"])
def test_ld_lanes_share_a_write_a_bank_and_other_writers_go_beside_them(case):
    """hbm4 banks WGT, PRM and KV. "banks": LD lanes 0 and 1 write bank 1 (KV, WGT: lane 1 writes only its own bank,
    lane 0 any), lane 2 bank 2's PRM, the MPE bank 0's ACC: the LD lanes' writes to one bank go one a cycle (their
    shared path), everything else in the same cycle. "one memory": lane 0 writes ACT, a buffer of one memory, past
    the first bank's span, beside lane 1's write to its bank. Every byte lands where it was sent."""
    cfg = PRESETS["hbm4"]
    assert Buffer.ACT not in cfg.banked_buffers and {Buffer.WGT, Buffer.PRM, Buffer.KV} <= set(cfg.banked_buffers)
    bank = buffer_bank(cfg)
    w, span = cfg.buffer_port_bytes, cfg.bank_bytes
    writers = [getattr(bank, f"port_ld{k}") for k in range(3)] + [bank.port_mpe]
    st = bank.port_st
    first = Buffer.KV if case == "banks" else Buffer.ACT
    writes = [(first, 5 * span if first is Buffer.ACT else span), (Buffer.WGT, span + 2 * w),
              (Buffer.PRM, 2 * span), (Buffer.ACC, 3 * w)]

    def word(k: int) -> int:
        return int.from_bytes(bytes([0x10 * (k + 1) + i for i in range(w)]), "little")

    sim = Simulator(bank)
    sim.add_clock(1e-6)

    async def bench(ctx):
        pending = set(range(len(writers)))
        grants = []
        while pending and len(grants) < 5:
            for k, port in enumerate(writers):
                buf, addr = writes[k]
                ctx.set(port.req, k in pending)
                ctx.set(port.we, 1)
                ctx.set(port.buf, int(buf))
                ctx.set(port.addr, addr)
                ctx.set(port.wdata, word(k))
                ctx.set(port.wmask, (1 << w) - 1)
            granted = {k for k in pending if ctx.get(writers[k].gnt)}
            grants.append(granted)
            pending -= granted
            await ctx.tick()
        for port in writers:
            ctx.set(port.req, 0)
        if case == "banks":
            assert len(grants) == 2 and {2, 3} <= grants[0] and len(grants[0] & {0, 1}) == 1, grants
        else:
            assert grants == [{0, 1, 2, 3}], grants
        for k, (buf, addr) in enumerate(writes):  # read each back through ST's port
            ctx.set(st.req, 1)
            ctx.set(st.we, 0)
            ctx.set(st.buf, int(buf))
            ctx.set(st.addr, addr)
            assert ctx.get(st.gnt)
            await ctx.tick()
            ctx.set(st.req, 0)
            assert ctx.get(st.rvalid) and ctx.get(st.rdata) == word(k)

    sim.add_testbench(bench)
    sim.run()


def _engine_reads(contiguous: bool, image: bytes, reads: list[tuple[int, int]]) -> list[tuple[int, bytes]]:
    """(cycle, bytes) of each of ``reads`` started back to back on an eager engine alone with a buffer holding
    ``image`` (tiny's words)."""
    from amaranth.lib import wiring

    from flightc.hw.buffers import BufferBank, WordEngine

    cfg = PRESETS["tiny"]
    w = cfg.buffer_port_bytes
    m = Module()
    m.submodules.bank = bank = BufferBank(cfg, ["eng", "fill"])
    m.submodules.eng = eng = WordEngine(w, max_bytes=24, eager=True, contiguous=contiguous)
    wiring.connect(m, eng.port, bank.port_eng)
    fill = bank.port_fill
    got: list[tuple[int, bytes]] = []
    sim = Simulator(m)
    sim.add_clock(1e-6)

    async def bench(ctx):
        for word in range(len(image) // w):
            ctx.set(fill.req, 1)
            ctx.set(fill.we, 1)
            ctx.set(fill.buf, int(Buffer.ACT))
            ctx.set(fill.addr, word * w)
            ctx.set(fill.wdata, int.from_bytes(image[word * w:(word + 1) * w], "little"))
            ctx.set(fill.wmask, (1 << w) - 1)
            await ctx.tick()
        ctx.set(fill.req, 0)
        pending = list(reads)
        for cycle in range(2000):
            start = bool(pending) and ctx.get(eng.ready)
            ctx.set(eng.start, start)
            if start:
                addr, count = pending.pop(0)
                ctx.set(eng.write, 0)
                ctx.set(eng.buf, int(Buffer.ACT))
                ctx.set(eng.addr, addr)
                ctx.set(eng.stride, 1)
                ctx.set(eng.count, count)
            if ctx.get(eng.done):
                count = reads[len(got)][1]
                got.append((cycle, ctx.get(eng.rdata).to_bytes(24, "little")[:count]))
            await ctx.tick()
            if len(got) == len(reads):
                break

    sim.add_testbench(bench)
    sim.run()
    return got


def test_a_contiguous_engine_reads_what_the_general_one_does_in_the_same_cycles():
    """Back-to-back eager reads of random spans: a contiguous engine returns the same bytes as the general one, its
    ``done`` in the same cycles."""
    rng = random.Random(2)
    image = bytes(rng.getrandbits(8) for _ in range(512))
    reads = [(rng.randrange(0, 480), rng.randrange(1, 25)) for _ in range(60)]
    fast, general = _engine_reads(True, image, reads), _engine_reads(False, image, reads)
    assert [data for _, data in general] == [image[a:a + n] for a, n in reads]
    assert fast == general


def test_only_ld_writes_the_weight_parameter_and_kv_banks():
    """The MPE writes only ACT and ACC (its output stage) and the SFU only its result buffers (ISA 1.8): the WGT, PRM
    and KV banks (hbm4 banks them) have no write arbiter; ACT and ACC, one memory each on hbm4, have one arbiter
    over LD lane 0, the MPE and the SFU, and their readers no multiplexer over banks."""
    from flightc.hw.hierarchy import to_verilog

    cfg = PRESETS["hbm4"]
    text = to_verilog(buffer_bank(cfg), "bank")
    for b in Buffer:
        for k in range(cfg.axi_masters):
            assert bool(re.search(rf"\bwant_wr_{b.name.lower()}{k}\b", text)) is False, (b, k)
            assert bool(re.search(rf"\bmem_{b.name.lower()}{k}\b", text)) == (b in cfg.banked_buffers), (b, k)
        assert bool(re.search(rf"\bwant_wr_{b.name.lower()}\b", text)) == (b in (Buffer.ACT, Buffer.ACC)), b
        assert bool(re.search(rf"\bmem_{b.name.lower()}\b", text)) == (b not in cfg.banked_buffers), b


def test_an_ld_lane_past_the_first_writes_only_its_own_bank():
    """In the generated Verilog, bank k's shared LD path chooses between lane 0 and lane k alone (no multiplexer over
    every lane), so a 32-master core spends a 2-way multiplexer a bank instead of a 32-way one."""
    from flightc.hw.hierarchy import to_verilog

    cfg = PRESETS["hbm4"]
    text = to_verilog(buffer_bank(cfg), "bank")
    for k in range(cfg.axi_masters):
        width = re.search(rf"wire (?:\[(\d+):0\] )?want_sh{k};", text)
        assert width and int(width.group(1) or 0) + 1 == (1 if k == 0 else 2), (k, width)
