"""The special-function unit: the exact fixed-point algorithms of flightc.numerics, ``sfu_lanes`` elements at a time.

A row is walked in chunks of up to ``sfu_lanes`` elements (RoPE: of a head's first half): each
operand of a chunk is one word-engine read (whole buffer words), the lanes take a chunk's operands in
one cycle into their pipeline (hw/sfu_lanes.py, a register a step for 225 MHz), and the chunk's results
go back as one write, through a word port of their own, from a queue at the pipeline's end.
Every pass but RoPE's streams: an operand reader asks for a chunk's operands back to back on
an eager read engine, one chunk ahead of the lanes, while the chunks before are in the pipeline or written,
so a pass costs about the words it reads and writes (flightc.sim.perf.timing._element_pass). RMSNorm and
LayerNorm make one or two statistics passes per row (the lanes' terms summed by pipelined adder trees), take the
integer square root and one reciprocal of the divisor per row, and scale each element by it
(flightc.numerics.norm_apply: a multiply, a shift and a second multiply a lane); softmax finds the
row maximum (or, with max_given, reads it past the row: MV.out_max leaves it there), sums LUT-based powers of
two, takes one reciprocal per row and scales (a blocked softmax's part, ISA 1.11, reads the row's statistics there
instead and runs one of those passes: MAX and SUM queue the statistic they made as a result); RoPE, EMUL,
DEQ, DEQ_ADD and REQ are single-pass. The unit's one divider serves the row statistics.
"""
from __future__ import annotations

import enum

from amaranth.hdl import Cat, Const, Module, Mux, Signal, Value, signed
from amaranth.lib import wiring
from amaranth.lib.fifo import SyncFIFO
from amaranth.lib.wiring import Out

from flightc import numerics as nm
from flightc.config import Buffer, HardwareConfig
from flightc.isa.footprint import MISC_DST_BYTES, MISC_SRC_BYTES
from flightc.isa.table import BUF_ADDR_BITS, MiscOp, Opcode, SoftmaxPart, Unit
from flightc.hw.address import RowAddress
from flightc.hw.arith import Divider, Isqrt, leading_zeros
from flightc.hw.buffers import WordEngine, word_port_signature, words_touched
from flightc.hw.decode import fields
from flightc.hw.latency_rules import (SFU_READ_AHEAD, SFU_RESULT_QUEUE, SFU_ROPE_LATENCY, SFU_STAT_QUEUE,
                                      division_bits, recip_wait_cycles)
from flightc.hw.lut6 import lut, mux4, shift
from flightc.hw.sfu_lanes import MAX_NONE, LaneControl, lane_pipeline, result_stage, rope_pipeline
from flightc.hw.unit import ExecutionUnit, one_hot
from flightc.records import NORM, ROPE, SOFTMAX_STATS

# the widest element a lane reads or writes: INT32 sources, DEQ's outputs, norm gains and biases
ELEMENT_MAX_BYTES = max(*MISC_SRC_BYTES.values(), *MISC_DST_BYTES.values(), NORM.element_bytes, ROPE.entry_bytes)


def read_max_bytes(lanes: int) -> int:
    """The most bytes one SFU read moves: a chunk of the widest elements, or a norm's epsilon."""
    return max(NORM.eps.nbytes, lanes * ELEMENT_MAX_BYTES)


class Division(enum.IntEnum):
    """What the SFU's divider works out for a row: each names the state that waits for it (``{name}_DIV``)."""

    MEAN = 0  # LayerNorm's rounded mean
    STAT = 1  # the mean square or the variance, then the square root
    NORM_RECIP = 2  # the reciprocal of a norm's normalized divisor
    RECIP = 3  # softmax's reciprocal of the row sum


