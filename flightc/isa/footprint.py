"""Which bytes an instruction reads and writes: the memory semantics of the ISA.

The compiler's token pass uses it to find dependencies between units; the functional
simulator uses it to check that every read is ordered after the write it depends on.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from flightc.compress.formats import GROUP_MAX, GROUP_MIN, WeightFormat
from flightc.compress.stream import StreamShape
from flightc.config import Buffer, HardwareConfig, SparseEncoding
from flightc.errors import ProgramError, UnsupportedError
from flightc.numerics import LUT_ENTRIES, REQUANT_RECORD_BYTES
from flightc.records import NORM, ROPE, SOFTMAX_STATS
from flightc.isa.codec import Instruction
from flightc.isa.table import SPARSITY_NM, WEIGHT_BITS, MiscOp, Opcode, OutMode, SoftmaxPart, Sparsity, WeightBits

Space = tuple[str, int]  # ("buf", Buffer) or ("hbm", channel)


@dataclass(frozen=True)
class Access:
    """``rows`` runs of ``width`` bytes, ``stride`` apart, from ``addr`` in ``space``."""

    space: Space
    addr: int
    rows: int
    width: int
    stride: int

    @property
    def lo(self) -> int:
        return self.addr

    @property
    def hi(self) -> int:
        """One past the last byte."""
        return self.addr + (self.rows - 1) * self.stride + self.width if self.rows and self.width else self.addr

    def overlaps(self, other: "Access") -> bool:
        """Conservative: do the spans intersect (strided gaps are ignored)."""
        return self.space == other.space and self.lo < other.hi and other.lo < self.hi

    @property
    def contiguous(self) -> bool:
        return self.rows <= 1 or self.stride == self.width

    def intersects(self, other: "Access") -> bool:
        """Exact: do the two share a byte (strided gaps respected)."""
        if not self.overlaps(other):
            return False
        if self.contiguous and other.contiguous:
            return True
        return bool(np.intersect1d(self.indices(), other.indices(), assume_unique=False).size)

    def indices(self) -> np.ndarray:
        """Every byte's address, in row order (read-only: shared between equal accesses)."""
        return byte_indices(self.addr, self.rows, self.width, self.stride)


class AccessIndex:
    """Accesses by space, each with what it belongs to, for finding one that shares a byte with another access
    (spans compared at once, strided gaps respected for those that overlap)."""

    def __init__(self, items) -> None:
        self.items: dict[Space, list] = {}
        for a, owner in items:
            self.items.setdefault(a.space, []).append((a, owner))
        self.spans = {sp: (np.array([a.lo for a, _ in v]), np.array([a.hi for a, _ in v]))
                      for sp, v in self.items.items()}

    def first(self, a: Access):
        """(access, owner) of the first indexed access sharing a byte with ``a``, or None."""
        return next(self.sharing(a), None)

    def sharing(self, a: Access):
        """Every (access, owner) indexed that shares a byte with ``a``, in the order they were indexed."""
        if a.space not in self.spans:
            return
        lo, hi = self.spans[a.space]
        for k in np.flatnonzero((lo < a.hi) & (a.lo < hi)):
            if self.items[a.space][k][0].intersects(a):
                yield self.items[a.space][k]


@lru_cache(maxsize=1 << 16)
def byte_selector(addr: int, rows: int, width: int, stride: int) -> tuple[slice | np.ndarray, int]:
    """How to index ``rows`` runs of ``width`` bytes ``stride`` apart from ``addr`` (a slice where they are one
    run, else :func:`byte_indices`), and one past the last byte (``addr`` when there are none)."""
    if not rows or not width:
        return slice(addr, addr), addr
    end = addr + (rows - 1) * stride + width
    if rows == 1 or stride == width:
        return slice(addr, end), end
    return byte_indices(addr, rows, width, stride), end


