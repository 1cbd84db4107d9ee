"""Amaranth tops exposing one block's ports for a cocotb bench."""
from __future__ import annotations

from amaranth.hdl import Module
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from flightc.config import HardwareConfig
from flightc.hw.decode import MAX_WIDTH, Fields, class_unit, class_words
from flightc.hw.dsp_chain import SparseDspChain
from flightc.isa.table import ISA, FieldKind


def probe_name(cls_name: str, field: str) -> str:
    return f"f_{cls_name.lower()}_{field}"


class DecoderProbe(wiring.Component):
    """Every field of every class, decoded from one instruction register, plus the dispatch lookups."""

    def __init__(self):
        members = {"instr": In(MAX_WIDTH), "words": Out(5), "unit": Out(3)}
        for cls in ISA.values():
            for p in cls.layout:
                if p.field.kind is not FieldKind.RESERVED:
                    members[probe_name(cls.name, p.field.name)] = Out(p.field.bits)
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        for cls in ISA.values():
            view = Fields(self.instr, cls)
            for p in cls.layout:
                if p.field.kind is not FieldKind.RESERVED:
                    m.d.comb += getattr(self, probe_name(cls.name, p.field.name)).eq(getattr(view, p.field.name))
        m.d.comb += [self.words.eq(class_words(self.instr[:3])), self.unit.eq(class_unit(self.instr[:3]))]
        return m


CHAIN_INPUTS = ("enable", "vals", "idx", "gsb", "window", "a_unsigned", "bits_code", "sparse", "m4", "log2n",
                "group_log2", "valid_lanes")


class ChainProbe(wiring.Component):
    """One sparse DSP chain with its operand registers as ports (clk/rst from the sync domain)."""

    def __init__(self, cfg: HardwareConfig, span_max: int):
        self.cfg, self.span_max = cfg, span_max
        chain = SparseDspChain(cfg, span_max)
        self.chain = chain
        members = {name: In(len(getattr(chain, name))) for name in CHAIN_INPUTS}
        for t in range(cfg.macs_per_dsp):
            members[f"sum{t}"] = Out(cfg.acc_bits)
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        m.submodules.chain = c = self.chain
        for name in CHAIN_INPUTS:
            m.d.comb += getattr(c, name).eq(getattr(self, name))
        for t in range(self.cfg.macs_per_dsp):
            m.d.comb += getattr(self, f"sum{t}").eq(getattr(c, f"sum{t}"))
        return m
