"""Block benches under cocotb + Verilator: the decoder and the sparse DSP chain."""
from __future__ import annotations

from amaranth.back import verilog

from flightc.config import PRESETS
from flightc.sim.rtl.benches.tops import ChainProbe, DecoderProbe
from flightc.sim.rtl.build import build_top, run_cocotb

CFG = PRESETS["tiny"]


def test_decoder_matches_codec_on_random_encodings():
    rtl = build_top("decoder", "decoder_probe", lambda: verilog.convert(DecoderProbe(), name="decoder_probe"))
    log = run_cocotb(rtl, "flightc.sim.rtl.benches.cocotb_decoder", {"FLIGHTC_COUNT": "600"})
    assert "checked" in log


def test_dsp_chain_matches_dequantizer_for_every_pattern():
    span = CFG.chain_span_max
    rtl = build_top("chain", "chain_probe", lambda: verilog.convert(ChainProbe(CFG, span), name="chain_probe"),
                    f"{CFG.to_json()}{span}")
    log = run_cocotb(rtl, "flightc.sim.rtl.benches.cocotb_chain",
                     {"FLIGHTC_CONFIG": "tiny", "FLIGHTC_SPAN_MAX": str(span), "FLIGHTC_COUNT": "12"})
    assert "checked" in log
