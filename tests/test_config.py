import json

import pytest

from flightc.config import PRESETS, Buffer, HardwareConfig, MemoryKind, load_config
from flightc.errors import ConfigError


@pytest.mark.parametrize("name", list(PRESETS))
def test_preset_json_round_trip_keeps_hash(name):
    cfg = PRESETS[name]
    back = HardwareConfig.from_dict(json.loads(cfg.to_json()))
    assert back == cfg and back.hash == cfg.hash


def test_hash_ignores_the_name_but_not_parameters():
    cfg = PRESETS["tiny"]
    assert cfg.replace(name="other").hash == cfg.hash
    assert cfg.replace(clock_mhz=101.0).hash != cfg.hash


def test_the_memory_calibration_preset_differs_from_u280_only_where_the_docs_say():
    """hbm4 keeps the u280's memory system per channel (clock, port width, bursts, bursts in flight, latency) with
    a master per channel; docs/rtl.md's table lists exactly the fields that differ, with both values."""
    import re
    from pathlib import Path

    u, h = PRESETS["u280"].to_dict(), PRESETS["hbm4"].to_dict()
    differ = {k: (str(u[k]), str(h[k])) for k in u if k != "name" and u[k] != h[k]}
    text = (Path(__file__).resolve().parents[1] / "docs" / "rtl.md").read_text()
    table = text[text.index("| field | u280 | hbm4 |"):]
    listed = {k: (a, b) for k, a, b in re.findall(r"^\| `(\w+)` \| ([^|]+?) \| ([^|]+?) \|$", table.split("\n\n")[0],
                                                  re.M)}
    assert listed == differ
    assert PRESETS["hbm4"].axi_masters == PRESETS["hbm4"].mem_channels >= 4 and h["axi_data_bytes"] == 64
    for same in ("clock_mhz", "mem_channel_gbps", "axi_data_bytes", "axi_burst_beats", "axi_outstanding",
                 "mem_latency_cycles", "unit_queue_depth"):
        assert same not in differ


def test_u280_matches_the_published_build():
    cfg = PRESETS["u280"]
    assert cfg.clock_mhz == 225 and cfg.num_cores == 3  # a core an SLR, as FlightLLM
    # 24 of the card's 32 pseudo-channels, 8 a core (SLR0's LUTs: docs/dse.md), 24 x 14.375 GB/s
    assert cfg.mem_channels == 24 and cfg.mem_bandwidth_gbps == pytest.approx(345.0)
    assert cfg.axi_masters == 24 and cfg.axi_data_bytes == 64  # a 64-byte master per pseudo-channel
    assert [count for _, count in cfg.master_runs] == [8, 8, 8]
    # a lane group on every master for the streamed MVs and a small MPE a core: FlightLLM used 6,345 DSP48E2 in all
    assert cfg.dsp_count == 24 * 64 + 3 * 2 * 16
    assert cfg.sparse_n == (16,)  # dense lane groups: an 8:16 plan is stored dense (WeightFormat.stored_for)
    vhk = PRESETS["vhk158"]
    assert vhk.mem_bandwidth_gbps == pytest.approx(819.2)
    # its masters carry what each HBM2e channel delivers: 128 bytes x 225 MHz = 28.8 GB/s per 25.6 GB/s channel
    assert vhk.axi_masters * vhk.axi_data_bytes * vhk.clock_mhz / 1e3 >= vhk.mem_bandwidth_gbps
    assert PRESETS["kv260"].mem_kind is MemoryKind.DDR4 and PRESETS["kv260"].mem_bandwidth_gbps == 19.2


