"""The microarchitecture fields of the config reach the generated RTL and the performance model alike: a
kernel built with other queue depths, bursts, SFU lanes (three: chunks that are not a power of two) and
divider width stays byte-identical with the functional simulator, and the timing contract stays exact per
instruction."""
from __future__ import annotations

import pytest

from flightc.config import PRESETS
from flightc.isa.table import Opcode
from flightc.sim.perf.calibration import calibration_bundle
from flightc.sim.perf.timing import instruction_work
from flightc.sim.rtl.differential import compare, memory_bytes_for, run_rtl
from flightc.sim.rtl.random_programs import random_case
from flightc.sim.rtl.replay import isolated_cases

CFG = PRESETS["tiny"].replace(name="tiny-microarch", unit_queue_depth=2, axi_burst_beats=4, sfu_div_step_bits=2,
                              sfu_div_bits=76, sfu_lanes=3)


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
