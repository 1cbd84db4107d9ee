"""Pass ``lower``: one forward step (L new tokens at positions p0..p0+L-1) -> an instruction list.

Prefill is L = prompt length at p0 = 0 (MM instructions); decode is L = 1 at the token's position
(MV instructions). Always on chip: within a step, activations and the residual stream stay in the
on-chip buffers; only K/V rows of the cache and the final logits are stored to memory. Wait/release
tokens are added afterwards by the ``tokens`` pass.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from flightc import numerics as nm
from flightc.config import Buffer, HardwareConfig
from flightc.errors import UnsupportedError
from flightc.compiler.memory import MemoryMap
from flightc.ir.graph import GraphIR, OpKind
from flightc.isa.codec import Instruction, make
from flightc.isa.footprint import LUT_BYTES
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


class StepLowering:
    """Emits the instructions of one step of a fused, integerized graph."""

    def __init__(self, graph: GraphIR, cfg: HardwareConfig, mem: MemoryMap, length: int, pos0: int):
        if graph.stage != "fused":
            raise ValueError(f"lower needs a fused graph, got stage {graph.stage!r}")
        self.g, self.cfg, self.mem = graph, cfg, mem
        self.L, self.p0 = length, pos0
        self.C = pos0 + length
        self.out: list[Instruction] = []
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
        rec_bytes = max(t.tile_rows for t in mem.linears.values()) * nm.REQUANT_RECORD_BYTES
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

    # ----- ops -----
    def linear(self, name: str, src: int, m: int, dst: int, dst_row_elems: int) -> None:
        node = self.g.node(name)
        tiles = self.mem.linears[name]
        fmt = node["qweight"].fmt
        mode: OutMode = node["out_mode"]
        elem = 1 if mode is OutMode.REQ_I8 else 4
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
                     out_mode=mode, out_addr=dst + t * tiles.tile_rows * elem, out_stride=dst_row_elems * elem,
                     scale_addr=self.rec[slot], lut=int(lut), lut_addr=self.lut if lut else 0)

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
            for j in range(s.num_kv_heads):
                r = self.mem[f"{name}.{kind}{j}"]
                self.emit(Opcode.ST, buf=Buffer.ACT, buf_addr=act + j * d, channel=r.channel,
                          hbm_addr=r.addr + self.p0 * d, rows=L, row_bytes=d, hbm_stride=d, buf_stride=kvw)
        self.load(f"{name}.pv", Buffer.PRM, self.pv)
        sm_mult, sm_shift = node["softmax"]
        for h in range(s.num_heads):
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

    def step(self) -> list[Instruction]:
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
        for name in g.order():
            node = g.node(name)
            op, role = node["op"], name.split(".")[-1]
            if op is OpKind.RMSNORM and name != "final_norm":
                self.rmsnorm(name, L, 0, self.x8)
            elif op is OpKind.LINEAR and name != "lm_head":
                dst, width = dst_of[role]
                self.linear(name, src_of[role], L, dst, width)
            elif op is OpKind.ROPE:
                act, width = (self.q, qw) if role == "q_rope" else (self.k, kvw)
                self.misc(MiscOp.ROPE, rows=L, cols=width, src_buf=Buffer.ACT, src_addr=act, src_stride=width,
                          dst_buf=Buffer.ACT, dst_addr=act, dst_stride=width, prm_addr=self.rope, imm=d)
            elif op is OpKind.ATTENTION:
                self.attention(name)
            elif op is OpKind.MUL:
                mult, shift = node["emul"]
                self.misc(MiscOp.EMUL, rows=L, cols=I, src_buf=Buffer.ACT, src_addr=self.gate, src2_addr=self.up,
                          src_stride=I, dst_buf=Buffer.ACT, dst_addr=self.mul, dst_stride=I, imm=mult, shift=shift)
            elif op in (OpKind.ADD, OpKind.EMBED):
                pass  # residual adds happen in the REQ_ADD output stage; the embedding was loaded above
            elif name in ("final_norm", "lm_head"):
                pass
            else:
                raise UnsupportedError(f"layer {name}: op {op.value} has no lowering")
        # only the last position's logits leave the chip
        self.rmsnorm("final_norm", 1, L - 1, self.x8)
        self.linear("lm_head", self.x8, 1, self.logits, s.vocab_size)
        out = self.mem["io.logits"]
        self.emit(Opcode.ST, buf=Buffer.ACC, buf_addr=self.logits, channel=out.channel, hbm_addr=out.addr, rows=1,
                  row_bytes=4 * s.vocab_size, hbm_stride=4 * s.vocab_size, buf_stride=4 * s.vocab_size)
        self.emit(Opcode.SYS, op=SysOp.END)
        return self.out


def lower_step(graph: GraphIR, cfg: HardwareConfig, mem: MemoryMap, length: int, pos0: int) -> list[Instruction]:
    if cfg.num_cores != 1:
        raise UnsupportedError(f"preset {cfg.name!r} has {cfg.num_cores} cores; this compiler lowers to one core "
                               f"(multi-core partitioning is not implemented yet): use "
                               f"`--hw` with num_cores = 1, e.g. a JSON config derived from the preset")
    if length < 1:
        raise UnsupportedError("a step needs at least one token")
    return StepLowering(graph, cfg, mem, length, pos0).step()
