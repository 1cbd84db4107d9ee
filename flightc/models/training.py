"""What the built-in models' training scripts share: the optimizer schedule and the command line."""
from __future__ import annotations

import argparse
import math
from pathlib import Path

import torch


def adamw_warmup_cosine(model: torch.nn.Module, lr: float, steps: int):
    """AdamW (betas 0.9/0.98, weight decay 0.01) with a linear warm-up over 5% of the steps, then cosine decay."""
    opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.98), weight_decay=0.01)
    warmup = max(1, steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(1.0, s / steps))))
    return opt, sched


def training_args(doc: str, weights: Path, steps: int, batch: int) -> argparse.Namespace:
    """--out, --steps, --batch, --lr, --seed, --threads, with a model's defaults."""
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=weights)
    ap.add_argument("--steps", type=int, default=steps)
    ap.add_argument("--batch", type=int, default=batch)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    return ap.parse_args()
