"""Held-out perplexity of builtin:pylm1k under block-sparse attention masks (flightc/compress/block_mask.py):
calibrated on its calibration text (the sink, the diagonal, a band, then the blocks of most attention mass) against a
fixed sink and band of the same density, at each density; the float model, and the integer reference of each
compression plan in --plans (its exact softmax under the same masks).

    python bench/block_sparse.py [--block 32] [--densities 0.5,0.3,0.2] [--windows 64] [--band 2]
                                 [--plans w8,w4g128s8:16]

A minute for the float model on the 2-core development machine, about 7 more a plan at 64 windows. The functional
simulator and the hardware applying the masks are issue 26's remaining parts.
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
    ap.add_argument("--plans", default="w8,w4g128s8:16", help="compression plans whose integer reference to run "
                                                              "(empty: the float model alone)")
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
    densities = [float(v) for v in args.densities.split(",")]
    masks = {d: (bm.calibrate(mass, args.block, d, args.band), bm.fixed(layers, heads, blocks, args.block, d))
             for d in densities}
    plans = [p for p in args.plans.split(",") if p]
    integer = {p: _integer(p) for p in plans}
    heads_ = ["density"] + [f"{who}, {kind}" for who in ["float", *plans] for kind in ("calibrated", "fixed")]
    table = Table(*heads_, title=f"builtin:pylm1k: held-out perplexity over {len(held)} windows of {CONTEXT} bytes, "
                                 f"blocks of {args.block} (calibrated: the sink, the diagonal, a band of {args.band}, "
                                 f"the blocks of most mass; fixed: the sink and a band)")
    dense = [bm.masked_perplexity(model, held, None)] + [_reference(g, held, None) for g in integer.values()]
    table.add_row("1 (dense)", *[f"{v:.4f}" for v in dense for _ in range(2)])
    for d in densities:
        cal, fix = masks[d]
        row = [bm.masked_perplexity(model, held, cal), bm.masked_perplexity(model, held, fix)]
        for g in integer.values():
            row += [_reference(g, held, cal), _reference(g, held, fix)]
        table.add_row(f"{d:g} ({cal.density():.3f}, {fix.density():.3f})", *[f"{v:.4f}" for v in row])
    Console(width=200).print(table)


def _integer(plan: str):
    from flightc.compiler.pipeline import compile_model
    from flightc.compress.plan import CompressionPlan
    from flightc.models.builtin import model_input
    from flightc.models.pylm1k.train import CONTEXT

    return compile_model(model_input("builtin:pylm1k"), "tiny", CompressionPlan.parse(plan), max_len=CONTEXT,
                         stop_after="integerize")


def _reference(graph, held: np.ndarray, masks) -> float:
    """The integer reference's perplexity over ``held`` under ``masks`` (its logits at the graph's output scale)."""
    from flightc.reference.integer import IntegerModel
    from flightc.tasks.text import mean_nll

    scale = graph.node(graph.output)["scale"]
    nll = [mean_nll(IntegerModel(graph, len(ids), masks=masks).forward_all(ids[:-1]).astype(np.float64) * scale,
                    ids[1:]) for ids in held]
    return float(np.exp(np.mean(nll)))


if __name__ == "__main__":
    main()
