"""MV.out_max and SOFTMAX.max_given (ISA 1.7): a streamed MV's output stage hands softmax its row maximum, so the
SFU reads decode's scores twice, not three times; the functional simulator holds both to their rules."""
from __future__ import annotations

import numpy as np
import pytest

from flightc import numerics as nm
from flightc.compress.formats import WeightFormat
from flightc.compress.stream import stream_image
from flightc.config import PRESETS, Buffer
from flightc.errors import ProgramError
from flightc.isa.codec import encode_program, make
from flightc.isa.footprint import stream_shape, stripe_layout
from flightc.isa.table import MiscOp, OutMode, SysOp, Unit
from flightc.sim.functional import Machine
from flightc.sim.perf.timing import instruction_work
from flightc.sim.rtl.random_programs import random_weights

CFG = PRESETS["hbm4"]
OUT = 1 << 16
END = make("SYS", op=SysOp.END)


def _machine(images: dict[int, bytes]) -> Machine:
    m = Machine(CFG, {ch: 1 << 20 for ch in range(CFG.mem_channels)})
    for ch, data in images.items():
        m.write_hbm(ch, 0, data)
    return m


def _streamed_scores(out_max: int, n: int = 45, k: int = 128, seed: int = 3):
    """(the n raw sums and the word past them, as a streamed MV leaves them; the sums of the same rows from WGT)."""
    rng = np.random.default_rng(seed)
    fmt = WeightFormat(8)
    packed = random_weights(rng, fmt, n, k)
    acts = rng.integers(-128, 128, k).astype(np.int8).tobytes()
    load_a = make("LD", buf=Buffer.ACT, buf_addr=0, channel=0, hbm_addr=0, rows=1, row_bytes=k, release=1 << Unit.MPE)
    mv = dict(n=n, k=k, a_addr=0, w_bits=fmt.bits_code, sparsity=fmt.sparsity, out_mode=OutMode.ACC32, out_addr=0,
              wait=1 << Unit.LD, release=1 << Unit.ST)
    store = make("ST", buf=Buffer.ACC, buf_addr=0, channel=0, hbm_addr=OUT, rows=1, row_bytes=4 * n + 4,
                 wait=1 << Unit.MPE)
    # the same rows from WGT (no maximum): an independent path to the sums
    m = _machine({0: acts, 1: packed.tobytes()})
    m.run(encode_program([make("LD", buf=Buffer.WGT, buf_addr=0, channel=1, hbm_addr=0, rows=n, row_bytes=k,
                               hbm_stride=k, buf_stride=k), load_a,
                          make("MV", **mv, w_buf=Buffer.WGT, w_addr=0, w_stride=k), store, END]))
    buffered = np.frombuffer(m.read_hbm(0, OUT, 4 * n), "<i4")
    streamed = make("MV", **mv, w_stream=1, w_channel=0, w_hbm_addr=4096, w_stripe=CFG.mem_channels, out_max=out_max)
    shape = stream_shape(CFG, streamed)
    image = np.frombuffer(stream_image(packed, shape), np.uint8)
    images = {ch: bytearray(1 << 20) for ch in range(CFG.mem_channels)}
    images[0][:k] = acts
    u = np.arange(image.size) // shape.unit
    for ch, base, nb in stripe_layout(0, 4096, image.size, CFG.mem_channels, shape.unit):
        images[ch][base:base + nb] = image[(u % CFG.mem_channels) == ch].tobytes()
    m = _machine({ch: bytes(v) for ch, v in images.items()})
    m.run(encode_program([load_a, streamed, store, END]))
    return np.frombuffer(m.read_hbm(0, OUT, 4 * n + 4), "<i4"), buffered, streamed


def test_out_max_writes_the_largest_sum_past_the_sums():
    got, buffered, _ = _streamed_scores(out_max=1)
    assert got[:-1].tolist() == buffered.tolist()
    assert got[-1] == buffered.max()
    without, _, _ = _streamed_scores(out_max=0)
    assert without[-1] == 0  # the word past the sums is left alone without out_max


def test_out_max_adds_the_maximum_write_to_the_timing_contract():
    """The largest sum's word goes through the output stage's word queue once it has settled (its tree, a level a
    cycle, behind the last take of scores): a write more, and at most that wait."""
    from flightc.hw.latency_rules import WORD_QUEUE_LATENCY, pairs_max_settle

    _, _, mv = _streamed_scores(out_max=1)
    extra = instruction_work(CFG, mv).cycles - instruction_work(CFG, mv.replace(out_max=0)).cycles
    assert WORD_QUEUE_LATENCY + 1 <= extra <= WORD_QUEUE_LATENCY + 1 + pairs_max_settle(CFG.stream_out_pairs)


