"""The special-function unit: the exact fixed-point algorithms of flightc.numerics, ``sfu_lanes`` elements at a time.

A row is walked in chunks of up to ``sfu_lanes`` elements (RoPE: of a head's first half): each
operand of a chunk is one word-engine read (whole buffer words), every lane computes its element
in the same cycle, and the chunk's results go back as one write, through a word port of their own.
Every pass but RoPE's is a pipeline: an operand reader asks for a chunk's operands back to back on
an eager read engine, one chunk ahead of the lanes, while the chunk before is written, so a pass
costs about the words it reads (flightc.sim.perf.timing._element_pass). RMSNorm and LayerNorm make one
or two statistics passes per row (the lanes' terms summed by an adder tree), take the integer
square root and one reciprocal of the divisor per row, and scale each element by it
(flightc.numerics.norm_apply: a multiply, a shift and a second multiply a lane); softmax finds the
row maximum (or, with max_given, reads it past the row: MV.out_max leaves it there), sums LUT-based powers of
two, takes one reciprocal per row and scales; RoPE, EMUL,
DEQ, DEQ_ADD and REQ are single-pass. The unit's one divider serves the row statistics.
"""
from __future__ import annotations

from amaranth.hdl import Array, Cat, Const, Module, Mux, Signal, signed
from amaranth.lib import wiring
from amaranth.lib.wiring import Out

from flightc import numerics as nm
from flightc.config import Buffer, HardwareConfig
from flightc.isa.footprint import MISC_DST_BYTES, MISC_SRC_BYTES
from flightc.isa.table import BUF_ADDR_BITS, MiscOp, Opcode, Unit
from flightc.hw.address import RowAddress
from flightc.hw.arith import Divider, Isqrt, tree
from flightc.hw.buffers import WordEngine, word_port_signature
from flightc.hw.unit import ExecutionUnit
from flightc.hw.mpe import round_shift, saturate
from flightc.records import NORM, ROPE

# the widest element a lane reads or writes: INT32 sources, DEQ's outputs, norm gains and biases
ELEMENT_MAX_BYTES = max(*MISC_SRC_BYTES.values(), *MISC_DST_BYTES.values(), NORM.element_bytes, ROPE.entry_bytes)


