"""Bit-budget allocation: a weight format per linear layer from measured sensitivity.

Given a target average of bits per weight (by default everything a weight position takes in memory: its kept
value's bits, the metadata of the positions kept and the group multipliers, ``WeightFormat.stored_bits``, so a
cheaper encoding of the positions leaves more bits to the values; or FlightLLM's "3.5-bit" sense, the bits of each
kept weight's value, averaged over all weights of the layers; the LM head excluded either way) and the sparsity
patterns allowed, each layer's candidate formats are scored by the relative output error of that
layer alone on calibration inputs, ``||X (W - W_q)^T||^2 / ||X W^T||^2``, compressed by the chosen
solver. A greedy descent then starts every layer at its most accurate candidate and, while the
average bits (or the average density, when the sparsity is chosen per layer) is over target, takes
the move that costs the least added error per bit saved, as mixed-precision allocators such as
HAWQ-V3 do with their sensitivities.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

import numpy as np

from flightc.compress.formats import WeightFormat
from flightc.compress.method import Solver
from flightc.compress.obs import hessian, output_error
from flightc.compress.plan import CompressionPlan
from flightc.config import HardwareConfig
from flightc.errors import UnsupportedError
from flightc.ir.graph import GraphIR


class BudgetBits(str, Enum):
    """What a bit budget counts per weight."""

    STORED = "stored"  # every bit a weight position takes in memory: value, positions' metadata, group multipliers
    VALUES = "values"  # the bits of each kept weight's value (FlightLLM's "3.5-bit"): metadata uncounted

    def of(self, f: WeightFormat) -> float:
        return f.stored_bits if self is BudgetBits.STORED else f.bits


@dataclass(frozen=True)
class BitBudget:
    """What to allocate: average ``bits`` per weight, as ``counts`` says; ``sparsity`` 'dense', an 'N:M' applied to
    every layer, or 'auto' (per layer, average kept fraction at most ``density``); groups of ``group`` along K."""

    bits: float
    sparsity: str = "dense"
    density: float = 1.0
    group: int = 128
    counts: BudgetBits = BudgetBits.STORED

    def patterns(self, cfg: HardwareConfig) -> list[tuple[int, int]]:
        if self.sparsity == "dense":
            return [(16, 16)]
        if self.sparsity == "auto":
            nm = [(n, cfg.sparse_m) for n in sorted(cfg.sparse_n, reverse=True)]
            return nm + ([(2, 4)] if cfg.supports_2_4 else [])
        n, _, m = self.sparsity.partition(":")
        try:
            return [(int(n), int(m))]
        except ValueError:
            raise UnsupportedError(f"sparsity {self.sparsity!r}: expected dense, auto or N:M such as 8:16") from None


@dataclass
class LayerChoice:
    layer: str
    shape: tuple[int, int]
    fmt: WeightFormat
    error: float
    options: dict[WeightFormat, float] = field(default_factory=dict)

    @property
    def params(self) -> int:
        return self.shape[0] * self.shape[1]

    @property
    def density(self) -> float:
        return self.fmt.n / self.fmt.m


@dataclass
class Allocation:
    budget: BitBudget
    layers: list[LayerChoice]

    @property
    def params(self) -> int:
        return sum(c.params for c in self.layers)

    @property
    def avg_bits(self) -> float:
        return sum(c.params * c.fmt.bits for c in self.layers) / self.params

    @property
    def avg_density(self) -> float:
        return sum(c.params * c.density for c in self.layers) / self.params

    @property
    def stored_bits_per_weight(self) -> float:
        """Everything the packed rows hold (values, sparse indices, group multipliers) per dense weight."""
        return sum(8 * c.fmt.row_bytes(c.fmt.whole(c.shape[1])) * c.shape[0] for c in self.layers) / self.params

    def plan(self, base: CompressionPlan) -> CompressionPlan:
        """``base`` with one override per allocated layer (exact names)."""
        return CompressionPlan(base.default, base.overrides + tuple((c.layer, c.fmt) for c in self.layers),
                               base.head, base.kv_bits)

    def describe(self) -> dict:
        return {"budget_bits": self.budget.bits, "budget_counts": self.budget.counts.value,
                "sparsity": self.budget.sparsity, "density": self.budget.density,
                "avg_bits": round(self.avg_bits, 4), "avg_density": round(self.avg_density, 4),
                "stored_bits_per_weight": round(self.stored_bits_per_weight, 4),
                "layers": {c.layer: {"format": c.fmt.label(), "rel_error": c.error} for c in self.layers}}


def candidates(cfg: HardwareConfig, budget: BitBudget, k: int) -> list[WeightFormat]:
    """Formats the hardware runs for reduction length k: every supported width x allowed pattern (its positions in
    the encoding the compiler would choose)."""
    from flightc.compiler.memory import chosen_format

    out = []
    for bits in sorted(cfg.weight_bits):
        for n, m in budget.patterns(cfg):
            group = 0 if bits == 8 or not budget.group else budget.group
            fmt = chosen_format(WeightFormat(bits=bits, n=n, m=m, group=group, encoding=None), cfg, k)
            try:
                fmt.check(cfg, "?", k)
            except UnsupportedError:
                continue
            out.append(fmt)
    return out


def sensitivities(graph: GraphIR, calibration: np.ndarray, cfg: HardwareConfig, budget: BitBudget,
                  solver: Solver, layers: list[str], progress=None) -> dict[str, dict[WeightFormat, float]]:
    """Relative output error of every candidate format of every layer, on the float model's own inputs."""
    from flightc.compiler.compress import solve
    from flightc.reference.float_graph import run_float

    acts = run_float(graph, np.atleast_2d(calibration))
    out: dict[str, dict[WeightFormat, float]] = {}
    for i, name in enumerate(layers):
        node = graph.node(name)
        w = np.asarray(node["weight"], np.float64)
        h = hessian(acts[node["inputs"][0]])
        out[name] = {f: output_error(w, solve(w, f, solver, h), h) for f in candidates(cfg, budget, w.shape[1])}
        if not out[name]:
            raise UnsupportedError(f"layer {name}: no format of the hardware fits K = {w.shape[1]} "
                                   f"with sparsity {budget.sparsity}")
        if progress:
            progress(i + 1, len(layers))
    return out


