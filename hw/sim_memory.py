"""A simulation-only AXI4 memory for the RTL testbench: read latency, bursts in flight, a throttled channel and
pseudo-random backpressure.

It keeps Python out of the per-cycle path: the harness loads and reads ``storage`` through the
simulator's VPI between runs. What it models, each from the config the kernel is built with:

- *latency*: a read burst accepted in cycle t presents its first beat in cycle t + ``latency``;
  up to ``outstanding`` accepted bursts wait in a queue, each answered in order, and the next one
  starts in the cycle after the previous one's last beat (back to back);
- *writes*: a burst's address is taken while fewer than ``outstanding`` bursts await their responses, its
  beats from that cycle on, and its response comes ``latency`` cycles after its last beat, in order;
- *throttle*: reads and writes share one credit counter that grows by the channel's sustained
  bytes per cycle (:func:`flightc.sim.perf.memory.channel_rate_q`) and pays a beat's bytes per
  beat, banking less than two beats' worth; a channel as fast as the port has none;
- *backpressure*: a 16-bit LFSR withholds ready/valid with probability ``stall_rate / 256``;
- ``unthrottled`` lifts the throttle for a run (a test of what the performance model times exactly, which does
  not simulate the credit a master's reads and writes share).

With ``ports`` > 1 it has one slave port per memory master, each with its own queue, latency,
throttle and LFSR, over one storage array (a master reaches only its channels' buffers, which the
host places there, so the ports never share an address).
"""
from __future__ import annotations

from amaranth.hdl import Cat, ClockSignal, Const, Instance, Module, Mux, Signal
from amaranth.lib import data, wiring
from amaranth.lib.fifo import SyncFIFO
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In

from flightc.hw.axi import AXI_LEN_BITS, axi4_signature
from flightc.sim.perf.memory import RATE_FRAC_BITS

STALL_RATE_BITS = 8  # stall_rate / 2^8 is the probability a channel withholds ready/valid in a cycle
STAMP_BITS = 32  # the cycle counter read bursts are stamped with




STORAGE_MODULE = "flightc_storage"
STORAGE_VERILOG = f"""
module {STORAGE_MODULE} #(parameter WORDS = 1, BYTES = 8, PORTS = 1, ABITS = 1) (
  input clk,
  input [PORTS*ABITS-1:0] raddr, output [PORTS*BYTES*8-1:0] rdata,
  input [PORTS*ABITS-1:0] waddr, input [PORTS*BYTES*8-1:0] wdata, input [PORTS*BYTES-1:0] wen);
  reg [BYTES*8-1:0] storage [0:WORDS-1];
  genvar p, b;
  generate for (p = 0; p < PORTS; p = p + 1) begin : port
    wire [BYTES*8-1:0] mask;
    wire [ABITS-1:0] wa = waddr[p*ABITS +: ABITS];
    for (b = 0; b < BYTES; b = b + 1) begin : lane
      assign mask[b*8 +: 8] = {{8{{wen[p*BYTES + b]}}}};
    end
    assign rdata[p*BYTES*8 +: BYTES*8] = storage[raddr[p*ABITS +: ABITS]];
    always @(posedge clk) if (|wen[p*BYTES +: BYTES])
      storage[wa] <= (storage[wa] & ~mask) | (wdata[p*BYTES*8 +: BYTES*8] & mask);
  end endgenerate
endmodule
"""  # the bench memory's array: a combinational read and a byte-masked write per port


class _StoragePort:
    """One port's wires to the array: read address and data, write address, data and byte enables."""

    def __init__(self, abits: int, bits: int, nbytes: int, g: int):
        self.raddr, self.rdata = Signal(abits, name=f"raddr{g}"), Signal(bits, name=f"rdata{g}")
        self.waddr, self.wdata = Signal(abits, name=f"waddr{g}"), Signal(bits, name=f"wdata{g}")
        self.wen = Signal(nbytes, name=f"wen{g}")


def lfsr_seed(port: int) -> int:
    """Port g's LFSR seed: a different stall pattern per port, never the all-zero state."""
    return (0xACE1 + 0x2F1B * port) & 0xFFFF or 1


