"""The graph IR: a networkx DiGraph of model ops, annotated by the compiler passes.

A node is one op producing one tensor; its ``inputs`` attribute lists the producing nodes in
argument order (edges exist too, for traversal). Passes never mutate their input: each returns
a new :class:`GraphIR` (``copy``) with nodes added, removed or annotated.
"""
from __future__ import annotations

import copy as _copy
from dataclasses import asdict, dataclass
from enum import Enum
from typing import Any, Callable, Iterator

import networkx as nx

from flightc.errors import ProgramError
from flightc.rope import RopeScaling


class OpKind(str, Enum):
    EMBED = "embed"  # token ids (plus learned positions, OPT) -> residual stream
    RMSNORM = "rmsnorm"
    LAYERNORM = "layernorm"
    LINEAR = "linear"
    ROPE = "rope"
    ATTENTION = "attention"  # causal multi-head / grouped-query attention with KV cache (QK^T, softmax, PV)
    SILU = "silu"
    GELU_TANH = "gelu_tanh"  # GELU's tanh approximation (Gemma's gelu_pytorch_tanh)
    RELU = "relu"
    MUL = "mul"
    ADD = "add"  # residual add


LUT_ACTIVATIONS = (OpKind.SILU, OpKind.GELU_TANH, OpKind.RELU)  # element-wise ops the MPE output stage applies by table


class Stage(str, Enum):
    """The passes' order: each stage holds everything the ones before it do."""

    FLOAT = "float"  # the frontends' graph: float weights
    COMPRESSED = "compressed"  # + quantized weights (pass compress)
    CALIBRATED = "calibrated"  # + activation ranges (pass calibrate)
    INTEGER = "integer"  # + the datapath's integer parameters (pass integerize)
    FUSED = "fused"  # + activations and RoPE folded into the linear layers' output stage (pass fuse)

    @property
    def rank(self) -> int:
        return list(Stage).index(self)


@dataclass(frozen=True)
class ModelSpec:
    """The shape of a decoder-only transformer: everything the compiler needs besides weights."""

    family: str
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    rope_theta: float
    rms_eps: float  # epsilon of every norm (RMSNorm or LayerNorm)
    max_positions: int  # the model's trained context (0: unknown, as from an ONNX graph); checked, not stored
    sliding_window: int = 0  # 0: full causal attention
    learned_positions: int = 0  # rows of a learned positional table (OPT); 0: RoPE
    position_offset: int = 0  # index of position 0 in that table (OPT: 2)
    rope_scaling: RopeScaling = RopeScaling()  # the rotary frequencies' scaling (flightc.rope)

    @property
    def kv_group(self) -> int:
        return self.num_heads // self.num_kv_heads

    def to_dict(self) -> dict:
        """What a bundle records: the shape, not where it came from (so every frontend agrees)."""
        d = asdict(self)
        d.pop("max_positions")
        d["rope_scaling"] = self.rope_scaling.to_dict()
        return d


@dataclass
class GraphIR:
    spec: ModelSpec
    g: nx.DiGraph
    stage: Stage = Stage.FLOAT  # float -> compressed -> calibrated -> integer -> fused (a name is taken too)

    def __post_init__(self) -> None:
        if self.stage not in Stage._value2member_map_:
            raise ProgramError(f"graph IR: stage {self.stage!r} is none of {[s.value for s in Stage]}")
        self.stage = Stage(self.stage)

    def add(self, name: str, op: OpKind, inputs: list[str], layer: int | None = None, **attrs: Any) -> str:
        for i in inputs:
            if i not in self.g:
                raise KeyError(f"graph: input {i!r} of {name!r} does not exist")
        self.g.add_node(name, op=op, inputs=list(inputs), layer=layer, **attrs)
        for i in inputs:
            self.g.add_edge(i, name)
        return name

    def node(self, name: str) -> dict:
        return self.g.nodes[name]

    def order(self) -> list[str]:
        """Topological order, ties broken by insertion order (deterministic)."""
        index = {n: i for i, n in enumerate(self.g.nodes)}
        return list(nx.lexicographical_topological_sort(self.g, key=lambda n: index[n]))

    def nodes_of(self, op: OpKind) -> Iterator[str]:
        return (n for n in self.order() if self.g.nodes[n]["op"] is op)

    def consumers(self, name: str) -> list[str]:
        return list(self.g.successors(name))

    def remove_and_bypass(self, name: str, replacement: str) -> None:
        """Drop ``name``; its consumers read ``replacement`` instead."""
        for c in self.consumers(name):
            ins = self.g.nodes[c]["inputs"]
            self.g.nodes[c]["inputs"] = [replacement if i == name else i for i in ins]
            self.g.add_edge(replacement, c)
        self.g.remove_node(name)

    @property
    def output(self) -> str:
        sinks = [n for n in self.g.nodes if self.g.out_degree(n) == 0]
        if len(sinks) != 1:
            raise ValueError(f"graph has {len(sinks)} outputs: {sinks}")
        return sinks[0]

    def copy(self, stage: Stage | str | None = None) -> "GraphIR":
        """A copy whose node attribute dicts may be changed freely (arrays are shared, never mutated)."""
        g = nx.DiGraph()
        for n, attrs in self.g.nodes(data=True):
            g.add_node(n, **{k: (_copy.copy(v) if isinstance(v, (dict, list)) else v) for k, v in attrs.items()})
        g.add_edges_from(self.g.edges)
        return GraphIR(self.spec, g, stage or self.stage)

    def linears(self) -> list[str]:
        return list(self.nodes_of(OpKind.LINEAR))


Handler = Callable[..., Any]


def interpret(graph: GraphIR, handlers: dict[OpKind, Handler]) -> dict[str, Any]:
    """Evaluate every node in topological order: ``handlers[op](name, node, *input_values)``.

    An op without a handler raises (so a new op kind cannot be skipped silently).
    """
    return evaluate(graph, handlers, graph.order(), {})


def evaluate(graph: GraphIR, handlers: dict[OpKind, Handler], names: list[str], values: dict[str, Any]
             ) -> dict[str, Any]:
    """Evaluate ``names`` (in topological order) into ``values``, which holds their inputs from outside them."""
    for name in names:
        node = graph.node(name)
        handler = handlers.get(node["op"])
        if handler is None:
            raise NotImplementedError(f"no handler for op {node['op'].value} (node {name})")
        values[name] = handler(name, node, *(values[i] for i in node["inputs"]))
    return values


def stream_values(graph: GraphIR, handlers: dict[OpKind, Handler]) -> Iterator[tuple[str, Any]]:
    """Every node's value in topological order, as :func:`interpret` computes them, each dropped once the last
    node that reads it has run: a whole model's activations are never held at once."""
    order = graph.order()
    last = {}
    for i, name in enumerate(order):
        for src in graph.node(name)["inputs"]:
            last[src] = i
    values: dict[str, Any] = {}
    for i, name in enumerate(order):
        evaluate(graph, handlers, [name], values)
        yield name, values[name]
        for src in set(graph.node(name)["inputs"]) | {name}:
            if last.get(src, -1) <= i:
                values.pop(src, None)


def layer_runs(graph: GraphIR) -> list[list[str]]:
    """The topological order cut where the ``layer`` attribute changes: embedding, each decoder layer, head."""
    runs: list[list[str]] = []
    last = object()
    for name in graph.order():
        layer = graph.node(name).get("layer")
        if not runs or layer != last:
            runs.append([])
            last = layer
        runs[-1].append(name)
    return runs
