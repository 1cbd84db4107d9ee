"""One lane group (hw/lane_group.py) in Amaranth's simulator at real reduction lengths: two rows per DSP48E2
against one shared activation, group multipliers on segment partial sums, sparse rows expanded in the stream; every
row pair's sums equal the dequantizer's (flightc.compress.packing.unpack_rows) bit for bit, for extreme operands
(q at its minimum, a = -128 or 255, the largest multiplier) and random ones."""
from __future__ import annotations

import numpy as np
import pytest
from amaranth.sim import Simulator

from flightc.compress.formats import WeightFormat
from flightc.compress.packing import pack_weight, unpack_rows
from flightc.compress.quantize import QuantWeight
from flightc.compress.stream import SEGMENT, chunk_bytes, pair_chunks
from flightc.config import SparseEncoding
from flightc.errors import ProgramError, UnsupportedError
from flightc.isa.table import SPARSITY_NM
from test_compile_speed import stream_image_by_records
from flightc.hw.lane_group import LaneGroup, formats
from flightc.hw.latency_rules import LANE_GROUP_LATENCY
from flightc.sim.rtl.random_programs import random_weights

SLOTS = 64  # the lane group a 64-byte weight stream fills with dense W4 (two rows x 64 columns x 4 bits a cycle)
K_REAL = (11_008, 14_336)  # LLaMA2-7B's and LLaMA3-8B's MLP widths: the longest reductions of 7B-class models


def _le(b) -> int:
    return int.from_bytes(np.asarray(b, np.uint8).tobytes(), "little")


def _pair(rng, fmt: WeightFormat, k: int, extreme: bool):
    """A packed row pair: random values and multipliers, or every stored q at its minimum and the largest
    multiplier."""
    return random_weights(rng, fmt, 2, k, extreme)