def allocate(sens: dict[str, dict[WeightFormat, float]], shapes: dict[str, tuple[int, int]],
             budget: BitBudget) -> Allocation:
    """Greedy descent from the most accurate formats until the bit (and density) targets hold."""
    params = {n: r * k for n, (r, k) in shapes.items()}
    total = sum(params.values())
    choice = {name: min(opts, key=lambda f: (opts[f], -f.bits, -f.n / f.m)) for name, opts in sens.items()}

    def avg(key) -> float:
        return sum(params[n] * key(f) for n, f in choice.items()) / total

    def bits(f: WeightFormat) -> float:
        return budget.counts.of(f)

    def density(f: WeightFormat) -> float:
        return f.n / f.m

    for measure, target, other in ((bits, budget.bits, density), (density, budget.density, bits)):
        while avg(measure) > target + 1e-9:
            best = None
            for name, cur in choice.items():
                for f, err in sens[name].items():
                    saved = params[name] * (measure(cur) - measure(f))
                    if saved <= 0 or other(f) > other(cur):
                        continue
                    rate = (err - sens[name][cur]) / saved
                    if best is None or rate < best[0]:
                        best = (rate, name, f)
            if best is None:
                lowest = min(measure(f) for opts in sens.values() for f in opts)
                what = f"{budget.counts.value} bits" if measure is bits else "density"
                raise UnsupportedError(f"the budget of {target} {what} per weight cannot be met: the lowest the "
                                       f"hardware's formats reach is {lowest:g}")
            choice[best[1]] = best[2]
    layers = [LayerChoice(n, shapes[n], f, sens[n][f], sens[n]) for n, f in choice.items()]
    return Allocation(budget, layers)


def allocate_plan(graph: GraphIR, calibration: np.ndarray, cfg: HardwareConfig, budget: BitBudget,
                  solver: Solver, base: CompressionPlan, progress=None) -> tuple[CompressionPlan, Allocation]:
    """The plan for ``graph`` under ``budget`` (every linear but the LM head), and the allocation behind it."""
    layers = [n for n in graph.linears() if n != "lm_head"]
    shapes = {n: tuple(graph.node(n)["weight"].shape) for n in layers}
    alloc = allocate(sensitivities(graph, calibration, cfg, budget, solver, layers, progress), shapes, budget)
    return alloc.plan(base), alloc
