"""Round-to-nearest quantization with magnitude N:M pruning (the basic methods; calibrated ones come later).

A quantized row is ``w ~= row_scale * gs[k // group] * q[k]``: q is the stored b-bit value, gs a small
group multiplier chosen so that ``q * gs`` is always an INT8 operand for the DSPs.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from flightc.compress.formats import WeightFormat, group_scale_max, q_range


@dataclass(frozen=True)
class QuantWeight:
    """A compressed linear weight [N, K]: stored values, group multipliers and per-row float scales."""

    fmt: WeightFormat
    q: np.ndarray  # int8 [N, K], zero where pruned
    gs: np.ndarray  # uint8 [N, K // group] (empty when group == 0)
    row_scale: np.ndarray  # float64 [N]
    keep: np.ndarray | None  # bool [N, K]: the positions stored (n of every m); None when dense

    @property
    def shape(self) -> tuple[int, int]:
        return self.q.shape

    def int8_operand(self) -> np.ndarray:
        """What the dequantizer feeds the DSPs: q * gs, INT8."""
        if not self.fmt.group:
            return self.q.astype(np.int8)
        g = np.repeat(self.gs.astype(np.int16), self.fmt.group, axis=1)
        return (self.q.astype(np.int16) * g).astype(np.int8)

    def kept(self) -> np.ndarray:
        return np.ones(self.q.shape, dtype=bool) if self.keep is None else self.keep

    def dequantized(self) -> np.ndarray:
        return self.int8_operand().astype(np.float64) * self.row_scale[:, None]


def nm_mask(w: np.ndarray, n: int, m: int) -> np.ndarray:
    """Keep the n largest-magnitude weights of every block of m along K (ties: lower index)."""
    rows, k = w.shape
    blocks = np.abs(w).reshape(rows, k // m, m)
    order = np.argsort(-blocks, axis=-1, kind="stable")
    keep = np.zeros_like(blocks, dtype=bool)
    np.put_along_axis(keep, order[..., :n], True, axis=-1)
    return keep.reshape(rows, k)


def quantize_rtn(w: np.ndarray, fmt: WeightFormat) -> QuantWeight:
    """Prune by magnitude to fmt's N:M pattern, then round to nearest with two-level scales."""
    w = np.asarray(w, np.float64)
    rows, k = w.shape
    mask = nm_mask(w, fmt.n, fmt.m) if fmt.sparse else None
    if mask is not None:
        w = np.where(mask, w, 0.0)
    lo, hi = q_range(fmt.bits)
    qmax = max(hi, 1)
    tiny = np.finfo(np.float64).tiny
    if fmt.group:
        amax = np.abs(w).reshape(rows, k // fmt.group, fmt.group).max(axis=-1)  # [N, G]
        step = amax / qmax
        gmax = group_scale_max(fmt.bits)
        row_scale = np.maximum(step.max(axis=1) / gmax, tiny)
        gs = np.clip(np.round(step / row_scale[:, None]), 1, gmax).astype(np.uint8)
        eff = row_scale[:, None] * np.repeat(gs.astype(np.float64), fmt.group, axis=1)
    else:
        row_scale = np.maximum(np.abs(w).max(axis=1) / qmax, tiny)
        gs = np.zeros((rows, 0), np.uint8)
        eff = np.repeat(row_scale[:, None], k, axis=1)
    q = np.clip(np.round(w / eff), lo, hi).astype(np.int8)
    if mask is not None:
        q = np.where(mask, q, 0).astype(np.int8)
    return QuantWeight(fmt, q, gs, row_scale, mask)
