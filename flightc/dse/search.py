"""The search: an optuna study over the hardware space, its points evaluated in parallel.

The driver asks the sampler (NSGA-II by default, or multi-objective TPE) for a batch of points,
evaluates them on an executor (local processes, or a Ray cluster), and tells the results back in the
order they were asked, so a seed gives the same study on any executor. The study lives in optuna
storage (SQLite in the output folder by default, or any RDB URL several drivers can share); a search
started again with the same arguments continues where it stopped.
"""
from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing
import os
import socket
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Callable

from flightc.dse.evaluate import PointResult, Workload, evaluate_point
from flightc.dse.space import SearchSpace
from flightc.errors import FlightcError

log = logging.getLogger(__name__)


class Direction(str, Enum):
    MAXIMIZE = "maximize"
    MINIMIZE = "minimize"


@dataclass(frozen=True)
class Objective:
    name: str
    label: str
    direction: Direction
    get: Callable[[PointResult], float]


def _resource(key: str) -> Callable[[PointResult], float]:
    return lambda r: float(r.resources.get(key, 0))


OBJECTIVES: dict[str, Objective] = {o.name: o for o in (
    Objective("tokens_per_s", "decode tokens/s", Direction.MAXIMIZE, lambda r: r.decode_tokens_per_s),
    Objective("prefill_ms", "prefill ms", Direction.MINIMIZE, lambda r: r.prefill_ms),
    Objective("dsp", "DSP", Direction.MINIMIZE, _resource("DSP")),
    Objective("lut", "LUT", Direction.MINIMIZE, _resource("LUT")),
    Objective("ff", "FF", Direction.MINIMIZE, _resource("FF")),
    Objective("bram", "BRAM36", Direction.MINIMIZE, _resource("BRAM36")),
    Objective("uram", "URAM", Direction.MINIMIZE, _resource("URAM")),
)}


def parse_objectives(text: str) -> list[Objective]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    bad = [n for n in names if n not in OBJECTIVES]
    if bad or not names:
        raise FlightcError(f"--objectives {text!r}: choose from {', '.join(OBJECTIVES)}")
    return [OBJECTIVES[n] for n in names]


@dataclass(frozen=True)
class Job:
    """Everything a worker needs to evaluate one point (picklable)."""

    model: str
    params: dict
    space: SearchSpace
    plan: object
    workload: Workload


def run_job(job: Job) -> PointResult:
    cfg = job.space.config(job.params, name=f"dse-{job.space.part.name}")
    return evaluate_point(job.model, cfg, job.plan, job.workload, job.space.part)


class LocalExecutor:
    """Processes on this machine (``jobs`` of them; 1: in this process)."""

    def __init__(self, jobs: int):
        self.jobs = max(1, jobs)
        self._pool = None

    def run(self, jobs: list[Job], done: Callable[[PointResult], None]) -> list[PointResult]:
        if self.jobs == 1:
            out = []
            for j in jobs:
                out.append(run_job(j))
                done(out[-1])
            return out
        if self._pool is None:
            self._pool = ProcessPoolExecutor(self.jobs, mp_context=multiprocessing.get_context("spawn"))
        futures = {self._pool.submit(run_job, j): i for i, j in enumerate(jobs)}
        out: list[PointResult | None] = [None] * len(jobs)
        for f in as_completed(futures):
            out[futures[f]] = f.result()
            done(out[futures[f]])
        return out  # type: ignore[return-value]

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown()


class RayExecutor:
    """Tasks on a Ray cluster (``address``), or on a local Ray instance of ``jobs`` CPUs."""

    def __init__(self, address: str | None, jobs: int):
        try:
            import ray
        except ImportError:
            raise FlightcError("--executor ray needs Ray: pip install ray") from None
        self.ray = ray
        if not ray.is_initialized():
            kwargs = {"address": address} if address else {"num_cpus": max(1, jobs)}
            ray.init(include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING, **kwargs)
        self._remote = ray.remote(run_job)

    def run(self, jobs: list[Job], done: Callable[[PointResult], None]) -> list[PointResult]:
        refs = [self._remote.remote(j) for j in jobs]
        index = {r: i for i, r in enumerate(refs)}
        out: list[PointResult | None] = [None] * len(jobs)
        pending = list(refs)
        while pending:
            ready, pending = self.ray.wait(pending, num_returns=1)
            out[index[ready[0]]] = self.ray.get(ready[0])
            done(out[index[ready[0]]])
        return out  # type: ignore[return-value]

    def close(self) -> None:
        pass


def make_executor(kind: str, jobs: int, address: str | None = None):
    if kind == "local":
        if address:
            raise FlightcError("--address is for --executor ray")
        return LocalExecutor(jobs)
    if kind == "ray":
        return RayExecutor(address, jobs)
    raise FlightcError(f"--executor {kind!r}: choose local or ray")


