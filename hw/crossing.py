"""What a signal passes on its way between SLRs: registers, so that no path crosses a die boundary unregistered
(hw/latency_rules.py ``SLR_CROSSING`` of them each way). A level or a pulse takes plain registers
(:func:`crossing`); a stream takes register slices (:class:`RegisterSlice`), which keep its handshake whole and its
rate a beat a cycle.
"""
from __future__ import annotations

from amaranth.hdl import Cat, Module, Mux, Signal, Value
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out


def crossing(m: Module, value: Value, name: str, stages: int) -> Value:
    """``value`` registered ``stages`` times."""
    for k in range(stages):
        reg = Signal(len(value), name=f"{name}_x{k}")
        m.d.sync += reg.eq(value)
        value = reg
    return value


class RegisterSlice(wiring.Component):
    """A stream registered once each way: ``o``'s valid and payload are registers, and so is ``i``'s ready (a
    skid register takes the beat that arrives as ``o`` stalls), so a beat a cycle still passes."""

    def __init__(self, shape):
        self.shape = shape
        super().__init__({"i": In(stream.Signature(shape)), "o": Out(stream.Signature(shape))})

    def elaborate(self, platform):
        m = Module()
        i, o = self.i, self.o
        skid, skid_full = Signal(self.shape, name="skid"), Signal()
        m.d.comb += i.ready.eq(~skid_full)
        with m.If(o.ready | ~o.valid):
            m.d.sync += [o.valid.eq(skid_full | i.valid), o.payload.eq(Mux(skid_full, skid, i.payload)),
                         skid_full.eq(0)]
        with m.Elif(i.valid & ~skid_full):
            m.d.sync += [skid.eq(i.payload), skid_full.eq(1)]
        return m


def slices(m: Module, source, shape, name: str, stages: int):
    """Stream ``source`` (an outgoing stream interface) through ``stages`` register slices: the last one's output
    (``source`` itself with none)."""
    for k in range(stages):
        m.submodules[f"{name}_x{k}"] = s = RegisterSlice(shape)
        wiring.connect(m, source, s.i)
        source = s.o
    return source


class ReadCrossing(wiring.Component):
    """Memory masters' read channels registered on their way between a core and the kernel's ports (``stages``
    register slices each way): ``core[g]`` the core's side of master g, ``bus[g]`` the port's. The AR and R
    channels' signals as streams (a request's address and length; a beat's data, last, response and ID), the
    constant fields (the burst's size and type, the ID) with them."""

    def __init__(self, data_bits: int, masters: int, stages: int):
        from flightc.hw.axi import axi4_signature

        self.data_bits, self.stages = data_bits, stages
        sig = axi4_signature(data_bits, "r")
        super().__init__({"core": In(sig).array(masters), "bus": Out(sig).array(masters)})

    def elaborate(self, platform):
        from flightc.hw.axi import axi4_table, reads

        m = Module()
        table = [row for row in axi4_table(self.data_bits) if reads(row[0])]
        for g, (inner, outer) in enumerate(zip(self.core, self.bus)):
            m.submodules[f"master{g}"] = here = Module()
            for channel, by_master in (("ar", True), ("r", False)):
                fields = [name for name, _, master in table if name.startswith(channel) and master == by_master
                          and name not in (f"{channel}valid", f"{channel}ready")]
                src, dst = (inner, outer) if by_master else (outer, inner)
                shape = sum(len(getattr(src, f)) for f in fields)
                entry = stream.Signature(shape).create()
                m.d.comb += [entry.valid.eq(getattr(src, f"{channel}valid")), entry.payload.eq(
                    Cat(*(getattr(src, f) for f in fields))), getattr(src, f"{channel}ready").eq(entry.ready)]
                out = slices(here, entry, shape, channel, self.stages)
                m.d.comb += [getattr(dst, f"{channel}valid").eq(out.valid),
                             out.ready.eq(getattr(dst, f"{channel}ready")),
                             Cat(*(getattr(dst, f) for f in fields)).eq(out.payload)]
        return m
