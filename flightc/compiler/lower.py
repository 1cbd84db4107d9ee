"""Pass ``lower``: one forward step (L new tokens at positions p0..p0+L-1) -> one instruction list per core.

Prefill is L = prompt length at p0 = 0 (MM instructions); decode is L = 1 at the token's position
(MV instructions). Always on chip: within a step, activations and the residual stream stay in the
on-chip buffers; only K/V rows of the cache, the final logits and (with several cores) the slices
exchanged between cores go to memory. Wait/release tokens are added afterwards by ``tokens``.

With P cores, each linear layer is split by output rows and attention by KV heads; after the
attention output, each residual update and the gated MLP product, every core stores its slice,
meets the others at a SYS BARRIER and loads the whole tensor back.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from flightc import numerics as nm
from flightc.compiler.memory import EXCHANGES, MemoryMap, exchange_width, split
from flightc.config import Buffer, HardwareConfig
from flightc.errors import UnsupportedError
from flightc.ir.graph import GraphIR, OpKind
from flightc.isa.codec import Instruction, make
from flightc.isa.footprint import LUT_BYTES, Access, hbm
from flightc.isa.table import MiscOp, Opcode, OutMode, SysOp, WeightBits

ALIGN = 16


@dataclass
class OnChip:
    """Bump allocation of named regions in each on-chip buffer for one program."""

    cfg: HardwareConfig
    used: dict[Buffer, int] = field(default_factory=lambda: {b: 0 for b in Buffer})
    regions: dict[str, tuple[Buffer, int, int]] = field(default_factory=dict)

    def alloc(self, name: str, b: Buffer, nbytes: int) -> int:
        addr = -(-self.used[b] // ALIGN) * ALIGN
        cap = self.cfg.buffer_bytes(b)
        if addr + nbytes > cap:
            raise UnsupportedError(f"on-chip: {name} needs {nbytes} bytes of the {b.name} buffer at offset {addr}, "
                                   f"but preset {self.cfg.name!r} has {cap} bytes; use a shorter length or a "
                                   f"larger preset")
        self.used[b] = addr + nbytes
        self.regions[name] = (b, addr, nbytes)
        return addr


@dataclass
class LoweredStep:
    """Per core: instructions, and extra accesses the token pass must honour (barriers publish exchanges)."""

    cores: list[list[Instruction]]
    extras: list[dict[int, tuple[list[Access], list[Access]]]]


class StepLowering:
    """Emits the instructions of one step of a fused, integerized graph for one core."""

    def __init__(self, graph: GraphIR, cfg: HardwareConfig, mem: MemoryMap, length: int, pos0: int, core: int):
        if graph.stage != "fused":
            raise ValueError(f"lower needs a fused graph, got stage {graph.stage!r}")
        self.g, self.cfg, self.mem, self.core = graph, cfg, mem, core
        self.P = cfg.num_cores
        self.L, self.p0 = length, pos0
        self.C = pos0 + length
        self.out: list[Instruction] = []
        self.extras: dict[int, tuple[list[Access], list[Access]]] = {}
        s = graph.spec
        self.s = s
        oc = self.oc = OnChip(cfg)
        L, H, I, d = length, s.hidden_size, s.intermediate_size, s.head_dim
        qw, kvw = s.num_heads * d, s.num_kv_heads * d
        # ACT (INT8)
        self.x8 = oc.alloc("x8", Buffer.ACT, L * H)
        self.q = oc.alloc("q", Buffer.ACT, L * qw)
        self.k = oc.alloc("k", Buffer.ACT, L * kvw)
        self.v = oc.alloc("v", Buffer.ACT, L * kvw)
        self.attn = oc.alloc("attn", Buffer.ACT, L * qw)
        self.probs = oc.alloc("probs", Buffer.ACT, L * self.C)
        self.gate = oc.alloc("gate", Buffer.ACT, L * I)
        self.up = oc.alloc("up", Buffer.ACT, L * I)
        self.mul = oc.alloc("mul", Buffer.ACT, L * I)
        # ACC (INT32)
        self.res = oc.alloc("res", Buffer.ACC, 4 * L * H)
        self.scores = oc.alloc("scores", Buffer.ACC, 4 * L * self.C)
        self.logits = oc.alloc("logits", Buffer.ACC, 4 * s.vocab_size)
        # PRM
        tiles = [t for per_core in mem.linears.values() for t in per_core if t is not None]
        rec_bytes = max(t.tile_rows for t in tiles) * nm.REQUANT_RECORD_BYTES
        self.rec = [oc.alloc(f"rec{i}", Buffer.PRM, rec_bytes) for i in range(2)]
        self.norm = oc.alloc("norm", Buffer.PRM, 8 + 4 * H)
        self.lut = oc.alloc("lut", Buffer.PRM, LUT_BYTES)
        self.pv = oc.alloc("pv", Buffer.PRM, nm.REQUANT_RECORD_BYTES * d)
        self.rope = oc.alloc("rope", Buffer.PRM, L * 2 * d)
        # KV: two slots so the next head's rows load while this head computes
        self.kslot = [oc.alloc(f"k{i}", Buffer.KV, self.C * d) for i in range(2)]
        self.vslot = [oc.alloc(f"v{i}", Buffer.KV, self.C * d) for i in range(2)]
        # WGT: two halves
        half = cfg.buffer_bytes(Buffer.WGT) // 2
        self.wslot = [oc.alloc(f"w{i}", Buffer.WGT, half) for i in range(2)]
        self.tile_counter = 0
        self.head_counter = 0
        self.exchanges = {kind: 0 for kind in EXCHANGES}
        self.barriers = 0
        kv_heads = [j for j, c in mem.kv_owner.items() if c == core]
        self.heads = [h for h in range(s.num_heads) if h // s.kv_group in kv_heads]
        self.kv_heads = kv_heads

    # ----- helpers -----
    def emit(self, opcode: Opcode, **fields: int) -> None:
        self.out.append(make(opcode, **fields))

    def load(self, region_name: str, b: Buffer, addr: int, offset: int = 0, nbytes: int | None = None,
             rows: int = 1, hbm_stride: int = 0, buf_stride: int = 0) -> None:
        r = self.mem[region_name]
        n = r.nbytes if nbytes is None else nbytes
        self.emit(Opcode.LD, buf=b, buf_addr=addr, channel=r.channel, hbm_addr=r.addr + offset, rows=rows,
                  row_bytes=n, hbm_stride=hbm_stride or n, buf_stride=buf_stride or n)

    def misc(self, op: MiscOp, **fields: int) -> None:
        self.emit(Opcode.MISC, op=op, **fields)

    def mpe(self, m: int, **fields: int) -> None:
        if m == 1:
            for key in ("m", "a_stride", "out_stride"):
                fields.pop(key, None)
            self.emit(Opcode.MV, **fields)
        else:
            self.emit(Opcode.MM, m=m, **fields)

    def exchange(self, kind: str, b: Buffer, base: int, lo: int, hi: int) -> None:
        """Share columns [lo, hi) (bytes within a row) of an L-row tensor; afterwards every core has all of it."""
        if self.P == 1:
            return
        width = exchange_width(self.g, kind)
        slot = self.exchanges[kind] % 2
        self.exchanges[kind] += 1
        r = self.mem[f"xchg.{kind}.{slot}"]
        if hi > lo:
            self.emit(Opcode.ST, buf=b, buf_addr=base + lo, channel=r.channel, hbm_addr=r.addr + lo, rows=self.L,
                      row_bytes=hi - lo, hbm_stride=width, buf_stride=width)
        # the barrier publishes every exchange region: it orders this core's stores before, and its later
        # loads after, the barrier (the token pass sees these as the barrier's reads and writes)
        regions = [self.mem[f"xchg.{k}.{i}"] for k in EXCHANGES for i in range(2)]
        spans = [Access(hbm(x.channel), x.addr, 1, x.nbytes, 0) for x in regions]
        self.extras[len(self.out)] = (spans, spans)
        self.emit(Opcode.SYS, op=SysOp.BARRIER, arg=self.barriers)
        self.barriers += 1
        self.emit(Opcode.LD, buf=b, buf_addr=base, channel=r.channel, hbm_addr=r.addr, rows=self.L, row_bytes=width,
                  hbm_stride=width, buf_stride=width)

    # ----- ops -----
    def linear(self, name: str, src: int, m: int, dst: int, dst_row_elems: int) -> tuple[int, int]:
        """Emit this core's share; returns its output columns [lo, hi) in bytes."""
        node = self.g.node(name)
        tiles = self.mem.linears[name][self.core]
        mode: OutMode = node["out_mode"]
        elem = 1 if mode is OutMode.REQ_I8 else 4
        if tiles is None:
            return 0, 0
        fmt = node["qweight"].fmt
        lut = "lut" in node
        if lut:
            self.load(f"{name}.lut", Buffer.PRM, self.lut)
        for t, (wr, rr) in enumerate(zip(tiles.weights, tiles.records)):
            rows = wr.nbytes // tiles.row_bytes
            slot = self.tile_counter % 2
            self.tile_counter += 1
            self.load(wr.name, Buffer.WGT, self.wslot[slot])
            self.load(rr.name, Buffer.PRM, self.rec[slot])
            self.mpe(m, n=rows, k=tiles.k, a_addr=src, a_stride=tiles.k, w_buf=Buffer.WGT, w_addr=self.wslot[slot],
                     w_stride=tiles.row_bytes, w_bits=fmt.bits_code, sparsity=fmt.sparsity, group_log2=fmt.group_log2,
                     out_mode=mode, out_addr=dst + (tiles.row0 + t * tiles.tile_rows) * elem,
                     out_stride=dst_row_elems * elem, scale_addr=self.rec[slot], lut=int(lut),
                     lut_addr=self.lut if lut else 0)
        return tiles.row0 * elem, (tiles.row0 + tiles.rows) * elem

    def rope_in_place(self, act: int, width: int, lo: int, hi: int) -> None:
        """Rotate columns [lo, hi) (this core's heads) of L rows of a Q or K projection."""
        if hi > lo:
            self.misc(MiscOp.ROPE, rows=self.L, cols=hi - lo, src_buf=Buffer.ACT, src_addr=act + lo,
                      src_stride=width, dst_buf=Buffer.ACT, dst_addr=act + lo, dst_stride=width,
                      prm_addr=self.rope, imm=self.s.head_dim)

    def rmsnorm(self, name: str, rows: int, src_row: int, dst: int) -> None:
        H = self.s.hidden_size
        node = self.g.node(name)
        self.load(f"{name}.params", Buffer.PRM, self.norm)
        self.misc(MiscOp.RMSNORM, rows=rows, cols=H, src_buf=Buffer.ACC, src_addr=self.res + 4 * H * src_row,
                  src_stride=4 * H, dst_buf=Buffer.ACT, dst_addr=dst, dst_stride=H, prm_addr=self.norm,
                  shift=node["norm_shift"])

    def attention(self, name: str) -> None:
        s, L, C, d = self.s, self.L, self.C, self.s.head_dim
        qw, kvw = s.num_heads * d, s.num_kv_heads * d
        node = self.g.node(name)
        for act, kind in ((self.k, "k"), (self.v, "v")):
            for j in self.kv_heads:
                r = self.mem[f"{name}.{kind}{j}"]
                self.emit(Opcode.ST, buf=Buffer.ACT, buf_addr=act + j * d, channel=r.channel,
                          hbm_addr=r.addr + self.p0 * d, rows=L, row_bytes=d, hbm_stride=d, buf_stride=kvw)
        if self.heads:
            self.load(f"{name}.pv", Buffer.PRM, self.pv)
        sm_mult, sm_shift = node["softmax"]
        for h in self.heads:
            j = h // s.kv_group
            slot = self.head_counter % 2
            self.head_counter += 1
            self.load(f"{name}.k{j}", Buffer.KV, self.kslot[slot], nbytes=C * d)
            self.load(f"{name}.v{j}", Buffer.KV, self.vslot[slot], nbytes=C * d)
            self.mpe(L, n=C, k=d, a_addr=self.q + h * d, a_stride=qw, w_buf=Buffer.KV, w_addr=self.kslot[slot],
                     w_stride=d, w_bits=WeightBits.B8, out_mode=OutMode.ACC32, out_addr=self.scores,
                     out_stride=4 * C)
            self.misc(MiscOp.SOFTMAX, rows=L, cols=C, src_buf=Buffer.ACC, src_addr=self.scores, src_stride=4 * C,
                      dst_buf=Buffer.ACT, dst_addr=self.probs, dst_stride=C, imm=sm_mult, shift=sm_shift,
                      offset=self.p0)
            self.mpe(L, n=d, k=C, a_addr=self.probs, a_stride=C, a_unsigned=1, w_buf=Buffer.KV,
                     w_addr=self.vslot[slot], w_kmajor=1, w_stride=d, w_bits=WeightBits.B8, out_mode=OutMode.REQ_I8,
                     out_addr=self.attn + h * d, out_stride=qw, scale_addr=self.pv)
        lo = self.heads[0] * d if self.heads else 0
        hi = (self.heads[-1] + 1) * d if self.heads else 0
        self.exchange("attn", Buffer.ACT, self.attn, lo, hi)

    def step(self) -> tuple[list[Instruction], dict[int, tuple[list[Access], list[Access]]]]:
        g, s, L = self.g, self.s, self.L
        H, I, d = s.hidden_size, s.intermediate_size, s.head_dim
        qw, kvw = s.num_heads * d, s.num_kv_heads * d
        emb = self.mem["embed"]
        self.emit(Opcode.LD, buf=Buffer.ACT, buf_addr=self.x8, channel=emb.channel, hbm_addr=emb.addr, rows=L,
                  row_bytes=H, hbm_stride=H, buf_stride=H, gather=1, ids_addr=self.mem["io.ids"].addr)
        mult, shift = g.node("embed")["deq"]
        self.misc(MiscOp.DEQ, rows=L, cols=H, src_buf=Buffer.ACT, src_addr=self.x8, src_stride=H,
                  dst_buf=Buffer.ACC, dst_addr=self.res, dst_stride=4 * H, imm=mult, shift=shift)
        self.load("rope", Buffer.PRM, self.rope, offset=self.p0 * 2 * d, nbytes=L * 2 * d)
        dst_of = {"q_proj": (self.q, qw), "k_proj": (self.k, kvw), "v_proj": (self.v, kvw), "o_proj": (self.res, H),
                  "gate_proj": (self.gate, I), "up_proj": (self.up, I), "down_proj": (self.res, H)}
        src_of = {"q_proj": self.x8, "k_proj": self.x8, "v_proj": self.x8, "o_proj": self.attn,
                  "gate_proj": self.x8, "up_proj": self.x8, "down_proj": self.mul}
        own_cols = {}
        for name in g.order():
            node = g.node(name)
            op, role = node["op"], name.split(".")[-1]
            if op is OpKind.RMSNORM and name != "final_norm":
                self.rmsnorm(name, L, 0, self.x8)
            elif op is OpKind.LINEAR and name != "lm_head":
                dst, width = dst_of[role]
                own_cols[role] = self.linear(name, src_of[role], L, dst, width)
                if node.get("rope"):
                    self.rope_in_place(dst, width, *own_cols[role])
                if role in ("o_proj", "down_proj"):
                    self.exchange("res", Buffer.ACC, self.res, *own_cols[role])
            elif op is OpKind.ROPE:  # not fused: rotate the projection's output all the same
                (proj,) = node["inputs"]
                dst, width = dst_of[proj.split(".")[-1]]
                self.rope_in_place(dst, width, *own_cols[proj.split(".")[-1]])
            elif op is OpKind.ATTENTION:
                self.attention(name)
            elif op is OpKind.MUL:
                lo, hi = own_cols["gate_proj"]
                if own_cols["up_proj"] != (lo, hi):
                    raise UnsupportedError(f"layer {name}: gate and up projections are split differently")
                if hi > lo:
                    mult, shift = node["emul"]
                    self.misc(MiscOp.EMUL, rows=L, cols=hi - lo, src_buf=Buffer.ACT, src_addr=self.gate + lo,
                              src2_addr=self.up + lo, src_stride=I, dst_buf=Buffer.ACT, dst_addr=self.mul + lo,
                              dst_stride=I, imm=mult, shift=shift)
                self.exchange("mul", Buffer.ACT, self.mul, lo, hi)
            elif op in (OpKind.ADD, OpKind.EMBED):
                pass  # residual adds happen in the REQ_ADD output stage; the embedding was loaded above
            elif name in ("final_norm", "lm_head"):
                pass
            else:
                raise UnsupportedError(f"layer {name}: op {op.value} has no lowering")
        # only the last position's logits leave the chip; each core stores its rows of the LM head
        self.rmsnorm("final_norm", 1, L - 1, self.x8)
        lo, hi = self.linear("lm_head", self.x8, 1, self.logits, s.vocab_size)
        if hi > lo:
            out = self.mem["io.logits"]
            self.emit(Opcode.ST, buf=Buffer.ACC, buf_addr=self.logits + lo, channel=out.channel,
                      hbm_addr=out.addr + lo, rows=1, row_bytes=hi - lo, hbm_stride=hi - lo, buf_stride=hi - lo)
        self.emit(Opcode.SYS, op=SysOp.END)
        return self.out, self.extras


def lower_step(graph: GraphIR, cfg: HardwareConfig, mem: MemoryMap, length: int, pos0: int) -> LoweredStep:
    if length < 1:
        raise UnsupportedError("a step needs at least one token")
    cores, extras = [], []
    for core in range(cfg.num_cores):
        prog, extra = StepLowering(graph, cfg, mem, length, pos0, core).step()
        cores.append(prog)
        extras.append(extra)
    return LoweredStep(cores, extras)
