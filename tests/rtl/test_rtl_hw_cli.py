"""`flightc hw verilog`, and `flightc hw synth` on the claim that each chain lane is one DSP48E2."""
from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import pytest

from flightc.cli import main
from flightc.config import PRESETS
from flightc.hw import regs as R

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
    assert "one sparse DSP chain of tiny" in capsys.readouterr().out
    report = json.loads(out.read_text())
    # two tokens share a DSP48E2 through the packed A port: one DSP per lane, not two
    assert report["totals"]["DSP48E2"] == report["chain_dsp"] == CFG.chain_length
    assert report["totals"]["LUT"] > 0 and report["config_hash"] == CFG.hash


def test_generator_refuses_what_it_cannot_build_and_names_the_limit():
    from flightc.errors import ConfigError
    from flightc.hw.core import check_rtl_config

    with pytest.raises(ConfigError, match="num_cores = 3"):
        check_rtl_config(PRESETS["u280"].replace(num_cores=3))
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
