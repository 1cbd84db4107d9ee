"""A whole request on the modeled hardware: a prompt (prefill) then generated tokens (decode).

Each step of the request is a program of the bundle patched to its position
(flightc.compiler.adaptive) and scheduled by the performance model. Long requests evaluate every
``sample_every``-th position of a phase exactly and interpolate the steps in between linearly (step
time grows smoothly with the context); :meth:`WorkloadModel.interpolation_error` measures how far
that is off at the midpoints.
"""
from __future__ import annotations

import bisect
import re
from dataclasses import asdict, dataclass, field
from typing import Callable

import numpy as np

from flightc.bundle import Bundle
from flightc.compiler.memory import RegionKind, region_spans
from flightc.compress.formats import WeightFormat
from flightc.config import HardwareConfig
from flightc.errors import UnsupportedError
from flightc.isa.codec import decode_program
from flightc.isa.footprint import stream_spans, streamed
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

    def bandwidth_used(self, cfg: HardwareConfig) -> float:
        """Bytes moved over the phase's time, as a fraction of the nominal bandwidth of all channels."""
        return self.hbm_bytes / self.seconds / cfg.mem_bytes_per_s if self.seconds else 0.0

    def macs_used(self, cfg: HardwareConfig) -> float:
        """MACs over the phase's time, as a fraction of every core's peak MACs."""
        return self.macs / self.seconds / cfg.peak_macs_per_s if self.seconds else 0.0

    @property
    def busiest_unit(self) -> str:
        return max(self.unit_busy, key=self.unit_busy.get) if self.unit_busy else "-"

    def to_dict(self, cfg: HardwareConfig) -> dict:
        """One phase of ``flightc perf --json`` (flightc/schema.py)."""
        return {"steps": self.steps, "tokens": self.tokens, "seconds": self.seconds, "tokens_per_s": self.tokens_per_s,
                "hbm_bytes": self.hbm_bytes, "macs": self.macs, "bandwidth_used": self.bandwidth_used(cfg),
                "macs_used": self.macs_used(cfg), "unit_busy": dict(self.unit_busy), "exact_steps": self.exact_steps}


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

    def to_dict(self) -> dict:
        return {**asdict(self), "total": self.total}


@dataclass
class RequestReport:
    """A request (prompt, then generated tokens) on the modeled hardware, with the HBM roofline it is held to:
    the nominal bandwidth (mem_channels x mem_channel_gbps) over the bytes one decode step streams, taken at the
    middle of the generated tokens."""

    cfg: HardwareConfig
    prompt: int
    decode_tokens: int
    sample_every: int
    prefill: Phase
    decode: Phase | None
    token_bytes: TokenBytes | None  # of the decode step at roofline_position
    roofline_position: int | None

    @property
    def roofline_tokens_per_s(self) -> float | None:
        return self.cfg.mem_bytes_per_s / self.token_bytes.total if self.token_bytes else None

    @property
    def of_roofline(self) -> float | None:
        roof = self.roofline_tokens_per_s
        return self.decode.tokens_per_s / roof if roof else None

    def to_dict(self) -> dict:
        """``flightc perf --json``: keys, units and meanings are declared in flightc/schema.py (PERF_SCHEMA)."""
        from flightc.schema import PERF_SCHEMA

        return {"schema": PERF_SCHEMA.version, "modeled": True,
                "config": {"name": self.cfg.name, "hash": self.cfg.hash, "clock_mhz": self.cfg.clock_mhz,
                           "mem_bytes_per_s": self.cfg.mem_bytes_per_s, "peak_macs_per_s": self.cfg.peak_macs_per_s},
                "request": {"prompt": self.prompt, "decode": self.decode_tokens, "sample_every": self.sample_every},
                "prefill": self.prefill.to_dict(self.cfg),
                "decode": self.decode.to_dict(self.cfg) if self.decode else None,
                "token_bytes": {"position": self.roofline_position, **self.token_bytes.to_dict()}
                if self.token_bytes else None,
                "roofline_tokens_per_s": self.roofline_tokens_per_s, "of_roofline": self.of_roofline}


def _extrapolated_phase(one: Phase, two: Phase, k: int) -> Phase:
    def line(a: float, b: float) -> float:
        return a + k * (b - a)

    seconds = line(one.seconds, two.seconds)
    busy = {u: line(one.unit_busy.get(u, 0.0) * one.seconds, two.unit_busy.get(u, 0.0) * two.seconds)
            for u in two.unit_busy}
    return Phase(two.steps, two.tokens, seconds, line(one.hbm_bytes, two.hbm_bytes), line(one.macs, two.macs),
                 {u: b / seconds for u, b in busy.items()} if seconds else {}, two.exact_steps)


def extrapolated(one: RequestReport, two: RequestReport, layers: int) -> RequestReport:
    """A request on a model of ``layers`` decoder layers from the same request on its one- and two-layer copies:
    every time, byte and MAC count ``x1 + (layers - 1) * (x2 - x1)``, as the DSE extrapolates: the layers are the
    same programs up to their addresses, so the bytes are exact and the times within 0.1% (tests/test_perf_model.py
    checks it against a full compile)."""
    k = layers - 1
    tb = None
    if one.token_bytes and two.token_bytes:
        a, b = asdict(one.token_bytes), asdict(two.token_bytes)
        tb = TokenBytes(**{f: a[f] + k * (b[f] - a[f]) for f in b})
    return RequestReport(two.cfg, two.prompt, two.decode_tokens, two.sample_every,
                         _extrapolated_phase(one.prefill, two.prefill, k),
                         _extrapolated_phase(one.decode, two.decode, k) if one.decode and two.decode else None,
                         tb, two.roofline_position)