@lru_cache(maxsize=1 << 14)
def byte_indices(addr: int, rows: int, width: int, stride: int) -> np.ndarray:
    """The address of every byte of ``rows`` runs of ``width`` bytes ``stride`` apart from ``addr``, in row order
    (read-only: shared between equal accesses)."""
    r = np.arange(rows, dtype=np.int64)[:, None] * stride
    out = (addr + r + np.arange(width, dtype=np.int64)[None, :]).ravel()
    out.setflags(write=False)
    return out


def buf(b: Buffer | int) -> Space:
    return ("buf", int(Buffer(b)))


def hbm(channel: int) -> Space:
    return ("hbm", int(channel))


def weight_format(ins: Instruction) -> WeightFormat:
    n, m = SPARSITY_NM[Sparsity(ins.sparsity)]
    encoding = SparseEncoding(ins.sparse_enc)
    if n == m and encoding is not SparseEncoding.POSITIONS:
        raise ProgramError(f"{ins.opcode.name}: dense weights with sparse_enc {encoding.name}; dense weights store "
                           f"no positions (sparse_enc POSITIONS)")
    return WeightFormat(bits=WEIGHT_BITS[WeightBits(ins.w_bits)], n=n, m=m,
                        group=(1 << ins.group_log2) if ins.group_log2 else 0, encoding=encoding)


def streamed(ins: Instruction) -> bool:
    """Whether an MV's weights stream from memory into the lane groups (MV.w_stream)."""
    return ins.opcode is Opcode.MV and bool(ins.w_stream)


