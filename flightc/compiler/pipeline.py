"""The compile pipeline: named passes from a model to a program bundle."""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from flightc.bundle import Bundle, Manifest
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
from flightc.errors import OnChipError, ProgramError, UnsupportedError
from flightc.frontend.hf import load_hf
from flightc.ir.graph import GraphIR
from flightc.ir.schema import verify
from flightc.tasks import task_of

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


@dataclass
class Build:
    """What the steps of one compile share: the request, then what each step made (None until it has run)."""

    model: Any
    cfg: HardwareConfig
    plan: CompressionPlan
    max_len: int | None
    max_prefill: int | None
    calibration: np.ndarray | None
    prefill_lengths: list[int] | None
    random_weights: int | None
    bucket: int | None
    jobs: int
    weights: bool
    source: str | None
    method: Method
    budget: BitBudget | None
    keep_integer: bool
    report: Callable[[int, int], None] | None = None  # the running step's progress: (done, total)
    graph: GraphIR | None = None  # the latest step's graph
    float_graph: GraphIR | None = None
    integer: GraphIR | None = None
    allocation: Allocation | None = None
    memory: MemoryMap | None = None
    templates: list | None = None  # (TemplateSpec, Template) per program template
    bundle: Bundle | None = None
    timings: dict[str, float] = field(default_factory=dict)


def _frontend(b: Build) -> GraphIR:
    b.float_graph = _read(b)
    return b.float_graph


def _read(b: Build) -> GraphIR:
    """The model, whatever form it comes in, as a float graph IR."""
    model = b.model
    if isinstance(model, GraphIR):
        return model
    if isinstance(model, (str, Path)) and Path(model).suffix == ".onnx":
        from flightc.frontend.onnx_import import load_onnx

        return load_onnx(model)
    if isinstance(model, (str, Path)) and Path(model).suffix == ".pt2":
        from flightc.frontend.torch_export import load_exported, load_pt2

        return load_exported(load_pt2(model))
    if type(model).__name__ == "ExportedProgram":
        from flightc.frontend.torch_export import load_exported

        return load_exported(model)
    return load_hf(model, b.random_weights)


def _calibration_data(b: Build) -> None:
    if b.calibration is None and b.weights:
        task = task_of(b.model) if isinstance(b.model, (str, Path)) else None
        b.calibration = task.calibration() if task else default_calibration(b.graph.spec.vocab_size)
        log.info("calibration: %s", f"{len(b.calibration)} {type(task).__name__} sequences" if task else
                 f"{len(b.calibration)} random token sequences")
    if b.calibration is not None:
        b.calibration = np.atleast_2d(np.asarray(b.calibration))
        vocab = b.graph.spec.vocab_size
        if b.calibration.size and (b.calibration.min() < 0 or b.calibration.max() >= vocab):
            raise UnsupportedError(f"calibration token ids span {b.calibration.min()}..{b.calibration.max()}, "
                                   f"outside the model's vocabulary 0..{vocab - 1}")


def _allocate(b: Build) -> None:
    b.plan, b.allocation = allocate_plan(b.graph, b.calibration, b.cfg, b.budget, b.method.solver, b.plan, b.report)


def _calibrate(b: Build) -> GraphIR:
    return calibrate(b.graph, b.calibration) if b.weights else nominal_calibration(b.graph)


def _fit(b: Build) -> None:
    if b.max_len is None:
        b.max_len = default_max_len(b.graph)
        log.info("max_len %d (chosen: at most %d, within the model's positions)", b.max_len, DEFAULT_MAX_LEN)
    if b.max_prefill is None:
        b.max_prefill = max(b.prefill_lengths) if b.prefill_lengths else fitting_prefill(b.graph, b.cfg, b.max_len)
        log.info("max_prefill %d (chosen: the longest step that fits %s)", b.max_prefill, b.cfg.name)
    if b.max_prefill > b.max_len:
        raise UnsupportedError(f"max_prefill {b.max_prefill} exceeds max_len {b.max_len}")