class WorkloadModel:
    def __init__(self, bundle: Bundle, sample_every: int = 64):
        self.bundle, self.cfg, self.sample_every = bundle, bundle.config, sample_every
        self._steps: dict[tuple[int, int], StepReport] = {}  # reports only: a 7B step's schedule is large
        # per channel, (address, bytes there, region) of each region with bytes on it (a striped one on each of its
        # channels), by address
        self._regions: dict[int, list[tuple[int, int, dict]]] = {}
        for r in bundle.manifest.memory_map["regions"]:
            for ch, addr, n in region_spans(r):
                self._regions.setdefault(ch, []).append((addr, n, r))
        for spans in self._regions.values():
            spans.sort(key=lambda span: span[0])

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

    def check_request(self, prompt: int, decode: int) -> None:
        if prompt < 1 or decode < 0:
            raise UnsupportedError(f"a request of {prompt} prompt and {decode} generated tokens: the prompt "
                                   f"(--prompt) needs at least 1 token and the generated tokens (--decode) at least 0")
        if prompt + decode > self.bundle.max_len:
            raise UnsupportedError(f"a request of {prompt} + {decode} tokens does not fit the bundle's max_len "
                                   f"{self.bundle.max_len}: shorten --prompt or --decode, or recompile with a larger "
                                   f"--max-len")

    def request(self, prompt: int, decode: int, progress: Callable[[str], None] | None = None) -> RequestReport:
        """Prefill of ``prompt`` tokens, ``decode`` generated tokens, and the roofline of the middle decode step."""
        self.check_request(prompt, decode)
        if progress:
            progress("modeling prefill")
        pre = self.prefill(prompt)
        if progress and decode:
            progress("modeling decode")
        dec = self.decode(prompt, decode) if decode else None
        mid = prompt + decode // 2 if decode else None
        return RequestReport(self.cfg, prompt, decode, self.sample_every, pre, dec,
                             self.token_bytes(mid) if decode else None, mid)

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
        spans = self._regions.get(channel, [])
        i = bisect.bisect_right([a for a, _, _ in spans], addr) - 1
        if i < 0 or addr >= spans[i][0] + max(spans[i][1], 1):
            raise ValueError(f"channel {channel} address {addr} is in no region of the memory map")
        return spans[i][2]

    @staticmethod
    def _layer_of(region: str) -> str:
        """The linear layer a weight tile's region belongs to ('l0.q.c1.t2.w' -> 'l0.q'; flightc.compiler.memory
        names them)."""
        return re.fullmatch(r"(.*?)(?:\.c\d+)?\.t\d+\.w", region).group(1)

    @staticmethod
    def _per_step(region: dict) -> bool:
        """A weight or requantization-record region: every decode step reads it whole."""
        return region["kind"] == RegionKind.WEIGHT.value or (region["kind"] == RegionKind.PARAM.value
                                                             and region["name"].endswith(".r"))

    def token_bytes(self, pos0: int) -> TokenBytes:
        """What the decode step at ``pos0`` must stream from memory, split by kind, whichever instructions move
        it: every weight region of the bundle (each layer's format splits it into values, positions and group
        multipliers) and every requantization record region, once per step; the K/V rows (loaded, or keys streamed
        from their image), embedding row and other parameters the step's loads read."""
        tb = TokenBytes()
        layers = self.bundle.manifest.layers
        for r in self.bundle.manifest.memory_map["regions"]:
            if not self._per_step(r):
                continue
            if r["kind"] == RegionKind.WEIGHT.value:
                shares = WeightFormat.from_label(layers[self._layer_of(r["name"])]).byte_shares()
                index, scales = round(r["nbytes"] * shares[1]), round(r["nbytes"] * shares[2])
                tb.weight_values += r["nbytes"] - index - scales
                tb.sparse_indices += index
                tb.group_scales += scales
            else:
                tb.requant_records += r["nbytes"]
        for prog in self.programs(1, pos0):
            for ins in prog:
                if ins.opcode is Opcode.LD and not ins.gather:
                    region = self._region(ins.channel, ins.hbm_addr)
                    nbytes = ins.rows * ins.row_bytes
                    if region["kind"] == RegionKind.KV.value:
                        tb.kv_cache += nbytes
                    elif not self._per_step(region):  # weights and records: counted above
                        tb.other += nbytes
                elif ins.opcode is Opcode.LD:
                    tb.other += ins.rows * ins.row_bytes + 4 * ins.rows  # gathered rows and their ids
                elif streamed(ins) and self._region(ins.w_channel, ins.w_hbm_addr)["kind"] == RegionKind.KV.value:
                    # keys streamed from their image: the rows the step sees, rounded up to whole row pairs of
                    # every lane group (the rows past the window are read too; their results are dropped)
                    tb.kv_cache += sum(n for _, _, n in stream_spans(self.cfg, ins))
        return tb
