"""The graph IR: model ops in a dict of nodes, annotated by the compiler passes.

A node is one op producing one tensor; its ``inputs`` attribute (a tuple) lists the producing nodes in argument
order and is the only record of the graph's structure: the consumers and the topological order are derived from it.
Passes never mutate their input: each returns a new :class:`GraphIR` (``copy``) with nodes added, removed or
annotated; the structure changes only through :meth:`GraphIR.add` and :meth:`GraphIR.remove_and_bypass`.
"""
from __future__ import annotations

import copy as _copy
import heapq
from dataclasses import asdict, dataclass, field
from enum import Enum
from typing import Any, Callable, Iterator

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


class Node(dict):
    """One node's attributes. ``inputs`` is the graph's structure: written once, by :meth:`GraphIR.add`, and changed
    only by :meth:`GraphIR.remove_and_bypass`, so the consumers and order derived from it stay right."""

    def _refuse(self, keys) -> None:
        if "inputs" in keys:
            raise ProgramError("a node's 'inputs' are the graph's structure: change them through GraphIR "
                               "(add, remove_and_bypass), not the node's attributes")

    def __setitem__(self, key, value) -> None:
        self._refuse((key,))
        super().__setitem__(key, value)

    def __delitem__(self, key) -> None:
        self._refuse((key,))
        super().__delitem__(key)

    def update(self, *args, **kwargs) -> None:
        more = dict(*args, **kwargs)
        self._refuse(more)
        super().update(more)

    def pop(self, key, *default):
        self._refuse((key,))
        return super().pop(key, *default)

    def setdefault(self, key, default=None):
        self._refuse(() if key in self else (key,))
        return super().setdefault(key, default)

    def popitem(self):
        raise ProgramError("a node's attributes are removed by name")

    def clear(self) -> None:
        self._refuse(self)

    def __ior__(self, other):
        self.update(other)
        return self

    def __reduce__(self):  # pickling refills a dict subclass item by item, which would be refused
        return _node, (dict(self),)


def _node(attrs: dict) -> Node:
    node = Node()
    dict.update(node, attrs)
    return node


@dataclass
class GraphIR:
    spec: ModelSpec
    stage: Stage = Stage.FLOAT  # float -> compressed -> calibrated -> integer -> fused (a name is taken too)
    _nodes: dict[str, Node] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if self.stage not in Stage._value2member_map_:
            raise ProgramError(f"graph IR: stage {self.stage!r} is none of {[s.value for s in Stage]}")
        self.stage = Stage(self.stage)
        self._derived: tuple[list[str], dict[str, list[str]]] | None = None  # (order, consumers), from the inputs

    def add(self, name: str, op: OpKind, inputs: list[str], layer: int | None = None, **attrs: Any) -> str:
        if name in self._nodes:
            raise KeyError(f"graph: node {name!r} exists already")
        for i in inputs:
            if i not in self._nodes:
                raise KeyError(f"graph: input {i!r} of {name!r} does not exist")
        self._nodes[name] = _node({"op": op, "inputs": tuple(inputs), "layer": layer, **attrs})
        self._derived = None
        return name

    def __contains__(self, name: object) -> bool:
        return name in self._nodes

    def __len__(self) -> int:
        return len(self._nodes)

    def node(self, name: str) -> Node:
        return self._nodes[name]

    def items(self) -> Iterator[tuple[str, Node]]:
        """Every node with its attributes, in insertion order."""
        return iter(self._nodes.items())

    def _structure(self) -> tuple[list[str], dict[str, list[str]]]:
        """The topological order (ties broken by insertion order: deterministic) and each node's consumers (in
        insertion order), derived from the nodes' inputs once per structural change."""
        if self._derived is None:
            index = {n: i for i, n in enumerate(self._nodes)}
            consumers: dict[str, list[str]] = {n: [] for n in self._nodes}
            waiting = {}
            for n, node in self._nodes.items():
                sources = dict.fromkeys(node["inputs"])
                waiting[n] = len(sources)
                for src in sources:
                    consumers[src].append(n)
            ready = [(index[n], n) for n, w in waiting.items() if w == 0]
            heapq.heapify(ready)
            order = []
            while ready:
                _, n = heapq.heappop(ready)
                order.append(n)
                for c in consumers[n]:
                    waiting[c] -= 1
                    if waiting[c] == 0:
                        heapq.heappush(ready, (index[c], c))
            if len(order) != len(self._nodes):
                stuck = [n for n in self._nodes if waiting[n]]
                raise ProgramError(f"graph IR: nodes {stuck[:4]} read each other in a cycle")
            self._derived = (order, consumers)
        return self._derived

    def order(self) -> list[str]:
        """Topological order, ties broken by insertion order (deterministic)."""
        return list(self._structure()[0])

    def nodes_of(self, op: OpKind) -> Iterator[str]:
        return (n for n in self.order() if self._nodes[n]["op"] is op)

    def consumers(self, name: str) -> list[str]:
        return list(self._structure()[1][name])

    def remove_and_bypass(self, name: str, replacement: str) -> None:
        """Drop ``name``; its consumers read ``replacement`` instead."""
        for c in self.consumers(name):
            node = self._nodes[c]
            dict.__setitem__(node, "inputs", tuple(replacement if i == name else i for i in node["inputs"]))
        del self._nodes[name]
        self._derived = None

    @property
    def output(self) -> str:
        consumers = self._structure()[1]
        sinks = [n for n in self._nodes if not consumers[n]]
        if len(sinks) != 1:
            raise ValueError(f"graph has {len(sinks)} outputs: {sinks}")
        return sinks[0]

    def copy(self, stage: Stage | str | None = None) -> "GraphIR":
        """A copy whose node attribute dicts may be changed freely (arrays are shared, never mutated)."""
        out = GraphIR(self.spec, stage or self.stage)
        for n, attrs in self._nodes.items():
            out._nodes[n] = _node({k: _copy.copy(v) if isinstance(v, (dict, list)) else v for k, v in attrs.items()})
        return out

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
