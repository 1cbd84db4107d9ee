"""Pass ``compress``: attach a quantized, pruned weight to every linear layer and to the embedding.

Round-to-nearest needs nothing but the weights. The second-order solvers (GPTQ, SparseGPT) need the
inputs each linear sees: transformer layers are compressed in order, each from the activations of
the model whose earlier layers are already compressed (as GPTQ does), one layer's inputs at a time.
"""
from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Callable

import numpy as np

from flightc.compiler.memory import chosen_format
from flightc.compress.formats import SparseEncoding, WeightFormat, pattern_supported
from flightc.compress.method import Method, Solver
from flightc.compress.obs import MaskSelect, hessian, obs_quantize
from flightc.compress.plan import CompressionPlan
from flightc.compress.quantize import QuantWeight, quantize_rtn
from flightc.errors import UnsupportedError
from flightc.config import HardwareConfig
from flightc.ir.graph import GraphIR, OpKind, Stage, evaluate, layer_runs

log = logging.getLogger(__name__)


def quantize_embedding(table: np.ndarray) -> QuantWeight:
    """Per-tensor symmetric INT8: the DEQ instruction applies one multiplier to every row."""
    table = np.asarray(table, np.float64)
    scale = max(float(np.abs(table).max()) / 127.0, np.finfo(np.float64).tiny)
    q = np.clip(np.round(table / scale), -127, 127).astype(np.int8)
    rows, k = table.shape
    return QuantWeight(WeightFormat(), q, np.zeros((rows, 0), np.uint8), np.full(rows, scale), None)


