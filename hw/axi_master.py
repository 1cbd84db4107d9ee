"""The core's AXI4 memory master: it shares the read channels among the core's readers (instruction fetch, LD)
and puts the writer's (ST's) bursts on the write channels.

A reader owns the read channels from its accepted burst request to that burst's last beat; when two
ask in one cycle the first wins. The bus-level constants (beat size, INCR bursts, one ID) are set
here, so the units only speak :func:`flightc.hw.axi.read_client_signature` and
:func:`flightc.hw.axi.write_client_signature` streams.
"""
from __future__ import annotations

from amaranth.hdl import Module, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from flightc.hw.axi import axi4_signature, read_client_signature, write_client_signature

INCR = 1  # AXI4 burst type


class AxiMaster(wiring.Component):
    def __init__(self, data_bytes: int, readers: int):
        self.data_bytes, self.readers = data_bytes, readers
        bits = 8 * data_bytes
        super().__init__({"bus": Out(axi4_signature(bits)),
                          "read": In(read_client_signature(bits)).array(readers),
                          "write": In(write_client_signature(bits))})

    def elaborate(self, platform):
        m = Module()
        a, size_log2 = self.bus, self.data_bytes.bit_length() - 1
        m.d.comb += [a.arsize.eq(size_log2), a.arburst.eq(INCR), a.awsize.eq(size_log2), a.awburst.eq(INCR)]
        # ---- reads: one burst at a time, its beats to the reader that asked for it
        owner = Signal(range(max(2, self.readers)))
        busy = Signal()
        with m.If(~busy):
            for i, c in enumerate(self.read):
                with (m.If if i == 0 else m.Elif)(c.ar.valid):
                    m.d.comb += [a.arvalid.eq(1), a.araddr.eq(c.ar.payload.addr), a.arlen.eq(c.ar.payload.len),
                                 c.ar.ready.eq(a.arready)]
                    with m.If(a.arready):
                        m.d.sync += [busy.eq(1), owner.eq(i)]
        with m.Else():
            for i, c in enumerate(self.read):
                with m.If(owner == i):
                    m.d.comb += [c.r.valid.eq(a.rvalid), a.rready.eq(c.r.ready)]
            with m.If(a.rvalid & a.rready & a.rlast):
                m.d.sync += busy.eq(0)
        for c in self.read:
            m.d.comb += [c.r.payload.data.eq(a.rdata), c.r.payload.last.eq(a.rlast)]
        # ---- writes: the writer's streams are the write channels
        wr = self.write
        m.d.comb += [a.awvalid.eq(wr.aw.valid), a.awaddr.eq(wr.aw.payload.addr), a.awlen.eq(wr.aw.payload.len),
                     wr.aw.ready.eq(a.awready),
                     a.wvalid.eq(wr.w.valid), a.wdata.eq(wr.w.payload.data), a.wstrb.eq(wr.w.payload.strb),
                     a.wlast.eq(wr.w.payload.last), wr.w.ready.eq(a.wready),
                     wr.b.valid.eq(a.bvalid), wr.b.payload.eq(a.bresp), a.bready.eq(wr.b.ready)]
        return m
