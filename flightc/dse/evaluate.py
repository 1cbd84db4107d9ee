"""One design point: compile the model for a hardware config, model its speed, estimate its resources.

A model of more than ``FULL_COMPILE_LAYERS`` decoder layers is compiled (programs only) with one and
with two layers; every time and byte count is then ``t1 + (L - 1) * (t2 - t1)``: the layers are the same
programs up to their addresses, so the bytes are exact and the times within 0.1% (the channels a layer's
records and K/V rows land on vary, and contend a little differently; tests/test_dse.py checks both against a
full compile). A 7B point thus costs seconds, not minutes.
"""
from __future__ import annotations

import contextlib
import json
import logging
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator

from flightc.config import HardwareConfig
from flightc.parts import Part
from flightc.dse.resources import Resources, estimate_resources, lut_places
from flightc.errors import FlightcError, UnsupportedError

log = logging.getLogger(__name__)

FULL_COMPILE_LAYERS = 4
CONFIGS = Path(__file__).resolve().parents[1] / "models" / "configs"


@dataclass(frozen=True)
class Workload:
    """One request: a prompt of ``prompt`` tokens, then ``decode`` generated tokens."""

    prompt: int = 128
    decode: int = 512
    max_prefill: int = 4

    @property
    def max_len(self) -> int:
        return self.prompt + self.decode


@dataclass
class PointResult:
    """What one hardware config achieves on a model and workload, and whether it fits the part."""

    config: dict
    decode_tokens_per_s: float = 0.0
    prefill_ms: float = 0.0
    resources: dict[str, int] = field(default_factory=dict)
    utilization: dict[str, float | None] = field(default_factory=dict)  # fraction of the part, None: unknown
    # fraction of each place on the part its LUTs must fit (the dynamic region, SLR0: resources.lut_places)
    lut_places: dict[str, float] = field(default_factory=dict)
    memory_bytes: int = 0  # off-chip bytes the model's regions need (all channels)
    memory_capacity: int = 0
    violations: list[str] = field(default_factory=list)  # why it does not fit the part (empty: feasible)
    error: str = ""  # why it could not be evaluated (the compiler's message)
    seconds: float = 0.0  # evaluation time

    @property
    def feasible(self) -> bool:
        return not self.error and not self.violations

    def overuse(self) -> dict[str, float]:
        """Per checked resource and the off-chip memory: used / available - 1 (feasible when <= 0)."""
        out = {k: u - 1.0 for k, u in self.utilization.items() if u is not None}
        if self.lut_places:  # (one key whatever the places, so that every trial on a part has the same ones)
            out["LUT places"] = max(self.lut_places.values()) - 1.0
        if self.memory_capacity:
            out["memory"] = self.memory_bytes / self.memory_capacity - 1.0
        return out

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "PointResult":
        return cls(**d)


def resolve_model(model: str | Path) -> tuple[Any, int, bool]:
    """(what compile_model takes, decoder layers, whether it is a config folder without weights).

    ``model``: a name under flightc/models/configs (llama2-7b, opt-6.7b), a Hugging Face folder, or builtin:NAME.
    """
    from flightc.models.builtin import is_builtin, model_input

    if not is_builtin(model) and (CONFIGS / str(model) / "config.json").exists():
        model = CONFIGS / str(model)
    source = model_input(model)
    if isinstance(source, Path):
        cfg_path = source / "config.json"
        if not cfg_path.exists():
            raise FlightcError(f"--model {model}: no config.json in {source} (a Hugging Face folder, a name in "
                               f"{CONFIGS} or builtin:NAME)")
        cfg = json.loads(cfg_path.read_text())
        no_weights = not any(source.glob("*.safetensors"))
        return source, int(cfg["num_hidden_layers"]), no_weights
    return source, int(source.config.num_hidden_layers), False


def _with_layers(folder: Path, layers: int, into: Path) -> Path:
    """A copy of a model folder's config with ``layers`` decoder layers (weights are drawn at random)."""
    out = into / f"layers{layers}"
    out.mkdir(parents=True, exist_ok=True)
    cfg = json.loads((folder / "config.json").read_text())
    cfg["num_hidden_layers"] = layers
    (out / "config.json").write_text(json.dumps(cfg))
    return out


@dataclass
class _Measure:
    prefill_s: float
    decode_s: float  # mean seconds per decode step
    memory_bytes: int
    tokens: int  # most wait/release tokens one step passes from one unit to another (any core, any template)


def step_tokens(bundle) -> int:
    """The largest count of tokens one unit releases to another in one step of any of the bundle's templates."""
    from flightc.isa.codec import decode_program
    from flightc.isa.table import Unit

    most = 0
    for entry in bundle.manifest.programs:
        for stream in bundle.step(entry["length"], entry["p_lo"]):
            counts: dict[tuple[int, int], int] = {}
            for ins in decode_program(stream):
                for u in Unit:
                    if ins.release >> int(u) & 1:
                        key = (int(ins.unit), int(u))
                        counts[key] = counts.get(key, 0) + 1
            most = max(most, *counts.values(), 0)
    return most


