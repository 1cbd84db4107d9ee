"""What every execution unit of a core shares: the instruction handshake with the control, the latched
instruction and the idle state; LD, ST, the MPE and the SFU are :class:`ExecutionUnit` components (the DMA units
add their memory streams as members)."""
from __future__ import annotations

from amaranth.hdl import Module, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from flightc.config import HardwareConfig
from flightc.hw.buffers import word_port_signature
from flightc.hw.decode import fields, unit_width
from flightc.isa.table import Opcode, Unit


def unit_signature(unit: Unit) -> wiring.Signature:
    """From the unit's side: the control pulses ``start`` with ``instr``; the unit pulses ``done``."""
    return wiring.Signature({"start": In(1), "instr": In(unit_width(unit)), "done": Out(1)})


def one_hot(fsm) -> None:
    """Ask synthesis to encode ``fsm``'s state one-hot (Vivado re-encodes a state machine so by default; yosys
    keeps Amaranth's binary code, whose decoding it maps several LUT levels deep on a unit's wide FSM)."""
    fsm.state.attrs["fsm_encoding"] = "one-hot"


class ExecutionUnit(wiring.Component):
    """A unit with its handshake (``ctl``, joined to the control with ``wiring.connect``) and its word port
    into the buffers (``port``); a subclass opens its FSM with :meth:`idle`, which latches the instruction
    into :attr:`ins` on ``start`` (its fields are :meth:`fields`) and moves on."""

    UNIT: Unit

    def __init__(self, cfg: HardwareConfig, **members: wiring.Member):
        self.cfg = cfg
        super().__init__({"ctl": Out(unit_signature(self.UNIT)),
                          "port": Out(word_port_signature(cfg.buffer_port_bytes)), **members})
        self.ins = Signal(unit_width(self.UNIT), name=f"{self.UNIT.name.lower()}_ins")

    @property
    def start(self):
        return self.ctl.start

    @property
    def instr(self):
        return self.ctl.instr

    @property
    def done(self):
        return self.ctl.done

    def fields(self, opcode: Opcode):
        return fields(self.ins, opcode)

    def idle(self, m: Module, then: str, *init) -> None:
        """The IDLE state (call it first inside the unit's ``with m.FSM()``)."""
        with m.State("IDLE"):
            with m.If(self.start):
                m.d.sync += [self.ins.eq(self.instr), *init]
                m.next = then
