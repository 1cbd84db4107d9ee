"""A lane group: the MACs of one weight stream, two output rows per DSP48E2 against one shared activation.

Batch-1 decode is a matrix-vector product, so FlightLLM's packing (one weight, two tokens) does nothing for it;
here each of the ``slots`` DSP48E2 slots multiplies one activation ``a[c]`` by two weights of one column, one per
row of a *row pair*, packed into its 27-bit A operand: ``(q1 << PACK_SHIFT) + q0`` times ``a`` gives
``q1*a << PACK_SHIFT`` plus ``q0*a``. ``CASCADE`` slots add their products inside the DSPs (the PCIN cascade);
then the two fields are split, the lower one sign-corrected (``lo`` = the low ``PACK_SHIFT`` bits as a signed
number, ``hi = (sum - lo) >> PACK_SHIFT``), which is exact while the lower field's sum stays inside its
``PACK_SHIFT`` bits: the cascade is as long as 8-bit weights against unsigned activations allow.

Group multipliers (at most ``group_scale_max(bits)``, an ISA rule) multiply the partial sum of each
``SEGMENT``-column segment, so the DSPs see the stored q, not q x multiplier: the sum is the same integer
``flightc.compress.packing.unpack_rows`` defines. Sparse N:M weights are expanded back to dense columns in the
stream (zero insertion): every slot multiplies its own column's activation, with no activation multiplexer.

The group takes a chunk a cycle (``flightc.compress.stream``: ``slots`` columns of a row pair) and never stalls;
the activation vector lives in the group's own copy (written once per vector, read a word per chunk), so no net
fans one activation out to thousands of slots. A row pair's two dot products come out ``LANE_GROUP_LATENCY``
cycles after its last chunk came in (hw/latency_rules.py): each stage registered so that no path between registers
is deeper than 225 MHz allows (the cascades in two steps of DSP48E2s, each segment's sum, its multiplier in a
DSP48E2 of its own, the partial sums, the accumulator).
"""
from __future__ import annotations

from typing import Callable

from amaranth.hdl import Cat, Const, Module, Mux, Signal, Value, signed
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from flightc.compress.formats import WeightFormat, pattern_supported
from flightc.config import HardwareConfig, SparseEncoding
from flightc.compress.stream import SEGMENT, check_stream, chunk_bytes, row_part_bytes, stored_per_chunk
from flightc.errors import UnsupportedError
from flightc.hw import lut6
from flightc.hw.arith import tree
from flightc.hw.dsp48e2 import PACK_SHIFT, cascade_sum, registered_product
from flightc.hw.latency_rules import CASCADE_LATENCY, LANE_GROUP_LATENCY, PRODUCT_LATENCY
from flightc.isa.table import SPARSITY_NM, WEIGHT_BITS, Sparsity, WeightBits

CASCADE = 4  # slots whose packed products add up in the DSPs before the fields are split
PRODUCT_MAX = 128 * 255  # largest |q x a|: an 8-bit q (down to -128) times an unsigned 8-bit activation
if CASCADE * PRODUCT_MAX >= 1 << (PACK_SHIFT - 1):
    raise AssertionError("the lower field of a packed cascade would overflow")  # a constant changed: redo the sums