def _softmax_run(scores: np.ndarray, given: np.ndarray | None, offset: int, window: int = 0) -> bytes:
    rows, cols = scores.shape
    row = np.concatenate([scores, (given if given is not None else np.zeros(rows, np.int64))[:, None]], 1)
    data = row.astype("<i4").tobytes()
    program = [make("LD", buf=Buffer.ACC, buf_addr=0, channel=0, hbm_addr=0, rows=1, row_bytes=len(data),
                    release=1 << Unit.SFU),
               make("MISC", op=MiscOp.SOFTMAX, rows=rows, cols=cols, src_buf=Buffer.ACC, src_addr=0,
                    src_stride=4 * (cols + 1), dst_buf=Buffer.ACT, dst_addr=0, dst_stride=cols, imm=23637, shift=12,
                    offset=offset, window=window, max_given=int(given is not None), wait=1 << Unit.LD,
                    release=1 << Unit.ST),
               make("ST", buf=Buffer.ACT, buf_addr=0, channel=0, hbm_addr=OUT, rows=1, row_bytes=rows * cols,
                    wait=1 << Unit.SFU), END]
    m = _machine({0: data})
    m.run(encode_program(program))
    return m.read_hbm(0, OUT, rows * cols)


def test_a_given_maximum_gives_the_same_probabilities():
    rng = np.random.default_rng(0)
    scores = rng.integers(-(1 << 16), 1 << 16, (3, 40))
    offset, window = 37, 30
    best = nm.softmax_row_max(scores, offset, window)
    assert _softmax_run(scores, best, offset, window) == _softmax_run(scores, None, offset, window)
    assert np.frombuffer(_softmax_run(scores, best, offset, window), np.uint8).reshape(3, 40).tobytes() == \
        nm.softmax(scores, 23637, 12, offset, window).tobytes()


def test_a_wrong_given_maximum_is_refused_by_row():
    scores = np.arange(24, dtype=np.int64).reshape(2, 12) * 100
    best = nm.softmax_row_max(scores, 11)
    best[1] -= 1  # below a visible score
    with pytest.raises(ProgramError, match=r"row 1's given maximum 2299 .* not the maximum 2300"):
        _softmax_run(scores, best, 11)
    every = scores.max(axis=1)  # the maximum of every column, where row 0 sees columns 0..5
    with pytest.raises(ProgramError, match="row 0's given maximum 1100 .* not the maximum 500"):
        _softmax_run(scores, every, 5)


def test_the_maximum_fields_are_refused_where_nothing_makes_or_takes_a_maximum():
    _, _, mv = _streamed_scores(out_max=1)
    m = _machine({})
    with pytest.raises(ProgramError, match="needs w_stream and ACC32"):
        m.run(encode_program([mv.replace(w_stream=0, w_channel=0, w_hbm_addr=0, w_stripe=0, wait=0, release=0),
                              END]))
    with pytest.raises(ProgramError, match="REQ takes none"):
        m.run(encode_program([make("MISC", op=MiscOp.REQ, rows=1, cols=4, src_buf=Buffer.ACC, dst_buf=Buffer.ACT,
                                   dst_addr=64, max_given=1), END]))


def test_a_given_maximum_saves_the_softmax_a_pass():
    u280 = PRESETS["u280"]
    sm = make("MISC", op=MiscOp.SOFTMAX, rows=1, cols=4096, src_buf=Buffer.ACC, dst_buf=Buffer.ACT, dst_addr=0,
              src_stride=4 * 4097, offset=4095, imm=1, shift=0)
    full, given = (instruction_work(u280, sm.replace(max_given=g)).cycles for g in (0, 1))
    # the pass reads every score once, a chunk of the SFU's lanes a cycle (8 INT32 on u280, half a buffer word)
    chunks = 4096 // min(u280.sfu_lanes, u280.buffer_port_bytes // 4)
    assert chunks <= full - given <= chunks + 8


def test_a_group_size_outside_the_isas_is_refused_by_name():
    """group_log2 1 to 3 (groups of 2 to 8 columns) is no group the compiler makes or the hardware builds (the lane
    feed and the chains take groups of GROUP_MIN columns or more): fsim refuses it rather than compute one."""
    _, _, mv = _streamed_scores(out_max=0)
    m = _machine({})
    with pytest.raises(ProgramError, match="group_log2 = 2: groups of 4 columns"):
        m.run(encode_program([mv.replace(w_stream=0, w_channel=0, w_hbm_addr=0, w_stripe=0, wait=0, release=0,
                                         group_log2=2), END]))
