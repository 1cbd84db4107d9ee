"""The compile pipeline: named passes from a model to a program bundle."""
from __future__ import annotations

import functools
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from flightc import __version__
from flightc.bundle import BUNDLE_FORMAT, BUNDLE_VERSION, Bundle
from flightc.compiler.adaptive import build_templates, per_length_bytes, template_specs
from flightc.compiler.calibrate import calibrate, default_calibration, nominal_calibration
from flightc.compiler.compress import compress
from flightc.compiler.equalize import equalize
from flightc.compiler.fuse import fuse
from flightc.compiler.integerize import integerize
from flightc.compiler.lower import lower_step
from flightc.compiler.memory import MemoryMap, place
from flightc.compiler.spool import ImageSpool
from flightc.compress.allocate import Allocation, BitBudget, allocate_plan
from flightc.compress.method import Method
from flightc.compress.plan import CompressionPlan
from flightc.config import HardwareConfig, load_config
from flightc.errors import OnChipError, UnsupportedError
from flightc.frontend.hf import load_hf
from flightc.ir.graph import GraphIR
from flightc.ir.schema import verify
from flightc.tasks import task_of
from flightc.isa.table import ISA_VERSION

log = logging.getLogger(__name__)

DEFAULT_MAX_LEN = 64  # within the model's positions
PREFILL_STEPS = (16, 8, 4, 2, 1)  # the longest of these that fits the preset's buffers is the default step


def default_max_len(g: GraphIR) -> int:
    """``DEFAULT_MAX_LEN``, or the model's trained context where that is shorter."""
    return min(DEFAULT_MAX_LEN, g.spec.max_positions) if g.spec.max_positions else DEFAULT_MAX_LEN


def fitting_prefill(g: GraphIR, cfg: HardwareConfig, max_len: int) -> int:
    """The longest step of ``PREFILL_STEPS`` (up to max_len) whose program fits the preset's on-chip buffers at the
    last positions, where attention's window is longest (a placement without weights and one step lowered)."""
    *longer, last = [p for p in PREFILL_STEPS if p <= max_len]
    for p in longer:
        try:
            lower_step(g, cfg, place(g, cfg, max_len, p, False), p, max_len - p)
            return p
        except OnChipError as e:
            log.info("a prefill step of %d tokens does not fit: %s", p, e)
    lower_step(g, cfg, place(g, cfg, max_len, last, False), last, max_len - last)  # or say what does not fit
    return last


@dataclass
class Compiled:
    """Everything the pipeline produced; ``integer`` is what the integer reference runs."""

    config: HardwareConfig
    plan: CompressionPlan
    float_graph: GraphIR
    integer: GraphIR
    fused: GraphIR
    memory: MemoryMap
    bundle: Bundle
    timings: dict[str, float] = field(default_factory=dict)
    allocation: Allocation | None = None


def check_finite(g: GraphIR) -> None:
    """Refuse NaN or Inf in any loaded tensor, naming the layer and the tensor (checked before any work)."""
    for name in g.order():
        for key, value in g.node(name).items():
            if isinstance(value, np.ndarray) and value.dtype.kind == "f" and not np.isfinite(value).all():
                bad = int((~np.isfinite(value)).sum())
                raise UnsupportedError(f"layer {name}: tensor {key!r} has {bad} NaN or Inf value(s) of {value.size}; "
                                       f"the checkpoint is damaged or was saved after a diverged run")


GRAPH_PASSES = ("frontend", "equalize", "compress", "calibrate", "integerize", "fuse")  # each gives a graph IR


class _Stopped(Exception):
    """Raised by the pass ``compile_model(stop_after=...)`` names, carrying its graph."""

    def __init__(self, graph: GraphIR):
        self.graph = graph


def _stoppable(compile_fn):
    """``compile_fn`` returning the graph of the pass ``stop_after`` names instead of going on."""
    @functools.wraps(compile_fn)
    def run(*args, stop_after: str | None = None, **kwargs):
        if stop_after is not None and stop_after not in GRAPH_PASSES:
            raise UnsupportedError(f"stop after {stop_after!r}: the passes that give a graph are "
                                   f"{', '.join(GRAPH_PASSES)}")
        if stop_after == "equalize" and kwargs.get("weights") is False:
            raise UnsupportedError("stop after 'equalize': a programs-only compile does not equalize")
        try:
            return compile_fn(*args, stop_after=stop_after, **kwargs)
        except _Stopped as stop:
            return stop.graph
    return run


