"""torch.export frontend: an ExportedProgram (aten ops) of a supported model -> graph IR.

The program is run once on its example inputs; every node that does not depend on the token
embedding (masks, positions, RoPE tables) is folded into a constant. The remaining aten ops are
translated into the ONNX vocabulary (``aten.linear`` -> MatMul + Add, ``aten.rsqrt`` -> Sqrt +
Reciprocal, ``aten.silu`` -> Sigmoid + Mul, ``aten.scaled_dot_product_attention`` -> MatMul, scale,
mask, Softmax, MatMul) and matched by the same patterns as the ONNX frontend, so both give the
Hugging Face path's IR. An aten op with no translation raises an error naming the node and its op.
"""
from __future__ import annotations

import importlib
import logging
import math
import operator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from flightc.errors import UnsupportedError
from flightc.frontend.onnx_import import OpGraph, OpNode, match_llama
from flightc.ir.graph import GraphIR

ALIASES = {"to.dtype", "to.dtype_layout", "to.device", "type_as.default", "_to_copy.default", "contiguous.default",
           "clone.default", "alias.default", "dropout.default"}
LAYOUT = {"view.default", "reshape.default", "transpose.int", "unsqueeze.default", "expand.default",
          "permute.default", "squeeze.dim", "_unsafe_view.default"}
SKIP = {"_assert_tensor_metadata.default"}


def _op(target: Any) -> str:
    return "getitem" if target is operator.getitem else str(target).removeprefix("aten.")


def _values(ep) -> tuple[dict[str, Any], str]:
    """Every node's value on the example inputs, and the name of the token-id input."""
    import torch

    sig = ep.graph_signature
    state = {**ep.state_dict, **getattr(ep, "constants", {})}
    args, kwargs = ep.example_inputs
    user = list(args) + list(kwargs.values())
    placeholders = [n for n in ep.graph.nodes if n.op == "placeholder"]
    feeds, users = [], iter(user)
    to_state = {**sig.inputs_to_parameters, **sig.inputs_to_buffers, **getattr(sig, "inputs_to_lifted_tensor_constants", {})}
    for p in placeholders:
        feeds.append(state[to_state[p.name]] if p.name in to_state else next(users))
    ids_name = next(p.name for p in placeholders if p.name not in to_state)
    values: dict[str, Any] = {}

    class Recorder(torch.fx.Interpreter):
        def run_node(self, n):
            out = super().run_node(n)
            values[n.name] = out
            return out

    with torch.no_grad():
        Recorder(ep.graph_module).run(*feeds)
    return values, ids_name


