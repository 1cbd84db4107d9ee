"""Seeded random programs for differential testing of the RTL against the functional simulator.

A program is a few independent blocks; each loads operands from memory channel 0, runs one
instruction of some class (every MPE format and output mode, every SFU op, plain and gathered
DMA, SYS), and stores its result to another channel. Operands keep inside the ranges the numerics
define exactly (no int64 overflow in the reference); everything else is random: shapes,
addresses, strides, data, formats. Blocks use disjoint buffer regions and are joined only by the
wait/release tokens within each block, so the units overlap freely.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from flightc import numerics as nm
from flightc.compress.formats import WeightFormat, group_scale_max
from flightc.compress.packing import pack_weight, unpack_rows
from flightc.compress.quantize import QuantWeight
from flightc.compress.stream import ImageRows, check_stream, image_cols, image_rows, stream_image
from flightc.config import CoreView, PAIR_BYTES, Buffer, HardwareConfig, SparseEncoding
from flightc.errors import UnsupportedError
from flightc.isa.codec import Instruction, encode_program, make
from flightc.isa.footprint import norm_param_bytes, out_buffer, own_bank_place, own_banks, stream_shape, stripe_layout
from flightc.isa.table import SPARSITY_NM, MiscOp, Opcode, OutMode, SoftmaxPart, SysOp, Unit
from flightc.records import NORM, ROPE, SOFTMAX_STATS

SRC_CHANNEL = 0
OUT_BYTES = 1 << 14  # per output channel
LARGE_OUT_BYTES = 3 << 14  # per output channel with a tile of several readers' FIFOs (block_stream's large)


@dataclass
class RandomCase:
    seed: int
    images: dict[int, bytearray]
    instructions: list[Instruction] = field(default_factory=list)
    kinds: list[str] = field(default_factory=list)

    @property
    def program(self) -> bytes:
        return encode_program(self.instructions)

    @property
    def extent(self) -> dict[int, int]:
        return {ch: len(img) for ch, img in self.images.items()}


def random_weights(rng: np.random.Generator, fmt: WeightFormat, n: int, k: int, extreme: bool = False) -> np.ndarray:
    """Packed rows [n, row_bytes]: random values and multipliers within the ISA's rule (the largest often), valid
    sparse positions (distinct, ascending); ``extreme``: every stored value at its minimum, every multiplier the
    largest (the operands that stress the MACs' guard bits)."""
    lo, hi = -(1 << (fmt.bits - 1)), (1 << (fmt.bits - 1)) - 1
    q = np.full((n, k), lo) if extreme else rng.integers(lo, hi + 1, (n, k))
    keep = None
    if fmt.sparse:
        scores = rng.random((n, k // fmt.m, fmt.m))
        order = np.argsort(scores, axis=-1)[..., :fmt.n]
        keep = np.zeros((n, k // fmt.m, fmt.m), bool)
        np.put_along_axis(keep, order, True, axis=-1)
        keep = keep.reshape(n, k)
        q = np.where(keep, q, 0)
    gmax = group_scale_max(fmt.bits)
    shape = (n, k // fmt.group if fmt.group else 0)
    gs = np.full(shape, gmax) if extreme else rng.integers(0, gmax + 1, shape)
    if not extreme:
        gs[rng.random(gs.shape) < 0.2] = gmax
    return pack_weight(QuantWeight(fmt, q.astype(np.int8), gs.astype(np.uint8), np.ones(n), keep))


class _Builder:
    def __init__(self, cfg: HardwareConfig, seed: int):
        self.cfg = cfg if isinstance(cfg, CoreView) else cfg.core(0)  # the core the blocks are built for
        self.rng = np.random.default_rng(seed)
        # the encodings of sparse positions drawn apart, so a seed's program is the same whichever a config decodes
        self.encodings = np.random.default_rng([seed, len(SparseEncoding)])
        out_channels = list(range(1, cfg.mem_channels)) or [0]
        self.case = RandomCase(seed, {SRC_CHANNEL: bytearray()})
        for ch in out_channels:
            self.case.images[ch] = bytearray(OUT_BYTES) if ch != SRC_CHANNEL else bytearray()
        self.out_channels = out_channels
        self.out_used = {ch: 0 for ch in out_channels}
        self.buf_used = {b: 0 for b in Buffer}

    # ----- allocation
    def rand(self, lo: int, hi: int) -> int:
        return int(self.rng.integers(lo, hi + 1))

    def source(self, data: bytes) -> int:
        img = self.case.images[SRC_CHANNEL]
        img += bytes(self.rand(0, 7))
        addr = len(img)
        img += data
        return addr

    def buffer(self, b: Buffer, nbytes: int, align: int = 1) -> int:
        """Room for ``nbytes`` in a buffer; half the time at a buffer word, as compiled programs mostly are (the
        word-wide units' timing and their fetch pipeline depend on where operands start within a word)."""
        if align == 1 and self.rng.random() < 0.5:
            align = self.cfg.buffer_port_bytes
        addr = self.buf_used[b] + self.rand(0, 9)
        addr = -(-addr // align) * align
        if addr + nbytes > self.cfg.buffer_bytes(b):
            raise _Full()
        self.buf_used[b] = addr + nbytes
        return addr

    def output(self, nbytes: int) -> tuple[int, int]:
        ch = int(self.rng.choice(self.out_channels))
        addr = self.out_used[ch] + self.rand(0, 9)
        if addr + nbytes > OUT_BYTES:
            raise _Full()
        self.out_used[ch] = addr + nbytes
        return ch, addr

    # ----- instructions
    def emit(self, cls_name: str, /, **fields) -> None:
        self.case.instructions.append(make(cls_name, **fields))

    def load(self, b: Buffer, buf_addr: int, rows: int, row_bytes: int, buf_stride: int, data: bytes,
             release: int = 0) -> None:
        """LD ``rows`` rows of ``data`` (row-major, row_bytes each) with a random memory stride."""
        gap = self.rand(0, 5)
        hbm_stride = row_bytes + gap
        packed = b"".join(data[r * row_bytes:(r + 1) * row_bytes] + bytes(gap) for r in range(rows))
        addr = self.source(packed)
        self.emit("LD", buf=b, buf_addr=buf_addr, channel=SRC_CHANNEL, hbm_addr=addr, rows=rows, row_bytes=row_bytes,
                  hbm_stride=hbm_stride, buf_stride=buf_stride, release=release)

    def store(self, b: Buffer, buf_addr: int, rows: int, row_bytes: int, buf_stride: int, wait: int,
              pack4: bool = False) -> None:
        """ST of ``row_bytes`` memory bytes a row (with ``pack4``, from twice as many buffer bytes)."""
        gap = self.rand(0, 5)
        ch, addr = self.output(rows * (row_bytes + gap))
        self.emit("ST", buf=b, buf_addr=buf_addr, channel=ch, hbm_addr=addr, rows=rows, row_bytes=row_bytes,
                  hbm_stride=row_bytes + gap, buf_stride=buf_stride, wait=wait, pack4=int(pack4))

    def bytes_(self, n: int) -> bytes:
        return self.rng.integers(0, 256, n, dtype=np.uint8).tobytes()

    def weights(self, fmt: WeightFormat, n: int, k: int) -> bytes:
        """Packed rows with random values and multipliers; sparse positions valid (distinct, ascending)."""
        return random_weights(self.rng, fmt, n, k).tobytes()

    def ints(self, n: int, lo: int, hi: int, dtype: str) -> bytes:
        return self.rng.integers(lo, hi + 1, n).astype(dtype).tobytes()

    def encoded(self, fmt: WeightFormat, slots: int = 0) -> WeightFormat:
        """``fmt`` in one of the config's encodings of sparse positions (drawn when it has several), one whose
        chunks of ``slots`` columns are whole bytes when ``slots`` is given (a streamed tile's)."""
        options = [e for e in self.cfg.sparse_encodings if not slots or _streams(fmt.with_encoding(e), slots)]
        if not fmt.sparse or len(options) < 2:
            return fmt.with_encoding(options[0] if options else self.cfg.sparse_encodings[0])
        return fmt.with_encoding(options[int(self.encodings.integers(len(options)))])

    # ----- blocks
    def block_mpe(self) -> str:
        cfg, rand = self.cfg, self.rand
        # a fifth are shaped like compiled decode: aligned dense rows, a last row group of one chain, several
        # steps, so that a step's operands take as few words as they can (the MPE's fetch pipeline at its tightest)
        tight = self.rng.random() < 0.2
        mm = not tight and self.rng.random() < 0.6
        kmajor = not tight and self.rng.random() < 0.15
        sparsities = [s for s in SPARSITY_NM if _supported(cfg, WeightFormat(8, *SPARSITY_NM[s]))]
        if kmajor:  # INT8 or INT4 (the INT4 KV cache's V operands)
            fmt = WeightFormat(4 if self.rng.random() < 0.5 else 8)
        elif tight:
            fmt = WeightFormat(int(self.rng.choice(cfg.weight_bits)))
        else:
            bits = int(self.rng.choice(cfg.weight_bits))
            sp = sparsities[rand(0, len(sparsities) - 1)]
            n_, m_ = SPARSITY_NM[sp]
            group = 0 if bits == 8 or self.rng.random() < 0.3 else int(self.rng.choice([16, 32, 64]))
            fmt = self.encoded(WeightFormat(bits, n_, m_, group))
        k = 16 * rand(1, 8) if fmt.sparse or fmt.group or self.rng.random() < 0.5 else rand(1, 128)
        if fmt.group:
            k = -(-k // fmt.group) * fmt.group
        n = rand(1, 3 * cfg.mpe_chains)
        m = rand(1, 5) if mm else 1
        word = cfg.buffer_port_bytes if tight or self.rng.random() < 0.5 else 1  # rows a whole number of words apart
        if tight:
            k, n = cfg.chain_length * rand(2, 6), cfg.mpe_chains * rand(0, 2) + 1
        a_stride = -(-(k + rand(0, 6)) // word) * word
        a_addr = self.buffer(Buffer.ACT, (m - 1) * a_stride + k, word)
        a_unsigned = int(self.rng.random() < 0.3)
        w_buf = Buffer.KV if self.rng.random() < 0.3 else Buffer.WGT
        kmajor_bytes = (n * fmt.bits + 7) // 8  # one K step of a K-major operand
        if kmajor:
            w_stride = -(-(kmajor_bytes + rand(0, 6)) // word) * word
            w_addr = self.buffer(w_buf, (k - 1) * w_stride + kmajor_bytes)
        else:
            w_stride = -(-(fmt.row_bytes(k) + rand(0, 6)) // word) * word
            w_addr = self.buffer(w_buf, (n - 1) * w_stride + fmt.row_bytes(k), word)
        mode = OutMode(rand(0, 3))
        elem = 1 if mode is OutMode.REQ_I8 else 4
        out_buf = out_buffer(mode)
        out_stride = n * elem + rand(0, 6) if mm else 0
        out_addr = self.buffer(out_buf, (m - 1) * out_stride + n * elem)
        scale_addr = lut_addr = 0
        lut = 0
        unit = 1 << Unit.MPE
        self.load(Buffer.ACT, a_addr, m, k, a_stride, self.bytes_(m * k))
        if kmajor:
            self.load(w_buf, w_addr, k, kmajor_bytes, w_stride, self.bytes_(k * kmajor_bytes))
        else:
            self.load(w_buf, w_addr, n, fmt.row_bytes(k), w_stride, self.weights(fmt, n, k))
        if mode is not OutMode.ACC32:
            mult = self.rng.integers(1 << 30, 1 << 31, n)
            shift = self.rng.integers(14, 40, n)
            bias = self.rng.integers(-(1 << 20), 1 << 20, n)
            scale_addr = self.buffer(Buffer.PRM, nm.REQUANT_RECORD_BYTES * n)
            self.load(Buffer.PRM, scale_addr, 1, nm.REQUANT_RECORD_BYTES * n, 0, nm.pack_requant(mult, shift, bias))
            if mode is OutMode.REQ_I8 and self.rng.random() < 0.5:
                lut = 1
                lut_addr = self.buffer(Buffer.PRM, nm.LUT_ENTRIES)
                self.load(Buffer.PRM, lut_addr, 1, nm.LUT_ENTRIES, 0, self.bytes_(nm.LUT_ENTRIES))
        if mode is OutMode.REQ_ADD:
            self.load(Buffer.ACC, out_addr, m, 4 * n, out_stride,
                      b"".join(self.ints(n, -(1 << 31), (1 << 31) - 1, "<i4") for _ in range(m)))
        acc_addr = 0
        acc_in = int(self.rng.random() < 0.3)  # (ISA 1.11) the sums start from partial sums of other K columns
        if acc_in:
            acc_addr = self.buffer(Buffer.ACC, 4 * m * n)
            self.load(Buffer.ACC, acc_addr, 1, 4 * m * n, 0, self.ints(m * n, -(1 << 28), 1 << 28, "<i4"))
        self.case.instructions[-1] = self.case.instructions[-1].replace(release=unit)
        common = dict(n=n, k=k, a_addr=a_addr, a_unsigned=a_unsigned, w_buf=w_buf, w_addr=w_addr, w_kmajor=int(kmajor),
                      acc_in=acc_in, acc_addr=acc_addr,
                      w_stride=w_stride, w_bits=fmt.bits_code, sparsity=fmt.sparsity, sparse_enc=fmt.chosen,
                      group_log2=fmt.group_log2,
                      out_mode=mode, out_addr=out_addr, scale_addr=scale_addr, lut=lut, lut_addr=lut_addr,
                      wait=1 << Unit.LD, release=1 << Unit.ST)
        if mm:
            self.emit("MM", m=m, a_stride=a_stride, out_stride=out_stride, **common)
        else:
            self.emit("MV", **common)
        self.store(out_buf, out_addr, m, n * elem, out_stride, wait=unit)
        return (f"{'MM' if mm else 'MV'} {fmt.label()}{f' K-major INT{fmt.bits}' if kmajor else ''} {mode.name}"
                f"{' acc_in' if acc_in else ''}")

    def block_softmax_part(self) -> str:
        """A part of a blocked softmax (what block_misc draws now and then), its timing on its own."""
        return self.block_misc(MiscOp.SOFTMAX, parted=True)

    def block_misc(self, op: MiscOp | None = None, parted: bool | None = None) -> str:
        rand, rng = self.rand, self.rng
        op = MiscOp(rand(0, len(MiscOp) - 1)) if op is None else op
        rows = rand(1, 4)
        imm = shift = offset = window = prm_addr = src2_addr = given = stats_addr = first = 0
        part = SoftmaxPart.WHOLE
        in_place = False
        if op in (MiscOp.RMSNORM, MiscOp.LAYERNORM):
            cols = rand(1, 48)
            src_buf, esize, dst_buf, dsize = Buffer.ACC, 4, Buffer.ACT, 1
            data = self.ints(rows * cols, -(1 << 20), 1 << 20, "<i4")
            shift = rand(0, nm.NORM_SHIFT_MAX)
            eps, gain = self.rng.integers(0, (1 << 20) + 1, 1)[0], self.rng.integers(-(1 << 16), (1 << 16) + 1, cols)
            bias = self.rng.integers(-300, 301, cols) if op is MiscOp.LAYERNORM else None
            params = NORM.pack(eps, gain, bias)
            assert len(params) == norm_param_bytes(op, cols)
        elif op is MiscOp.SOFTMAX:
            cols = rand(max(1, rows), 40)
            src_buf, esize, dst_buf, dsize = Buffer.ACC, 4, Buffer.ACT, 1
            data = self.ints(rows * cols, -(1 << 16), 1 << 16, "<i4")
            imm, shift = rand(1, 1 << 16), rand(0, 16)
            offset = rand(0, cols - rows)
            window = 0 if rng.random() < 0.5 else rand(1, cols)
            if not parted and rng.random() < 0.4:  # each row's maximum past it (as MV.out_max leaves it): max_given
                x = np.frombuffer(data, "<i4").reshape(rows, cols)
                best = nm.softmax_row_max(x, offset, window).astype("<i4")
                data = np.concatenate([x, best[:, None]], 1).tobytes()
                given = 1
            elif parted or (parted is None and rng.random() < 0.5):  # a part of a blocked softmax (ISA 1.11)
                part = SoftmaxPart(rand(1, 3))
                first = int(part is not SoftmaxPart.NORM and rng.random() < 0.5)
                offset = rand(-rows, cols)  # rows may see none of the block
                x = np.frombuffer(data, "<i4").reshape(rows, cols)
                seen = nm.softmax_part_max(x, offset, window)
                stats = {"max": np.maximum(seen, nm.SCORE_NONE) + rng.integers(0, 1000, rows) * (seen > nm.SCORE_NONE),
                         "sum": rng.integers(0, 1 << 30, rows)}
                if part is SoftmaxPart.MAX:
                    stats["max"] = rng.integers(-(1 << 17), 1 << 17, rows)
                elif part is SoftmaxPart.NORM:  # a sum over every block: the row maximum's power at least
                    stats["sum"] = rng.integers(1 << 16, 1 << 28, rows)
                stats_addr = self.buffer(Buffer.ACC, SOFTMAX_STATS.size * rows)
                self.load(Buffer.ACC, stats_addr, 1, SOFTMAX_STATS.size * rows, 0, SOFTMAX_STATS.pack(rows, **stats))
        elif op is MiscOp.ROPE:
            d = int(rng.choice([2, 4, 8, 16]))
            cols = d * rand(1, 3)
            imm = d
            src_buf, esize, dst_buf, dsize = Buffer.ACT, 1, Buffer.ACT, 1
            data = self.bytes_(rows * cols)
            entry = np.iinfo(ROPE.entry)
            params = self.ints(rows * d, entry.min, entry.max, ROPE.entry)
            in_place = rng.random() < 0.5
        elif op is MiscOp.EMUL:
            cols = rand(1, 48)
            src_buf, esize, dst_buf, dsize = Buffer.ACT, 1, Buffer.ACT, 1
            data = self.bytes_(rows * cols)
            imm, shift = rand(1, 1 << 20), rand(0, 30)
            in_place = rng.random() < 0.3
        elif op is MiscOp.REQ:
            cols = rand(1, 48)
            src_buf, esize, dst_buf, dsize = Buffer.ACC, 4, Buffer.ACT, 1
            data = self.ints(rows * cols, -(1 << 31), (1 << 31) - 1, "<i4")
            imm, shift = rand(-(1 << 31) + 1, (1 << 31) - 1), rand(0, 40)
        else:  # DEQ, DEQ_ADD
            cols = rand(1, 48)
            src_buf, esize, dst_buf, dsize = Buffer.ACT, 1, Buffer.ACC, 4
            data = self.bytes_(rows * cols)
            imm, shift = rand(-(1 << 20), 1 << 20), rand(0, 20)
        row_bytes = cols * esize + 4 * given
        src_stride = row_bytes + rand(0, 6)
        src_addr = self.buffer(src_buf, (rows - 1) * src_stride + row_bytes)
        self.load(src_buf, src_addr, rows, row_bytes, src_stride, data)
        if op is MiscOp.EMUL:
            src2_addr = self.buffer(src_buf, (rows - 1) * src_stride + cols)
            self.load(src_buf, src2_addr, rows, cols, src_stride, self.bytes_(rows * cols))
        if op in (MiscOp.RMSNORM, MiscOp.LAYERNORM):
            prm_addr = self.buffer(Buffer.PRM, len(params))
            self.load(Buffer.PRM, prm_addr, 1, len(params), 0, params)
        if op is MiscOp.ROPE:
            row = ROPE.row_bytes(imm)
            prm_addr = self.buffer(Buffer.PRM, rows * row)
            self.load(Buffer.PRM, prm_addr, rows, row, row, params)
        if part in (SoftmaxPart.MAX, SoftmaxPart.SUM):  # the statistic made, over the one read (in place)
            dst_buf, dst_stride = Buffer.ACC, SOFTMAX_STATS.size
            dst_addr = stats_addr + SOFTMAX_STATS.field(part.name.lower()).offset
        elif in_place:
            dst_addr, dst_stride = src_addr, src_stride
        else:
            dst_stride = cols * dsize + rand(0, 6)
            dst_addr = self.buffer(dst_buf, (rows - 1) * dst_stride + cols * dsize)
        if op is MiscOp.DEQ_ADD:
            self.load(dst_buf, dst_addr, rows, 4 * cols, dst_stride,
                      self.ints(rows * cols, -(1 << 31), (1 << 31) - 1, "<i4"))
        self.case.instructions[-1] = self.case.instructions[-1].replace(release=1 << Unit.SFU)
        self.emit("MISC", op=op, rows=rows, cols=cols, src_buf=src_buf, src_addr=src_addr, src_stride=src_stride,
                  src2_addr=src2_addr, dst_buf=dst_buf, dst_addr=dst_addr, dst_stride=dst_stride, prm_addr=prm_addr,
                  imm=imm, shift=shift, offset=offset, window=window, max_given=given, part=part, first=first,
                  stats_addr=stats_addr, wait=1 << Unit.LD, release=1 << Unit.ST)
        if part is SoftmaxPart.WHOLE:
            self.store(dst_buf, dst_addr, rows, cols * dsize, dst_stride, wait=1 << Unit.SFU)
        elif part is SoftmaxPart.NORM:  # its probabilities
            self.store(dst_buf, dst_addr, rows, cols * dsize, dst_stride, wait=1 << Unit.SFU)
        else:  # the statistics it made
            self.store(Buffer.ACC, stats_addr, 1, SOFTMAX_STATS.size * rows, 0, wait=1 << Unit.SFU)
        parted = f" {part.name}{' first' if first else ''}" if part is not SoftmaxPart.WHOLE else ""
        return f"MISC {op.name}{' in place' if in_place else ''}{' max_given' if given else ''}{parted}"

    def block_dma(self) -> str:
        rand = self.rand
        b = Buffer(rand(0, len(Buffer) - 1))
        rows, row_bytes = rand(1, 6), rand(1, 70)
        buf_stride = row_bytes + rand(0, 9)
        addr = self.buffer(b, (rows - 1) * buf_stride + row_bytes)
        gather = self.rng.random() < 0.4
        if gather:
            table_rows = rand(2, 12)
            table_ch = int(self.rng.choice(self.out_channels)) if self.rng.random() < 0.5 else SRC_CHANNEL
            stride = row_bytes + rand(0, 5)
            table = self.bytes_(table_rows * stride)
            if table_ch == SRC_CHANNEL:
                t_addr = self.source(table)
            else:
                t_addr, img = self.out_used[table_ch], self.case.images[table_ch]
                if t_addr + len(table) > OUT_BYTES:
                    raise _Full()
                img[t_addr:t_addr + len(table)] = table
                self.out_used[table_ch] += len(table)
            blocks = {}
            block_log2 = rand(0, 2)
            if self.cfg.mem_channels > 1 and -(-table_rows >> block_log2) <= self.cfg.mem_channels \
                    and self.rng.random() < 0.4:  # the table cut in blocks of 2^block_log2 rows, a block a channel
                t_addr = self.blocked_table(table, table_rows, stride, block_log2)
                table_ch = SRC_CHANNEL
                blocks = dict(stripe=-(-table_rows >> block_log2), stripe_log2=block_log2)
            ids = self.rng.integers(0, table_rows, rows).astype("<i4").tobytes()
            src = self.case.images[SRC_CHANNEL]
            src += bytes(-len(src) % 4)  # INT32 ids, naturally aligned
            ids_addr = len(src)
            src += ids
            self.emit("LD", buf=b, buf_addr=addr, channel=table_ch, hbm_addr=t_addr, rows=rows, row_bytes=row_bytes,
                      hbm_stride=stride, buf_stride=buf_stride, gather=1, ids_addr=ids_addr, release=1 << Unit.ST,
                      **blocks)
        elif self.cfg.mem_channels > 1 and self.rng.random() < 0.3:
            return self.block_striped(b)
        else:
            self.load(b, addr, rows, row_bytes, buf_stride, self.bytes_(rows * row_bytes), release=1 << Unit.ST)
        if self.rng.random() < 0.3:
            self.emit("SYS", op=SysOp.NOP)
        pack4 = row_bytes >= 2 and self.rng.random() < 0.3  # the INT4 KV cache: two INT8 per memory byte
        self.store(b, addr, rows, row_bytes // 2 if pack4 else row_bytes, buf_stride, wait=1 << Unit.LD, pack4=pack4)
        return f"{'gather ' if gather else ''}LD/ST{'.pack4' if pack4 else ''} {b.name}"


    def blocked_table(self, table: bytes, table_rows: int, stride: int, block_log2: int) -> int:
        """A gather table's rows in blocks of 2^block_log2, block k on channel k, at one address on all of them."""
        per = (1 << block_log2) * stride
        used = -(-table_rows >> block_log2)
        src = self.case.images[SRC_CHANNEL]
        at = -(-max([len(src)] + [self.out_used[ch] for ch in range(1, used)]) // 8) * 8
        for k in range(used):
            piece = table[k * per:(k + 1) * per]
            if k == SRC_CHANNEL:
                src += bytes(at - len(src)) + piece
            else:
                if at + len(piece) > OUT_BYTES:
                    raise _Full()
                self.case.images[k][at:at + len(piece)] = piece
                self.out_used[k] = at + len(piece)
        return at

    def block_striped(self, b: Buffer) -> str:
        """One row striped over channels 0.. (a weight tile's layout: flightc.isa.footprint.stripe_layout), loaded
        by one LD and stored back to one channel; half the time laid as compiled rows are, each stripe unit into its
        master's buffer bank (footprint.own_banks: every LD lane writes its share; in a banked buffer), else anywhere
        (LD lane 0's)."""
        rand, cfg = self.rand, self.cfg
        stripe = rand(2, cfg.mem_channels)
        chans = len(cfg.core_channels)  # own banks: a stripe over the core's own channels
        own = (not chans & (chans - 1) and cfg.core_channels.start == SRC_CHANNEL and stripe <= chans
               and self.rng.random() < 0.5)  # laid out so (in a one-memory buffer: lane 0's)
        if own:
            unit_log2 = cfg.stripe_bytes.bit_length() - 1
            rounds = 1 if stripe < chans else rand(1, 2)
            row_bytes = rand(1, rounds * stripe * cfg.stripe_bytes)
        else:
            unit_log2 = rand(3, 7)
            row_bytes = rand(1, 700)
        data = self.bytes_(row_bytes)
        src = self.case.images[SRC_CHANNEL]
        unit = 1 << unit_log2
        at = max([len(src)] + [self.out_used[ch] for ch in range(1, stripe)])
        at = -(-at // unit) * unit + (rand(0, 7) if not own and self.rng.random() < 0.3 else 0)
        spans = stripe_layout(SRC_CHANNEL, at, row_bytes, stripe, unit)
        if any(ch != SRC_CHANNEL and at + n > OUT_BYTES for ch, _, n in spans):
            raise _Full()
        units = np.frombuffer(data + bytes(-row_bytes % unit), np.uint8).reshape(-1, unit)
        for k, (ch, _, n) in enumerate(spans):
            share = units[k::stripe].tobytes()[:n]
            if ch == SRC_CHANNEL:
                src += bytes(at - len(src)) + share
            else:
                self.case.images[ch][at:at + n] = share
                self.out_used[ch] = at + n
        addr = self.buffer(b, row_bytes, align=own_bank_place(cfg, SRC_CHANNEL)[0] if own else 1)
        ld = make("LD", buf=b, buf_addr=addr, channel=SRC_CHANNEL, hbm_addr=at, rows=1, row_bytes=row_bytes,
                  hbm_stride=row_bytes, buf_stride=row_bytes, stripe=stripe, stripe_log2=unit_log2,
                  release=1 << Unit.ST)
        own = own and b in cfg.banked_buffers
        assert own_banks(cfg, ld) == own
        self.case.instructions.append(ld)
        self.store(b, addr, 1, row_bytes, row_bytes, wait=1 << Unit.LD)
        return f"striped LD/ST {b.name} over {stripe}{' in own banks' if own else ''}"


    def block_stream(self, large: bool = False, rows: int | None = None, mode: OutMode | None = None) -> str:
        """A streamed MV (MV.w_stream): a tile's stream image striped over a power of two of masters' channels,
        any format, any output mode, on the core's own channels; ``large``: a weight tile (no K cache's) past what the
        readers' FIFOs hold."""
        cfg, rand = self.cfg, self.rand
        cpm, G = cfg.channels_per_master, cfg.axi_masters
        span = 1 << rand(0, G.bit_length() - 1)
        channel, stripe = cfg.core_channels.start + cpm * rand(0, G - span), span * cpm
        bits = int(self.rng.choice(cfg.weight_bits))
        sparsities = [sp for sp in SPARSITY_NM if _supported(cfg, WeightFormat(8, *SPARSITY_NM[sp]))]
        n_, m_ = SPARSITY_NM[sparsities[rand(0, len(sparsities) - 1)]]
        group = 0 if bits == 8 or self.rng.random() < 0.3 else int(self.rng.choice([16, 32, 64]))
        fmt = self.encoded(WeightFormat(bits, n_, m_, group), cfg.lane_slots)
        if self.rng.random() < 0.3 and set(cfg.weight_bits) >= {4, 8} and not large:  # a K cache: dense INT8/INT4
            fmt = WeightFormat(int(self.rng.choice([4, 8])), 16, 16)
        k = cfg.lane_slots * (rand(4, 8) if large else rand(1, 3))
        n = rows or (rand(24 * span, 48 * span) if large else rand(1, 6 * span))
        if large and not rows:  # each master's share past its reader's FIFO, by a quarter to a half
            probe = make("MV", n=n, k=k, w_bits=fmt.bits_code, sparsity=fmt.sparsity, sparse_enc=fmt.chosen,
                         group_log2=fmt.group_log2,
                         w_stream=1, w_channel=channel, w_stripe=stripe)
            fifo = cfg.lane_fifo_beats * cfg.axi_data_bytes
            pair_rows = 2 * span
            n = max(n, -(-n * fifo * rand(5, 6) // (4 * stream_shape(cfg, probe).group_bytes)) // pair_rows * pair_rows)
            while stream_shape(cfg, probe.replace(n=n)).group_bytes <= fifo:
                n += 4 * pair_rows
        dense = fmt.n == fmt.m and not fmt.group
        k_mv = rand(max(1, k - cfg.lane_slots + 1), k) if dense and self.rng.random() < 0.4 else k  # past K: zeros
        word = cfg.buffer_port_bytes
        a_addr = self.buffer(Buffer.ACT, k, word)  # the copy reads whole chunks
        mode = OutMode(rand(0, 3)) if mode is None else mode
        elem = 1 if mode is OutMode.REQ_I8 else 4
        out_buf = out_buffer(mode)
        pairs = mode is OutMode.ACC32 and self.rng.random() < 0.75  # raw sums a word of pairs a cycle (stream_out)
        out_max = int(mode is OutMode.ACC32 and self.rng.random() < 0.5)  # and their maximum past them
        out_bytes = n * elem + 4 * out_max
        out_addr = self.buffer(out_buf, out_bytes, PAIR_BYTES if pairs else elem)
        unit = 1 << Unit.MPE
        self.load(Buffer.ACT, a_addr, 1, k_mv, k_mv, self.bytes_(k_mv))
        scale_addr = lut_addr = lut = 0
        if mode is not OutMode.ACC32:
            scale_addr, lut, lut_addr = self.records(n, mode, lut_align=word)
        if mode is OutMode.REQ_ADD:
            self.load(Buffer.ACC, out_addr, 1, 4 * n, 0, self.ints(n, -(1 << 31), (1 << 31) - 1, "<i4"))
        self.case.instructions[-1] = self.case.instructions[-1].replace(release=unit)
        mv = make("MV", n=n, k=k_mv, a_addr=a_addr, a_unsigned=int(self.rng.random() < 0.3), w_bits=fmt.bits_code,
                  sparsity=fmt.sparsity, sparse_enc=fmt.chosen, group_log2=fmt.group_log2, out_mode=mode,
                  out_addr=out_addr,
                  scale_addr=scale_addr, lut=lut, lut_addr=lut_addr, wait=1 << Unit.LD, release=1 << Unit.ST,
                  w_stream=1, w_channel=channel, w_stripe=stripe, out_max=out_max)
        shape = stream_shape(cfg, mv)
        packed = np.frombuffer(self.weights(fmt, n, k), np.uint8).reshape(n, -1)
        image = np.frombuffer(stream_image(packed, shape), np.uint8)
        by_column = self.rng.random() < 0.5  # a V cache kept transposed: the image written a column at a time
        try:
            rows_alone = (image_cols if by_column else image_rows)(shape) if self.rng.random() < 0.5 and not large \
                else None
        except UnsupportedError:
            rows_alone = None
        if rows_alone is not None:  # a K cache: the image written a row at a time (ST.img) from rows in a buffer
            rows_at = self.rows_loaded(fmt, packed.T.copy() if by_column else packed, rows_alone)
        src = self.case.images[SRC_CHANNEL]
        used = [len(src) if ch == SRC_CHANNEL else self.out_used[ch] for ch in range(channel, channel + stripe)]
        at = -(-max(used) // shape.unit) * shape.unit
        if rows_alone is not None:
            image = np.zeros_like(image)
            if by_column:
                self.image_cols_stored(n, k, rows_alone, rows_at, channel, at)
            else:
                self.image_rows_stored(n, rows_alone, rows_at, channel, at)
            mv = mv.replace(wait=(1 << Unit.LD) | (1 << Unit.ST))
        units = image.reshape(-1, shape.unit)
        for j, (ch, _, nb) in enumerate(stripe_layout(channel, at, image.size, stripe, shape.unit)):
            share = units[j::stripe].tobytes()[:nb]
            if ch == SRC_CHANNEL:
                src += bytes(at - len(src)) + share
            else:
                if at + nb > (LARGE_OUT_BYTES if large else OUT_BYTES):
                    raise _Full()
                img = self.case.images[ch]
                img += bytes(max(0, at + nb - len(img)))
                img[at:at + nb] = share
                self.out_used[ch] = at + nb
        self.case.instructions.append(mv.replace(w_hbm_addr=at))
        self.store(out_buf, out_addr, 1, out_bytes, out_bytes, wait=unit)
        how = "" if rows_alone is None else " written by ST.img_col" if by_column else " written by ST.img"
        how += f" K {k_mv} of {k}" if k_mv != k else ""
        how += " with its maximum" if out_max else ""
        return f"streamed MV {fmt.label()} over {span} master(s) {mode.name}{how}"

    def rows_loaded(self, fmt: WeightFormat, packed: np.ndarray, rows: ImageRows) -> int:
        """LD dense rows (INT4 ones unpacked to INT8, as ST.pack4 takes them; INT8 ones transposed for columns) into
        WGT: their address."""
        n, k = packed.shape[0], packed.shape[1] if fmt.bits == 8 else rows.pieces * rows.piece_columns
        values = unpack_rows(packed, fmt, k).astype(np.int8) if fmt.bits == 4 else packed.view(np.int8)
        addr = self.buffer(Buffer.WGT, n * k)
        self.load(Buffer.WGT, addr, n, k, k, values.tobytes(), release=1 << Unit.ST)
        return addr

    def image_cols_stored(self, n: int, k: int, cols: ImageRows, addr: int, channel: int, at: int) -> None:
        """ST.img_col each of the ``k`` columns (rows of the transposed tile at ``addr``, ``n`` bytes each) into the
        stream image at ``at``; the last releases the MPE."""
        for t in range(k):
            self.emit("ST", buf=Buffer.WGT, buf_addr=addr + t * n, channel=channel, hbm_addr=at, rows=n, row_bytes=1,
                      hbm_stride=0, buf_stride=1, img=1, img_col=1, img_row=t, img_groups_log2=cols.groups_log2,
                      img_pair_log2=cols.pair_log2, img_half_log2=cols.half_log2,
                      img_stride_log2=cols.piece_stride.bit_length() - 1, wait=(1 << Unit.LD) if t == 0 else 0,
                      release=(1 << Unit.MPE) if t == k - 1 else 0)

    def image_rows_stored(self, n: int, rows: ImageRows, addr: int, channel: int, at: int) -> None:
        """ST.img each of the ``n`` rows at ``addr`` into the stream image at ``at``; the last releases the MPE."""
        fmt_bits4 = rows.piece_bytes < rows.piece_columns
        k = rows.pieces * rows.piece_columns
        for t in range(n):
            self.emit("ST", buf=Buffer.WGT, buf_addr=addr + t * k, channel=channel, hbm_addr=at, rows=rows.pieces,
                      row_bytes=rows.piece_bytes, hbm_stride=rows.piece_stride, buf_stride=rows.piece_columns,
                      pack4=int(fmt_bits4), img=1, img_row=t, img_groups_log2=rows.groups_log2,
                      img_pair_log2=rows.pair_log2, img_half_log2=rows.half_log2, wait=(1 << Unit.LD) if t == 0 else 0,
                      release=(1 << Unit.MPE) if t == n - 1 else 0)

    def records(self, n: int, mode: OutMode, lut_align: int = 1) -> tuple[int, int, int]:
        """Requantization records for ``n`` rows in PRM (and, for INT8 results half the time, a LUT):
        (scale_addr, lut, lut_addr)."""
        mult = self.rng.integers(1 << 30, 1 << 31, n)
        shift = self.rng.integers(14, 40, n)
        bias = self.rng.integers(-(1 << 20), 1 << 20, n)
        scale_addr = self.buffer(Buffer.PRM, nm.REQUANT_RECORD_BYTES * n)
        self.load(Buffer.PRM, scale_addr, 1, nm.REQUANT_RECORD_BYTES * n, 0, nm.pack_requant(mult, shift, bias))
        lut = lut_addr = 0
        if mode is OutMode.REQ_I8 and self.rng.random() < 0.5:
            lut = 1
            lut_addr = self.buffer(Buffer.PRM, nm.LUT_ENTRIES, lut_align)
            self.load(Buffer.PRM, lut_addr, 1, nm.LUT_ENTRIES, 0, self.bytes_(nm.LUT_ENTRIES))
        return scale_addr, lut, lut_addr


def _supported(cfg: HardwareConfig, fmt: WeightFormat) -> bool:
    """Whether ``cfg`` runs ``fmt`` (a sparse one in the config's first encoding)."""
    try:
        fmt.with_encoding(cfg.sparse_encodings[0]).check(cfg, "random", 16)
        return True
    except UnsupportedError:
        return False


def _streams(fmt: WeightFormat, slots: int) -> bool:
    try:
        check_stream(fmt, slots, slots)
        return True
    except UnsupportedError:
        return False


class _Full(Exception):
    """A block did not fit in what is left of a buffer or an output channel."""


BLOCKS = ("mpe", "misc", "dma")


def random_case(cfg: HardwareConfig, seed: int, blocks: int | None = None, streams: bool = False) -> RandomCase:
    """The program and memory images of one seed (deterministic); ``streams`` adds streamed MVs to the blocks
    drawn (the performance model does not time them yet)."""
    b = _Builder(cfg, seed)
    _random_blocks(b, blocks if blocks is not None else b.rand(1, 4), BLOCKS + (("stream",) if streams else ()))
    if b.rng.random() < 0.3:
        b.emit("SYS", op=SysOp.BARRIER, arg=b.rand(0, 5))
    b.emit("SYS", op=SysOp.END)
    _pad_source(b)
    return b.case


def _random_blocks(b: _Builder, count: int, kinds: tuple[str, ...]) -> None:
    """``count`` blocks of random kinds; one that does not fit what is left is dropped."""
    for _ in range(count):
        kind = kinds[b.rand(0, len(kinds) - 1)]
        mark = (len(b.case.instructions), len(b.case.images[SRC_CHANNEL]), dict(b.buf_used), dict(b.out_used))
        try:
            b.case.kinds.append(getattr(b, f"block_{kind}")())
        except _Full:
            del b.case.instructions[mark[0]:]
            del b.case.images[SRC_CHANNEL][mark[1]:]
            b.buf_used, b.out_used = mark[2], mark[3]


def _pad_source(b: _Builder) -> None:
    img = b.case.images[SRC_CHANNEL]
    img += bytes(-len(img) % 8 or 0)
    if not img:
        img += bytes(8)


@dataclass
class MultiCoreCase:
    """One stream per core over shared memory images."""

    seed: int
    images: dict[int, bytearray]
    streams: list[list[Instruction]]
    kinds: list[list[str]]

    @property
    def programs(self) -> list[bytes]:
        return [encode_program(s) for s in self.streams]

    @property
    def extent(self) -> dict[int, int]:
        return {ch: len(img) for ch, img in self.images.items()}


def on_first_core(cfg: HardwareConfig, case: RandomCase) -> MultiCoreCase:
    """A one-core case on core 0 of a kernel of several, the others ending at once (its barrier, if it drew one, a NOP:
    no other core would meet it)."""
    first = [make("SYS", op=SysOp.NOP) if i.opcode is Opcode.SYS and i.op == SysOp.BARRIER else i
             for i in case.instructions]
    rest = [[make("SYS", op=SysOp.END)] for _ in range(cfg.num_cores - 1)]
    return MultiCoreCase(case.seed, case.images, [first, *rest], [case.kinds] + [[] for _ in rest])


def random_multicore_case(cfg: HardwareConfig, seed: int, blocks: int | None = None) -> MultiCoreCase:
    """A program per core (deterministic per seed): each core stores a random row block to an exchange region, runs
    random blocks of its own, meets the others at one to three barriers in a row, then copies the next core's
    exchange region into an output of its own. The copy is right only if the barriers ordered the other core's
    store before this core's load; a barrier passed too early or never shows as a wrong byte or a hang."""
    b = _Builder(cfg, seed)
    P = cfg.num_cores
    streams: list[list[Instruction]] = []
    kinds: list[list[str]] = []
    exchanged: list[tuple[int, int, int]] = []  # per core: (channel, address, bytes) of its exchange region
    buffers = []
    for c in range(P):  # each core's own buffers, its stream built on the builder's
        b.cfg = cfg.core(c)
        b.case.instructions, b.case.kinds, b.buf_used = [], [], {x: 0 for x in Buffer}
        rows, row_bytes = b.rand(1, 4), b.rand(1, 48)
        addr = b.buffer(Buffer.ACT, rows * row_bytes)
        b.load(Buffer.ACT, addr, rows, row_bytes, row_bytes, b.bytes_(rows * row_bytes), release=1 << Unit.ST)
        ch, at = b.output(rows * row_bytes)
        b.emit("ST", buf=Buffer.ACT, buf_addr=addr, channel=ch, hbm_addr=at, rows=1, row_bytes=rows * row_bytes,
               hbm_stride=rows * row_bytes, buf_stride=rows * row_bytes, wait=1 << Unit.LD, release=1 << Unit.SYS)
        exchanged.append((ch, at, rows * row_bytes))
        _random_blocks(b, blocks if blocks is not None else b.rand(0, 3), BLOCKS)
        streams.append(b.case.instructions)
        kinds.append(b.case.kinds)
        buffers.append(b.buf_used)
    barriers = b.rand(1, 3)
    for c in range(P):
        b.case.instructions, b.buf_used = streams[c], buffers[c]
        for k in range(barriers):  # the first waits for the exchange's store, the last lets the load go
            b.emit("SYS", op=SysOp.BARRIER, arg=k, wait=(1 << Unit.ST) * (k == 0),
                   release=(1 << Unit.LD) * (k == barriers - 1))
        ch, at, n = exchanged[(c + 1) % P]
        addr = b.buffer(Buffer.ACT, n)
        b.emit("LD", buf=Buffer.ACT, buf_addr=addr, channel=ch, hbm_addr=at, rows=1, row_bytes=n, hbm_stride=n,
               buf_stride=n, wait=1 << Unit.SYS, release=1 << Unit.ST)
        out_ch, out_at = b.output(n)
        b.emit("ST", buf=Buffer.ACT, buf_addr=addr, channel=out_ch, hbm_addr=out_at, rows=1, row_bytes=n,
               hbm_stride=n, buf_stride=n, wait=1 << Unit.LD)
        b.emit("SYS", op=SysOp.END)
        kinds[c].append(f"{barriers} barrier(s), core {(c + 1) % P}'s {n} bytes copied")
    _pad_source(b)
    return MultiCoreCase(seed, b.case.images, streams, kinds)


def block_case(cfg: HardwareConfig, seed: int, kind: str) -> RandomCase:
    """A program of one block of ``kind`` (one of BLOCKS, or "stream"): an instruction's timing on its own."""
    b = _Builder(cfg, seed)
    b.case.kinds.append(getattr(b, f"block_{kind}")())
    b.emit("SYS", op=SysOp.END)
    img = b.case.images[SRC_CHANNEL]
    img += bytes(-len(img) % 8)
    if not img:
        img += bytes(8)
    return b.case


def stream_pair_case(cfg: HardwareConfig, seed: int) -> RandomCase | None:
    """Two streamed MVs back to back, every load before them and every store after both (no other unit shares a
    buffer port with them): the second one's tokens are in before the first one starts, so its readers start
    ahead of it where both tiles fit the readers' FIFOs (hw/mpe.py). None where a block writes its tile with ST.img
    (a store between the loads and the MVs)."""
    b = _Builder(cfg, seed)
    for _ in range(2):
        b.case.kinds.append(b.block_stream())
    body = b.case.instructions
    if any(i.opcode is Opcode.ST and i.img for i in body):
        return None
    loads = [i.replace(release=0) for i in body if i.opcode is Opcode.LD]
    loads[-1] = loads[-1].replace(release=1 << Unit.MPE)  # LD finishes in order: every load is in by then
    mvs = [i for i in body if i.opcode is Opcode.MV]
    mvs = [mvs[0].replace(wait=1 << Unit.LD, release=0), mvs[1].replace(wait=0, release=1 << Unit.ST)]
    stores = [i.replace(wait=0) for i in body if i.opcode is Opcode.ST]
    stores[0] = stores[0].replace(wait=1 << Unit.MPE)  # ST is in order: both wait for the second MV
    b.case.instructions = loads + mvs + stores
    b.emit("SYS", op=SysOp.END)
    img = b.case.images[SRC_CHANNEL]
    img += bytes(-len(img) % 8)
    return b.case


def stream_early_case(cfg: HardwareConfig, seed: int) -> RandomCase:
    """An SFU operation, then a streamed MV that waits for it and whose tile no instruction writes (MV.w_early): the
    MPE is idle while the SFU works, so the MV's readers read its tile ahead, as far as their FIFOs hold it (the
    tile is more than that). Every load comes first, every store after the MV."""
    for attempt in range(64):  # a draw whose buffers and channels hold it
        b = _Builder(cfg, seed + 1000 * attempt)
        try:
            b.case.kinds.append(b.block_misc())
            b.case.kinds.append(b.block_stream(large=True))
            break
        except _Full:
            continue
    body = b.case.instructions
    loads = [i.replace(release=0) for i in body if i.opcode is Opcode.LD]
    loads[-1] = loads[-1].replace(release=(1 << Unit.MPE) | (1 << Unit.SFU))  # LD finishes in order
    misc = next(i for i in body if i.opcode is Opcode.MISC).replace(wait=1 << Unit.LD,
                                                                      release=(1 << Unit.MPE) | (1 << Unit.ST))
    mv = next(i for i in body if i.opcode is Opcode.MV).replace(wait=(1 << Unit.LD) | (1 << Unit.SFU),
                                                                 release=1 << Unit.ST, w_early=1)
    stores = [i for i in body if i.opcode is Opcode.ST]  # ST is in order: both after the MV (no port shared with it)
    stores = [stores[0].replace(wait=(1 << Unit.SFU) | (1 << Unit.MPE)), stores[1].replace(wait=0)]
    b.case.instructions = loads + [misc, mv] + stores
    b.emit("SYS", op=SysOp.END)
    img = b.case.images[SRC_CHANNEL]
    img += bytes(-len(img) % 8)
    return b.case


def opcode_mix(case: RandomCase) -> dict[str, int]:
    out: dict[str, int] = {}
    for ins in case.instructions:
        out[ins.cls.name] = out.get(ins.cls.name, 0) + 1
    return out
