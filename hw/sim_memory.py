"""A simulation-only AXI4 memory for the RTL testbench: read latency, bursts in flight, a throttled channel and
pseudo-random backpressure.

It keeps Python out of the per-cycle path: the harness loads and reads ``storage`` through the
simulator's VPI between runs. What it models, each from the config the kernel is built with:

- *latency*: a read burst accepted in cycle t presents its first beat in cycle t + ``latency``;
  up to ``outstanding`` accepted bursts wait in a queue, each answered in order, and the next one
  starts in the cycle after the previous one's last beat (back to back);
- *throttle*: reads and writes share one credit counter that grows by the channel's sustained
  bytes per cycle (:func:`flightc.sim.perf.memory.channel_rate_q`) and pays a beat's bytes per
  beat, banking less than two beats' worth; a channel as fast as the port has none;
- *backpressure*: a 16-bit LFSR withholds ready/valid with probability ``stall_rate / 256``.

With ``ports`` > 1 it has one slave port per memory master, each with its own queue, latency,
throttle and LFSR, over one storage array (a master reaches only its channels' buffers, which the
host places there, so the ports never share an address).
"""
from __future__ import annotations

from amaranth.hdl import Const, Module, Mux, Signal
from amaranth.lib import data, wiring
from amaranth.lib.fifo import SyncFIFO
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In

from flightc.hw.axi import AXI_LEN_BITS, axi4_signature
from flightc.sim.perf.memory import RATE_FRAC_BITS

STALL_RATE_BITS = 8  # stall_rate / 2^8 is the probability a channel withholds ready/valid in a cycle
STAMP_BITS = 32  # the cycle counter read bursts are stamped with




def lfsr_seed(port: int) -> int:
    """Port g's LFSR seed: a different stall pattern per port, never the all-zero state."""
    return (0xACE1 + 0x2F1B * port) & 0xFFFF or 1


class AxiMemory(wiring.Component):
    """The slave end of ``ports`` AXI4 buses (``axi[g]``) over one array ``depth_words`` beats deep.

    ``rate_q``: sustained bytes per cycle of a port times 2^RATE_FRAC_BITS (None or at least a beat: no throttle).
    """

    def __init__(self, data_bytes: int, depth_words: int, latency: int = 2, outstanding: int = 1,
                 rate_q: int | None = None, ports: int = 1):
        if latency < 2:
            raise ValueError(f"read latency {latency}: a burst is queued a cycle before its first beat (>= 2)")
        self.data_bytes, self.depth, self.nports = data_bytes, depth_words, ports
        self.latency, self.outstanding = latency, outstanding
        beat_q = data_bytes << RATE_FRAC_BITS
        self.rate_q = rate_q if rate_q is not None and rate_q < beat_q else None
        super().__init__({"axi": In(axi4_signature(8 * data_bytes)).array(ports), "stall_rate": In(STALL_RATE_BITS)})
        self.storage = Memory(shape=8 * data_bytes, depth=depth_words, init=[])

    def elaborate(self, platform):
        m = Module()
        m.submodules.storage = mem = self.storage
        for g in range(self.nports):
            self._port(m, mem, self.axi[g], g)
        return m

    def _port(self, m: Module, mem: Memory, a, g: int) -> None:
        lb = self.data_bytes.bit_length() - 1
        rp = mem.read_port(domain="comb")
        wp = mem.write_port(granularity=8)
        lfsr = Signal(16, init=lfsr_seed(g), name=f"lfsr{g}")
        m.d.sync += lfsr.eq((lfsr << 1) | (lfsr[15] ^ lfsr[13] ^ lfsr[12] ^ lfsr[10]))
        go_r = Signal()
        go_w = Signal()
        m.d.comb += [go_r.eq(lfsr[:STALL_RATE_BITS] >= self.stall_rate),
                     go_w.eq(lfsr[STALL_RATE_BITS:2 * STALL_RATE_BITS] >= self.stall_rate)]
        # ---- the throttle: a beat needs a beat's credit; a write beat goes first (ST moves a beat at a time)
        r_credit, w_credit = Const(1), Const(1)
        r_beat = Signal()
        w_beat = Signal()
        if self.rate_q is not None:
            r_credit, w_credit = Signal(), Signal()
            beat_q = self.data_bytes << RATE_FRAC_BITS
            cap = beat_q + self.rate_q - 1  # a beat's credit and what one cycle adds: no credit is lost while
            credit = Signal(range(cap + 1), init=beat_q)  # short of a beat, and no more than a beat is banked
            grown = credit + self.rate_q - Mux(r_beat | w_beat, beat_q, 0)
            m.d.sync += credit.eq(Mux(grown > cap, cap, grown))
            m.d.comb += [w_credit.eq(credit >= beat_q), r_credit.eq((credit >= beat_q) & ~w_beat)]
        # ---- reads: accepted bursts wait in a queue, stamped, and are answered in order after the latency
        now = Signal(STAMP_BITS)
        m.d.sync += now.eq(now + 1)
        burst = data.StructLayout({"addr": 64 - lb, "len": AXI_LEN_BITS, "stamp": STAMP_BITS})
        m.submodules[f"bursts{g}"] = queue = SyncFIFO(width=burst.size, depth=self.outstanding)
        head = burst(queue.r_data)
        entry = Signal(burst)
        m.d.comb += [a.arready.eq(queue.w_rdy & go_r), entry.addr.eq(a.araddr >> lb), entry.len.eq(a.arlen),
                     entry.stamp.eq(now), queue.w_data.eq(entry.as_value()), queue.w_en.eq(a.arvalid & a.arready)]
        raddr = Signal(64 - lb)
        rleft = Signal(AXI_LEN_BITS + 1)
        m.d.comb += [rp.addr.eq(raddr), a.rdata.eq(rp.data), a.rvalid.eq((rleft != 0) & go_r & r_credit),
                     a.rlast.eq(rleft == 1), a.rresp.eq(0), r_beat.eq(a.rvalid & a.rready)]
        with m.If(r_beat):
            m.d.sync += [raddr.eq(raddr + 1), rleft.eq(rleft - 1)]
        # the next burst starts in the cycle its predecessor's last beat goes, once its latency has passed
        due = (now - head.stamp)[:STAMP_BITS] >= self.latency - 1
        with m.If(queue.r_rdy & due & ((rleft == 0) | ((rleft == 1) & r_beat))):
            m.d.comb += queue.r_en.eq(1)
            m.d.sync += [raddr.eq(head.addr), rleft.eq(head.len + 1)]
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
            m.d.comb += a.wready.eq(go_w & w_credit)
            with m.If(a.wvalid & a.wready):
                m.d.comb += [wp.addr.eq(waddr), wp.data.eq(a.wdata), wp.en.eq(a.wstrb), w_beat.eq(1)]
                m.d.sync += [waddr.eq(waddr + 1), wleft.eq(wleft - 1)]
                with m.If(wleft == 1):
                    m.d.sync += bpend.eq(1)
        with m.Else():
            m.d.comb += a.bvalid.eq(go_w)
            with m.If(a.bready & go_w):
                m.d.sync += bpend.eq(0)
