"""On-chip buffers and the byte bus that lets every unit reach every buffer.

Each buffer (flightc.config.Buffer) is one simple dual-port memory of ``buffer_port_bytes``-wide
words with byte enables. Every unit owns one byte port; per buffer, one round-robin arbiter grants
one read and another one write per cycle, so a unit filling a buffer never slows one reading it. Reads return one cycle after the grant. :class:`ByteEngine` turns a port into a command
("read or write ``count`` bytes from ``addr`` with ``stride``") so the units' state machines
stay short.
"""
from __future__ import annotations

from amaranth.hdl import Array, Cat, Const, Elaboratable, Module, Mux, Signal
from amaranth.lib.memory import Memory

from flightc.config import Buffer, HardwareConfig
from flightc.hw.decode import BUF_SEL_BITS
from flightc.isa.table import BUF_ADDR_BITS



class BytePort:
    """Master side of one unit's byte port."""

    def __init__(self, name: str):
        self.name = name
        self.req = Signal(name=f"{name}_req")
        self.buf = Signal(BUF_SEL_BITS, name=f"{name}_buf")
        self.addr = Signal(BUF_ADDR_BITS, name=f"{name}_addr")
        self.we = Signal(name=f"{name}_we")
        self.wdata = Signal(8, name=f"{name}_wdata")
        self.gnt = Signal(name=f"{name}_gnt")
        self.rvalid = Signal(name=f"{name}_rvalid")
        self.rdata = Signal(8, name=f"{name}_rdata")


