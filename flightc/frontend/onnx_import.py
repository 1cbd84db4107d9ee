"""ONNX frontend: an ONNX export of a supported model, pattern-matched back to the graph IR.

``torch.onnx.export`` decomposes the model: RMSNorm into Pow / ReduceMean / Add / Sqrt / Reciprocal /
Mul, RoPE into Mul / Slice / Neg / Concat / Add with constant cos and sin tables, attention into
MatMul / Mul / Add (mask) / Softmax / MatMul with Reshape / Transpose / Expand around them, SiLU
into Sigmoid / Mul. The matcher walks the float path from the embedding Gather, recognizes each
block, checks its constants (exponent, slice bounds, a causal or banded mask, the RoPE tables
against the recovered theta) and collects the weights under their Hugging Face names, so that
``build_graph`` makes the same IR as the Hugging Face frontend. A node no pattern covers raises an
error naming it and its op type.

Export with ``model.config.use_cache = False`` and at least 2 tokens (Mistral: more tokens than its
window, so that the band shows in the mask).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from flightc.errors import UnsupportedError
from flightc.frontend.hf import build_graph
from flightc.ir.graph import GraphIR, ModelSpec

LAYOUT_OPS = {"Reshape", "Transpose", "Unsqueeze", "Squeeze", "Expand", "Cast", "Identity"}


@dataclass
class OpNode:
    """One operation in ONNX's vocabulary (the torch.export frontend translates aten ops into it)."""

    op_type: str
    name: str
    input: list[str]
    output: list[str]


@dataclass
class OpGraph:
    nodes: list[OpNode]
    const: dict[str, np.ndarray]
    input_name: str
    output_names: set[str]


def from_onnx(model) -> OpGraph:
    import onnx
    from onnx import numpy_helper

    g = model.graph
    const = {i.name: numpy_helper.to_array(i) for i in g.initializer}
    shapes = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim]
              for v in [*g.value_info, *g.input, *g.output]}
    nodes = []
    for n in g.node:
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in n.attribute}
        if n.op_type == "Constant":
            const[n.output[0]] = numpy_helper.to_array(onnx.helper.get_attribute_value(n.attribute[0]))
        elif n.op_type == "Transpose" and n.input[0] in const and const[n.input[0]].ndim == 2 \
                and list(attrs.get("perm", [1, 0])) == [1, 0]:  # a tied LM head: the embedding table, transposed
            const[n.output[0]] = const[n.input[0]].T
        elif n.op_type == "Gelu" and attrs.get("approximate", b"none") != b"tanh":
            raise UnsupportedError(f"ONNX: {n.name!r} (Gelu) is exact GELU; flightc runs the tanh approximation "
                                   f"(Gemma's gelu_pytorch_tanh)")
        elif n.op_type == "Split":  # as one Slice per piece (Phi-3's gate_up_proj.chunk(2))
            nodes.extend(_split_as_slices(n, const, shapes))
        else:
            nodes.append(OpNode(n.op_type, n.name, list(n.input), list(n.output)))
    return OpGraph(nodes, const, g.input[0].name, {o.name for o in g.output})


