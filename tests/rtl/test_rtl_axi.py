"""The Vitis kernel top level with memory served by cocotbext-axi under random backpressure."""
from __future__ import annotations

from flightc.config import PRESETS
from flightc.hw.synth import TOP, kernel_verilog
from flightc.sim.rtl.build import build_top, run_cocotb


def test_kernel_over_cocotbext_axi_with_random_backpressure():
    cfg = PRESETS["tiny"]
    rtl = build_top("kernel", TOP, lambda: kernel_verilog(cfg), cfg.to_json())
    log = run_cocotb(rtl, "flightc.sim.rtl.benches.cocotb_axi",
                     {"FLIGHTC_CONFIG": "tiny", "FLIGHTC_SEEDS": ",".join(str(s) for s in range(1000, 1008))})
    assert log.count(" ok: ") == 8