def from_exported(ep) -> OpGraph:
    import torch

    values, ids_name = _values(ep)
    graph = ep.graph
    emb = [n for n in graph.nodes if n.op == "call_function" and _op(n.target) == "embedding.default"]
    if len(emb) != 1:
        raise UnsupportedError(f"torch.export: expected one aten.embedding, found {len(emb)}")
    live: set[str] = set()
    stack = [emb[0]]
    while stack:  # the float path: everything downstream of the embedding
        n = stack.pop()
        if n.name not in live:
            live.add(n.name)
            stack.extend(n.users)
    const: dict[str, np.ndarray] = {}
    alias: dict[str, str] = {}
    nodes: list[OpNode] = []
    counter = [0]

    def arr(v) -> np.ndarray:
        return v.detach().double().numpy() if isinstance(v, torch.Tensor) and v.is_floating_point() else np.asarray(
            v.detach().numpy() if isinstance(v, torch.Tensor) else v)

    def ref(a) -> str:
        """A tensor name for an argument: a float-path node, or a constant (folded node or literal)."""
        if isinstance(a, torch.fx.Node):
            if a.name in live:
                return alias.get(a.name, a.name)
            const.setdefault(a.name, arr(values[a.name]))
            return a.name
        counter[0] += 1
        name = f"lit{counter[0]}"
        const[name] = np.asarray(a, dtype=np.float64 if isinstance(a, float) else None)
        return name

    def fresh(base: str) -> str:
        counter[0] += 1
        return f"{base}.{counter[0]}"

    def emit(op_type: str, name: str, inputs: list[str], output: str) -> None:
        nodes.append(OpNode(op_type, name, inputs, [output]))

    outputs: set[str] = set()
    pieces: dict[str, tuple[str, int, list[int]]] = {}  # a chunk/split: its input, dim and the pieces' bounds
    empty: set[str] = set()  # slices of no elements
    for n in graph.nodes:
        if n.op == "output":
            first = n.args[0][0] if isinstance(n.args[0], (tuple, list)) else n.args[0]
            outputs.add(alias.get(first.name, first.name))
        if n.op != "call_function" or n.name not in live:
            continue
        op = _op(n.target)
        a = n.args
        if op in SKIP:
            continue
        if op in ALIASES or (op == "slice.Tensor" and values[n.name].shape == values[a[0].name].shape):
            alias[n.name] = ref(a[0])
        elif op == "slice.Tensor" and values[n.name].numel() == 0:  # (the pass-through part of a full rotation)
            empty.add(n.name)
        elif op == "cat.default" and any(x.name in empty for x in a[0]):
            kept = [x for x in a[0] if x.name not in empty]
            if len(kept) == 1:
                alias[n.name] = ref(kept[0])
            else:
                emit("Concat", n.name, [ref(x) for x in kept], n.name)
        elif op == "embedding.default":
            emit("Gather", n.name, [ref(a[0]), ids_name], n.name)
        elif op == "pow.Tensor_Scalar":
            emit("Pow", n.name, [ref(a[0]), ref(float(a[1]))], n.name)
        elif op == "mean.dim":
            emit("ReduceMean", n.name, [ref(a[0]), ref(a[1])], n.name)
        elif op in ("add.Tensor", "mul.Tensor"):
            if op == "add.Tensor" and n.kwargs.get("alpha", 1) != 1:
                raise UnsupportedError(f"torch.export: node {n.name!r} (aten.{op}) has alpha != 1")
            emit("Add" if op == "add.Tensor" else "Mul", n.name, [ref(a[0]), ref(a[1])], n.name)
        elif op == "rsqrt.default":
            t = fresh(n.name)
            emit("Sqrt", n.name + ".sqrt", [ref(a[0])], t)
            emit("Reciprocal", n.name, [t], n.name)
        elif op == "linear.default":
            w = fresh(n.name + ".wT")
            const[w] = arr(values[a[1].name]).T
            bias = a[2] if len(a) > 2 else None
            out = fresh(n.name) if bias is not None else n.name
            emit("MatMul", n.name, [ref(a[0]), w], out)
            if bias is not None:
                emit("Add", n.name + ".bias", [out, ref(bias)], n.name)
        elif op in LAYOUT:
            emit("Reshape", n.name, [ref(a[0])], n.name)
        elif op == "slice.Tensor":
            dim, start, end = (list(a[1:]) + [0, 0, 2 ** 63 - 1])[:3]
            emit("Slice", n.name, [ref(a[0]), ref(np.array([start])), ref(np.array([end])), ref(np.array([dim]))],
                 n.name)
        elif op == "neg.default":
            emit("Neg", n.name, [ref(a[0])], n.name)
        elif op == "cat.default":
            emit("Concat", n.name, [ref(x) for x in a[0]], n.name)
        elif op == "silu.default":
            s = fresh(n.name)
            emit("Sigmoid", n.name + ".sigmoid", [ref(a[0])], s)
            emit("Mul", n.name, [ref(a[0]), s], n.name)
        elif op == "gelu.default":
            how = n.kwargs.get("approximate", a[1] if len(a) > 1 else "none")
            if how != "tanh":
                raise UnsupportedError(f"torch.export: node {n.name!r} (aten.gelu) is exact GELU; flightc runs the "
                                       f"tanh approximation (Gemma's gelu_pytorch_tanh)")
            emit("Gelu", n.name, [ref(a[0])], n.name)
        elif op in ("chunk.default", "split.Tensor", "split_with_sizes.default"):
            whole = values[a[0].name].shape
            dim = (a[2] if len(a) > 2 else n.kwargs.get("dim", 0)) % len(whole)
            if op == "chunk.default":
                step = -(-whole[dim] // a[1])
                sizes = [min(step, whole[dim] - i) for i in range(0, whole[dim], step)]
            else:
                sizes = list(a[1]) if isinstance(a[1], (list, tuple)) else \
                    [min(a[1], whole[dim] - i) for i in range(0, whole[dim], a[1])]
            pieces[n.name] = (ref(a[0]), dim, list(np.cumsum([0, *sizes])))
        elif op == "getitem" and a[0].name in pieces:
            src, dim, bounds = pieces[a[0].name]
            emit("Slice", n.name, [src, ref(np.array([bounds[a[1]]])), ref(np.array([bounds[a[1] + 1]])),
                                   ref(np.array([dim]))], n.name)
        elif op == "scaled_dot_product_attention.default":
            _sdpa(n, values, ref, fresh, emit, const)
        else:
            raise UnsupportedError(f"torch.export: no pattern covers node {n.name!r} (aten.{op})")
    return OpGraph(nodes, const, ids_name, outputs)


def _sdpa(n, values, ref, fresh, emit, const) -> None:
    """softmax(q k^T * scale + mask) v, spelled in the ONNX vocabulary."""
    q, k, v = n.args[:3]
    kw = dict(zip(("attn_mask", "dropout_p", "is_causal", "scale", "enable_gqa"), n.args[3:]), **n.kwargs)
    if kw.get("dropout_p", 0.0) or kw.get("enable_gqa", False):
        raise UnsupportedError(f"torch.export: node {n.name!r} (scaled_dot_product_attention) uses dropout or "
                               f"enable_gqa")
    d = values[q.name].shape[-1]
    L, T = values[q.name].shape[-2], values[k.name].shape[-2]
    kt = fresh(n.name + ".kT")
    emit("Reshape", n.name + ".transpose", [ref(k)], kt)
    s = fresh(n.name + ".scores")
    emit("MatMul", n.name + ".qk", [ref(q), kt], s)
    scaled = fresh(n.name + ".scaled")
    scale = kw.get("scale") or 1.0 / math.sqrt(d)
    emit("Mul", n.name + ".scale", [s, ref(float(scale))], scaled)
    mask = kw.get("attn_mask")
    if mask is not None or kw.get("is_causal"):
        if mask is not None:
            m = values[mask.name].detach().numpy() if hasattr(values[mask.name], "detach") else np.asarray(values[mask.name])
            m = m.reshape(m.shape[-2:])
            additive = np.where(m, 0.0, -np.inf) if m.dtype == bool else m.astype(np.float64)
        else:
            additive = np.where(np.tril(np.ones((L, T), dtype=bool), T - L), 0.0, -np.inf)
        name = fresh(n.name + ".mask")
        const[name] = additive
        masked = fresh(n.name + ".masked")
        emit("Add", n.name + ".add_mask", [scaled, name], masked)
        scaled = masked
    p = fresh(n.name + ".probs")
    emit("Softmax", n.name + ".softmax", [scaled], p)
    emit("MatMul", n.name, [p, ref(v)], n.name)


def load_exported(ep) -> GraphIR:
    """Import a torch.export ExportedProgram of a LLaMA-family model (export it with use_cache=False)."""
    return match_llama(from_exported(ep), "torch.export")


@contextmanager
def _plain_tensors_only():
    """While it holds, every unpickling ``torch.export.load`` may do is weights-only (tensors, containers, numbers:
    nothing that runs code) and any other unpickling raises: torch falls back to full pickle for what a weights-only
    load refuses (example inputs, pickled constants), which could run anything the file holds."""
    import pickle

    import torch

    real_load = torch.load

    def weights_only(f, *args, **kwargs):
        kwargs["weights_only"] = True
        return real_load(f, *args, **kwargs)

    def refuse(*_args, **_kwargs):
        raise pickle.UnpicklingError("an object pickled outside torch's weights-only format")

    saved = [(torch, "load", weights_only), (pickle, "loads", refuse), (torch._C, "_pickle_load_obj", refuse)]
    before = [(owner, name, getattr(owner, name)) for owner, name, _ in saved]
    try:
        for owner, name, value in saved:
            setattr(owner, name, value)
        yield
    finally:
        for owner, name, value in before:
            setattr(owner, name, value)


def load_pt2(path: str | Path):
    """The ExportedProgram of a ``.pt2`` file written by ``torch.export.save``, read with weights-only unpickling; a
    file that holds anything else (custom objects, pickled constants) is refused by name rather than unpickled."""
    import pickle
    import zipfile

    import torch

    path = Path(path)
    if not path.is_file():
        raise UnsupportedError(f"{path}: no such file (a .pt2 file is what torch.export.save writes)")
    if not zipfile.is_zipfile(path):
        raise UnsupportedError(f"{path}: not a torch.export archive (a .pt2 file is the zip torch.export.save "
                               f"writes)")
    importlib.import_module("transformers.modeling_outputs")  # registers its output classes with torch's pytree

    causes: list[str] = []  # torch logs why the current format failed before it tries an older one
    catch = logging.Handler()
    catch.emit = lambda record: causes.append(str(record.exc_info[1]) if record.exc_info else record.getMessage())
    logger = logging.getLogger("torch.export")
    logger.addHandler(catch)
    propagate, logger.propagate = logger.propagate, False
    try:
        with _plain_tensors_only():
            ep = torch.export.load(path)
    except pickle.UnpicklingError as e:
        raise UnsupportedError(f"{path}: holds pickled data beyond tensors ({str(e).splitlines()[0]}); flightc reads "
                               f".pt2 files with weights-only unpickling and never runs a file's code. If you trust "
                               f"the file, load it yourself (torch.export.load) and pass the ExportedProgram to "
                               f"flightc.compiler.pipeline.compile_model") from e
    except (RuntimeError, KeyError, AssertionError) as e:
        why = "; ".join(dict.fromkeys(causes)) or str(e)
        raise UnsupportedError(f"{path}: torch.export.load could not read it ({why}); save it again with "
                               f"torch.export.save from torch {torch.__version__.split('+')[0]}") from e
    finally:
        logger.removeHandler(catch)
        logger.propagate = propagate
    if type(ep).__name__ != "ExportedProgram":
        raise UnsupportedError(f"{path}: holds a {type(ep).__name__}, not an ExportedProgram")
    return ep
