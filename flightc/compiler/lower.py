"""Pass ``lower``: one forward step (L new tokens at positions p0..p0+L-1) -> one instruction list per core.

Prefill is L = prompt length at p0 = 0; decode is L = 1 at the token's position. A linear layer whose
weights stream (``flightc.compiler.memory.stream_plan``) is one streamed MV per token and row tile; one
through the WGT buffer is an MM (or an MV for one token) per tile. INT8 V is kept transposed in the cache
(a row per head dimension), so P.V is a row-major MV. The lowering walks the fused IR in topological
order and gives every tensor an on-chip home (INT8 in ACT, INT32 in ACC), freed after its last use. Always on chip: within a step,
activations and the residual stream never leave the buffers; only new K/V rows of the cache, the
final logits and (with several cores) the slices exchanged between cores are stored. Wait/release
tokens are added afterwards by the ``tokens`` pass.

With P cores, each linear layer is split by output rows and attention by KV heads. A tensor that a
core holds only a slice of is exchanged when an op needs all of it: each core stores its slice (a layer
adding into the residual, a tile at a time as it makes it), meets the others at a SYS BARRIER and loads
the other cores' slices back.
"""
from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from typing import Callable

from flightc import numerics as nm
from flightc.compiler.memory import (KeyImage, LinearTiles, MemoryMap, Region, ValueImages, core_channels,
                                     exchange_pieces, kv_row_bytes, norm_region)
from flightc.config import Buffer, HardwareConfig
from flightc.errors import OnChipError, UnsupportedError
from flightc.ir.graph import LUT_ACTIVATIONS, GraphIR, OpKind, Stage
from flightc.isa.codec import Instruction, make
from flightc.isa.footprint import Access, hbm, norm_param_bytes, own_bank_place
from flightc.isa.table import MiscOp, Opcode, OutMode, SoftmaxPart, SysOp, WeightBits
from flightc.records import NORM, ROPE, SOFTMAX_STATS

log = logging.getLogger(__name__)

ALIGN = 16
# attention score and probability buffers per head in flight: the heads whose Q.K^T the MPE makes ahead of a
# head's softmax and P.V are one fewer (decode's streamed attention, :meth:`StepLowering.pipelined_heads`)
PIPELINE_DEPTH = 3


