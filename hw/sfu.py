"""The special-function unit: the exact fixed-point algorithms of flightc.numerics, one element at a time.

RMSNorm and LayerNorm make one or two statistics passes per row, take the integer square root
and divide each element with rounding; softmax finds the row maximum, sums LUT-based powers of
two, takes one reciprocal per row and scales; RoPE, EMUL, DEQ and DEQ_ADD are single-pass.
"""
from __future__ import annotations

from amaranth.hdl import Array, Const, Module, Mux, Signal, signed
from amaranth.lib import wiring

from flightc import numerics as nm
from flightc.config import Buffer, HardwareConfig
from flightc.isa.table import BUF_ADDR_BITS, MiscOp, Opcode, Unit
from flightc.hw.arith import Divider, Isqrt
from flightc.hw.buffers import WordEngine
from flightc.hw.unit import ExecutionUnit
from flightc.hw.mpe import round_shift, saturate
from flightc.records import NORM, ROPE

READ_MAX_BYTES = NORM.eps.nbytes  # widest operand the SFU reads at once (a norm's epsilon)


class Sfu(ExecutionUnit):
    UNIT = Unit.SFU

    def __init__(self, cfg: HardwareConfig):
        super().__init__(cfg)

    def elaborate(self, platform):
        m = Module()
        DIV_BITS, SQRT_BITS = self.cfg.sfu_div_bits, self.cfg.sfu_sqrt_bits
        m.submodules.eng = eng = WordEngine(self.cfg.buffer_port_bytes, max_bytes=READ_MAX_BYTES)
        wiring.connect(m, wiring.flipped(self.port), eng.port)
        m.submodules.div = div = Divider(DIV_BITS, self.cfg.sfu_div_step_bits)
        m.submodules.sqrt = sqrt = Isqrt(SQRT_BITS)
        f = self.fields(Opcode.MISC)
        op = f.op
        r = Signal(len(f.rows) + 1)
        c = Signal(len(f.cols) + 1)
        pass_ = Signal(2)
        i_head = Signal(len(f.cols))  # c modulo the head size (RoPE)
        head = f.imm[:len(f.cols)].as_unsigned()  # RoPE's head size (at most cols)
        src_row = Signal(BUF_ADDR_BITS)
        dst_row = Signal(BUF_ADDR_BITS)
        m.d.comb += [src_row.eq(f.src_addr + r * f.src_stride), dst_row.eq(f.dst_addr + r * f.dst_stride)]
        is_norm = (op == int(MiscOp.RMSNORM)) | (op == int(MiscOp.LAYERNORM))
        wide_src = is_norm | (op == int(MiscOp.SOFTMAX))
        x = Signal(signed(33))  # operand A: the element
        b = Signal(signed(33))  # operand B: partner / second factor / gain / residual
        cc = Signal(signed(33))  # operand C: cos / LayerNorm bias
        s = Signal(signed(17))  # operand D: sin
        eps = Signal(signed(8 * NORM.eps.nbytes))
        acc = Signal(signed(DIV_BITS))  # per-row statistic
        mean = Signal(signed(40))
        den = Signal(DIV_BITS)  # rms << shift
        mx = Signal(signed(33))
        total = Signal(40)
        recip = Signal(41)
        quot_neg = Signal()
        y = Signal(32)
        # ---- SOFTMAX visibility and exponent
        last = Signal(signed(40))
        m.d.comb += last.eq(r + f.offset)
        visible = Signal()
        m.d.comb += visible.eq((c.as_signed() <= last) & ((f.window == 0) | (c.as_signed() > last - f.window)))
        u = Signal(signed(72))
        m.d.comb += u.eq(((x - mx) * f.imm) >> f.shift)
        u_c = Signal(signed(72))
        m.d.comb += u_c.eq(Mux(u < -(32 << nm.EXP_FRAC_BITS), -(32 << nm.EXP_FRAC_BITS), u))
        ipart = Signal(signed(72 - nm.EXP_FRAC_BITS))
        m.d.comb += ipart.eq(u_c >> nm.EXP_FRAC_BITS)
        lut = Array([Const(int(v), 18) for v in nm.exp2_lut()])
        lidx = u_c[nm.EXP_FRAC_BITS - nm.EXP_LUT_INDEX_BITS:nm.EXP_FRAC_BITS]
        e = Signal(18)
        m.d.comb += e.eq(lut[lidx] >> (-ipart)[:7])
        # ---- ROPE works on pairs (x[i], x[i + d/2]) of each head, so it may run in place
        half = head >> 1
        y2 = Signal(8)
        second = Signal()  # writing the pair's second result
        # ---- divider front end: round_div(a, den) = floor((2a + den) / (2 den))
        num_s = Signal(signed(DIV_BITS + 2))

        def start_round_div(m, a, d):
            n2 = (a << 1) + d
            m.d.comb += num_s.eq(n2)
            m.d.comb += [div.start.eq(1), div.denominator.eq(d << 1),
                         div.numerator.eq(Mux(num_s < 0, -num_s + (d << 1) - 1, num_s))]
            m.d.sync += quot_neg.eq(num_s < 0)

        def start_floor_div(m, n, d):
            m.d.comb += [div.start.eq(1), div.numerator.eq(n), div.denominator.eq(d)]
            m.d.sync += quot_neg.eq(0)

        quotient = Signal(signed(DIV_BITS + 1))
        m.d.comb += quotient.eq(Mux(quot_neg, -div.quotient, div.quotient))

        rd = eng.read

        def arrived(m, state: str, then, *capture) -> None:
            """The state that waits for a read the state before issued: it latches the operand and moves on
            (``then``: the next state, or {state: condition} tried in order, None for the rest)."""
            with m.State(state):
                with m.If(eng.done):
                    m.d.sync += list(capture)
                    if isinstance(then, str):
                        m.next = then
                    else:
                        for i, (nxt, cond) in enumerate(then.items()):
                            with (m.If(cond) if i == 0 else m.Elif(cond) if cond is not None else m.Else()):
                                m.next = nxt

        def sext(v, bits):
            return v[:bits].as_signed()

        a_bytes = Mux(wide_src, 4, 1)
        out_bytes = Mux((op == int(MiscOp.DEQ)) | (op == int(MiscOp.DEQ_ADD)), 4, 1)
        gain_addr = f.prm_addr + NORM.gain_offset(c)
        beta_addr = f.prm_addr + NORM.bias_offset(f.cols, c)
        tab_row = f.prm_addr + r * ROPE.row_bytes(head)
        j = i_head
        partner = c + half
        with m.FSM():
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
                                 mx.eq(-(1 << 32))]
                    m.next = "A"
            with m.State("A"):
                with m.If(c == f.cols):
                    m.next = "PASS_END"
                with m.Else():
                    rd(m, f.src_buf, src_row + Mux(wide_src, c << 2, c), a_bytes)
                    m.next = "A_WAIT"
            arrived(m, "A_WAIT", "B", x.eq(Mux(wide_src, sext(eng.rdata, 32), sext(eng.rdata, 8))))
            with m.State("B"):
                with m.Switch(op):
                    with m.Case(int(MiscOp.ROPE)):
                        rd(m, f.src_buf, src_row + partner, 1)
                        m.next = "B_WAIT"
                    with m.Case(int(MiscOp.EMUL)):
                        rd(m, f.src_buf, f.src2_addr + r * f.src_stride + c, 1)
                        m.next = "B_WAIT"
                    with m.Case(int(MiscOp.DEQ_ADD)):
                        rd(m, f.dst_buf, dst_row + (c << 2), 4)
                        m.next = "B_WAIT"
                    with m.Case(int(MiscOp.RMSNORM), int(MiscOp.LAYERNORM)):  # the gain, in the output pass
                        with m.If(pass_ == Mux(op == int(MiscOp.LAYERNORM), 2, 1)):
                            rd(m, int(Buffer.PRM), gain_addr, NORM.element_bytes)
                            m.next = "B_WAIT"
                        with m.Else():
                            m.next = "OP"
                    with m.Default():
                        m.next = "OP"
            arrived(m, "B_WAIT", "C", b.eq(Mux((op == int(MiscOp.ROPE)) | (op == int(MiscOp.EMUL)),
                                                sext(eng.rdata, 8), sext(eng.rdata, 32))))
            with m.State("C"):
                with m.If(op == int(MiscOp.ROPE)):
                    rd(m, int(Buffer.PRM), tab_row + ROPE.cos_offset(j), ROPE.entry_bytes)
                    m.next = "C_WAIT"
                with m.Elif(op == int(MiscOp.LAYERNORM)):
                    rd(m, int(Buffer.PRM), beta_addr, NORM.element_bytes)
                    m.next = "C_WAIT"
                with m.Else():
                    m.next = "OP"
            arrived(m, "C_WAIT", {"D": op == int(MiscOp.ROPE), "OP": None},
                    cc.eq(Mux(op == int(MiscOp.ROPE), sext(eng.rdata, 8 * ROPE.entry_bytes),
                              sext(eng.rdata, 8 * NORM.element_bytes))))
            with m.State("D"):
                rd(m, int(Buffer.PRM), tab_row + ROPE.sin_offset(head, j), ROPE.entry_bytes)
                m.next = "D_WAIT"
            arrived(m, "D_WAIT", "OP", s.eq(sext(eng.rdata, 8 * ROPE.entry_bytes)))
            with m.State("OP"):
                m.next = "W"
                with m.Switch(op):
                    with m.Case(int(MiscOp.RMSNORM)):
                        with m.If(pass_ == 0):
                            m.d.sync += acc.eq(acc + x * x)
                            m.next = "NEXT"
                        with m.Else():
                            start_round_div(m, x * b, den)
                            m.next = "DIV_WAIT"
                    with m.Case(int(MiscOp.LAYERNORM)):
                        with m.If(pass_ == 0):
                            m.d.sync += acc.eq(acc + x)
                            m.next = "NEXT"
                        with m.Elif(pass_ == 1):
                            m.d.sync += acc.eq(acc + (x - mean) * (x - mean))
                            m.next = "NEXT"
                        with m.Else():
                            start_round_div(m, (x - mean) * b, den)
                            m.next = "DIV_WAIT"
                    with m.Case(int(MiscOp.SOFTMAX)):
                        with m.If(pass_ == 0):
                            with m.If(visible & (x > mx)):
                                m.d.sync += mx.eq(x)
                            m.next = "NEXT"
                        with m.Elif(pass_ == 1):
                            with m.If(visible):
                                m.d.sync += total.eq(total + e)
                            m.next = "NEXT"
                        with m.Else():
                            p = ((e * recip + (1 << 31)) >> 32)
                            m.d.sync += y.eq(Mux(visible, Mux(p > 255, 255, p), 0))
                    with m.Case(int(MiscOp.ROPE)):
                        m.d.sync += [y.eq(saturate(round_shift(x * cc - b * s, nm.ROPE_FRAC_BITS, 40), 8)),
                                     y2.eq(saturate(round_shift(b * cc + x * s, nm.ROPE_FRAC_BITS, 40), 8)),
                                     second.eq(0)]
                    with m.Case(int(MiscOp.EMUL)):
                        m.d.sync += y.eq(saturate(round_shift(x * b * f.imm, f.shift, 72), 8))
                    with m.Case(int(MiscOp.DEQ)):
                        m.d.sync += y.eq(saturate(round_shift(x * f.imm, f.shift, 72), 32))
                    with m.Case(int(MiscOp.DEQ_ADD)):
                        deq = saturate(round_shift(x * f.imm, f.shift, 72), 32)
                        m.d.sync += y.eq(saturate(b + deq, 32))
            with m.State("DIV_WAIT"):
                with m.If(div.done):
                    with m.If(op == int(MiscOp.LAYERNORM)):
                        m.d.sync += y.eq(saturate(quotient + cc, 8))
                    with m.Else():
                        m.d.sync += y.eq(saturate(quotient, 8))
                    m.next = "W"
            with m.State("W"):
                eng.write_bytes(m, f.dst_buf, dst_row + Mux(out_bytes == 4, c << 2, Mux(second, c + half, c)),
                                out_bytes, Mux(second, y2, y))
                m.next = "W_WAIT"
            with m.State("W_WAIT"):
                with m.If(eng.done):
                    with m.If((op == int(MiscOp.ROPE)) & ~second):
                        m.d.sync += second.eq(1)
                        m.next = "W"
                    with m.Else():
                        m.d.sync += second.eq(0)
                        m.next = "NEXT"
            with m.State("NEXT"):
                with m.If(op == int(MiscOp.ROPE)):
                    with m.If(i_head + 1 == half):
                        m.d.sync += [c.eq(c + half + 1), i_head.eq(0)]
                    with m.Else():
                        m.d.sync += [c.eq(c + 1), i_head.eq(i_head + 1)]
                with m.Else():
                    m.d.sync += c.eq(c + 1)
                m.next = "A"
            # ---- between passes: the row's statistics
            with m.State("PASS_END"):
                m.d.sync += [c.eq(0), i_head.eq(0)]
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
                            m.next = "A"
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
                    m.next = "A"
            with m.State("STAT_DIV"):  # mean square (or variance) -> isqrt
                with m.If(div.done):
                    m.d.comb += [sqrt.start.eq(1),
                                 sqrt.value.eq((div.quotient << (2 * nm.RMS_FRAC_BITS)) + eps)]
                    m.next = "SQRT"
            with m.State("SQRT"):
                with m.If(sqrt.done):
                    rms = Mux(sqrt.root == 0, 1, sqrt.root)
                    m.d.sync += [den.eq(rms << f.shift), pass_.eq(pass_ + 1)]
                    m.next = "A"
            with m.State("RECIP_DIV"):
                with m.If(div.done):
                    m.d.sync += [recip.eq(div.quotient), pass_.eq(2)]
                    m.next = "A"
            with m.State("ROW_END"):
                m.d.sync += r.eq(r + 1)
                m.next = "ROW"
        return m
