"""cocotb bench: the weight-stationary prefill array as Verilog with DSP48E2 instances (their behavioural model,
hw/dsp48e2_model.v), on the plan and cases of prefill_cases.py: every pair's sums equal the integer dot products."""
from __future__ import annotations

import os

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.triggers import FallingEdge, RisingEdge

from flightc.hw.prefill_array import latency
from flightc.sim.rtl.benches.prefill_cases import cases, ports_at, schedule, unpack_sums


@cocotb.test()
async def array_matches_integer_dot_products(dut):
    chains, blocks, length, pairs = (int(os.environ[k]) for k in ("FLIGHTC_CHAINS", "FLIGHTC_BLOCKS",
                                                                   "FLIGHTC_LENGTH", "FLIGHTC_PAIRS"))
    Clock(dut.clk, 10, unit="ns", impl="gpi").start()
    dut.rst.value = 0
    await FallingEdge(dut.clk)
    loads, ins = schedule(chains, blocks, length, pairs)
    checked = 0
    for case in cases(np.random.default_rng(5), chains, blocks, length, pairs):
        for cycle in range(max(ins) + 1):
            for name, value in ports_at(case, cycle, loads, ins).items():
                getattr(dut, name).value = value
            await FallingEdge(dut.clk)
        dut.valid.value = 0
        dut.load.value = 0
        for _ in range(latency(length)):
            await FallingEdge(dut.clk)
        want = case.expected()
        for p in range(pairs):
            dut.rd_pair.value = p
            await RisingEdge(dut.clk)
            await FallingEdge(dut.clk)
            for c, sums in enumerate(unpack_sums(int(dut.rd_data.value.to_unsigned()), chains)):
                assert sums == (want[2 * p, c], want[2 * p + 1, c]), (case.unsigned, p, c, sums)
        checked += 1
    dut._log.info("checked %d cases", checked)
