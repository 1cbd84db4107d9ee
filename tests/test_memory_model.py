"""The performance model's memory: LD's latency and bursts in flight, the channel's sustained rate, and channels
shared by every unit and core (its agreement with the RTL is in tests/rtl/test_perf_calibration.py)."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import compiled
from flightc.config import PRESETS, Buffer
from flightc.isa.codec import decode_program, make
from flightc.isa.table import SysOp
from flightc.sim.perf.load import load_cycles, row_bursts
from flightc.sim.perf.memory import channel_bytes_per_cycle, throttled
from flightc.sim.perf.schedule import schedule

TINY = PRESETS["tiny"]
WINDOW = 1000


def load(nbytes: int, channel: int = 0, addr: int = 0, buf_addr: int = 0, rows: int = 1):
    return make("LD", buf=Buffer.WGT, buf_addr=buf_addr, channel=channel, hbm_addr=addr, rows=rows,
                row_bytes=nbytes, hbm_stride=nbytes, buf_stride=nbytes)


def busiest_window(s, cfg) -> dict[int, float]:
    """Per channel, the most bytes any WINDOW consecutive cycles carry, each transfer's bytes spread evenly over
    the stretch of its channel the schedule charged them to."""
    per: dict[int, list[tuple[int, int, int]]] = {}
    for ch, n, a, b in s.transfers:
        assert b > a >= 0
        per.setdefault(ch, []).append((a, b, n))
    moved = sum(int(core.hbm_bytes.sum()) for core in s.cores)
    assert sum(n for spans in per.values() for _, _, n in spans) == moved  # every byte is charged
    out = {}
    for ch, spans in per.items():
        end = max(b for _, b, _ in spans) + WINDOW
        density = np.zeros(end + 1)
        for a, b, n in spans:
            density[a] += n / (b - a)
            density[b] -= n / (b - a)
        per_cycle = np.cumsum(density)[:end]
        carried = np.concatenate([[0.0], np.cumsum(per_cycle)])
        out[ch] = float((carried[WINDOW:] - carried[:-WINDOW]).max())
    return out


def test_latency_is_paid_once_per_instruction_when_enough_bursts_are_in_flight():
    deep = TINY.replace(axi_outstanding=8, lane_fifo_beats=256)  # 8 x 16 beats in flight cover either latency
    slow = deep.replace(mem_latency_cycles=TINY.mem_latency_cycles + 40)
    small, big = load(64), load(64 << 10)
    assert load_cycles(slow, small) - load_cycles(deep, small) == 40
    assert load_cycles(slow, big) - load_cycles(deep, big) == 40
    beats = (64 << 10) // TINY.axi_data_bytes
    assert beats < load_cycles(TINY, big) < beats + TINY.mem_latency_cycles + 8  # a beat a cycle
    # too few in flight for the latency: each group of bursts waits for it
    assert load_cycles(slow.replace(axi_outstanding=4), big) > 1.1 * load_cycles(slow, big)


def test_one_burst_in_flight_pays_the_latency_per_burst():
    one = TINY.replace(axi_outstanding=1)
    ins = load(64 << 10)
    bursts = sum(n for _, n in row_bursts(0, 0, 64 << 10, TINY.axi_data_bytes, TINY.axi_burst_beats))
    assert load_cycles(one, ins) >= bursts * (TINY.mem_latency_cycles + TINY.axi_burst_beats - 1)
    assert load_cycles(one, ins) > 1.8 * load_cycles(TINY, ins)


def test_a_throttled_channel_streams_at_its_sustained_rate():
    u280 = PRESETS["u280"]
    assert throttled(u280)  # 14.375 GB/s x 425/460 at 225 MHz: 59 of a 64-byte beat a cycle
    nbytes = 512 << 10
    cycles = load_cycles(u280, load(nbytes))
    assert cycles == pytest.approx(nbytes / channel_bytes_per_cycle(u280) + u280.mem_latency_cycles, abs=8)


def test_row_bursts_split_at_4k_and_at_the_burst_length():
    w, beats = 8, 16
    runs = row_bursts(100, 3, 10_000, w, beats)
    total = sum(s.beats * n for s, n in runs)
    assert total == -(-(100 + 10_000) // w) - 100 // w
    # a straddling shift costs every middle beat a second write
    assert any(s.inner == 2 * (s.beats - 1) for s, _ in runs)
    aligned = row_bursts(0, 0, 1 << 20, 64, 16)
    assert aligned == [(aligned[0][0], (1 << 20) // 1024)] and aligned[0][0].inner == 15


@st.composite
def transfers(draw):
    """Loads and stores of random sizes over two channels, on one to three cores."""
    cores = draw(st.integers(1, 3))
    programs = []
    for _ in range(cores):
        prog = []
        for _ in range(draw(st.integers(1, 12))):
            n = draw(st.integers(1, 6000))
            ch = draw(st.integers(0, 1))
            if draw(st.booleans()):
                prog.append(load(n, ch, addr=draw(st.integers(0, 64))))
            else:
                prog.append(make("ST", buf=Buffer.ACC, buf_addr=0, channel=ch, hbm_addr=0, rows=1, row_bytes=min(n, 2048),
                                 hbm_stride=n, buf_stride=n))
        prog.append(make("SYS", op=SysOp.END))
        programs.append(prog)
    return programs


@settings(max_examples=60, deadline=None)
@given(transfers())
def test_no_schedule_carries_more_than_a_channel_sustains(programs):
    cfg = TINY.replace(num_cores=len(programs), axi_masters=TINY.mem_channels)  # a master per channel, core
    s = schedule(cfg, programs)
    rate = channel_bytes_per_cycle(cfg)
    for ch, most in busiest_window(s, cfg).items():
        assert most <= rate * WINDOW * (1 + 1e-9), f"channel {ch}: {most:.0f} bytes in {WINDOW} cycles"
    for core in s.cores:  # and no transfer ends before its bytes are through
        sel = core.hbm_bytes > 0
        assert (core.end[sel] >= core.mem_end[sel]).all()


def test_compiled_steps_stay_within_every_channel():
    c = compiled("tiny-llama", "w4g32")
    for kind, n in (("prefill", 8), ("decode", 9)):
        s = schedule(c.config, [decode_program(p) for p in c.bundle.program(kind, n)])
        rate = channel_bytes_per_cycle(c.config)
        assert s.cycles and all(most <= rate * WINDOW * (1 + 1e-9) for most in busiest_window(s, c.config).values())


def test_two_streams_on_one_channel_share_it():
    """Two cores streaming from one throttled channel take about twice as long as one."""
    cfg = PRESETS["u280"].replace(num_cores=2, mem_channels=2, axi_masters=2)  # core 1 reaches channel 0 too
    one = [load(256 << 10, 0), make("SYS", op=SysOp.END)]
    idle = [make("SYS", op=SysOp.END)]
    alone = schedule(cfg, [one, idle]).cycles
    both = schedule(cfg, [one, one]).cycles
    apart = schedule(cfg, [one, [load(256 << 10, 1), make("SYS", op=SysOp.END)]]).cycles
    assert both == pytest.approx(2 * alone, rel=0.03)
    assert apart == pytest.approx(alone, rel=0.01)


def test_the_next_load_asks_for_its_bursts_while_the_last_one_drains():
    """Two LDs back to back pay the memory's latency once: the second one's bursts follow the first one's."""
    a, b = load(8 << 10, 0), load(8 << 10, 1, buf_addr=8 << 10)
    end = make("SYS", op=SysOp.END)
    both = schedule(TINY, [[a, b, end]])
    one = schedule(TINY, [[a, end]])
    beats = (8 << 10) // TINY.axi_data_bytes
    assert both.cycles - one.cycles < beats + 8  # the second LD's data, with no second wait for the latency
    assert both.busy_per_class()["LD"] == both.cores[0].end.max() - both.cores[0].start.min()  # counted once


