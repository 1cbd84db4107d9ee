"""A whole request on the modeled hardware: a prompt (prefill) then generated tokens (decode).

Each step of the request is a program of the bundle patched to its position
(flightc.compiler.adaptive) and scheduled by the performance model. Long requests evaluate every
``sample_every``-th position of a phase exactly and interpolate the steps in between linearly (step
time grows smoothly with the context); :meth:`WorkloadModel.interpolation_error` measures how far
that is off at the midpoints.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from flightc.bundle import Bundle
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

    def token_bytes(self, pos0: int) -> TokenBytes:
        """What the decode step at ``pos0`` streams from memory, split by kind (from its instructions)."""
        programs = self.programs(1, pos0)
        tb = TokenBytes()
        for prog in programs:
            for ins in prog:
                if ins.opcode is Opcode.LD:
                    nbytes = ins.rows * ins.row_bytes
                    if ins.buf == Buffer.KV:
                        tb.kv_cache += nbytes
                    elif ins.buf != Buffer.WGT:
                        tb.other += nbytes
                elif ins.opcode in (Opcode.MM, Opcode.MV) and ins.w_buf == Buffer.WGT:
                    fmt = weight_format(ins)
                    nnz = fmt.nnz(ins.k)
                    values, index = (nnz * fmt.bits + 7) // 8, (nnz * fmt.index_bits + 7) // 8
                    tb.weight_values += ins.n * values
                    tb.sparse_indices += ins.n * index
                    tb.group_scales += ins.n * (fmt.row_bytes(ins.k) - values - index)
        # requantization records are PRM loads next to each weight tile; count them apart from "other"
        for prog in programs:
            for i, ins in enumerate(prog[:-1]):
                nxt = prog[i + 1]
                if (ins.opcode is Opcode.LD and ins.buf == Buffer.WGT and nxt.opcode is Opcode.LD
                        and nxt.buf == Buffer.PRM):
                    tb.requant_records += nxt.rows * nxt.row_bytes
                    tb.other -= nxt.rows * nxt.row_bytes
        return tb
