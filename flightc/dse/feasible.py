"""Narrow a search space to what the model can be compiled for, before the search spends points on it.

Buffers: for each one, the smallest choice with which one decoder layer still compiles while every
other buffer is at its largest (a binary search: a few compiles each). Memory channels: the fewest
whose capacity holds the model's regions (measured on a roomy config and extrapolated over layers).
A model that no choice can hold is refused here, naming the buffer or the memory and the limit.
Then the sizes the part cannot hold: a value of a sized dimension (chains, lanes, masters, SFU lanes,
ports, buffers) that puts the kernel over the part by itself, everything else at its cheapest.
"""
from __future__ import annotations

import json
import logging
from dataclasses import replace
from pathlib import Path
from typing import Callable

from flightc.dse.evaluate import Workload, compile_error, evaluate_point
from flightc.dse.resources import estimate_resources
from flightc.dse.space import SearchSpace
from flightc.errors import UnsupportedError
from flightc.files import write_atomic

log = logging.getLogger(__name__)

BUFFERS = ("act_buffer_kib", "wgt_buffer_kib", "acc_buffer_kib", "prm_buffer_kib", "kv_buffer_kib")


def roomy_params(space: SearchSpace) -> dict:
    """The largest buffers, ports and channels, the smallest compute (the cheapest config most likely to compile)."""
    big = ("buffer_port_bytes", "mem_channels", "token_fifo_depth", *BUFFERS)
    return {k: (max(v) if k in big else v[0]) for k, v in space.choices.items()}


def narrow_to_model(space: SearchSpace, model: str, plan, workload: Workload,
                    progress: Callable[[str], None] | None = None) -> tuple[SearchSpace, dict]:
    """The space with buffer and channel choices the model fits, and what was found (for the record)."""
    base = roomy_params(space)
    cfg = space.config(base)
    why = compile_error(model, cfg, plan, workload)
    if why:
        raise UnsupportedError(f"{model} does not compile for {space.part.name} even with the largest buffers, "
                               f"ports and channels of the space: {why}")
    choices = dict(space.choices)
    found: dict[str, int] = {}
    for name in BUFFERS:
        values = sorted(choices[name])
        lo, hi = 0, len(values) - 1  # values[hi] compiles
        while lo < hi:
            mid = (lo + hi) // 2
            if progress:
                progress(f"sizing buffers: {name} {values[mid]} KiB")
            if compile_error(model, space.config({**base, name: values[mid]}), plan, workload) is None:
                hi = mid
            else:
                lo = mid + 1
        found[name] = values[hi]
        choices[name] = tuple(v for v in values if v >= values[hi])
    if progress:
        progress("measuring the model's off-chip footprint")
    r = evaluate_point(model, cfg, plan, workload, space.part)
    if r.error:
        raise UnsupportedError(f"{model} on the roomiest config of {space.part.name}: {r.error}")
    per_channel = cfg.mem_channel_bytes
    channels = tuple(c for c in choices["mem_channels"] if c * per_channel >= r.memory_bytes)
    if not channels:
        raise UnsupportedError(f"{model} needs {r.memory_bytes / 2**30:.2f} GiB of off-chip memory; {space.part.name} "
                               f"holds {max(choices['mem_channels']) * per_channel / 2**30:.2f} GiB")
    choices["mem_channels"] = channels
    found["memory_bytes"] = r.memory_bytes
    choices, dropped = within_part(replace(space, choices=choices))
    if dropped:
        found["over_the_part"] = dropped
        log.info("left out of the search, each over %s by itself: %s", space.part.name,
                 "; ".join(f"{k} {v}" for k, v in dropped.items()))
    return replace(space, choices=choices), found


# dimensions whose every step up costs more of the part (resources grow with each, the others held)
SIZED = ("num_cores", "mpe_chains", "chain_length", "buffer_port_bytes", "axi_masters", "lane_slots", "sfu_lanes",
         *BUFFERS)


def within_part(space: SearchSpace) -> tuple[dict[str, tuple], dict[str, list]]:
    """The choices without the values that alone, every other dimension at its cheapest, put the kernel over the
    part (by the resource model) or make its masters wider than the part's memory port: a point with one of them
    cannot fit, so the search spends nothing on it. Returns the choices and, per dimension, the values dropped. A
    space whose cheapest point is already over is left whole (the search then reports by how much each point is
    over)."""
    cap = space.part.capacity()
    cheap = {k: (min(v) if all(isinstance(x, (int, float)) for x in v) else v[0]) for k, v in space.choices.items()}

    def over(params: dict) -> bool:
        cfg = space.config(params)
        res = estimate_resources(cfg).as_dict()
        return any(cap[k] is not None and v > cap[k] for k, v in res.items()) or \
            space.part.port_violation(cfg.axi_data_bytes) is not None

    if over(cheap):
        return dict(space.choices), {}
    choices, dropped = dict(space.choices), {}
    for name in SIZED:
        if name not in choices:
            continue
        keep = tuple(v for v in choices[name] if not over({**cheap, name: v}))
        if len(keep) < len(choices[name]):
            dropped[name] = [v for v in choices[name] if v not in keep]
            choices[name] = keep
    return choices, dropped


def narrowed(space: SearchSpace, model: str, plan, workload: Workload, folder: Path,
             progress: Callable[[str], None] | None = None) -> tuple[SearchSpace, dict]:
    """``narrow_to_model``, kept in ``folder/space.json`` so that a resumed search skips it."""
    key = {"model": str(model), "plan": repr(plan), "workload": [workload.prompt, workload.decode,
                                                                  workload.max_prefill],
           "part": space.part.name, "choices": {k: list(v) for k, v in space.choices.items()}}
    path = folder / "space.json"
    if path.exists():
        saved = json.loads(path.read_text())
        if saved.get("key") == key:
            return replace(space, choices={k: tuple(v) for k, v in saved["choices"].items()}), saved["found"]
    new, found = narrow_to_model(space, model, plan, workload, progress)
    write_atomic(path, json.dumps({"key": key, "choices": {k: list(v) for k, v in new.choices.items()},
                                   "found": found}, indent=1) + "\n")
    return new, found
