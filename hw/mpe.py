"""The matrix processing engine: ``mpe_chains`` sparse DSP chains, their operand registers and the output stage.

MM and MV share it. For each pair of tokens (``macs_per_dsp``) and each group of ``mpe_chains``
weight rows, the engine walks the stored weights ``chain_length`` at a time: it loads the
activation window those weights can reach, fetches every chain's packed values, positions and
group multipliers, and lets all chains multiply-accumulate in one cycle. The output stage then
adds the row bias, requantizes (flightc.numerics), optionally maps through the activation LUT or
adds into the residual, and writes each result.
"""
from __future__ import annotations

from amaranth.hdl import Array, Const, Module, Mux, Signal, signed

from flightc.config import Buffer, HardwareConfig
from flightc.compress.formats import WeightFormat
from flightc.isa.table import BUF_ADDR_BITS, SPARSITY_NM, WEIGHT_BITS, Opcode, OutMode, Unit, WeightBits
from flightc.hw.bytebus import BytePort, ByteEngine
from flightc.hw.decode import opcode_of
from flightc.hw.dsp_chain import SparseDspChain
from flightc.hw.records import REQUANT_LAYOUT
from flightc.hw.unit import ExecutionUnit
from flightc.records import REQUANT

def round_shift(x, shift, width: int):
    """x / 2^shift rounded half up (flightc.numerics.round_shift), in ``width`` bits."""
    half = (Const(1, width + 1) << shift) >> 1
    return (x + half) >> shift


def saturate(x, bits: int):
    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    return Mux(x > hi, hi, Mux(x < lo, lo, x))


