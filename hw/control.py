"""Control of one core: AXI4-Lite registers, instruction fetch, per-unit queues and wait/release tokens.

Fetch reads the instruction stream over AXI4, assembles 32-bit words into instructions (the
class width comes from the ISA table) and dispatches each, in program order, to its unit's
queue. A unit starts its head instruction once every unit it waits for has left a token and
every unit it releases to has room; it releases when it finishes. This is the decoupled
execution of the functional simulator (flightc.sim.functional), in hardware.
"""
from __future__ import annotations

from dataclasses import dataclass

from amaranth.hdl import Cat, Elaboratable, Module, Mux, Signal, Value
from amaranth.lib import wiring
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.wiring import In, Out

from flightc.config import HardwareConfig
from flightc.hw import regs as R
from flightc.hw.axi import AXI_ADDR_BITS, LITE_DATA_BITS, axi4_lite_signature, read_client_signature
from flightc.hw.axi_rules import AXI_BOUNDARY
from flightc.hw.axi_rules import LD_IN_FLIGHT, ST_IN_FLIGHT
from flightc.hw.decode import MAX_WIDTH, class_unit, class_words, fields, header, opcode_of, unit_width
from flightc.hw.lut6 import select
from flightc.hw.unit import unit_signature
from flightc.isa.table import ISA, WORD_BITS, Opcode, SysOp, Unit

NUNITS = len(Unit)
FETCH_BURSTS = 2  # instruction bursts the fetcher's beat FIFO holds (and has in flight)


def unit_port(unit: Unit):
    """The control's end of a unit's handshake (hw/unit.py's signature, flipped)."""
    return unit_signature(unit).flip().create(path=(f"{unit.name.lower()}_port",))


