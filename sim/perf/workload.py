"""A whole request on the modeled hardware: a prompt (prefill) then generated tokens (decode).

Each step of the request is a program of the bundle patched to its position
(flightc.compiler.adaptive) and scheduled by the performance model. Long requests evaluate every
``sample_every``-th position of a phase exactly and interpolate the steps in between linearly (step
time grows smoothly with the context); :meth:`WorkloadModel.interpolation_error` measures how far
that is off at the midpoints.
"""
from __future__ import annotations

import bisect
from dataclasses import dataclass, field

import numpy as np

from flightc.bundle import Bundle
from flightc.compiler.memory import RegionKind
from flightc.config import Buffer
from flightc.isa.codec import decode_program
from flightc.isa.footprint import weight_format
from flightc.isa.table import Opcode
from flightc.sim.perf.report import StepReport, step_report
from flightc.sim.perf.schedule import Schedule, schedule


@dataclass
class Phase:
    """Prefill or decode of one request."""

    steps: int
    tokens: int
    seconds: float
    hbm_bytes: float
    macs: float
    unit_busy: dict[str, float] = field(default_factory=dict)  # time-weighted, fraction of the phase
    exact_steps: int = 0  # steps scheduled exactly (the rest interpolated)

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.seconds if self.seconds else 0.0


@dataclass
class TokenBytes:
    """Bytes one decode step streams from memory, by what they are."""

    weight_values: int = 0
    sparse_indices: int = 0
    group_scales: int = 0
    requant_records: int = 0
    kv_cache: int = 0
    other: int = 0  # embedding row, norm parameters, LUTs, RoPE rows, exchanges between cores

    @property
    def total(self) -> int:
        return (self.weight_values + self.sparse_indices + self.group_scales + self.requant_records + self.kv_cache
                + self.other)


class WorkloadModel:
    def __init__(self, bundle: Bundle, sample_every: int = 64):
        self.bundle, self.cfg, self.sample_every = bundle, bundle.config, sample_every
        self._steps: dict[tuple[int, int], StepReport] = {}  # reports only: a 7B step's schedule is large
        self._regions: dict[int, list[dict]] = {}
        for r in sorted(bundle.manifest["memory_map"]["regions"], key=lambda r: (r["channel"], r["addr"])):
            self._regions.setdefault(r["channel"], []).append(r)

    def programs(self, length: int, pos0: int) -> list:
        """The decoded instructions of one step, per core."""
        return [decode_program(p) for p in self.bundle.step(length, pos0)]

    def schedule_of(self, length: int, pos0: int) -> Schedule:
        return schedule(self.cfg, self.programs(length, pos0))

    def step(self, length: int, pos0: int) -> StepReport:
        key = (length, pos0)
        if key not in self._steps:
            self._steps[key] = step_report(f"{length} tokens at {pos0}", self.schedule_of(length, pos0))
        return self._steps[key]

    @property
    def exact_steps(self) -> int:
        """Steps scheduled so far."""
        return len(self._steps)

    def _phase(self, steps: list[tuple[int, int]], tokens: int) -> Phase:
        by_len: dict[int, list[int]] = {}
        for length, p in steps:
            by_len.setdefault(length, []).append(p)
        ph = Phase(len(steps), tokens, 0.0, 0.0, 0.0)
        busy: dict[str, float] = {}
        for length, positions in by_len.items():
            stride = max(1, self.sample_every // length)
            picked = sorted(set(positions[::stride]) | {positions[-1]})
            reps = [self.step(length, p) for p in picked]
            ph.exact_steps += len(picked)
            xs = np.array(picked, float)
            ps = np.array(positions, float)
            for attr in ("seconds", "macs"):
                ys = np.array([getattr(r, attr) for r in reps], float)
                setattr(ph, attr, getattr(ph, attr) + float(np.interp(ps, xs, ys).sum()))
            ys = np.array([r.hbm_read_bytes + r.hbm_written_bytes for r in reps], float)
            ph.hbm_bytes += float(np.interp(ps, xs, ys).sum())
            for unit in reps[0].unit_busy:
                ys = np.array([r.unit_busy.get(unit, 0.0) * r.seconds for r in reps], float)
                busy[unit] = busy.get(unit, 0.0) + float(np.interp(ps, xs, ys).sum())
        ph.unit_busy = {u: b / ph.seconds for u, b in busy.items()} if ph.seconds else {}
        return ph

    def prefill(self, prompt: int) -> Phase:
        steps, pos = [], 0
        for length in self.bundle.prompt_steps(prompt):
            steps.append((length, pos))
            pos += length
        return self._phase(steps, prompt)

    def decode(self, start: int, count: int) -> Phase:
        return self._phase([(1, p) for p in range(start, start + count)], count)

    def interpolation_error(self, start: int, count: int) -> float:
        """Largest relative error of the linear interpolation at the midpoints between decode samples."""
        stride = self.sample_every
        worst = 0.0
        for a in range(start, start + count - stride, stride):
            b, mid = a + stride, a + stride // 2
            guess = (self.step(1, a).seconds + self.step(1, b).seconds) / 2
            worst = max(worst, abs(guess - self.step(1, mid).seconds) / self.step(1, mid).seconds)
        return worst

    def _region(self, channel: int, addr: int) -> dict:
        """The memory-map region an address of a channel falls in."""
        regions = self._regions[channel]
        i = bisect.bisect_right([r["addr"] for r in regions], addr) - 1
        if i < 0 or addr >= regions[i]["addr"] + max(regions[i]["nbytes"], 1):
            raise ValueError(f"channel {channel} address {addr} is in no region of the memory map")
        return regions[i]

    def token_bytes(self, pos0: int) -> TokenBytes:
        """What the decode step at ``pos0`` streams from memory, split by kind: weights from the MPE
        instructions that read them (their format splits values, indices and group scales), every other
        load by the memory-map region it reads."""
        tb = TokenBytes()
        for prog in self.programs(1, pos0):
            for ins in prog:
                if ins.opcode in (Opcode.MM, Opcode.MV) and ins.w_buf == Buffer.WGT:
                    values, index, scales = weight_format(ins).row_parts(ins.k)
                    tb.weight_values += ins.n * values
                    tb.sparse_indices += ins.n * index
                    tb.group_scales += ins.n * scales
                elif ins.opcode is Opcode.LD and not ins.gather:
                    region = self._region(ins.channel, ins.hbm_addr)
                    nbytes = ins.rows * ins.row_bytes
                    if region["kind"] == RegionKind.KV.value:
                        tb.kv_cache += nbytes
                    elif region["kind"] == RegionKind.PARAM.value and region["name"].endswith(".r"):
                        tb.requant_records += nbytes
                    elif region["kind"] != RegionKind.WEIGHT.value:  # weights: counted at the MPE above
                        tb.other += nbytes
                elif ins.opcode is Opcode.LD:
                    tb.other += ins.rows * ins.row_bytes + 4 * ins.rows  # gathered rows and their ids
        return tb
