"""A kernel of two cores (hw/kernel.py) under Verilator: a compiled model split across them, byte-identical with the
functional simulator, its cycles within the performance model's calibration bound, every core's registers in their
own window."""
from __future__ import annotations

import numpy as np
import pytest

from conftest import run_steps
from flightc.config import PRESETS
from flightc.hw import regs as R
from flightc.isa.codec import decode_program
from flightc.isa.table import Opcode, SysOp
from flightc.sim.perf.calibration import TOLERANCE

# tiny's compute, two cores on two channels each, a master per core's channels (so both cores stream their rows)
CFG = PRESETS["tiny"].replace(name="tiny-2core", num_cores=2, axi_masters=2)
PROMPT = [1, 5, 9, 3]
STEPS = [("prefill", 4, PROMPT), ("decode", 5, [11]), ("decode", 6, [100])]


@pytest.fixture(scope="module")
def bundle():
    from flightc.compiler.pipeline import compile_model
    from flightc.compress.plan import CompressionPlan
    from flightc.models.seeded import random_model

    # two KV heads of 64: attention splits a head to a core; W4 8:16 rows split by the cores' channels
    model = random_model("llama", 0, num_hidden_layers=1, hidden_size=128, intermediate_size=128,
                         num_attention_heads=2, num_key_value_heads=2)
    plan = CompressionPlan.parse("w4g32s8:16", ["*.down_proj=w8"])
    return compile_model(model, CFG, plan, max_len=8, max_prefill=4, prefill_lengths=[4]).bundle


def test_two_cores_run_a_model_byte_identical_within_the_models_bound(bundle):
    for kind, n, _ in STEPS:
        streams = [list(decode_program(p)) for p in bundle.program(kind, n)]
        assert len(streams) == 2
        for core in streams:  # each core streams its share of the rows and meets the other at barriers
            assert any(i.opcode is Opcode.MV and i.w_stream for i in core)
            assert any(i.opcode is Opcode.SYS and i.op == SysOp.BARRIER for i in core)
    measured = run_steps(bundle, STEPS)
    from flightc.runtime.backends import open_backend

    perf = open_backend("perf", bundle)
    ids = bundle.region("io.ids")
    for (kind, n, tokens), rtl in zip(STEPS, measured):
        perf.write(ids["channel"], ids["addr"], np.asarray(tokens, "<i4").tobytes())
        model = perf.run(bundle.program(kind, n)).cycles["cycles"]
        assert abs(model - rtl["cycles"]) <= TOLERANCE * rtl["cycles"], (kind, n, model, rtl["cycles"])
        assert rtl["busy_sys"] > 0


def test_each_core_answers_in_its_own_register_window(bundle):
    from flightc.runtime.backends import open_backend

    rtl = open_backend("rtl", bundle)  # the build the test above made; the host has set each core's arguments
    sim = rtl.sim
    try:
        regs = R.by_name(CFG)
        assert regs["core_id_c1"].offset == R.CORE_WINDOW + regs["core_id"].offset
        assert [sim.reg_read(R.core_register("core_id", c)) for c in range(2)] == [0, 1]
        assert {sim.reg_read(R.core_register("config_hash", c)) for c in range(2)} == {int(CFG.hash, 16)}
        sim.reg_write("program_bytes_c1", 0x1234)
        assert (sim.reg_read("program_bytes_c1"), sim.reg_read("program_bytes")) == (0x1234, 0)
        assert sim.reg_read("program_addr_c1") == rtl.driver.program_addr[1] != rtl.driver.program_addr[0]
    finally:
        rtl.close()


def test_random_programs_of_two_cores_match_fsim_and_the_model():
    """Seeded programs of a stream per core that exchange rows through memory across barriers (random_multicore_case):
    byte-identical with fsim (every other seed with a stalling memory), and without stalls the model within the
    calibration tolerance of the RTL's cycles (barriers, two cores' traffic on the same channels)."""
    from flightc.sim.perf.calibration import model_cycles
    from flightc.sim.rtl.backend import RtlSimulator
    from flightc.sim.rtl.differential import compare, memory_bytes_for
    from flightc.sim.rtl.random_programs import random_multicore_case

    sim = RtlSimulator(CFG, memory_bytes_for(CFG))
    failing, off = [], []
    try:
        for seed in range(10):
            case = random_multicore_case(CFG, 3000 + seed)
            outcome = compare(sim, case, 64 * (seed % 2))
            if not outcome.equal:
                failing.append(f"seed {seed}: {outcome.detail}")
            elif seed % 2 == 0:
                model = model_cycles(case.programs, CFG)["cycles"]
                print(f"seed {seed}: rtl {outcome.cycles}, model {model}")
                if abs(model - outcome.cycles) > TOLERANCE * outcome.cycles:
                    off.append(f"seed {seed}: rtl {outcome.cycles}, model {model}; blocks {case.kinds}")
    finally:
        sim.close()
    assert not failing, "\n".join(failing)
    assert not off, "\n".join(off)


def test_barriers_take_the_cycles_the_model_gives_them():
    """Programs of barriers alone: one, three in a row (a go followed at once by the next request: the kernel must not
    pass a core on the last go), and one core arriving late behind NOPs; the RTL's cycles equal the model's."""
    from flightc.isa.codec import make
    from flightc.sim.perf.calibration import model_cycles
    from flightc.sim.rtl.backend import RtlSimulator
    from flightc.sim.rtl.differential import memory_bytes_for, run_rtl
    from flightc.sim.rtl.random_programs import MultiCoreCase

    def barriers(*cores):
        return MultiCoreCase(0, {0: bytearray(8)}, [list(c) + [make("SYS", op=SysOp.END)] for c in cores], [[], []])

    bar = [make("SYS", op=SysOp.BARRIER, arg=k) for k in range(3)]
    nop = make("SYS", op=SysOp.NOP)
    sim = RtlSimulator(CFG, memory_bytes_for(CFG))
    try:
        for case in (barriers(bar[:1], bar[:1]), barriers(bar, bar), barriers([nop] * 5 + bar[:1], bar[:1])):
            _, counters = run_rtl(sim, case)
            assert counters["cycles"] == model_cycles(case.programs, CFG)["cycles"], case.streams
    finally:
        sim.close()