def _measure(source: Any, cfg: HardwareConfig, plan, workload: Workload, random_weights: int | None,
             unbounded_tokens: bool = False) -> _Measure:
    """``unbounded_tokens``: compile a layer-reduced model without the token-counter check; the caller checks
    the count extrapolated to the full model (a full step passes about layers x one layer's tokens)."""
    from flightc.compiler.pipeline import compile_model
    from flightc.sim.perf.workload import WorkloadModel

    target = cfg.replace(token_fifo_depth=1 << 40) if unbounded_tokens else cfg
    c = compile_model(source, target, plan, max_len=workload.max_len, max_prefill=workload.max_prefill,
                      random_weights=random_weights, weights=False)
    wm = WorkloadModel(c.bundle, sample_every=max(workload.prompt, workload.decode))
    pre = wm.prefill(workload.prompt)
    dec = wm.decode(workload.prompt, workload.decode)
    # the regions' own bytes: the alignment between them (a striped tile starts a stripe unit on) is not
    # linear in the layers, and is far below a channel's capacity
    mem = sum(r["nbytes"] for r in c.bundle.manifest.memory_map["regions"])
    return _Measure(pre.seconds, dec.seconds / workload.decode, mem, step_tokens(c.bundle) if unbounded_tokens else 0)


def _extrapolated(source: Any, layers: int) -> bool:
    """Whether the model is measured on 1- and 2-layer copies of its config rather than compiled whole."""
    return layers > FULL_COMPILE_LAYERS and isinstance(source, Path)


@contextlib.contextmanager
def layer_copies(folder: Path, counts: tuple[int, ...]) -> Iterator[list[Path]]:
    """Copies of a model folder's config with each of ``counts`` decoder layers, removed afterwards."""
    tmp = Path(tempfile.mkdtemp(prefix="flightc-dse-"))
    try:
        yield [_with_layers(folder, n, tmp) for n in counts]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def compile_error(model: str | Path, cfg: HardwareConfig, plan, workload: Workload) -> str | None:
    """The compiler's refusal of ``cfg`` for the model, one decoder layer of it if it is extrapolated (None:
    it compiles)."""
    from flightc.compiler.pipeline import compile_model

    source, layers, no_weights = resolve_model(model)
    with contextlib.ExitStack() as stack:
        if _extrapolated(source, layers):
            (source,), no_weights = stack.enter_context(layer_copies(source, (1,))), True
        try:
            compile_model(source, cfg, plan, max_len=workload.max_len, max_prefill=workload.max_prefill,
                          random_weights=0 if no_weights else None, weights=False)
        except FlightcError as e:
            return str(e)
    return None


def evaluate_point(model: str | Path, cfg: HardwareConfig, plan, workload: Workload, part: Part) -> PointResult:
    """Compile (programs only), model the request, estimate resources and check them against ``part``."""
    t0 = time.perf_counter()
    result = PointResult(config=cfg.to_dict())
    res: Resources = estimate_resources(cfg)
    result.resources = res.as_dict()
    cap = part.capacity()
    result.utilization = {k: (v / cap[k] if cap[k] else None) for k, v in result.resources.items()}
    result.violations = [f"{k} {v:,} > {cap[k]:,} on {part.name}" for k, v in result.resources.items()
                         if cap[k] is not None and v > cap[k]]
    places = [x for x in lut_places(cfg, part) if x.hard]
    result.lut_places = {x.where: x.luts / x.available for x in places}
    result.violations += [f"LUT of {x.where} {x.luts:,} > {x.available:,} on {part.name}" for x in places
                          if x.luts > x.available]
    port = part.port_violation(cfg.axi_data_bytes)
    if port:
        result.violations.append(port)
    try:
        source, layers, no_weights = resolve_model(model)
        if not _extrapolated(source, layers):
            m = _measure(source, cfg, plan, workload, 0 if no_weights else None)
            prefill_s, decode_s, mem = m.prefill_s, m.decode_s, m.memory_bytes
        else:
            with layer_copies(source, (1, 2)) as (one, two):
                m1 = _measure(one, cfg, plan, workload, 0, unbounded_tokens=True)
                m2 = _measure(two, cfg, plan, workload, 0, unbounded_tokens=True)
            k = layers - 1
            tokens = m1.tokens + k * (m2.tokens - m1.tokens)
            if tokens > cfg.token_fifo_depth:
                raise UnsupportedError(f"tokens: a step of the full {layers}-layer model passes about {tokens:,} "
                                       f"tokens from one unit to another (one layer: {m2.tokens - m1.tokens:,}), "
                                       f"more than the token counters hold (token_fifo_depth "
                                       f"{cfg.token_fifo_depth}); larger buffers mean fewer tiles and tokens")
            prefill_s = m1.prefill_s + k * (m2.prefill_s - m1.prefill_s)
            decode_s = m1.decode_s + k * (m2.decode_s - m1.decode_s)
            mem = m1.memory_bytes + k * (m2.memory_bytes - m1.memory_bytes)
    except FlightcError as e:
        result.error = str(e)
        result.seconds = time.perf_counter() - t0
        return result
    result.prefill_ms = prefill_s * 1e3
    result.decode_tokens_per_s = 1.0 / decode_s if decode_s > 0 else 0.0
    result.memory_bytes = int(mem)
    result.memory_capacity = cfg.mem_channels * cfg.mem_channel_bytes
    if mem > result.memory_capacity:
        result.violations.append(f"model needs {mem / 2**30:.2f} GiB of off-chip memory, {cfg.mem_channels} "
                                 f"channels hold {result.memory_capacity / 2**30:.2f} GiB")
    result.seconds = time.perf_counter() - t0
    return result
