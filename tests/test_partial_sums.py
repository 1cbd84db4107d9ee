"""MM / MV acc_in (ISA 1.11): a product split along K, its parts summed through INT32 partial sums, is the whole
product's requantization exactly; malformed uses are refused."""
import numpy as np
import pytest

from flightc import numerics as nm
from flightc.config import PRESETS, Buffer
from flightc.errors import ProgramError
from flightc.isa.codec import encode_program, make
from flightc.isa.table import Opcode, OutMode, SysOp, Unit, WeightBits
from flightc.sim.functional import Machine

CFG = PRESETS["tiny"]
M, N, K = 3, 5, 96
A, W, R, P, OUT = 0, 4096, 8192, 0, 12288  # HBM layout on channel 0: activations, weights, records, residual, result
LD, MPE, ST = (1 << u for u in (Unit.LD, Unit.MPE, Unit.ST))


def _operands(seed: int = 0):
    rng = np.random.default_rng(seed)
    a = rng.integers(-128, 128, (M, K), dtype=np.int64)
    w = rng.integers(-128, 128, (N, K), dtype=np.int64)
    mult, shift, bias = rng.integers(1 << 30, 1 << 31, N), rng.integers(14, 24, N), rng.integers(-(1 << 16), 1 << 16, N)
    res = rng.integers(-(1 << 24), 1 << 24, (M, N), dtype=np.int64)
    return a, w, mult, shift, bias, res


def _machine(a, w, mult, shift, bias, res) -> Machine:
    m = Machine(CFG, {0: 1 << 16})
    m.write_hbm(0, A, a.astype(np.int8).tobytes())
    m.write_hbm(0, W, w.astype(np.int8).tobytes())
    m.write_hbm(0, R, nm.pack_requant(mult, shift, bias))
    m.write_hbm(0, R + 1024, res.astype("<i4").tobytes())
    return m


def _loads() -> list:
    rec = nm.REQUANT_RECORD_BYTES * N
    row = dict(channel=0, rows=1, hbm_stride=0, buf_stride=0)
    return [make(Opcode.LD, buf=Buffer.ACT, buf_addr=0, hbm_addr=A, row_bytes=M * K, **row),
            make(Opcode.LD, buf=Buffer.WGT, buf_addr=0, hbm_addr=W, row_bytes=N * K, **row),
            make(Opcode.LD, buf=Buffer.PRM, buf_addr=0, hbm_addr=R, row_bytes=rec, **row),
            make(Opcode.LD, buf=Buffer.ACC, buf_addr=0, hbm_addr=R + 1024, row_bytes=4 * M * N, release=MPE, **row)]


def _mm(k0: int, k1: int, mode: OutMode, out_addr: int, out_stride: int, **extra):
    return make(Opcode.MM, m=M, n=N, k=k1 - k0, a_addr=k0, a_stride=K, w_buf=Buffer.WGT, w_addr=k0, w_stride=K,
                w_bits=WeightBits.B8, out_mode=mode, out_addr=out_addr, out_stride=out_stride, scale_addr=0, **extra)


def _result(m: Machine, program: list) -> np.ndarray:
    program[4] = program[4].replace(wait=LD)  # the first MPE instruction waits for the loads
    program = program + [make(Opcode.ST, wait=MPE, buf=Buffer.ACC, buf_addr=0, channel=0, hbm_addr=OUT, rows=1,
                              row_bytes=4 * M * N, hbm_stride=0, buf_stride=0),
                         make(Opcode.SYS, op=SysOp.END)]
    m.run(encode_program(program))
    return np.frombuffer(m.read_hbm(0, OUT, 4 * M * N), "<i4").reshape(M, N)


@pytest.mark.parametrize("cuts", [(32,), (16, 48, 80), (64,)])
def test_a_product_split_along_k_adds_into_the_residual_as_the_whole_does(cuts):
    ops = _operands(len(cuts))
    a, w, mult, shift, bias, res = ops
    want = nm.residual_add(res, a @ w.T + bias, mult, shift)
    bounds = (0, *cuts, K)
    partial = 1024  # ACC: packed rows of N sums
    program = _loads()
    for i, (k0, k1) in enumerate(zip(bounds, bounds[1:])):
        last = i == len(bounds) - 2
        extra = dict(acc_in=1, acc_addr=partial) if i else {}
        if last:
            program.append(_mm(k0, k1, OutMode.REQ_ADD, 0, 4 * N, release=ST if last else 0, **extra))
        else:
            program.append(_mm(k0, k1, OutMode.ACC32, partial, 4 * N, **extra))
    np.testing.assert_array_equal(_result(_machine(*ops), program), want)
    whole = _loads() + [_mm(0, K, OutMode.REQ_ADD, 0, 4 * N, release=ST)]
    np.testing.assert_array_equal(_result(_machine(*ops), whole), want)


def test_partial_sums_that_overflow_the_accumulators_are_refused():
    ops = _operands()
    m = _machine(*ops)
    m.write_hbm(0, R + 1024, np.full((M, N), (1 << 31) - 1, "<i4").tobytes())  # the partial sums at INT32's top
    program = _loads() + [_mm(0, K, OutMode.ACC32, 0, 4 * N, release=ST, acc_in=1, acc_addr=0)]
    with pytest.raises(ProgramError, match="accumulator overflow"):
        _result(m, program)


def test_acc_addr_without_acc_in_and_a_streamed_acc_in_are_refused():
    m = _machine(*_operands())
    with pytest.raises(ProgramError, match="acc_addr = 64 without acc_in"):
        _result(m, _loads() + [_mm(0, K, OutMode.ACC32, 0, 4 * N, release=ST, acc_addr=64)])
    streamed = make(Opcode.MV, n=N, k=K, w_stream=1, w_channel=0, w_stripe=CFG.channels_per_master, w_hbm_addr=0,
                    w_bits=WeightBits.B8, out_mode=OutMode.ACC32, acc_in=1, acc_addr=1024, release=ST)
    with pytest.raises(ProgramError, match="a streamed MV's output stage takes no partial sums"):
        _result(_machine(*_operands()), _loads() + [streamed])