@_stoppable
def compile_model(model: str | Path | Any | GraphIR, hw: str | HardwareConfig = "tiny",
                  plan: CompressionPlan | None = None, max_len: int | None = None, max_prefill: int | None = None,
                  calibration: np.ndarray | None = None, prefill_lengths: list[int] | None = None,
                  progress: Callable[[str, int, int], None] | None = None,
                  random_weights: int | None = None, bucket: int | None = None, jobs: int = 1,
                  weights: bool = True, source: str | None = None, method: Method = Method(),
                  budget: BitBudget | None = None, keep_integer: bool = True,
                  stop_after: str | None = None) -> Compiled | GraphIR:
    """Compile a model for a hardware config: a Hugging Face folder, a transformers model, an ``.onnx``
    file, a torch.export ExportedProgram or the ``.pt2`` file torch.export.save writes, or a float graph IR.

    The bundle holds one program template per step length in ``prefill_lengths`` (default: max_prefill;
    1 is always there for decode) and position range, with patch tables that move it to any position
    below ``max_len`` (flightc.compiler.adaptive); a prompt runs as steps of the longest lengths that fit
    it. ``bucket`` also cuts every position range into pieces of that many positions; ``jobs`` lowers
    templates in that many processes and quantizes that many layers at a time (round to nearest). ``weights=False`` compiles the programs only: formats are checked
    and every region laid out, but no weight is quantized or packed and no calibration runs; such a
    bundle feeds the performance model and refuses every backend that computes values.
    ``random_weights=SEED`` compiles a config folder with seeded random weights produced on demand
    (see flightc.frontend.lazy). ``source`` names the model in the manifest (the float reference of
    ``flightc run --compare reference`` loads it from there). ``method`` chooses how weights are
    compressed (round to nearest by default; GPTQ, SparseGPT, AWQ, SmoothQuant use ``calibration``);
    ``budget`` lets flightc.compress.allocate choose each linear layer's format from measured sensitivity.
    ``keep_integer=False`` releases each layer's quantized values once they are packed into the bundle (the
    integer graph then keeps formats and scales only, and the integer reference refuses it) and grows the channel
    images in temporary files (:mod:`flightc.compiler.spool`): what a compile that only writes a bundle needs, in a
    fraction of the memory. ``stop_after`` (one of :data:`GRAPH_PASSES`) returns that pass's graph IR instead of a
    compile: for looking at what a pass made (``flightc compile --stop-after PASS``).
    Without ``max_len``, 64 positions or the model's trained context if shorter (:func:`default_max_len`);
    without ``max_prefill``, the longest of ``prefill_lengths``, else the longest step that fits the preset's
    buffers (:func:`fitting_prefill`); the manifest records both.
    """
    cfg = load_config(hw)
    plan = plan or CompressionPlan()
    if max_len is not None and max_prefill is not None and max_prefill > max_len:
        raise UnsupportedError(f"max_prefill {max_prefill} exceeds max_len {max_len}")
    timings: dict[str, float] = {}

    def timed(name: str, fn, *args):
        t = time.perf_counter()
        result = fn(*args)
        if isinstance(result, GraphIR):  # every pass's graph is held to the IR's schema
            verify(result, name)
            if name == stop_after:
                raise _Stopped(result)
        timings[name] = time.perf_counter() - t
        log.info("pass %s: %.2f s", name, timings[name])
        return result

    if isinstance(model, GraphIR):
        g = timed("frontend", lambda graph: graph, model)
    elif isinstance(model, (str, Path)) and Path(model).suffix == ".onnx":
        from flightc.frontend.onnx_import import load_onnx

        g = timed("frontend", load_onnx, model)
    elif isinstance(model, (str, Path)) and Path(model).suffix == ".pt2":
        from flightc.frontend.torch_export import load_exported, load_pt2

        g = timed("frontend", lambda path: load_exported(load_pt2(path)), model)
    elif type(model).__name__ == "ExportedProgram":
        from flightc.frontend.torch_export import load_exported

        g = timed("frontend", load_exported, model)
    else:
        g = timed("frontend", load_hf, model, random_weights)
    if weights:
        check_finite(g)
    if calibration is None and weights:
        task = task_of(model) if isinstance(model, (str, Path)) else None
        calibration = task.calibration() if task else default_calibration(g.spec.vocab_size)
        log.info("calibration: %s", f"{len(calibration)} {type(task).__name__} sequences" if task else
                 f"{len(calibration)} random token sequences")
    if calibration is not None:
        calibration = np.atleast_2d(np.asarray(calibration))
        if calibration.size and (calibration.min() < 0 or calibration.max() >= g.spec.vocab_size):
            raise UnsupportedError(f"calibration token ids span {calibration.min()}..{calibration.max()}, outside "
                                   f"the model's vocabulary 0..{g.spec.vocab_size - 1}")
    allocation = None
    if budget is not None:
        if not weights:
            raise UnsupportedError("a bit budget is allocated from the weights: it needs a compile with weights")
        if progress:
            progress("allocate", 0, 1)
        plan, allocation = timed("allocate", allocate_plan, g, calibration, cfg, budget, method.solver, plan,
                                 (lambda done, total: progress("allocate", done, total)) if progress else None)
    if weights:
        if progress:
            progress("equalize", 0, 1)
        g = timed("equalize", equalize, g, plan, method, calibration)
    if progress:
        progress("compress", 0, 1)
    gc = timed("compress", compress, g, plan, cfg, weights, method, calibration,
               (lambda done, total: progress("compress", done, total)) if progress else None, jobs)
    if progress:
        progress("calibrate", 0, 1)
    gk = timed("calibrate", calibrate, gc, calibration) if weights else timed("calibrate", nominal_calibration, gc)
    gi = timed("integerize", integerize, gk)
    gf = timed("fuse", fuse, gi)
    if max_len is None:
        max_len = default_max_len(gf)
        log.info("max_len %d (chosen: at most %d, within the model's positions)", max_len, DEFAULT_MAX_LEN)
    if max_prefill is None:
        max_prefill = max(prefill_lengths) if prefill_lengths else timed("fit", fitting_prefill, gf, cfg, max_len)
        log.info("max_prefill %d (chosen: the longest step that fits %s)", max_prefill, cfg.name)
    if max_prefill > max_len:
        raise UnsupportedError(f"max_prefill {max_prefill} exceeds max_len {max_len}")
    mem = timed("place", place, gf, cfg, max_len, max_prefill, weights, jobs, not keep_integer, not keep_integer)
    for why in sorted(set(mem.buffered.values())):
        layers = [n for n, w in mem.buffered.items() if w == why]
        log.warning("%d linear layer(s) go through the WGT buffer instead of streaming (%s): %s", len(layers),
                    ", ".join(layers[:4]) + (", ..." if len(layers) > 4 else ""), why)
    for what, loaded in (("keys", mem.keys_loaded), ("values", mem.values_loaded)):
        for why in sorted(set(loaded.values())):
            names = [n for n, w in loaded.items() if w == why]
            log.warning("the %s of %d attention(s) go through the KV buffer instead of streaming (%s): %s", what,
                        len(names), ", ".join(names[:4]) + (", ..." if len(names) > 4 else ""), why)

    lengths = sorted(set(prefill_lengths or [max_prefill]) | {1})
    if lengths[0] < 1 or lengths[-1] > max_prefill:
        raise UnsupportedError(f"prefill lengths {lengths} must lie in 1..max_prefill ({max_prefill})")
    specs = [spec for n in lengths for spec in template_specs(gf, cfg, n, max_len, bucket)]
    programs: dict[str, list[bytes]] = {}
    patches: dict[str, list[bytes]] = {}
    index = []
    t = time.perf_counter()
    templates = build_templates(gf, cfg, mem, specs, jobs,
                                (lambda done, total: progress("lower", done, total)) if progress else None)
    for spec, tpl in zip(specs, templates):
        programs[spec.key] = tpl.streams
        patches[spec.key] = [table.tobytes() for table in tpl.patches]
        index.append({"key": spec.key, "length": spec.length, "p_lo": spec.p_lo, "p_hi": spec.p_hi,
                      "instructions": sum(tpl.counts.values()), "bytes": sum(map(len, tpl.streams)),
                      "patches": sum(map(len, tpl.patches)), "classes": tpl.counts})
    timings["lower+tokens+encode"] = time.perf_counter() - t
    log.info("templates: %d lowered and patched in %.2f s", len(specs), timings["lower+tokens+encode"])

    manifest = {
        "format": BUNDLE_FORMAT, "bundle_version": BUNDLE_VERSION, "isa_version": ISA_VERSION,
        "flightc_version": __version__, "config": cfg.to_dict(), "config_hash": cfg.hash,
        "model": g.spec.to_dict(), "plan": plan.describe(), "method": method.label(),
        "allocation": allocation.describe() if allocation else None,
        "source": source or (str(model) if isinstance(model, (str, Path)) else None),
        "layers": {n: gf.node(n)["qweight"].fmt.label() for n in gf.linears()},
        "max_len": max_len, "max_prefill": max_prefill, "programs_only": not weights,
        "memory_map": mem.to_dict(), "programs": index,
        "storage": {"template_bytes": sum(t["bytes"] for t in index),
                    "patch_bytes": sum(len(b) for tables in patches.values() for b in tables),
                    "per_length_bytes": per_length_bytes(index, max_len)},
        "io": {"ids": "io.ids", "logits": "io.logits", "logit_scale": gf.node(gf.output)["scale"]},
    }
    # bytearrays, or maps of the temporary files a write-only compile grew them in: never copied again
    images = {c: im.view() if isinstance(im, ImageSpool) else im for c, im in mem.images.items()}
    bundle = Bundle(manifest, images, programs, patches)
    return Compiled(cfg, plan, g, gi, gf, mem, bundle, timings, allocation)