SEGMENT_BITS = PACK_SHIFT + (SEGMENT // CASCADE).bit_length()  # a segment's sum of cascade fields, with its carries


# the encodings of sparse positions the generator builds decoders for: a rank would take an unranking table (C(16, 8)
# = 12,870 entries of 16 bits) read for every block of every row at line rate, which no block RAM port count allows
RTL_ENCODINGS = (SparseEncoding.POSITIONS, SparseEncoding.BITMASK)



def candidates(c: int, n: int, block: int) -> range:
    """The stored values of an N:``block`` row that can land in column ``c``: a block's stored values ascend by
    position (an ISA rule), so the j-th lies in columns j .. block - n + j of its block."""
    local = c % block
    return range(max(0, local - (block - n)), min(local, n - 1) + 1)


# the low bits of a bitmask's counts that a column's choice reads: its candidates are consecutive, so the count
# modulo 8 tells up to eight apart, as many as any N:M the ISA names has
COUNT_BITS = 3
if max(len(candidates(c, n, m)) for n, m in SPARSITY_NM.values() if n < m for c in range(m)) > 1 << COUNT_BITS:
    raise AssertionError("a column's candidates outnumber what COUNT_BITS of its count tell apart")

Kinds = tuple[tuple[int, int, int, SparseEncoding], ...]  # (bits, n, m, encoding) of the formats a lane group builds


def config_kinds(cfg: HardwareConfig) -> Kinds:
    """The formats ``cfg``'s compiler accepts, so the only ones its lane groups need to dequantize: every sparsity
    pattern and every encoding of its positions costs each slot a zero-insertion mux."""
    return tuple((bits, n, m, e) for bits in WEIGHT_BITS.values() if bits in cfg.weight_bits
                 for n, m in SPARSITY_NM.values() if pattern_supported(cfg, n, m, bits)
                 for e in (cfg.sparse_encodings if n != m else (SparseEncoding.POSITIONS,)))


Format = tuple[WeightBits, Sparsity, SparseEncoding, WeightFormat]


def formats(slots: int, kinds: Kinds | None = None) -> list[Format]:
    """Every weight format the ISA names and the generator decodes that cuts into chunks of ``slots`` columns (of
    ``kinds``, if given)."""
    out = []
    for code, bits in WEIGHT_BITS.items():
        for sp, (n, m) in SPARSITY_NM.items():
            for enc in (RTL_ENCODINGS if n != m else (SparseEncoding.POSITIONS,)):
                if kinds is not None and (bits, n, m, enc) not in kinds:
                    continue
                fmt = WeightFormat(bits, n, m, encoding=enc)
                try:
                    check_stream(fmt, slots, slots)
                except UnsupportedError:
                    continue
                out.append((code, sp, enc, fmt))
    return out


def insertion_bits(fmts: list[Format]) -> int:
    """How wide a lane group's zero insertion is: the widest of ``fmts`` stored N:M (0: none). Their values
    sign-extended to it and back are the same numbers."""
    return max((f[3].bits for f in fmts if f[3].sparse), default=0)


def format_case(sparsity: Value, bits_code: Value, encoding: Value,
                fmts: list[Format]) -> tuple[Value, Callable[[Format], int]]:
    """What a switch over the fields of ``fmts`` takes, and the case value of each format: the encoding of the
    positions only where ``fmts`` have more than one (a decoder of fewer inputs, a LUT level less)."""
    by_encoding = len({f[2] for f in fmts}) > 1

    def case(f: Format) -> int:
        code, sp, enc, _ = f
        return int(sp) | int(code) << len(sparsity) | (int(enc) << (len(sparsity) + len(bits_code)) if by_encoding
                                                        else 0)

    return (Cat(sparsity, bits_code, encoding) if by_encoding else Cat(sparsity, bits_code)), case


def chunk_layout(slots: int, kinds: Kinds | None = None) -> data.StructLayout:
    """One chunk on the group's input: its bytes (the widest format's), each row's segment multipliers, and
    whether it opens or closes its row pair."""
    widest = max(chunk_bytes(f[3], slots) for f in formats(slots, kinds))
    return data.StructLayout({"bytes": 8 * widest, "gs": 8 * 2 * (slots // SEGMENT), "first": 1, "last": 1})


class LaneGroup(wiring.Component):
    """``slots`` DSP48E2 slots, a row pair at a time; ``act_words`` words of ``slots`` activations in its copy;
    ``kinds``: the weight formats it dequantizes (every one the ISA names by default)."""

    def __init__(self, slots: int, act_words: int, acc_bits: int = 32, kinds: Kinds | None = None):
        every = [f for f in formats(slots) if f[2] is SparseEncoding.POSITIONS]
        if slots % SEGMENT or len(every) < len(WEIGHT_BITS) * len(SPARSITY_NM):
            raise UnsupportedError(f"lane group of {slots} slots: use a multiple of 64 (whole bytes of every "
                                   f"format's chunk, whole {SEGMENT}-column segments)")
        if not formats(slots, kinds):
            raise UnsupportedError(f"lane group: no weight format among {kinds}")
        self.slots, self.act_words, self.acc_bits, self.kinds = slots, act_words, acc_bits, kinds
        result = data.StructLayout({"row0": signed(acc_bits), "row1": signed(acc_bits)})
        super().__init__({
            "chunk": In(stream.Signature(chunk_layout(slots, kinds), always_ready=True)),
            "act_we": In(1), "act_addr": In(range(act_words)), "act_data": In(8 * slots),
            "bits_code": In(WeightBits), "sparsity": In(Sparsity), "sparse_enc": In(SparseEncoding),
            "a_unsigned": In(1), "grouped": In(1),
            "result": Out(stream.Signature(result, always_ready=True)),
        })

    def _dequantize(self, m: Module, raw, q0: list, q1: list, arriving) -> None:
        """The chunk's stored values and positions -> each column's signed q for both rows (zeros where a sparse
        row stores nothing): first each stored value and position (or mask bit) out of its format's bit fields,
        then, by the N:M pattern and the encoding alone, each column picks the stored value that is its own (zero
        insertion): the one whose position is the column's, or, from a bitmask, the one the count of the block's
        set bits before the column names, where the column's own bit is set. The counts (their low ``COUNT_BITS``,
        :func:`flightc.hw.lut6.prefix_counts`) are taken a cycle ahead, from the ``arriving`` chunk (stage 0), and
        registered beside it: counting and choosing in one cycle is deeper than 225 MHz allows (a one-hot choice
        registered instead, measured: fewer LUTs, 8.5 levels). The insertion moves only the sparse formats' values,
        as wide as the widest of them (``sparse_bits``), and sign-extends the one it chose."""
        S = self.slots
        vals = [[Signal(signed(8), name=f"v{r}_{j}") for j in range(S)] for r in range(2)]
        pos = [[Signal(4, name=f"p{r}_{j}") for j in range(S // 2)] for r in range(2)]  # sparse rows store <= S/2
        fmts = formats(S, self.kinds)
        # (a copy of the sparse formats' values apart from the dense ones measured 4% more LUTs with positions)
        width = insertion_bits(fmts)
        mask = [Signal(S, name=f"mask{r}") for r in range(2)]
        mask0 = [Signal(S, name=f"mask0_{r}") for r in range(2)]  # the arriving chunk's
        key, case = format_case(self.sparsity, self.bits_code, self.sparse_enc, fmts)
        with m.Switch(key):
            for f in fmts:
                _, _, enc, fmt = f
                with m.Case(case(f)):
                    vb, ib = row_part_bytes(fmt, S)
                    b, w = fmt.bits, fmt.index_bits
                    for r in range(2):
                        at = 8 * r * (vb + ib)
                        part = raw[at:at + 8 * (vb + ib)]
                        for j in range(stored_per_chunk(fmt, S)):
                            m.d.comb += vals[r][j].eq(part[b * j:b * (j + 1)].as_signed())
                            if fmt.sparse and enc is SparseEncoding.POSITIONS:
                                m.d.comb += pos[r][j].eq(part[8 * vb + w * j:8 * vb + w * (j + 1)])
        # a bitmask's bits where its format puts them, the other formats' bits left as they fall: the counts and the
        # zeroing read them only for a bitmask, so no format's case zeroes them on the way (a LUT level less)
        at_mask = [(f, [8 * r * sum(row_part_bytes(f[3], S)) + 8 * row_part_bytes(f[3], S)[0] for r in range(2)])
                   for f in fmts if f[3].sparse and f[2] is SparseEncoding.BITMASK]
        for r in range(2):
            offsets = {ats[r] for _, ats in at_mask}
            if len(offsets) == 1:
                (at,) = offsets
                m.d.comb += [mask[r].eq(raw[at:at + S]), mask0[r].eq(arriving.payload.bytes[at:at + S])]
            elif offsets:
                with m.Switch(key):
                    for f, ats in at_mask[1:]:
                        with m.Case(case(f)):
                            m.d.comb += [mask[r].eq(raw[ats[r]:ats[r] + S]),
                                         mask0[r].eq(arriving.payload.bytes[ats[r]:ats[r] + S])]
                    with m.Default():
                        at = at_mask[0][1][r]
                        m.d.comb += [mask[r].eq(raw[at:at + S]), mask0[r].eq(arriving.payload.bytes[at:at + S])]
        present = {(sp, enc) for _, sp, enc, f in fmts}

        # from a bitmask: each column's count of its block's set bits before it, per row, taken from the arriving
        # chunk's mask and registered beside it
        before = [[Signal(COUNT_BITS, name=f"before{r}_{c}") for c in range(S)] for r in range(2)]
        with m.If(arriving.valid):
            with m.Switch(self.sparsity):
                for sp in sorted({sp for sp, enc in present if enc is SparseEncoding.BITMASK}):
                    n, block = SPARSITY_NM[sp]
                    with m.Case(int(sp)):
                        for r in range(2):
                            for b0 in range(0, S, block):
                                counts = lut6.prefix_counts(m, f"before{int(sp)}_{r}_{b0}",
                                                            [mask0[r][b0 + i] for i in range(block)], COUNT_BITS)
                                for local, n_before in enumerate(counts):
                                    m.d.sync += before[r][b0 + local].eq(n_before)
        by_mask = Signal()
        m.d.comb += by_mask.eq(self.sparse_enc == SparseEncoding.BITMASK)
        with m.Switch(self.sparsity):
            for sp in sorted({sp for sp, _ in present}):
                n, block = SPARSITY_NM[sp]
                with m.Case(int(sp)):
                    for r, q in enumerate((q0, q1)):
                        for c in range(S):
                            if n == block:
                                m.d.comb += q[c].eq(vals[r][c])
                                continue
                            first, local = (c // block) * n, c % block
                            js = candidates(c, n, block)
                            narrow = [vals[r][first + j][:width] for j in js]
                            by_pos = tree([Mux(pos[r][first + j] == local, v, 0) for j, v in zip(js, narrow)],
                                          lambda x, y: x | y)
                            if (sp, SparseEncoding.BITMASK) not in present:
                                m.d.comb += q[c].eq(by_pos.as_signed())
                                continue
                            # the count picks the value: consecutive candidates differ in its low bits, so those
                            # select among them through LUT6 4:1 multiplexers, and the column's own bit zeroes it
                            # (measured on 8:16 at the u280's widths: 7,250 -> 5,994 LUT by bitmasks alone, 4,586 at
                            # sparse_bits [4]; decoding both encodings 9,484 -> 10,295, an AND-OR of count compares
                            # shared with the positions' 11,449)
                            low = (len(js) - 1).bit_length()
                            words = [next((v for j, v in zip(js, narrow) if j % (1 << low) == k), narrow[0])
                                     for k in range(1 << low)]
                            chosen = (lut6.select(m, f"ins{int(sp)}_{r}_{c}", before[r][c][:low], words) if low
                                      else narrow[0])
                            by_bits = Mux(mask[r][c], chosen, 0)
                            if (sp, SparseEncoding.POSITIONS) not in present:
                                m.d.comb += q[c].eq(by_bits.as_signed())
                            else:
                                m.d.comb += q[c].eq(Mux(by_mask, by_bits, by_pos).as_signed())

    def elaborate(self, platform):
        m = Module()
        S, N_SEG, N_CAS = self.slots, self.slots // SEGMENT, self.slots // CASCADE
        m.submodules.acts = acts = Memory(shape=8 * S, depth=self.act_words, init=[])
        wr = acts.write_port()
        rd = acts.read_port()
        m.d.comb += [wr.en.eq(self.act_we), wr.addr.eq(self.act_addr), wr.data.eq(self.act_data)]
        # ---- stage 0: the chunk arrives; its activations are read from the copy (the column counter is its address)
        col = Signal(range(self.act_words + 1))
        here = Mux(self.chunk.payload.first, 0, col)
        m.d.comb += [rd.en.eq(self.chunk.valid), rd.addr.eq(here)]
        v1 = Signal()
        c1 = Signal.like(self.chunk.payload)
        m.d.sync += v1.eq(self.chunk.valid)
        with m.If(self.chunk.valid):
            m.d.sync += [c1.eq(self.chunk.payload), col.eq(here + 1)]
        # ---- stage 1: dequantize, zero-insert, multiply two rows per slot; each cascade's packed sum
        q0 = [Signal(signed(8), name=f"q0_{c}") for c in range(S)]
        q1 = [Signal(signed(8), name=f"q1_{c}") for c in range(S)]
        self._dequantize(m, c1.bytes, q0, q1, arriving=self.chunk)
        byte = [rd.data[8 * c:8 * c + 8] for c in range(S)]
        act = [Mux(self.a_unsigned, Cat(a, Const(0, 1)), Cat(a, a[7])).as_signed() for a in byte]
        # each cascade's DSP48E2s: the pre-adder packs a slot's two rows' weights, (q1 << PACK_SHIFT) + q0, into the
        # multiplier's operand, and PCIN adds the products up (hw/dsp48e2.py); the sums come CASCADE_LATENCY cycles on
        cas = [cascade_sum(m, f"cascade{i}", [(q0[c], q1[c], act[c]) for c in range(CASCADE * i, CASCADE * (i + 1))],
                           PACK_SHIFT) for i in range(N_CAS)]
        # the chunk's multipliers and row-pair marks travel beside the products
        tag = data.StructLayout({"gs": len(c1.gs), "first": 1, "last": 1})
        stage = [Signal(tag, name="tag1")]
        valid = [v1]
        m.d.comb += stage[0].eq(Cat(c1.gs, c1.first, c1.last))
        for k in range(CASCADE_LATENCY + 1 + PRODUCT_LATENCY + 1):
            nxt, nv = Signal(tag, name=f"tag{k + 2}"), Signal(name=f"v{k + 2}")
            m.d.sync += [nxt.eq(stage[-1]), nv.eq(valid[-1])]
            stage.append(nxt)
            valid.append(nv)
        at_sums = CASCADE_LATENCY  # index in stage/valid of the cycle the cascades' sums are there
        # ---- the sums: split each cascade's fields; each segment's sum, registered
        # lo = the low PACK_SHIFT bits as a signed number; the upper field is (sum - lo) >> PACK_SHIFT, that is the
        # bits above plus one where lo is negative: the ones are added once per segment (a count of the cascades'
        # sign bits) instead of an incrementer per cascade. Both fields stay within PACK_SHIFT bits (the cascade's
        # bound above), so the upper one is read from the next PACK_SHIFT bits alone.
        lo = [Signal(signed(PACK_SHIFT), name=f"lo{i}") for i in range(N_CAS)]
        hi = [Signal(signed(PACK_SHIFT), name=f"hi{i}") for i in range(N_CAS)]
        for i in range(N_CAS):
            m.d.comb += [lo[i].eq(cas[i][:PACK_SHIFT].as_signed()),
                         hi[i].eq(cas[i][PACK_SHIFT:2 * PACK_SHIFT].as_signed())]
        per_seg = SEGMENT // CASCADE
        seg = [[Signal(signed(SEGMENT_BITS), name=f"seg{r}_{s}") for s in range(N_SEG)] for r in range(2)]
        for r, field in enumerate((lo, hi)):
            for s in range(N_SEG):
                total = tree(field[per_seg * s:per_seg * (s + 1)])
                if r == 1:
                    total = total + tree([lo[i][-1] for i in range(per_seg * s, per_seg * (s + 1))])
                m.d.sync += seg[r][s].eq(total)
        # ---- each segment's sum times its multiplier (1 where the format has none), in a DSP48E2
        at_seg = at_sums + 1
        products = []
        for r in range(2):
            for s in range(N_SEG):
                gs = stage[at_seg].gs[8 * (r * N_SEG + s):8 * (r * N_SEG + s + 1)]
                mult = Mux(self.grouped, Cat(gs, Const(0, 1)), 1).as_signed()
                products.append(registered_product(m, f"scaled{r}_{s}", seg[r][s], mult))
        # ---- the chunk's partial sums
        at_products = at_seg + PRODUCT_LATENCY
        partial = [Signal(signed(self.acc_bits), name=f"partial{r}") for r in range(2)]
        for r in range(2):
            m.d.sync += partial[r].eq(tree([p[:self.acc_bits].as_signed() for p in products[r * N_SEG:(r + 1) * N_SEG]]))
        # ---- accumulate the row pair; its sums leave the cycle after its last chunk's
        at_partial = at_products + 1
        acc = [Signal(signed(self.acc_bits), name=f"acc{r}") for r in range(2)]
        done = Signal()
        last = stage[at_partial]
        m.d.sync += done.eq(valid[at_partial] & last.last)
        with m.If(valid[at_partial]):
            for r in range(2):
                m.d.sync += acc[r].eq(Mux(last.first, 0, acc[r]) + partial[r])
        m.d.comb += [self.result.valid.eq(done), self.result.payload.row0.eq(acc[0]),
                     self.result.payload.row1.eq(acc[1])]
        if 1 + at_partial + 1 != LANE_GROUP_LATENCY:  # c1, the stages after it, then `done`
            raise AssertionError("the lane group's stages and hw/latency_rules.py disagree")
        return m
