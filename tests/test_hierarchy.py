"""Repeated components generated once (hw/hierarchy.py): one module per key, an instance per copy, and the
buffers' RAMs as one Verilog template instead of Amaranth memories with an initializer net per bit."""
from __future__ import annotations

import re

from amaranth.hdl import Elaboratable, Module

from flightc.config import PRESETS
from flightc.hw.buffers import BufferBank, PortRole
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
    assert banks == 5 * cfg.axi_masters  # five buffers, a bank per master
    assert _modules(text).count(RAM_MODULE) == 1
    assert "initial begin" not in text.split(f"module {RAM_MODULE}(")[0]
    # the LD lanes only write: no read data comes back to them
    assert not re.search(r"port_ld0__rdata = mem_", text)
    assert re.search(r"port_mpe__rdata = mem_acc0_rdata", text)
