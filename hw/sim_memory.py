"""A simulation-only AXI4 memory for the RTL testbench, with pseudo-random backpressure.

It keeps Python out of the per-cycle path: the harness loads and reads ``storage`` through the
simulator's VPI between runs, and a 16-bit LFSR withholds ready/valid on every channel with
probability ``stall_rate / 256``.
"""
from __future__ import annotations

from amaranth.hdl import Module, Signal
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In

from flightc.hw.axi import AXI_LEN_BITS, axi4_signature


STALL_RATE_BITS = 8  # stall_rate / 2^8 is the probability a channel withholds ready/valid in a cycle


class AxiMemory(wiring.Component):
    """The slave end of an AXI4 bus (``axi``), ``depth_words`` beats deep."""

    def __init__(self, data_bytes: int, depth_words: int):
        self.data_bytes, self.depth = data_bytes, depth_words
        super().__init__({"axi": In(axi4_signature(8 * data_bytes)), "stall_rate": In(STALL_RATE_BITS)})
        self.storage = Memory(shape=8 * data_bytes, depth=depth_words, init=[])

    def elaborate(self, platform):
        m = Module()
        a = self.axi
        lb = self.data_bytes.bit_length() - 1
        m.submodules.storage = mem = self.storage
        rp = mem.read_port(domain="comb")
        wp = mem.write_port(granularity=8)
        lfsr = Signal(16, init=0xACE1)
        m.d.sync += lfsr.eq((lfsr << 1) | (lfsr[15] ^ lfsr[13] ^ lfsr[12] ^ lfsr[10]))
        go_r = Signal()
        go_w = Signal()
        m.d.comb += [go_r.eq(lfsr[:STALL_RATE_BITS] >= self.stall_rate),
                     go_w.eq(lfsr[STALL_RATE_BITS:2 * STALL_RATE_BITS] >= self.stall_rate)]
        # ---- reads: one burst at a time
        raddr = Signal(64)
        rleft = Signal(AXI_LEN_BITS + 1)
        m.d.comb += a.rresp.eq(0)
        with m.If(rleft == 0):
            m.d.comb += a.arready.eq(go_r)
            with m.If(a.arvalid & go_r):
                m.d.sync += [raddr.eq(a.araddr >> lb), rleft.eq(a.arlen + 1)]
        with m.Else():
            m.d.comb += [rp.addr.eq(raddr), a.rdata.eq(rp.data), a.rvalid.eq(go_r), a.rlast.eq(rleft == 1)]
            with m.If(a.rvalid & a.rready):
                m.d.sync += [raddr.eq(raddr + 1), rleft.eq(rleft - 1)]
        # ---- writes
        waddr = Signal(64)
        wleft = Signal(AXI_LEN_BITS + 1)
        bpend = Signal()
        m.d.comb += a.bresp.eq(0)
        with m.If((wleft == 0) & ~bpend):
            m.d.comb += a.awready.eq(go_w)
            with m.If(a.awvalid & go_w):
                m.d.sync += [waddr.eq(a.awaddr >> lb), wleft.eq(a.awlen + 1)]
        with m.Elif(wleft != 0):
            m.d.comb += a.wready.eq(go_w)
            with m.If(a.wvalid & go_w):
                m.d.comb += [wp.addr.eq(waddr), wp.data.eq(a.wdata), wp.en.eq(a.wstrb)]
                m.d.sync += [waddr.eq(waddr + 1), wleft.eq(wleft - 1)]
                with m.If(wleft == 1):
                    m.d.sync += bpend.eq(1)
        with m.Else():
            m.d.comb += a.bvalid.eq(go_w)
            with m.If(a.bready & go_w):
                m.d.sync += bpend.eq(0)
        return m
