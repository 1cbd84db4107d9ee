"""Repeated components generated once (hw/hierarchy.py): one module per key, an instance per copy, and the
buffers' RAMs as one Verilog template instead of Amaranth memories with an initializer net per bit."""
from __future__ import annotations

import json
import re

from amaranth.hdl import Elaboratable, Module, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from flightc.config import PRESETS, Buffer
from flightc.hw.buffer_map import PortRole
from flightc.hw.buffers import BufferBank
from flightc.hw.hierarchy import RAM_MODULE, separate, to_verilog
from flightc.hw.lane_group import LaneGroup


class _TwoGroups(Elaboratable):
    """Two lane groups, the first's sums into the second's chunk, and a third of another width."""

    def elaborate(self, platform):
        m = Module()
        a = separate(LaneGroup, 64, 2)
        b = separate(LaneGroup, 64, 2)
        c = separate(LaneGroup, 128, 2)
        m.submodules.a, m.submodules.b, m.submodules.c = a, b, c
        m.d.comb += [b.chunk.valid.eq(a.result.valid), b.chunk.payload.eq(a.result.payload.row0)]
        return m


def _modules(text: str) -> list[str]:
    return re.findall(r"^module (\w+)\s*[#(]", text, re.M)


def test_a_separated_component_is_one_module_instantiated_per_copy():
    text = to_verilog(_TwoGroups(), "top", ports=[])
    assert sorted(_modules(text)) == ["flightc_lane_group", "flightc_lane_group_1", "top"]
    assert len(re.findall(r"^\s*flightc_lane_group \S+ \(", text, re.M)) == 2
    assert len(re.findall(r"^\s*flightc_lane_group_1 \S+ \(", text, re.M)) == 1
    # the first group's result drives the second's chunk: its outputs are wired out, not tied off
    first = re.search(r"flightc_lane_group \S+ \((.*?)\);", text, re.S).group(1)
    assert re.search(r"\.result__valid\(result__valid\)", first)


def test_outside_to_verilog_a_component_stays_itself():
    group = separate(LaneGroup, 64, 2)
    assert type(group) is LaneGroup and group.slots == 64
    group._MustUse__silence = True  # never elaborated here


def test_buffer_banks_are_ram_instances_without_initializers():
    cfg = PRESETS["hbm4"]
    roles = {**{f"ld{k}": PortRole(reads=frozenset()) for k in range(4)}, "mpe": PortRole(), "sfu": PortRole()}
    text = to_verilog(BufferBank(cfg, roles), "bank")
    banks = len(re.findall(rf"^\s*{RAM_MODULE} #\(", text, re.M))
    assert banks == sum(cfg.banks(b) for b in Buffer) == 3 * cfg.axi_masters + 2  # WGT, PRM, KV banked
    assert _modules(text).count(RAM_MODULE) == 1
    assert "initial begin" not in text.split(f"module {RAM_MODULE}(")[0]
    # the LD lanes only write: no read data comes back to them
    assert not re.search(r"port_ld0__rdata = mem_", text)
    assert re.search(r"port_mpe__rdata = mem_acc_rdata", text) and re.search(r"port_mpe__rdata = mem_kv3_rdata", text)


