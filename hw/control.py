"""Control of one core: AXI4-Lite registers, instruction fetch, per-unit queues and wait/release tokens.

Fetch reads the instruction stream over AXI4, assembles 32-bit words into instructions (the
class width comes from the ISA table) and dispatches each, in program order, to its unit's
queue. A unit starts its head instruction once every unit it waits for has left a token and
every unit it releases to has room; it releases when it finishes. This is the decoupled
execution of the functional simulator (flightc.sim.functional), in hardware.
"""
from __future__ import annotations

from amaranth.hdl import Cat, Const, Elaboratable, Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.wiring import Out

from flightc.config import HardwareConfig
from flightc.hw import regs as R
from flightc.hw.axi import AXI_ADDR_BITS, LITE_DATA_BITS, read_client_signature
from flightc.hw.axi_rules import AXI_BOUNDARY
from flightc.hw.axi_rules import LD_IN_FLIGHT, ST_IN_FLIGHT
from flightc.hw.decode import MAX_WIDTH, class_unit, class_words, fields, header, opcode_of, unit_width
from flightc.hw.unit import unit_signature
from flightc.isa.table import ISA, OPCODE_BITS, WORD_BITS, Opcode, SysOp, Unit

NUNITS = len(Unit)
FETCH_BURSTS = 2  # instruction bursts the fetcher's beat FIFO holds (and has in flight)


def unit_port(unit: Unit):
    """The control's end of a unit's handshake (hw/unit.py's signature, flipped)."""
    return unit_signature(unit).flip().create(path=(f"{unit.name.lower()}_port",))


