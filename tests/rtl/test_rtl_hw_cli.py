"""`flightc hw verilog`, and `flightc hw synth` on the claim that each chain lane is one DSP48E2."""
from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET

import pytest

from flightc.cli import main
from flightc.compress.stream import SEGMENT
from flightc.config import PRESETS
from flightc.hw import regs as R
from flightc.hw.latency_rules import SFU_RESULT_QUEUE
from flightc.hw.timing import max_levels

CFG = PRESETS["tiny"]


def test_hw_verilog_writes_a_vitis_kernel(tmp_path):
    assert main(["hw", "verilog", "--hw", "tiny", "-o", str(tmp_path)]) == 0
    text = (tmp_path / "flightc_kernel.v").read_text()
    for port in ("ap_clk", "ap_rst_n", "interrupt", "s_axi_control_awaddr", "m_axi_gmem_araddr", "m_axi_gmem_wstrb"):
        assert f" {port};" in text, port
    kernel = ET.parse(tmp_path / "kernel.xml").getroot().find("kernel")
    assert kernel.get("hwControlProtocol") == "ap_ctrl_hs"
    offsets = {a.get("name"): int(a.get("offset"), 16) for a in kernel.iter("arg")}
    regs = R.by_name(CFG)
    assert offsets["program_addr"] == regs["program_addr"].offset == R.ARGS_BASE
    assert len([n for n in offsets if n.startswith("channel_base")]) == CFG.mem_channels


