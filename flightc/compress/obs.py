"""Second-order (Optimal Brain Surgeon) weight compression: GPTQ quantization and SparseGPT pruning.

Both walk a weight's input columns in order and, after rounding (and possibly pruning) a column,
spread its error over the columns not yet visited through the inverse Hessian of the layer's
inputs, ``H = 2 X^T X / n`` (Frantar et al., GPTQ, ICLR 2023; Frantar & Alistarh, SparseGPT,
ICML 2023). One routine does both: ``select="magnitude"`` fixes the N:M mask from |w| first (GPTQ
on a magnitude-pruned weight), ``select="obs"`` picks each block's mask from the OBS saliency
w^2 / [H^-1]_jj^2 as the walk reaches it (SparseGPT, jointly with quantization).

The result uses exactly the hardware's two-level scales (:mod:`flightc.compress.quantize`): a
float scale per row fixed up front and an integer group multiplier chosen when the walk enters a
group, so the packed format is the one the dequantizer reads.
"""
from __future__ import annotations

from enum import Enum

import numpy as np

from flightc.compress.formats import WeightFormat, q_range
from flightc.compress.quantize import QuantWeight, group_multipliers, nm_mask, row_scales
from flightc.errors import UnsupportedError

BLOCK = 128  # columns per lazy batch update: a multiple of every N:M block size


class MaskSelect(str, Enum):
    MAGNITUDE = "magnitude"
    OBS = "obs"


def hessian(x: np.ndarray) -> np.ndarray:
    """``2 X^T X / n`` of a layer's inputs [..., K] (float64)."""
    x = np.asarray(x, np.float64).reshape(-1, x.shape[-1])
    return 2.0 * (x.T @ x) / max(len(x), 1)


def _device():
    import torch

    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def obs_quantize(w: np.ndarray, h: np.ndarray, fmt: WeightFormat, select: MaskSelect = MaskSelect.OBS,
                 act_order: bool = False, damp: float = 0.01, dtype: str | None = None) -> QuantWeight:
    """Compress ``w`` [N, K] to ``fmt`` minimizing ||X w^T - X q^T|| for the inputs whose Hessian is ``h``.

    ``act_order`` visits columns by decreasing Hessian diagonal (dense formats only: an N:M block
    must be visited together); group multipliers are then fixed from the original weights up front.
    ``dtype`` defaults to float64 for small layers and float32 (as the published implementations use) from
    a million weights up, which halves the memory of LLaMA2-7B-sized layers.
    """
    import torch

    if act_order and fmt.sparse:
        raise UnsupportedError(f"act-order is for dense formats: {fmt.label()} needs each block of {fmt.m} "
                               f"columns visited together")
    rows, k = w.shape
    if fmt.whole(k) != k:  # the weight zero-padded to whole blocks and groups: dead inputs, cut back to k columns
        pad = fmt.whole(k) - k
        return obs_quantize(np.pad(np.asarray(w, np.float64), ((0, 0), (0, pad))), np.pad(h, ((0, pad), (0, pad))), fmt,
                            select, act_order, damp, dtype).columns(k)
    dev, tdt = _device(), getattr(torch, dtype or ("float64" if rows * k < 1 << 20 else "float32"))
    W = torch.tensor(np.asarray(w, np.float64), dtype=tdt, device=dev)
    H = torch.tensor(np.asarray(h, np.float64), dtype=tdt, device=dev)
    dead = torch.diag(H) == 0
    H[dead, dead] = 1.0
    W[:, dead] = 0.0
    perm = torch.argsort(torch.diag(H), descending=True) if act_order else torch.arange(k, device=dev)
    inv_perm = torch.argsort(perm)
    W, H = W[:, perm], H[perm][:, perm]
    H += damp * torch.mean(torch.diag(H)) * torch.eye(k, dtype=tdt, device=dev)
    L = torch.linalg.cholesky(H)
    Hinv = torch.linalg.cholesky(torch.cholesky_inverse(L), upper=True)  # rows of the inverse's Cholesky factor
    del H, L

    lo, hi = q_range(fmt.bits)
    G = fmt.group
    row_scale = row_scales(torch.abs(W).amax(dim=1), fmt, float(np.finfo(np.float32).tiny))
    n_groups = k // G if G else 0
    gs = torch.ones((rows, n_groups), dtype=tdt, device=dev)
    if G and act_order:  # static groups, in original column order
        gs = group_multipliers(W[:, inv_perm].abs().reshape(rows, n_groups, G).amax(-1), row_scale[:, None], fmt.bits)
    Q = torch.zeros_like(W)
    keep = torch.ones((rows, k), dtype=torch.bool, device=dev)
    if fmt.sparse and select is MaskSelect.MAGNITUDE:
        keep = torch.tensor(nm_mask(np.asarray(w, np.float64), fmt.n, fmt.m), device=dev)
    block = max(BLOCK, G)  # powers of two: every group lies inside one block
    for i1 in range(0, k, block):
        i2 = min(i1 + block, k)
        W1 = W[:, i1:i2].clone()
        Err = torch.zeros_like(W1)
        Hi = Hinv[i1:i2, i1:i2]
        for i in range(i2 - i1):
            col = i1 + i
            if fmt.sparse and select is MaskSelect.OBS and col % fmt.m == 0:
                blk = W1[:, i:i + fmt.m] ** 2 / torch.diag(Hi)[i:i + fmt.m][None, :] ** 2
                order = torch.argsort(-blk, dim=1, stable=True)[:, : fmt.n]
                m = torch.zeros_like(blk, dtype=torch.bool)
                m.scatter_(1, order, True)
                keep[:, col:col + fmt.m] = m
            if G:
                g = perm[col].item() // G if act_order else col // G
                if not act_order and col % G == 0:
                    cur = W1[:, i:i + G]
                    kept = keep[:, col:col + G] if fmt.sparse else torch.ones_like(cur, dtype=torch.bool)
                    amax = torch.where(kept, cur.abs(), torch.zeros_like(cur)).amax(dim=1)
                    gs[:, g] = group_multipliers(amax, row_scale, fmt.bits)
                step_cols = row_scale * gs[:, g]
            else:
                step_cols = row_scale
            wcol = W1[:, i]
            q = torch.clamp(torch.round(wcol / step_cols), lo, hi)
            q = torch.where(keep[:, col], q, torch.zeros_like(q))
            Q[:, col] = q
            err = (wcol - q * step_cols) / Hi[i, i]
            W1[:, i:] -= err[:, None] * Hi[i, i:][None, :]
            Err[:, i] = err
        W[:, i2:] -= Err @ Hinv[i1:i2, i2:]

    Q, keep = Q[:, inv_perm], keep[:, inv_perm]
    q_np = Q.cpu().numpy().astype(np.int8)
    gs_np = gs.cpu().numpy().astype(np.uint8) if G else np.zeros((rows, 0), np.uint8)
    mask = keep.cpu().numpy() if fmt.sparse else None
    return QuantWeight(fmt, q_np, gs_np, row_scale.cpu().numpy().astype(np.float64), mask)


def output_error(w: np.ndarray, qw: QuantWeight, h: np.ndarray) -> float:
    """Relative output error ||X (w - w_q)^T||^2 / ||X w^T||^2 through the Hessian (no activations kept)."""
    w = np.asarray(w, np.float64)
    d = w - qw.dequantized()
    num = float(np.sum((d @ h) * d))
    den = float(np.sum((w @ h) * w))
    return num / max(den, np.finfo(np.float64).tiny)
