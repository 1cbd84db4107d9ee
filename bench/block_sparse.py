"""Held-out perplexity of builtin:pylm1k's float model under block-sparse attention masks (flightc/compress/
block_mask.py): calibrated on its calibration text (the sink, the diagonal, a band, then the blocks of most attention
mass) against a fixed sink and band of the same density, at each density.

    python bench/block_sparse.py [--block 32] [--densities 0.5,0.3,0.2] [--windows 64] [--band 2]

About a minute on the 2-core development machine. The float model only: the integer reference and the hardware
applying the same masks are issue 26's remaining parts.
"""
from __future__ import annotations

import argparse

import numpy as np
from rich.console import Console
from rich.table import Table


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--block", type=int, default=32)
    ap.add_argument("--densities", default="0.5,0.3,0.2")
    ap.add_argument("--windows", type=int, default=64, help="held-out windows of 1,024 bytes (64 in all)")
    ap.add_argument("--band", type=int, default=2, help="blocks behind the diagonal a calibrated mask keeps first")
    args = ap.parse_args()

    from flightc.compress import block_mask as bm
    from flightc.models.builtin import load_builtin, trained_folder
    from flightc.models.pylm1k.train import CONTEXT
    from flightc.tasks.text import CALIB_FILE, HELDOUT_FILE, text_windows

    folder = trained_folder("pylm1k")
    read = lambda name: np.frombuffer((folder / name).read_bytes(), np.uint8).astype(np.int64)  # noqa: E731
    calib, held = text_windows(read(CALIB_FILE), CONTEXT), text_windows(read(HELDOUT_FILE), CONTEXT, args.windows)
    model = load_builtin("builtin:pylm1k")
    mass = bm.attention_mass(model, calib, args.block)
    layers, heads = mass.shape[:2]
    blocks = CONTEXT // args.block
    table = Table("density", "calibrated (sink, diagonal, band, most mass)", "fixed (sink and band)",
                  title=f"builtin:pylm1k, float model: held-out perplexity over {len(held)} windows of {CONTEXT} bytes, "
                        f"blocks of {args.block}")
    table.add_row("1 (dense)", f"{bm.masked_perplexity(model, held, None):.4f}", "")
    for d in (float(v) for v in args.densities.split(",")):
        cal = bm.calibrate(mass, args.block, d, args.band)
        fix = bm.fixed(layers, heads, blocks, args.block, d)
        table.add_row(f"{d:g} ({cal.density():.3f}, {fix.density():.3f})",
                      f"{bm.masked_perplexity(model, held, cal):.4f}", f"{bm.masked_perplexity(model, held, fix):.4f}")
    Console(width=140).print(table)


if __name__ == "__main__":
    main()