def read_max_bytes(lanes: int) -> int:
    """The most bytes one SFU read moves: a chunk of the widest elements, or a norm's epsilon."""
    return max(NORM.eps.nbytes, lanes * ELEMENT_MAX_BYTES)


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
        m.submodules.wr = wr = WordEngine(self.cfg.buffer_port_bytes, max_bytes=read_max_bytes(G))
        wiring.connect(m, wiring.flipped(self.wport), wr.port)
        m.submodules.prm = eng2 = WordEngine(self.cfg.buffer_port_bytes, max_bytes=read_max_bytes(G), eager=True,
                                             contiguous=True)
        wiring.connect(m, wiring.flipped(self.pport), eng2.port)
        m.submodules.div = div = Divider(DIV_BITS, self.cfg.sfu_div_step_bits)
        m.submodules.sqrt = sqrt = Isqrt(SQRT_BITS)
        f = self.fields(Opcode.MISC)
        op = f.op
        r = Signal(len(f.rows) + 1)
        c = Signal(len(f.cols) + 1)
        pass_ = Signal(2)
        i_head = Signal(len(f.cols))  # c modulo the head size (RoPE)
        head = f.imm[:len(f.cols)].as_unsigned()  # RoPE's head size (at most cols)
        half = head >> 1
        # each row's first address of the operands, the results and the RoPE table: running sums
        rows = {}
        for name, base, stride in (("src", f.src_addr, f.src_stride), ("dst", f.dst_addr, f.dst_stride),
                                   ("tab", f.prm_addr, ROPE.row_bytes(head))):
            m.submodules[f"{name}_rows"] = rows[name] = g_ = RowAddress(BUF_ADDR_BITS)
            m.d.comb += [g_.restart.eq(self.start), g_.base.eq(base), g_.stride.eq(stride)]
        src_row, dst_row, tab_row = rows["src"].addr, rows["dst"].addr, rows["tab"].addr
        src2_row = f.src2_addr + rows["src"].offset  # EMUL's second operand: rows as far apart as the first's
        is_norm = (op == int(MiscOp.RMSNORM)) | (op == int(MiscOp.LAYERNORM))
        is_rope = op == int(MiscOp.ROPE)
        wide_src = is_norm | (op == int(MiscOp.SOFTMAX)) | (op == int(MiscOp.REQ))
        # the chunk: g elements from column c (RoPE: from i_head of a head's first half)
        g = Signal(range(G + 1))
        left = Mux(is_rope, half - i_head, f.cols - c)
        m.d.comb += g.eq(Mux(left < G, left, G))
        lane_on = [Const(k, range(G + 1)) < g for k in range(G)]

        def lanes(name: str, shape):
            return [Signal(shape, name=f"{name}{k}") for k in range(G)]

        x = lanes("x", signed(33))  # operand A: the elements
        b = lanes("b", signed(33))  # operand B: partner / second factor / gain / residual
        cc = lanes("cc", signed(33))  # operand C: cos / LayerNorm bias
        s = lanes("s", signed(17))  # operand D: sin
        y = lanes("y", 32)
        y2 = lanes("y2", 8)
        eps = Signal(signed(8 * NORM.eps.nbytes))
        acc = Signal(signed(DIV_BITS))  # per-row statistic
        mean = Signal(signed(40))
        den = Signal(nm.NORM_DEN_BITS)  # rms << shift
        den_e = Signal(range(nm.NORM_DEN_BITS))  # its bit length - 1
        den_m = Signal(nm.NORM_RECIP_BITS + 1)  # floor(2^64 / den normalized to [2^32, 2^33))
        G_ = nm.NORM_GUARD_BITS
        q = lanes("q", signed(G_ + 11))  # x * gain scaled to G_ fraction bits of den's leading one
        mx = Signal(signed(33))
        total = Signal(40)
        recip = Signal(41)
        quot_neg = Signal()
        second = Signal()  # writing RoPE's second results (the pairs' upper halves)
        # ---- the row's divider: round_div(a, d) = floor((2a + d) / (2 d))
        num_s = Signal(signed(DIV_BITS + 2))

        def start_round_div(m, a, d):
            m.d.comb += num_s.eq((a << 1) + d)
            m.d.comb += [div.start.eq(1), div.denominator.eq(d << 1),
                         div.numerator.eq(Mux(num_s < 0, -num_s + (d << 1) - 1, num_s))]
            m.d.sync += quot_neg.eq(num_s < 0)

        def start_floor_div(m, n, d):
            m.d.comb += [div.start.eq(1), div.numerator.eq(n), div.denominator.eq(d)]
            m.d.sync += quot_neg.eq(0)

        quotient = Mux(quot_neg, -div.quotient, div.quotient).as_signed()

        # ---- norms: an element's product with its gain, clamped and scaled by the row's (e, m) (numerics.norm_apply)
        lim = Signal(nm.NORM_DEN_BITS + 10)
        m.d.comb += lim.eq(Const(1, nm.NORM_DEN_BITS + 10) << (den_e + 9))
        right, left = Signal.like(den_e), Signal.like(den_e)  # p's scaling to G_ fraction bits of den's leading one
        m.d.comb += [right.eq(Mux(den_e > G_, den_e - G_, 0)), left.eq(Mux(den_e < G_, G_ - den_e, 0))]

        def norm_scaled(p):
            p_c = Mux(p > lim, lim, Mux(p < -lim, -lim, p))
            return ((p_c >> right) << left)[:G_ + 11].as_signed()

        rd = eng.read

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

        out4 = (op == int(MiscOp.DEQ)) | (op == int(MiscOp.DEQ_ADD))
        j = i_head
        partner = c + half
        ge, te = NORM.element_bytes, ROPE.entry_bytes
        out_pass = ((op == int(MiscOp.RMSNORM)) & (pass_ == 1)) | ((op == int(MiscOp.LAYERNORM)) & (pass_ == 2))
        stat_pass = (((op == int(MiscOp.RMSNORM)) & (pass_ == 0)) | ((op == int(MiscOp.LAYERNORM)) & (pass_ < 2))
                     | ((op == int(MiscOp.SOFTMAX)) & (pass_ < 2)))
        # ---- each lane's datapath, shared by the ops (each op had its own multipliers and shifters: 5K LUT a
        # lane). d is the element a norm centres (x - mean for LayerNorm: |mean| < 2^31, the rounded mean of INT32
        # elements); p = d * d in the statistics passes, d * gain in the output pass. a * imm, rounded and shifted
        # right by the one shifter (floored for softmax), is every requantization: EMUL's INT8 product, softmax's
        # x - max, DEQ's, REQ's and DEQ_ADD's element. Operands narrower than their registers are taken at the width
        # the op reads them (INT8 elements, INT16 RoPE entries), exactly.
        is_ln, is_sm, is_emul = op == int(MiscOp.LAYERNORM), op == int(MiscOp.SOFTMAX), op == int(MiscOp.EMUL)
        mean33 = mean[:33].as_signed()
        last = Signal(signed(40))
        m.d.comb += last.eq(r + f.offset)
        lut = [Const(int(v), 18) for v in nm.exp2_lut()]
        rounding = (Const(1, 73) << f.shift) >> 1  # round_shift's half
        p, t, visible, e = lanes("p", signed(68)), lanes("t", signed(72)), [], []
        for k in range(G):
            d = Signal(signed(34), name=f"d{k}")
            a = Signal(signed(34), name=f"a{k}")
            m.d.comb += [d.eq(Mux(is_ln, x[k] - mean33, x[k])), p[k].eq(d * Mux(out_pass, b[k], d)),
                         a.eq(Mux(is_emul, x[k][:8].as_signed() * b[k][:8].as_signed(), Mux(is_sm, x[k] - mx, x[k]))),
                         t[k].eq((a * f.imm + Mux(is_sm, 0, rounding)) >> f.shift)]
            col = (c + k).as_signed()
            vis = Signal(name=f"visible{k}")
            m.d.comb += vis.eq(lane_on[k] & (col <= last) & ((f.window == 0) | (col > last - f.window)))
            u_c = Signal(signed(72), name=f"u_c{k}")  # softmax's exponent: (x - max) * imm >> shift, clamped
            m.d.comb += u_c.eq(Mux(t[k] < -(32 << nm.EXP_FRAC_BITS), -(32 << nm.EXP_FRAC_BITS), t[k]))
            ipart = u_c >> nm.EXP_FRAC_BITS
            lidx = u_c[nm.EXP_FRAC_BITS - nm.EXP_LUT_INDEX_BITS:nm.EXP_FRAC_BITS]
            e_k = Signal(18, name=f"e{k}")
            m.d.comb += e_k.eq(Array(lut)[lidx] >> (-ipart)[:7])
            visible.append(vis)
            e.append(e_k)
        # the statistics passes' terms: LayerNorm's elements, then the squares (RMSNorm's at once)
        stat_terms = [Mux(lane_on[k], Mux(is_ln & (pass_ == 0), x[k], p[k]), 0) for k in range(G)]
        # ---- the operand reader (every op but RoPE): a chunk's operands read back to back on an eager read engine
        # each (A, then EMUL's second factor or DEQ_ADD's residual, on ``port``; a norm's gains, then LayerNorm's
        # biases, on ``pport`` from PRM), each read starting as the last word of the one before on its engine
        # arrives; a chunk's first reads start together on both engines once both are free. It runs one chunk ahead
        # of the lanes, starting the next chunk's reads only while the lanes wait for this chunk's, so an operand
        # arrives after the lanes took the one it replaces
        n1 = Mux((op == int(MiscOp.EMUL)) | (op == int(MiscOp.DEQ_ADD)), 2, 1)  # operands on port
        n2 = Mux(out_pass, Mux(op == int(MiscOp.LAYERNORM), 2, 1), 0)  # operands on pport
        n_ops = n1 + n2
        rc = Signal.like(c)  # the column of the chunk whose operands the reader asks for
        sent1, sent2 = Signal(2), Signal(2)  # the chunk's reads asked for on each engine
        rc_left = f.cols - rc
        g_r = Mux(rc_left < G, rc_left, G)
        tag, tag_done = Signal(2), Signal(2)  # the operand of each engine's read in flight, and of its done
        tag2, tag2_done = Signal(2), Signal(2)
        have = Signal(3)  # operands of the lanes' chunk that arrived
        in_pass = Signal()
        waiting = Signal()  # in OP: the lanes wait for the chunk at c
        opened = (sent1 != 0) | (sent2 != 0)
        first = Signal()
        go1, go2 = Signal(), Signal()
        m.d.comb += [first.eq(in_pass & ~opened & (rc < f.cols) & eng.ready & eng2.ready
                              & ((rc == c) | (waiting & (rc == c + g)))),
                     go1.eq(first | (in_pass & opened & (sent1 < n1) & eng.ready)),
                     go2.eq((first & (n2 != 0)) | (in_pass & opened & (sent2 < n2) & eng2.ready))]
        with m.If(go1):
            with m.Switch(sent1):
                with m.Case(0):
                    rd(m, f.src_buf, src_row + Mux(wide_src, rc << 2, rc), Mux(wide_src, g_r << 2, g_r))
                with m.Default():
                    with m.If(op == int(MiscOp.EMUL)):
                        rd(m, f.src_buf, src2_row + rc, g_r)
                    with m.Else():  # DEQ_ADD's residual
                        rd(m, f.dst_buf, dst_row + (rc << 2), g_r << 2)
            m.d.sync += tag.eq(sent1)
        with m.If(go2):
            with m.If(sent2 == 0):
                eng2.read(m, int(Buffer.PRM), f.prm_addr + NORM.gain_offset(rc), g_r * ge)
            with m.Else():
                eng2.read(m, int(Buffer.PRM), f.prm_addr + NORM.bias_offset(f.cols, rc), g_r * ge)
            m.d.sync += tag2.eq(sent2 + 1)
        next1, next2 = sent1 + go1, sent2 + go2
        with m.If(go1 | go2):
            with m.If((next1 == n1) & (next2 == n2)):
                m.d.sync += [sent1.eq(0), sent2.eq(0), rc.eq(rc + g_r)]
            with m.Else():
                m.d.sync += [sent1.eq(next1), sent2.eq(next2)]
        with m.If(eng.last):
            m.d.sync += tag_done.eq(tag)
        with m.If(eng2.last):
            m.d.sync += tag2_done.eq(tag2)
        byte_b = is_rope | (op == int(MiscOp.EMUL))
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
        all_in = have == (Const(1, 4) << n_ops) - 1
        last_chunk = c + g == f.cols
        with m.FSM() as fsm:
            self.idle(m, "EPS", r.eq(0))
            with m.State("EPS"):  # norms: the INT64 epsilon heads the parameters
                with m.If(is_norm):
                    rd(m, int(Buffer.PRM), f.prm_addr + NORM.eps.offset, NORM.eps.nbytes)
                    m.next = "EPS_WAIT"
                with m.Else():
                    m.next = "ROW"
            arrived(m, "EPS_WAIT", "ROW", eps.eq(eng.rdata[:8 * NORM.eps.nbytes]))
            with m.State("ROW"):
                with m.If(r == f.rows):
                    m.d.comb += self.done.eq(1)
                    m.next = "IDLE"
                with m.Else():
                    m.d.sync += [c.eq(0), i_head.eq(0), pass_.eq(0), acc.eq(0), total.eq(0),
                                 mx.eq(-(1 << 32)), rc.eq(0), sent1.eq(0), sent2.eq(0), have.eq(0)]
                    with m.If(is_rope):
                        m.next = "A"
                    with m.Elif((op == int(MiscOp.SOFTMAX)) & f.max_given):
                        m.next = "MAX"
                    with m.Else():
                        m.next = "OP"
            # ---- SOFTMAX.max_given: the row's maximum is the INT32 past it; the sums' pass comes first
            with m.State("MAX"):
                rd(m, f.src_buf, src_row + (f.cols << 2), 4)
                m.next = "MAX_WAIT"
            arrived(m, "MAX_WAIT", "OP", mx.eq(element(0, 4)), pass_.eq(1))
            # ---- every op but RoPE: the lanes take a chunk as its operands are in (OP), the norms' output pass
            # scales it (SCALE), and the results go out on the write engine (W), which the next chunk's reads overlap
            with m.State("OP"):
                with m.If(f.cols == 0):  # a row of nothing: no chunk to wait for
                    m.next = "PASS_END"
                with m.Elif(all_in):  # (an eager read of the next chunk may arrive in this very cycle)
                    m.d.sync += have.eq(arrived_now)
                    with m.If(stat_pass):
                        m.d.sync += c.eq(c + g)
                        with m.If(last_chunk):
                            m.next = "PASS_END"
                    with m.Elif(is_norm):
                        m.next = "SCALE"
                    with m.Else():
                        m.next = "W"
                    with m.If(stat_pass & ~is_sm):
                        m.d.sync += acc.eq(acc + tree(stat_terms))
                    with m.If(out_pass):
                        m.d.sync += [q[k].eq(norm_scaled(p[k])) for k in range(G)]
                    with m.Switch(op):
                        with m.Case(int(MiscOp.SOFTMAX)):
                            with m.If(pass_ == 0):
                                cands = [Mux(visible[k], x[k], mx) for k in range(G)]
                                m.d.sync += mx.eq(tree([mx] + cands, lambda p, q: Mux(q > p, q, p)))
                            with m.Elif(pass_ == 1):
                                m.d.sync += total.eq(total + tree([Mux(visible[k], e[k], 0) for k in range(G)]))
                            with m.Else():
                                for k in range(G):
                                    prob = ((e[k] * recip + (1 << 31)) >> 32)
                                    m.d.sync += y[k].eq(Mux(visible[k], Mux(prob > 255, 255, prob), 0))
                        with m.Case(int(MiscOp.EMUL), int(MiscOp.REQ)):
                            m.d.sync += [y[k].eq(saturate(t[k], 8)) for k in range(G)]
                        with m.Case(int(MiscOp.DEQ)):
                            m.d.sync += [y[k].eq(saturate(t[k], 32)) for k in range(G)]
                        with m.Case(int(MiscOp.DEQ_ADD)):
                            m.d.sync += [y[k].eq(saturate(b[k] + saturate(t[k], 32), 32)) for k in range(G)]
            with m.State("SCALE"):  # the norms' output pass: the scaled products times the row's reciprocal
                shift = G_ + nm.NORM_RECIP_BITS
                for k in range(G):
                    m.d.sync += y[k].eq(saturate(round_shift(q[k] * den_m, shift, G_ + 11 + nm.NORM_RECIP_BITS + 2)
                                                 + Mux(op == int(MiscOp.LAYERNORM), cc[k], 0), 8))
                m.next = "W"
            with m.State("W"):
                with m.If(~wr.busy):
                    wr.write_bytes(m, f.dst_buf, dst_row + Mux(out4, c << 2, c), Mux(out4, g << 2, g),
                                   Mux(out4, Cat(*[v[:32] for v in y]), Cat(*[v[:8] for v in y])))
                    m.d.sync += c.eq(c + g)
                    with m.If(last_chunk):
                        m.next = "PASS_END"
                    with m.Else():
                        m.next = "OP"
            # ---- RoPE: per chunk of a head's first half, the elements, their partners, cos and sin, then two writes
            with m.State("A"):
                with m.If((c == f.cols) | (g == 0)):  # g == 0: a head without pairs
                    m.next = "PASS_END"
                with m.Else():
                    rd(m, f.src_buf, src_row + c, g)
                    m.next = "A_WAIT"
            arrived(m, "A_WAIT", "B", *capture_a)
            with m.State("B"):
                rd(m, f.src_buf, src_row + partner, g)
                m.next = "B_WAIT"
            arrived(m, "B_WAIT", "C", *capture_b)
            with m.State("C"):
                rd(m, int(Buffer.PRM), tab_row + ROPE.cos_offset(j), g * te)
                m.next = "C_WAIT"
            arrived(m, "C_WAIT", "D", *capture_c)
            with m.State("D"):
                rd(m, int(Buffer.PRM), tab_row + ROPE.sin_offset(head, j), g * te)
                m.next = "D_WAIT"
            arrived(m, "D_WAIT", "ROPE_OP", *[s[k].eq(element(k, te)) for k in range(G)])
            with m.State("ROPE_OP"):
                for k in range(G):  # INT8 elements, INT16 cos and sin
                    x8, b8 = x[k][:8].as_signed(), b[k][:8].as_signed()
                    c16, s16 = cc[k][:16].as_signed(), s[k][:16].as_signed()
                    m.d.sync += [y[k].eq(saturate(round_shift(x8 * c16 - b8 * s16, nm.ROPE_FRAC_BITS, 40), 8)),
                                 y2[k].eq(saturate(round_shift(b8 * c16 + x8 * s16, nm.ROPE_FRAC_BITS, 40), 8))]
                m.d.sync += second.eq(0)
                m.next = "ROPE_W"
            with m.State("ROPE_W"):
                wr.write_bytes(m, f.dst_buf, dst_row + Mux(second, partner, c), g,
                               Mux(second, Cat(*[v[:8] for v in y2]), Cat(*[v[:8] for v in y])))
                m.next = "ROPE_W_WAIT"
            with m.State("ROPE_W_WAIT"):
                with m.If(wr.done):
                    with m.If(~second):
                        m.d.sync += second.eq(1)
                        m.next = "ROPE_W"
                    with m.Else():
                        with m.If(i_head + g == half):
                            m.d.sync += [c.eq(c + g + half), i_head.eq(0)]
                        with m.Else():
                            m.d.sync += [c.eq(c + g), i_head.eq(i_head + g)]
                        m.next = "A"
            # ---- between passes: the row's statistics
            with m.State("PASS_END"):  # once the pass's last results are written
                with m.If(~wr.busy):
                    m.d.sync += [c.eq(0), i_head.eq(0), rc.eq(0), sent1.eq(0), sent2.eq(0)]
                    with m.Switch(op):
                        with m.Case(int(MiscOp.RMSNORM)):
                            with m.If(pass_ == 0):
                                start_floor_div(m, acc, f.cols)
                                m.next = "STAT_DIV"
                            with m.Else():
                                m.next = "ROW_END"
                        with m.Case(int(MiscOp.LAYERNORM)):
                            with m.If(pass_ == 0):
                                start_round_div(m, acc, f.cols)
                                m.next = "MEAN_DIV"
                            with m.Elif(pass_ == 1):
                                start_floor_div(m, acc, f.cols)
                                m.next = "STAT_DIV"
                            with m.Else():
                                m.next = "ROW_END"
                        with m.Case(int(MiscOp.SOFTMAX)):
                            with m.If(pass_ == 0):
                                m.d.sync += pass_.eq(1)
                                m.next = "OP"
                            with m.Elif(pass_ == 1):
                                start_floor_div(m, Const(1 << nm.SOFTMAX_RECIP_BITS, 41), total)
                                m.next = "RECIP_DIV"
                            with m.Else():
                                m.next = "ROW_END"
                        with m.Default():
                            m.next = "ROW_END"
            with m.State("MEAN_DIV"):
                with m.If(div.done):
                    m.d.sync += [mean.eq(quotient), acc.eq(0), pass_.eq(1)]
                    m.next = "OP"
            with m.State("STAT_DIV"):  # mean square (or variance) -> isqrt
                with m.If(div.done):
                    m.d.comb += [sqrt.start.eq(1),
                                 sqrt.value.eq((div.quotient << (2 * nm.RMS_FRAC_BITS)) + eps)]
                    m.next = "SQRT"
            with m.State("SQRT"):
                with m.If(sqrt.done):
                    rms = Mux(sqrt.root == 0, 1, sqrt.root)
                    m.d.sync += den.eq(rms << f.shift)
                    m.next = "NORM_RECIP"
            with m.State("NORM_RECIP"):  # the divisor's leading one, and the reciprocal of its normalized form
                e_now = Signal.like(den_e)
                for i in range(nm.NORM_DEN_BITS):
                    with m.If(den[i]):
                        m.d.comb += e_now.eq(i)
                R = nm.NORM_RECIP_BITS
                d = Mux(e_now > R, den >> (e_now - R)[:len(e_now)], den << (R - e_now)[:len(e_now)])[:R + 1]
                start_floor_div(m, Const(1 << (2 * R), 2 * R + 1), d)
                m.d.sync += den_e.eq(e_now)
                m.next = "NORM_RECIP_DIV"
            with m.State("NORM_RECIP_DIV"):
                with m.If(div.done):
                    m.d.sync += [den_m.eq(div.quotient), pass_.eq(pass_ + 1)]
                    m.next = "OP"
            with m.State("RECIP_DIV"):
                with m.If(div.done):
                    m.d.sync += [recip.eq(div.quotient), pass_.eq(2)]
                    m.next = "OP"
            with m.State("ROW_END"):
                m.d.sync += r.eq(r + 1)
                m.d.comb += [g_.step.eq(1) for g_ in rows.values()]
                m.next = "ROW"
        m.d.comb += [in_pass.eq(fsm.ongoing("OP") | fsm.ongoing("SCALE") | fsm.ongoing("W")),
                     waiting.eq(fsm.ongoing("OP"))]
        return m
