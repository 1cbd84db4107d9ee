"""An AXI4 memory master: it shares the read channels among its readers (a core's instruction fetch, LD lanes and
stream reader) and, where it has them, puts a writer's bursts on the write channels (a core's masters read alone:
its writes reach the masters' write channels through hw/write_router.py).

Up to ``axi_outstanding`` read bursts are in flight at once, in order; when two readers ask in one
cycle the first wins. The bus-level constants (beat size, INCR bursts, one ID) are set
here, so the units only speak :func:`flightc.hw.axi.read_client_signature` and
:func:`flightc.hw.axi.write_client_signature` streams.
"""
from __future__ import annotations

from amaranth.hdl import Module
from amaranth.lib.fifo import SyncFIFO
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from flightc.hw.axi import axi4_signature, read_client_signature, write_client_signature

INCR = 1  # AXI4 burst type


class AxiMaster(wiring.Component):
    """``outstanding``: read bursts in flight at once, whichever readers asked for them (an AXI4 ID's bursts are
    answered in order, so one queue of their owners routes every beat); ``writes``: it has the write channels and
    a writer."""

    def __init__(self, data_bytes: int, readers: int, outstanding: int = 1, writes: bool = True):
        self.data_bytes, self.readers, self.outstanding, self.writes = data_bytes, readers, outstanding, writes
        bits = 8 * data_bytes
        super().__init__({"bus": Out(axi4_signature(bits, "rw" if writes else "r")),
                          "read": In(read_client_signature(bits)).array(readers),
                          **({"write": In(write_client_signature(bits))} if writes else {})})

    def elaborate(self, platform):
        m = Module()
        a, size_log2 = self.bus, self.data_bytes.bit_length() - 1
        m.d.comb += [a.arsize.eq(size_log2), a.arburst.eq(INCR)]
        # ---- reads: a request while fewer than ``outstanding`` bursts are in flight (the first reader asking or
        # holding wins: a holding reader leaves the cycle to no one after it), each beat to the reader at the head
        # of the owners' queue, popped with the burst's last beat
        m.submodules.owners = owners = SyncFIFO(width=max(1, (self.readers - 1).bit_length()),
                                                depth=self.outstanding)
        with m.If(owners.w_rdy):
            for i, c in enumerate(self.read):
                with (m.If if i == 0 else m.Elif)(c.ar.valid | c.hold):
                    with m.If(c.ar.valid):
                        m.d.comb += [a.arvalid.eq(1), a.araddr.eq(c.ar.payload.addr),
                                     a.arlen.eq(c.ar.payload.len), c.ar.ready.eq(a.arready), owners.w_data.eq(i),
                                     owners.w_en.eq(a.arready)]
        with m.If(owners.r_rdy):
            for i, c in enumerate(self.read):
                with m.If(owners.r_data == i):
                    m.d.comb += [c.r.valid.eq(a.rvalid), a.rready.eq(c.r.ready)]
            m.d.comb += owners.r_en.eq(a.rvalid & a.rready & a.rlast)
        for c in self.read:
            m.d.comb += [c.r.payload.data.eq(a.rdata), c.r.payload.last.eq(a.rlast)]
        if self.writes:
            put_writes(m, a, self.write, size_log2)
        return m


def put_writes(m: Module, a, wr, size_log2: int) -> None:
    """A writer's streams as the write channels of bus ``a``."""
    m.d.comb += [a.awsize.eq(size_log2), a.awburst.eq(INCR),
                 a.awvalid.eq(wr.aw.valid), a.awaddr.eq(wr.aw.payload.addr), a.awlen.eq(wr.aw.payload.len),
                 wr.aw.ready.eq(a.awready),
                 a.wvalid.eq(wr.w.valid), a.wdata.eq(wr.w.payload.data), a.wstrb.eq(wr.w.payload.strb),
                 a.wlast.eq(wr.w.payload.last), wr.w.ready.eq(a.wready),
                 wr.b.valid.eq(a.bvalid), wr.b.payload.eq(a.bresp), a.bready.eq(wr.b.ready)]