def key_block(cfg: HardwareConfig, length: int) -> int:
    """K/V rows a step of ``length`` tokens takes into a softmax at a time: as many whole buffer words of columns as
    have their scores in an eighth of ACC and their probabilities in an eighth of ACT. A window longer than that
    runs as a blocked softmax over blocks of them (MISC SOFTMAX.part, P.V summed over the blocks by MM.acc_in)."""
    w = cfg.buffer_port_bytes
    fit = min(cfg.buffer_bytes(Buffer.ACC) // 8 // (4 * length), cfg.buffer_bytes(Buffer.ACT) // 8 // length)
    return max(w, fit // w * w)


def blocked_attention(cfg: HardwareConfig, mem: MemoryMap, length: int, window: int) -> bool:
    """Whether a step's attention over ``window`` K/V rows runs as a blocked softmax: longer than a key block, with
    keys and values kept as rows (those kept as stream images stream a token at a time, the whole row's scores on
    chip)."""
    return window > key_block(cfg, length) and not mem.key_images and not mem.value_images


def key_blocks(window: int, block: int) -> list[tuple[int, int]]:
    """The [first, end) columns of each key block of a window (the last one shorter)."""
    return [(a, min(a + block, window)) for a in range(0, window, block)]


def first_visible(sliding_window: int, pos0: int) -> int:
    """The first K/V row a step starting at ``pos0`` reads: 0, or where a sliding window begins."""
    return max(0, pos0 - sliding_window + 1) if sliding_window else 0


@dataclass
class Block:
    buf: Buffer
    addr: int
    nbytes: int
    users: int = 0  # pending reads by tensors aliasing this block


class Scratch:
    """First-fit allocation of one on-chip buffer, with fixed regions below ``base`` of the free space."""

    def __init__(self, cfg: HardwareConfig, buf: Buffer):
        self.cfg, self.buf = cfg, buf
        self.align = max(ALIGN, cfg.buffer_port_bytes)  # a word: where a streamed MV's activations and LUT start
        self.cap = cfg.buffer_bytes(buf)
        self.free_list: list[tuple[int, int]] = [(0, self.cap)]  # (addr, size), sorted

    def alloc(self, what: str, nbytes: int, at: tuple[int, int] | None = None) -> Block:
        """``nbytes`` from the first piece that holds them; with ``at`` = (period, offset), from an address that is
        ``offset`` past a multiple of ``period`` (what is skipped before it stays free); a block ends at a word."""
        def size(lead: int) -> int:  # from ``lead`` bytes past a word to the word after the last byte
            return max(self.align, -(-(lead + nbytes) // self.align) * self.align) - lead

        for i, (addr, free) in enumerate(self.free_list):
            start = addr if at is None else addr + (at[1] - addr) % at[0]
            n = size(start % self.align)
            if start + n <= addr + free:
                pieces = [(addr, start - addr), (start + n, addr + free - start - n)]
                self.free_list[i:i + 1] = [p for p in pieces if p[1]]
                return Block(self.buf, start, n)
        nbytes = size(0)
        used = self.cap - sum(s for _, s in self.free_list)
        raise OnChipError(f"on-chip: {what} needs {nbytes} bytes of the {self.buf.name} buffer, but only "
                               f"{self.cap - used} of preset {self.cfg.name!r}'s {self.cap} are free (largest "
                               f"piece {max((s for _, s in self.free_list), default=0)}); use a shorter length "
                               f"or a larger preset")

    def free(self, block: Block) -> None:
        self.free_list.append((block.addr, block.nbytes))
        self.free_list.sort()
        merged: list[tuple[int, int]] = []
        for addr, size in self.free_list:
            if merged and merged[-1][0] + merged[-1][1] == addr:
                merged[-1] = (merged[-1][0], merged[-1][1] + size)
            else:
                merged.append((addr, size))
        self.free_list = merged


@dataclass
class Tensor:
    """An activation on chip: ``rows`` x ``width`` elements of ``elem`` bytes, a row every ``row_bytes`` (its
    elements' bytes, or more where a linear layer reads it: see :meth:`StepLowering.new_tensor`)."""

    block: Block
    rows: int
    width: int
    elem: int
    shares: list[tuple[int, int]] | None = None  # per core: the columns it holds; None: all of them
    producer: str = ""
    stride: int = 0  # bytes from a row to the next; 0: the row's elements' bytes
    stored: str = ""  # the exchange region its producer already stored this core's slice into, a tile at a time

    @property
    def addr(self) -> int:
        return self.block.addr

    @property
    def row_bytes(self) -> int:
        return self.stride or self.width * self.elem


@dataclass
class LoweredStep:
    """Per core: instructions, and extra accesses the token pass must honour (barriers publish exchanges)."""

    cores: list[list[Instruction]]
    extras: list[dict[int, tuple[list[Access], list[Access]]]]


@dataclass
class LinearRun:
    """A linear layer being lowered on one core: its input, output and tiles (:meth:`StepLowering.linear_begin`)."""

    name: str
    node: dict
    x: Tensor
    out: Tensor
    tiles: LinearTiles | None  # None where the core has no rows of it
    lut: bool
    mode: OutMode
    by_tile: bool

    @property
    def count(self) -> int:
        return len(self.tiles.weights) if self.tiles is not None else 0


class StepLowering:
    """Emits the instructions of one step of a fused, integerized graph for one core."""

    def __init__(self, graph: GraphIR, cfg: HardwareConfig, mem: MemoryMap, length: int, pos0: int, core: int,
                 window_cap: int | None = None):
        if graph.stage is not Stage.FUSED:
            raise ValueError(f"lower needs a fused graph, got stage {graph.stage.value!r}")
        self.g, self.cfg, self.mem, self.core = graph, cfg, mem, core
        self.s = s = graph.spec
        self.P = cfg.num_cores
        self.L, self.p0 = length, pos0
        self.C = pos0 + length
        self.out: list[Instruction] = []
        self.extras: dict[int, tuple[list[Access], list[Access]]] = {}
        self.scratch = {b: Scratch(cfg, b) for b in Buffer}
        d = s.head_dim
        # fixed regions
        tiles = [t for per_core in mem.linears.values() for t in per_core if t is not None]
        rec_bytes = max(t.tile_rows for t in tiles) * nm.REQUANT_RECORD_BYTES
        fixed = self._fixed
        # the striped rows LD brings in (weight tiles, records) start where each master's LD lane writes its own
        # units (footprint.own_banks): on this core's first channel's bank
        banked = own_bank_place(cfg.core(core), core_channels(cfg, core)[0])
        self.wslot = self._striped_slots("weight tile", Buffer.WGT, cfg.buffer_bytes(Buffer.WGT) // 2, banked)
        self.rec = self._striped_slots("requantization records", Buffer.PRM, rec_bytes, banked)
        # the norms' gains (and biases) start at a buffer word, past the epsilon: a chunk of them is a word read
        w = cfg.buffer_port_bytes
        self.norm_prm = fixed("norm parameters", Buffer.PRM, norm_param_bytes(MiscOp.LAYERNORM, s.hidden_size),
                              at=(w, -NORM.gain_offset(0) % w))
        self.lut = fixed("activation LUT", Buffer.PRM, nm.LUT_ENTRIES)
        self.pv = fixed("attention output records", Buffer.PRM, nm.REQUANT_RECORD_BYTES * d)
        self.rope = fixed("RoPE rows", Buffer.PRM, length * ROPE.row_bytes(d)) if "rope" in mem.regions else None
        # on-chip room for attention is sized for the longest window the program may be patched to
        # (length-adaptive templates), so addresses do not depend on the position
        window = max(self.window_len(), window_cap or 0)
        slots = 2 if 4 * window * d <= cfg.buffer_bytes(Buffer.KV) else 1  # double-buffer K/V while they fit
        # transposed V rows start at buffer words (a row straddling words costs P.V a second fetch per step)
        self.v_stride = min(-(-window // cfg.buffer_port_bytes) * cfg.buffer_port_bytes,
                            cfg.buffer_bytes(Buffer.KV) // (2 * slots * d))
        self.v_stride = max(self.v_stride, window)
        self.kslot = [fixed(f"K rows {i}", Buffer.KV, window * d) for i in range(slots)]
        self.vslot = [fixed(f"V rows {i}", Buffer.KV, self.v_stride * d) for i in range(slots)]
        # a window longer than a key block runs as a blocked softmax, scores and probabilities a block at a time,
        # where the keys and values are kept as rows (those kept as stream images stream a token at a time)
        self.key_block = key_block(cfg, length)
        self.blocked = blocked_attention(cfg, mem, length, window)
        cols = self.key_block if self.blocked else window
        # rows of probabilities at buffer words (a streamed P.V's activations), and room past the last for the
        # whole chunks a streamed P.V copies (zeros past the window)
        self.p_stride = -(-cols // cfg.buffer_port_bytes) * cfg.buffer_port_bytes if length > 1 else cols
        # (decode's one row of scores is followed by its maximum, MV.out_max)
        score_bytes = 4 * length * cols + (4 if length == 1 else 0)
        prob_bytes = length * self.p_stride + cfg.lane_slots
        # PIPELINE_DEPTH of each (else two) while each takes at most an eighth of its buffer over their number:
        # the next heads' scores are made while this head's softmax and P.V run (:meth:`pipelined_heads`)
        pairs = next((n for n in (PIPELINE_DEPTH, 2) if 8 * n * score_bytes <= cfg.buffer_bytes(Buffer.ACC)
                      and 8 * n * prob_bytes <= cfg.buffer_bytes(Buffer.ACT)), 1)
        self.scores = [fixed(f"attention scores {i}", Buffer.ACC, score_bytes) for i in range(pairs)]
        self.score_max = [False] * pairs  # whether score buffer i's scores were followed by their maximum
        self.probs = [fixed(f"attention probabilities {i}", Buffer.ACT, prob_bytes) for i in range(pairs)]
        if self.blocked:  # the rows' softmax statistics and P.V's sums over the blocks so far
            self.stats = fixed("softmax statistics", Buffer.ACC, SOFTMAX_STATS.size * length)
            self.pv_partial = fixed("P.V partial sums", Buffer.ACC, 4 * length * d)
        self.block_counter = 0
        # a streamed P.V's raw sums (whole row pairs a cycle out of the MPE), requantized by the SFU (MISC REQ)
        self.pv_sums = ([fixed(f"P.V sums {i}", Buffer.ACC, 4 * d) for i in range(pairs)]
                        if mem.value_images else [])
        self.tensors: dict[str, Tensor] = {}
        self.tile_counter = self.head_counter = self.exchanges = self.barriers = self.prestores = 0
        self.pending: Tensor | None = None  # a tensor stored a tile at a time, its exchange still to come
        self.logits_stored = False  # each streamed tile of the LM head stored its logits (:meth:`linear`)
        self.heads_of_core = [[h for h in range(s.num_heads) if mem.kv_owner[h // s.kv_group] == c]
                              for c in range(self.P)]

    def _fixed(self, what: str, b: Buffer, nbytes: int, at: tuple[int, int] | None = None) -> int:
        return self.scratch[b].alloc(what, nbytes, at).addr

    def _striped_slots(self, what: str, b: Buffer, nbytes: int, banked: tuple[int, int]) -> list[int]:
        """Two fixed regions that striped LDs fill (double buffering), where each master's LD lane writes its own
        units; where the buffer has no room for both so, or is not banked, anywhere (LD lane 0 then moves each row
        alone, said in the log where room was short)."""
        scratch = self.scratch[b]
        if b not in self.cfg.banked_buffers:  # one memory: LD lane 0 fills it, wherever the rows lie
            return [self._fixed(f"{what} {i}", b, nbytes) for i in range(2)]
        free = list(scratch.free_list)
        try:
            return [scratch.alloc(f"{what} {i}", nbytes, at=banked).addr for i in range(2)]
        except OnChipError:
            scratch.free_list = free
            log.info("%s of core %d: no room for two at %d bytes past a multiple of %d in the %s buffer, so LD lane 0 "
                     "brings each of their rows alone", what, self.core, banked[1], banked[0], b.name)
            return [self._fixed(f"{what} {i}", b, nbytes) for i in range(2)]

    def window_len(self) -> int:
        """K/V rows attention reads: the whole context, or the first row any query of the step can see on."""
        return self.C - self.first_visible()

    def first_visible(self) -> int:
        return first_visible(self.s.sliding_window, self.p0)

    # ----- helpers -----
    def emit(self, opcode: Opcode, **fields: int) -> None:
        self.out.append(make(opcode, **fields))

    def load(self, region_name: str, b: Buffer, addr: int, offset: int = 0, nbytes: int | None = None) -> None:
        r = self.mem[region_name]
        n = r.nbytes if nbytes is None else nbytes
        if r.stripe > 1:  # a whole striped region, every channel of it at once
            if offset or n != r.nbytes:
                raise ValueError(f"{region_name}: a striped region is loaded whole")
            self.emit(Opcode.LD, buf=b, buf_addr=addr, channel=r.channel, hbm_addr=r.addr, rows=1, row_bytes=n,
                      hbm_stride=n, buf_stride=n, stripe=r.stripe, stripe_log2=r.unit.bit_length() - 1)
            return
        self.emit(Opcode.LD, buf=b, buf_addr=addr, channel=r.channel, hbm_addr=r.addr + offset, rows=1,
                  row_bytes=n, hbm_stride=n, buf_stride=n)

    def misc(self, op: MiscOp, **fields: int) -> None:
        self.emit(Opcode.MISC, op=op, **fields)

    def mpe(self, m: int, **fields: int) -> None:
        if m == 1:
            for key in ("m", "a_stride", "out_stride"):
                fields.pop(key, None)
            self.emit(Opcode.MV, **fields)
        else:
            self.emit(Opcode.MM, m=m, **fields)

    def new_tensor(self, name: str, b: Buffer, rows: int, width: int, elem: int,
                   shares: list[tuple[int, int]] | None = None) -> Tensor:
        """Room for tensor ``name``. One that linear layers read has its rows a buffer word apart (where a streamed
        MV's activations start) and room past its last row for the columns their packed weights run to: whole
        blocks, groups and lane-group chunks, whose zero weights meet whatever lies there."""
        reads = [qw.fmt.packed_columns(self.cfg, qw.shape[1]) for qw in
                 (self.g.node(c)["qweight"] for c in self.g.consumers(name) if self.g.node(c)["op"] is OpKind.LINEAR)]
        word = self.cfg.buffer_port_bytes
        stride = -(-width * elem // word) * word if reads and rows > 1 else width * elem
        block = self.scratch[b].alloc(f"tensor {name}", (rows - 1) * stride + max([width * elem, *reads]))
        return Tensor(block, rows, width, elem, shares, name, stride)

    def own(self, t: Tensor) -> tuple[int, int]:
        """This core's columns of a tensor (all of them when it is not split)."""
        return (0, t.width) if t.shares is None else t.shares[self.core]

    def full(self, t: Tensor) -> Tensor:
        """Make sure every core holds all of t: store this core's slice (unless its producer did, a part at a time
        as it made them: :meth:`prestore`), barrier, load the others' pieces."""
        if t.shares is None or self.P == 1:
            t.shares = None
            return t
        lo, hi = (c * t.elem for c in t.shares[self.core])
        if t.stored:
            slot = self.mem[t.stored]
            self.pending = None
        else:
            slot = self.mem[f"xchg.{self.exchanges % 2}"]
            self.exchanges += 1
        if hi > lo and not t.stored:
            self.store_slice(t, slot, lo, hi - lo)
        # the barrier publishes every exchange region: it orders this core's stores before, and its later
        # loads after, the barrier (the token pass sees these as the barrier's reads and writes)
        spans = [Access(hbm(ch), addr, 1, n, 0) for x in (self.mem[f"xchg.{i}"] for i in range(4))
                 for ch, addr, n in x.spans()]
        self.extras[len(self.out)] = (spans, spans)
        self.emit(Opcode.SYS, op=SysOp.BARRIER, arg=self.barriers)
        self.barriers += 1
        # the other cores' pieces only (this core's are in place), each core starting at the next core's, so that
        # the cores' first loads are on different channels
        for k in range(1, self.P):
            other = (self.core + k) % self.P
            own = tuple(c * t.elem for c in t.shares[other])
            for p in exchange_pieces(self.cfg, slot, other, own, own, t.rows):
                self.emit(Opcode.LD, buf=t.block.buf, buf_addr=t.addr + p.lo, channel=p.channel, hbm_addr=p.addr,
                          rows=t.rows, row_bytes=p.hi - p.lo, hbm_stride=p.stride, buf_stride=t.row_bytes)
        t.shares = None
        return t

    def store_slice(self, t: Tensor, slot: Region, lo: int, nbytes: int) -> None:
        """Store bytes ``lo`` .. ``lo + nbytes`` of each of t's rows (of this core's own) into exchange slot
        ``slot``: an ST a piece, each into one of this core's channels (:func:`exchange_pieces`)."""
        own = tuple(c * t.elem for c in t.shares[self.core])
        for p in exchange_pieces(self.cfg, slot, self.core, own, (lo, lo + nbytes), t.rows):
            self.emit(Opcode.ST, buf=t.block.buf, buf_addr=t.addr + p.lo, channel=p.channel, hbm_addr=p.addr,
                      rows=t.rows, row_bytes=p.hi - p.lo, hbm_stride=p.stride, buf_stride=t.row_bytes)

    def publish(self, name: str, t: Tensor) -> None:
        self.tensors[name] = t
        t.block.users += len(self.g.consumers(name))

    def consumed(self, name: str) -> None:
        for i in self.g.node(name)["inputs"]:
            block = self.tensors[i].block
            block.users -= 1
            if block.users == 0:
                self.scratch[block.buf].free(block)

    # ----- ops -----
    def embed(self, name: str, node: dict) -> Tensor:
        s, L, H = self.s, self.L, self.s.hidden_size
        res = self.new_tensor(name, Buffer.ACC, L, H, 4)
        rows8 = self.scratch[Buffer.ACT].alloc("embedding rows", L * H)
        emb = self.mem["embed"]  # blocks of 2^k rows, one a channel
        blocks = dict(stripe=emb.stripe, stripe_log2=(emb.unit // H).bit_length() - 1) if emb.stripe > 1 else {}
        self.emit(Opcode.LD, buf=Buffer.ACT, buf_addr=rows8.addr, channel=emb.channel, hbm_addr=emb.addr, rows=L,
                  row_bytes=H, hbm_stride=H, buf_stride=H, gather=1, ids_addr=self.mem["io.ids"].addr, **blocks)
        self.misc(MiscOp.DEQ, rows=L, cols=H, src_buf=Buffer.ACT, src_addr=rows8.addr, src_stride=H,
                  dst_buf=Buffer.ACC, dst_addr=res.addr, dst_stride=4 * H, imm=node["deq"][0], shift=node["deq"][1])
        if "qpositions" in node:
            self.load("positions", Buffer.ACT, rows8.addr, offset=(self.p0 + s.position_offset) * H, nbytes=L * H)
            self.misc(MiscOp.DEQ_ADD, rows=L, cols=H, src_buf=Buffer.ACT, src_addr=rows8.addr, src_stride=H,
                      dst_buf=Buffer.ACC, dst_addr=res.addr, dst_stride=4 * H, imm=node["pos_deq"][0],
                      shift=node["pos_deq"][1])
        self.scratch[Buffer.ACT].free(rows8)
        if self.rope is not None:
            row = ROPE.row_bytes(s.head_dim)
            self.load("rope", Buffer.PRM, self.rope, offset=self.p0 * row, nbytes=L * row)
        return res

    def norm(self, name: str, node: dict, x: Tensor) -> Tensor:
        """RMSNorm / LayerNorm; before the LM head only the last position is normalized. Its parameters are loaded
        before an exchange of its input, so that LD (in order) brings them while the cores meet."""
        self.load(norm_region(name, self.core, self.P), Buffer.PRM, self.norm_prm)
        x = self.full(x)
        last_only = self.g.consumers(name) == [self.g.output]
        rows = 1 if last_only else x.rows
        y = self.new_tensor(name, Buffer.ACT, rows, x.width, 1)
        op = MiscOp.RMSNORM if node["op"] is OpKind.RMSNORM else MiscOp.LAYERNORM
        self.misc(op, rows=rows, cols=x.width, src_buf=Buffer.ACC, src_addr=x.addr + (x.rows - rows) * x.row_bytes,
                  src_stride=x.row_bytes, dst_buf=Buffer.ACT, dst_addr=y.addr, dst_stride=y.row_bytes,
                  prm_addr=self.norm_prm, shift=node["norm_shift"])
        return y

    def linear(self, name: str, node: dict, x: Tensor) -> Tensor:
        """A linear layer's tiles on this core. Its first tile's records (and its activation table) are loaded
        before an exchange of its input, so that LD (in order) brings them while the cores meet."""
        run = self.linear_begin(name, node, x)
        for t in range(run.count):
            self.linear_tile(run, t)
        return self.linear_end(run)

    def linear_begin(self, name: str, node: dict, x: Tensor) -> LinearRun:
        """A linear layer's output tensor, its activation table and its first tile's records loaded ahead of the
        exchange of its input."""
        tiles = self.mem.linears[name][self.core]
        lut = "lut" in node
        if tiles is not None:
            if lut:
                self.load(f"{name}.lut", Buffer.PRM, self.lut)
            self.load(tiles.records[0].name, Buffer.PRM, self.rec[self.tile_counter % 2])
        x = self.full(x)
        mode: OutMode = node["out_mode"]
        n_rows = node["qweight"].shape[0]
        shares = self.mem.row_split[name] if self.P > 1 else None
        # the logits go out a streamed tile at a time (below), so two tiles' room on chip serve them in turn, not the
        # whole vocabulary
        by_tile = (name == self.g.output and x.rows == 1 and mode is OutMode.REQ_I32 and tiles is not None
                   and tiles.stream is not None)
        if mode is OutMode.REQ_ADD:
            (add,) = self.g.consumers(name)
            res_name = next(i for i in self.g.node(add)["inputs"] if i != name)
            late = [c for c in self.g.consumers(res_name) if c != add and c not in self.tensors]
            if late:
                raise UnsupportedError(f"layer {name}: adds into the residual {res_name} while {late} still read it")
            out = self.full(self.tensors[res_name])
            out.shares, out.stored = shares, ""
            self.prestore(out)
        elif by_tile:
            out = self.new_tensor(name, Buffer.ACC, 1, min(2, len(tiles.weights)) * tiles.tile_rows, 4)
        elif mode is OutMode.REQ_I32:
            out = self.new_tensor(name, Buffer.ACC, x.rows, n_rows, 4, shares)
        else:
            out = self.new_tensor(name, Buffer.ACT, x.rows, n_rows, 1, shares)
        return LinearRun(name, node, x, out, tiles, lut, mode, by_tile)

    def prestore(self, out: Tensor) -> None:
        """On several cores, have ``out``'s slice stored a tile at a time, each under the next tile's stream, into an
        exchange slot of its own (unless another tensor is being stored so: the same choice on every core, since
        they meet in the same slot)."""
        if self.P > 1 and self.pending is None:
            out.stored = f"xchg.{2 + self.prestores % 2}"
            self.prestores += 1
            self.pending = out

    def linear_tile(self, run: LinearRun, t: int) -> None:
        """Tile ``t`` of a linear layer: its records, its weights (through WGT, or streamed),
        its MV or MM, and where its rows go out a tile at a time, their store."""
        tiles, out, x = run.tiles, run.out, run.x
        wr, rr = tiles.weights[t], tiles.records[t]
        fmt = run.node["qweight"].fmt
        rows = (rr.nbytes // nm.REQUANT_RECORD_BYTES) if tiles.stream else wr.nbytes // tiles.row_bytes
        slot = self.tile_counter % 2
        self.tile_counter += 1
        if t:  # (the first tile's were loaded ahead: linear_begin)
            self.load(rr.name, Buffer.PRM, self.rec[slot])
        out_addr = out.addr + ((t % 2) * tiles.tile_rows if run.by_tile else tiles.row0 + tiles.firsts[t]) * out.elem
        common = dict(n=rows, k=tiles.k, w_bits=fmt.bits_code, sparsity=fmt.sparsity, sparse_enc=fmt.chosen,
                      group_log2=fmt.group_log2, out_mode=run.mode, scale_addr=self.rec[slot], lut=int(run.lut),
                      lut_addr=self.lut if run.lut else 0)
        if tiles.stream is None:
            self.load(wr.name, Buffer.WGT, self.wslot[slot])
            self.mpe(x.rows, a_addr=x.addr, a_stride=x.row_bytes, w_buf=Buffer.WGT, w_addr=self.wslot[slot],
                     w_stride=tiles.row_bytes, out_addr=out_addr, out_stride=out.row_bytes, **common)
        else:
            for r in range(x.rows):  # the weights stream once per token: a streamed MV has one activation row
                self.emit(Opcode.MV, a_addr=x.addr + r * x.row_bytes, w_stream=1,
                          w_channel=tiles.stream.channel, w_stripe=tiles.stream.stripe, w_hbm_addr=wr.addr,
                          out_addr=out_addr + r * out.row_bytes, **common)
        if out.stored:  # the tile's slice of the residual goes out under the next tile's stream
            self.store_slice(out, self.mem[out.stored], (tiles.row0 + tiles.firsts[t]) * out.elem, rows * out.elem)
        elif run.by_tile:  # the tile's logits go out under the next tile's stream
            first = (tiles.row0 + tiles.firsts[t]) * out.elem
            self.logits_out(out, first, first + rows * out.elem, out_addr)
            self.logits_stored = True

    def linear_end(self, run: LinearRun) -> Tensor:
        if run.node.get("rope"):
            self.rope_in_place(run.out)
        return run.out

    def gated(self, name: str, node: dict, x: Tensor, mul: str) -> None:
        """The second projection of a gated MLP (:func:`flightc.compiler.memory.gated_projections`) and the product
        of the two a tile of it at a time: each tile's product (the SFU's EMUL) and, on several cores, its slice
        stored for the exchange go under the next tile's stream, so only the last, small tile's stay between the
        streams and the down projection."""
        run = self.linear_begin(name, node, x)
        m = self.g.node(mul)
        first = next(i for i in m["inputs"] if i != name)
        a, b = (run.out if i == name else self.tensors[first] for i in m["inputs"])
        if a.shares != b.shares:
            raise UnsupportedError(f"layer {mul}: its factors {m['inputs']} are split across the cores differently")
        out = self.new_tensor(mul, Buffer.ACT, a.rows, a.width, 1, a.shares)
        self.prestore(out)
        tiles = run.tiles
        for t in range(run.count):
            self.linear_tile(run, t)
            lo = tiles.row0 + tiles.firsts[t]
            n = (tiles.firsts[t + 1] if t + 1 < len(tiles.firsts) else tiles.rows) - tiles.firsts[t]
            self.misc(MiscOp.EMUL, rows=a.rows, cols=n, src_buf=Buffer.ACT, src_addr=a.addr + lo,
                      src2_addr=b.addr + lo, src_stride=a.row_bytes, dst_buf=Buffer.ACT, dst_addr=out.addr + lo,
                      dst_stride=out.row_bytes, imm=m["emul"][0], shift=m["emul"][1])
            if out.stored:
                self.store_slice(out, self.mem[out.stored], lo, n)
        self.publish(name, self.linear_end(run))
        self.consumed(name)
        self.publish(mul, out)
        self.consumed(mul)

    def rope_in_place(self, t: Tensor) -> None:
        """Rotate this core's heads of L rows of a Q or K projection."""
        lo, hi = self.own(t)
        if hi > lo:
            self.misc(MiscOp.ROPE, rows=t.rows, cols=hi - lo, src_buf=Buffer.ACT, src_addr=t.addr + lo,
                      src_stride=t.row_bytes, dst_buf=Buffer.ACT, dst_addr=t.addr + lo, dst_stride=t.row_bytes,
                      prm_addr=self.rope, imm=self.s.head_dim)

    def attention(self, name: str, node: dict, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        """Store this step's K/V, then per query head Q.K^T, softmax and P.V. A KV head whose keys (values) are
        kept as a stream image (``MemoryMap.key_images``, ``value_images``) has them written a position at a time
        (ST.img, ST.img_col) and streamed into the lane groups a token at a time (MV.w_stream); otherwise they are
        kept as rows, loaded into the KV buffer and multiplied there (MM, MV)."""
        s, L, C, d = self.s, self.L, self.C, self.s.head_dim
        first = self.first_visible()
        window = C - first
        heads = self.heads_of_core[self.core]
        kv_heads = sorted({h // s.kv_group for h in heads})
        out_shares = None
        if self.P > 1:
            out_shares = [((hs[0] * d, (hs[-1] + 1) * d) if hs else (0, 0)) for hs in self.heads_of_core]
        out = self.new_tensor(name, Buffer.ACT, L, s.num_heads * d, 1, out_shares)
        self.prestore(out)
        kvb = kv_row_bytes(node, d)
        pack4 = int(kvb < d)
        kv_bits = WeightBits.B4 if pack4 else WeightBits.B8
        # INT8 V is kept transposed (a row per head dimension, a byte per position): P.V is then a row-major MV,
        # not a k-major one, which reads V a byte a cycle; INT4 V (two positions a byte) stays a row per position
        v_rows = not pack4
        keys = {j: self.mem.key_images.get(f"{name}.k{j}") for j in kv_heads}
        values = {j: self.mem.value_images.get(f"{name}.v{j}") for j in kv_heads}
        streamed = all(keys[j] is not None and values[j] is not None for j in kv_heads)
        if streamed and len(self.scores) >= 2 and heads and not self.blocked:
            self.load(f"{name}.pv", Buffer.PRM, self.pv)
            self.pipelined_heads(name, node, heads, keys, values, q, k, v, out, kvb, pack4, kv_bits)
            return out
        for j in kv_heads:
            self.store_keys(name, j, keys[j], k, kvb, pack4)
        for j in kv_heads:
            self.store_values(name, j, values[j], v, kvb, pack4, v_rows)
        if heads:
            self.load(f"{name}.pv", Buffer.PRM, self.pv)
        # with the keys streamed over every master, a head's V rows (one channel's long load) are loaded once the
        # previous head's keys have streamed, under its softmax and P.V, not while the keys' stream needs that
        # master: an ordering the data does not imply, so an extra access in a space of its own
        order = [Access(("order", 0), 0, 1, 1, 0)]
        for h in heads:
            j = h // s.kv_group
            image, images = keys[j], values[j]
            slot = self.head_counter % len(self.kslot)
            self.head_counter += 1
            if image is None:
                self.load(f"{name}.k{j}", Buffer.KV, self.kslot[slot], offset=first * kvb, nbytes=window * kvb)
            if images is None:
                if image is not None:
                    self.extras[len(self.out)] = (order, [])
                if v_rows:
                    r = self.mem[f"{name}.v{j}"]
                    self.emit(Opcode.LD, buf=Buffer.KV, buf_addr=self.vslot[slot], channel=r.channel,
                              hbm_addr=r.addr + first, rows=d, row_bytes=window, hbm_stride=r.nbytes // d,
                              buf_stride=self.v_stride)
                else:
                    self.load(f"{name}.v{j}", Buffer.KV, self.vslot[slot], offset=first * kvb, nbytes=window * kvb)
            if self.blocked:
                self.blocked_head(h, node, q, out, v_rows, kvb, kv_bits, slot)
            else:
                self.head_scores(h, image, q, images, order, kvb, kv_bits, 0, slot)
                self.head_output(h, node, images, out, v_rows, kvb, kv_bits, 0, slot)
            self.head_stored(out, h)
        return out

    def pipelined_heads(self, name: str, node: dict, heads: list[int], keys: dict, values: dict, q: Tensor,
                        k: Tensor, v: Tensor, out: Tensor, kvb: int, pack4: int, kv_bits: WeightBits) -> None:
        """Attention over streamed keys and values, software-pipelined: the next heads' Q.K^T on the MPE while this
        head's softmax runs on the SFU (a score and probability buffer for each head in flight, so that a head's
        P.V never waits for the softmax of the head whose scores came just before), and each KV head's keys and
        values stored (ST.img, ST.img_col) a head or more before they are needed, so the ST unit works under the MPE
        and the SFU and the units' queues fill in the order the work is done."""
        g = self.s.kv_group
        stored: set[tuple[str, int]] = set()

        def store(what: str, i: int) -> None:
            if i >= len(heads) or (what, heads[i] // g) in stored:
                return
            j = heads[i] // g
            stored.add((what, j))
            if what == "k":
                self.store_keys(name, j, keys[j], k, kvb, pack4)
            else:
                self.store_values(name, j, values[j], v, kvb, pack4, False)

        def scores(i: int) -> None:
            h = heads[i]
            self.head_scores(h, keys[h // g], q, values[h // g], [], kvb, kv_bits, i % len(self.scores))

        ahead = len(self.scores) - 1  # heads whose scores are made before a head's softmax and P.V
        for i in range(ahead + 1):
            store("k", i)
        for i in range(ahead):
            store("v", i)
            if i < len(heads):
                scores(i)
        requantize = None  # (the head, its REQ) still to emit
        for i, h in enumerate(heads):
            store("k", i + ahead + 1)
            store("v", i + ahead)
            if i + ahead < len(heads):
                scores(i + ahead)
            later = self.head_output(h, node, values[h // g], out, False, kvb, kv_bits, i % len(self.scores), 0,
                                     defer=True)
            if requantize is not None:  # the head before's REQ: after this head's softmax in the SFU's queue
                requantize[1]()
                self.head_stored(out, requantize[0])
            requantize = (h, later) if later is not None else None
            if later is None:
                self.head_stored(out, h)
        if requantize is not None:
            requantize[1]()
            self.head_stored(out, requantize[0])

    def head_stored(self, out: Tensor, h: int) -> None:
        """On several cores, query head h's output (made: its P.V, or its REQ) stored into the exchange that the
        next layer's input needs, under the next heads' attention, so that only the last head's waits for it."""
        if out.stored:
            d = self.s.head_dim
            self.store_slice(out, self.mem[out.stored], h * d, d)

    def blocked_head(self, h: int, node: dict, q: Tensor, out: Tensor, v_rows: bool, kvb: int, kv_bits: WeightBits,
                     slot: int) -> None:
        """Query head h over its K/V rows in KV slot ``slot``, a key block at a time (:func:`key_block`), exactly
        the whole softmax: Q.K^T of every block for the rows' maxima (SOFTMAX part MAX), again for the sums of
        their powers (SUM), and again for the probabilities (NORM), each block's P.V added into the sums of the
        blocks before (MM.acc_in) and the last requantized into ``out``."""
        s, L, d = self.s, self.L, self.s.head_dim
        first = self.first_visible()
        blocks = key_blocks(self.C - first, self.key_block)
        sm_mult, sm_shift = node["softmax"]
        v_layout = dict(w_stride=self.v_stride) if v_rows else dict(w_kmajor=1, w_stride=kvb)
        for part in (SoftmaxPart.MAX, SoftmaxPart.SUM, SoftmaxPart.NORM):
            for i, (a, b) in enumerate(blocks):
                pair = self.block_counter % len(self.scores)
                self.block_counter += 1
                scores, probs, n = self.scores[pair], self.probs[pair], b - a
                self.mpe(L, n=n, k=d, a_addr=q.addr + h * d, a_stride=q.row_bytes, w_buf=Buffer.KV,
                         w_addr=self.kslot[slot] + a * kvb, w_stride=kvb, w_bits=kv_bits, out_mode=OutMode.ACC32,
                         out_addr=scores, out_stride=4 * n)
                norm = part is SoftmaxPart.NORM
                # MAX and SUM write the rows' new statistic over the one they read; NORM the probabilities
                made = (dict(dst_buf=Buffer.ACT, dst_addr=probs, dst_stride=self.p_stride) if norm else
                        dict(dst_buf=Buffer.ACC, dst_addr=self.stats + SOFTMAX_STATS.field(part.name.lower()).offset,
                             dst_stride=SOFTMAX_STATS.size))
                self.misc(MiscOp.SOFTMAX, part=part, first=int(i == 0 and not norm), stats_addr=self.stats, rows=L,
                          cols=n, src_buf=Buffer.ACC, src_addr=scores, src_stride=4 * n, imm=sm_mult, shift=sm_shift,
                          offset=self.p0 - first - a, window=s.sliding_window, **made)
                if not norm:
                    continue
                sums = dict(acc_in=1, acc_addr=self.pv_partial) if i else {}
                to = (dict(out_mode=OutMode.REQ_I8, out_addr=out.addr + h * d, out_stride=out.row_bytes,
                           scale_addr=self.pv) if b == blocks[-1][1] else
                      dict(out_mode=OutMode.ACC32, out_addr=self.pv_partial, out_stride=4 * d))
                self.mpe(L, n=d, k=n, a_addr=probs, a_stride=self.p_stride, a_unsigned=1, w_buf=Buffer.KV,
                         w_addr=self.vslot[slot] + (a if v_rows else a * kvb), w_bits=kv_bits, **sums, **to,
                         **v_layout)

    def head_scores(self, h: int, image: KeyImage | None, q: Tensor, images: ValueImages | None,
                    order: list[Access], kvb: int, kv_bits: WeightBits, pair: int, slot: int = 0) -> None:
        """Query head h's scores Q.K^T into score buffer ``pair``: from the K rows in KV slot ``slot``, or streamed
        from the keys' image a token at a time."""
        L, d = self.L, self.s.head_dim
        window = self.C - self.first_visible()
        scores = self.scores[pair]
        # decode's one row sees every column of the window: the stream's output stage hands softmax its maximum
        self.score_max[pair] = image is not None and L == 1
        if image is None:
            self.mpe(L, n=window, k=d, a_addr=q.addr + h * d, a_stride=q.row_bytes, w_buf=Buffer.KV,
                     w_addr=self.kslot[slot], w_stride=kvb, w_bits=kv_bits, out_mode=OutMode.ACC32,
                     out_addr=scores, out_stride=4 * window)
            return
        at = self.mem[image.region]  # the keys stream from their image straight into the lane groups
        for t in range(L):
            if images is None:
                self.extras[len(self.out)] = ([], order)
            self.emit(Opcode.MV, n=window, k=d, a_addr=q.addr + t * q.row_bytes + h * d, w_bits=kv_bits,
                      sparsity=image.fmt.sparsity, out_mode=OutMode.ACC32, out_addr=scores + t * 4 * window,
                      w_stream=1, w_channel=at.channel, w_stripe=at.stripe, w_hbm_addr=at.addr,
                      out_max=int(self.score_max[pair]))

    def head_output(self, h: int, node: dict, images: ValueImages | None, out: Tensor, v_rows: bool, kvb: int,
                    kv_bits: WeightBits, pair: int, slot: int, defer: bool = False) -> Callable[[], None] | None:
        """Query head h's softmax of score buffer ``pair`` into its probabilities, then P.V into ``out``: from the
        V rows in KV slot ``slot``, or streamed from the values' images a token at a time (decode's one token: its
        raw sums requantized by the SFU, MISC REQ). With ``defer`` that REQ is returned (to emit) rather than
        emitted, so that the caller can queue the next head's softmax before it."""
        s, L, d = self.s, self.L, self.s.head_dim
        first = self.first_visible()
        window = self.C - first
        sm_mult, sm_shift = node["softmax"]
        probs = self.probs[pair]
        self.misc(MiscOp.SOFTMAX, rows=L, cols=window, src_buf=Buffer.ACC, src_addr=self.scores[pair],
                  src_stride=4 * window, dst_buf=Buffer.ACT, dst_addr=probs, dst_stride=self.p_stride,
                  imm=sm_mult, shift=sm_shift, offset=self.p0 - first, window=s.sliding_window,
                  max_given=int(self.score_max[pair]))
        if images is None:
            v_layout = dict(w_stride=self.v_stride) if v_rows else dict(w_kmajor=1, w_stride=kvb)
            self.mpe(L, n=d, k=window, a_addr=probs, a_stride=self.p_stride, a_unsigned=1, w_buf=Buffer.KV,
                     w_addr=self.vslot[slot], w_bits=kv_bits, out_mode=OutMode.REQ_I8, out_addr=out.addr + h * d,
                     out_stride=out.row_bytes, scale_addr=self.pv, **v_layout)
            return None
        at = self.mem[images.region]  # all the head's dimensions stream from its image, a token at a time
        stream = dict(n=d, k=window, a_unsigned=1, w_bits=kv_bits, sparsity=images.fmt.sparsity, w_stream=1,
                      w_channel=at.channel, w_stripe=at.stripe, w_hbm_addr=at.addr)
        if L > 1:  # a prompt's tokens: requantized in the output stage (a REQ a token and head would pass a token
            # from the SFU to the MPE each, more than the counters hold for a long prompt)
            for t in range(L):
                self.emit(Opcode.MV, a_addr=probs + t * self.p_stride, out_mode=OutMode.REQ_I8,
                          out_addr=out.addr + t * out.row_bytes + h * d, scale_addr=self.pv, **stream)
            return None
        sums = self.pv_sums[pair]  # decode: raw sums out a word of row pairs a cycle, requantized by the SFU
        self.emit(Opcode.MV, a_addr=probs, out_mode=OutMode.ACC32, out_addr=sums, **stream)
        pv_mult, pv_shift = node["pv"]
        req = functools.partial(self.misc, MiscOp.REQ, rows=1, cols=d, src_buf=Buffer.ACC, src_addr=sums,
                                src_stride=4 * d, dst_buf=Buffer.ACT, dst_addr=out.addr + h * d,
                                dst_stride=out.row_bytes, imm=pv_mult, shift=pv_shift)
        if defer:
            return req
        req()
        return None

    def store_keys(self, name: str, j: int, image: KeyImage | None, k: Tensor, kvb: int, pack4: int) -> None:
        """This step's keys of KV head j: rows of the cache, or rows of its stream image a position at a time."""
        L = self.L
        if image is None:
            r = self.mem[f"{name}.k{j}"]
            self.emit(Opcode.ST, buf=Buffer.ACT, buf_addr=k.addr + j * self.s.head_dim, channel=r.channel,
                      hbm_addr=r.addr + self.p0 * kvb, rows=L, row_bytes=kvb, hbm_stride=kvb,
                      buf_stride=k.row_bytes, pack4=pack4)
            return
        ri, at = image.rows, self.mem[image.region]
        for t in range(L):
            self.emit(Opcode.ST, buf=Buffer.ACT, buf_addr=k.addr + t * k.row_bytes + j * self.s.head_dim,
                      channel=at.channel, hbm_addr=at.addr, rows=ri.pieces, row_bytes=ri.piece_bytes,
                      hbm_stride=ri.piece_stride, buf_stride=ri.piece_columns, pack4=pack4, img=1,
                      img_row=self.p0 + t, img_groups_log2=ri.groups_log2, img_pair_log2=ri.pair_log2,
                      img_half_log2=ri.half_log2)

    def store_values(self, name: str, j: int, images: ValueImages | None, v: Tensor, kvb: int, pack4: int,
                     v_rows: bool) -> None:
        """This step's values of KV head j: the cache's rows (INT8: a column of the transposed rows per token), or
        a column of each of its stream images per token."""
        L, d = self.L, self.s.head_dim
        if images is not None:
            ci, at = images.cols, self.mem[images.region]
            for t in range(L):
                self.emit(Opcode.ST, buf=Buffer.ACT, buf_addr=v.addr + t * v.row_bytes + j * d, channel=at.channel,
                          hbm_addr=at.addr, rows=d, row_bytes=1, buf_stride=1, img=1, img_col=1, img_row=self.p0 + t,
                          img_groups_log2=ci.groups_log2, img_pair_log2=ci.pair_log2, img_half_log2=ci.half_log2,
                          img_stride_log2=ci.piece_stride.bit_length() - 1)
            return
        r = self.mem[f"{name}.v{j}"]
        if v_rows:
            span = r.nbytes // d  # transposed: the positions a dimension's row holds (max_len)
            for t in range(L):  # this token's V column: a byte per dimension
                self.emit(Opcode.ST, buf=Buffer.ACT, buf_addr=v.addr + t * v.row_bytes + j * d, channel=r.channel,
                          hbm_addr=r.addr + self.p0 + t, rows=d, row_bytes=1, hbm_stride=span, buf_stride=1)
        else:
            self.emit(Opcode.ST, buf=Buffer.ACT, buf_addr=v.addr + j * d, channel=r.channel,
                      hbm_addr=r.addr + self.p0 * kvb, rows=L, row_bytes=kvb, hbm_stride=kvb,
                      buf_stride=v.row_bytes, pack4=pack4)

    def mul(self, name: str, node: dict, a: Tensor, b: Tensor) -> Tensor:
        if a.shares != b.shares:
            a, b = self.full(a), self.full(b)
        out = self.new_tensor(name, Buffer.ACT, a.rows, a.width, 1, a.shares)
        lo, hi = self.own(a)
        if hi > lo:
            self.misc(MiscOp.EMUL, rows=a.rows, cols=hi - lo, src_buf=Buffer.ACT, src_addr=a.addr + lo,
                      src2_addr=b.addr + lo, src_stride=a.row_bytes, dst_buf=Buffer.ACT, dst_addr=out.addr + lo,
                      dst_stride=out.row_bytes, imm=node["emul"][0], shift=node["emul"][1])
        return out

    def logits_out(self, t: Tensor, lo: int | None = None, hi: int | None = None, at: int | None = None) -> None:
        """Store this core's logits: bytes ``lo`` to ``hi`` of the row (a streamed tile's, as soon as it is made, from
        ``at`` in ACC), or all of them."""
        if lo is None or hi is None:
            lo, hi = (c * t.elem for c in self.own(t))
        if hi > lo:
            out = self.mem["io.logits"]
            self.emit(Opcode.ST, buf=Buffer.ACC, buf_addr=t.addr + lo if at is None else at, channel=out.channel,
                      hbm_addr=out.addr + lo,
                      rows=1, row_bytes=hi - lo, hbm_stride=hi - lo, buf_stride=hi - lo)

    # ----- the step -----
    def step(self) -> tuple[list[Instruction], dict[int, tuple[list[Access], list[Access]]]]:
        g = self.g
        done: set[str] = set()
        for name in g.order():
            if name in done:
                continue
            node = g.node(name)
            op = node["op"]
            ins = [self.tensors[i] for i in node["inputs"]]
            if name in self.mem.gated:  # a gated MLP's second projection, with the product
                (mul,) = g.consumers(name)
                self.gated(name, node, *ins, mul)
                done.add(mul)
                continue
            if op is OpKind.EMBED:
                t = self.embed(name, node)
            elif op in (OpKind.RMSNORM, OpKind.LAYERNORM):
                t = self.norm(name, node, *ins)
            elif op is OpKind.LINEAR:
                t = self.linear(name, node, *ins)
            elif op is OpKind.ROPE:
                self.rope_in_place(ins[0])
                t = ins[0]
            elif op is OpKind.ATTENTION:
                t = self.attention(name, node, *ins)
            elif op is OpKind.MUL:
                t = self.mul(name, node, *ins)
            elif op is OpKind.ADD:
                t = ins[0]  # the REQ_ADD output stage already added the other input into it
            elif op in LUT_ACTIVATIONS:
                raise UnsupportedError(f"layer {name}: {op.value} must follow a linear layer (the fuse pass puts it "
                                       f"in the MPE output stage)")
            else:
                raise UnsupportedError(f"layer {name}: op {op.value} has no lowering")
            self.publish(name, t)
            self.consumed(name)
        if not self.logits_stored:
            self.logits_out(self.tensors[g.output])
        self.emit(Opcode.SYS, op=SysOp.END)
        return self.out, self.extras


def lower_step(graph: GraphIR, cfg: HardwareConfig, mem: MemoryMap, length: int, pos0: int,
               window_cap: int | None = None) -> LoweredStep:
    """``window_cap``: size the attention buffers for this many K/V rows (at least the step's own window)."""
    if length < 1:
        raise UnsupportedError("a step needs at least one token")
    cores, extras = [], []
    for core in range(cfg.num_cores):
        prog, extra = StepLowering(graph, cfg, mem, length, pos0, core, window_cap).step()
        cores.append(prog)
        extras.append(extra)
    return LoweredStep(cores, extras)
