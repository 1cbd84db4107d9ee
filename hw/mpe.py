"""The matrix processing engine: ``mpe_chains`` sparse DSP chains, their operand registers and the output stage.

MM and MV share it. For each pair of tokens (``macs_per_dsp``) and each group of ``mpe_chains``
weight rows, the engine walks the stored weights ``chain_length`` at a time (a chain step). Its
operand fetch streams, one buffer word per cycle and with no gap between operands or steps, the
activation window of each token and every chain's packed values, positions and group
multipliers into operand registers (:class:`flightc.hw.buffers.OperandRegister`), every address from registers
worked out a slot and a step ahead; the cycle after a step's last word arrives its operands pass a register on
their way into the chains (``CHAIN_OPERAND_STAGE``; three where the config stores bitmasks, whose conversion into
positions has two cycles of its own: ``latency_rules.chain_operand_stages``), which take them the next cycle and
accumulate ``CHAIN_LATENCY`` cycles later, while the fetch is already a step ahead. The output stage then adds the
row bias, requantizes (flightc.numerics, through hw/requant.py's pipeline), optionally maps through the activation LUT
or adds into the residual, and writes each result. A streamed MV (MV.w_stream) goes through :class:`flightc.hw.stream.StreamMv`
instead, its tile's plan (hw/tile_plan.py) worked out while it waits at the queue's head.
"""
from __future__ import annotations

from amaranth.hdl import Array, Cat, Const, Module, Mux, Signal, Value, signed

from flightc.config import Buffer, HardwareConfig, SparseEncoding
from flightc.errors import ConfigError
from flightc.compress.formats import WeightFormat
from flightc.isa.table import BUF_ADDR_BITS, SPARSITY_NM, WEIGHT_BITS, Opcode, OutMode, Unit, WeightBits
from amaranth.lib import wiring
from amaranth.lib.wiring import Out

from flightc.hw import lut6
from flightc.hw.arith import saturate, times_constant, tree
from flightc.hw.axi import read_client_signature
from flightc.hw.buffers import OperandRegister, WordEngine, lane_bits, words_touched
from flightc.hw.decode import fields, opcode_of
from flightc.hw.dsp_chain import SparseDspChain
from flightc.hw.hierarchy import separate
from flightc.hw.lane_group import config_kinds
from flightc.hw.latency_rules import CHAIN_LATENCY, CHAIN_OPERAND_STAGE, ROUNDING_LATENCY, chain_operand_stages
from flightc.hw.records import REQUANT_LAYOUT
from flightc.hw.requant import rounded_product
from flightc.hw.stream import StreamMv
from flightc.hw.stream_out import StreamOut
from flightc.hw.tile_plan import TilePlan
from flightc.hw.unit import ExecutionUnit, one_hot
from flightc.records import REQUANT




