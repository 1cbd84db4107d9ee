"""A blocked softmax (ISA 1.11, MISC SOFTMAX.part): every block's MAX, then SUM, then NORM part make the whole
softmax's probabilities byte for byte, in numerics and on fsim; malformed parts are refused."""
import numpy as np
import pytest

from flightc import numerics as nm
from flightc.config import PRESETS, Buffer
from flightc.errors import ProgramError
from flightc.isa.codec import encode_program, make
from flightc.isa.table import MiscOp, Opcode, SoftmaxPart, SysOp, Unit
from flightc.records import SOFTMAX_STATS
from flightc.sim.functional import Machine

CFG = PRESETS["tiny"]
LD, SFU, ST = (1 << u for u in (Unit.LD, Unit.SFU, Unit.ST))


def _case(rng, rows: int, cols: int):
    s = rng.integers(-(1 << 20), 1 << 20, (rows, cols))
    offset = int(rng.integers(cols - rows, cols + 2))
    window = int(rng.choice([0, rng.integers(1, cols + 3)]))
    return s, offset, window, int(rng.integers(1, 1 << 18)), int(rng.integers(8, 24))


def _blocks(cols: int, size: int) -> list[tuple[int, int]]:
    bounds = [*range(0, cols, size), cols]
    return list(zip(bounds, bounds[1:]))


@pytest.mark.parametrize("seed", range(6))
def test_the_parts_over_blocks_are_the_whole_softmax(seed):
    rng = np.random.default_rng(seed)
    for _ in range(20):
        rows, cols = int(rng.integers(1, 9)), int(rng.integers(8, 200))
        s, offset, window, mult, shift = _case(rng, rows, cols)
        want = nm.softmax(s, mult, shift, offset, window)
        blocks = _blocks(cols, int(rng.integers(1, cols + 1)))
        row_max = total = None
        for a, b in blocks:
            row_max = nm.softmax_part_max(s[:, a:b], offset - a, window, row_max)
        for a, b in blocks:
            total = nm.softmax_part_sum(s[:, a:b], row_max, mult, shift, offset - a, window, total)
        recip = nm.softmax_recip(total)
        got = np.concatenate([nm.softmax_part_norm(s[:, a:b], row_max, recip, mult, shift, offset - a, window)
                              for a, b in blocks], axis=1)
        np.testing.assert_array_equal(got, want)


def _program(rows: int, cols: int, offset: int, window: int, mult: int, shift: int, size: int) -> list:
    """Scores (ACC 0, rows of cols INT32) -> probabilities (ACT 0) through the parts over blocks of ``size``
    columns, the statistics at ACC ``stats``."""
    stats = 4 * rows * cols
    prog = [make(Opcode.LD, buf=Buffer.ACC, buf_addr=0, channel=0, hbm_addr=0, rows=1, row_bytes=4 * rows * cols,
                 hbm_stride=0, buf_stride=0, release=SFU)]
    blocks = _blocks(cols, size)
    for part in (SoftmaxPart.MAX, SoftmaxPart.SUM, SoftmaxPart.NORM):
        for i, (a, b) in enumerate(blocks):
            # MAX and SUM write the rows' statistic over the one they read; NORM the probabilities
            dst = (dict(dst_buf=Buffer.ACT, dst_addr=a, dst_stride=cols) if part is SoftmaxPart.NORM else
                   dict(dst_buf=Buffer.ACC, dst_addr=stats + SOFTMAX_STATS.field(part.name.lower()).offset,
                        dst_stride=SOFTMAX_STATS.size))
            prog.append(make(Opcode.MISC, op=MiscOp.SOFTMAX, part=part, first=int(i == 0 and part != SoftmaxPart.NORM),
                             stats_addr=stats, rows=rows, cols=b - a, src_buf=Buffer.ACC, src_addr=4 * a,
                             src_stride=4 * cols, imm=mult, shift=shift, offset=offset - a, window=window, **dst))
    prog[1] = prog[1].replace(wait=LD)
    prog[-1] = prog[-1].replace(release=ST)
    return prog


def _run(s: np.ndarray, prog: list) -> np.ndarray:
    rows, cols = s.shape
    m = Machine(CFG, {0: 1 << 14})
    m.write_hbm(0, 0, s.astype("<i4").tobytes())
    prog = prog + [make(Opcode.ST, wait=SFU if prog[-1].release else 0, buf=Buffer.ACT, buf_addr=0, channel=0,
                        hbm_addr=8192, rows=1, row_bytes=rows * cols, hbm_stride=0, buf_stride=0),
                   make(Opcode.SYS, op=SysOp.END)]
    m.run(encode_program(prog))
    return np.frombuffer(m.read_hbm(0, 8192, rows * cols), np.uint8).reshape(rows, cols)


@pytest.mark.parametrize("size", [5, 16, 64])
def test_a_blocked_softmax_on_fsim_is_the_whole_one(size):
    rng = np.random.default_rng(size)
    rows, cols = 6, 48
    s, offset, window, mult, shift = _case(rng, rows, cols)
    want = nm.softmax(s, mult, shift, offset, window)
    np.testing.assert_array_equal(_run(s, _program(rows, cols, offset, window, mult, shift, size)), want)


def test_malformed_parts_are_refused():
    rng = np.random.default_rng(0)
    s, offset, window, mult, shift = _case(rng, 4, 32)
    prog = _program(4, 32, offset, window, mult, shift, 8)
    with pytest.raises(ProgramError, match="part MAX is a part of a blocked SOFTMAX: not with REQ"):
        _run(s, [p.replace(op=MiscOp.REQ) if p.opcode is Opcode.MISC and p.part == SoftmaxPart.MAX else p
                 for p in prog])
    with pytest.raises(ProgramError, match="first and stats_addr belong to a part"):
        _run(s, [p.replace(part=SoftmaxPart.WHOLE) if p.opcode is Opcode.MISC and p.first else p for p in prog])
    with pytest.raises(ProgramError, match="a NORM part adds to no statistic"):
        _run(s, [p.replace(first=1) if p.opcode is Opcode.MISC and p.part == SoftmaxPart.NORM else p for p in prog])
    with pytest.raises(ProgramError, match="writes the rows' max .* into ACC: dst_buf must be ACC, not ACT"):
        _run(s, [p.replace(dst_buf=Buffer.ACT) if p.opcode is Opcode.MISC and p.part == SoftmaxPart.MAX else p
                 for p in prog])
    # the SUM parts before the MAX parts: the statistics' maxima are not the rows'
    maxes = [p for p in prog if p.opcode is Opcode.MISC and p.part == SoftmaxPart.MAX]
    sums = [p for p in prog if p.opcode is Opcode.MISC and p.part == SoftmaxPart.SUM]
    with pytest.raises(ProgramError, match="a visible score exceeds its row's maximum"):
        _run(s, [prog[0], sums[0].replace(wait=LD), *sums[1:], maxes[0].replace(wait=0), *maxes[1:]])
    # a NORM whose rows' sums were never made
    norms = [p for p in prog if p.opcode is Opcode.MISC and p.part == SoftmaxPart.NORM]
    with pytest.raises(ProgramError, match="sum of powers is 0"):
        _run(s, [prog[0], norms[0].replace(wait=LD, release=ST)])


def test_the_statistics_record_is_declared_once():
    assert SOFTMAX_STATS.size == 8 and SOFTMAX_STATS.field("max").offset == 0
    assert nm.SCORE_NONE == np.iinfo(np.int32).min
