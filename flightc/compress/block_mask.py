"""Block-sparse attention masks for prompts (issue 26): per layer and head, which (query block, key block) pairs of
a causal prompt are computed, calibrated on data as FlightLLM's are (shared/reference/datapath-facts.md): the
attention sink (key block 0), the diagonal, and the blocks that held the most attention mass on calibration text,
up to a density target; or, for comparison, a fixed sink and the widest local band within the same density.

The float model runs under a mask here (:func:`masked_perplexity`, an attention function registered with
transformers); the integer reference, the functional simulator and the hardware applying the same masks are the
rest of issue 26.
"""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass

import numpy as np

from flightc.errors import UnsupportedError

ATTENTION = "flightc_block_sparse"
BAND = 2  # blocks behind the diagonal a calibrated mask keeps before its extras (FlightLLM's band: 2 to 4)


@dataclass(frozen=True)
class BlockMasks:
    """``keep`` [layers, heads, blocks, blocks]: query block q computes key block k (causal: k <= q; the diagonal
    and the sink, k = 0, always)."""

    block: int
    keep: np.ndarray

    @property
    def blocks(self) -> int:
        return self.keep.shape[-1]

    def density(self) -> float:
        """Kept blocks over the causal ones (the diagonal's included), over every layer and head."""
        return float(self.keep.sum()) / (self.keep.shape[0] * self.keep.shape[1] * causal_count(self.blocks))

    def token_mask(self, layer: int, tokens: int, first: int = 0) -> np.ndarray:
        """[heads, tokens - first, tokens]: which scores each head of ``layer`` computes for the queries at
        positions ``first`` .. ``tokens`` - 1 over the keys before them (causal within kept blocks)."""
        rows, cols = np.arange(first, tokens), np.arange(tokens)
        causal = cols[None, :] <= rows[:, None]
        return self.keep[layer][:, (rows // self.block)[:, None], (cols // self.block)[None, :]] & causal


def causal_count(blocks: int) -> int:
    """The causal blocks of a prompt of ``blocks`` blocks, the diagonal's included."""
    return blocks * (blocks + 1) // 2


def _required(blocks: int, band: int = 0) -> np.ndarray:
    """The sink, the diagonal (every query row sees itself and the first tokens) and ``band`` blocks behind it."""
    q, k = np.indices((blocks, blocks))
    need = (k <= q) & (q - k <= band)
    need[:, 0] = True
    return need


def least_density(blocks: int) -> float:
    """The density of the sink and the diagonal alone."""
    return float(_required(blocks).sum()) / causal_count(blocks)


def _count(blocks: int, density: float) -> int:
    if not least_density(blocks) <= density <= 1:
        raise UnsupportedError(f"attention density {density:g}: with {blocks} blocks a prompt the sink and the "
                               f"diagonal alone keep {least_density(blocks):.3f} of them; give a density from that to 1, "
                               f"or smaller blocks")
    return math.ceil(density * causal_count(blocks) - 1e-9)


def calibrate(mass: np.ndarray, block: int, density: float, band: int = BAND) -> BlockMasks:
    """Masks from ``mass`` [layers, heads, blocks, blocks] (each block pair's attention mass on calibration text):
    per head, the sink, the diagonal and ``band`` blocks behind it (fewer where ``density`` holds fewer), then the
    causal blocks of most mass until ``density`` of them are kept (ties toward the diagonal)."""
    layers, heads, n, _ = mass.shape
    want = _count(n, density)
    while band and _required(n, band).sum() > want:
        band -= 1
    keep = np.zeros(mass.shape, bool)
    causal, need = np.tril(np.ones((n, n), bool)), _required(n, band)
    q, k = np.indices((n, n))
    for layer in range(layers):
        for h in range(heads):
            score = np.where(causal & ~need, mass[layer, h], -np.inf)
            order = np.lexsort((-(k - q).ravel(), -score.ravel()))  # most mass first, then nearest the diagonal
            extra = [i for i in order[:max(0, want - int(need.sum()))] if np.isfinite(score.ravel()[i])]
            kept = need.copy().ravel()
            kept[extra] = True
            keep[layer, h] = kept.reshape(n, n)
    return BlockMasks(block, keep)


def fixed(layers: int, heads: int, blocks: int, block: int, density: float) -> BlockMasks:
    """The same for every head: the sink and the widest band behind the diagonal within ``density`` (then the
    band's next diagonal from its first rows, so the count matches a calibrated mask's)."""
    want = _count(blocks, density)
    keep = _required(blocks).copy()
    for dist in range(1, blocks):
        for qi in range(dist, blocks):
            if keep.sum() >= want:
                break
            keep[qi, qi - dist] = True
    return BlockMasks(block, np.broadcast_to(keep, (layers, heads, blocks, blocks)).copy())


def attention_mass(model, windows: np.ndarray, block: int) -> np.ndarray:
    """[layers, heads, blocks, blocks]: the mean over ``windows`` [count, tokens] of each block pair's attention
    probability mass per query row (the float model, eager attention)."""
    import torch

    tokens = windows.shape[1]
    if tokens % block:
        raise UnsupportedError(f"windows of {tokens} tokens are not whole blocks of {block}")
    n = tokens // block
    total = None
    before = model.config._attn_implementation
    model.set_attn_implementation("eager")  # (the probabilities themselves)
    try:
        with torch.no_grad():
            for row in windows:
                out = model(torch.tensor(row[None, :]), output_attentions=True)
                a = torch.stack(out.attentions)[:, 0].double().numpy()  # [layers, heads, T, T]
                m = a.reshape(a.shape[0], a.shape[1], n, block, n, block).sum(axis=5).mean(axis=3)
                total = m if total is None else total + m
    finally:
        model.set_attn_implementation(before)
    return total / len(windows)


_ACTIVE: list[BlockMasks] = []


def _attention(module, query, key, value, attention_mask, scaling, dropout=0.0, **kwargs):
    """Eager attention with the active masks' scores only (transformers' AttentionInterface)."""
    import torch
    from transformers.models.llama.modeling_llama import repeat_kv

    masks = _ACTIVE[-1]
    key, value = repeat_kv(key, module.num_key_value_groups), repeat_kv(value, module.num_key_value_groups)
    scores = torch.matmul(query, key.transpose(2, 3)) * scaling
    keep = torch.from_numpy(masks.token_mask(module.layer_idx, query.shape[2]))
    scores = scores.masked_fill(~keep[None], float("-inf"))
    probs = torch.softmax(scores.float(), dim=-1).to(query.dtype)
    return torch.matmul(probs, value).transpose(1, 2).contiguous(), probs


@contextlib.contextmanager
def masked(model, masks: BlockMasks):
    """Run ``model`` with block-sparse attention under ``masks`` inside the block."""
    from transformers import AttentionInterface

    AttentionInterface.register(ATTENTION, _attention)
    before = model.config._attn_implementation
    _ACTIVE.append(masks)
    model.set_attn_implementation(ATTENTION)
    try:
        yield model
    finally:
        _ACTIVE.pop()
        model.set_attn_implementation(before)


def masked_perplexity(model, windows: np.ndarray, masks: BlockMasks | None) -> float:
    """Perplexity of ``model`` over ``windows`` [count, tokens] (each predicting its tokens from those before it),
    under ``masks`` (None: dense)."""
    import torch

    total, count = 0.0, 0
    ctx = masked(model, masks) if masks is not None else contextlib.nullcontext(model)
    with ctx, torch.no_grad():
        for row in windows:
            x = torch.tensor(row[None, :])
            logits = model(x[:, :-1]).logits[0]
            total += float(torch.nn.functional.cross_entropy(logits, x[0, 1:], reduction="sum"))
            count += len(row) - 1
    return math.exp(total / count)