class AxiMemory(wiring.Component):
    """The slave end of ``ports`` AXI4 buses (``axi[g]``) over one array ``depth_words`` beats deep.

    ``rate_q``: sustained bytes per cycle of a port times 2^RATE_FRAC_BITS (None or at least a beat: no throttle).
    """

    def __init__(self, data_bytes: int, depth_words: int, latency: int = 2, outstanding: int = 1,
                 rate_q: int | None = None, ports: int = 1, verilog_storage: bool = False,
                 write_outstanding: int | None = None):
        """``write_outstanding``: write bursts awaiting their responses (``outstanding`` unless given);
        ``verilog_storage``: the array as an instance of :data:`STORAGE_VERILOG` (the Verilator testbench:
        Amaranth would write, and yosys and Verilator read, an initializer per word of a megabyte array);
        otherwise an Amaranth memory (Amaranth's own simulator)."""
        if latency < 2:
            raise ValueError(f"read latency {latency}: a burst is queued a cycle before its first beat (>= 2)")
        self.data_bytes, self.depth, self.nports = data_bytes, depth_words, ports
        self.latency, self.outstanding = latency, outstanding
        self.write_outstanding = write_outstanding or outstanding
        beat_q = data_bytes << RATE_FRAC_BITS
        self.rate_q = rate_q if rate_q is not None and rate_q < beat_q else None
        super().__init__({"axi": In(axi4_signature(8 * data_bytes)).array(ports), "stall_rate": In(STALL_RATE_BITS),
                          "unthrottled": In(1)})
        self.verilog_storage = verilog_storage
        self.storage = None if verilog_storage else Memory(shape=8 * data_bytes, depth=depth_words, init=[])

    def elaborate(self, platform):
        m = Module()
        bits, abits = 8 * self.data_bytes, max(1, (self.depth - 1).bit_length())
        ports = [_StoragePort(abits, bits, self.data_bytes, g) for g in range(self.nports)]
        if self.verilog_storage:
            m.submodules.storage = Instance(
                STORAGE_MODULE, p_WORDS=self.depth, p_BYTES=self.data_bytes, p_PORTS=self.nports, p_ABITS=abits,
                i_clk=ClockSignal(), i_raddr=Cat(p.raddr for p in ports), o_rdata=Cat(p.rdata for p in ports),
                i_waddr=Cat(p.waddr for p in ports), i_wdata=Cat(p.wdata for p in ports),
                i_wen=Cat(p.wen for p in ports))
        else:
            m.submodules.storage = mem = self.storage
            for p in ports:
                rp, wp = mem.read_port(domain="comb"), mem.write_port(granularity=8)
                m.d.comb += [rp.addr.eq(p.raddr), p.rdata.eq(rp.data), wp.addr.eq(p.waddr), wp.data.eq(p.wdata),
                             wp.en.eq(p.wen)]
        for g, p in enumerate(ports):
            self._port(m, p, self.axi[g], g)
        return m

    def _port(self, m: Module, store: "_StoragePort", a, g: int) -> None:
        lb = self.data_bytes.bit_length() - 1
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
            m.d.comb += [w_credit.eq((credit >= beat_q) | self.unthrottled),
                         r_credit.eq(((credit >= beat_q) & ~w_beat) | self.unthrottled)]
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
        m.d.comb += [store.raddr.eq(raddr), a.rdata.eq(store.rdata), a.rvalid.eq((rleft != 0) & go_r & r_credit),
                     a.rlast.eq(rleft == 1), a.rresp.eq(0), r_beat.eq(a.rvalid & a.rready)]
        with m.If(r_beat):
            m.d.sync += [raddr.eq(raddr + 1), rleft.eq(rleft - 1)]
        # the next burst starts in the cycle its predecessor's last beat goes, once its latency has passed
        due = (now - head.stamp)[:STAMP_BITS] >= self.latency - 1
        with m.If(queue.r_rdy & due & ((rleft == 0) | ((rleft == 1) & r_beat))):
            m.d.comb += queue.r_en.eq(1)
            m.d.sync += [raddr.eq(head.addr), rleft.eq(head.len + 1)]
        # ---- writes: a burst's address taken while fewer than ``write_outstanding`` await their responses, its beats
        # from that cycle on (credit permitting), its response due ``latency`` cycles after its last beat, in order
        inflight = Signal(range(self.write_outstanding + 1), name=f"w_inflight{g}")
        m.submodules[f"responses{g}"] = resp = SyncFIFO(width=STAMP_BITS, depth=self.write_outstanding)
        waddr = Signal(64 - lb)
        wleft = Signal(AXI_LEN_BITS + 1)
        aw_take = Signal()
        m.d.comb += [a.bresp.eq(0), a.awready.eq((wleft == 0) & (inflight < self.write_outstanding) & go_w),
                     aw_take.eq(a.awvalid & a.awready)]
        at = Mux(wleft == 0, a.awaddr >> lb, waddr)
        beats = Mux(wleft == 0, a.awlen + 1, wleft)
        m.d.comb += a.wready.eq(((wleft != 0) | aw_take) & go_w & w_credit)
        with m.If(aw_take):
            m.d.sync += [waddr.eq(a.awaddr >> lb), wleft.eq(a.awlen + 1)]
        with m.If(a.wvalid & a.wready):
            m.d.comb += [store.waddr.eq(at), store.wdata.eq(a.wdata), store.wen.eq(a.wstrb), w_beat.eq(1)]
            m.d.sync += [waddr.eq(at + 1), wleft.eq(beats - 1)]
            with m.If(beats == 1):
                m.d.comb += [resp.w_en.eq(1), resp.w_data.eq(now)]
        due = (now - resp.r_data)[:STAMP_BITS] >= self.latency
        m.d.comb += [a.bvalid.eq(resp.r_rdy & due & go_w), resp.r_en.eq(a.bvalid & a.bready)]
        m.d.sync += inflight.eq(inflight + aw_take - resp.r_en)