def _split_as_slices(n, const: dict[str, np.ndarray], shapes: dict[str, list[int]]) -> list[OpNode]:
    """An ONNX Split as Slices of its input along its axis (sizes from its ``split`` input, else equal pieces of the
    axis's length, which the export's shapes give)."""
    import onnx

    axis = int(next((onnx.helper.get_attribute_value(a) for a in n.attribute if a.name == "axis"), 0))
    if len(n.input) > 1 and n.input[1]:
        sizes = [int(x) for x in np.asarray(const[n.input[1]]).ravel()]
    else:
        length = (shapes.get(n.input[0]) or [0] * (axis + 1))[axis]
        if not length or length % len(n.output):
            raise UnsupportedError(f"ONNX: {n.name!r} (Split) of an input whose length along axis {axis} the export "
                                   f"does not give, or that is not a multiple of its {len(n.output)} outputs")
        sizes = [length // len(n.output)] * len(n.output)
    bounds = np.cumsum([0, *sizes])
    out = []
    for i, name in enumerate(n.output):
        args = [f"{name}.{what}" for what in ("starts", "ends", "axes")]
        for arg, value in zip(args, (bounds[i], bounds[i + 1], axis)):
            const[arg] = np.array([value], np.int64)
        out.append(OpNode("Slice", f"{n.name}.{i}", [n.input[0], *args], [name]))
    return out


class _Onnx:
    """Tensor-level view of an op graph with a record of which nodes a pattern has covered."""

    def __init__(self, graph: OpGraph):
        self.input_name, self.output_names = graph.input_name, graph.output_names
        self.const = dict(graph.const)
        self.nodes = graph.nodes
        self.covered: set[int] = set()
        self.consumers: dict[str, list[int]] = {}
        self.producer: dict[str, int] = {}
        for k, n in enumerate(self.nodes):
            for t in n.input:
                self.consumers.setdefault(t, []).append(k)
            for t in n.output:
                self.producer[t] = k

    def name(self, k: int) -> str:
        n = self.nodes[k]
        return f"{n.name or n.output[0]!r} ({n.op_type})"

    def open_consumers(self, t: str, op: str | None = None) -> list[int]:
        return [k for k in self.consumers.get(t, []) if k not in self.covered
                and (op is None or self.nodes[k].op_type == op)]

    def one(self, t: str, op: str, where: str) -> int:
        found = self.open_consumers(t, op)
        if len(found) != 1:
            others = [self.name(k) for k in self.open_consumers(t)]
            raise UnsupportedError(f"ONNX {where}: expected one {op} reading {t!r}, found {len(found)} "
                                   f"(consumers: {others or 'none'})")
        self.covered.add(found[0])
        return found[0]

    def out(self, k: int) -> str:
        return self.nodes[k].output[0]

    def other(self, k: int, t: str) -> str:
        ins = [i for i in self.nodes[k].input if i != t]
        if len(ins) != 1:
            raise UnsupportedError(f"ONNX: {self.name(k)} does not combine {t!r} with one other input")
        return ins[0]

    def constant(self, t: str, where: str) -> np.ndarray:
        if t not in self.const:
            raise UnsupportedError(f"ONNX {where}: {t!r} should be a constant")
        return self.const[t]

    def through_layout(self, t: str) -> str:
        """Follow (and cover) a chain of layout-only ops that is the tensor's sole consumer."""
        while True:
            cs = self.open_consumers(t)
            if len(cs) != 1 or self.nodes[cs[0]].op_type not in LAYOUT_OPS:
                return t
            self.covered.add(cs[0])
            t = self.out(cs[0])

    def uncovered(self) -> list[str]:
        return [self.name(k) for k in range(len(self.nodes)) if k not in self.covered]


class _LlamaMatcher:
    def __init__(self, g: _Onnx):
        self.g = g
        self.weights: dict[str, np.ndarray] = {}
        self.eps: float | None = None
        self.rope_tables: tuple[np.ndarray, np.ndarray] | None = None
        self.mask: np.ndarray | None = None
        self.embed_scale = 1.0
        self.activation = "silu"

    # --- blocks ---
    def rmsnorm(self, x: str, weight_name: str, where: str) -> str:
        g = self.g
        pw = g.one(x, "Pow", where)
        if float(g.constant(g.nodes[pw].input[1], where)) != 2.0:
            raise UnsupportedError(f"ONNX {where}: {g.name(pw)} is not a square")
        mean = g.one(g.out(pw), "ReduceMean", where)
        add = g.one(g.out(mean), "Add", where)
        eps = float(g.constant(g.other(add, g.out(mean)), where))
        if self.eps is not None and eps != self.eps:
            raise UnsupportedError(f"ONNX {where}: norm epsilon {eps} differs from {self.eps}")
        self.eps = eps
        sq = g.one(g.out(add), "Sqrt", where)
        rec = g.one(g.out(sq), "Reciprocal", where)
        mul = g.one(g.out(rec), "Mul", where)
        if g.other(mul, g.out(rec)) != x:
            raise UnsupportedError(f"ONNX {where}: {g.name(mul)} does not scale the normalized input")
        mw = g.one(g.out(mul), "Mul", where)
        self.weights[weight_name] = g.constant(g.other(mw, g.out(mul)), where)
        return g.out(mw)

    def linears(self, x: str, count: int, where: str) -> list[int]:
        found = self._const_matmuls(x)
        if len(found) != count:
            raise UnsupportedError(f"ONNX {where}: expected {count} linear layers reading {x!r}, found {len(found)}")
        return found

    def linear(self, k: int, prefix: str, where: str) -> str:
        """MatMul by a constant [K, N] (plus an optional constant bias Add); records prefix.weight/.bias."""
        g = self.g
        g.covered.add(k)
        self.weights[prefix + ".weight"] = g.constant(g.nodes[k].input[1], where).T
        out = g.out(k)
        adds = g.open_consumers(out, "Add")
        for a in adds:
            other = g.other(a, out)
            if other in g.const and g.const[other].ndim == 1:
                g.covered.add(a)
                self.weights[prefix + ".bias"] = g.const[other]
                return g.out(a)
        return out

    def rope(self, t: str, where: str) -> str:
        """x * cos + cat(-x[..., d/2:], x[..., :d/2]) * sin, with constant tables."""
        g = self.g
        muls = [k for k in g.open_consumers(t, "Mul") if g.other(k, t) in g.const]
        slices = g.open_consumers(t, "Slice")
        if len(muls) != 1 or len(slices) != 2:
            raise UnsupportedError(f"ONNX {where}: expected RoPE (one Mul by a cos table and two Slices) on {t!r}")
        g.covered.update(muls + slices)
        cos = g.const[g.other(muls[0], t)]
        d = cos.shape[-1]
        bounds = {}
        for k in slices:
            start, end = (int(g.constant(g.nodes[k].input[i], where).ravel()[0]) for i in (1, 2))
            bounds[(start, min(end, d))] = k
        if set(bounds) != {(0, d // 2), (d // 2, d)}:
            raise UnsupportedError(f"ONNX {where}: RoPE slices {sorted(bounds)} are not the two halves of {d}")
        neg = g.one(g.out(bounds[(d // 2, d)]), "Neg", where)
        cat = g.one(g.out(neg), "Concat", where)
        if list(g.nodes[cat].input) != [g.out(neg), g.out(bounds[(0, d // 2)])]:
            raise UnsupportedError(f"ONNX {where}: {g.name(cat)} is not rotate_half")
        smul = g.one(g.out(cat), "Mul", where)
        sin = g.constant(g.other(smul, g.out(cat)), where)
        add = g.one(g.out(smul), "Add", where)
        if g.other(add, g.out(smul)) != g.out(muls[0]):
            raise UnsupportedError(f"ONNX {where}: {g.name(add)} does not sum the RoPE terms")
        tables = (np.asarray(cos).reshape(-1, d), np.asarray(sin).reshape(-1, d))
        if self.rope_tables is not None and not all(np.array_equal(a, b) for a, b in zip(tables, self.rope_tables)):
            raise UnsupportedError(f"ONNX {where}: RoPE tables differ between layers")
        self.rope_tables = tables
        return g.out(add)

    def scaled(self, t: str) -> tuple[str, float]:
        """An optional multiplication by a constant scalar (the exporter splits 1/sqrt(d) over q and k)."""
        g = self.g
        muls = [k for k in g.open_consumers(t, "Mul") if np.asarray(g.const.get(g.other(k, t), [[0]])).size == 1
                and g.other(k, t) in g.const]
        if len(muls) == 1 and len(g.open_consumers(t)) == 1:
            g.covered.add(muls[0])
            return g.out(muls[0]), float(g.const[g.other(muls[0], t)])
        return t, 1.0

    def attention(self, xn: str, layer: int, where: str) -> str:
        g = self.g
        p = f"model.layers.{layer}.self_attn."
        projections = self.linears(xn, 3, where)
        chains = []  # (matmul index, projection output after layout, has rope)
        for k in projections:
            t = g.through_layout(self.linear(k, f"#{k}", where))
            has_rope = len(g.open_consumers(t, "Slice")) == 2
            if has_rope:
                t = g.through_layout(self.rope(t, where))
            chains.append((k, t, has_rope))
        rotated = [c for c in chains if c[2]]
        plain = [c for c in chains if not c[2]]
        if len(rotated) != 2 or len(plain) != 1:
            raise UnsupportedError(f"ONNX {where}: expected RoPE on exactly two of the Q/K/V projections")
        (a, b), v = rotated, plain[0]
        ta, sa = self.scaled(a[1])
        tb, sb = self.scaled(b[1])
        qk = [k for k in g.open_consumers(ta, "MatMul") if set(g.nodes[k].input) == {ta, tb}]
        if len(qk) != 1:
            raise UnsupportedError(f"ONNX {where}: no MatMul of the rotated Q and K")
        qk = qk[0]
        g.covered.add(qk)
        q, k = (a, b) if g.nodes[qk].input[0] == ta else (b, a)
        scale = sa * sb
        t = g.out(qk)
        for op in ("Mul", "Div"):  # an explicit score scale instead of the split one
            cs = [c for c in g.open_consumers(t, op) if g.other(c, t) in g.const]
            if cs:
                g.covered.add(cs[0])
                s = float(g.const[g.other(cs[0], t)])
                scale *= s if op == "Mul" else 1.0 / s
                t = g.out(cs[0])
        mask_add = [c for c in g.open_consumers(t, "Add") if g.other(c, t) in g.const]
        if mask_add:
            g.covered.add(mask_add[0])
            mask = np.asarray(g.const[g.other(mask_add[0], t)])
            self.mask = mask.reshape(mask.shape[-2:])
            t = g.out(mask_add[0])
        sm = g.one(t, "Softmax", where)
        t = g.out(sm)
        nan = g.open_consumers(t, "IsNaN")
        if nan:  # the exporter's guard against fully masked rows: Where(IsNaN(p), 0, p)
            g.covered.add(nan[0])
            wh = g.one(g.out(nan[0]), "Where", where)
            t = g.out(wh)
        pv = [c for c in g.open_consumers(t, "MatMul") if g.nodes[c].input[0] == t]
        vt = v[1]
        if len(pv) != 1 or g.nodes[pv[0]].input[1] != vt:
            raise UnsupportedError(f"ONNX {where}: attention probabilities are not multiplied by V")
        g.covered.add(pv[0])
        d = self.rope_tables[0].shape[-1]
        if not np.isclose(scale, 1.0 / np.sqrt(d), rtol=1e-5):
            raise UnsupportedError(f"ONNX {where}: attention scale {scale:.6g} is not 1/sqrt({d})")
        for (kk, _, _), role in ((q, "q_proj"), (k, "k_proj"), (v, "v_proj")):
            for part in ("weight", "bias"):
                if f"#{kk}.{part}" in self.weights:
                    self.weights[f"{p}{role}.{part}"] = self.weights.pop(f"#{kk}.{part}")
        o_in = g.through_layout(g.out(pv[0]))
        (o,) = self.linears(o_in, 1, where)
        return self.linear(o, p + "o_proj", where)

    def mlp(self, xn: str, layer: int, where: str) -> str:
        """gate -> SiLU (Sigmoid, Mul) or GELU (tanh; Gemma) -> Mul by up -> down."""
        g = self.g
        p = f"model.layers.{layer}.mlp."
        a, b = self.linears(xn, 2, where)
        gated = {op: [k for k in (a, b) if g.open_consumers(g.out(k), op)] for op in ("Gelu", "Sigmoid")}
        op = next((op for op, ks in gated.items() if len(ks) == 1), None)
        if op is None:
            readers = [g.name(c) for k in (a, b) for c in g.open_consumers(g.out(k))]
            raise UnsupportedError(f"ONNX {where}: expected SiLU (Sigmoid, Mul) or GELU (Gelu) on one MLP "
                                   f"projection; they are read by {readers}")
        gate = gated[op][0]
        up = b if gate == a else a
        gate_out = self.linear(gate, p + "gate_proj", where)
        up_out = self.linear(up, p + "up_proj", where)
        act = g.out(g.one(gate_out, op, where))
        if op == "Gelu":
            self.activation = "gelu_tanh"
        else:
            silu = g.one(act, "Mul", where)
            if g.other(silu, act) != gate_out:
                raise UnsupportedError(f"ONNX {where}: {g.name(silu)} is not SiLU")
            act = g.out(silu)
        mul = g.one(act, "Mul", where)
        if g.other(mul, act) != up_out:
            raise UnsupportedError(f"ONNX {where}: {g.name(mul)} does not gate the up projection")
        (down,) = self.linears(g.out(mul), 1, where)
        return self.linear(down, p + "down_proj", where)

    def residual(self, x: str, branch: str, where: str) -> str:
        g = self.g
        add = [k for k in g.open_consumers(branch, "Add") if set(g.nodes[k].input) == {x, branch}]
        if len(add) != 1:
            raise UnsupportedError(f"ONNX {where}: no residual Add of {branch!r} into {x!r}")
        g.covered.add(add[0])
        return g.out(add[0])

    def run(self) -> str:
        g = self.g
        ids = g.input_name
        emb = g.one(ids, "Gather", "embedding")
        self.weights["model.embed_tokens.weight"] = g.constant(g.nodes[emb].input[0], "embedding")
        x = g.out(emb)
        scaled = [k for k in g.open_consumers(x, "Mul") if np.asarray(g.const.get(g.other(k, x), [0, 0])).size == 1
                  and g.other(k, x) in g.const]
        if scaled:  # Gemma: the embedding times a constant (sqrt(hidden) in the model's dtype)
            g.covered.add(scaled[0])
            self.embed_scale = float(np.asarray(g.const[g.other(scaled[0], x)]).ravel()[0])
            x = g.out(scaled[0])
        layer = 0
        outputs = g.output_names
        while True:
            where = f"layer {layer}"
            xn = self.rmsnorm(x, f"model.layers.{layer}.input_layernorm.weight", where)
            if len(self._const_matmuls(xn)) == 1:  # the final norm and the LM head
                self.weights["model.norm.weight"] = self.weights.pop(f"model.layers.{layer}.input_layernorm.weight")
                (head,) = self.linears(xn, 1, "LM head")
                logits = self.linear(head, "lm_head", "LM head")
                if logits not in outputs:
                    raise UnsupportedError(f"ONNX: the LM head output {logits!r} is not the graph output")
                return logits
            x = self.residual(x, self.attention(xn, layer, where), where)
            xn = self.rmsnorm(x, f"model.layers.{layer}.post_attention_layernorm.weight", where)
            x = self.residual(x, self.mlp(xn, layer, where), where)
            layer += 1

    def _const_matmuls(self, x: str) -> list[int]:
        """Open MatMuls reading x with a constant right-hand side: linear layers."""
        return [k for k in self.g.open_consumers(x, "MatMul") if self.g.nodes[k].input[1] in self.g.const]


def _rope_theta(cos: np.ndarray, sin: np.ndarray) -> float:
    """The integer theta whose float32 tables (computed as transformers does) equal the exported ones."""
    import torch

    L, d = cos.shape
    if L < 2:
        raise UnsupportedError("ONNX: export with at least 2 tokens so that the RoPE frequencies can be read")
    inv1 = float(np.arctan2(sin[1, 1], cos[1, 1]))
    estimate = inv1 ** (-d / 2)
    theta = float(round(estimate))
    inv = 1.0 / (theta ** (torch.arange(0, d, 2, dtype=torch.int64).float() / d))
    freqs = torch.arange(L).float()[:, None] * inv[None, :]
    emb = torch.cat([freqs, freqs], dim=-1)
    if not (np.allclose(emb.cos().numpy(), cos, atol=1e-6) and np.allclose(emb.sin().numpy(), sin, atol=1e-6)):
        raise UnsupportedError(f"ONNX: the RoPE tables match no integer theta (estimate {estimate:.4f})")
    return theta


def _window(mask: np.ndarray | None) -> int:
    """0 for a plain causal mask, w for a band of the last w positions; anything else is refused."""
    if mask is None:
        return 0
    L = mask.shape[-1]
    seen = mask > -1e30
    causal = np.tril(np.ones((L, L), dtype=bool))
    if np.array_equal(seen, causal):
        return 0
    w = int(seen[-1].sum())
    band = causal & ~np.tril(np.ones((L, L), dtype=bool), -w)
    if not np.array_equal(seen, band):
        raise UnsupportedError("ONNX: the attention mask is neither causal nor a causal sliding window")
    return w


def load_onnx(path: str | Path) -> GraphIR:
    """Import an ONNX export (as written by torch.onnx.export) of a LLaMA-family model."""
    import onnx

    model = onnx.load(str(path))
    if model.graph.node and all(n.name.startswith("/") for n in model.graph.node):
        raise UnsupportedError(f"{Path(path).name}: written by the TorchScript exporter (torch.onnx.export(..., "
                               f"dynamo=False): its node names are module scopes such as "
                               f"{model.graph.node[0].name!r}), whose decomposition flightc does not match; export "
                               f"with torch.onnx.export(model, (ids,), dynamo=True) and model.config.use_cache = "
                               f"False (for transformers' LLaMA models the TorchScript exporter stops at aten::diff "
                               f"in torch 2.13 anyway)")
    return match_llama(from_onnx(model), Path(path).name)


def _slice_bounds(n: OpNode, const: dict[str, np.ndarray], width: int) -> tuple[int, int] | None:
    """The columns [start, end) a Slice takes along the last axis of a [batch, tokens, width] tensor, else None."""
    if n.op_type != "Slice" or any(i not in const for i in n.input[1:]):
        return None
    starts, ends, axes = (np.asarray(const[i]).ravel() for i in n.input[1:4]) if len(n.input) >= 4 else (None,) * 3
    steps = np.asarray(const[n.input[4]]).ravel() if len(n.input) > 4 else np.ones(1)
    if starts is None or len(axes) != 1 or int(axes[0]) not in (-1, 2) or int(steps[0]) != 1:
        return None
    start, end = int(starts[0]), min(int(ends[0]), width)
    return (start, end) if 0 <= start < end else None


def unfuse_linears(graph: OpGraph) -> tuple[OpGraph, bool]:
    """A linear layer whose outputs' columns are sliced apart (Phi-3's qkv_proj, gate_up_proj) as one linear layer
    per slice, its weight's columns; whether there was one."""
    const = dict(graph.const)
    readers: dict[str, list[OpNode]] = {}
    for n in graph.nodes:
        for t in n.input:
            readers.setdefault(t, []).append(n)
    split: dict[int, list[OpNode]] = {}  # id of a fused MatMul -> the MatMuls that replace it and its Slices
    gone: set[int] = set()
    for n in graph.nodes:
        if n.op_type != "MatMul" or n.input[1] not in const or np.asarray(const[n.input[1]]).ndim != 2:
            continue
        w = np.asarray(const[n.input[1]])
        cs = readers.get(n.output[0], [])
        bounds = [_slice_bounds(c, const, w.shape[1]) for c in cs]
        if len(cs) < 2 or None in bounds or sorted(bounds)[0][0] != 0 or sorted(bounds)[-1][1] != w.shape[1] \
                or any(a[1] != b[0] for a, b in zip(sorted(bounds), sorted(bounds)[1:])):
            continue
        parts = []
        for c, (start, end) in zip(cs, bounds):
            const[c.name + ".w"] = w[:, start:end]
            parts.append(OpNode("MatMul", c.name, [n.input[0], c.name + ".w"], list(c.output)))
            gone.add(id(c))
        split[id(n)] = parts
    nodes = [m for n in graph.nodes if id(n) not in gone for m in split.get(id(n), [n])]
    return OpGraph(nodes, const, graph.input_name, graph.output_names), bool(split)


def match_llama(graph: OpGraph, source: str) -> GraphIR:
    """Recognize a LLaMA-family decoder in an op graph; every node must belong to a recognized block."""
    graph, fused = unfuse_linears(graph)
    g = _Onnx(graph)
    m = _LlamaMatcher(g)
    m.run()
    left = g.uncovered()
    if left:
        raise UnsupportedError(f"{source}: no pattern covers node {left[0]}"
                               + (f" (and {len(left) - 1} more)" if len(left) > 1 else ""))
    w = m.weights
    d = m.rope_tables[0].shape[-1]
    layers = sum(1 for k in w if k.endswith("input_layernorm.weight"))
    q_bias = "model.layers.0.self_attn.q_proj.bias" in w
    o_bias = "model.layers.0.self_attn.o_proj.bias" in w
    window = _window(m.mask)
    family = ("gemma" if m.activation == "gelu_tanh" else "phi3" if fused else "mistral" if window
              else "qwen2" if q_bias and not o_bias else "llama")
    spec = ModelSpec(family=family, vocab_size=w["model.embed_tokens.weight"].shape[0],
                     hidden_size=w["model.embed_tokens.weight"].shape[1],
                     intermediate_size=w["model.layers.0.mlp.gate_proj.weight"].shape[0], num_layers=layers,
                     num_heads=w["model.layers.0.self_attn.q_proj.weight"].shape[0] // d,
                     num_kv_heads=w["model.layers.0.self_attn.k_proj.weight"].shape[0] // d, head_dim=d,
                     rope_theta=_rope_theta(*m.rope_tables), rms_eps=float(np.float32(m.eps)), max_positions=0,
                     sliding_window=window)
    return build_graph(spec, w, tied=False, embed_scale=m.embed_scale)
