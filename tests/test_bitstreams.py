"""Build-flow files generated from one hardware config, the overlay manifest, and the .hwh pynq parses.

Vivado and Vitis are not installed here: what is checked is what flightc generates and what the runtime
reads back (manifest checks, the .hwh through pynq's own parser)."""
from __future__ import annotations

import json
import re

import pytest

from flightc.bitstreams.boards import BOARDS
from flightc.bitstreams.flow import write_flow
from flightc.bitstreams.manifest import OverlayManifest, read_manifest, write_manifest
from flightc.bitstreams.virtual import read_payload
from flightc.cli import main
from flightc.config import PRESETS
from flightc.errors import BundleError, FlightcError
from flightc.hw import regs as R
from flightc.isa.table import ISA_VERSION

from cards import U280_32

TINY = PRESETS["tiny"]


def test_pynq_flow_places_the_kernel_where_the_manifest_and_hwh_say(tmp_path):
    board = BOARDS["kv260"]
    artifact, written = write_flow(board, TINY, tmp_path)
    names = {p.name for p in written}
    assert {"flightc_kernel.v", "build.tcl", "flightc_kv260_tiny.flightc.json"} <= names
    assert artifact.name == "flightc_kv260_tiny.bit" and not artifact.exists()  # Vivado makes it
    tcl = (tmp_path / "build.tcl").read_text()
    assert f"-part {board.part}" in tcl and f"-offset {board.ctrl_base:#010x}" in tcl
    assert "M_AXI_HPM0_FPD" in tcl and "S_AXI_HP0_FPD" in tcl and "pl_ps_irq0" in tcl
    assert f"PL0_REF_CTRL__FREQMHZ {{{TINY.clock_mhz:g}}}" in tcl and TINY.hash in tcl
    assert "module flightc_kernel" in (tmp_path / "flightc_kernel.v").read_text()
    m = read_manifest(artifact)
    assert (m.board.name, m.config, m.isa_version, m.kernel, m.virtual) == ("kv260", TINY, ISA_VERSION,
                                                                           "flightc_0", False)


def test_vitis_flow_maps_every_memory_channel_to_its_hbm_bank(tmp_path):
    board = BOARDS["u280"]
    artifact, written = write_flow(board, TINY, tmp_path)
    assert artifact.suffix == ".xclbin"
    cfg_text = (tmp_path / "link.cfg").read_text()
    assert f"sp=flightc_1.m_axi_gmem:HBM[0:{TINY.mem_channels - 1}]" in cfg_text
    assert f"freqHz={int(TINY.clock_mhz * 1e6)}:flightc_1.ap_clk" in cfg_text
    assert "package_xo -force -xo_path ./flightc_kernel.xo -kernel_name flightc_kernel" in \
        (tmp_path / "package_xo.tcl").read_text()
    make = (tmp_path / "Makefile").read_text()
    assert f"PLATFORM ?= {board.platform}" in make and "v++ --link" in make
    args = re.findall(r'<arg name="([^"]+)"[^>]* offset="(0x[0-9a-f]+)"', (tmp_path / "kernel.xml").read_text())
    rw = [(r.name, hex(r.offset)) for r in R.register_map(TINY) if r.access is R.RegAccess.RW]
    assert args == rw  # the kernel's arguments are hw/regs.py's writable registers, at their offsets
    assert read_manifest(artifact).kernel == "flightc_1"
    wide = TINY.replace(name="wide", mem_channels=40)
    with pytest.raises(Exception, match="40 memory channels; u280 has 32 HBM banks"):
        write_flow(board, wide, tmp_path / "wide")