async def _write_acts(ctx, group: LaneGroup, acts: np.ndarray, k: int) -> None:
    """The activation vector into a lane group's copy, a word of SLOTS bytes a cycle."""
    ctx.set(group.act_we, 1)
    for w in range(k // SLOTS):
        ctx.set(group.act_addr, w)
        ctx.set(group.act_data, _le(acts[w * SLOTS:(w + 1) * SLOTS]))
        await ctx.tick()
    ctx.set(group.act_we, 0)


def run_lane_group(jobs: list[tuple[WeightFormat, int, np.ndarray, np.ndarray, bool]], kinds=None) -> list:
    """Stream each job (format, K, packed row pair, activations as bytes, unsigned) through one lane group (built
    for ``kinds`` of format, default all), a chunk a cycle: its two sums, or None when none came out."""
    dut = LaneGroup(SLOTS, max(k for _, k, *_ in jobs) // SLOTS, kinds=kinds)
    out = []

    async def bench(ctx):
        written = None
        for fmt, k, packed, acts, unsigned in jobs:
            ctx.set(dut.chunk.valid, 0)
            if acts is not written:  # a vector is written into the group's copy once for the jobs that share it
                await _write_acts(ctx, dut, acts, k)
                written = acts
            ctx.set(dut.bits_code, fmt.bits_code)
            ctx.set(dut.sparsity, fmt.sparsity)
            ctx.set(dut.sparse_enc, fmt.chosen)
            ctx.set(dut.a_unsigned, unsigned)
            ctx.set(dut.grouped, bool(fmt.group))
            chunks, gs = pair_chunks(packed, fmt, k, SLOTS)
            ctx.set(dut.chunk.valid, 1)
            for j, chunk in enumerate(chunks):
                ctx.set(dut.chunk.payload, {"bytes": _le(chunk), "gs": _le(gs[j].reshape(-1)), "first": j == 0,
                                            "last": j == len(chunks) - 1})
                await ctx.tick()
            ctx.set(dut.chunk.valid, 0)
            got = None
            for _ in range(LANE_GROUP_LATENCY + 1):
                if ctx.get(dut.result.valid):
                    p = ctx.get(dut.result.payload)
                    got = (int(p["row0"]), int(p["row1"]))
                    break
                await ctx.tick()
            out.append(got)

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    return out


def _check(jobs, kinds=None) -> None:
    got = run_lane_group(jobs, kinds)
    for (fmt, k, packed, acts, unsigned), sums in zip(jobs, got):
        a = acts.astype(np.int64) if unsigned else acts.view(np.int8).astype(np.int64)
        want = tuple(int(x) for x in unpack_rows(packed, fmt, k).astype(np.int64) @ a)
        assert sums == want, f"{fmt.label()} K={k} {'unsigned' if unsigned else 'signed'}: {sums} != {want}"


def _acts(rng, k: int, extreme: bool, unsigned: bool) -> np.ndarray:
    if extreme:
        return np.full(k, 255 if unsigned else 0x80, np.uint8)  # 255, or -128 as a signed byte
    return rng.integers(0, 256, k).astype(np.uint8)


def _jobs(rng, k: int, fmts: list[WeightFormat]) -> list:
    """Per K, each format with the extreme operands signed and unsigned and random ones; jobs that share an
    activation vector run one after another (the group's copy is written once for them)."""
    kinds = [(True, False), (True, True), (False, bool(rng.integers(2)))]
    acts = [_acts(rng, k, extreme, unsigned) for extreme, unsigned in kinds]
    return [(fmt, k, _pair(rng, fmt, k, extreme), a, unsigned)
            for (extreme, unsigned), a in zip(kinds, acts) for fmt in fmts]


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
def test_dense_rows_at_real_reduction_lengths_match_the_dequantizer(bits):
    """Every group size from 32 to 4,096 that divides K, and per-channel scales, at K = 11,008 and 14,336 (4,096
    divides neither: it runs at 12,288), extreme operands signed and unsigned, and random ones."""
    rng = np.random.default_rng(bits)
    jobs = []
    for k in K_REAL + ((12_288,) if bits != 8 else ()):
        groups = [0] if bits == 8 else [0] + [g for g in (32, 64, 128, 256, 512, 1024, 2048, 4096)
                                              if k % g == 0 and (k != 12_288 or g == 4096)]
        jobs += _jobs(rng, k, [WeightFormat(bits, group=group) for group in groups])
    _check(jobs)


def test_sparse_rows_are_expanded_in_the_stream_exactly():
    """Every N:M pattern and width, its positions as positions and as a bitmask, zero-inserted before the packed
    MACs, at K = 11,008."""
    rng = np.random.default_rng(7)
    jobs = []
    for *_, base in formats(SLOTS):
        if not base.sparse:
            continue
        fmt = WeightFormat(base.bits, base.n, base.m, 0 if base.bits == 8 else 128, base.encoding)
        for extreme, unsigned in ((True, False), (False, True)):
            jobs.append((fmt, K_REAL[0], _pair(rng, fmt, K_REAL[0], extreme), _acts(rng, K_REAL[0], extreme, unsigned),
                         unsigned))
    _check(jobs)


def test_a_chunk_stream_carries_exactly_the_packed_rows_bytes():
    """Chunks re-order the packed rows' values and positions (no byte added or dropped); multipliers travel per
    segment of SEGMENT columns."""
    rng = np.random.default_rng(3)
    for *_, base in formats(SLOTS):
        fmt = WeightFormat(base.bits, base.n, base.m, 0 if base.bits == 8 else 64, base.encoding)
        k = 1024
        packed = _pair(rng, fmt, k, extreme=False)
        chunks, gs = pair_chunks(packed, fmt, k, SLOTS)
        values, positions, scales = fmt.row_parts(k)
        assert chunks.shape == (k // SLOTS, chunk_bytes(fmt, SLOTS))
        assert chunks.size == 2 * (values + positions)
        assert sorted(chunks.reshape(-1).tolist()) == sorted(packed[:, :values + positions].reshape(-1).tolist())
        assert gs.shape == (k // SLOTS, 2, SLOTS // SEGMENT)
        if fmt.group:
            assert np.array_equal(gs[:, :, 0].T.reshape(2, -1)[:, ::fmt.group // SLOTS], packed[:, -scales:])


def test_a_tile_stream_image_holds_the_packed_rows_in_every_format():
    """stream_image and its inverse for every width, pattern and group size, several groups, channels per group and
    beat widths, a row count that leaves a group short (zero rows pad it); W4 and W8 dense and 8:16 streams are
    exactly as long as their packed rows (no padding) when the multipliers fill their beats. The image equals the
    one built a pair's record at a time, byte for byte."""
    from flightc.compress.stream import StreamShape, rows_of_image, stream_image

    rng = np.random.default_rng(5)
    for *_, base in formats(SLOTS):
        for group in ([0] if base.bits == 8 else [0, 16, 128, 1024]):
            fmt = WeightFormat(base.bits, base.n, base.m, group, base.encoding)
            for rows, k, groups, beat, unit, channels in ((70, 2048, 4, 64, 1024, 8), (9, 1024, 1, 8, 128, 4),
                                                          (128, 4096, 32, 64, 1024, 32)):
                packed = rng.integers(0, 256, (rows, fmt.row_bytes(k))).astype(np.uint8)
                shape = StreamShape(fmt, rows, k, groups, SLOTS, beat, unit, channels)
                image = stream_image(packed, shape)
                assert len(image) == shape.nbytes
                assert image == stream_image_by_records(packed, shape), (fmt.label(), rows, k)
                assert np.array_equal(rows_of_image(image, shape), packed), (fmt.label(), rows, k)
            if (fmt.bits, fmt.n, fmt.encoding.name) in ((4, 16, "POSITIONS"), (4, 8, "POSITIONS"), (8, 16, "POSITIONS")) \
                    and group in (0, 16, 128):  # a 7B projection on u280
                assert StreamShape(fmt, 4096, 4096, 32, SLOTS, 64, 1024, 32).nbytes == 4096 * fmt.row_bytes(4096)


def test_packed_positions_equal_the_kept_weights_index_arrays():
    """pack_weight looks each block's positions up by its keep mask; they equal np.nonzero's (how it found them
    before), values and positions, for every N:M pattern; a block keeping the wrong count is refused by name."""
    from flightc.compress.packing import _block_positions

    rng = np.random.default_rng(11)
    for n, m in sorted(set(SPARSITY_NM.values())):
        if n == m:
            continue
        rows, k = 37, 512
        keep = np.zeros((rows, k // m, m), bool)
        np.put_along_axis(keep, np.argsort(rng.random(keep.shape), axis=2)[..., :n], True, axis=2)
        bits = np.packbits(keep.reshape(rows, k), axis=1, bitorder="little")
        pos = _block_positions(bits, k, n, m)
        assert np.array_equal(pos.reshape(rows, -1), np.nonzero(keep)[2].reshape(rows, -1)), (n, m)
        q = rng.integers(-8, 8, (rows, k)).astype(np.int8)
        packed = pack_weight(QuantWeight(WeightFormat(4, n, m), q * keep.reshape(rows, k), np.zeros((rows, 0)), np.ones(rows),
                                         keep.reshape(rows, k)))
        assert np.array_equal(unpack_rows(packed, WeightFormat(4, n, m), k), q * keep.reshape(rows, k))
    keep[5, 3, :] = True  # the last pattern's (8:16)
    with pytest.raises(UnsupportedError, match=r"weight row 5, block 3 keeps 16 of 16 weights where its 8:16"):
        _block_positions(np.packbits(keep.reshape(rows, k), axis=1, bitorder="little"), k, 8, 16)
    odd = np.zeros((2, 12), bool)  # K not whole bytes: the mask is unpacked
    odd[:, [1, 2, 4, 7, 9, 11]] = True
    assert _block_positions(np.packbits(odd, axis=1, bitorder="little"), 12, 2, 4).tolist() == [[[1, 2], [0, 3], [1, 3]]] * 2


def test_multipliers_past_the_isa_rule_are_refused():
    fmt = WeightFormat(4, group=32)
    q = np.zeros((1, 64), np.int8)
    too_big = np.array([[15, 16]], np.uint8)
    with pytest.raises(UnsupportedError, match="group multiplier 16 of row 0, group 1 exceeds 15"):
        pack_weight(QuantWeight(fmt, q, too_big, np.ones(1), None))
    packed = pack_weight(QuantWeight(fmt, q, np.array([[15, 15]], np.uint8), np.ones(1), None))
    packed[0, -1] = 200
    with pytest.raises(ProgramError, match="weight row 0, group 1: multiplier 200 exceeds 15"):
        unpack_rows(packed, fmt, 64)


def _feed_and_group(fmt: WeightFormat, rows: int, k: int, beat: int, seed: int, stall: float):
    """A tile's stream image (one lane group) through a LaneFeed into a LaneGroup, beats offered at random when
    ``stall`` > 0: (the rows' sums, the sums the dequantizer gives, beats of the stream, cycles to the feed's done)."""
    from amaranth.hdl import Module

    from flightc.compress.stream import StreamShape, stream_image
    from flightc.hw.lane_feed import LaneFeed

    rng = np.random.default_rng(seed)
    packed = random_weights(rng, fmt, rows, k)
    acts = rng.integers(0, 256, k).astype(np.uint8)
    want = [int(x) for x in unpack_rows(packed, fmt, k).astype(np.int64) @ acts.view(np.int8).astype(np.int64)]
    shape = StreamShape(fmt, rows, k, 1, SLOTS, beat, unit=beat, channels=1)
    beats = np.frombuffer(stream_image(packed, shape), np.uint8).reshape(-1, beat)
    m = Module()
    m.submodules.feed = feed = LaneFeed(SLOTS, beat, k // SLOTS, shape.pairs)
    m.submodules.group = group = LaneGroup(SLOTS, k // SLOTS)
    m.d.comb += [group.chunk.valid.eq(feed.chunk.valid), group.chunk.payload.eq(feed.chunk.payload)]
    got, done = [], []

    async def bench(ctx):
        await _write_acts(ctx, group, acts, k)
        for unit in (group, feed):
            ctx.set(unit.bits_code, fmt.bits_code)
            ctx.set(unit.sparsity, fmt.sparsity)
            ctx.set(unit.sparse_enc, fmt.chosen)
        ctx.set(group.grouped, bool(fmt.group))
        ctx.set(feed.group_log2, fmt.group_log2)
        ctx.set(feed.chunks, k // SLOTS)
        ctx.set(feed.pairs, shape.pairs)
        ctx.set(feed.start, 1)
        await ctx.tick()
        ctx.set(feed.start, 0)
        i = cycle = 0
        while len(got) < 2 * shape.pairs and cycle < 20 * len(beats) + 100:
            ctx.set(feed.beats.valid, i < len(beats) and rng.random() >= stall)
            if i < len(beats):
                ctx.set(feed.beats.payload, _le(beats[i]))
            took = ctx.get(feed.beats.valid) and ctx.get(feed.beats.ready)
            if ctx.get(group.result.valid):
                p = ctx.get(group.result.payload)
                got.extend([int(p["row0"]), int(p["row1"])])
            if ctx.get(feed.done):
                done.append(cycle)
            await ctx.tick()
            cycle += 1
            i += bool(took)

    sim = Simulator(m)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    return got[:rows], want, len(beats), done


@pytest.mark.parametrize("fmt", [WeightFormat(4, group=128), WeightFormat(4, 8, 16, 16), WeightFormat(8),
                                 WeightFormat(2, 2, 16, 32)], ids=lambda f: f.label())
def test_a_fed_lane_group_takes_a_beat_a_cycle_and_matches_the_dequantizer(fmt):
    """The feed unpacks a stream image (multiplier beats, chunks, padding) into chunks: W4 and W8, dense and
    8:16, at a beat a cycle (done the cycle after the last beat); W2 2:16, whose chunk is a quarter beat, at a
    chunk a cycle; the sums exact, also with beats arriving at random."""
    got, want, beats, done = _feed_and_group(fmt, 6, 2048, 64, seed=1, stall=0.0)
    assert got == want
    if chunk_bytes(fmt, SLOTS) in (64, 128):
        assert done == [beats]
    got, want, _, _ = _feed_and_group(fmt, 5, 1024, 64, seed=2, stall=0.3)
    assert got == want


@pytest.mark.parametrize("fmt", [WeightFormat(4, 8, 16, 128, SparseEncoding.BITMASK), WeightFormat(3),
                                 WeightFormat(8, 8, 16), WeightFormat(8, 8, 16, 0, SparseEncoding.BITMASK)],
                         ids=lambda f: f.label())
def test_chunks_that_straddle_beats_are_assembled_at_line_rate(fmt):
    """Chunks lie back to back in the stream: 48 bytes (W4 8:16 with a bitmask, W3), 96 and 80 (W8 8:16) across
    64-byte beats. The sums are exact, also with beats arriving at random, and the feed is done when each block has
    taken a chunk a cycle or a beat a cycle, whichever is slower (its multiplier beat one more)."""
    from flightc.compress.stream import chunk_stride

    k, rows = 2048, 6
    stride = chunk_stride(fmt, SLOTS)
    assert stride == chunk_bytes(fmt, SLOTS) and 64 % stride and stride % 64  # no padding; straddles
    got, want, beats, done = _feed_and_group(fmt, rows, k, 64, seed=4, stall=0.0)
    assert got == want
    per_block = min(k, 32 * fmt.group) if fmt.group else k  # a beat holds 32 groups' multipliers of a row pair
    nch = per_block // SLOTS
    block = (1 if fmt.group else 0) + max(nch, -(-nch * stride // 64))
    assert done == [rows // 2 * (k // per_block) * block]
    got, want, _, _ = _feed_and_group(fmt, 5, 1024, 64, seed=5, stall=0.3)
    assert got == want


def test_a_narrow_beat_feeds_a_lane_group_too():
    """8-byte beats (the tiny preset's port): a chunk gathered from eight beats, multipliers a beat a block."""
    got, want, beats, done = _feed_and_group(WeightFormat(4, 8, 16, 16), 3, 256, 8, seed=3, stall=0.2)
    assert got == want


def test_sparse_positions_out_of_order_are_refused():
    """The zero insertion looks for a column's value only among the stored values an ascending block can put
    there, so the dequantizer refuses positions that are not distinct and ascending instead of reading them."""
    fmt = WeightFormat(4, 8, 16)
    packed = random_weights(np.random.default_rng(0), fmt, 1, 32)
    assert unpack_rows(packed, fmt, 32).shape == (1, 32)
    vbytes = fmt.row_parts(32)[0]
    swapped = packed.copy()
    swapped[0, vbytes + 4] = (packed[0, vbytes + 4] >> 4) | ((packed[0, vbytes + 4] & 15) << 4)  # 2nd block's first two
    with pytest.raises(ProgramError, match="weight row 0, block 1: sparse positions .* not distinct and ascending"):
        unpack_rows(swapped, fmt, 32)


def test_a_group_built_for_the_u280s_formats_is_exact_on_them():
    """u280 runs dense weights only (its 8:16 plans stored dense): its lane group, built for those, dequantizes them
    exactly (here W4 g128, W3 g64 and W8, the LM head's; W8's dense chunk is the widest, so the chunk is as wide as
    with every format); the one-core u280 of dense and 8:16 weights likewise (W4 g128 8:16 and W8)."""
    from flightc.config import PRESETS
    from flightc.hw.lane_group import chunk_layout, config_kinds

    kinds = config_kinds(PRESETS["u280"])
    assert {(n, m) for _, n, m, _ in kinds} == {(16, 16)} and {b for b, *_ in kinds} == {2, 3, 4, 8}
    assert chunk_layout(SLOTS, kinds).size == chunk_layout(SLOTS).size
    rng = np.random.default_rng(11)
    _check(_jobs(rng, 1024, [WeightFormat(4, group=128), WeightFormat(3, group=64), WeightFormat(8)]), kinds)
    sparse = config_kinds(PRESETS["u280"].replace(num_cores=1, sparse_n=(8, 16)))
    assert {(n, m) for _, n, m, _ in sparse} == {(16, 16), (8, 16)}
    _check(_jobs(rng, 1024, [WeightFormat(4, 8, 16, 128), WeightFormat(8)]), sparse)


def test_a_group_storing_n_m_at_4_bits_alone_inserts_4_bit_values_exactly():
    """``sparse_bits`` (4,): only W4 is stored 8:16, so the zero insertion moves 4-bit values and sign-extends the
    one it chose; dense W3 and W8 beside it, and every stored q at its minimum (-8 sign-extended), stay exact."""
    from flightc.config import PRESETS
    from flightc.hw.lane_group import config_kinds

    B = SparseEncoding.BITMASK
    cfg = PRESETS["u280"].replace(sparse_n=(8, 16), sparse_bits=(4,), sparse_encodings=(B,))
    kinds = config_kinds(cfg)
    assert {(b, n) for b, n, _, _ in kinds if n != 16} == {(4, 8)}
    rng = np.random.default_rng(12)
    jobs = _jobs(rng, 1024, [WeightFormat(4, 8, 16, 128, B), WeightFormat(3, group=64), WeightFormat(8)])
    _check(jobs, kinds)
