"""Hardware design-space exploration: Pareto fronts of modeled speed against FPGA resources.

``run_dse`` (and ``flightc dse``) searches HardwareConfig space for one model, compression plan, part
and workload; each point is compiled (programs only), timed by the performance model, sized by the
yosys-calibrated resource model and checked against the part. See docs/dse.md.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from flightc.config import PRESETS
from flightc.errors import ConfigError
from flightc.files import write_atomic
from flightc.dse.evaluate import PointResult, Workload, evaluate_point
from flightc.parts import PARTS, Part, part
from flightc.dse.resources import Resources, estimate_resources
from flightc.dse.search import OBJECTIVES, Objective, Trial, explore, make_executor, parse_objectives
from flightc.dse.space import SearchSpace

log = logging.getLogger(__name__)

__all__ = ["PARTS", "OBJECTIVES", "DseResult", "Objective", "Part", "PointResult", "Resources", "SearchSpace", "Trial",
           "Workload", "default_workload", "estimate_resources", "evaluate_point", "explore", "make_executor",
           "parse_objectives", "part", "run_dse"]


@dataclass
class DseResult:
    trials: list[Trial]
    front: list[Trial]
    files: list[Path] = field(default_factory=list)
    configs: list[Path] = field(default_factory=list)
    seconds: float = 0.0
    space: SearchSpace | None = None  # the space searched, narrowed to what the model compiles for
    minimums: dict = field(default_factory=dict)  # smallest buffers (KiB) and the off-chip bytes the model needs


def default_workload(model, prompt: int | None = None, decode: int | None = None, max_prefill: int = 4) -> Workload:
    """FlightLLM's [128, 512] request, shortened to fit a model with fewer positions (the built-in ones)."""
    from flightc.dse.evaluate import resolve_model

    source, _, _ = resolve_model(model)
    if isinstance(source, Path):
        import json

        limit = int(json.loads((source / "config.json").read_text()).get("max_position_embeddings", 2048))
    else:
        limit = int(getattr(source.config, "max_position_embeddings", 2048))
    p = prompt if prompt is not None else min(128, limit // 4)
    d = decode if decode is not None else min(512, limit - p)
    return Workload(prompt=p, decode=d, max_prefill=min(max_prefill, p))


def run_dse(model: str, part_name: str, plan_text: str = "w4g128s8:16", objectives: str = "tokens_per_s,dsp",
            trials: int = 50, out: str | Path = "out/dse", seed: int = 0, jobs: int = 2, executor: str = "local",
            address: str | None = None, storage: str | None = None, workload: Workload | None = None,
            max_cores: int | None = None, space_overrides: dict | None = None, sampler: str = "nsga2",
            population: int = 10, progress: Callable[[int, int, Trial | None], None] | None = None,
            status: Callable[[str], None] | None = None) -> DseResult:
    """Narrow the space to what the model compiles for, search it, then write the Pareto table (CSV, markdown),
    plots (PNG, HTML) and one config JSON per Pareto point."""
    from flightc.dse.feasible import narrowed
    from flightc.compress.plan import CompressionPlan
    from flightc.dse import report

    t0 = time.perf_counter()
    for name, value in (("trials", trials), ("jobs", jobs), ("population", population)):
        if value < 1:
            raise ConfigError(f"--{name} {value}: a search needs at least 1")
    if sampler == "nsga2" and population < 2:  # (before the minutes the model's narrowing takes)
        raise ConfigError(f"--population {population}: NSGA-II breeds generations of at least 2 points; use "
                          f"--population 2 or more (or --sampler tpe)")
    p = part(part_name)
    plan = CompressionPlan.parse(plan_text)
    objs = parse_objectives(objectives)
    workload = workload or default_workload(model)
    space = SearchSpace.for_part(p, plan, max_cores, space_overrides)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    space, minimums = narrowed(space, model, plan, workload, out, status)
    storage = storage or f"sqlite:///{(out / 'study.db').resolve()}"
    start = space.params_of(PRESETS[p.name]) if p.name in PRESETS else None
    if start is not None:
        log.info("the search starts from the %s preset (a point of the space)", p.name)
    ex = make_executor(executor, jobs, address)
    try:
        trials = explore(str(model), space, plan, plan_text, workload, objs, trials, storage, seed, ex, sampler,
                         population, progress, start)
    finally:
        ex.close()
    front = report.pareto_front(trials, objs)
    title = (f"{Path(str(model)).name} on {p.name}, {plan_text}, prompt {workload.prompt} + decode {workload.decode}: "
             f"{len(trials)} points, {len(front)} on the Pareto front ({', '.join(o.name for o in objs)})")
    files = [out / "pareto.md", out / "pareto.csv", out / "trials.csv"]
    write_atomic(files[0], f"{title}\n\n" + report.markdown(front))
    report.write_csv(front, files[1])
    report.write_csv(trials, files[2])
    if trials:
        # FlightLLM's point is a LLaMA2-7B measurement on the U280: marked only where it compares
        flightllm = p.name == "u280" and "llama2-7b" in str(model).lower()
        files.append(report.plot(trials, front, p, title, out / "pareto", flightllm=flightllm))
        files.append(report.write_html(front, trials, p, title, out / "pareto.html", flightllm))
    configs = report.write_configs(front, out / "configs", p)
    return DseResult(trials, front, files, configs, time.perf_counter() - t0, space, minimums)