def test_virtual_overlay_hwh_parses_with_pynq_and_lists_the_register_map(tmp_path):
    from pynqmetadata.frontends import Metadata
    from pynqmetadata.views.runtime import RuntimeMetadataParser

    board = BOARDS["kv260"]
    bit, _ = write_flow(board, TINY, tmp_path, virtual=True)
    parsed = RuntimeMetadataParser(Metadata(input=str(bit.with_suffix(".hwh"))))
    ip = parsed.ip_dict["flightc_0"]
    assert ip["phys_addr"] == board.ctrl_base and ip["addr_range"] == board.ctrl_range
    regs = {name: r["address_offset"] for name, r in ip["registers"].items()}
    for r in R.register_map(TINY):
        words = [r.name] if r.bits == 32 else [f"{r.name}_{k + 1}" for k in range(r.bits // 32)]
        assert [regs[w] for w in words] == [r.offset + 4 * k for k in range(len(words))]
    clk = parsed.clock_dict[0]  # pl_clk0 runs the kernel at the config's clock: IOPLL / (divisor0 * divisor1)
    assert clk["enable"] == 1 and clk["frequency"] == pytest.approx(TINY.clock_mhz, 1e-4)
    assert 1000 / (clk["divisor0"] * clk["divisor1"]) == pytest.approx(TINY.clock_mhz)
    # the payload pynq's client writes to the board (bit2bin) names the config
    from pynq.pl_server.embedded_device import bit2bin

    assert read_payload(bit2bin(bit.read_bytes())).config == TINY
    with pytest.raises(FlightcError, match="not a flightc virtual bitstream"):
        read_payload(b"\x00" * 64)


def test_manifest_refuses_another_config_or_isa_and_edits(tmp_path):
    from conftest import compiled

    bundle = compiled("tiny-llama", "w8").bundle
    m = OverlayManifest(BOARDS["kv260"], TINY, "flightc_0")
    m.check(bundle.manifest, "x.bit")
    with pytest.raises(BundleError, match="implements ISA 0.9, but the bundle was compiled for ISA"):
        OverlayManifest(BOARDS["kv260"], TINY, "flightc_0", isa_version="0.9").check(bundle.manifest, "x.bit")
    with pytest.raises(BundleError, match="x.bit was built for config 'kv260'"):
        OverlayManifest(BOARDS["kv260"], PRESETS["kv260"], "flightc_0").check(bundle.manifest, "x.bit")
    d = m.to_dict()
    d["config"]["mpe_chains"] = 99
    with pytest.raises(FlightcError, match="does not match its config.*edited"):
        OverlayManifest.from_dict(d)
    with pytest.raises(FlightcError, match="no flightc manifest next to"):
        read_manifest(tmp_path / "nothing.bit")


def test_an_overlay_whose_link_map_misses_a_channel_the_bundle_uses_is_refused(tmp_path):
    """The Vitis manifest records each master's banks; a bundle placing data on a channel that the overlay links
    elsewhere for any core's master of it is refused, naming the region, the port and the core."""
    from conftest import compiled
    from flightc.bitstreams.vitis import CU, link_map

    cfg = TINY.replace(name="tiny-3core", num_cores=3, mem_channels=6, axi_masters=3)
    bundle = compiled("tiny-llama", "w8", hw=cfg).bundle
    link = link_map(cfg)
    assert link == {f"m_axi_gmem{c}": "HBM[0:5]" for c in range(3)}
    written = write_manifest(tmp_path / "k.xclbin", OverlayManifest(BOARDS["u280"], cfg, CU, link=link))
    assert json.loads(written.read_text())["link"] == link
    read_manifest(tmp_path / "k.xclbin").check(bundle.manifest, "k.xclbin")
    used = max(ch for r in bundle.manifest.memory_map["regions"]
               for ch in range(r["channel"], r["channel"] + r.get("stripe", 1)))
    short = OverlayManifest(BOARDS["u280"], cfg, CU, link={**link, "m_axi_gmem2": f"HBM[0:{used - 1}]"})
    with pytest.raises(BundleError, match=rf"on memory channel {used}, but k.xclbin links m_axi_gmem2 \(core 2's "
                                          rf"master of that channel\) to HBM\[0:{used - 1}\], not HBM\[{used}\]"):
        short.check(bundle.manifest, "k.xclbin")


def test_cli_writes_flows_and_refuses_a_virtual_alveo(tmp_path, capsys):
    assert main(["hw", "bitstream", "--board", "kv260", "--hw", "tiny", "--virtual", "-o", str(tmp_path)]) == 0
    assert "flightc run BUNDLE --backend pynq" in capsys.readouterr().out
    assert json.loads((tmp_path / "flightc_kv260_tiny.flightc.json").read_text())["virtual"] is True
    assert main(["hw", "bitstream", "--board", "u280", "--hw", "tiny", "--virtual", "-o", str(tmp_path)]) == 2
    assert "the virtual board is a PYNQ board" in capsys.readouterr().err
    assert main(["hw", "bitstream", "--board", "vc707", "-o", str(tmp_path)]) == 2
    assert "unknown board 'vc707'" in capsys.readouterr().err


def test_link_map_puts_every_master_on_the_channels_its_data_is_in():
    """A master per channel (the hbm4 preset): kernel.xml declares each m_axi port once, link.cfg links each once, to
    the HBM bank of its channel, and every buffer argument and every region the compiler placed lies on the port
    linked to that region's channel."""
    import xml.etree.ElementTree as ET

    from flightc.bitstreams.vitis import link_cfg
    from flightc.hw.kernel_xml import kernel_xml
    from flightc.sim.perf.calibration import calibration_bundle

    cfg = PRESETS["hbm4"]
    kernel = ET.fromstring(kernel_xml(cfg))
    ports = [p.get("name") for p in kernel.iter("port") if p.get("mode") == "master"]
    assert ports == [f"m_axi_gmem{g}" for g in range(cfg.axi_masters)]
    sp = re.findall(r"^sp=flightc_1\.(\S+):HBM\[(\d+)(?::(\d+))?\]$", link_cfg(BOARDS["u280"], cfg), re.M)
    assert sorted(port for port, _, _ in sp) == sorted(ports)  # each port linked, once
    bank_port = {bank: port for port, a, b in sp for bank in range(int(a), int(b or a) + 1)}
    assert bank_port == {c: f"m_axi_gmem{c}" for c in range(cfg.mem_channels)}  # master c on HBM[c]
    args = {a.get("name"): a.get("port") for a in kernel.iter("arg")}
    assert {args[f"channel_base{c}"] for c in range(cfg.mem_channels)} == set(ports)
    assert args["program_addr"] == bank_port[0]  # the fetch reads through master 0
    placed = calibration_bundle(cfg).manifest.memory_map["regions"]
    assert {r.get("stripe", 1) for r in placed} > {1}  # some regions striped over several channels
    for r in placed:
        for c in range(r["channel"], r["channel"] + r.get("stripe", 1)):
            assert args[f"channel_base{c}"] == bank_port[c], r["name"]


def test_every_cores_masters_are_linked_and_carry_their_cores_arguments():
    """The u280's 32 channels as three cores (tests/cards.py): kernel.xml declares the card's 32 master ports, one per
    HBM pseudo-channel, in runs of 16, 8 and 8 (a core each); each port is linked to its own bank and the other
    cores' banks its core reaches through it, each core's own copies of the arguments (suffix _c1, in its register
    window) belong to its own ports, and a channel's argument to the port whose banks hold it."""
    import xml.etree.ElementTree as ET

    from flightc.bitstreams.vitis import link_cfg
    from flightc.hw.kernel_xml import kernel_xml

    preset = ET.fromstring(kernel_xml(PRESETS["u280"]))  # the preset's 24, 8 a core
    assert [p.get("name") for p in preset.iter("port") if p.get("mode") == "master"] == [f"m_axi_gmem{k}"
                                                                                          for k in range(24)]
    cfg = U280_32.replace(name="u280-3core")
    kernel = ET.fromstring(kernel_xml(cfg))
    ports = [p.get("name") for p in kernel.iter("port") if p.get("mode") == "master"]
    assert ports == [f"m_axi_gmem{k}" for k in range(32)]
    (lite,) = [p for p in kernel.iter("port") if p.get("mode") == "slave"]
    assert lite.get("range") == "0x4000"  # a 4 KiB window per core
    sp = dict(re.findall(r"^sp=flightc_1\.(\S+):HBM\[(\d+:\d+|\d+)\]$", link_cfg(BOARDS["u280"], cfg), re.M))
    assert sorted(sp) == sorted(ports)
    banks = {port: range(int(r.split(":")[0]), int(r.split(":")[-1]) + 1) for port, r in sp.items()}
    assert banks["m_axi_gmem3"] == range(3, 20)  # core 0 (masters 0-15): its own PC 3, and 19 through it
    assert banks["m_axi_gmem17"] == range(1, 26)  # core 1 (16-23): its own PC 17; 1, 9 and 25 through it
    args = {a.get("name"): (a.get("port"), int(a.get("offset"), 16)) for a in kernel.iter("arg")}
    for c, first in enumerate((0, 16, 24)):
        suffix = f"_c{c}" if c else ""
        assert args[f"program_addr{suffix}"][0] == f"m_axi_gmem{first}"
        for ch in range(32):
            port, offset = args[f"channel_base{ch}{suffix}"]
            assert ch in banks[port] and first <= int(port.removeprefix("m_axi_gmem")) < first + (16 if c == 0 else 8)
            assert offset == 0x1000 * c + R.by_name(cfg)[f"channel_base{ch}"].offset
        own = range(first, first + (16 if c == 0 else 8))
        assert all(args[f"channel_base{ch}{suffix}"][0] == f"m_axi_gmem{ch}" for ch in own)  # own PC, own master
    assert args["program_bytes_c1"][0] == "s_axi_control"


def test_a_three_core_flow_places_a_core_per_slr_and_counts_the_wires_between(tmp_path):
    """`flightc hw bitstream --board u280` on three cores: kernel, link map, a floorplan with a pblock per core (core c
    in SLR c) that the Makefile hands Vivado before placement, no SLR of the compute unit's own; the wires across
    each SLR boundary counted by hand, and checked in Vivado against the device's super long lines. On u280 as three
    cores cores 1 and 2 (8 masters each) cross with their masters' read channels (598 wires a 512-bit master: ar 80,
    r 518), their writes as ST's two writers' pairs (1,310: a valid, a ready and two parts of 654 = an address and a
    beat offered 2, a master 3, the burst 72, the beat 577), a response pulse a master (8) and a link of 491 (an
    argument write 39 = valid 1, word 6 of 52: 24 channels' 64-bit bases and 4 more, data 32; start, finish, seven
    counters of 64, barrier request and go): 6,593 apiece, both across SLR0-SLR1 (13,186, under the about 16.8K super
    long lines there) and core 2's across SLR1-SLR2. The flow itself on tiny as three cores (a 64-bit master each:
    reads 150, write pairs 298, a response, links with 16 argument words: 489; 938 a core), its files as the flow
    writes them (the kernel's Verilog left out: tests/rtl/test_rtl_axi.py builds it)."""
    from flightc.bitstreams.vitis import floorplan_tcl, link_cfg, makefile, slr_crossings

    assert PRESETS["u280"].num_cores == 3
    assert slr_crossings(BOARDS["u280"], PRESETS["u280"]) == [2 * (8 * 598 + 1310 + 8 + 491), 8 * 598 + 1310 + 8 + 491]
    assert slr_crossings(BOARDS["u280"], PRESETS["u280"])[0] < 16_800
    cfg = TINY.replace(name="tiny-3core", num_cores=3, mem_channels=6, axi_masters=3)
    plan = floorplan_tcl(BOARDS["u280"], cfg)
    for c in range(3):
        assert f"resize_pblock pb_core{c} -add [get_slrs SLR{c}]" in plan
        cells = f"[get_cells -hierarchical -filter {{NAME =~ */flightc_1/inst/core{c}}}]"
        assert f"add_cells_to_pblock pb_core{c} {cells}" in plan
    assert "SLR0-SLR1: 1,876, SLR1-SLR2: 938" in plan
    # the device's super long lines checked against each boundary's wires before placement (its own figure)
    assert "set have [get_property NUM_TOP_SLLS [get_slrs SLR$s]]" in plan
    assert "flightc_check_slls 0 1876\nflightc_check_slls 1 938" in plan
    make = makefile(BOARDS["u280"], "design", floorplan=True)
    assert "--vivado.prop run.impl_1.STEPS.PLACE_DESIGN.TCL.PRE=$(CURDIR)/floorplan.tcl" in make
    assert "design.xclbin: flightc_kernel.xo link.cfg floorplan.tcl" in make
    assert "slr=" not in link_cfg(BOARDS["u280"], cfg) and "slr=flightc_1:SLR0" in link_cfg(BOARDS["u280"], TINY)
    with pytest.raises(FlightcError, match="4 cores; u280 has 3 SLR"):
        write_flow(BOARDS["u280"], TINY.replace(name="tiny-4core", num_cores=4, axi_masters=4), tmp_path / "four")
    assert not (tmp_path / "four").exists()  # refused before anything is written


def test_a_pynq_flow_refuses_several_masters(tmp_path):
    with pytest.raises(FlightcError, match="4 memory masters; the kv260 block design connects one"):
        write_flow(BOARDS["kv260"], PRESETS["hbm4"], tmp_path)
    with pytest.raises(FlightcError, match="2 memory masters; the kv260 block design connects one"):
        write_flow(BOARDS["kv260"], PRESETS["kv260"].replace(name="kv260-2core", num_cores=2, axi_masters=2),
                   tmp_path)
    with pytest.raises(FlightcError, match="num_cores 2 exceeds axi_masters 1: every core has memory masters"):
        PRESETS["kv260"].replace(num_cores=2)


def test_a_pynq_flow_warns_of_a_master_wider_than_the_hp_port(tmp_path, caplog):
    """The PS's S_AXI_HP ports are 128-bit (UG1085): a 32-byte master is downsized by the block design, so the flow
    says so; the kv260 preset's 16-byte master is not warned about."""
    wide = PRESETS["tiny"].replace(name="tiny-wide", buffer_port_bytes=32, axi_data_bytes=32)
    with caplog.at_level("WARNING", logger="flightc.bitstreams.flow"):
        write_flow(BOARDS["kv260"], wide, tmp_path / "wide", virtual=True)
        write_flow(BOARDS["kv260"], PRESETS["tiny"], tmp_path / "tiny", virtual=True)
    warned = [r.getMessage() for r in caplog.records if r.name == "flightc.bitstreams.flow"]
    assert len(warned) == 1 and "'tiny-wide' on kv260" in warned[0] and "use a 16-byte master" in warned[0], warned