class Fetcher(wiring.Component):
    """Streams ``program_bytes`` from ``program_addr`` (a reader of the core's AXI master, ``rd``) and emits
    whole instructions."""

    def __init__(self, cfg: HardwareConfig):
        self.cfg = cfg
        super().__init__({"rd": Out(read_client_signature(8 * cfg.axi_data_bytes))})
        self.begin = Signal()
        self.program_addr = Signal(AXI_ADDR_BITS)
        self.program_bytes = Signal(32)
        self.out_valid = Signal()
        self.out_ready = Signal()
        self.out_bits = Signal(MAX_WIDTH)
        self.out_opcode = Signal(OPCODE_BITS)
        self.finished = Signal()
        self.bad_opcode = Signal()

    def elaborate(self, platform):
        m = Module()
        rd = self.rd
        w = self.cfg.axi_data_bytes
        lb = w.bit_length() - 1
        words_per_beat = max(1, w * 8 // WORD_BITS)
        addr = Signal(AXI_ADDR_BITS)
        left = Signal(32)  # bytes not yet consumed
        depth = FETCH_BURSTS * self.cfg.axi_burst_beats
        inflight = Signal(range(depth + 1))  # beats asked for and not yet here
        beat = Signal(8 * w)
        widx = Signal(range(words_per_beat + 1))
        have_beat = Signal()
        ir = Signal(MAX_WIDTH)
        got = Signal(range(MAX_WIDTH // WORD_BITS + 1))
        need = Signal(range(MAX_WIDTH // WORD_BITS + 1))
        full = Signal()
        requested = Signal(32)  # bytes asked for
        m.d.comb += [self.out_valid.eq(full), self.out_bits.eq(ir), self.out_opcode.eq(opcode_of(ir)),
                     self.finished.eq((left == 0) & ~full)]
        with m.If(self.begin):
            m.d.sync += [addr.eq(self.program_addr), left.eq(self.program_bytes), requested.eq(0),
                         have_beat.eq(0), full.eq(0), got.eq(0), self.bad_opcode.eq(0)]
        with m.If(self.out_valid & self.out_ready):
            m.d.sync += [full.eq(0), got.eq(0)]
        # Bursts land in a FIFO with room reserved for every beat asked for, so the shared read channel never
        # waits on dispatch (which may wait on a unit that waits on an LD that needs the channel); it holds
        # FETCH_BURSTS bursts, so the next burst is asked for while the last one is being taken apart.
        m.submodules.beats = fifo = SyncFIFOBuffered(width=8 * w, depth=depth)
        unrequested = Signal(32)
        m.d.comb += unrequested.eq(self.program_bytes - requested)
        to_boundary = (Const(AXI_BOUNDARY, 13) - addr[:12]) >> lb
        want = (unrequested + (w - 1)) >> lb
        room = depth - fifo.level - inflight
        n = Mux(want < to_boundary, want, to_boundary)
        n = Mux(n < self.cfg.axi_burst_beats, n, self.cfg.axi_burst_beats)
        asked = Signal()
        received = Signal()
        with m.If(~self.begin & (unrequested != 0) & (room >= n) & (left != 0)):
            m.d.comb += [rd.ar.valid.eq(1), rd.ar.payload.addr.eq(addr), rd.ar.payload.len.eq(n - 1)]
            with m.If(rd.ar.ready):
                m.d.comb += asked.eq(1)
                m.d.sync += [addr.eq(addr + (n << lb)),
                             requested.eq(Mux(requested + (n << lb) > self.program_bytes, self.program_bytes,
                                              requested + (n << lb)))]
        m.d.comb += [rd.r.ready.eq(inflight != 0), fifo.w_en.eq(rd.r.valid & rd.r.ready),
                     fifo.w_data.eq(rd.r.payload.data), received.eq(rd.r.valid & rd.r.ready)]
        m.d.sync += inflight.eq(inflight + Mux(asked, n, 0) - received)
        # the rest of the beat in hand goes into the instruction register in one cycle, up to the instruction's last
        # word; a beat used up is replaced from the FIFO in the same cycle, and an instruction dispatched this cycle
        # makes room for the next one's words at once
        wsel = max(1, (words_per_beat - 1).bit_length())
        taking = have_beat & (~full | self.out_ready) & ~self.begin & (left != 0)
        at = Mux(full, 0, got)  # where this cycle's words go in the instruction register
        first = beat.word_select(widx[:wsel], WORD_BITS) if words_per_beat > 1 else beat[:WORD_BITS]
        this_need = Mux(at == 0, class_words(opcode_of(first)), need)
        in_beat = words_per_beat - widx
        want_words = this_need - at
        left_words = left >> 2
        take = Signal(range(words_per_beat + 1))
        m.d.comb += take.eq(Mux(want_words < in_beat, Mux(want_words < left_words, want_words, left_words),
                                Mux(in_beat < left_words, in_beat, left_words)))
        used_up = Signal()
        m.d.comb += used_up.eq(taking & (widx + take == words_per_beat))
        with m.If(((~have_beat & ~self.begin) | used_up) & fifo.r_rdy):
            m.d.comb += fifo.r_en.eq(1)
            m.d.sync += [beat.eq(fifo.r_data), widx.eq(0), have_beat.eq(1)]
        with m.Elif(used_up):
            m.d.sync += have_beat.eq(0)
        with m.If(have_beat & ~self.begin & (left == 0)):
            m.d.sync += have_beat.eq(0)
        with m.If(taking):
            m.d.sync += left.eq(left - (take << 2))
            with m.If(~used_up):
                m.d.sync += widx.eq(widx + take)
            with m.If(at == 0):  # the words a shorter class leaves unused read as zero
                m.d.sync += ir.eq(0)
            for i in range(min(words_per_beat, MAX_WIDTH // WORD_BITS)):
                src = (widx + i)[:wsel] if words_per_beat > 1 else 0
                with m.If(i < take):
                    word_i = beat.word_select(src, WORD_BITS) if words_per_beat > 1 else beat[:WORD_BITS]
                    m.d.sync += ir.word_select((at + i)[:len(got)], WORD_BITS).eq(word_i)
            with m.If(at == 0):
                m.d.sync += need.eq(this_need)
                with m.If(opcode_of(first) >= len(Opcode)):
                    m.d.sync += self.bad_opcode.eq(1)
            m.d.sync += [got.eq(at + take), full.eq(at + take == this_need)]
        return m


class AxiLiteRegs(Elaboratable):
    """The register file of :mod:`flightc.hw.regs` behind an AXI4-Lite slave."""

    def __init__(self, cfg: HardwareConfig, lite, core_id: int = 0):
        self.cfg, self.lite, self.core_id = cfg, lite, core_id
        self.regmap = R.register_map(cfg)
        self.values = {r.name: Signal(r.bits, name=f"reg_{r.name}") for r in self.regmap}
        self.ap_start = Signal()
        self.ap_done = Signal()
        self.ap_idle = Signal(init=1)
        self.ap_ready = Signal()
        self.interrupt = Signal()
        self.done_pulse = Signal()  # from the core
        self.started = Signal()  # to the core: begin a run
        self.counters = {n: Signal(64, name=f"cnt_{n}") for n in R.COUNTERS}

    def elaborate(self, platform):
        m = Module()
        s = self.lite
        gie = Signal()
        ier = Signal(2)
        isr = Signal(2)
        v = self.values
        m.d.comb += [v["isa_version"].eq(R.isa_version_word()), v["config_hash"].eq(R.config_hash_word(self.cfg)),
                     v["core_id"].eq(self.core_id)]
        for n, c in self.counters.items():
            m.d.comb += v[n].eq(c)
        words = {}  # word offset -> (signal slice, writable)
        for r in self.regmap:
            for k in range(r.bits // 32):
                words[r.offset + 4 * k] = (v[r.name][32 * k:32 * (k + 1)], r.access is R.RegAccess.RW)
        # ---- writes
        bpend = Signal()
        m.d.comb += s.bvalid.eq(bpend)
        with m.If(bpend & s.bready):
            m.d.sync += bpend.eq(0)
        with m.If(s.awvalid & s.wvalid & ~bpend):
            m.d.comb += [s.awready.eq(1), s.wready.eq(1)]
            m.d.sync += bpend.eq(1)
            with m.Switch(s.awaddr):
                with m.Case(R.CTRL):
                    with m.If(s.wdata[0]):
                        m.d.sync += self.ap_start.eq(1)
                with m.Case(R.GIE):
                    m.d.sync += gie.eq(s.wdata[0])
                with m.Case(R.IER):
                    m.d.sync += ier.eq(s.wdata[:2])
                with m.Case(R.ISR):
                    m.d.sync += isr.eq(isr ^ s.wdata[:2])
                for off, (sl, writable) in words.items():
                    if writable:
                        with m.Case(off):
                            m.d.sync += sl.eq(s.wdata)
        # ---- reads
        rpend = Signal()
        rdata = Signal(LITE_DATA_BITS)
        m.d.comb += [s.rvalid.eq(rpend), s.rdata.eq(rdata)]
        with m.If(rpend & s.rready):
            m.d.sync += rpend.eq(0)
        with m.If(s.arvalid & ~rpend):
            m.d.comb += s.arready.eq(1)
            m.d.sync += rpend.eq(1)
            with m.Switch(s.araddr):
                with m.Case(R.CTRL):
                    m.d.sync += [rdata.eq(Cat(self.ap_start, self.ap_done, self.ap_idle, self.ap_ready)),
                                 self.ap_done.eq(0)]
                with m.Case(R.GIE):
                    m.d.sync += rdata.eq(gie)
                with m.Case(R.IER):
                    m.d.sync += rdata.eq(ier)
                with m.Case(R.ISR):
                    m.d.sync += rdata.eq(isr)
                for off, (sl, _) in words.items():
                    with m.Case(off):
                        m.d.sync += rdata.eq(sl)
                with m.Default():
                    m.d.sync += rdata.eq(0)
        # ---- ap_ctrl_hs
        m.d.comb += self.started.eq(self.ap_start & self.ap_idle)
        m.d.sync += self.ap_ready.eq(0)
        with m.If(self.started):
            m.d.sync += [self.ap_idle.eq(0), self.ap_start.eq(0), self.ap_ready.eq(1)]
        with m.If(self.done_pulse):
            m.d.sync += [self.ap_idle.eq(1), self.ap_done.eq(1), isr.eq(isr | ier)]
        m.d.comb += self.interrupt.eq(gie & (isr & ier).any())
        return m


class Control(wiring.Component):
    """Fetch, dispatch, issue with tokens, the SYS unit and the run's cycle counters; ``rd`` is the fetch's
    reader of the AXI master."""

    def __init__(self, cfg: HardwareConfig, units: dict[Unit, object], lite_regs: AxiLiteRegs,
                 ready: dict[Unit, Signal] | None = None):
        """``ready``: units that take their next instruction before the last one is done (LD: once it has asked
        for all of its bursts; ST: once it has sent all of its writes), each with the signal that says it can; up
        to ``LD_IN_FLIGHT`` LDs and ``ST_IN_FLIGHT`` STs are in flight, done in the order they started."""
        self.cfg, self.units, self.regs = cfg, units, lite_regs
        self.ready = ready or {}
        super().__init__({"rd": Out(read_client_signature(8 * cfg.axi_data_bytes))})
        # per unit: its queue's head is there and every token it waits for (and room for those it releases) is, so it
        # would start if the unit were free (the MPE reads the next streamed MV's tile ahead on it)
        self.head_ok = {u: Signal(name=f"head_ok_{u.name.lower()}") for u in Unit}
        # per unit: its queue's head is there, whatever its tokens (the MPE reads a w_early tile ahead on it)
        self.head_in = {u: Signal(name=f"head_in_{u.name.lower()}") for u in Unit}
        self.barrier_req = Signal()  # the SYS unit waits at a barrier (multi-core)
        self.barrier_go = Signal()  # every core is at the barrier
        self.running = Signal()
        self.error = Signal()

    def elaborate(self, platform):
        m = Module()
        cfg, regs = self.cfg, self.regs
        m.submodules.fetch = fetch = Fetcher(cfg)
        wiring.connect(m, wiring.flipped(self.rd), fetch.rd)
        v = regs.values
        m.d.comb += [fetch.program_addr.eq(v["program_addr"]), fetch.program_bytes.eq(v["program_bytes"]),
                     fetch.begin.eq(regs.started)]
        sys_port = unit_port(Unit.SYS)
        ports = dict(self.units)
        ports[Unit.SYS] = sys_port
        queues = {}
        for u in Unit:
            q = SyncFIFOBuffered(width=unit_width(u), depth=cfg.unit_queue_depth)
            m.submodules[f"q_{u.name.lower()}"] = q
            queues[u] = q
        # dispatch
        target = class_unit(fetch.out_opcode)
        for u, q in queues.items():
            m.d.comb += q.w_data.eq(fetch.out_bits[:unit_width(u)])
            with m.If(fetch.out_valid & (target == int(u)) & ~fetch.bad_opcode):
                m.d.comb += [q.w_en.eq(1), fetch.out_ready.eq(q.w_rdy)]
        with m.If(fetch.out_valid & fetch.bad_opcode):
            m.d.comb += fetch.out_ready.eq(1)
            m.d.sync += self.error.eq(1)
        # tokens: tok[a][b] counts releases from a not yet waited for by b
        depth = cfg.token_fifo_depth
        tok = [[Signal(range(depth + 1), name=f"tok_{a.name}_{b.name}") for b in Unit] for a in Unit]
        busy = {u: Signal(name=f"busy_{u.name.lower()}") for u in Unit}
        held = {u: Signal(unit_width(u), name=f"held_{u.name.lower()}") for u in Unit}  # the oldest in flight
        starting = {u: Signal(name=f"starting_{u.name.lower()}") for u in Unit}
        finishing = {u: Signal(name=f"finishing_{u.name.lower()}") for u in Unit}
        for u, q in queues.items():
            h = header(q.r_data)
            if u in self.ready:
                most = ST_IN_FLIGHT if u is Unit.ST else LD_IN_FLIGHT
                inflight = Signal(range(most + 1), name=f"inflight_{u.name.lower()}")
                ok = q.r_rdy & (inflight < most) & self.ready[u] & self.running
            else:
                ok = q.r_rdy & ~busy[u] & self.running
            tokens = q.r_rdy & self.running
            for o in Unit:
                if o is u:
                    continue
                tokens = tokens & (~h.wait[int(o)] | (tok[o][u] != 0)) & (~h.release[int(o)] | (tok[u][o] != depth))
            ok = ok & tokens
            m.d.comb += [starting[u].eq(ok), self.head_ok[u].eq(tokens), self.head_in[u].eq(q.r_rdy & self.running)]
            with m.If(ok):
                m.d.comb += [q.r_en.eq(1), ports[u].start.eq(1)]
            m.d.comb += ports[u].instr.eq(q.r_data)
            m.d.comb += finishing[u].eq(ports[u].done & busy[u])
            if u in self.ready:  # done in the order started: the oldest's header releases its tokens
                # the headers in flight, oldest first (held[u] is the oldest)
                line = [held[u]] + [Signal(unit_width(u), name=f"held{k + 2}_{u.name.lower()}")
                                    for k in range(most - 1)]
                m.d.comb += busy[u].eq(inflight != 0)
                with m.If(ok & ~finishing[u]):
                    m.d.sync += inflight.eq(inflight + 1)
                    with m.Switch(inflight):
                        for k in range(most):
                            with m.Case(k):
                                m.d.sync += line[k].eq(q.r_data)
                with m.Elif(finishing[u]):  # the oldest leaves; one starting as it does joins the line's end
                    m.d.sync += [line[k].eq(line[k + 1]) for k in range(most - 1)]
                    with m.If(~ok):
                        m.d.sync += inflight.eq(inflight - 1)
                    with m.Else():
                        with m.Switch(inflight):
                            for k in range(1, most + 1):
                                with m.Case(k):
                                    m.d.sync += line[k - 1].eq(q.r_data)
            else:
                with m.If(ok):
                    m.d.sync += [busy[u].eq(1), held[u].eq(q.r_data)]
                with m.If(finishing[u]):
                    m.d.sync += busy[u].eq(0)
        for a in Unit:
            for b in Unit:
                if a is b:
                    continue
                inc = finishing[a] & header(held[a]).release[int(b)]
                dec = starting[b] & header(queues[b].r_data).wait[int(a)]
                with m.If(regs.started):
                    m.d.sync += tok[a][b].eq(0)
                with m.Elif(inc & ~dec):
                    m.d.sync += tok[a][b].eq(tok[a][b] + 1)
                with m.Elif(dec & ~inc):
                    m.d.sync += tok[a][b].eq(tok[a][b] - 1)
        # the SYS unit
        sf = fields(held[Unit.SYS], Opcode.SYS)
        end_seen = Signal()
        sys_active = Signal()
        with m.If(sys_port.start):
            m.d.sync += sys_active.eq(1)
        with m.If(sys_active):
            with m.If(sf.op == int(SysOp.BARRIER)):
                m.d.comb += self.barrier_req.eq(1)
                with m.If(self.barrier_go):
                    m.d.comb += sys_port.done.eq(1)
                    m.d.sync += sys_active.eq(0)
            with m.Else():
                m.d.comb += sys_port.done.eq(1)
                m.d.sync += sys_active.eq(0)
                with m.If(sf.op == int(SysOp.END)):
                    m.d.sync += end_seen.eq(1)
        # run control and counters
        idle_units = Cat(*[~busy[u] for u in Unit]).all()
        empty = Cat(*[~q.r_rdy for q in queues.values()]).all()
        finished = self.running & end_seen & fetch.finished & idle_units & empty
        with m.If(regs.started):
            m.d.sync += [self.running.eq(1), end_seen.eq(0), self.error.eq(0)]
            for c in regs.counters.values():
                m.d.sync += c.eq(0)
        with m.Elif(finished):
            m.d.sync += self.running.eq(0)
            m.d.comb += regs.done_pulse.eq(1)
        with m.If(self.running):
            m.d.sync += regs.counters["cycles"].eq(regs.counters["cycles"] + 1)
            for opcode, cls in ISA.items():
                with m.If(busy[cls.unit] & (opcode_of(held[cls.unit]) == int(opcode))):
                    c = regs.counters[f"busy_{cls.name.lower()}"]
                    m.d.sync += c.eq(c + 1)
        return m