def stream_k(cfg: HardwareConfig, ins: Instruction) -> int:
    """The columns a streamed MV's tile holds: K, or for dense, ungrouped rows K rounded up to whole chunks (the
    lane groups multiply the columns past K by zero activations)."""
    fmt, S = weight_format(ins), cfg.lane_slots
    if fmt.n == fmt.m and not fmt.group:
        return -(-ins.k // S) * S
    return ins.k


def stream_shape(cfg: HardwareConfig, ins: Instruction) -> StreamShape:
    """How a streamed MV's tile lies in memory and feeds the lane groups: a group per master of its channels."""
    per = cfg.channels_per_master
    if ins.w_buf or ins.w_addr or ins.w_stride or ins.w_kmajor:
        raise ProgramError("a streamed MV (w_stream) takes no buffer operand: w_buf, w_addr, w_stride and w_kmajor "
                           "must be zero")
    groups = ins.w_stripe // per
    if ins.w_stripe < 1 or ins.w_stripe % per or ins.w_channel % per or ins.w_channel + ins.w_stripe > cfg.mem_channels \
            or groups & (groups - 1):
        raise ProgramError(f"a streamed MV over channels {ins.w_channel}..{ins.w_channel + ins.w_stripe - 1}: it must "
                           f"cover a power of two of whole masters ({per} channel(s) each) of the {cfg.mem_channels}")
    if ins.w_hbm_addr % cfg.stripe_bytes or ins.a_addr % cfg.buffer_port_bytes:
        raise ProgramError(f"a streamed MV's tile starts at a multiple of stripe_bytes ({cfg.stripe_bytes}) on each "
                           f"channel and its activations at a buffer word ({cfg.buffer_port_bytes} bytes): "
                           f"w_hbm_addr {ins.w_hbm_addr}, a_addr {ins.a_addr}")
    elem = out_elem_bytes(OutMode(ins.out_mode))
    if ins.out_addr % elem or (ins.lut and ins.lut_addr % cfg.buffer_port_bytes):
        raise ProgramError(f"a streamed MV's results start at a multiple of their size ({elem} bytes) and its LUT at "
                           f"a buffer word ({cfg.buffer_port_bytes} bytes): out_addr {ins.out_addr}, lut_addr "
                           f"{ins.lut_addr}")
    k = stream_k(cfg, ins)
    if k > cfg.lane_k_max:
        raise ProgramError(f"a streamed MV's K = {ins.k} exceeds the {cfg.lane_k_max} activations a lane group's copy "
                           f"holds (lane_act_kib {cfg.lane_act_kib})")
    try:
        return StreamShape(weight_format(ins), ins.n, k, ins.w_stripe // per, cfg.lane_slots, cfg.axi_data_bytes,
                           cfg.stripe_bytes, ins.w_stripe)
    except UnsupportedError as e:
        raise ProgramError(f"a streamed MV: {e}") from None


def check_max_fields(ins: Instruction) -> None:
    """MV.out_max only on a streamed MV's raw sums, MISC.max_given only on SOFTMAX (ISA 1.7); an MM's or MV's group
    size within the ISA's (none, or GROUP_MIN to GROUP_MAX columns: the hardware builds those alone)."""
    if ins.opcode in (Opcode.MM, Opcode.MV) and ins.group_log2 and not GROUP_MIN <= 1 << ins.group_log2 <= GROUP_MAX:
        raise ProgramError(f"{ins.opcode.name}.group_log2 = {ins.group_log2}: groups of {1 << ins.group_log2} columns; "
                           f"the ISA's are {GROUP_MIN} to {GROUP_MAX} (group_log2 0 for none)")
    if ins.opcode is Opcode.MV and ins.out_max and (not ins.w_stream or OutMode(ins.out_mode) is not OutMode.ACC32):
        raise ProgramError("MV.out_max writes the largest raw sum of a streamed MV: it needs w_stream and ACC32")
    if ins.opcode in (Opcode.MM, Opcode.MV) and ins.acc_in and streamed(ins):
        raise ProgramError("MV.acc_in: a streamed MV's output stage takes no partial sums (ISA 1.11); split its K "
                           "over MVs through a buffer, or stream the whole K")
    if ins.opcode in (Opcode.MM, Opcode.MV) and ins.acc_addr and not ins.acc_in:
        raise ProgramError(f"{ins.opcode.name}.acc_addr = {ins.acc_addr} without acc_in: it must be zero")
    if ins.opcode is Opcode.MV and ins.w_early and not ins.w_stream:
        raise ProgramError("MV.w_early lets a streamed tile's readers start before the MV's waits: it needs w_stream")
    if ins.opcode is Opcode.MISC and ins.max_given and MiscOp(ins.op) is not MiscOp.SOFTMAX:
        raise ProgramError(f"MISC.max_given is SOFTMAX's row maximum: {MiscOp(ins.op).name} takes none")
    if ins.opcode is Opcode.MISC:
        part = SoftmaxPart(ins.part)
        if part is not SoftmaxPart.WHOLE and (MiscOp(ins.op) is not MiscOp.SOFTMAX or ins.max_given):
            raise ProgramError(f"MISC.part {part.name} is a part of a blocked SOFTMAX: not with "
                               f"{'max_given' if ins.max_given else MiscOp(ins.op).name}")
        if part is SoftmaxPart.WHOLE and (ins.first or ins.stats_addr):
            raise ProgramError("MISC.first and stats_addr belong to a part of a blocked SOFTMAX: zero without one")
        if part is SoftmaxPart.NORM and ins.first:
            raise ProgramError("MISC.first belongs to a MAX or SUM part: a NORM part adds to no statistic")
        if part in (SoftmaxPart.MAX, SoftmaxPart.SUM) and Buffer(ins.dst_buf) is not Buffer.ACC:
            raise ProgramError(f"SOFTMAX part {part.name} writes the rows' {part.name.lower()} (an INT32 a row at dst) "
                               f"into ACC: dst_buf must be ACC, not {Buffer(ins.dst_buf).name}")


def stream_spans(cfg: HardwareConfig, ins: Instruction) -> list[tuple[int, int, int]]:
    """(channel, address, bytes) of each channel's share of a streamed MV's tile."""
    shape = stream_shape(cfg, ins)
    return stripe_layout(ins.w_channel, ins.w_hbm_addr, shape.nbytes, ins.w_stripe, shape.unit)


def partial_sums(ins: Instruction) -> Access:
    """The INT32 partial sums an MM or MV with acc_in starts from (ISA 1.11): a packed row of n per activation row."""
    return Access(buf(Buffer.ACC), ins.acc_addr, mpe_shape(ins)[0], 4 * ins.n, 4 * ins.n)


def mpe_shape(ins: Instruction) -> tuple[int, int, int]:
    """(m, a_stride, out_stride), with MV's implicit single row."""
    if ins.opcode is Opcode.MM:
        return ins.m, ins.a_stride, ins.out_stride
    return 1, 0, 0


def mpe_macs(ins: Instruction) -> int:
    """Useful multiply-accumulates of an MM/MV: stored weights only (a sparse row's pruned zeros are not work)."""
    m, _, _ = mpe_shape(ins)
    return m * ins.n * (ins.k if ins.w_kmajor else weight_format(ins).nnz(ins.k))


def kmajor_row_bytes(ins: Instruction) -> int:
    """Bytes of one K step of a K-major operand: n values of w_bits each."""
    return (ins.n * WEIGHT_BITS[WeightBits(ins.w_bits)] + 7) // 8


def out_buffer(mode: OutMode) -> Buffer:
    """Where an MV or MM's output stage writes: ACT for INT8 results, ACC for INT32 ones."""
    return Buffer.ACT if mode is OutMode.REQ_I8 else Buffer.ACC


MPE_OUT_BUFFERS = frozenset(out_buffer(mode) for mode in OutMode)


def out_elem_bytes(mode: OutMode) -> int:
    return 1 if mode is OutMode.REQ_I8 else 4


def striped(ins: Instruction) -> bool:
    """Whether an LD's row is striped over several channels (a gather's table is cut in blocks instead)."""
    return ins.opcode is Opcode.LD and ins.stripe > 1 and not ins.gather


def own_banks(cfg: HardwareConfig, ins: Instruction) -> bool:
    """Whether a striped LD's row lands each stripe unit in the buffer bank of its channel's master, so that every
    master's LD lane writes its own share (hw/load.py; otherwise LD lane 0 moves the whole row, through each unit's
    master in turn): units of ``stripe_bytes`` starting at a multiple of it in memory, the row's buffer address
    ``channel`` stripe units past a multiple of the core's channels' worth of them, the stripe on the core's own
    channels, and the row within one round of the stripe unless the stripe spans as many channels as the core's
    masters serve, into a buffer cut in banks (``banked_buffers``). ``cfg`` is the core's
    (:meth:`HardwareConfig.core`). The buffer bank of byte a is ``(a // bank_bytes) % axi_masters``
    (:attr:`HardwareConfig.bank_bytes`, a bank per master of the core's own); each beat is then one whole buffer
    word."""
    sb, own = cfg.stripe_bytes, cfg.core_channels
    chans = len(own)
    if (not striped(ins) or chans & (chans - 1) or Buffer(ins.buf) not in cfg.banked_buffers
            or ins.channel < own.start or ins.channel + ins.stripe > own.stop):
        return False
    period, offset = own_bank_place(cfg, ins.channel)
    return (1 << ins.stripe_log2 == sb and ins.hbm_addr % sb == 0 and ins.buf_addr % period == offset
            and (ins.row_bytes <= ins.stripe * sb or ins.stripe == chans))


def own_bank_place(cfg: HardwareConfig, channel: int) -> tuple[int, int]:
    """(period, offset): where in a buffer of core ``cfg`` (:meth:`HardwareConfig.core`) a striped row from
    ``channel`` starts for :func:`own_banks` — ``offset`` bytes past a multiple of ``period``: a stripe unit per
    channel its masters serve."""
    chans = len(cfg.core_channels)
    return chans * cfg.stripe_bytes, channel % chans * cfg.stripe_bytes


def stripe_layout(channel: int, addr: int, nbytes: int, stripe: int, unit: int) -> list[tuple[int, int, int]]:
    """(channel, address, bytes) of each channel's share of ``nbytes`` striped over ``stripe`` channels from
    ``channel``, ``unit`` bytes at a time: on channel ``channel + k`` units k, k + stripe, k + 2 stripe, ... lie one
    after another from ``addr``."""
    units = -(-nbytes // unit)
    spans = []
    for k in range(min(stripe, units)):
        mine = len(range(k, units, stripe))
        spans.append((channel + k, addr, mine * unit - (unit * units - nbytes if (units - 1) % stripe == k else 0)))
    return spans


def striped_bytes(images: dict[int, bytes], channel: int, addr: int, nbytes: int, stripe: int, unit: int) -> bytes:
    """The ``nbytes`` a region striped as :func:`stripe_layout` says holds, read back from per-channel images."""
    shares = [bytes(images[ch][at:at + n]) for ch, at, n in stripe_layout(channel, addr, nbytes, max(1, stripe), unit)]
    units = -(-nbytes // unit)
    return b"".join(shares[i % len(shares)][(i // len(shares)) * unit:(i // len(shares) + 1) * unit]
                    for i in range(units))[:nbytes]


def _image_places(cfg: HardwareConfig, ins: Instruction, rows: np.ndarray, col: int) -> list[tuple[int, int]]:
    """(channel, address) of byte ``col`` of each image row in ``rows`` of an ST.img's stream image."""
    pair = rows >> 1
    group = pair & ((1 << ins.img_groups_log2) - 1)
    S = cfg.lane_slots
    o = (((pair >> ins.img_groups_log2) << ins.img_pair_log2) + ((rows & 1) << ins.img_half_log2)
         + ((col // S) << ins.img_stride_log2) + col % S)
    per, unit = cfg.channels_per_master, cfg.stripe_bytes
    n = o // unit
    channel = ins.channel + group * per + n % per
    addr = ins.hbm_addr + (n // per) * unit + o % unit
    return list(zip(channel.tolist(), addr.tolist()))


def store_rows(cfg: HardwareConfig | None, ins: Instruction) -> list[tuple[int, int]]:
    """(channel, address) of each row an ST writes: its own rows, or with ``img`` where they lie in the image."""
    if not ins.img:
        return [(ins.channel, ins.hbm_addr + r * ins.hbm_stride) for r in range(ins.rows)]
    if cfg is None:
        raise ValueError("where an ST.img row lies depends on the hardware config's masters and stripe_bytes")
    if ins.img_col:
        if ins.row_bytes != 1 or ins.pack4:
            raise ProgramError(f"ST.img_col writes one INT8 byte a row, not {ins.row_bytes} byte(s)"
                               f"{' packed to INT4' if ins.pack4 else ''}")
        return _image_places(cfg, ins, np.arange(ins.rows, dtype=np.int64), ins.img_row)
    [(channel, addr)] = _image_places(cfg, ins, np.array([ins.img_row], np.int64), 0)
    unit = cfg.stripe_bytes
    if ins.rows and addr % unit + (ins.rows - 1) * ins.hbm_stride + ins.row_bytes > unit:
        raise ProgramError(f"ST.img: image row {ins.img_row}'s {ins.rows} piece(s) of {ins.row_bytes} bytes, "
                           f"{ins.hbm_stride} apart, run past the {unit}-byte unit they start in")
    return [(channel, addr + r * ins.hbm_stride) for r in range(ins.rows)]


def store_target(cfg: HardwareConfig | None, ins: Instruction) -> tuple[int, int]:
    """(channel, address) of an ST's first row."""
    rows = store_rows(cfg, ins)
    return rows[0] if rows else (ins.channel, ins.hbm_addr)


def stripe_spans(ins: Instruction) -> list[tuple[int, int, int]]:
    """Each channel's share of a striped LD's row (:func:`stripe_layout`)."""
    return stripe_layout(ins.channel, ins.hbm_addr, ins.row_bytes, ins.stripe, 1 << ins.stripe_log2)


def gather_channel(ins: Instruction, ident: int) -> tuple[int, int]:
    """(channel, address) of table row ``ident`` of a gather LD: with ``stripe``, the table is cut in blocks of
    ``2^stripe_log2`` rows, block b on channel ``channel + b`` at ``hbm_addr``."""
    if ins.stripe > 1:
        return ins.channel + (ident >> ins.stripe_log2), ins.hbm_addr + (ident & ((1 << ins.stripe_log2) - 1)) * ins.hbm_stride
    return ins.channel, ins.hbm_addr + ident * ins.hbm_stride


def footprint(ins: Instruction, cfg: HardwareConfig | None = None) -> tuple[list[Access], list[Access]]:
    """(reads, writes) of one instruction (a streamed MV's tile and an ST.img row depend on the config's masters,
    lanes and stripe_bytes)."""
    op = ins.opcode
    if striped(ins):
        return ([Access(hbm(ch), addr, 1, n, 0) for ch, addr, n in stripe_spans(ins)],
                [Access(buf(ins.buf), ins.buf_addr, 1, ins.row_bytes, ins.buf_stride)])
    if op in (Opcode.LD, Opcode.ST):
        channel, addr = store_target(cfg, ins) if op is Opcode.ST else (ins.channel, ins.hbm_addr)
        mem = Access(hbm(channel), addr, ins.rows, ins.row_bytes, ins.hbm_stride)
        onchip = Access(buf(ins.buf), ins.buf_addr, ins.rows, ins.row_bytes, ins.buf_stride)
        if op is Opcode.ST:
            if ins.pack4:
                onchip = Access(buf(ins.buf), ins.buf_addr, ins.rows, 2 * ins.row_bytes, ins.buf_stride)
            if ins.img and ins.img_col:  # a byte a row, each where its image row lies: a run per channel
                by_channel: dict[int, list[int]] = {}
                for ch, a in store_rows(cfg, ins):
                    by_channel.setdefault(ch, []).append(a)
                return [onchip], [acc for ch, addrs in by_channel.items() for acc in _byte_runs(hbm(ch), addrs)]
            return [onchip], [mem]
        if ins.gather:  # the rows read depend on the ids: see gather_rows
            return [Access(hbm(0), ins.ids_addr, 1, 4 * ins.rows, 0)], [onchip]
        return [mem], [onchip]
    if op in (Opcode.MM, Opcode.MV):
        m, a_stride, out_stride = mpe_shape(ins)
        reads = [Access(buf(Buffer.ACT), ins.a_addr, m, ins.k, a_stride)]
        if streamed(ins):
            if cfg is None:
                raise ValueError("a streamed MV's footprint needs the hardware config")
            reads += [Access(hbm(ch), addr, 1, n, 0) for ch, addr, n in stream_spans(cfg, ins)]
        elif ins.w_kmajor:
            reads.append(Access(buf(ins.w_buf), ins.w_addr, ins.k, kmajor_row_bytes(ins), ins.w_stride))
        else:
            reads.append(Access(buf(ins.w_buf), ins.w_addr, ins.n, weight_format(ins).row_bytes(ins.k), ins.w_stride))
        mode = OutMode(ins.out_mode)
        if mode is not OutMode.ACC32:
            reads.append(Access(buf(Buffer.PRM), ins.scale_addr, 1, REQUANT_RECORD_BYTES * ins.n, 0))
        if ins.lut:
            reads.append(Access(buf(Buffer.PRM), ins.lut_addr, 1, LUT_ENTRIES, 0))
        if ins.acc_in:
            reads.append(partial_sums(ins))
        out_buf = out_buffer(mode)
        out = Access(buf(out_buf), ins.out_addr, m, out_elem_bytes(mode) * ins.n, out_stride)
        if mode is OutMode.REQ_ADD:
            reads.append(out)
        if op is Opcode.MV and ins.out_max:  # the largest sum, just past them
            return reads, [out, Access(buf(out_buf), ins.out_addr + 4 * ins.n, 1, 4, 0)]
        return reads, [out]
    if op is Opcode.MISC:
        return misc_footprint(ins)
    return [], []


def _byte_runs(space: Space, addrs: list[int]) -> list[Access]:
    """Single bytes at ``addrs`` as one strided access where they are evenly spaced, else one access each."""
    step = addrs[1] - addrs[0] if len(addrs) > 1 else 0
    if step > 0 and all(b - a == step for a, b in zip(addrs, addrs[1:])):
        return [Access(space, addrs[0], len(addrs), 1, step)]
    return [Access(space, a, 1, 1, 0) for a in addrs]


def gather_rows(ins: Instruction, ids: list[int]) -> list[Access]:
    """The table rows a gather LD reads, once its ids are known."""
    return [Access(hbm(ch), addr, 1, ins.row_bytes, 0) for ch, addr in (gather_channel(ins, int(t)) for t in ids)]


MISC_SRC_BYTES = {MiscOp.RMSNORM: 4, MiscOp.LAYERNORM: 4, MiscOp.SOFTMAX: 4, MiscOp.REQ: 4}  # others read INT8
MISC_DST_BYTES = {MiscOp.DEQ: 4, MiscOp.DEQ_ADD: 4}  # others write INT8


def norm_param_bytes(op: MiscOp, cols: int) -> int:
    """PRM bytes of a norm's parameters (flightc.records.NORM)."""
    return NORM.nbytes(op is MiscOp.LAYERNORM, cols)


def misc_footprint(ins: Instruction) -> tuple[list[Access], list[Access]]:
    rows, cols = ins.rows, ins.cols
    mop = MiscOp(ins.op)
    src_elem = MISC_SRC_BYTES.get(mop, 1)
    dst_elem = MISC_DST_BYTES.get(mop, 1)
    given = 4 if mop is MiscOp.SOFTMAX and ins.max_given else 0  # each row's maximum, just past it
    reads = [Access(buf(ins.src_buf), ins.src_addr, rows, cols * src_elem + given, ins.src_stride)]
    part = SoftmaxPart(ins.part) if mop is MiscOp.SOFTMAX else SoftmaxPart.WHOLE
    if part is not SoftmaxPart.WHOLE:  # the rows' statistics: the fields read, then those written
        stats = {name: Access(buf(Buffer.ACC), ins.stats_addr + SOFTMAX_STATS.field(name).offset, rows, 4,
                              SOFTMAX_STATS.size) for name in ("max", "sum")}
        if part is SoftmaxPart.NORM:
            return reads + [stats["max"], stats["sum"]], [Access(buf(ins.dst_buf), ins.dst_addr, rows, cols,
                                                                 ins.dst_stride)]
        stat = Access(buf(ins.dst_buf), ins.dst_addr, rows, 4, ins.dst_stride)  # the statistic made, a row's at dst
        if part is SoftmaxPart.MAX:
            return reads + ([] if ins.first else [stats["max"]]), [stat]
        return reads + [stats["max"]] + ([] if ins.first else [stats["sum"]]), [stat]
    if mop is MiscOp.EMUL:
        reads.append(Access(buf(ins.src_buf), ins.src2_addr, rows, cols, ins.src_stride))
    if mop in (MiscOp.RMSNORM, MiscOp.LAYERNORM):
        reads.append(Access(buf(Buffer.PRM), ins.prm_addr, 1, norm_param_bytes(mop, cols), 0))
    if mop is MiscOp.ROPE:
        reads.append(Access(buf(Buffer.PRM), ins.prm_addr, rows, ROPE.row_bytes(ins.imm), ROPE.row_bytes(ins.imm)))
    writes = [Access(buf(ins.dst_buf), ins.dst_addr, rows, cols * dst_elem, ins.dst_stride)]
    if mop is MiscOp.DEQ_ADD:
        reads.append(writes[0])
    return reads, writes