@pytest.fixture(scope="module")
def llama2_7b_u280():
    """LLaMA2-7B's programs for u280 (W4 g128 8:16, LM head W8 by the plan's default), without packing weights."""
    from pathlib import Path

    from flightc.compiler.pipeline import compile_model
    from flightc.compress.plan import CompressionPlan

    configs = Path(__file__).resolve().parents[1] / "flightc" / "models" / "configs"
    return compile_model(configs / "llama2-7b", "u280", CompressionPlan.parse("w4g128s8:16"), max_len=16,
                         max_prefill=1, prefill_lengths=[1], random_weights=0, weights=False)


def test_llama2_7b_weights_stream_at_the_sustained_bandwidth_of_every_channel(llama2_7b_u280):
    """Modeled on u280 (a master per pseudo-channel, every tile's stream image striped over a core's 8): the
    streamed MVs of one LLaMA2-7B decode step reach at least 92% of the sustained 24 x 14.375 x 425 / 460 = 318.75
    GB/s, every channel carrying an equal share."""
    from flightc.isa.footprint import stripe_layout
    from flightc.sim.perf.stream import weight_stream

    c = llama2_7b_u280
    w = weight_stream(c.bundle, "decode", 8)
    print(w)
    assert w.sustained_gbps == pytest.approx(318.75)
    assert w.fraction >= 0.92
    per_channel = np.zeros(c.config.mem_channels)
    for r in c.bundle.manifest.memory_map["regions"]:
        if r["kind"] == "weight":
            for ch, _, n in stripe_layout(r["channel"], r["addr"], r["nbytes"], r["stripe"], r["unit"]):
                per_channel[ch] += n
    assert per_channel.min() > 0.97 * per_channel.max()