class BufferBank(Elaboratable):
    """The five buffers of a core behind per-buffer round-robin arbiters."""

    def __init__(self, cfg: HardwareConfig, ports: list[BytePort]):
        self.cfg, self.ports = cfg, ports
        w = cfg.buffer_port_bytes
        if w & (w - 1):
            raise ValueError(f"buffer_port_bytes {w} must be a power of two")
        self.lane_bits = w.bit_length() - 1
        self.mems = {b: Memory(shape=8 * w, depth=cfg.buffer_bytes(b) // w, init=[]) for b in Buffer}

    def elaborate(self, platform):
        m = Module()
        lb = self.lane_bits
        rvalid_next = [Signal(name=f"{p.name}_rv") for p in self.ports]
        lane_q = [Signal(lb, name=f"{p.name}_lane") for p in self.ports]
        buf_q = [Signal(BUF_SEL_BITS, name=f"{p.name}_bufq") for p in self.ports]
        read_data = {}
        for b, mem in self.mems.items():
            m.submodules[f"mem_{b.name.lower()}"] = mem
            wp = mem.write_port(granularity=8)
            rp = mem.read_port()
            read_data[b] = rp.data
            tag = b.name.lower()
            # a simple dual-port memory: one read and one write per cycle, each with its own round robin
            rg = self._arbiter(m, f"rd_{tag}", [p.req & (p.buf == int(b)) & ~p.we for p in self.ports])
            wg = self._arbiter(m, f"wr_{tag}", [p.req & (p.buf == int(b)) & p.we for p in self.ports])
            (r_any, r_idx), (w_any, w_idx) = rg, wg
            rport, wport = Array(self.ports)[r_idx], Array(self.ports)[w_idx]
            m.d.comb += [
                rp.addr.eq(rport.addr >> lb), wp.addr.eq(wport.addr >> lb),
                wp.data.eq(Cat(*[wport.wdata] * self.cfg.buffer_port_bytes)),
                wp.en.eq(Mux(w_any, Const(1, self.cfg.buffer_port_bytes) << wport.addr[:lb], 0)),
            ]
            for i, p in enumerate(self.ports):
                with m.If((r_any & (r_idx == i)) | (w_any & (w_idx == i))):
                    m.d.comb += p.gnt.eq(1)
        for i, p in enumerate(self.ports):
            m.d.sync += [rvalid_next[i].eq(p.gnt & ~p.we), lane_q[i].eq(p.addr[:lb]), buf_q[i].eq(p.buf)]
            sel = Signal(8 * self.cfg.buffer_port_bytes, name=f"{p.name}_rword")
            with m.Switch(buf_q[i]):
                for b in Buffer:
                    with m.Case(int(b)):
                        m.d.comb += sel.eq(read_data[b])
            m.d.comb += [p.rvalid.eq(rvalid_next[i]), p.rdata.eq(sel.word_select(lane_q[i], 8))]
        return m

    @staticmethod
    def _arbiter(m: Module, name: str, wants: list) -> tuple[Signal, Signal]:
        """Round robin among ``wants``: (any request, the index granted), the first requester after the last grant."""
        n = len(wants)
        want = Cat(*wants)
        last = Signal(range(n), name=f"rr_{name}")
        grant = Signal(range(n), name=f"grant_{name}")
        with m.Switch(last):
            for lst in range(n):
                with m.Case(lst):
                    for i in reversed([(lst + 1 + j) % n for j in range(n)]):
                        with m.If(want[i]):
                            m.d.comb += grant.eq(i)
        with m.If(want.any()):
            m.d.sync += last.eq(grant)
        return want.any(), grant


class ByteEngine(Elaboratable):
    """Moves up to ``max_bytes`` bytes between a unit and one buffer per command.

    Pulse ``start`` with ``write``, ``buf``, ``addr``, ``stride``, ``count`` (and ``wdata``, byte i
    at bits 8i); ``done`` pulses when the last byte is written or has arrived. Arriving bytes
    also appear one by one on ``byte_valid``/``byte_index``/``byte``, and in ``rdata``.
    """

    def __init__(self, port: BytePort, max_bytes: int = 16):
        self.port, self.max_bytes = port, max_bytes
        self.start = Signal()
        self.write = Signal()
        self.buf = Signal(BUF_SEL_BITS)
        self.addr = Signal(BUF_ADDR_BITS)
        self.stride = Signal(BUF_ADDR_BITS)
        self.count = Signal(range(max_bytes + 1))
        self.wdata = Signal(8 * max_bytes)
        self.done = Signal()
        self.busy = Signal()
        self.byte_valid = Signal()
        self.byte_index = Signal(range(max_bytes))
        self.byte = Signal(8)
        self.rdata = Signal(8 * max_bytes)

    def read(self, m: Module, buf, addr, count, stride=1) -> None:
        """Issue a read command this cycle (a unit's FSM calls it in the state that starts the transfer)."""
        m.d.comb += [self.start.eq(1), self.write.eq(0), self.buf.eq(buf), self.addr.eq(addr),
                     self.stride.eq(stride), self.count.eq(count)]

    def write_bytes(self, m: Module, buf, addr, count, data) -> None:
        """Issue a write command of ``count`` bytes of ``data`` (byte i at bits 8i) to consecutive addresses."""
        m.d.comb += [self.start.eq(1), self.write.eq(1), self.buf.eq(buf), self.addr.eq(addr), self.stride.eq(1),
                     self.count.eq(count), self.wdata.eq(data)]

    def elaborate(self, platform):
        m = Module()
        p = self.port
        issued = Signal(range(self.max_bytes + 1))
        received = Signal(range(self.max_bytes + 1))
        count = Signal.like(self.count)
        write = Signal()
        stride = Signal.like(self.stride)
        cur = Signal(BUF_ADDR_BITS)
        wdata = Signal.like(self.wdata)
        buf_q = Signal(BUF_SEL_BITS)
        m.d.comb += p.buf.eq(buf_q)
        with m.If(self.start):
            m.d.sync += [self.busy.eq(self.count != 0), issued.eq(0), received.eq(0), count.eq(self.count),
                         write.eq(self.write), stride.eq(self.stride), cur.eq(self.addr), wdata.eq(self.wdata),
                         buf_q.eq(self.buf)]
            with m.If(self.count == 0):
                m.d.sync += self.done.eq(1)
        with m.Else():
            m.d.sync += self.done.eq(0)
        m.d.comb += [p.req.eq(self.busy & (issued < count)), p.addr.eq(cur), p.we.eq(write),
                     p.wdata.eq(wdata.word_select(issued[:max(1, (self.max_bytes - 1).bit_length())], 8))]
        with m.If(p.req & p.gnt):
            m.d.sync += [issued.eq(issued + 1), cur.eq(cur + stride)]
            with m.If(write & (issued + 1 == count)):
                m.d.sync += [self.busy.eq(0), self.done.eq(1)]
        m.d.comb += [self.byte_valid.eq(p.rvalid & self.busy & ~write), self.byte.eq(p.rdata),
                     self.byte_index.eq(received)]
        with m.If(self.byte_valid):
            m.d.sync += [received.eq(received + 1),
                         self.rdata.word_select(received[:max(1, (self.max_bytes - 1).bit_length())], 8).eq(p.rdata)]
            with m.If(received + 1 == count):
                m.d.sync += [self.busy.eq(0), self.done.eq(1)]
        return m
