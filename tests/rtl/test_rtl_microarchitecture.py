"""The microarchitecture fields of the config reach the generated RTL and the performance model alike: a
kernel built with other queue depths, bursts, SFU lanes (three: chunks that are not a power of two), divider
width, memory latency, bursts in flight and a channel slower than its port stays byte-identical with the
functional simulator, the timing contract stays exact per instruction, and a memory-bound stream runs at the
channel's sustained rate, as the performance model says."""
from __future__ import annotations

import pytest

from flightc.config import PRESETS, Buffer
from flightc.isa.codec import make
from flightc.isa.table import Opcode, SysOp
from flightc.sim.perf.calibration import model_cycles
from flightc.sim.perf.memory import channel_bytes_per_cycle, throttled
from flightc.sim.perf.calibration import calibration_bundle
from flightc.sim.perf.timing import instruction_work
from flightc.sim.rtl.differential import compare, memory_bytes_for, run_rtl
from flightc.sim.rtl.random_programs import RandomCase, random_case
from flightc.sim.rtl.replay import isolated_cases

# 0.6 GB/s at 100 MHz: 5.5 bytes a cycle sustained through an 8-byte port (the bench memory throttles); eight
# 4-beat bursts in flight cover the 24-cycle latency
CFG = PRESETS["tiny"].replace(name="tiny-microarch", unit_queue_depth=2, axi_burst_beats=4, sfu_div_step_bits=2,
                              sfu_div_bits=76, sfu_lanes=3, mem_latency_cycles=24, axi_outstanding=8,
                              mem_channel_gbps=0.6)
STREAM_BYTES = 24 << 10


@pytest.fixture(scope="module")
def sim():
    from flightc.sim.rtl.backend import RtlSimulator

    s = RtlSimulator(CFG, memory_bytes_for(CFG))
    yield s
    s.close()


def test_other_microarchitecture_matches_the_functional_simulator(sim):
    failing = [f"seed {o.seed}: {o.detail}" for o in (compare(sim, random_case(CFG, seed), 64 * (seed % 2))
                                                      for seed in range(12)) if not o.equal]
    assert not failing, "\n".join(failing)


def test_timing_contract_follows_the_microarchitecture(sim):
    bundle = calibration_bundle(CFG)
    extent = {int(k): v for k, v in bundle.manifest["memory_map"]["extent"].items()}
    wrong, checked = [], 0
    for i, ins, case in isolated_cases(CFG, extent, bundle.images, bundle.program("decode", 4)[0]):
        _, counters = run_rtl(sim, case)
        want = instruction_work(CFG, ins).cycles
        if counters[f"busy_{ins.cls.name.lower()}"] != want:
            wrong.append(f"#{i} {ins.cls.name}: rtl {counters[f'busy_{ins.cls.name.lower()}']}, model {want}")
        stores = sum(instruction_work(CFG, x).cycles for x in case.instructions if x.opcode is Opcode.ST)
        if counters["busy_st"] != stores:
            wrong.append(f"#{i} ST: rtl {counters['busy_st']}, model {stores}")
        checked += 1
    assert checked >= 20 and not wrong, "\n".join(wrong)
    # and the fields matter: the default microarchitecture times these instructions differently
    default = PRESETS["tiny"]
    assert any(instruction_work(default, ins).cycles != instruction_work(CFG, ins).cycles
               for _, ins, _ in isolated_cases(CFG, extent, bundle.images, bundle.program("decode", 4)[0]))


def test_a_memory_bound_stream_runs_at_the_channel_rate(sim):
    """One LD streams a 24 KiB matrix: the RTL sustains at least 90% of the channel's sustained bytes per cycle,
    and the performance model's cycles are within 2% of the RTL's."""
    assert throttled(CFG)
    rate = channel_bytes_per_cycle(CFG)
    data = bytes((i * 7 + 3) % 251 for i in range(STREAM_BYTES))
    case = RandomCase(0, {0: bytearray(data), 1: bytearray(64)})
    case.instructions = [make("LD", buf=Buffer.WGT, buf_addr=0, channel=0, hbm_addr=0, rows=1,
                              row_bytes=STREAM_BYTES, hbm_stride=STREAM_BYTES, buf_stride=STREAM_BYTES,
                              release=1 << 1),
                         make("ST", buf=Buffer.WGT, buf_addr=STREAM_BYTES - 64, channel=1, hbm_addr=0, rows=1,
                              row_bytes=64, hbm_stride=64, buf_stride=64, wait=1),
                         make("SYS", op=SysOp.END)]
    images, counters = run_rtl(sim, case)
    assert images[1] == data[-64:]  # the stream landed
    sustained = STREAM_BYTES / counters["busy_ld"]
    print(f"RTL: {counters['busy_ld']} LD cycles, {sustained:.2f} of {rate:.2f} bytes/cycle "
          f"({sustained / rate:.1%}); run {counters['cycles']} cycles")
    assert sustained >= 0.9 * rate
    model = model_cycles([case.program], CFG)
    assert model["busy_ld"] == pytest.approx(counters["busy_ld"], rel=0.02)
    assert model["cycles"] == pytest.approx(counters["cycles"], rel=0.02)