def shape_only(fmt: WeightFormat, shape: tuple[int, int]) -> QuantWeight:
    """A quantized weight with its format and shape but no values (programs-only compiles): every array
    is a zero-strided view of a single zero, so nothing of the model's size is allocated."""
    rows, k = shape

    def zeros(dtype, cols: int) -> np.ndarray:
        return np.lib.stride_tricks.as_strided(np.zeros(1, dtype), (rows, cols), (0, 0), writeable=False)

    return QuantWeight(fmt, zeros(np.int8, k), zeros(np.uint8, -(-k // fmt.group) if fmt.group else 0),
                       np.ones(rows), None)


def solve(w: np.ndarray, fmt: WeightFormat, solver: Solver, h: np.ndarray | None = None,
          act_order: bool = False) -> QuantWeight:
    """One linear weight compressed to ``fmt`` by ``solver`` (``h``: its inputs' Hessian, for GPTQ/SparseGPT)."""
    if solver is Solver.RTN:
        return quantize_rtn(w, fmt)
    assert h is not None
    select = MaskSelect.OBS if solver is Solver.SPARSEGPT else MaskSelect.MAGNITUDE
    return obs_quantize(w, h, fmt, select, act_order=act_order and not fmt.sparse)


def compress(graph: GraphIR, plan: CompressionPlan, cfg: HardwareConfig, values: bool = True,
             method: Method = Method(), calibration: np.ndarray | None = None,
             progress: Callable[[int, int], None] | None = None, jobs: int = 1) -> GraphIR:
    """``values=False`` checks every format against the hardware but quantizes nothing (see shape_only).
    ``jobs`` quantizes that many layers at a time with round to nearest (threads: numpy's array operations
    release the GIL, and each layer's result depends on its own weight alone)."""
    out = graph.copy(stage=Stage.COMPRESSED)
    linears = out.linears()
    # a sparse format whose encoding the plan leaves open takes the one that stores the layer in the fewest bytes;
    # one whose pattern the config does not decode is pruned as planned and stored dense (WeightFormat.stored_for)
    chosen, stored = {}, {}
    for name in linears:
        k = out.node(name)["weight"].shape[1]
        fmt = plan.format_for(name)
        stored[name] = fmt.stored_for(cfg)
        if stored[name] == fmt:  # as planned, its encoding the one the compiler picks
            stored[name] = chosen[name] = chosen_format(fmt, cfg, k)
        else:  # pruned as planned (its positions' encoding moot)
            chosen[name] = fmt.with_encoding(SparseEncoding.POSITIONS)
        stored[name].check(cfg, name, k)
    _say_stored_dense(cfg, {name: chosen[name] for name in linears if stored[name] != chosen[name]})
    _compress_embeddings(out, values)
    for name in out.nodes_of(OpKind.ATTENTION):
        out.node(name)["kv_bits"] = plan.kv_bits
    if not values:
        for name in linears:
            out.node(name)["qweight"] = shape_only(stored[name], out.node(name)["weight"].shape)
        return out
    if not method.solver.calibrated:
        def one(name: str) -> QuantWeight:
            return _as_stored(quantize_rtn(out.node(name)["weight"], chosen[name]), stored[name])

        with ThreadPoolExecutor(max(1, jobs)) as pool:
            for i, (name, qw) in enumerate(zip(linears, pool.map(one, linears))):
                out.node(name)["qweight"] = qw
                if progress:
                    progress(i + 1, len(linears))
        return out
    if calibration is None:
        raise UnsupportedError(f"method {method.label()} needs calibration sequences")
    unordered = [n for n in linears if method.act_order and chosen[n].sparse]
    if unordered:
        log.warning("%s: act-order applies to dense formats; %d sparse layers (%s, ...) are visited in column order",
                    method.label(), len(unordered), unordered[0])
    _compress_sequentially(out, chosen, method, np.atleast_2d(calibration), progress)
    for name in linears:
        out.node(name)["qweight"] = _as_stored(out.node(name)["qweight"], stored[name])
    return out


def _as_stored(qw: QuantWeight, fmt: WeightFormat) -> QuantWeight:
    return qw if qw.fmt == fmt else qw.as_dense(fmt)


def _say_stored_dense(cfg: HardwareConfig, pruned: dict[str, WeightFormat]) -> None:
    """Log the layers pruned to a pattern ``cfg`` does not decode, which it stores dense (a warning, not silence)."""
    for bits, n, m in sorted({(f.bits, f.n, f.m) for f in pruned.values()}):
        names = [name for name, f in pruned.items() if (f.bits, f.n, f.m) == (bits, n, m)]
        which = (f"{n}:{m} sparse weights of {bits} bits (it stores N:M at {list(cfg.sparse_bits)} bits: sparse_bits)"
                 if pattern_supported(cfg, n, m) else f"{n}:{m} sparse weights")
        log.warning("preset %r decodes no %s: %d layers (%s%s) pruned %d:%d are stored dense, their pruned weights "
                    "as zeros (the same results, at the bytes of their dense width)", cfg.name, which, len(names),
                    names[0], ", ..." if len(names) > 1 else "", n, m)


def _compress_sequentially(out: GraphIR, chosen: dict[str, WeightFormat], method: Method, calibration: np.ndarray,
                           progress: Callable[[int, int], None] | None) -> None:
    """Layer by layer, holding one layer's activations at a time: run the layer (its linears still float) on
    the compressed model's inputs to it, compress its linears from their Hessians, run it again compressed,
    and keep only the values later layers read."""
    from flightc.reference.float_graph import float_handlers

    handlers = float_handlers(out, calibration, compressed=True)
    total, done = len(out.linears()), 0
    values: dict[str, np.ndarray] = {}
    runs = layer_runs(out)
    for i, run in enumerate(runs):
        linears = [n for n in run if out.node(n)["op"] is OpKind.LINEAR]
        if linears:
            evaluate(out, handlers, run, values)
            hessians = {n: hessian(values[out.node(n)["inputs"][0]]) for n in linears}
            for n in linears:
                node = out.node(n)
                node["qweight"] = solve(np.asarray(node["weight"], np.float64), chosen[n], method.solver,
                                        hessians.pop(n), method.act_order)
                done += 1
                if progress:
                    progress(done, total)
        evaluate(out, handlers, run, values)
        later = {src for r in runs[i + 1:] for n in r for src in out.node(n)["inputs"]}
        for name in [v for v in values if v not in later]:
            del values[name]
        log.debug("compressed layer run %d of %d with %s", i + 1, len(runs), method.label())


def _compress_embeddings(out: GraphIR, values: bool) -> None:
    for name in out.nodes_of(OpKind.EMBED):
        node = out.node(name)
        for src, dst in (("weight", "qembed"), ("positions", "qpositions")):
            if src in node:
                node[dst] = quantize_embedding(node[src]) if values else shape_only(WeightFormat(), node[src].shape)