def test_the_bytes_a_decode_step_moves_are_the_bundles_weights_records_and_kv_rows(llama2_7b_u280):
    """The roofline's bytes cannot drift from what the programs move: the bytes the model's schedule of a 7B decode
    step reads equal, within 1%, the bundle's weight regions (values, positions, multipliers) and record regions
    plus the K/V rows the step reads (the keys as their stream reads them); the rest (embedding row, norm gains,
    RoPE rows) is under 1%."""
    from flightc.sim.perf.workload import WorkloadModel

    c = llama2_7b_u280
    wm = WorkloadModel(c.bundle)
    pos = 12
    report = wm.step(1, pos)
    tb = wm.token_bytes(pos)
    regions = c.bundle.manifest.memory_map["regions"]
    weights = sum(r["nbytes"] for r in regions if r["kind"] == "weight")
    records = sum(r["nbytes"] for r in regions if r["kind"] == "param" and r["name"].endswith(".r"))
    spec = c.bundle.manifest.model
    cfg = c.config
    # INT8 K and V streamed from their images (flightc.compress.stream), each core's KV heads (in proportion to its
    # channels: 32 heads x 8 / 24 channels, floored at each core's bounds: 10, 11 and 11 on u280's three cores of 8
    # masters) over its own lane groups, a group's share read in whole
    # stripe units: the keys in whole row pairs (2 x head_dim bytes) of each of the core's groups; the values, one
    # image a head, head_dim / 64 row pairs a group one after another, each pair's record read for whole chunks of
    # 64 positions (2 x 64 bytes each)
    d, window, unit = spec["head_dim"], pos + 1, cfg.stripe_bytes
    assert cfg.num_cores == 3 and [cfg.core(k).axi_masters for k in range(3)] == [8, 8, 8]

    def units(nbytes: int) -> int:
        return -(-nbytes // unit) * unit

    kv_rows = 0
    for groups, heads in ((8, 10), (8, 11), (8, 11)):
        k_bytes = groups * units(-(-window // (2 * groups)) * 2 * d)
        v_bytes = groups * units(d // (2 * groups) * -(-window // cfg.lane_slots) * 2 * cfg.lane_slots)
        kv_rows += spec["num_layers"] * heads * (k_bytes + v_bytes)
    assert tb.weight_values + tb.sparse_indices + tb.group_scales == weights
    assert tb.requant_records == records and tb.kv_cache == kv_rows
    core = weights + records + kv_rows
    print(f"model {report.hbm_read_bytes:,} B, regions + K/V rows {core:,} B, other {tb.other:,} B")
    assert report.hbm_read_bytes == pytest.approx(core, rel=0.01)
    assert tb.other < 0.01 * core
    assert report.hbm_read_bytes == pytest.approx(tb.total, rel=1e-3)


def striped_load(cfg, nbytes: int, buf_addr: int, channel: int = 0, stripe: int | None = None, hbm_addr: int = 0,
                 unit: int | None = None):
    unit = unit or cfg.stripe_bytes
    return make("LD", buf=Buffer.WGT, buf_addr=buf_addr, channel=channel, hbm_addr=hbm_addr, rows=1, row_bytes=nbytes,
                hbm_stride=nbytes, buf_stride=nbytes, stripe=stripe or cfg.mem_channels - channel,
                stripe_log2=unit.bit_length() - 1)


def test_a_striped_row_lands_in_its_masters_own_banks_only_where_laid_out_for_it():
    """footprint.own_banks: stripe units of stripe_bytes, at multiples of it in memory and in the buffer, the
    buffer address `channel` units past a multiple of mem_channels units, one round unless every channel."""
    from flightc.isa.footprint import own_banks

    cfg = PRESETS["hbm4"]
    sb, period = cfg.stripe_bytes, cfg.mem_channels * cfg.stripe_bytes
    assert own_banks(cfg, striped_load(cfg, 3 * period, 0))  # several rounds over every channel
    assert own_banks(cfg, striped_load(cfg, 2 * sb, period + sb, channel=1, stripe=2))  # one round from channel 1
    for ins in (striped_load(cfg, 3 * period, sb),  # a unit off
                striped_load(cfg, 3 * period, 0, hbm_addr=64),  # units straddling memory's stripe units
                striped_load(cfg, 3 * period, 0, unit=sb // 2),  # half units
                striped_load(cfg, 4 * sb, period + sb, channel=1, stripe=2),  # two rounds over two channels
                load(3 * period)):  # not striped
        assert not own_banks(cfg, ins), ins


def test_a_striped_row_out_of_its_masters_banks_is_lane_0s_alone():
    """The same row from a buffer address a stripe unit off: LD lane 0 moves every unit in turn instead of each
    master's lane its share side by side, so it takes about as many times longer as there are masters."""
    cfg = PRESETS["hbm4"]
    nbytes = 16 * cfg.mem_channels * cfg.stripe_bytes
    own, off = (load_cycles(cfg, striped_load(cfg, nbytes, a)) for a in (0, cfg.stripe_bytes))
    assert 0.8 * cfg.axi_masters < off / own <= cfg.axi_masters