def test_large_memories_are_asked_for_ultraram_and_the_resource_model_counts_them():
    """A memory that fills eight URAM288s or more (4,096 rows deep: the u280's one-memory ACT, ACC, WGT and KV) is an
    instance of the UltraRAM template, a smaller one of the block-RAM one; the resource model counts the same
    memories (u280: ACT 8, ACC 15, WGT 29, KV 29 URAM288 as yosys maps them, 81 in the buffer-bank-M32 run; PRM's 32
    banks of 384 rows in BRAM36)."""
    from flightc.dse.resources import buffer_bram36, buffer_uram
    from flightc.hw.buffer_map import uram288
    from flightc.hw.hierarchy import URAM_MODULE, ram

    class Two(Elaboratable):
        def elaborate(self, platform):
            m = Module()
            both = 0
            for name, depth in (("deep", 4096), ("shallow", 2048)):
                p = ram(m, name, 512, depth)
                m.d.comb += [s.eq(0) for s in (p.raddr, p.waddr, p.wdata, p.wen)]
                both = both ^ p.rdata
            m.d.sync += self.out.eq(both)
            return m

    two = Two()
    two.out = Signal(512)
    text = to_verilog(two, "two", ports=[two.out])
    assert re.search(rf"^\s*{URAM_MODULE} #\([^;]*\) deep\b", text, re.M | re.S)
    assert re.search(rf"^\s*{RAM_MODULE} #\([^;]*\) shallow\b", text, re.M | re.S)
    assert '(* ram_style = "ultra" *)' in text.split(f"module {URAM_MODULE} #(")[1].split("endmodule")[0]
    assert '(* ram_style = "block" *)' in text.split(f"module {RAM_MODULE} #(")[1].split("endmodule")[0]
    assert [uram288(512, d) for d in (4096, 8192, 16384, 2048, 384)] == [8, 15, 29, 0, 0]  # as yosys maps them
    u = PRESETS["u280"]
    assert u.banked_buffers == (Buffer.PRM,)
    # PRM: a bank a master of a core's 8, each 1,536 x 512 bits: 3 deep x 8 wide BRAM36 (512 x 72 bits each)
    assert buffer_uram(u) == 8 + 15 + 29 + 29 and buffer_bram36(u) == 8 * 3 * 8



class InnerProbe(wiring.Component):
    """A register: a separated component that takes no time to generate."""

    def __init__(self, width: int):
        super().__init__({"d": In(width), "q": Out(width)})

    def elaborate(self, platform):
        m = Module()
        m.d.sync += self.q.eq(self.d)
        return m


class OuterProbe(wiring.Component):
    """A separated component that separates one of its own: a register of 8 bits."""

    def __init__(self):
        super().__init__({"d": In(8), "q": Out(8)})

    def elaborate(self, platform):
        m = Module()
        m.submodules.inner = inner = separate(InnerProbe, 8)
        m.d.comb += [inner.d.eq(self.d), self.q.eq(inner.q)]
        return m


class _OuterAndAnInner(Elaboratable):
    """OuterProbe beside a register of another width, generated after it."""

    def elaborate(self, platform):
        m = Module()
        m.submodules.outer = outer = separate(OuterProbe)
        m.submodules.inner = inner = separate(InnerProbe, 4)
        m.d.comb += [inner.d.eq(outer.q)]
        return m


def test_a_separated_module_is_read_back_from_disk_with_the_modules_it_instantiates(tmp_path, monkeypatch):
    """The second conversion in a fresh cache reads the outer module (and the register it instantiates) back
    instead of generating them: the Verilog is the same, module names unique, and what it reads is the stored
    text (a comment put into the stored file comes out)."""
    monkeypatch.setenv("FLIGHTC_RTL_CACHE", str(tmp_path))
    first = to_verilog(_OuterAndAnInner(), "top", ports=[])
    assert sorted(_modules(first)) == ["flightc_inner_probe", "flightc_inner_probe_1", "flightc_outer_probe", "top"]
    stored = list((tmp_path / "modules").glob("flightc_outer_probe-*.json"))
    assert len(stored) == 1
    assert to_verilog(_OuterAndAnInner(), "top", ports=[]) == first
    entry = json.loads(stored[0].read_text())
    assert [n["name"] for n in entry["nested"]] == ["flightc_inner_probe"]
    entry["text"] = "// read back\n" + entry["text"]
    stored[0].write_text(json.dumps(entry))
    again = to_verilog(_OuterAndAnInner(), "top", ports=[])
    assert "// read back\n" in again and sorted(_modules(again)) == sorted(_modules(first))
