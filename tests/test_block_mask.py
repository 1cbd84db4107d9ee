"""Block-sparse attention masks (flightc/compress/block_mask.py): their structure at a density (the sink and the
diagonal always, causal only, the count the density asks), calibration keeping the blocks of most mass, and the
float model under a mask: every causal block kept is the dense model, fewer blocks cost perplexity."""
from __future__ import annotations

import math

import numpy as np
import pytest

from flightc.compress import block_mask as bm
from flightc.errors import UnsupportedError


def _mass(rng, layers=2, heads=3, n=8) -> np.ndarray:
    return rng.random((layers, heads, n, n))


@pytest.mark.parametrize("density", [0.5, 0.7, 1.0])
def test_masks_keep_the_sink_the_diagonal_and_the_density_asked(density):
    n = 8
    for masks in (bm.calibrate(_mass(np.random.default_rng(0)), 4, density), bm.fixed(2, 3, n, 4, density)):
        keep = masks.keep
        assert not (keep & ~np.tril(np.ones((n, n), bool))).any()  # causal
        assert keep[..., :, 0].all() and keep[..., np.arange(n), np.arange(n)].all()
        assert (keep.sum(axis=(2, 3)) == math.ceil(density * n * (n + 1) / 2 - 1e-9)).all()
    fixed = bm.fixed(2, 3, n, 4, density)
    assert (fixed.keep == fixed.keep[0, 0]).all()  # one mask for every head


def test_calibration_keeps_the_blocks_of_most_mass():
    n = 8
    mass = np.zeros((1, 2, n, n))
    mass[0, 0, 7, 3] = mass[0, 1, 6, 2] = 1.0  # one far block each head attends to
    masks = bm.calibrate(mass, 4, bm.least_density(n) + 0.5 / 36, band=0)  # the sink, the diagonal and one more
    assert masks.keep[0, 0, 7, 3] and masks.keep[0, 1, 6, 2] and not masks.keep[0, 0, 6, 2]


def test_a_density_below_the_sink_and_diagonal_is_refused():
    with pytest.raises(UnsupportedError, match="sink and the diagonal alone keep 0.417"):
        bm.fixed(1, 1, 8, 4, 0.4)


def test_the_float_model_under_masks():
    """builtin:pylm1k on two held-out windows of 256 bytes in blocks of 32: a mask keeping every causal block gives
    the dense model's perplexity; the sink and diagonal alone cost perplexity."""
    from flightc.models.builtin import load_builtin, trained_folder
    from flightc.tasks.text import HELDOUT_FILE, text_windows

    held = np.frombuffer((trained_folder("pylm1k") / HELDOUT_FILE).read_bytes(), np.uint8).astype(np.int64)
    windows = text_windows(held, 256, 2)
    model = load_builtin("builtin:pylm1k")
    dense = bm.masked_perplexity(model, windows, None)
    every = bm.fixed(4, 4, 8, 32, 1.0)
    assert bm.masked_perplexity(model, windows, every) == pytest.approx(dense, rel=1e-5)
    least = bm.fixed(4, 4, 8, 32, bm.least_density(8))
    assert bm.masked_perplexity(model, windows, least) > 1.02 * dense
    mass = bm.attention_mass(model, windows, 32)
    assert mass.shape == (4, 4, 8, 8) and np.allclose(mass.sum(axis=3), 1.0)  # each query row's mass sums to 1


def test_the_integer_reference_under_masks():
    """The integer reference applies a mask in its exact softmax: every causal block kept is the dense model byte for
    byte, the sink and diagonal alone change the logits; masks of another model's shape or too few positions are
    refused."""
    from flightc.compiler.pipeline import compile_model
    from flightc.compress.plan import CompressionPlan
    from flightc.errors import UnsupportedError
    from flightc.models.builtin import model_input
    from flightc.reference.integer import IntegerModel

    g = compile_model(model_input("builtin:pylm1k"), "tiny", CompressionPlan.parse("w8"), max_len=64,
                      stop_after="integerize")
    ids = np.arange(40, 104) % 128
    dense = IntegerModel(g, 64).forward_all(ids)
    every = IntegerModel(g, 64, masks=bm.fixed(4, 4, 4, 16, 1.0)).forward_all(ids)
    assert (every == dense).all()
    least = IntegerModel(g, 64, masks=bm.fixed(4, 4, 4, 16, bm.least_density(4))).forward_all(ids)
    assert (least[:16] == dense[:16]).all() and (least[32:] != dense[32:]).any()  # the first block sees all it would
    with pytest.raises(UnsupportedError, match="block masks of 4 layers x 4 heads x 32 positions"):
        IntegerModel(g, 64, masks=bm.fixed(4, 4, 2, 16, 1.0))


def test_the_exact_softmax_takes_a_mask_and_refuses_an_empty_row():
    from flightc import numerics as nm

    scores = np.array([[5, 1, 0], [2, 9, 3]], np.int64)
    keep = np.array([[True, False, False], [False, True, True]])
    p = nm.softmax(scores, 1 << 12, 8, offset=1, keep=keep)
    assert (p[~keep] == 0).all() and p[0, 0] == 255
    with pytest.raises(ValueError, match="sees no column under the mask"):
        nm.softmax(scores, 1 << 12, 8, offset=1, keep=np.zeros((2, 3), bool))