class Fetcher(wiring.Component):
    """Streams ``program_bytes`` from ``program_addr`` (a reader of the core's AXI master, ``rd``) and emits
    whole instructions.

    Bursts land in a FIFO of beats with room reserved for every beat asked for, so the shared read channel never
    waits on dispatch (which may wait on a unit that waits on an LD that needs the channel); it holds
    ``FETCH_BURSTS`` bursts, so the next burst is asked for while the last one is being taken apart. Two beats
    leave it for a ring (:data:`RING`) as the ring has room, each with its words' class widths and its words of the
    program worked out as it goes in; the instruction register takes the rest of the ring's head beat in one cycle,
    up to the instruction's last word, and the head moves to the next beat in the cycle its last word is taken. So
    no cycle's decision reaches into the FIFO or decodes an opcode: the head's instruction's width and unit, and
    whether it ends inside the beat or at its end, are registers read through a multiplexer (hw/timing.py's budget);
    ``out_unit``, the queue an instruction goes to, is a register too."""

    RING = 2  # beats out of the FIFO, the head beat and the next

    def __init__(self, cfg: HardwareConfig):
        self.cfg = cfg
        super().__init__({"rd": Out(read_client_signature(8 * cfg.axi_data_bytes))})
        self.begin = Signal()
        self.program_addr = Signal(AXI_ADDR_BITS)
        self.program_bytes = Signal(32)
        self.out_valid = Signal()
        self.out_ready = Signal()
        self.out_bits = Signal(MAX_WIDTH)
        self.out_unit = Signal(len(Unit).bit_length())  # the unit whose queue the instruction goes to (a register)
        self.finished = Signal()
        self.bad_opcode = Signal()

    def elaborate(self, platform):
        m = Module()
        rd = self.rd
        w = self.cfg.axi_data_bytes
        lb = w.bit_length() - 1
        per_beat = max(1, w * 8 // WORD_BITS)  # words a beat
        most = MAX_WIDTH // WORD_BITS  # words of the widest class
        wsel = max(1, (per_beat - 1).bit_length())
        depth = FETCH_BURSTS * self.cfg.axi_burst_beats
        # ---- bursts into the FIFO, as many as it has room for: ``free`` a register, and what left the FIFO's count
        # last cycle (a beat that became the ring's head, or was dropped), ``freed``, a register too
        m.submodules.beats = fifo = SyncFIFOBuffered(width=8 * w, depth=depth)
        addr = Signal(AXI_ADDR_BITS)
        unasked = Signal(32 - lb + 1)  # beats of the program not yet asked for
        page = AXI_BOUNDARY >> lb
        to_boundary = Signal(range(page + 1))  # beats before the next 4 KiB boundary
        inflight = Signal(range(depth + 1))  # beats asked for and not yet here
        free = Signal(range(depth + 1), init=depth)  # room not promised (the ring's second beat is the FIFO's)
        freed = Signal()  # a beat left the FIFO's count last cycle
        count = Signal(range(self.RING + 1))  # beats in the ring
        burst = self.cfg.axi_burst_beats

        def beats_of(unasked_beats: Value, to_boundary_beats: Value) -> Value:  # the next burst's
            n = Mux(unasked_beats < to_boundary_beats, unasked_beats, to_boundary_beats)
            return Mux(n < burst, n, burst)

        # the next burst's beats, a register worked out from the cycle's state (so no burst is asked for in the
        # cycle after one: the register follows then)
        n = Signal(range(burst + 1))
        asked_last = Signal()
        first_unasked = (self.program_bytes + (w - 1)) >> lb
        first_to_boundary = page - (self.program_addr[:12] >> lb)
        with m.If(self.begin):
            m.d.sync += [addr.eq(self.program_addr), unasked.eq(first_unasked), to_boundary.eq(first_to_boundary),
                         n.eq(beats_of(first_unasked, first_to_boundary))]
        with m.Else():
            m.d.sync += n.eq(beats_of(unasked, to_boundary))
        asked, received = Signal(), Signal()
        room, room_after = Signal(range(depth + 1)), Signal(range(depth + 1))  # now, and after an ask (if any)
        m.d.comb += [room.eq(free + freed), room_after.eq(room - n)]
        enough = Mux(freed, free + 1 >= n, free >= n)  # room >= n, compared beside the sum
        with m.If(~self.begin & ~asked_last & (n != 0) & enough):
            m.d.comb += [rd.ar.valid.eq(1), rd.ar.payload.addr.eq(addr), rd.ar.payload.len.eq(n - 1)]
            with m.If(rd.ar.ready):
                m.d.comb += asked.eq(1)
                m.d.sync += [addr.eq(addr + (n << lb)), unasked.eq(unasked - n),
                             to_boundary.eq(Mux(to_boundary == n, page, to_boundary - n))]
        m.d.sync += asked_last.eq(asked)
        # a burst's beats are counted in flight the cycle after it is asked for (none arrives sooner)
        n_last = Signal.like(n)
        m.d.sync += n_last.eq(n)
        m.d.comb += [rd.r.ready.eq((inflight != 0) | asked_last), fifo.w_en.eq(rd.r.valid & rd.r.ready),
                     fifo.w_data.eq(rd.r.payload.data), received.eq(rd.r.valid & rd.r.ready)]
        m.d.sync += [inflight.eq(inflight + Mux(asked_last, n_last, 0) - received),
                     free.eq(Mux(asked, room_after, room))]
        # ---- the ring: each beat with its words' class widths, bad opcodes and its words of the program
        width_bits = most.bit_length()
        beat = [Signal(8 * w, name=f"beat{k}") for k in range(self.RING)]
        widths = [Signal(per_beat * width_bits, name=f"widths{k}") for k in range(self.RING)]
        bad = [Signal(per_beat, name=f"bad{k}") for k in range(self.RING)]
        unit_bits = len(self.out_unit)
        units = [Signal(per_beat * unit_bits, name=f"units{k}") for k in range(self.RING)]
        # per word: an instruction starting there ends before the beat's last word of the program, or at it
        inside = [Signal(per_beat, name=f"inside{k}") for k in range(self.RING)]
        at_end = [Signal(per_beat, name=f"at_end{k}") for k in range(self.RING)]
        # and, ending inside, the beat's words it leaves and where the next instruction starts
        left_bits, idx_bits = (per_beat + 1).bit_length(), max(1, (per_beat - 1).bit_length())
        leaves = [Signal(per_beat * left_bits, name=f"leaves{k}") for k in range(self.RING)]
        next_at = [Signal(per_beat * idx_bits, name=f"next_at{k}") for k in range(self.RING)]
        valid = [Signal(range(per_beat + 1), name=f"valid{k}") for k in range(self.RING)]
        head, tail = Signal(), Signal()  # the ring's head beat, where the next goes
        unloaded = Signal(31)  # words of the program not yet in the ring
        more = Signal()  # unloaded != 0
        with m.If(self.begin):
            m.d.sync += [unloaded.eq(self.program_bytes >> 2), more.eq((self.program_bytes >> 2) != 0), count.eq(0),
                         head.eq(0), tail.eq(0)]
        fill = Signal()
        m.d.comb += [fill.eq(fifo.r_rdy & (count < self.RING) & ~self.begin), fifo.r_en.eq(fill)]
        words_in = Mux(unloaded < per_beat, unloaded, per_beat)
        with m.If(fill & more):  # (a beat past the program's words is dropped)
            for k in range(self.RING):
                with m.If(tail == k):
                    m.d.sync += [beat[k].eq(fifo.r_data), valid[k].eq(words_in)]
                    for j in range(per_beat):
                        op = opcode_of(fifo.r_data.word_select(j, WORD_BITS))
                        ends = j + class_words(op)
                        m.d.sync += [widths[k].word_select(j, width_bits).eq(class_words(op)),
                                     inside[k][j].eq(ends < words_in), at_end[k][j].eq(ends == words_in),
                                     leaves[k].word_select(j, left_bits).eq(words_in - ends),
                                     next_at[k].word_select(j, idx_bits).eq(ends),
                                     units[k].word_select(j, unit_bits).eq(class_unit(op)),
                                     bad[k][j].eq(op >= len(Opcode))]
            m.d.sync += [tail.eq(~tail), unloaded.eq(unloaded - words_in), more.eq(unloaded != words_in)]
        # ---- the head beat's words into the instruction register
        widx = Signal(range(per_beat))  # the head's next word
        avail = Signal(range(per_beat + 1))  # the head's words of the program from widx on (0: an empty ring)
        ir = Signal(MAX_WIDTH)
        got = Signal(range(most + 1))
        need = Signal(range(most + 1))  # the instruction's words
        missing = Signal(range(most + 1))  # those not yet taken (while the instruction is not whole)
        full = Signal()
        m.d.comb += [self.out_valid.eq(full),
                     self.out_bits.eq(Cat(*[Mux(j < need, ir.word_select(j, WORD_BITS), 0) for j in range(most)])),
                     self.finished.eq(~more & (count == 0) & ~full)]
        with m.If(self.begin):
            m.d.sync += [full.eq(0), got.eq(0), widx.eq(0), avail.eq(0), self.bad_opcode.eq(0)]
        with m.If(self.out_valid & self.out_ready):
            m.d.sync += [full.eq(0), got.eq(0)]
        at = Mux(full, 0, got)  # where this cycle's words go in the instruction register
        at_zero = Signal()  # the cycle's words start an instruction
        m.d.comb += at_zero.eq(full | (got == 0))
        here = Cat(widx, head) if per_beat > 1 else head
        first_width = select(m, "first_width", here, [x.word_select(j, width_bits) for x in widths
                                                        for j in range(per_beat)])
        wanted = Signal(range(most + 1))  # the instruction's words still to take
        m.d.comb += wanted.eq(Mux(at_zero, first_width, missing))
        taking = Signal()
        m.d.comb += taking.eq((count != 0) & (~full | self.out_ready) & ~self.begin)
        # the instruction whole this cycle, the head beat used up: for an instruction's first words, worked out as
        # its beat entered the ring; for the rest, compared
        first_inside = select(m, "first_inside", here, [x[j] for x in inside for j in range(per_beat)])
        first_at_end = select(m, "first_at_end", here, [x[j] for x in at_end for j in range(per_beat)])
        fits, used_up = Signal(), Signal()
        m.d.comb += [fits.eq(Mux(at_zero, first_inside | first_at_end, missing <= avail)),
                     used_up.eq(taking & Mux(at_zero, ~first_inside, missing >= avail))]
        filled = fill & more
        with m.If(taking):
            with m.If(used_up):  # the next beat is the head from the next cycle
                next_valid = Mux(count == self.RING, Mux(head, valid[0], valid[1]), Mux(filled, words_in, 0))
                m.d.sync += [head.eq(~head), widx.eq(0), avail.eq(next_valid)]
            with m.Else():
                with m.If(at_zero):  # (the instruction ends inside the beat)
                    starts = [x.word_select(j, idx_bits) for x in next_at for j in range(per_beat)]
                    lefts = [x.word_select(j, left_bits) for x in leaves for j in range(per_beat)]
                    m.d.sync += [widx.eq(select(m, "first_next_at", here, starts)),
                                 avail.eq(select(m, "first_leaves", here, lefts))]
                with m.Else():
                    m.d.sync += [widx.eq(widx + missing), avail.eq(avail - missing)]
            for j in range(most):  # every word the head has for the register from ``at`` on (past ``need``: masked)
                src = Cat((widx + j - at)[:wsel], head) if per_beat > 1 else head
                word = select(m, f"ir_word{j}", src,
                              [x.word_select(i, WORD_BITS) for x in beat for i in range(per_beat)])
                with m.If((j >= at) & (j - at < avail)):
                    m.d.sync += ir.word_select(j, WORD_BITS).eq(word)
            with m.If(at_zero):
                m.d.sync += [need.eq(first_width),
                             self.out_unit.eq(select(m, "first_unit", here, [x.word_select(j, unit_bits) for x in units
                                                                             for j in range(per_beat)]))]
                with m.If(select(m, "first_bad", here, [x[j] for x in bad for j in range(per_beat)])):
                    m.d.sync += self.bad_opcode.eq(1)
            m.d.sync += [got.eq(at + avail), missing.eq(wanted - avail), full.eq(fits)]
        with m.Elif((count == 0) & filled):
            m.d.sync += avail.eq(words_in)
        # the ring's count and what left the FIFO's (each worked out for a used-up head and not, then picked)
        kept, moved = Signal.like(count), Signal.like(count)
        m.d.comb += [kept.eq(count + filled), moved.eq(count + filled - 1)]
        with m.If(~self.begin):
            m.d.sync += [count.eq(Mux(used_up, moved, kept)),
                         freed.eq((fill & ~more) | Mux(used_up, (count == self.RING) | (filled & (count == 1)),
                                                       filled & (count == 0)))]
        return m


@dataclass
class CoreRegs:
    """One core's side of the register file: its run's arguments and the kernel's start, in; its finish (a pulse)
    and its counters (registers the core drives), out: what the core's Control sees of the registers."""

    values: dict[str, Value]  # program_addr, program_bytes, channel_base0..
    started: Value
    done_pulse: Value
    counters: dict[str, Value]


@dataclass
class ArgumentWrite:
    """A word written to a core's arguments this cycle: which (:func:`flightc.hw.regs.argument_word`) and its
    value."""

    valid: Signal
    word: Signal
    data: Signal


class AxiLiteRegs(Elaboratable):
    """The register file of :mod:`flightc.hw.regs` behind an AXI4-Lite slave: every core's window and the kernel's
    ap_ctrl_hs. A run starts every core at once and is done when each has finished (:meth:`core`)."""

    def __init__(self, cfg: HardwareConfig, lite):
        self.cfg, self.lite = cfg, lite
        self.regmap = R.register_map(cfg)
        self.values = {r.name: Signal(r.bits, name=f"reg_{r.name}") for r in self.regmap}
        self.ap_start = Signal()
        self.ap_done = Signal()
        self.ap_idle = Signal(init=1)
        self.ap_ready = Signal()
        self.interrupt = Signal()
        self.started = Signal()  # to the cores: begin a run
        self.finished = [Signal(name=f"finished{c}") for c in range(cfg.num_cores)]  # from each core, a pulse
        self.counters = [{n: Signal(64, name=f"cnt_{R.core_register(n, c)}") for n in R.COUNTERS}
                         for c in range(cfg.num_cores)]
        # each core's argument writes as they happen (each core of several keeps its own copy: hw/kernel.py)
        words = max(R.argument_words(cfg)) + 1
        self.arg_writes = [ArgumentWrite(Signal(name=f"arg_valid{c}"), Signal(range(words), name=f"arg_word{c}"),
                                         Signal(LITE_DATA_BITS, name=f"arg_data{c}")) for c in range(cfg.num_cores)]

    def core(self, c: int) -> CoreRegs:
        """Core ``c``'s window under the one-core names."""
        return CoreRegs({n: self.values[R.core_register(n, c)] for n in R.window_arguments(self.cfg)}, self.started,
                        self.finished[c], self.counters[c])

    def elaborate(self, platform):
        m = Module()
        s = self.lite
        gie = Signal()
        ier = Signal(2)
        isr = Signal(2)
        v = self.values
        for c in range(self.cfg.num_cores):
            m.d.comb += [v[R.core_register("isa_version", c)].eq(R.isa_version_word()),
                         v[R.core_register("config_hash", c)].eq(R.config_hash_word(self.cfg)),
                         v[R.core_register("core_id", c)].eq(c)]
            for n, cnt in self.counters[c].items():
                m.d.comb += v[R.core_register(n, c)].eq(cnt)
        words = {}  # word offset -> (signal slice, writable)
        for r in self.regmap:
            for k in range(r.bits // 32):
                words[r.offset + 4 * k] = (v[r.name][32 * k:32 * (k + 1)], r.access is R.RegAccess.RW)
        # ---- writes
        m.d.comb += [arg.data.eq(s.wdata) for arg in self.arg_writes]
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
                            c, inner = divmod(off, R.CORE_WINDOW)
                            arg = self.arg_writes[c]
                            m.d.comb += [arg.valid.eq(1), arg.word.eq(R.argument_word(inner))]
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
        # done once every core has finished (one that finishes early is remembered until the others have)
        early = Signal(self.cfg.num_cores)
        over = Cat(*self.finished) | early
        done = over.all()
        with m.If(self.started | done):
            m.d.sync += early.eq(0)
        with m.Else():
            m.d.sync += early.eq(over)
        with m.If(done & ~self.ap_idle):
            m.d.sync += [self.ap_idle.eq(1), self.ap_done.eq(1), isr.eq(isr | ier)]
        m.d.comb += self.interrupt.eq(gie & (isr & ier).any())
        return m


class Control(wiring.Component):
    """Fetch, dispatch, issue with tokens, the SYS unit and the run's cycle counters; ``rd`` is the fetch's
    reader of the AXI master."""

    def __init__(self, cfg: HardwareConfig, units: dict[Unit, object], regs: CoreRegs,
                 ready: dict[Unit, Signal] | None = None):
        """``ready``: units that take their next instruction before the last one is done (LD: once it has asked
        for all of its bursts; ST: once it has sent all of its writes), each with the signal that says it can; up
        to ``LD_IN_FLIGHT`` LDs and ``ST_IN_FLIGHT`` STs are in flight, done in the order they started."""
        self.cfg, self.units, self.regs = cfg, units, regs
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
        target = fetch.out_unit  # (a register: no opcode decoded between the fetcher and the queues)
        for u, q in queues.items():
            m.d.comb += [q.w_data.eq(fetch.out_bits[:unit_width(u)]),
                         q.w_en.eq(fetch.out_valid & (target == int(u)) & ~fetch.bad_opcode)]
        # the instruction leaves as its queue has room (a LUT6 tree over the queues' rooms, the fetcher's next
        # cycle hanging on it), or at once with a bad opcode
        room = select(m, "dispatch_room", target, [queues[Unit(k)].w_rdy if k in set(Unit) else 0
                                                   for k in range(1 << len(target))])
        m.d.comb += fetch.out_ready.eq(room | fetch.bad_opcode)
        with m.If(fetch.out_valid & fetch.bad_opcode):
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


class ControlAlone(wiring.Component):
    """A core's control on its own (its AXI4-Lite registers, fetch, dispatch, tokens), each unit's handshake and the
    fetch's reader as ports: what the timing estimate synthesizes of it (``python bench/synth_unit.py
    flightc.hw.control:ControlAlone``; LD and ST take their next instruction on ``ld_ready`` and ``st_ready``)."""

    def __init__(self, cfg: HardwareConfig):
        self.cfg = cfg
        members = {"lite": In(axi4_lite_signature()), "rd": Out(read_client_signature(8 * cfg.axi_data_bytes)),
                   "ld_ready": In(1), "st_ready": In(1)}
        members.update({f"unit_{u.name.lower()}": Out(unit_signature(u).flip()) for u in Unit if u is not Unit.SYS})
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        m.submodules.regs = regs = AxiLiteRegs(self.cfg, self.lite)
        ports = {}
        for u in Unit:
            if u is not Unit.SYS:
                ports[u] = p = unit_port(u)
                pins = getattr(self, f"unit_{u.name.lower()}")
                m.d.comb += [pins.start.eq(p.start), pins.instr.eq(p.instr), p.done.eq(pins.done)]
        m.submodules.control = ctl = Control(self.cfg, ports, regs.core(0), ready={Unit.LD: self.ld_ready,
                                                                           Unit.ST: self.st_ready})
        wiring.connect(m, wiring.flipped(self.rd), ctl.rd)
        m.d.comb += ctl.barrier_go.eq(ctl.barrier_req)
        return m