class Mpe(ExecutionUnit):
    UNIT = Unit.MPE

    def __init__(self, cfg: HardwareConfig, port: BytePort):
        super().__init__(cfg)
        self.port = port
        self.span_max = cfg.chain_span_max

    def elaborate(self, platform):
        m = Module()
        cfg = self.cfg
        C, L, T, SPAN = cfg.mpe_chains, cfg.chain_length, cfg.macs_per_dsp, self.span_max
        GSB = max(1, SPAN // 16)
        CHUNK = cfg.mpe_fill_bytes  # bytes per operand-fill command
        m.submodules.eng = eng = ByteEngine(self.port, max_bytes=CHUNK)
        f = self.fields(Opcode.MM)  # MV's fields are MM's first fields, at the same bits
        is_mm = Signal()
        m.d.comb += is_mm.eq(opcode_of(self.ins) == int(Opcode.MM))
        rows_m = Mux(is_mm, f.m, 1)
        a_stride = Mux(is_mm, f.a_stride, 0)
        out_stride = Mux(is_mm, f.out_stride, 0)
        # ---- format
        bits = Signal(4)
        log2n = Signal(3)
        log2m = Signal(3)
        ib = Signal(3)
        with m.Switch(f.w_bits):
            for code, b in WEIGHT_BITS.items():
                with m.Case(int(code)):
                    m.d.comb += bits.eq(b)
        with m.Switch(f.sparsity):
            for sp, (n_keep, block) in SPARSITY_NM.items():
                with m.Case(int(sp)):
                    m.d.comb += [log2n.eq(n_keep.bit_length() - 1), log2m.eq(block.bit_length() - 1),
                                 ib.eq(WeightFormat(8, n_keep, block).index_bits)]
        sparse = Signal()
        m.d.comb += sparse.eq(ib != 0)
        nnz = Signal(len(f.k))  # stored weights per row: at most k
        m.d.comb += nnz.eq(Mux(sparse & ~f.w_kmajor, (f.k >> log2m) << log2n, f.k))
        vbytes = Signal(BUF_ADDR_BITS)
        ibytes = Signal(BUF_ADDR_BITS)
        m.d.comb += [vbytes.eq((nnz * bits + 7) >> 3), ibytes.eq((nnz * ib + 7) >> 3)]
        span = Signal(range(SPAN + 1))
        m.d.comb += span.eq(Const(L, 16) << (log2m - log2n)[:3])
        # ---- loop state
        t0 = Signal(len(f.m) + 1)  # steps past m by macs_per_dsp
        n0 = Signal(len(f.n) + 1)  # steps past n by mpe_chains
        j0 = Signal(len(f.k) + 1)
        k0 = Signal(len(f.k) + 1)
        m.d.comb += k0.eq((j0 << log2m) >> log2n)
        c_i = Signal(range(max(2, C)))
        t_i = Signal(range(T + 1))
        window = Signal(8 * SPAN * T)
        vals = [Signal(8 * L, name=f"vals{c}") for c in range(C)]
        idx = [Signal(4 * L, name=f"idx{c}") for c in range(C)]
        gsb = [Signal(8 * GSB, name=f"gsb{c}") for c in range(C)]
        acc = [[Signal(signed(cfg.acc_bits), name=f"acc{c}_{t}") for t in range(T)] for c in range(C)]
        chains = []
        for c in range(C):
            ch = SparseDspChain(cfg, SPAN)
            m.submodules[f"chain{c}"] = ch
            lanes_left = nnz - j0
            m.d.comb += [ch.vals.eq(vals[c]), ch.idx.eq(idx[c]), ch.gsb.eq(gsb[c]), ch.window.eq(window),
                         ch.a_unsigned.eq(f.a_unsigned), ch.bits_code.eq(Mux(f.w_kmajor, int(WeightBits.B8), f.w_bits)),
                         ch.sparse.eq(sparse & ~f.w_kmajor), ch.m4.eq(log2m == 2), ch.log2n.eq(log2n),
                         ch.group_log2.eq(Mux(f.w_kmajor, 0, f.group_log2)),
                         ch.valid_lanes.eq(Mux(lanes_left > L, L, lanes_left))]
            chains.append(ch)
        # ---- chunked fills of operand registers
        fill_off = Signal(BUF_ADDR_BITS)
        fill_total = Signal(BUF_ADDR_BITS)
        fill_base = Signal(BUF_ADDR_BITS)
        fill_stride = Signal(BUF_ADDR_BITS)
        fill_kind = Signal(2)  # 0 window, 1 values, 2 positions, 3 group multipliers
        KIND_WIN, KIND_VAL, KIND_IDX, KIND_GS = range(4)
        with m.If(eng.byte_valid):
            at = fill_off + eng.byte_index
            with m.Switch(fill_kind):
                with m.Case(KIND_WIN):
                    m.d.sync += window.word_select((t_i * SPAN + at)[:max(1, (SPAN * T - 1).bit_length())], 8).eq(eng.byte)
                with m.Case(KIND_VAL):
                    for c in range(C):
                        with m.If(c_i == c):
                            m.d.sync += vals[c].word_select(at[:max(1, (L - 1).bit_length())], 8).eq(eng.byte)
                with m.Case(KIND_IDX):
                    for c in range(C):
                        with m.If(c_i == c):
                            m.d.sync += idx[c].word_select(at[:max(1, (L // 2 - 1).bit_length())], 8).eq(eng.byte)
                with m.Case(KIND_GS):
                    for c in range(C):
                        with m.If(c_i == c):
                            m.d.sync += gsb[c].word_select(at[:max(1, (GSB - 1).bit_length())], 8).eq(eng.byte)
        # ---- output stage operands
        res = Signal(signed(cfg.acc_bits))
        m.d.comb += res.eq(Array([Array(a) for a in acc])[c_i][t_i])
        row_n = n0 + c_i
        tok = t0 + t_i
        mode = f.out_mode
        out_elem = Mux(mode == int(OutMode.REQ_I8), 1, 4)
        out_addr = Signal(BUF_ADDR_BITS)
        m.d.comb += out_addr.eq(f.out_addr + tok * out_stride + row_n * out_elem)
        rec = Signal(REQUANT_LAYOUT)
        mult, shift, bias = rec.mult, rec.shift, rec.bias
        biased = Signal(signed(cfg.acc_bits + 2))
        m.d.comb += biased.eq(res + bias)
        req = Signal(signed(72))
        m.d.comb += req.eq(round_shift((biased * mult).as_signed(), shift, 72))
        y8 = Signal(signed(8))
        m.d.comb += y8.eq(saturate(req, 8))
        lut_y = Signal(8)
        residual = Signal(signed(32))
        result = Signal(32)
        with m.Switch(mode):
            with m.Case(int(OutMode.ACC32)):
                m.d.comb += result.eq(res)
            with m.Case(int(OutMode.REQ_I8)):
                m.d.comb += result.eq(Mux(f.lut, lut_y, y8))
            with m.Case(int(OutMode.REQ_I32)):
                m.d.comb += result.eq(saturate(req, 32))
            with m.Case(int(OutMode.REQ_ADD)):
                m.d.comb += result.eq(saturate(residual + req, 32))
        in_range = (tok < rows_m) & (row_n < f.n)

        read = eng.read
        ret = Signal(3)

        def fill(m, kind, base, total, stride, then):
            m.d.sync += [fill_kind.eq(kind), fill_base.eq(base), fill_total.eq(total), fill_stride.eq(stride),
                         fill_off.eq(0)]
            m.next = "FILL"
            m.d.sync += ret.eq(then)

        RET_WIN, RET_VAL, RET_IDX, RET_GS = range(4)
        row_base = f.w_addr + row_n * f.w_stride
        with m.FSM():
            self.idle(m, "T", t0.eq(0))
            with m.State("T"):
                with m.If(t0 >= rows_m):
                    m.d.comb += self.done.eq(1)
                    m.next = "IDLE"
                with m.Else():
                    m.d.sync += n0.eq(0)
                    m.next = "N"
            with m.State("N"):
                with m.If(n0 >= f.n):
                    m.d.sync += t0.eq(t0 + T)
                    m.next = "T"
                with m.Else():
                    m.d.sync += [j0.eq(0), t_i.eq(0)]
                    m.d.sync += [a.eq(0) for row in acc for a in row]
                    m.next = "J"
            with m.State("J"):
                with m.If(j0 >= nnz):
                    m.d.sync += [c_i.eq(0), t_i.eq(0)]
                    m.next = "OUT"
                with m.Elif((t_i < T) & (t0 + t_i < rows_m)):
                    fill(m, KIND_WIN, f.a_addr + (t0 + t_i) * a_stride + k0, span, 1, RET_WIN)
                with m.Else():
                    m.d.sync += c_i.eq(0)
                    m.next = "W"
            with m.State("W"):  # fetch the weights of chain c_i
                with m.If(row_n >= f.n):
                    m.next = "MAC"
                with m.Elif(f.w_kmajor):
                    fill(m, KIND_VAL, f.w_addr + j0 * f.w_stride + row_n, L, f.w_stride, RET_GS)
                with m.Else():
                    fill(m, KIND_VAL, row_base + ((j0 * bits) >> 3), (L * bits) >> 3, 1, RET_VAL)
            with m.State("W_IDX"):
                with m.If(sparse):
                    fill(m, KIND_IDX, row_base + vbytes + ((j0 * ib) >> 3), (L * ib) >> 3, 1, RET_IDX)
                with m.Else():
                    m.next = "W_GS"
            with m.State("W_GS"):
                with m.If(f.group_log2 != 0):
                    gcount = span >> f.group_log2
                    fill(m, KIND_GS, row_base + vbytes + ibytes + (k0 >> f.group_log2),
                         Mux(gcount == 0, 1, gcount), 1, RET_GS)
                with m.Else():
                    m.next = "W_NEXT"
            with m.State("W_NEXT"):
                with m.If(c_i == C - 1):
                    m.next = "MAC"
                with m.Else():
                    m.d.sync += c_i.eq(c_i + 1)
                    m.next = "W"
            with m.State("MAC"):  # every chain multiplies and reduces its step (registered)
                for c in range(C):
                    m.d.comb += chains[c].enable.eq(1)
                m.next = "ACC"
            with m.State("ACC"):
                for c in range(C):
                    for t in range(T):
                        m.d.sync += acc[c][t].eq(acc[c][t] + chains[c].sums[t])
                m.d.sync += [j0.eq(j0 + L), t_i.eq(0)]
                m.next = "J"
            with m.State("FILL"):
                left = fill_total - fill_off
                n = Mux(left > CHUNK, CHUNK, left)
                with m.If(left == 0):
                    with m.Switch(ret):
                        with m.Case(RET_WIN):
                            m.d.sync += t_i.eq(t_i + 1)
                            m.next = "J"
                        with m.Case(RET_VAL):
                            m.next = "W_IDX"
                        with m.Case(RET_IDX):
                            m.next = "W_GS"
                        with m.Case(RET_GS):
                            m.next = "W_NEXT"
                with m.Else():
                    read(m, Mux(fill_kind == KIND_WIN, int(Buffer.ACT), f.w_buf), fill_base + fill_off * fill_stride,
                         n, fill_stride)
                    m.next = "FILL_WAIT"
            with m.State("FILL_WAIT"):
                left = fill_total - fill_off
                with m.If(eng.done):
                    m.d.sync += fill_off.eq(fill_off + Mux(left > CHUNK, CHUNK, left))
                    m.next = "FILL"
            # ---- output stage, one result at a time
            with m.State("OUT"):
                with m.If(t_i == T):
                    m.d.sync += n0.eq(n0 + C)
                    m.next = "N"
                with m.Elif(~in_range):
                    m.next = "OUT_NEXT"
                with m.Elif(mode == int(OutMode.ACC32)):
                    m.next = "OUT_WRITE"
                with m.Else():
                    read(m, int(Buffer.PRM), f.scale_addr + row_n * REQUANT.size, REQUANT.size)
                    m.next = "OUT_REC"
            with m.State("OUT_REC"):
                with m.If(eng.done):
                    m.d.sync += rec.eq(eng.rdata[:REQUANT_LAYOUT.size])
                    m.next = "OUT_EXTRA"
            with m.State("OUT_EXTRA"):
                with m.If((mode == int(OutMode.REQ_I8)) & f.lut):
                    read(m, int(Buffer.PRM), f.lut_addr + (y8 + 128)[:8], 1)
                    m.next = "OUT_LUT"
                with m.Elif(mode == int(OutMode.REQ_ADD)):
                    read(m, int(Buffer.ACC), out_addr, 4)
                    m.next = "OUT_RES"
                with m.Else():
                    m.next = "OUT_WRITE"
            with m.State("OUT_LUT"):
                with m.If(eng.done):
                    m.d.sync += lut_y.eq(eng.rdata[:8])
                    m.next = "OUT_WRITE"
            with m.State("OUT_RES"):
                with m.If(eng.done):
                    m.d.sync += residual.eq(eng.rdata[:32])
                    m.next = "OUT_WRITE"
            with m.State("OUT_WRITE"):
                eng.write_bytes(m, Mux(mode == int(OutMode.REQ_I8), int(Buffer.ACT), int(Buffer.ACC)), out_addr,
                                out_elem, result)
                m.next = "OUT_WAIT"
            with m.State("OUT_WAIT"):
                with m.If(eng.done):
                    m.next = "OUT_NEXT"
            with m.State("OUT_NEXT"):
                with m.If(c_i == C - 1):
                    m.d.sync += [c_i.eq(0), t_i.eq(t_i + 1)]
                with m.Else():
                    m.d.sync += c_i.eq(c_i + 1)
                m.next = "OUT"
        return m