def _place(b: Build) -> None:
    mem = b.memory = place(b.graph, b.cfg, b.max_len, b.max_prefill, b.weights, b.jobs, not b.keep_integer,
                           not b.keep_integer)
    for why in sorted(set(mem.buffered.values())):
        layers = [n for n, w in mem.buffered.items() if w == why]
        log.warning("%d linear layer(s) go through the WGT buffer instead of streaming (%s): %s", len(layers),
                    ", ".join(layers[:4]) + (", ..." if len(layers) > 4 else ""), why)
    for what, loaded in (("keys", mem.keys_loaded), ("values", mem.values_loaded)):
        for why in sorted(set(loaded.values())):
            names = [n for n, w in loaded.items() if w == why]
            log.warning("the %s of %d attention(s) go through the KV buffer instead of streaming (%s): %s", what,
                        len(names), ", ".join(names[:4]) + (", ..." if len(names) > 4 else ""), why)


def _lower(b: Build) -> None:
    lengths = sorted(set(b.prefill_lengths or [b.max_prefill]) | {1})
    if lengths[0] < 1 or lengths[-1] > b.max_prefill:
        raise UnsupportedError(f"prefill lengths {lengths} must lie in 1..max_prefill ({b.max_prefill})")
    specs = [spec for n in lengths for spec in template_specs(b.graph, b.cfg, n, b.max_len, b.bucket, b.memory)]
    b.templates = list(zip(specs, build_templates(b.graph, b.cfg, b.memory, specs, b.jobs, b.report)))
    log.info("templates: %d lowered and patched", len(specs))


def _bundle(b: Build) -> None:
    gf, mem = b.graph, b.memory
    programs = {spec.key: tpl.streams for spec, tpl in b.templates}
    patches = {spec.key: [table.tobytes() for table in tpl.patches] for spec, tpl in b.templates}
    index = [{"key": spec.key, "length": spec.length, "p_lo": spec.p_lo, "p_hi": spec.p_hi,
              "instructions": sum(tpl.counts.values()), "bytes": sum(map(len, tpl.streams)),
              "patches": sum(map(len, tpl.patches)), "classes": tpl.counts} for spec, tpl in b.templates]
    manifest = Manifest(
        config=b.cfg.to_dict(), config_hash=b.cfg.hash, model=gf.spec.to_dict(), plan=b.plan.describe(),
        method=b.method.label(), allocation=b.allocation.describe() if b.allocation else None,
        source=b.source or (str(b.model) if isinstance(b.model, (str, Path)) else None),
        layers={n: gf.node(n)["qweight"].fmt.label() for n in gf.linears()},
        max_len=b.max_len, max_prefill=b.max_prefill, programs_only=not b.weights, memory_map=mem.to_dict(),
        programs=index,
        storage={"template_bytes": sum(t["bytes"] for t in index),
                 "patch_bytes": sum(len(x) for tables in patches.values() for x in tables),
                 "per_length_bytes": per_length_bytes(index, b.max_len)},
        io={"ids": "io.ids", "logits": "io.logits", "logit_scale": gf.node(gf.output)["scale"]})
    # bytearrays, or maps of the temporary files a write-only compile grew them in: never copied again
    images = {c: im.view() if isinstance(im, ImageSpool) else im for c, im in mem.images.items()}
    b.bundle = Bundle(manifest, images, programs, patches)


def _graph(fn: Callable[..., GraphIR], *fields: str, into: str | None = None) -> Callable[[Build], GraphIR]:
    """A step running graph pass ``fn`` on the latest graph and the named fields of the build (and keeping its
    graph as field ``into`` too)."""
    def run(b: Build) -> GraphIR:
        g = fn(b.graph, *(getattr(b, f) for f in fields))
        if into:
            setattr(b, into, g)
        return g
    run.__name__ = fn.__name__
    return run


def _weights(b: Build) -> bool:
    return b.weights


@dataclass(frozen=True)
class Step:
    """One named step of a compile: ``run`` reads and fills the build and, where ``graph``, returns the graph IR it
    made (else None); ``when`` says whether it runs for this build; ``label`` is what a progress bar shows."""

    name: str
    run: Callable[[Build], GraphIR | None]
    label: str
    when: Callable[[Build], bool] = lambda b: True
    graph: bool = False