def positions_of_masks(m: Module, name: str, masks: Value, lanes: int, patterns: list[tuple[int, int]],
                       log2n: Value, log2m: Value) -> Signal:
    """The positions of a step's ``lanes`` stored weights (log2(M) bits each, in order, as POSITIONS packs them)
    from their blocks' bitmasks (M bits a block), a cycle after ``masks``: the j-th position of a block is the column
    whose bit is set with j set bits before it in the block, the counts of set bits before each column registered
    first (:data:`MASK_POSITION_STAGES`)."""
    out = Signal(4 * lanes, name=f"{name}_positions")
    masks_q = Signal(len(masks), name=f"{name}_masks_q")
    m.d.sync += masks_q.eq(masks)
    counts = []
    for n, block in patterns:
        per_block = []
        for b in range(lanes // n):
            before = [Const(0, range(block + 1))] + [Signal(range(block + 1), name=f"{name}_before{n}_{block}_{b}_{i}")
                                                     for i in range(1, block)]
            for i in range(1, block):
                ones = lut6.count_ones(m, f"{name}_ones{n}_{block}_{b}_{i}", [masks[b * block + k] for k in range(i)])
                m.d.sync += before[i].eq(ones)
            per_block.append(before)
        counts.append(per_block)
    with m.Switch(Cat(log2n, log2m)):
        for (n, block), per_block in zip(patterns, counts):
            with m.Case((n.bit_length() - 1) | (block.bit_length() - 1) << len(log2n)):
                w = (block - 1).bit_length()
                for b, before in enumerate(per_block):
                    bit = [masks_q[b * block + i] for i in range(block)]
                    for j in range(n):  # the j-th kept position lies in columns j .. block - n + j
                        at = tree([Mux(bit[i] & (before[i] == j), i, 0) for i in range(j, block - n + j + 1)],
                                  lambda x, y: x | y)
                        m.d.comb += out[(b * n + j) * w:(b * n + j + 1) * w].eq(at)
    return out


MASK_POSITION_STAGES = 1  # positions_of_masks' register: the counts of set bits before each column


class Mpe(ExecutionUnit):
    UNIT = Unit.MPE

    def __init__(self, cfg: HardwareConfig, channel_base: list[Signal], first_channel: Value | None = None):
        """``channel_base``: the base address of each of the core's own channels (a streamed MV's readers address
        its tile there), the first of them ``first_channel`` (by default the view's: ``first_master``)."""
        super().__init__(cfg, rd=Out(read_client_signature(8 * cfg.axi_data_bytes)).array(cfg.axi_masters))
        self.span_max = cfg.chain_span_max
        self.bases = channel_base
        first = cfg.first_master * cfg.channels_per_master
        self.first_channel = first_channel if first_channel is not None else Const(first, range(max(2, first + 1)))
        self.head_ok = Signal()  # from the control: the queue's head would start if the MPE were free
        self.head_in = Signal()  # from the control: the queue has a head, whatever its tokens

    def elaborate(self, platform):
        m = Module()
        cfg = self.cfg
        C, L, T, SPAN = cfg.mpe_chains, cfg.chain_length, cfg.macs_per_dsp, self.span_max
        GSB = max(1, SPAN // 16)
        # the sparse patterns the config stores as bitmasks, and the bits of mask a stored weight of each takes
        MASKED = sorted({(n_, m_) for b_, n_, m_, e in config_kinds(cfg) if e is SparseEncoding.BITMASK})
        IB_MASKED = {m_ // n_ for n_, m_ in MASKED}
        # the output stage's reads and writes: whole words, each command's words worked out from its registers
        m.submodules.eng = eng = WordEngine(cfg.buffer_port_bytes, max_bytes=REQUANT.size, contiguous=True,
                                            counted=True, nonempty=True)
        f = self.fields(Opcode.MM)  # MV's fields are MM's first fields, at the same bits
        fv = self.fields(Opcode.MV)  # and its stream fields past them
        # the instruction's kind, decoded from the queue's head as it is taken (registers from state T on)
        is_mm, is_stream = Signal(), Signal()
        head_mm = opcode_of(self.instr) == int(Opcode.MM)
        taken = [is_mm.eq(head_mm), is_stream.eq(~head_mm & fields(self.instr, Opcode.MV).w_stream)]
        # ---- the streamed MV's datapath: a reader, a feed and a lane group per master
        m.submodules.stream = sm = StreamMv(cfg, self.bases)
        for g in range(cfg.axi_masters):
            wiring.connect(m, wiring.flipped(self.rd[g]), sm.rd[g])
        # the format's fields a cycle after the instruction's (the feeds and lane groups start cycles later)
        m.d.sync += [sm.bits_code.eq(f.w_bits), sm.sparsity.eq(f.sparsity), sm.sparse_enc.eq(f.sparse_enc),
                     sm.group_log2.eq(f.group_log2), sm.a_unsigned.eq(f.a_unsigned)]
        # ---- the tiles' plans (hw/tile_plan.py): the queue head's, worked out while it waits there, and this MV's,
        # the head's as it starts if that was done, else worked out from its fields (the MV waits for it in T)
        hm, hv = fields(self.instr, Opcode.MM), fields(self.instr, Opcode.MV)
        m.submodules.head_plan = hp = TilePlan(cfg)
        m.submodules.own_plan = op = TilePlan(cfg)
        for plan, mm_, mv_, word in ((hp, hm, hv, self.instr), (op, f, fv, self.ins)):
            m.d.comb += [plan.first_channel.eq(self.first_channel),
                         plan.streamed.eq((opcode_of(word) == int(Opcode.MV)) & mv_.w_stream),
                         plan.early.eq(mv_.w_early), plan.bits_code.eq(mm_.w_bits), plan.sparsity.eq(mm_.sparsity),
                         plan.sparse_enc.eq(mm_.sparse_enc),
                         plan.group_log2.eq(mm_.group_log2), plan.k.eq(mm_.k), plan.n.eq(mm_.n),
                         plan.w_channel.eq(mv_.w_channel), plan.w_stripe.eq(mv_.w_stripe),
                         plan.w_hbm_addr.eq(mv_.w_hbm_addr)]
        m.d.comb += [hp.restart.eq(self.start | ~self.head_in), op.restart.eq(self.start)]
        plan_out = ("chunks", "pairs", "span", "span_log2", "g0", "covers", "rounds", "any_rounds", "fits", "hbm_addr")
        mine = {name: Signal.like(getattr(hp, name), name=f"mine_{name}") for name in plan_out}
        mine_ok = Signal()
        with m.If(self.start):
            m.d.sync += [mine_ok.eq(hp.valid), *(mine[x].eq(getattr(hp, x)) for x in plan_out)]
        with m.Elif(~mine_ok & op.valid):
            m.d.sync += [mine_ok.eq(1), *(mine[x].eq(getattr(op, x)) for x in plan_out)]
        m.d.comb += [sm.chunks.eq(mine["chunks"]), sm.pairs.eq(mine["pairs"]), sm.span.eq(mine["span"]),
                     sm.span_log2.eq(mine["span_log2"]), sm.g0.eq(mine["g0"])]
        # the readers' tile: this MV's as it starts (state T), else the queue head's, read ahead while this streamed
        # MV drains if both tiles fit the readers' FIFOs and the head's tokens are in (its waits met: the tile is
        # never read ahead of them), or while the MPE is idle, if no instruction writes the head's tile (w_early: its
        # waits order its activation, not its tile), as far as the FIFOs hold it; either once the head's plan is done
        in_t, in_stream = Signal(), Signal()
        m.d.comb += [sm.r_covers.eq(Mux(in_t, mine["covers"], hp.covers)),
                     sm.r_rounds.eq(Mux(in_t, mine["rounds"], hp.rounds)),
                     sm.r_any_rounds.eq(Mux(in_t, mine["any_rounds"], hp.any_rounds)),
                     sm.r_hbm_addr.eq(Mux(in_t, mine["hbm_addr"], hp.hbm_addr))]
        pre = Signal()  # the head's tile is being read ahead: it resumes instead of starting
        cur_fits = Signal()
        ahead = Signal()
        idle = Signal()  # the MPE's IDLE state
        head_ready = self.head_in & hp.valid & hp.is_streamed  # (registers but head_in)
        m.d.comb += [ahead.eq(~pre & head_ready & ((in_stream & cur_fits & sm.asked & (self.head_ok | hp.is_early)
                                                    & hp.fits) | (idle & ~self.start & hp.is_early))),
                     sm.prefetch.eq(ahead)]
        with m.If(ahead):
            m.d.sync += pre.eq(1)
        m.submodules.stream_out = so = StreamOut(cfg)
        # its fields a cycle after the instruction's (the output stage starts cycles later)
        m.d.sync += [so.mode.eq(f.out_mode), so.lut.eq(f.lut), so.out_max.eq(~is_mm & fv.out_max), so.n.eq(f.n),
                     so.out_addr.eq(f.out_addr), so.scale_addr.eq(f.scale_addr), so.lut_addr.eq(f.lut_addr)]
        m.d.comb += [so.res_valid.eq(sm.res_valid),
                     so.res_data.eq(sm.res_data), so.res_row.eq(sm.res_row), so.res_end.eq(sm.res_end),
                     sm.res_pop.eq(so.res_pop), so.pair_valid.eq(sm.pair_valid), so.pair_data.eq(sm.pair_data),
                     sm.pair_take.eq(so.pair_take)]
        streaming = Signal()  # a streamed MV has the port: its activation copy, then its output stage
        rows_m = Mux(is_mm, f.m, 1)
        a_stride = Mux(is_mm, f.a_stride, 0)
        out_stride = Mux(is_mm, f.out_stride, 0)
        # ---- format, as registers worked out from the instruction's fields in the cycles before its first fetch
        # (T, N, J: the format's decode and the weights a row stores, then their bytes)
        # (ib: the bits of positions a stored weight takes, M / N of them for a bitmask, which the chains' lanes
        # take as positions once a block's mask is turned into them)
        ib_max = max({WeightFormat(8, n_, m_).index_bits for n_, m_ in SPARSITY_NM.values()} | IB_MASKED)
        widths = {"bits": 4, "log2n": 3, "log2m": 3, "ib": ib_max.bit_length()}
        decoded = {x: Signal(widths[x], name=f"{x}_of") for x in ("bits", "log2n", "log2m", "ib")}
        with m.Switch(f.w_bits):
            for code, b in WEIGHT_BITS.items():
                with m.Case(int(code)):
                    m.d.comb += decoded["bits"].eq(b)
        with m.Switch(f.sparsity):
            for sp, (n_keep, block) in SPARSITY_NM.items():
                with m.Case(int(sp)):
                    m.d.comb += [decoded["log2n"].eq(n_keep.bit_length() - 1),
                                 decoded["log2m"].eq(block.bit_length() - 1),
                                 decoded["ib"].eq(WeightFormat(8, n_keep, block).index_bits)]
                    if (n_keep, block) in MASKED:
                        with m.If(f.sparse_enc == SparseEncoding.BITMASK):
                            m.d.comb += decoded["ib"].eq(block // n_keep)
        bits, log2n, log2m, ib = (Signal.like(decoded[x], name=x) for x in ("bits", "log2n", "log2m", "ib"))
        by_mask = Signal()
        m.d.sync += [bits.eq(decoded["bits"]), log2n.eq(decoded["log2n"]), log2m.eq(decoded["log2m"]),
                     ib.eq(decoded["ib"]), by_mask.eq((f.sparse_enc == SparseEncoding.BITMASK) & ~f.w_kmajor)]
        sparse = Signal()
        m.d.comb += sparse.eq(ib != 0)
        kmajor4 = Signal()
        m.d.sync += kmajor4.eq(f.w_kmajor & (f.w_bits == int(WeightBits.B4)))
        nnz = Signal(len(f.k))  # stored weights per row: at most k
        no_weights = Signal()
        m.d.sync += no_weights.eq(nnz == 0)
        m.d.sync += nnz.eq(Mux((decoded["ib"] != 0) & ~f.w_kmajor, (f.k >> decoded["log2m"]) << decoded["log2n"], f.k))
        vbytes = Signal(BUF_ADDR_BITS)
        ibytes = Signal(BUF_ADDR_BITS)
        index_widths = {WeightFormat(8, n_, m_).index_bits for n_, m_ in SPARSITY_NM.values()} | IB_MASKED
        for width, out, widths in ((bits, vbytes, set(WEIGHT_BITS.values())), (ib, ibytes, index_widths)):
            with m.Switch(width):  # (nnz x width + 7) / 8 for each width the ISA has
                for b in sorted(widths):
                    with m.Case(b):
                        m.d.sync += out.eq((times_constant(nnz, b) + 7) >> 3)
        span = Signal(range(SPAN + 1))
        span_of = Const(L, 16) << (log2m - log2n)[:3]
        m.d.sync += span.eq(span_of)
        # ---- loop state
        t0 = Signal(len(f.m) + 1)  # steps past m by macs_per_dsp
        n0 = Signal(len(f.n) + 1)  # steps past n by mpe_chains
        j0 = Signal(len(f.k) + 1)  # the step being fetched
        j_mac = Signal(len(f.k) + 1)  # the step the chains' sums are accumulated from (the fetch runs ahead)
        j_take = Signal.like(j_mac)  # the step the chains take their operands of (CHAIN_LATENCY before its sums)
        mac_last = Signal()  # j_mac's step is the last
        c_i = Signal(range(max(2, C)))
        t_i = Signal(range(T + 1))
        w, lb = cfg.buffer_port_bytes, lane_bits(cfg.buffer_port_bytes)
        # operand registers: whole buffer words as they arrive, and the lane the operand starts at
        win_raw = [OperandRegister(f"win{t}", SPAN, w) for t in range(T)]
        val_raw = [OperandRegister(f"vals{c}", L, w) for c in range(C)]
        idx_raw = [OperandRegister(f"idx{c}", L * max({4} | IB_MASKED) // 8, w) for c in range(C)]
        gs_raw = [OperandRegister(f"gsb{c}", GSB, w) for c in range(C)]
        window = Signal(8 * SPAN * T)
        m.d.comb += window.eq(Cat(*[r.view(m) for r in win_raw]))
        idx = [r.view(m) for r in idx_raw]
        gsb = [r.view(m) for r in gs_raw]
        vals = []
        for c, r in enumerate(val_raw):  # a K-major INT4 byte holds two rows: each takes its row's nibble
            odd = (n0 + c)[0]
            raw = r.view(m)
            as_int4 = Cat(*[Cat(Mux(odd, b_[4:], b_[:4]), Mux(odd, b_[7], b_[3]).replicate(4))
                            for b_ in (raw.word_select(i, 8) for i in range(L))])
            vals.append(Mux(kmajor4, as_int4, raw))
        acc = [[Signal(signed(cfg.acc_bits), name=f"acc{c}_{t}") for t in range(T)] for c in range(C)]
        chains = []
        # the operands and the format through a register on their way in (CHAIN_OPERAND_STAGE); where the config
        # stores bitmasks, a step's operands pass two before it: one between the operand registers' byte shifter and
        # the masks' conversion into positions, and the conversion's own (latency_rules.chain_operand_stages)
        STAGES = chain_operand_stages(cfg)
        EXTRA = STAGES - CHAIN_OPERAND_STAGE
        if EXTRA not in (0, 1 + MASK_POSITION_STAGES):
            raise AssertionError("the MPE's operand stages and hw/latency_rules.py disagree")
        ahead = EXTRA - MASK_POSITION_STAGES if EXTRA else 0  # the masks' registers before their conversion
        lanes_left = nnz - j_take

        def staged(value: Value, name: str, times: int = EXTRA) -> Value:
            """A step's operand ``times`` registers on: what the chains' last register takes it from."""
            for k in range(times):
                r = Signal(Value.cast(value).shape(), name=f"{name}_staged{k}")
                m.d.sync += r.eq(value)
                value = r
            return value

        step_window = staged(window, "window")
        step_lanes = staged(Mux(lanes_left > L, L, lanes_left), "valid_lanes")
        for c in range(C):
            ch = separate(SparseDspChain, cfg, SPAN)
            m.submodules[f"chain{c}"] = ch
            masks = staged(idx[c], f"idx{c}", ahead)
            at = staged(masks, f"positions{c}", EXTRA - ahead)[:len(ch.idx)]
            if MASKED:  # a step's blocks' masks -> its L positions, as POSITIONS packs them
                at = Mux(by_mask, positions_of_masks(m, f"chain{c}", masks, L, MASKED, log2n, log2m), at)
            m.d.sync += [ch.vals.eq(staged(vals[c], f"vals{c}")), ch.idx.eq(at), ch.gsb.eq(staged(gsb[c], f"gsb{c}")),
                         ch.window.eq(step_window),
                         ch.a_unsigned.eq(f.a_unsigned), ch.bits_code.eq(Mux(f.w_kmajor, int(WeightBits.B8), f.w_bits)),
                         ch.sparse.eq(sparse & ~f.w_kmajor), ch.m4.eq(log2m == 2), ch.log2n.eq(log2n),
                         ch.group_log2.eq(Mux(f.w_kmajor, 0, f.group_log2)), ch.valid_lanes.eq(step_lanes)]
            chains.append(ch)
        # ---- operand fetch: every operand of a step, a buffer word per cycle, one fill after another
        # slots: the window of each token, then per chain its values, positions and group multipliers
        S = T + 3 * C
        WIN, VAL, IDX, GS = 0, T, T + C, T + 2 * C
        if L % 8:
            raise ConfigError(f"config {cfg.name!r}: chain_length {L} is not a multiple of 8 (a step's packed values "
                              f"and positions are whole bytes for every weight width)")
        # ---- the fetch's plan, as registers: which slots a (t0, n0) group fetches and each one's next (worked out
        # in N; slot 0, the first token's window, is always one), every slot's base address at the step being
        # fetched and at the next (the bases of a group's tokens and rows moved on by additions as t0 and n0 do,
        # each step's offsets by the format's constant steps), and each kind of slot's bytes
        en = Signal(S)
        for t in range(T):
            m.d.comb += en[WIN + t].eq(t0 + t < rows_m)
        for c in range(C):
            on = n0 + c < f.n
            m.d.comb += [en[VAL + c].eq(on), en[IDX + c].eq(on & sparse & ~f.w_kmajor),
                         en[GS + c].eq(on & ~f.w_kmajor & (f.group_log2 != 0))]
        enabled = Signal(S)
        m.d.sync += enabled.eq(en)

        def after(s_: int) -> tuple[Value, Value]:
            """(any, the first) enabled slot past ``s_``: the lowest of them isolated (x & -x, on a carry chain),
            then its index (an OR of its bits a bit of the index)."""
            above = Signal(S, name=f"above{s_}")
            m.d.comb += above.eq(enabled & ~Const((1 << (s_ + 1)) - 1, S))
            lowest = Signal(S, name=f"lowest{s_}")
            m.d.comb += lowest.eq(above & (~above + 1))
            at = Cat(*[lut6.any_of(m, f"after{s_}_bit{b}", [lowest[k] for k in range(S) if k >> b & 1])
                       for b in range(max(1, (S - 1).bit_length()))])
            return above != 0, at

        next_of = [Signal(range(S), name=f"next_of{s_}") for s_ in range(S)]
        has_next = Signal(S)
        afters = [after(s_) for s_ in range(S)]
        for s_, (found, at) in enumerate(afters):
            m.d.sync += [next_of[s_].eq(at), has_next[s_].eq(found)]
        a_stride_now = Mux(opcode_of(self.instr) == int(Opcode.MM), hm.a_stride, 0)  # (the head's, as it starts)
        tok_base = [Signal(BUF_ADDR_BITS, name=f"tok_base{t}") for t in range(T)]  # a_addr + (t0 + t) a_stride
        row_base = [Signal(BUF_ADDR_BITS, name=f"row_base{c}") for c in range(C)]  # w_addr + (n0 + c) w_stride
        kmajor_row = [Signal(BUF_ADDR_BITS, name=f"kmajor_row{c}") for c in range(C)]  # K-major: the row's byte
        for c in range(C):
            m.d.sync += kmajor_row[c].eq(Mux(kmajor4, (n0 + c) >> 1, n0 + c))
        v_step, i_step, k_step = (Signal(BUF_ADDR_BITS, name=x) for x in ("v_step", "i_step", "k_step"))
        gcount = Signal(BUF_ADDR_BITS)
        m.d.sync += [v_step.eq(times_constant(bits, L) >> 3), i_step.eq(times_constant(ib, L) >> 3),
                     k_step.eq(times_constant(f.w_stride, L)), gcount.eq(span >> f.group_log2)]
        # the offsets of the next step (j0 + L): its K, its values' and positions' bytes, its K-major rows
        o_k, o_v, o_i, o_jw = (Signal(BUF_ADDR_BITS, name=x) for x in ("o_k", "o_v", "o_i", "o_jw"))
        base_now = [Signal(BUF_ADDR_BITS, name=f"base_now{s_}") for s_ in range(S)]
        base_next = [Signal(BUF_ADDR_BITS, name=f"base_next{s_}") for s_ in range(S)]

        def bases(k_off, v_off, i_off, jw_off) -> list:
            out = [tok_base[t] + k_off for t in range(T)]
            out += [Mux(f.w_kmajor, f.w_addr + jw_off + kmajor_row[c], row_base[c] + v_off) for c in range(C)]
            out += [row_base[c] + vbytes + i_off for c in range(C)]
            out += [row_base[c] + vbytes + ibytes + (k_off >> f.group_log2) for c in range(C)]
            return out

        m.d.sync += [b_.eq(v) for b_, v in zip(base_next, bases(o_k, o_v, o_i, o_jw))]
        first_bases = bases(0, 0, 0, 0)

        by_byte = Signal()  # K-major values not at unit stride: a byte a request
        m.d.sync += by_byte.eq(f.w_kmajor & (f.w_stride != 1))
        most = max(OperandRegister.most_words(SPAN, w), L)

        # each kind of slot's bytes and a word's less one (the words from a base: its lane plus those, over a word),
        # worked out beside the bytes, from the format's registers (in time for the first fetch, J)
        bytes_up = [Signal(BUF_ADDR_BITS, name=f"{x}_up") for x in ("span", "val", "idx", "gs")]
        m.d.sync += [bytes_up[0].eq(span_of + (w - 1)),
                     bytes_up[1].eq(Mux(f.w_kmajor, L, times_constant(bits, L) >> 3) + (w - 1)),
                     bytes_up[2].eq((times_constant(ib, L) >> 3) + (w - 1)),
                     bytes_up[3].eq(Mux(gcount == 0, 1, gcount) + (w - 1))]

        def requests(s_: int, base: Value) -> Value:
            """The requests slot ``s_``'s operand takes from ``base``: the words its bytes touch, or a byte each."""
            up = bytes_up[0 if s_ < VAL else 1 if s_ < IDX else 2 if s_ < GS else 3]
            touched = ((Value.cast(base)[:lb] + up) >> lb)[:most.bit_length()]
            return Mux(by_byte, L, touched) if VAL <= s_ < IDX else touched

        slot = Signal(range(S))
        slot_next = Signal(range(S))  # the enabled slot after ``slot`` (if ``more``)
        more = Signal()
        more_steps = Signal()  # a step after j0's
        ptr = Signal(BUF_ADDR_BITS)
        strided = (slot >= VAL) & (slot < IDX) & by_byte
        contiguous = ~strided
        # the slot's requests not yet made: its end is a LUT of this register, not the bytes left against the room
        # in the word (a comparison of an address's width, on the path into the next address)
        reqs_left = Signal(range(most + 1))
        fetching = Signal()
        in_j, advance = Signal(), Signal()  # J starts the fetch; a step's last word asked for, another step after it
        slot_done = Signal()
        m.d.comb += slot_done.eq(reqs_left == 1)
        port, eport = self.port, eng.port
        # the request in flight: its slot, where its bytes go, how many, the lane they start at
        tag_on = Signal()
        tag_slot = Signal(range(S))
        tag_lane = Signal(lb)
        tag_contig = Signal()
        tag_first = Signal()  # the operand's first word, whose lane is where it starts
        tag_word = Signal(range(max(2, most)))  # its word in the operand register (a strided one's byte)
        word_no = Signal.like(tag_word)
        tag_last = Signal()  # the step's last word: the chains multiply the cycle after it arrives
        mac_go, acc_go = Signal(), Signal()
        step_done = Signal()
        m.d.comb += step_done.eq(fetching & port.gnt & slot_done & ~more)
        # a streamed MV first copies its activations into every lane group, a buffer word a cycle
        act_copy = Signal()
        act_words = Signal(len(f.k))
        s_log2 = cfg.lane_slots.bit_length() - 1  # whole chunks: dense rows may end mid-chunk (zeros past K)
        m.d.comb += act_words.eq(((f.k + cfg.lane_slots - 1) >> s_log2) << (s_log2 - lb))
        act_asked = Signal(len(f.k) + 1)
        act_got = Signal(len(f.k) + 1)
        act_tag = Signal()  # a word asked for last cycle arrives
        all_in = Signal()
        per_act = cfg.lane_slots // w  # buffer words in a lane group's activation word
        with m.If(fetching):
            m.d.comb += [port.req.eq(1), port.we.eq(0), port.addr.eq(ptr),
                         port.buf.eq(Mux(slot < VAL, int(Buffer.ACT), f.w_buf))]
        with m.Elif(act_copy):
            m.d.comb += [port.req.eq(act_asked < act_words), port.we.eq(0), port.addr.eq(f.a_addr + (act_asked << lb)),
                         port.buf.eq(int(Buffer.ACT))]
        with m.Elif(streaming):
            sp_ = so.port
            m.d.comb += [port.req.eq(sp_.req), port.we.eq(sp_.we), port.addr.eq(sp_.addr), port.buf.eq(sp_.buf),
                         port.wdata.eq(sp_.wdata), port.wmask.eq(sp_.wmask)]
        with m.Else():
            m.d.comb += [port.req.eq(eport.req), port.we.eq(eport.we), port.addr.eq(eport.addr),
                         port.buf.eq(eport.buf), port.wdata.eq(eport.wdata), port.wmask.eq(eport.wmask),
                         eport.gnt.eq(port.gnt)]
        # (the output stage has the port only while streaming: never beside a fetch or the activation copy)
        m.d.comb += so.port.gnt.eq(port.gnt & streaming)
        m.d.comb += [eport.rvalid.eq(port.rvalid & ~tag_on & ~act_tag & ~streaming), eport.rdata.eq(port.rdata),
                     so.port.rvalid.eq(port.rvalid), so.port.rdata.eq(port.rdata)]
        asked_now = act_copy & port.gnt & (act_asked < act_words)
        m.d.sync += act_tag.eq(asked_now)
        with m.If(asked_now):
            m.d.sync += act_asked.eq(act_asked + 1)
        # the bytes of the word past K are zero: K less the words got before, as a register
        act_rem = Signal(len(f.k))
        # the next word's lanes within K: all of them, the last word's (K mod the word, a LUT6 a lane of K's low bits,
        # worked out as the copy starts), or none: flags kept beside act_rem rather than a comparison a lane
        full, partial = Signal(), Signal()
        last_lanes = Signal(w)
        with m.If(act_tag):
            m.d.sync += [act_rem.eq(Mux(act_rem > w, act_rem - w, 0)), full.eq(act_rem >= 2 * w),
                         partial.eq((act_rem > w) & (act_rem < 2 * w))]
        act_word = Signal(8 * w)
        m.d.comb += act_word.eq(port.rdata & Cat(*[(full | (partial & last_lanes[i])).replicate(8) for i in range(w)]))
        # each word into the lane groups' copies a cycle after it arrives (their feeds start on the last word's
        # arrival, their first chunk two cycles on)
        m.d.sync += sm.act_we.eq(0)
        with m.If(act_tag):
            m.d.sync += act_got.eq(act_got + 1)
            if per_act == 1:
                m.d.sync += [sm.act_we.eq(1), sm.act_addr.eq(act_got), sm.act_data.eq(act_word)]
            else:
                gathered = Signal(8 * w * (per_act - 1))
                m.d.sync += gathered.eq(Cat(gathered[8 * w:], act_word))
                m.d.sync += [sm.act_we.eq(act_got % per_act == per_act - 1), sm.act_addr.eq(act_got // per_act),
                             sm.act_data.eq(Cat(gathered, act_word))]
        m.d.sync += tag_on.eq(0)
        with m.If(fetching & port.gnt):
            m.d.sync += [tag_on.eq(1), tag_slot.eq(slot), tag_lane.eq(ptr[:lb]), tag_contig.eq(contiguous),
                         tag_word.eq(word_no), word_no.eq(word_no + 1), tag_first.eq(word_no == 0),
                         tag_last.eq(step_done)]
            with m.If(slot_done):  # on with the next slot
                m.d.sync += [slot.eq(slot_next), slot_next.eq(Array(next_of)[slot_next]),
                             more.eq(has_next.bit_select(slot_next, 1)), word_no.eq(0)]
            with m.If(advance):  # straight on with the next step's operands
                m.d.sync += [j0.eq(j0 + L), more_steps.eq(j0 + 2 * L < nnz), slot.eq(0), slot_next.eq(next_of[0]),
                             more.eq(has_next[0]), word_no.eq(0),
                             o_k.eq(o_k + span), o_v.eq(o_v + v_step), o_i.eq(o_i + i_step), o_jw.eq(o_jw + k_step)]
        # the fetch's address, the slot's requests left and the step's bases: chosen by LUT6s from what J starts with, a
        # step's advance, a slot's end and a word's request (each worked out beside the others)
        moving = Signal()
        m.d.comb += [moving.eq(fetching & port.gnt), advance.eq(step_done & more_steps)]
        choice = Cat(in_j | (moving & slot_done & ~advance), in_j | (moving & advance))
        # (a contiguous operand's next word is the one after ptr's; each slot's requests from its base now)
        aligned_next = Cat(Const(0, lb), ptr[lb:] + 1)
        reqs_now = [Signal(range(most + 1), name=f"reqs_now{s_}") for s_ in range(S)]
        m.d.comb += [r_.eq(requests(s_, b_)) for s_, (r_, b_) in enumerate(zip(reqs_now, base_now))]
        with m.If(in_j | moving):
            m.d.sync += [ptr.eq(lut6.mux4(m, "ptr_next", choice, (Mux(contiguous, aligned_next, ptr + f.w_stride),
                                                                  Array(base_now)[slot_next], base_next[0],
                                                                  tok_base[0]))),
                         reqs_left.eq(lut6.mux4(m, "reqs_next", choice,
                                                (reqs_left - 1, lut6.select(m, "reqs_slot", slot_next, reqs_now),
                                                 requests(0, base_next[0]), requests(0, tok_base[0]))))]
        with m.If(in_j | (moving & advance)):
            m.d.sync += [b_.eq(Mux(in_j, v0, v1)) for b_, v0, v1 in zip(base_now, first_bases, base_next)]
        # the pipeline behind the fetch: a step's last word arrives, the chains multiply, the sums accumulate
        m.d.sync += mac_go.eq(tag_on & tag_last)
        with m.If(mac_go):
            m.d.sync += j_take.eq(j_take + L)
        take = mac_go  # the chains take the staged operands, STAGES cycles after the step's go
        for k in range(STAGES):
            nxt = Signal(name="take" if k == STAGES - 1 else f"take{k}")
            m.d.sync += nxt.eq(take)
            take = nxt
        go = take
        for k in range(CHAIN_LATENCY):  # the chains' sums come CHAIN_LATENCY cycles after they take the operands
            nxt = acc_go if k == CHAIN_LATENCY - 1 else Signal(name=f"acc_go{k}")
            m.d.sync += nxt.eq(go)
            go = nxt
        for c in range(C):
            m.d.comb += chains[c].enable.eq(take)
        with m.If(acc_go):
            for c in range(C):
                for t in range(T):
                    m.d.sync += acc[c][t].eq(acc[c][t] + getattr(chains[c], f"sum{t}"))
            m.d.sync += [j_mac.eq(j_mac + L), mac_last.eq(j_mac + 2 * L >= nnz)]
        strided_byte = lut6.shift(m, "strided_byte", port.rdata, tag_lane, 8, step=8, left=False)
        with m.If(tag_on):  # a contiguous operand's words go in whole; a strided one's bytes one by one
            with m.Switch(tag_slot):
                for s_, reg in enumerate(win_raw + val_raw + idx_raw + gs_raw):
                    with m.Case(s_):
                        with m.If(tag_first):  # on arrival, not on request: the chains may still read the last step
                            m.d.sync += reg.lane.eq(Mux(tag_contig, tag_lane, 0))
                        if VAL <= s_ < IDX:  # only K-major values are strided
                            with m.If(tag_contig):
                                m.d.sync += reg.word(tag_word).eq(port.rdata)
                            with m.Else():  # (the byte's place decoded to a case a byte, its lane by LUT6s)
                                with m.Switch(tag_word[:max(1, (L - 1).bit_length())]):
                                    for i in range(L):
                                        with m.Case(i):
                                            m.d.sync += reg.raw.word_select(i, 8).eq(strided_byte)
                        else:
                            m.d.sync += reg.word(tag_word).eq(port.rdata)

        def start_fetch(m):  # (J: the group's plan is in, its first step's bases worked out now)
            first_more, first_next = afters[0]
            m.d.comb += in_j.eq(1)  # (the first address, bytes and bases: above)
            m.d.sync += [slot.eq(0), slot_next.eq(first_next), more.eq(first_more), word_no.eq(0),
                         more_steps.eq(L < nnz), o_k.eq(span), o_v.eq(v_step), o_i.eq(i_step), o_jw.eq(k_step)]
            m.next = "FETCH"

        # ---- output stage operands: the result, its address and its record's, as registers (the addresses moved on
        # by additions as the results go, the tokens and the rows)
        res = Signal(signed(cfg.acc_bits))
        m.d.comb += res.eq(Array([Array(a) for a in acc])[c_i][t_i])
        res_r = Signal.like(res)
        row_n = n0 + c_i
        tok = t0 + t_i
        mode = f.out_mode
        out_elem = Mux(mode == int(OutMode.REQ_I8), 1, 4)
        out_t = Signal(BUF_ADDR_BITS)  # out_addr + t0 x out_stride
        out_n = Signal(BUF_ADDR_BITS)  # n0 x the result's bytes
        out_row = Signal(BUF_ADDR_BITS)  # token t_i's first result (c_i = 0)
        out_addr = Signal(BUF_ADDR_BITS)  # this result's
        scale_n = Signal(BUF_ADDR_BITS)  # scale_addr + n0 x the record's bytes
        scale_at = Signal(BUF_ADDR_BITS)  # this result's record
        tok_in, row_in = Signal(), Signal()  # the result's token is one of the instruction's, and its row
        # acc_in's partial sums (ISA 1.11): packed rows of n INT32, moved on as the outputs are
        part_t = Signal(BUF_ADDR_BITS)  # acc_addr + t0 x 4 n
        part_row = Signal(BUF_ADDR_BITS)  # token t_i's first partial sum
        part_at = Signal(BUF_ADDR_BITS)  # this result's
        part_sum = Signal(signed(32))
        first_result = [out_row.eq(out_t + out_n), out_addr.eq(out_t + out_n), scale_at.eq(scale_n),
                        tok_in.eq(t0 < rows_m), row_in.eq(n0 < f.n), part_row.eq(part_t + (n0 << 2)),
                        part_at.eq(part_t + (n0 << 2))]
        rec = Signal(REQUANT_LAYOUT)
        rounded = rounded_product(m, "mm_rq", res_r, rec.bias, rec.mult, rec.shift, cfg.acc_bits)
        rounding = Signal(range(ROUNDING_LATENCY + 1))
        y8, y32, req = Signal(signed(8)), Signal(signed(32)), Signal(signed(72))
        lut_y = Signal(8)
        residual = Signal(signed(32))
        added = Signal(signed(32))
        result = Signal(32)
        with m.Switch(mode):
            with m.Case(int(OutMode.ACC32)):
                m.d.comb += result.eq(res_r)
            with m.Case(int(OutMode.REQ_I8)):
                m.d.comb += result.eq(Mux(f.lut, lut_y, y8))
            with m.Case(int(OutMode.REQ_I32)):
                m.d.comb += result.eq(y32)
            with m.Case(int(OutMode.REQ_ADD)):
                m.d.comb += result.eq(added)
        in_range = tok_in & row_in

        read = eng.read

        def dispatch(m):  # a result in res_r: written as it is, or its record read first
            with m.If(mode == int(OutMode.ACC32)):
                m.next = "OUT_WRITE"
            with m.Else():
                read(m, int(Buffer.PRM), scale_at, REQUANT.size)
                m.d.comb += eng.words.eq(words_touched(scale_at, REQUANT.size, w))
                m.next = "OUT_REC"

        with m.FSM() as fsm:
            self.idle(m, "T", t0.eq(0), out_t.eq(fields(self.instr, Opcode.MM).out_addr),
                      part_t.eq(fields(self.instr, Opcode.MM).acc_addr), *taken,
                      *(tb.eq(hm.a_addr + times_constant(a_stride_now, t)) for t, tb in enumerate(tok_base)))
            with m.State("T"):
                m.d.comb += in_t.eq(1)
                with m.If(is_stream):
                    with m.If(mine_ok):  # (a tile read ahead had its plan done as it started)
                        m.d.comb += [sm.start.eq(~pre), sm.resume.eq(pre)]
                        m.d.sync += [act_asked.eq(0), act_got.eq(0), act_rem.eq(f.k), pre.eq(0),
                                     full.eq(f.k >= w), partial.eq((f.k != 0) & (f.k < w)),
                                     last_lanes.eq(Cat(*[(f.k[:lb] > i) | (f.k[:lb] == 0) for i in range(w)])),
                                     cur_fits.eq(mine["fits"])]
                        m.next = "S_ACT"
                with m.Elif(t0 >= rows_m):
                    m.d.comb += self.done.eq(1)
                    m.next = "IDLE"
                with m.Else():
                    m.d.sync += [n0.eq(0), out_n.eq(0), scale_n.eq(f.scale_addr),
                                 *(rb.eq(f.w_addr + times_constant(f.w_stride, c)) for c, rb in enumerate(row_base))]
                    m.next = "N"
            with m.State("N"):
                with m.If(n0 >= f.n):
                    m.d.sync += [t0.eq(t0 + T), out_t.eq(out_t + out_stride * T),
                                 part_t.eq(part_t + times_constant(f.n, 4 * T)),
                                 *(tb.eq(tb + times_constant(a_stride, T)) for tb in tok_base)]
                    m.next = "T"
                with m.Else():
                    m.d.sync += [j0.eq(0), j_mac.eq(0), j_take.eq(0), mac_last.eq(L >= nnz)]
                    m.d.sync += [a.eq(0) for row in acc for a in row]
                    m.next = "J"
            with m.State("J"):
                with m.If(no_weights):  # (j0 is 0 in J)
                    m.d.sync += [c_i.eq(0), t_i.eq(0), *first_result]
                    m.next = "OUT"
                with m.Else():
                    start_fetch(m)
            # ---- a streamed MV: activations into the lane groups, then the feeds; results through the output stage
            with m.State("S_ACT"):
                m.d.comb += [act_copy.eq(1), in_stream.eq(1)]
                with m.If(all_in):
                    m.d.comb += [sm.go.eq(1), so.start.eq(1)]
                    m.d.sync += streaming.eq(1)
                    m.next = "S_RUN"
            with m.State("S_RUN"):  # the output stage takes the results as the lane groups make them
                m.d.comb += in_stream.eq(1)
                with m.If(so.done):
                    m.next = "S_DRAIN"
            with m.State("S_DRAIN"):  # the readers' last beats (padding) drop
                m.d.comb += in_stream.eq(1)
                with m.If(sm.done):
                    m.d.comb += self.done.eq(1)
                    m.d.sync += streaming.eq(0)
                    m.next = "IDLE"
            with m.State("FETCH"):  # a word per cycle, step after step, while the chains work behind
                m.d.comb += fetching.eq(1)
                with m.If(step_done & ~more_steps):
                    m.next = "FLUSH"
            with m.State("FLUSH"):  # the last step arrives, multiplies and accumulates
                with m.If(acc_go & mac_last):
                    m.d.sync += [c_i.eq(0), t_i.eq(0), *first_result]
                    m.next = "OUT"
            # ---- output stage, one result at a time
            with m.State("OUT"):
                m.d.sync += res_r.eq(res)
                with m.If(t_i == T):
                    m.d.sync += [n0.eq(n0 + C), out_n.eq(out_n + C * out_elem), scale_n.eq(scale_n + C * REQUANT.size),
                                 *(rb.eq(rb + times_constant(f.w_stride, C)) for rb in row_base)]
                    m.next = "N"
                with m.Elif(~in_range):
                    m.next = "OUT_NEXT"
                with m.Elif(f.acc_in):
                    read(m, int(Buffer.ACC), part_at, 4)
                    m.d.comb += eng.words.eq(words_touched(part_at, 4, w))
                    m.next = "OUT_PART"
                with m.Else():
                    dispatch(m)
            with m.State("OUT_PART"):
                with m.If(eng.done):
                    m.d.sync += part_sum.eq(eng.rdata[:32])
                    m.next = "OUT_PART_ADD"
            with m.State("OUT_PART_ADD"):  # (a valid program's sum stays within the accumulators: not saturated)
                m.d.sync += res_r.eq(res_r + part_sum)
                dispatch(m)
            with m.State("OUT_REC"):
                with m.If(eng.done):
                    m.d.sync += [rec.eq(eng.rdata[:REQUANT_LAYOUT.size]), rounding.eq(0)]
                    m.next = "OUT_ROUND"
            with m.State("OUT_ROUND"):  # (hw/requant.py) the result and its record held; then saturated
                m.d.sync += rounding.eq(rounding + 1)
                with m.If(rounding == ROUNDING_LATENCY):
                    m.d.sync += [y8.eq(saturate(rounded, 8)), y32.eq(saturate(rounded, 32)), req.eq(rounded)]
                    m.next = "OUT_EXTRA"
            with m.State("OUT_EXTRA"):
                with m.If((mode == int(OutMode.REQ_I8)) & f.lut):
                    read(m, int(Buffer.PRM), f.lut_addr + (y8 + 128)[:8], 1)
                    m.d.comb += eng.words.eq(1)
                    m.next = "OUT_LUT"
                with m.Elif(mode == int(OutMode.REQ_ADD)):
                    read(m, int(Buffer.ACC), out_addr, 4)
                    m.d.comb += eng.words.eq(words_touched(out_addr, 4, w))
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
                    m.next = "OUT_ADD"
            with m.State("OUT_ADD"):
                m.d.sync += added.eq(saturate(residual + req, 32))
                m.next = "OUT_WRITE"
            with m.State("OUT_WRITE"):
                m.d.comb += eng.words.eq(words_touched(out_addr, out_elem, w))
                eng.write_bytes(m, Mux(mode == int(OutMode.REQ_I8), int(Buffer.ACT), int(Buffer.ACC)), out_addr,
                                out_elem, result)
                m.next = "OUT_WAIT"
            with m.State("OUT_WAIT"):
                with m.If(eng.done):
                    m.next = "OUT_NEXT"
            with m.State("OUT_NEXT"):
                with m.If(c_i == C - 1):
                    m.d.sync += [c_i.eq(0), t_i.eq(t_i + 1), out_row.eq(out_row + out_stride),
                                 out_addr.eq(out_row + out_stride), scale_at.eq(scale_n), tok_in.eq(tok + 1 < rows_m),
                                 row_in.eq(n0 < f.n), part_row.eq(part_row + (f.n << 2)),
                                 part_at.eq(part_row + (f.n << 2))]
                with m.Else():
                    m.d.sync += [c_i.eq(c_i + 1), out_addr.eq(out_addr + out_elem), scale_at.eq(scale_at + REQUANT.size),
                                 row_in.eq(row_n + 1 < f.n), part_at.eq(part_at + 4)]
                m.next = "OUT"
        one_hot(fsm)
        m.d.comb += idle.eq(fsm.ongoing("IDLE"))
        # the activation copy's last word in, as a register: S_ACT's cycle with every word got (its feeds and output
        # stage start on it)
        m.d.sync += all_in.eq(fsm.ongoing("S_ACT") & ~all_in & (Mux(act_tag, act_got + 1, act_got) == act_words))
        return m
