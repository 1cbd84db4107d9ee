"""Address generators: the row addresses a unit walks, as running sums instead of multipliers.

A unit that walks the rows of a strided operand needs ``base + row * stride`` each row; a
:class:`RowAddress` keeps ``row * stride`` as a running sum (``offset``), so the unit holds adders
and no multiplier. ``restart`` (with the unit's ``start``) goes back to row 0, ``step`` moves to
the next row; ``addr`` follows ``base`` combinationally, so ``base`` and ``stride`` may come from
the instruction the unit latches in the same cycle as ``restart``.
"""
from __future__ import annotations

from amaranth.hdl import Const, Module, Mux, Signal, Value
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from flightc.config import HardwareConfig


def existing_channel(m: Module, channel: Value, cfg: HardwareConfig) -> Signal:
    """The instruction's channel, or 0 for one the config lacks (the functional simulator refuses those)."""
    ch = Signal(range(max(2, cfg.mem_channels)))
    m.d.comb += ch.eq(Mux(channel < cfg.mem_channels, channel, 0))
    return ch


def master_of(channel: Value, cfg: HardwareConfig) -> Value:
    """Which of the core's masters reaches ``channel`` (:meth:`HardwareConfig.master_of`: its run is a power of
    two of masters from a multiple of it, so the channel's master's low bits)."""
    per_log2 = cfg.channels_per_master.bit_length() - 1
    bits = (cfg.axi_masters - 1).bit_length()
    return (channel >> per_log2)[:bits] if bits else Const(0, 1)


def own_block(cfg: HardwareConfig, channel: Value, first_channel: Value) -> tuple[Value, Value]:
    """(whether ``channel`` is one of the core's own, its index among them) for a core whose own channels start at
    ``first_channel`` (a constant the kernel drives, so that cores of equal runs are one module): a core's channels
    are a power of two of them from a multiple of it (hw/core.py check_rtl_config), so the index is the channel's
    low bits and the rest must be the first channel's."""
    chans = len(cfg.core_channels)
    nb = chans.bit_length() - 1
    if chans & (chans - 1) or (1 << nb) >= cfg.mem_channels:  # (a core of every channel: all of them its own)
        return Const(1), channel
    return (channel >> nb) == (first_channel >> nb), channel[:nb]


class RowAddress(wiring.Component):
    def __init__(self, width: int):
        self.width = width
        super().__init__({"restart": In(1), "step": In(1), "base": In(width), "stride": In(width),
                          "offset": Out(width), "addr": Out(width)})

    def elaborate(self, platform):
        m = Module()
        with m.If(self.restart):
            m.d.sync += self.offset.eq(0)
        with m.Elif(self.step):
            m.d.sync += self.offset.eq(self.offset + self.stride)
        m.d.comb += self.addr.eq(self.base + self.offset)
        return m