def test_derived_values_of_the_presets_by_hand():
    """Worked out on paper from the presets' fields (config.py), not from the properties' formulas."""
    tiny, u280 = PRESETS["tiny"], PRESETS["u280"]
    # 1 core x (4 chains x 8 DSPs + 1 lane group of 64), 2 MACs each
    assert (tiny.dsp_count, tiny.peak_macs_per_cycle) == (96, 192)
    assert tiny.mem_bytes_per_s == pytest.approx(6.4e9)  # 4 channels x 1.6 GB/s
    assert tiny.buffer_bytes(Buffer.ACT) == 32768 and tiny.on_chip_bytes == 131072  # 32+32+32+16+16 KiB
    assert tiny.max_reduction_length == 131071  # 2^31 / (128 x 128) - 1: the longest INT8 dot product in 32 bits
    # 24 lane groups of 64 + 3 cores x 2 chains x 16 = 1,632 DSP48E2, x 2 MACs x 225 MHz
    assert u280.dsp_count == 1632 and u280.peak_macs_per_s == pytest.approx(7.344e11)
    # 256 + 1,024 + 512 + 768 + 1,024 KiB a core, three cores; 8 GiB over the card's 32 channels, 24 of them used
    assert u280.on_chip_bytes == 3 * 3584 * 1024 and u280.mem_channel_bytes == 256 << 20


@pytest.mark.parametrize("change, words", [
    (dict(chain_length=7), "multiple of dsp_group"),
    (dict(weight_bits=(4, 5, 8)), "weight_bits"),
    (dict(sparse_n=(3, 16)), "sparse_n"),
    (dict(sparse_bits=()), "sparse_bits"),
    (dict(sparse_bits=(5,)), r"sparse_bits \(5,\) must name one or more widths"),
    (dict(num_cores=0), "positive"),
    (dict(axi_data_bytes=12), "axi_data_bytes 12 must be a power of two"),
    (dict(axi_burst_beats=300), "exceeds AXI4's 256"),
    (dict(axi_masters=3), "does not divide mem_channels 4"),
    (dict(sfu_div_step_bits=5), "must divide sfu_div_bits"),
    (dict(sfu_div_bits=64), "exact statistics need at least 72"),
    (dict(banked_buffers=(Buffer.PRM, Buffer.PRM)), r"banked_buffers \['PRM', 'PRM'\] must name distinct buffers"),
    (dict(banked_buffers=("PRM",)), "banked_buffers"),
])
def test_inconsistent_configs_are_refused(change, words):
    with pytest.raises(ConfigError, match=words):
        PRESETS["tiny"].replace(**change)


def test_load_config_from_file_and_unknown_name(tmp_path):
    path = tmp_path / "c.json"
    path.write_text(PRESETS["kv260"].to_json())
    assert load_config(path) == PRESETS["kv260"]
    with pytest.raises(ConfigError, match="unknown hardware config"):
        load_config("zcu999")
    bad = json.loads(PRESETS["tiny"].to_json())
    bad["extra"] = 1
    with pytest.raises(ConfigError, match="unknown fields"):
        HardwareConfig.from_dict(bad)


def test_the_performance_and_resource_models_import_no_amaranth():
    """They read the microarchitecture from the config, not from the RTL generator's modules."""
    import subprocess
    import sys

    code = ("import sys, flightc.sim.perf.workload, flightc.sim.perf.timing, flightc.dse.resources, flightc.dse.search; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'amaranth'))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_microarchitecture_is_covered_by_the_hash():
    tiny = PRESETS["tiny"]
    for change in (dict(unit_queue_depth=8), dict(axi_burst_beats=32, lane_fifo_beats=256), dict(sfu_div_step_bits=8),
                   dict(sfu_div_bits=80), dict(axi_outstanding=2), dict(axi_masters=2), dict(lane_fifo_beats=512)):
        assert tiny.replace(**change).hash != tiny.hash, change
    # a reader's FIFO holds every burst its master keeps in flight twice over, or the config says what it needs
    with pytest.raises(ConfigError, match=r"lane_fifo_beats 128 must hold every burst a master keeps in flight "
                                          r"twice over \(256 beats: axi_outstanding 4 x 32-beat bursts x 2\)"):
        tiny.replace(axi_burst_beats=32)
    # a master per HBM pseudo-channel; the RTL's presets one master for every channel
    assert PRESETS["u280"].channels_per_master == 1 and tiny.channels_per_master == 4
    assert tiny.replace(axi_masters=2).channels_per_master == 2