@pytest.mark.synth
def test_hw_synth_maps_each_chain_lane_to_one_dsp48e2(tmp_path, monkeypatch, capsys):
    """`flightc hw synth --chain`, synthesized afresh in every run (the cache in a temporary folder)."""
    monkeypatch.setenv("FLIGHTC_RTL_CACHE", str(tmp_path / "cache" / "rtl"))
    out = tmp_path / "chain.json"
    assert main(["hw", "synth", "--hw", "tiny", "--chain", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "one sparse DSP chain of tiny" in printed and "timing estimate at 100 MHz" in printed
    report = json.loads(out.read_text())
    # the timing estimate: the chain's deepest path, against the budget at tiny's clock
    assert report["max_levels"] == max_levels(CFG.clock_mhz) and report["timing"]
    levels = [p["levels"] for p in report["timing"].values()]
    assert max(levels) > 0 and min(levels) >= 0  # (a register straight to an output port is 0 levels)
    assert report["timing"]["chain"]["luts"] > 0  # the chain's own deepest path runs through its LUTs
    # two tokens share a DSP48E2 through the packed A port: one DSP per lane, not two
    assert report["totals"]["DSP48E2"] == report["chain_dsp"] == CFG.chain_length
    assert report["totals"]["LUT"] > 0 and report["config_hash"] == CFG.hash


def test_generator_refuses_what_it_cannot_build_and_names_the_limit():
    from flightc.errors import ConfigError
    from flightc.hw.core import check_rtl_config

    with pytest.raises(ConfigError, match="chain_length = 12: must be a multiple of 8"):
        check_rtl_config(CFG.replace(chain_length=12, dsp_group=2))
    with pytest.raises(ConfigError, match="axi_data_bytes = 16: the DMA moves a beat as one buffer word"):
        check_rtl_config(CFG.replace(axi_data_bytes=16))
    with pytest.raises(ConfigError, match="axi_masters = 3: must be a power of two"):
        check_rtl_config(CFG.replace(mem_channels=6, axi_masters=3))
    with pytest.raises(ConfigError, match="buffers PRM: with 4 masters each buffer is 4 banks interleaved every "
                                          "1024 bytes, so its size must be a multiple of 4096 bytes"):
        check_rtl_config(PRESETS["hbm4"].replace(prm_buffer_kib=2))
    check_rtl_config(CFG)  # the preset the tests build


def _modules(text: str) -> dict[str, str]:
    """Each module of generated Verilog by name (escaped names without their backslash)."""
    parts = re.split(r"^module ", text, flags=re.M)[1:]
    return {re.match(r"\\?(\S+?)\s*[#(]", p).group(1): p for p in parts}


def _fifo_depths(modules: dict[str, str], suffix: str) -> list[int]:
    """The entries of the memory named ``storage`` in every module whose name ends with ``suffix``."""
    return [int(d) + 1 for name, body in modules.items() if name.endswith(suffix)
            for d in re.findall(r"^\s*reg \[\d+:0\] storage \[(\d+):0\];", body, re.M)]


def test_hw_verilog_builds_what_the_performance_model_reads(tmp_path):
    """`flightc hw verilog` of hbm4 — the u280's generator at four masters, eight chains of 8 and three SFU lanes,
    its memory system and microarchitecture fields the u280's — has an m_axi port, lane group, lane feed, stream
    reader and LD lane per master, and FIFOs as deep as the fields the performance model reads: the unit queues
    (``unit_queue_depth``), the LD lanes' and masters' bursts in flight (``axi_outstanding``), the stream readers'
    beats (``lane_fifo_beats``), the SFU's result queue (``SFU_RESULT_QUEUE``); and as many chains, lane group
    slots and SFU lanes as the model counts."""
    cfg, u280 = PRESETS["hbm4"], PRESETS["u280"]
    for field in ("clock_mhz", "axi_data_bytes", "buffer_port_bytes", "axi_burst_beats", "axi_outstanding",
                  "mem_latency_cycles", "unit_queue_depth", "lane_fifo_beats", "lane_slots", "token_fifo_depth"):
        assert getattr(cfg, field) == getattr(u280, field), field
    assert main(["hw", "verilog", "--hw", "hbm4", "-o", str(tmp_path)]) == 0
    text = (tmp_path / "flightc_kernel.v").read_text()
    mods = _modules(text)
    top = mods["flightc_kernel"]
    ports = sorted(set(re.findall(r"output \[\d+:0\] m_axi_gmem(\d+)_araddr;", top)), key=int)
    assert ports == [str(g) for g in range(cfg.axi_masters)]
    assert re.search(rf"input \[{8 * cfg.axi_data_bytes - 1}:0\] m_axi_gmem0_rdata;", top)

    def instances(module: str) -> int:
        return len(re.findall(rf"^\s*{module} \S+ \(", text, re.M))

    assert instances("flightc_core") == 1  # the core, one module the simulation testbench instantiates too
    assert instances("flightc_lane_group") == instances("flightc_lane_feed") == cfg.axi_masters
    assert instances("flightc_axi_master") == cfg.axi_masters
    assert instances("flightc_sparse_dsp_chain") == cfg.mpe_chains
    # a DSP48E2 a slot (the cascades) and one per row of each 16-column segment (its multiplier)
    assert len(re.findall(r"^\s*DSP48E2 #\(", mods["flightc_lane_group"], re.M)) == \
        cfg.lane_slots + 2 * (cfg.lane_slots // SEGMENT)
    assert len([n for n in mods if re.fullmatch(r"flightc_core\.ld\.lane\d+", n)]) == cfg.axi_masters
    # each SFU lane's power of two (softmax) has a register of its own (hw/sfu_lanes.py)
    assert len(re.findall(r"^\s*reg \[17:0\] e\d+ =", mods["flightc_core.sfu"], re.M)) == cfg.sfu_lanes
    assert _fifo_depths(mods, ".sfu.results") == [SFU_RESULT_QUEUE]  # the SFU's result queue, as the model reads it
    # SyncFIFOBuffered keeps one entry in its output register: its memory holds depth - 1
    for unit in ("ld", "mpe", "sfu", "st", "sys"):
        assert _fifo_depths(mods, f".control.q_{unit}") == [cfg.unit_queue_depth - 1], unit
    # an LD lane's descriptor queue keeps its head in a register (hw/load.py DescriptorQueue): its memory holds
    # depth - 1
    assert set(_fifo_depths(mods, ".bursts.behind")) == {cfg.axi_outstanding - 1}
    assert len(_fifo_depths(mods, ".bursts.behind")) == cfg.axi_masters
    assert _fifo_depths(mods, "flightc_axi_master.owners") == [cfg.axi_outstanding]
    assert _fifo_depths(mods, ".fifo") == [cfg.lane_fifo_beats - 1] * cfg.axi_masters