@dataclass
class Trial:
    number: int
    params: dict
    result: PointResult


DRIVER = f"{socket.gethostname()}:{os.getpid()}"


def driver_alive(driver: str) -> bool:
    """Whether the driver that asked a trial may still finish it (unknown hosts are assumed alive)."""
    host, _, pid = driver.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return bool(driver)
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True


def study_name(model: str, space: SearchSpace, plan_text: str, objectives: list[Objective], workload: Workload,
               seed: int) -> str:
    """One study per question: a search with other arguments (or another space) never mixes into it."""
    obj = "+".join(o.name for o in objectives)
    choices = hashlib.sha256(json.dumps(space.choices, sort_keys=True).encode()).hexdigest()[:8]
    return (f"{Path(str(model)).name}-{space.part.name}-{plan_text}-{obj}-p{workload.prompt}d{workload.decode}"
            f"x{workload.max_prefill}-space{choices}-s{seed}")


def explore(model: str, space: SearchSpace, plan, plan_text: str, workload: Workload, objectives: list[Objective],
            trials: int, storage: str, seed: int = 0, executor=None, sampler: str = "nsga2",
            population: int = 10, progress: Callable[[int, int, Trial | None], None] | None = None,
            start: dict | None = None) -> list[Trial]:
    """Run (or continue) the study until it holds ``trials`` finished points; returns every finished point. A new
    study asks ``start`` (a point of the space: the part's preset) first."""
    import optuna
    from optuna.distributions import CategoricalDistribution
    from optuna.trial import TrialState

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    dists = {k: CategoricalDistribution(list(v)) for k, v in space.choices.items()}

    def make_sampler(batch_seed: int):
        if sampler == "nsga2":
            return optuna.samplers.NSGAIISampler(population_size=population, seed=batch_seed)
        if sampler == "tpe":
            return optuna.samplers.TPESampler(seed=batch_seed, multivariate=True)
        raise FlightcError(f"--sampler {sampler!r}: choose nsga2 or tpe")

    s = make_sampler(seed)
    name = study_name(model, space, plan_text, objectives, workload, seed)
    study = optuna.create_study(storage=storage, study_name=name, sampler=s, load_if_exists=True,
                                directions=[o.direction.value for o in objectives])
    # points a killed driver left unfinished are asked again, in their order (another live driver's are left alone)
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if driver_alive(t.user_attrs.get("driver", "")):
            continue
        try:
            study.tell(t.number, state=TrialState.FAIL)
        except optuna.exceptions.UpdateFinishedTrialError:
            continue  # finished meanwhile
        study.enqueue_trial(t.params, skip_if_exists=False)
    if start is not None and not study.get_trials(deepcopy=False):
        study.enqueue_trial(start)
    finished: list[Trial] = []
    seen: dict[tuple, PointResult] = {}
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.FAIL)):
        if "result" in t.user_attrs:
            r = PointResult.from_dict(t.user_attrs["result"])
            finished.append(Trial(t.number, t.params, r))
            seen[tuple(sorted(t.params.items()))] = r
    executor = executor or LocalExecutor(os.cpu_count() or 1)
    while len(finished) < trials:
        batch = min(population, trials - len(finished))
        # a sampler seeded afresh for each batch from the points before it (its state lives in the study): a resumed
        # search draws what an uninterrupted one would, whatever the random draws before the interruption were
        study.sampler = make_sampler(seed * 1_000_003 + len(finished))
        asked = [study.ask(dists) for _ in range(batch)]
        for t in asked:
            t.set_user_attr("driver", DRIVER)
        todo = [(i, t) for i, t in enumerate(asked) if tuple(sorted(t.params.items())) not in seen]
        results: list[PointResult | None] = [seen.get(tuple(sorted(t.params.items()))) for t in asked]

        completed = [len(finished)]

        def done(_r: PointResult) -> None:
            completed[0] += 1
            if progress:
                progress(completed[0], trials, None)

        fresh = executor.run([Job(model, t.params, space, plan, workload) for _, t in todo], done)
        for (i, _), r in zip(todo, fresh):
            results[i] = r
        for t, r in zip(asked, results):
            assert r is not None
            seen[tuple(sorted(t.params.items()))] = r
            t.set_user_attr("result", r.to_dict())
            for key, over in r.overuse().items():  # > 0: over the part (constrained domination in the samplers)
                t.set_constraint(key, over)
            if r.error:
                study.tell(t, state=TrialState.FAIL)
            else:
                study.tell(t, [o.get(r) for o in objectives])
            finished.append(Trial(t.number, t.params, r))
            if progress:
                progress(len(finished), trials, finished[-1])
    return finished
