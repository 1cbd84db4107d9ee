"""The functional simulator's decoded-tile cache: a streamed weight read once is reused until memory under it is
written (by a store or the host), and the cache keeps within its byte limit."""
import numpy as np

from cards import U280_32
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
        machine = s.device.machine
    assert [t for t, _ in out] == ref_tokens
    for (_, z), r in zip(out, ref_logits):
        assert np.array_equal(z, r)
    # weights reused (their float32 copies serve the products), key tiles dropped as the stores extended them
    assert machine.tiles32.hits > 0 and machine.tiles.dropped > 0 and machine.tiles32.dropped > 0


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
    assert np.array_equal(int8_products(a, None, w.astype(np.float32)), expect)  # a kept tile's float32 rows alone
    s = np.random.default_rng(0).integers(-128, 128, size=(4, k)).astype(np.int8)
    assert np.array_equal(int8_products(s, w), s.astype(np.int64) @ w.astype(np.int64).T)
    one_sum = (a.astype(np.float32) @ w.astype(np.float32).T).astype(np.int64)
    assert not np.array_equal(one_sum, expect)  # what the chunks are for
    assert CHUNK * 255 * 128 < 1 << 24


def test_a_striped_load_is_read_again_once_its_bytes_are_written():
    """Striped LDs (a layer's requantization records) are kept between steps like weight tiles: a machine that ran
    the prompt before the host wrote another layer's records over the first one's computes what a fresh machine
    given the same memory does, and not what it computed before."""
    from flightc.isa.codec import decode_program
    from flightc.isa.footprint import stripe_layout, striped
    from flightc.isa.table import Opcode
    from flightc.sim.functional import Machine

    c = compiled("tiny-llama", "w8", hw=U280_32)  # core 0's 16 masters: two layers' records striped alike
    prog = c.bundle.program("prefill", len(PROMPT))
    lds = [ins for ins in decode_program(prog[0]) if ins.opcode is Opcode.LD and striped(ins)]
    first, other = next((a, b) for a in lds for b in lds if b.hbm_addr != a.hbm_addr
                        and (a.row_bytes, a.stripe, a.stripe_log2) == (b.row_bytes, b.stripe, b.stripe_log2))
    ids, logits = c.bundle.region("io.ids"), c.bundle.region("io.logits")

    def run(machine: Machine) -> bytes:
        machine.write_hbm(ids["channel"], ids["addr"], np.asarray(PROMPT, "<i4").tobytes())
        machine.run(prog)
        return machine.read_hbm(logits["channel"], logits["addr"], logits["nbytes"])

    def overwrite(machine: Machine) -> None:
        unit = 1 << first.stripe_log2
        for (ch, at, n), (och, oat, _) in zip(stripe_layout(first.channel, first.hbm_addr, first.row_bytes,
                                                            first.stripe, unit),
                                              stripe_layout(other.channel, other.hbm_addr, other.row_bytes,
                                                            other.stripe, unit)):
            machine.write_hbm(ch, at, machine.read_hbm(och, oat, n))

    warm = Machine.from_bundle(c.bundle)
    before = run(warm)
    assert run(warm) == before and warm.striped.hits
    overwrite(warm)
    fresh = Machine.from_bundle(c.bundle)
    overwrite(fresh)
    after = run(fresh)
    assert after != before and run(warm) == after


def test_a_closed_sessions_machine_serves_the_next_session_on_its_bundle_as_a_fresh_one_would():
    """An evaluation opens a session per problem: the next one takes the machine the last one closed, with its
    dequantized weights, and its memory put back as the bundle has it, so it answers as a new machine does; bytes
    the host wrote over a weight in a session are put back for the next and that tile alone is decoded again."""
    from flightc.sim.functional import Machine

    c = compiled("tiny-llama", "w8", hw=U280_32)  # core 0's 16 masters: two layers' records striped alike
    decoded: list[list] = []

    def generate(before=None, **options):
        with Session(c.bundle, "fsim", **options) as s:
            machine = s.device.machine
            if before:
                before(machine)
            put, decoded_now = machine.tiles.put, []
            machine.tiles.put = lambda key, *rest: (decoded_now.append(key), put(key, *rest))
            out = list(s.generate(PROMPT, 6))
            del machine.tiles.put
        decoded.append(decoded_now)
        return machine, out

    machine, first = generate()
    assert generate()[0] is machine
    weights = set(decoded[0]) - set(decoded[1])  # not decoded again (keys the stores extend are, every step)
    assert weights
    weight = sorted(weights, key=str)[0]
    ch, at, n = machine.tiles.entries[weight][0][0]

    def zero_it(m: Machine) -> None:  # the host zeroes part of the weight before the session runs
        m.write_hbm(ch, at, bytes(n))

    assert generate(zero_it)[0] is machine and set(decoded[2]) - set(decoded[1]) == {weight}
    again_machine, again = generate()  # the weight put back as the bundle has it, decoded again
    assert again_machine is machine
    assert [t for t, _ in again] == [t for t, _ in first]
    assert all(np.array_equal(a, b) for (_, a), (_, b) in zip(again, first))
    assert set(decoded[3]) - set(decoded[1]) == {weight}
    other_machine, _ = generate(tile_cache_mb=32)  # other options: a machine of its own
    assert other_machine is not machine

    extent = {int(k): v for k, v in c.bundle.manifest.memory_map["extent"].items()}
    fresh = Machine(c.bundle.config, extent)
    for channel, image in c.bundle.images.items():
        fresh.write_hbm(channel, 0, image)
    taken = Machine.from_bundle(c.bundle)
    assert taken is machine and all(np.array_equal(taken.hbm[k], fresh.hbm[k]) for k in fresh.hbm)
    assert all(np.array_equal(b, fresh.cores[0][k]) for k, b in taken.cores[0].items())