STEPS: tuple[Step, ...] = (
    Step("frontend", _frontend, "reading the model", graph=True),
    Step("check_weights", lambda b: check_finite(b.graph), "checking the weights", _weights),
    Step("calibration_data", _calibration_data, "choosing calibration tokens"),
    Step("allocate", _allocate, "measuring sensitivities", lambda b: b.budget is not None),
    Step("equalize", _graph(equalize, "plan", "method", "calibration", into="float_graph"), "equalizing", _weights, True),
    Step("compress", _graph(compress, "plan", "cfg", "weights", "method", "calibration", "report", "jobs"),
         "compressing ({method})", graph=True),
    Step("calibrate", _calibrate, "calibrating", graph=True),
    Step("integerize", _graph(integerize, into="integer"), "integerizing", graph=True),
    Step("fuse", _graph(fuse), "fusing", graph=True),
    Step("fit", _fit, "fitting the step lengths"),
    Step("place", _place, "placing and packing"),
    Step("lower", _lower, "lowering programs"),
    Step("bundle", _bundle, "writing the manifest"),
)
GRAPH_PASSES = tuple(s.name for s in STEPS if s.graph)  # what compile_model(stop_after=...) may name


def run_steps(steps: tuple[Step, ...], b: Build, progress: Callable[[str, int, int], None] | None = None,
              stop_after: str | None = None) -> GraphIR | None:
    """Run ``steps`` in order on ``b``, timing each (``b.timings``) and reporting its progress; every graph a step
    gives is verified against the IR's schema and becomes ``b.graph``. Returns the graph of step ``stop_after``
    there, or None once every step has run."""
    for step in steps:
        if not step.when(b):
            continue
        b.report = (lambda done, total, name=step.name: progress(name, done, total)) if progress else None
        if progress:
            progress(step.name, 0, 1)
        t = time.perf_counter()
        graph = step.run(b)
        if step.graph != isinstance(graph, GraphIR):
            raise ProgramError(f"compile step {step.name} returned {type(graph).__name__}, but it is declared to "
                               f"{'give a graph IR' if step.graph else 'give none'}")
        if graph is not None:
            verify(graph, step.name)
            b.graph = graph
        b.timings[step.name] = time.perf_counter() - t
        log.info("step %s: %.2f s", step.name, b.timings[step.name])
        if step.name == stop_after:
            return graph
    return None


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
    The compile is the named steps of :data:`STEPS`, run in order by :func:`run_steps`; ``progress(step, done,
    total)`` hears of each, and ``Compiled.timings`` holds their seconds.

    The bundle holds one program template per step length in ``prefill_lengths`` (default: max_prefill;
    1 is always there for decode) and position range, with patch tables that move it to any position
    below ``max_len`` (flightc.compiler.adaptive); a prompt runs as steps of the longest lengths that fit
    it. ``bucket`` also cuts every position range into pieces of that many positions; ``jobs`` lowers
    templates in that many processes and quantizes that many layers at a time (round to nearest). ``weights=False``
    compiles the programs only: formats are checked
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
    if stop_after is not None and stop_after not in GRAPH_PASSES:
        raise UnsupportedError(f"stop after {stop_after!r}: the passes that give a graph are {', '.join(GRAPH_PASSES)}")
    if stop_after == "equalize" and not weights:
        raise UnsupportedError("stop after 'equalize': a programs-only compile does not equalize")
    if max_len is not None and max_prefill is not None and max_prefill > max_len:
        raise UnsupportedError(f"max_prefill {max_prefill} exceeds max_len {max_len}")
    if budget is not None and not weights:
        raise UnsupportedError("a bit budget is allocated from the weights: it needs a compile with weights")
    b = Build(model, load_config(hw), plan or CompressionPlan(), max_len, max_prefill, calibration, prefill_lengths,
              random_weights, bucket, jobs, weights, source, method, budget, keep_integer)
    stopped = run_steps(STEPS, b, progress, stop_after)
    if stop_after is not None:
        return stopped
    return Compiled(b.cfg, b.plan, b.float_graph, b.integer, b.graph, b.memory, b.bundle, b.timings, b.allocation)
