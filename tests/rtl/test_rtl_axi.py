"""The Vitis kernel top level with memory served by cocotbext-axi under random backpressure."""
from __future__ import annotations

import re

from flightc.config import PRESETS
from flightc.hw.synth import TOP, kernel_verilog
from flightc.sim.rtl.build import build_top, run_cocotb


def test_kernel_of_three_cores_over_cocotbext_axi_with_random_backpressure(tmp_path):
    """tiny's compute as three cores on two channels each: every core's master (one of its own) on the one
    memory, each of its AXI channels pausing at random; eight seeded one-core programs on core 0 (every
    instruction class, the others idle), then six of a stream per core that exchange rows through memory across
    one to three barriers in a row (sim/rtl/random_programs.py random_multicore_case); then a model compiled for
    the three cores, its first token's step (every layer's exchanges, attention split by KV heads), every
    channel's bytes equal to the functional simulator's after it."""
    from conftest import compiled

    cfg = PRESETS["tiny"].replace(name="tiny-3core", num_cores=3, mem_channels=6, axi_masters=3)
    (tmp_path / "hw.json").write_text(cfg.to_json())
    bundle = compiled("tiny-llama", "w8", hw=cfg).bundle
    bundle.save(tmp_path / "model.flb")
    steps = [("decode", 1, [11])]
    rtl = build_top("kernel3", TOP, lambda: kernel_verilog(cfg), cfg.to_json())
    log = run_cocotb(rtl, "flightc.sim.rtl.benches.cocotb_axi",
                     {"FLIGHTC_CONFIG": str(tmp_path / "hw.json"),
                      "FLIGHTC_SEEDS": ",".join(str(s) for s in [*range(1000, 1008), *range(2000, 2006)]),
                      "FLIGHTC_SEEDS_ALONE": ",".join(str(s) for s in range(1000, 1008)),
                      "FLIGHTC_BUNDLE": str(tmp_path / "model.flb"),
                      "FLIGHTC_STEPS": ";".join(f"{k}/{n}/{','.join(map(str, t))}" for k, n, t in steps)})
    assert log.count(" ok: ") == 14 and "step decode/1 ok" in log
    # one core module for the three (equal runs of one master each: where each core's channels start comes in on
    # its link), instantiated three times, a master port per core, a register window per core (4 KiB each, rounded
    # up to a power of two)
    text = (rtl.directory / f"{TOP}.v").read_text()
    assert re.findall(r"^module (flightc_core(?:_\d)?)\(", text, re.M) == ["flightc_core"]
    assert len(re.findall(r"^\s*flightc_core inst \(", text, re.M)) == 3
    assert (rtl.directory / "Vflightc_core").is_dir()  # verilated once for the three (build.py repeated_cores)
    assert sorted(set(re.findall(r"^\s*input (m_axi_gmem\d*)_rvalid;", text, re.M))) == [
        f"m_axi_gmem{k}" for k in range(3)]
    assert re.search(r"^\s*input \[13:0\] s_axi_control_awaddr;", text, re.M)