class Sfu(ExecutionUnit):
    UNIT = Unit.SFU

    def __init__(self, cfg: HardwareConfig):
        # ``port`` reads the operands; ``pport`` a norm's gains and biases (PRM) beside them; ``wport`` writes the
        # results, so a chunk's results go out as the next one's operands come in
        super().__init__(cfg, wport=Out(word_port_signature(cfg.buffer_port_bytes)),
                         pport=Out(word_port_signature(cfg.buffer_port_bytes)))

    def elaborate(self, platform):
        m = Module()
        G = self.cfg.sfu_lanes
        DIV_BITS, SQRT_BITS = self.cfg.sfu_div_bits, self.cfg.sfu_sqrt_bits
        m.submodules.eng = eng = WordEngine(self.cfg.buffer_port_bytes, max_bytes=read_max_bytes(G), eager=True,
                                            contiguous=True)
        wiring.connect(m, wiring.flipped(self.port), eng.port)
        m.submodules.wr = wr = WordEngine(self.cfg.buffer_port_bytes, max_bytes=read_max_bytes(G), contiguous=True,
                                          counted=True, nonempty=True)  # (a chunk's, or RoPE's, elements: never none)
        wiring.connect(m, wiring.flipped(self.wport), wr.port)
        m.submodules.prm = eng2 = WordEngine(self.cfg.buffer_port_bytes, max_bytes=read_max_bytes(G), eager=True,
                                             contiguous=True)
        wiring.connect(m, wiring.flipped(self.pport), eng2.port)
        m.submodules.div = div = Divider(DIV_BITS, self.cfg.sfu_div_step_bits)
        m.submodules.sqrt = sqrt = Isqrt(SQRT_BITS)
        f = self.fields(Opcode.MISC)
        # the op, one flag each, taken with the instruction (the decoded op reaches every lane's multiplexers)
        is_op = {o: Signal(name=f"is_{o.name.lower()}") for o in MiscOp}
        incoming = fields(self.instr, Opcode.MISC)  # the instruction as it arrives (IDLE)
        incoming_op = incoming.op
        stage_sel = Signal(2)  # the op's result stage (sfu_lanes.RESULT_STAGES), taken with the instruction
        incoming_stage = Const(0, 2)
        for o in MiscOp:
            incoming_stage = Mux(incoming_op == int(o), result_stage(o), incoming_stage)
        r = Signal(len(f.rows) + 1)
        no_cols = Signal()  # the instruction's rows are empty
        rows_done = Signal()  # r == rows, worked out as r moves (a comparison of the instruction's rows takes levels)
        rows_less = Signal.like(r)  # rows - 1
        opens_op = Signal()  # a row starts in OP (not RoPE's, nor a softmax reading its given maximum first)
        # a part of a blocked softmax (ISA 1.11), taken with the instruction: which, whether the first, whether a row
        # reads its statistics first (all but a first MAX) and whether it writes one of them at its end (MAX, SUM)
        part_max, part_sum, part_first, part_norm = Signal(), Signal(), Signal(), Signal()
        stats_in = Signal()
        # the statistic a MAX or SUM part writes at the row's end (at the row's dst, as its first result would be):
        # its value (as the pass ends), queued for the write engine as a result is
        st_data = Signal(32)
        stat_part = Signal()  # a MAX or SUM part
        st_push = Signal()  # the statistic is queued this cycle (a register: the cycle after the pass ends)
        if SFU_STAT_QUEUE != 1:
            raise AssertionError("the SFU's statistic queueing and hw/latency_rules.py disagree")
        m.d.sync += st_push.eq(0)
        c = Signal(len(f.cols) + 1)
        pass_ = Signal(2)
        # RoPE's chunk's elements and its angles' cosines (from the head's angle 0), addresses kept beside c (so that
        # no adder waits on the FSM's state: yosys shares the adders of exclusive states, a multiplexer ahead of one)
        x_at, t_at = Signal(BUF_ADDR_BITS), Signal(BUF_ADDR_BITS)
        head_next = Signal.like(c)  # the next head's first column, worked out in ROPE_OP
        at_end = Signal()  # c == cols (RoPE), worked out as c moves
        head = f.imm[:len(f.cols)].as_unsigned()  # RoPE's head size (at most cols)
        half = head >> 1
        # each row's first address of the operands, the results and the RoPE table: running sums
        rows = {}
        for name, base, stride in (("src", f.src_addr, f.src_stride), ("dst", f.dst_addr, f.dst_stride),
                                   ("tab", f.prm_addr, ROPE.row_bytes(head))):
            m.submodules[f"{name}_rows"] = rows[name] = g_ = RowAddress(BUF_ADDR_BITS)
            m.d.comb += [g_.restart.eq(self.start), g_.base.eq(base), g_.stride.eq(stride)]
        m.submodules.stats_rows = rows["stats"] = g_ = RowAddress(BUF_ADDR_BITS)  # a blocked softmax's statistics
        m.d.comb += [g_.restart.eq(self.start), g_.base.eq(f.stats_addr), g_.stride.eq(SOFTMAX_STATS.size)]
        src_row, dst_row, tab_row, stats_row = rows["src"].addr, rows["dst"].addr, rows["tab"].addr, rows["stats"].addr
        src2_row = f.src2_addr + rows["src"].offset  # EMUL's second operand: rows as far apart as the first's
        is_norm = is_op[MiscOp.RMSNORM] | is_op[MiscOp.LAYERNORM]
        is_rope = is_op[MiscOp.ROPE]
        wide_src = is_norm | is_op[MiscOp.SOFTMAX] | is_op[MiscOp.REQ]
        # the chunk: g elements from column c (RoPE: of a head's first half), kept in registers as c
        # moves, with the elements left from c to the pass's end (RoPE: to the half's)
        g = Signal(range(G + 1))
        g_left = Signal(len(f.cols) + 1)
        last_chunk = Signal()  # g_left == g: the pass's (or RoPE's half's) last chunk

        def chunk_from(left) -> list:
            """The chunk at the column ``left`` elements before the end."""
            return [g_left.eq(left), g.eq(Mux(left < G, left, G)), last_chunk.eq(left <= G)]

        lane_on = [Const(k, range(G + 1)) < g for k in range(G)]

        def lanes(name: str, shape):
            return [Signal(shape, name=f"{name}{k}") for k in range(G)]

        x = lanes("x", signed(33))  # operand A: the elements
        b = lanes("b", signed(33))  # operand B: partner / second factor / gain / residual
        cc = lanes("cc", signed(33))  # operand C: cos / LayerNorm bias
        s = lanes("s", signed(17))  # operand D: sin
        eps = Signal(signed(8 * NORM.eps.nbytes))
        acc = Signal(signed(DIV_BITS))  # per-row statistic
        mean = Signal(signed(40))
        den = Signal(nm.NORM_DEN_BITS)  # rms << shift
        den_e = Signal(range(nm.NORM_DEN_BITS))  # its bit length - 1
        den_m = Signal(nm.NORM_RECIP_BITS + 1)  # floor(2^64 / den normalized to [2^32, 2^33))
        mx = Signal(signed(33))
        total = Signal(40)
        # softmax's reciprocal of the row sum: the divider's quotient, which stays until the next row's division;
        # the last pass starts as the division does, its first chunk taken once the quotient will be in when the
        # lanes' probabilities read it (SFU_EXP stages after the take): RECIP_WAIT cycles on
        recip = Signal(41)
        recip_steps = division_bits(nm.SOFTMAX_RECIP_BITS + 1, self.cfg.sfu_div_step_bits, DIV_BITS) // \
            self.cfg.sfu_div_step_bits
        RECIP_WAIT = recip_wait_cycles(recip_steps)
        recip_wait = Signal(range(RECIP_WAIT + 1))
        recip_next = Signal()  # recip_wait == 0 from the next cycle on (taken into the result queue's room, below)
        m.d.comb += recip.eq(div.quotient)
        stat_sum = Signal(SOFTMAX_STATS.field("sum").nbytes * 8)  # a part's row sum read (a first SUM's: 0)
        m.d.comb += recip_next.eq(recip_wait <= 1)
        with m.If(recip_wait != 0):
            m.d.sync += recip_wait.eq(recip_wait - 1)
        quot_neg = Signal()
        second = Signal()  # writing RoPE's second results (the pairs' upper halves)
        # ---- the row's divider: floor(a / d), or round_div(a, d) = floor((2a + d) / (2 d)) for LayerNorm's mean
        div_a, div_d = Signal(signed(DIV_BITS)), Signal(DIV_BITS)  # a division's operands
        div_num, div_den = Signal(DIV_BITS + 2), Signal(DIV_BITS + 1)
        div_round, div_kind = Signal(), Signal(Division)
        rms = Signal(nm.NORM_DEN_BITS)
        den_lz = Signal(range(nm.NORM_DEN_BITS + 1))  # the zeros above den's leading one
        den_zeros = leading_zeros(m, "den_zeros", den, registered_groups=True)  # a cycle after den
        den_aligned = shift(m, "den_aligned", den, den_lz[:len(den_e)], len(den))

        div_bits = Signal.like(div.bits)
        div_go, div_n = Signal(), Signal(DIV_BITS + 2)  # the divider starts from registers (DIV_GO sets them)
        m.d.sync += div_go.eq(0)
        m.d.comb += [div.start.eq(div_go), div.numerator.eq(div_n), div.denominator.eq(div_den), div.bits.eq(div_bits)]
        # a division's end as the state that waits for it sees it: never in the cycle it starts (an empty softmax
        # row's division runs on without a state waiting for it, and may end as the next division starts)
        div_finished = div.done & ~div_go

        def division(m, kind: Division, a, d, value_bits: int = DIV_BITS):
            """Divide ``a`` (below 2^value_bits: a constant, walked from its top bit) by ``d`` (rounded for the
            mean), then go to the state that waits for it."""
            bits = division_bits(value_bits, self.cfg.sfu_div_step_bits, DIV_BITS)
            if isinstance(a, int):
                a = Const(a << (DIV_BITS - bits), DIV_BITS)
            elif bits != DIV_BITS:
                raise AssertionError("only a constant numerator is walked from below the divider's top bit")
            m.d.sync += [div_a.eq(a), div_d.eq(d), div_round.eq(kind == Division.MEAN), div_kind.eq(kind),
                         div_bits.eq(bits)]
            m.next = "DIV_SETUP"

        quotient = Mux(quot_neg, -div.quotient, div.quotient).as_signed()

        # the FSM's own reads (the norms' epsilon, a given maximum, RoPE's operands) start on the read engine from a
        # registered command, the cycle after the state that asks (SFU_FSM_READ)
        fsm_go = Signal()
        fsm_buf, fsm_addr, fsm_count = Signal.like(eng.buf), Signal.like(eng.addr), Signal.like(eng.count)
        m.d.sync += fsm_go.eq(0)

        def rd(m, buf, addr, count) -> None:
            m.d.sync += [fsm_go.eq(1), fsm_buf.eq(buf), fsm_addr.eq(addr), fsm_count.eq(count)]

        def arrived(m, state: str, then, *capture) -> None:
            """The state that waits for a read the state before issued (RoPE, the norms' epsilon): it latches the
            operand and moves on (``then``: the next state, or {state: condition} tried in order, None for the
            rest)."""
            with m.State(state):
                with m.If(eng.done):
                    m.d.sync += list(capture)
                    if isinstance(then, str):
                        m.next = then
                    else:
                        for i, (nxt, cond) in enumerate(then.items()):
                            with (m.If(cond) if i == 0 else m.Elif(cond) if cond is not None else m.Else()):
                                m.next = nxt

        def element(k: int, nbytes: int, engine=eng):
            """Lane k's element of ``nbytes`` bytes in what the engine read, sign-extended."""
            return engine.rdata[8 * nbytes * k:8 * nbytes * (k + 1)].as_signed()

        out4 = is_op[MiscOp.DEQ] | is_op[MiscOp.DEQ_ADD]
        partner = c + half
        ge, te = NORM.element_bytes, ROPE.entry_bytes
        is_ln, is_sm, is_emul = is_op[MiscOp.LAYERNORM], is_op[MiscOp.SOFTMAX], is_op[MiscOp.EMUL]
        # what the pass is for, registered with it (set_pass), so that no decision decodes the pass first: a norm's
        # output pass, a statistics pass, LayerNorm's first, the operands on pport (n2) and those a chunk needs
        out_pass, stat_pass, ln_first = Signal(), Signal(), Signal()
        # what the end of the pass leads to, one flag each (exactly one set), so that PASS_END decides from registers:
        # the row's end (no statistics pass, or a part's statistic queued), LayerNorm's mean's division, a whole
        # softmax's sums' pass, its reciprocal's division, a MAX or SUM part's statistic queued (none of them: a
        # norm's statistic's division)
        end_row, end_mean, end_sums, end_recip, end_push = (Signal(name=f"end_{x}") for x in (
            "row", "mean", "sums", "recip", "push"))
        n1 = Mux(is_op[MiscOp.EMUL] | is_op[MiscOp.DEQ_ADD], 2, 1)  # operands on port
        n2, need = Signal(2), Signal(4)

        def set_pass(value) -> list:
            value = Value.cast(value)
            out = (is_op[MiscOp.RMSNORM] & (value == 1)) | (is_ln & (value == 2))
            stat = ((is_op[MiscOp.RMSNORM] & (value == 0)) | (is_ln & (value < 2)) | (is_sm & (value < 2)))
            on_pport = Mux(out, Mux(is_ln, 2, 1), 0)
            return [pass_.eq(value), out_pass.eq(out), stat_pass.eq(stat), ln_first.eq(is_ln & (value == 0)),
                    end_row.eq(~stat), end_mean.eq(is_ln & (value == 0)), end_sums.eq(is_sm & (value == 0) & ~part_max),
                    end_recip.eq(is_sm & (value == 1) & ~part_sum),
                    end_push.eq(is_sm & (((value == 0) & part_max) | ((value == 1) & part_sum))),
                    n2.eq(on_pport),
                    need.eq((Const(1, 4) << (n1 + on_pport)) - 1)]
        last = Signal(signed(40))
        m.d.comb += last.eq(r + f.offset)
        visible = []
        for k in range(G):
            col = (c + k).as_signed()
            vis = Signal(name=f"visible{k}")
            m.d.comb += vis.eq(lane_on[k] & (col <= last) & ((f.window == 0) | (col > last - f.window)))
            visible.append(vis)
        # ---- the operand reader (every op but RoPE): a chunk's operands read back to back on an eager read engine
        # each (A, then EMUL's second factor or DEQ_ADD's residual, on ``port``; a norm's gains, then LayerNorm's
        # biases, on ``pport`` from PRM), each read starting as the last word of the one before on its engine
        # arrives; a chunk's first reads start together on both engines once both are free. It runs up to
        # SFU_READ_AHEAD chunks ahead of the lanes, starting a later chunk's reads only while the lanes wait for theirs
        # with room for the results of every chunk up to it (so they take each as it is in), so an operand arrives
        # after the lanes took the one it replaces
        take = Signal()  # the lanes take the chunk at c
        sent1, sent2 = Signal(2), Signal(2)  # the chunk's reads asked for on each engine
        tag, tag_done = Signal(2), Signal(2)  # the operand of each engine's read in flight, and of its done
        tag2, tag2_done = Signal(2), Signal(2)
        have = Signal(3)  # operands of the lanes' chunk that arrived
        in_pass = Signal()  # in OP (a register of its own: the FSM's state takes levels to decode)
        # the lanes take the next n chunks as they are in (bit n - 1), n up to SFU_READ_AHEAD: room in the result
        # queue for their results and softmax's reciprocal on its way (recip_next), registers: each of the count's
        # outcomes worked out beside the cycle's take and write, which select one (a statistics pass queues nothing)
        room_for = Signal(SFU_READ_AHEAD, init=(1 << SFU_READ_AHEAD) - 1)
        room = room_for[0]
        waiting = Signal()  # in OP: the lanes wait for the chunk at c
        opened = (sent1 != 0) | (sent2 != 0)
        # the reader's chunk (the one whose operands it asks for) kept in registers as it moves, so that a read
        # starts from registers alone: the elements left, the chunk's elements, whether there is one, each
        # operand's address, and how many chunks the reader is ahead of the lanes (0: at theirs, n: at the n-th
        # after it, its reads not yet all asked for)
        rd_left, g_r = Signal(len(f.cols) + 1), Signal(range(G + 1))
        count_a, count_b = Signal.like(eng.count), Signal.like(eng.count)  # the bytes of each operand on ``port``

        def counts(g_new) -> list:
            """The reader's chunk of ``g_new`` elements: its operands' bytes (EMUL's factor, DEQ_ADD's residual)."""
            return [g_r.eq(g_new), count_a.eq(Mux(wide_src, g_new << 2, g_new)),
                    count_b.eq(Mux(is_op[MiscOp.EMUL], g_new, g_new << 2))]
        more = Signal()
        a_at, b_at, gain_at, bias_at = (Signal(BUF_ADDR_BITS, name=n) for n in ("a_at", "b_at", "gain_at", "bias_at"))
        ahead = Signal(range(SFU_READ_AHEAD + 2))

        def restart_reader():
            """The reader at a pass's first chunk (once the lanes' pipeline has drained)."""
            return [sent1.eq(0), sent2.eq(0), rd_left.eq(f.cols), *counts(Mux(f.cols < G, f.cols, G)),
                    more.eq(f.cols != 0), a_at.eq(src_row), b_at.eq(Mux(is_op[MiscOp.EMUL], src2_row, dst_row)),
                    gain_at.eq(f.prm_addr + NORM.gain_offset(0)), bias_at.eq(f.prm_addr + NORM.bias_offset(f.cols, 0)),
                    ahead.eq(0)]

        first = Signal()
        go1, go2 = Signal(), Signal()
        # the reader at the lanes' chunk, or n chunks ahead (n >= 1) with room for n chunks' results: a LUT6
        def room_ahead(*bits: bool) -> bool:
            n = sum(bit << i for i, bit in enumerate(bits[:len(ahead)]))
            return n == 0 or (n <= SFU_READ_AHEAD and bits[len(ahead) + n - 1])

        reader_room = lut(m, "reader_room", [*ahead, *room_for], room_ahead)
        m.d.comb += [first.eq(in_pass & ~opened & more & eng.ready & eng2.ready
                              & reader_room),
                     go1.eq(first | (in_pass & opened & (sent1 < n1) & eng.ready)),
                     go2.eq((first & (n2 != 0)) | (in_pass & opened & (sent2 < n2) & eng2.ready))]
        # each engine's next read is set up whether or not it starts (so that its words are worked out beside the
        # decision, not after it); the FSM's own reads (the norms' epsilon, a given maximum, RoPE) override it
        m.d.comb += [eng.start.eq(go1 | fsm_go), eng.write.eq(0), eng.stride.eq(1),
                     eng.buf.eq(Mux(fsm_go, fsm_buf, Mux((sent1 == 0) | is_op[MiscOp.EMUL], f.src_buf, f.dst_buf))),
                     eng.addr.eq(Mux(fsm_go, fsm_addr, Mux(sent1 == 0, a_at, b_at))),
                     eng.count.eq(Mux(fsm_go, fsm_count,
                                      Mux(sent1 == 0, count_a, count_b))),
                     eng2.start.eq(go2), eng2.write.eq(0), eng2.stride.eq(1), eng2.buf.eq(int(Buffer.PRM)),
                     eng2.addr.eq(Mux(sent2 == 0, gain_at, bias_at)), eng2.count.eq(g_r * ge)]
        with m.If(go1):
            m.d.sync += tag.eq(sent1)
        with m.If(go2):
            m.d.sync += tag2.eq(sent2 + 1)
        next1, next2 = sent1 + go1, sent2 + go2
        # the chunk's last reads asked for: each engine's done with the chunk (or done with it by this read), so that
        # the decision is a LUT past the reads' (the counts compared beside them)
        done1 = (sent1 == n1) | (go1 & (sent1 + 1 == n1))
        done2 = (sent2 == n2) | (go2 & (sent2 + 1 == n2))
        advance = (go1 | go2) & done1 & done2
        with m.If(go1 | go2):
            with m.If(advance):
                beyond = rd_left - G
                m.d.sync += [sent1.eq(0), sent2.eq(0), rd_left.eq(rd_left - g_r),
                             *counts(Mux(beyond < G, beyond, G)), more.eq(rd_left > G),
                             a_at.eq(a_at + Mux(wide_src, 4 * G, G)), b_at.eq(b_at + Mux(is_op[MiscOp.EMUL], G, 4 * G)),
                             gain_at.eq(gain_at + G * ge), bias_at.eq(bias_at + G * ge)]
            with m.Else():
                m.d.sync += [sent1.eq(next1), sent2.eq(next2)]
        # (ahead + advance - take, the sums worked out beside the decisions, which select one)
        m.d.sync += ahead.eq(mux4(m, "ahead_next", Cat(advance, take), (ahead, ahead + 1, ahead - 1, ahead)))
        with m.If(eng.last):
            m.d.sync += tag_done.eq(tag)
        with m.If(eng2.last):
            m.d.sync += tag2_done.eq(tag2)
        byte_b = is_rope | is_op[MiscOp.EMUL]
        capture_a = [x[k].eq(Mux(wide_src, element(k, 4), element(k, 1))) for k in range(G)]
        capture_b = [b[k].eq(Mux(byte_b, element(k, 1), element(k, 4))) for k in range(G)]
        capture_c = [cc[k].eq(Mux(is_rope, element(k, te), element(k, ge))) for k in range(G)]
        with m.If(in_pass & eng.done):
            with m.Switch(tag_done):
                with m.Case(0):
                    m.d.sync += capture_a
                with m.Default():
                    m.d.sync += capture_b
        with m.If(in_pass & eng2.done):
            with m.Switch(tag2_done):
                with m.Case(1):
                    m.d.sync += [b[k].eq(element(k, ge, eng2)) for k in range(G)]
                with m.Default():
                    m.d.sync += [cc[k].eq(element(k, ge, eng2)) for k in range(G)]
        arrived_now = Signal(3)  # the operands whose reads are done this cycle
        m.d.comb += arrived_now.eq(Mux(in_pass & eng.done, Const(1, 3) << tag_done, 0)
                                   | Mux(in_pass & eng2.done, Const(1, 3) << tag2_done, 0))
        m.d.sync += have.eq(have | arrived_now)
        all_in = have == need
        # ---- the lanes' pipeline; its results queued for the write engine, a place held for each chunk taken
        ctl = LaneControl(is_ln=is_ln, is_norm=is_norm, is_sm=is_sm, is_emul=is_emul, deq=is_op[MiscOp.DEQ],
                          deq_add=is_op[MiscOp.DEQ_ADD], ln_first=ln_first, stat_pass=stat_pass,
                          out_pass=out_pass, sm_pass=pass_, imm=f.imm, shift=f.shift, mean=mean[:33].as_signed(),
                          recip=recip, den_e=den_e, den_m=den_m, result_stage=stage_sel)
        lanes = lane_pipeline(m, x, b, cc, visible, lane_on, take, c, g, ctl, acc, total, mx)
        # each chunk's write queued whole: its results, address, bytes and the words they touch, worked out as they
        # enter the queue so that the write engine starts from the queue's head alone
        lb = (self.cfg.buffer_port_bytes - 1).bit_length()
        w_addr, w_count, w_words = Signal.like(wr.addr), Signal.like(wr.count), Signal.like(wr.words)
        # (a MAX or SUM part's lanes make no results: the queue takes its statistic, at the row's dst, instead)
        m.d.comb += [w_addr.eq(dst_row + Mux(stat_part, 0, Mux(out4, lanes.col << 2, lanes.col))),
                     w_count.eq(Mux(stat_part, 4, Mux(out4, lanes.count << 2, lanes.count))),
                     w_words.eq(words_touched(w_addr, w_count, self.cfg.buffer_port_bytes))]
        m.submodules.results = results = SyncFIFO(width=32 * G + len(w_addr) + len(w_count) + len(w_words),
                                                  depth=SFU_RESULT_QUEUE)
        packed = Mux(stat_part, st_data, Mux(out4, Cat(*lanes.y), Cat(*[v[:8] for v in lanes.y])))
        m.d.comb += [results.w_en.eq(lanes.valid | st_push), results.w_data.eq(Cat(packed, w_addr, w_count, w_words))]
        queued = Signal(range(SFU_RESULT_QUEUE + 1))  # chunks taken whose results are not yet written
        q_data, at = results.r_data[:32 * G], 32 * G
        q_addr = results.r_data[at:at + len(w_addr)]
        q_count = results.r_data[at + len(w_addr):at + len(w_addr) + len(w_count)]
        q_words = results.r_data[at + len(w_addr) + len(w_count):]
        # the queue's head is the write engine's next command but in RoPE's writes (ROPE_W, below), so that only the
        # start waits on the engine's ``ready`` (a write may start as the one before has its last word granted)
        m.d.comb += [wr.write.eq(1), wr.buf.eq(f.dst_buf), wr.addr.eq(q_addr), wr.stride.eq(1), wr.count.eq(q_count),
                     wr.wdata.eq(q_data), wr.words.eq(q_words)]
        with m.If(results.r_rdy & wr.ready):
            m.d.comb += [wr.start.eq(1), results.r_en.eq(1)]
        enqueued, dequeued = (take & ~stat_pass) | st_push, results.r_en & results.r_rdy
        m.d.sync += queued.eq(queued + enqueued - dequeued)
        for n in range(1, SFU_READ_AHEAD + 1):
            most = SFU_RESULT_QUEUE - n  # room for n chunks: queued <= most after this cycle's take and write
            m.d.sync += room_for[n - 1].eq(recip_next & mux4(m, f"room{n}_sel", Cat(dequeued, enqueued),
                                                             (queued <= most, queued <= most + 1, queued <= most - 1,
                                                              queued <= most)))
        rope_first, rope_second = rope_pipeline(m, x, b, cc, s)
        rope_wait = Signal(range(SFU_ROPE_LATENCY))
        # the two writes' addresses (the pairs' lower and upper halves) and their words, worked out in ROPE_OP: the
        # words from the address a cycle after it
        assert SFU_ROPE_LATENCY >= 2, "RoPE's writes are worked out over two cycles of ROPE_OP"
        rope_at = [Signal.like(wr.addr, name=f"rope_at{k}") for k in range(2)]
        rope_words = [Signal.like(wr.words, name=f"rope_words{k}") for k in range(2)]
        incoming_sm = incoming_op == int(MiscOp.SOFTMAX)
        reads_stats = incoming_sm & (incoming.part != int(SoftmaxPart.WHOLE)) & \
            ((incoming.part != int(SoftmaxPart.MAX)) | ~incoming.first)  # the row's statistics read before its pass
        with m.FSM() as fsm:
            self.idle(m, "EPS", r.eq(0), stage_sel.eq(incoming_stage), no_cols.eq(incoming.cols == 0),
                      opens_op.eq((incoming_op != int(MiscOp.ROPE))
                                  & ~((incoming_op == int(MiscOp.SOFTMAX)) & (incoming.max_given | reads_stats))),
                      part_max.eq(incoming_sm & (incoming.part == int(SoftmaxPart.MAX))),
                      part_sum.eq(incoming_sm & (incoming.part == int(SoftmaxPart.SUM))),
                      part_first.eq(incoming.first), stats_in.eq(reads_stats),
                      stat_part.eq(incoming_sm & ((incoming.part == int(SoftmaxPart.MAX))
                                                  | (incoming.part == int(SoftmaxPart.SUM)))),
                      part_norm.eq(incoming_sm & (incoming.part == int(SoftmaxPart.NORM))),
                      rows_done.eq(incoming.rows == 0), rows_less.eq(incoming.rows - 1),
                      *[flag.eq(incoming_op == int(o)) for o, flag in is_op.items()])
            with m.State("EPS"):  # norms: the INT64 epsilon heads the parameters
                with m.If(is_norm):
                    rd(m, int(Buffer.PRM), f.prm_addr + NORM.eps.offset, NORM.eps.nbytes)
                    m.next = "EPS_WAIT"
                with m.Else():
                    m.next = "ROW"
            arrived(m, "EPS_WAIT", "ROW", eps.eq(eng.rdata[:8 * NORM.eps.nbytes]))
            with m.State("ROW"):  # (the row's registers set whether or not there is one: fewer levels to decide)
                m.d.sync += [c.eq(0), at_end.eq(no_cols), x_at.eq(src_row), t_at.eq(tab_row),
                             *chunk_from(Mux(is_rope, half, f.cols)), *set_pass(0),
                             acc.eq(0), total.eq(0), mx.eq(MAX_NONE), have.eq(0), *restart_reader(),
                             in_pass.eq(~rows_done & opens_op)]
                with m.If(rows_done):
                    m.d.comb += self.done.eq(1)
                    m.next = "IDLE"
                with m.Elif(is_rope):
                    m.next = "A"
                with m.Elif(is_op[MiscOp.SOFTMAX] & (f.max_given | stats_in)):
                    m.next = "MAX"
                with m.Else():
                    m.next = "OP"
            # ---- SOFTMAX.max_given: the row's maximum is the INT32 past it; the sums' pass comes first. A part of a
            # blocked softmax: the row's statistics (its maximum so far and its sum) instead
            with m.State("MAX"):
                rd(m, Mux(stats_in, int(Buffer.ACC), f.src_buf), Mux(stats_in, stats_row, src_row + (f.cols << 2)),
                   Mux(stats_in, SOFTMAX_STATS.size, 4))
                m.next = "MAX_WAIT"
            with m.State("MAX_WAIT"):
                sum_read = eng.rdata[8 * SOFTMAX_STATS.field("sum").offset:][:len(stat_sum)]
                with m.If(eng.done):
                    m.d.sync += [mx.eq(element(SOFTMAX_STATS.field("max").offset // 4, 4)),
                                 stat_sum.eq(Mux(part_sum & part_first, 0, sum_read))]  # (SUM: the sum before)
                    with m.If(part_norm):  # the reciprocal of the row's sum, the probabilities' pass beside it
                        m.next = "STATS_DIV"
                    with m.Else():  # the maximum's pass, or the sums'
                        m.d.sync += [*set_pass(Mux(part_max, 0, 1)), in_pass.eq(1)]
                        m.next = "OP"
            with m.State("STATS_DIV"):
                division(m, Division.RECIP, 1 << nm.SOFTMAX_RECIP_BITS, stat_sum, nm.SOFTMAX_RECIP_BITS + 1)
            # ---- every op but RoPE: the lanes take a chunk as its operands are in and the result queue will have
            # room for it (OP); its results reach the write engine sfu_result_latency cycles later, through the queue
            with m.State("OP"):
                with m.If(no_cols):  # a row of nothing: no chunk to wait for
                    m.d.sync += in_pass.eq(0)
                    m.next = "PASS_END"
                with m.Elif(take):  # (an eager read of the next chunk may arrive in this very cycle)
                    m.d.sync += [have.eq(arrived_now), c.eq(c + g), *chunk_from(g_left - g)]
                    with m.If(last_chunk):
                        m.d.sync += in_pass.eq(0)
                        m.next = "PASS_END"
            # ---- RoPE: per chunk of a head's first half, the elements, their partners, cos and sin, then two writes
            with m.State("A"):
                with m.If(at_end | (g == 0)):  # g == 0: a head without pairs
                    m.next = "PASS_END"
                with m.Else():
                    rd(m, f.src_buf, x_at, g)
                    m.next = "A_WAIT"
            arrived(m, "A_WAIT", "B", *capture_a)
            with m.State("B"):
                rd(m, f.src_buf, x_at + half, g)
                m.next = "B_WAIT"
            arrived(m, "B_WAIT", "C", *capture_b)
            with m.State("C"):
                rd(m, int(Buffer.PRM), t_at, g * te)
                m.next = "C_WAIT"
            arrived(m, "C_WAIT", "D", *capture_c)
            with m.State("D"):
                rd(m, int(Buffer.PRM), t_at + ROPE.sin_offset(head, 0), g * te)
                m.next = "D_WAIT"
            arrived(m, "D_WAIT", "ROPE_OP", *[s[k].eq(element(k, te)) for k in range(G)])
            with m.State("ROPE_OP"):  # the pairs' products and sums: SFU_ROPE_LATENCY cycles
                m.d.sync += [rope_wait.eq(rope_wait + 1), head_next.eq(c + g + half), rope_at[0].eq(dst_row + c),
                             rope_at[1].eq(dst_row + partner),
                             *[rope_words[k].eq((rope_at[k][:lb] + g + (self.cfg.buffer_port_bytes - 1)) >> lb)
                               for k in range(2)]]
                with m.If(rope_wait == SFU_ROPE_LATENCY - 1):
                    m.d.sync += [second.eq(0), rope_wait.eq(0)]
                    m.next = "ROPE_W"
            with m.State("ROPE_W"):
                wr.write_bytes(m, f.dst_buf, Mux(second, rope_at[1], rope_at[0]), g,
                               Mux(second, Cat(*rope_second), Cat(*rope_first)))
                m.d.comb += wr.words.eq(Mux(second, rope_words[1], rope_words[0]))
                m.next = "ROPE_W_WAIT"
            with m.State("ROPE_W_WAIT"):
                with m.If(wr.done):
                    with m.If(~second):
                        m.d.sync += second.eq(1)
                        m.next = "ROPE_W"
                    with m.Else():
                        with m.If(last_chunk):  # the head's half done: the next head's
                            m.d.sync += [c.eq(head_next), at_end.eq(head_next == f.cols), x_at.eq(x_at + g + half),
                                         t_at.eq(tab_row), *chunk_from(half)]
                        with m.Else():
                            m.d.sync += [c.eq(c + g), x_at.eq(x_at + g),
                                         t_at.eq(t_at + g * te), *chunk_from(g_left - g)]
                        m.next = "A"
            # ---- between passes: the row's statistics
            with m.State("PASS_END"):  # once the pass's last results are written and its statistics summed
                m.d.sync += st_data.eq(Mux(part_max, Mux(mx == MAX_NONE, nm.SCORE_NONE, mx)[:32], total[:32] + stat_sum))
                m.d.sync += [c.eq(0), *chunk_from(f.cols), *restart_reader()]  # (nothing reads them here)
                drained = Signal()
                m.d.comb += drained.eq(~wr.busy & ~lanes.busy & (queued == 0) & ~st_push)
                with m.If(drained):
                    with m.If(end_push):  # a MAX or SUM part's pass done: the statistic it made (the maximum or the
                        # sum) queued as a result the next cycle, written through dst_buf (ACC for these parts); the
                        # row ends once it is written
                        m.d.sync += [st_push.eq(1), end_push.eq(0), end_row.eq(1)]
                    with m.Elif(end_row):
                        m.next = "ROW_END"
                    with m.Elif(end_sums):  # (a softmax's passes read the same operands: only the pass moves on)
                        m.d.sync += [pass_.eq(1), end_sums.eq(0), end_recip.eq(1), in_pass.eq(1)]
                        m.next = "OP"
                    with m.Else():  # a norm's statistic, LayerNorm's mean or a softmax's reciprocal: a division
                        recip_bits = division_bits(nm.SOFTMAX_RECIP_BITS + 1, self.cfg.sfu_div_step_bits, DIV_BITS)
                        m.d.sync += [div_a.eq(Mux(end_recip, Const(1 << nm.SOFTMAX_RECIP_BITS << (DIV_BITS - recip_bits),
                                                                   DIV_BITS), acc)),
                                     div_d.eq(Mux(end_recip, total, f.cols)), div_round.eq(end_mean),
                                     div_kind.eq(Mux(end_recip, Division.RECIP,
                                                     Mux(end_mean, Division.MEAN, Division.STAT))),
                                     div_bits.eq(Mux(end_recip, recip_bits, DIV_BITS))]
                        m.next = "DIV_SETUP"
            # ---- a division: its operands registered (DIV_SETUP: round_div's 2a + d and 2d), round_div's numerator
            # made positive (DIV_GO), then the state that waits for it, whose first cycle starts the divider
            with m.State("DIV_SETUP"):
                m.d.sync += [div_num.eq(Mux(div_round, (div_a << 1) + div_d, div_a)),
                             div_den.eq(Mux(div_round, div_d << 1, div_d))]
                m.next = "DIV_GO"
            with m.State("DIV_GO"):
                negative = div_round & div_num[-1]
                m.d.sync += [div_go.eq(1), div_n.eq(Mux(negative, ~div_num + div_den, div_num)), quot_neg.eq(negative)]
                with m.Switch(div_kind):
                    for kind in Division:
                        with m.Case(int(kind)):
                            if kind is Division.RECIP:  # softmax's last pass starts beside the division
                                m.d.sync += [*set_pass(2), in_pass.eq(1), recip_wait.eq(RECIP_WAIT)]
                                m.d.comb += recip_next.eq(RECIP_WAIT == 0)
                                m.next = "OP"
                            else:
                                m.next = f"{kind.name}_DIV"
            with m.State("MEAN_DIV"):
                with m.If(div_finished):
                    m.d.sync += [mean.eq(quotient), acc.eq(0), *set_pass(1), in_pass.eq(1)]
                    m.next = "OP"
            with m.State("STAT_DIV"):  # mean square (or variance) -> isqrt
                with m.If(div_finished):
                    m.d.comb += [sqrt.start.eq(1),
                                 sqrt.value.eq((div.quotient << (2 * nm.RMS_FRAC_BITS)) + eps)]
                    m.next = "SQRT"
            with m.State("SQRT"):
                with m.If(sqrt.done):
                    m.d.sync += rms.eq(Mux(sqrt.root == 0, 1, sqrt.root))
                    m.next = "DEN"
            with m.State("DEN"):
                m.d.sync += den.eq(rms << f.shift)
                m.next = "NORM_RECIP"
            with m.State("NORM_RECIP"):  # the zeros above the divisor's leading one (then its normalized reciprocal)
                m.next = "NORM_LZ"
            with m.State("NORM_LZ"):
                m.d.sync += den_lz.eq(den_zeros)
                m.next = "NORM_SHIFT"
            with m.State("NORM_SHIFT"):  # the divisor's top NORM_RECIP_BITS + 1 bits from its leading one
                R = nm.NORM_RECIP_BITS
                m.d.sync += den_e.eq(nm.NORM_DEN_BITS - 1 - den_lz)
                division(m, Division.NORM_RECIP, 1 << (2 * R), den_aligned[nm.NORM_DEN_BITS - 1 - R:], 2 * R + 1)
            with m.State("NORM_RECIP_DIV"):
                with m.If(div_finished):
                    m.d.sync += [den_m.eq(div.quotient), *set_pass(Mux(is_ln, 2, 1)), in_pass.eq(1)]
                    m.next = "OP"
            with m.State("ROW_END"):
                m.d.sync += [r.eq(r + 1), rows_done.eq(r == rows_less)]
                m.d.comb += [g_.step.eq(1) for g_ in rows.values()]
                m.next = "ROW"
        one_hot(fsm)
        # (no chunk's operands are ever all in for an empty row: it has no reads)
        m.d.comb += [waiting.eq(in_pass & room), take.eq(in_pass & all_in & waiting)]
        return m
