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


def test_prefill_array_dsp48e2_instances_sum_exactly():
    """The weight-stationary prefill array's Verilog (a DSP48E2 instance per column, their behavioural model) on the
    plan and cases the Amaranth test runs (tests/test_prefill_array.py): the same sums."""
    from flightc.hw.hierarchy import to_verilog
    from flightc.hw.prefill_array import WeightArray, load_gap
    from flightc.sim.rtl.benches.prefill_cases import BLOCKS, CHAINS, LENGTH

    pairs = load_gap(LENGTH) + CHAINS  # passes back to back, the next weights loaded under them
    rtl = build_top("prefill_array", "prefill_array",
                    lambda: to_verilog(WeightArray(CHAINS, LENGTH, pairs), "prefill_array"), f"{CHAINS}x{LENGTH}x{pairs}")
    log = run_cocotb(rtl, "flightc.sim.rtl.benches.cocotb_prefill_array",
                     {"FLIGHTC_CHAINS": str(CHAINS), "FLIGHTC_BLOCKS": str(BLOCKS), "FLIGHTC_LENGTH": str(LENGTH),
                      "FLIGHTC_PAIRS": str(pairs)})
    assert "checked 4 cases" in log
