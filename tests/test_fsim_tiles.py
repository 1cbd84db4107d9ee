"""The functional simulator's decoded-tile cache: a streamed weight read once is reused until memory under it is
written (by a store or the host), and the cache keeps within its byte limit."""
import numpy as np

from conftest import MAX_LEN, PROMPT, compiled
from flightc.reference.integer import IntegerModel, greedy
from flightc.runtime.session import Session
from flightc.sim.functional import DecodedTiles


def test_a_write_drops_exactly_the_tiles_it_touches():
    tiles = DecodedTiles()
    a, b = np.zeros((2, 4), np.int8), np.ones((2, 4), np.int8)
    tiles.put("a", [(0, 100, 50), (1, 100, 50)], a)
    tiles.put("b", [(1, 200, 64)], b)
    tiles.written(1, 150, 200)  # just past a's span on channel 1, just before b's
    assert tiles.get("a")[1] is a and tiles.get("b")[1] is b
    tiles.written(0, 149, 150)
    assert tiles.get("a")[1] is None and tiles.get("b")[1] is b
    tiles.written(1, 263, 300)
    assert tiles.get("b")[1] is None and tiles.size == 0


def test_the_least_recently_used_tile_goes_first():
    tiles = DecodedTiles(limit=16)
    rows = {k: np.full((1, 8), i, np.int8) for i, k in enumerate("abc")}
    tiles.put("a", [(0, 0, 8)], rows["a"])
    tiles.put("b", [(0, 8, 8)], rows["b"])
    tiles.get("a")  # a is used again: b is now the oldest
    tiles.put("c", [(0, 16, 8)], rows["c"])
    assert tiles.get("b")[1] is None and tiles.get("a")[1] is rows["a"] and tiles.get("c")[1] is rows["c"]
    assert tiles.size == 16


def test_streamed_keys_rewritten_every_step_still_match_the_reference():
    """Keys streamed from the image a store extends every step: a stale tile would change the tokens."""
    c = compiled("tiny-llama-hd64", "w4g32")
    ref_tokens, ref_logits = greedy(IntegerModel(c.integer, MAX_LEN), PROMPT, 8)
    with Session(c.bundle, "fsim") as s:
        out = list(s.generate(PROMPT, 8))
        tiles = s.device.machine.tiles
    assert [t for t, _ in out] == ref_tokens
    for (_, z), r in zip(out, ref_logits):
        assert np.array_equal(z, r)
    assert tiles.hits > 0 and tiles.dropped > 0  # weights reused, key tiles dropped as the stores extended them


def test_int8_products_are_exact_where_one_float32_sum_would_not_be():
    from flightc.sim.functional import CHUNK, int8_products

    k = 11008  # LLaMA2-7B's down projection: 11008 x 255 x 128 is far past float32's 2^24
    a = np.full((2, k), 255, np.uint8)
    a[1, ::3] = 7
    w = np.full((3, k), -128, np.int8)
    w[1] = 127
    w[2, ::2] = 1
    expect = a.astype(np.int64) @ w.astype(np.int64).T
    assert np.array_equal(int8_products(a, w), expect)
    s = np.random.default_rng(0).integers(-128, 128, size=(4, k)).astype(np.int8)
    assert np.array_equal(int8_products(s, w), s.astype(np.int64) @ w.astype(np.int64).T)
    one_sum = (a.astype(np.float32) @ w.astype(np.float32).T).astype(np.int64)
    assert not np.array_equal(one_sum, expect)  # what the chunks are for
    assert CHUNK * 255 * 128 < 1 << 24
