"""sim.kernels, the compiled arithmetic of fsim's fast path, against flightc.numerics, its definition: byte for byte
on seeded random operands across each field's whole range (shift counts past 63 included, where the compiled
code must not inherit LLVM's undefined shifts), and the same refusal where the definition refuses."""
import numpy as np
import pytest

from flightc import numerics as nm
from flightc.sim import kernels as K

D = K.DEFINITION


def same(got: np.ndarray, want: np.ndarray) -> None:
    want = np.asarray(want)
    assert got.shape == want.shape
    assert np.array_equal(got.astype(np.int64), want.astype(np.int64))
    assert got.astype(want.dtype).tobytes() == want.tobytes()


@pytest.mark.parametrize("seed", range(6))
def test_the_mpe_output_stages_equal_their_definitions(seed):
    rng = np.random.default_rng(seed)
    m, n = int(rng.integers(1, 5)), int(rng.integers(1, 300))
    acc = rng.integers(-(1 << 34), 1 << 34, (m, n)) >> rng.integers(0, 34, (m, n))  # every magnitude
    mult = rng.integers(-(1 << 31), 1 << 31, n)
    shift = rng.integers(0, 256, n)  # the record's u1: counts past 63 as numpy shifts them
    shift[: n // 2] = rng.integers(25, 50, n // 2)  # the usual range, where results do not all saturate
    res = rng.integers(-(1 << 31), 1 << 31, (m, n)).astype(np.int32)
    lut = rng.integers(-128, 128, nm.LUT_ENTRIES).astype(np.int8)
    bias = rng.integers(-(1 << 20), 1 << 20, n)
    for table in (None, lut):
        same(K.mpe_requant_i8(acc, mult, shift, table), D.mpe_requant_i8(acc, mult, shift, table))
    same(K.requant_i32(acc, mult, shift), D.requant_i32(acc, mult, shift))
    same(K.residual_add(res, acc, mult, shift), D.residual_add(res, acc, mult, shift))
    for bits in (20, 24, 32, 48):
        assert K.acc_within(acc, bits) == D.acc_within(acc, bits)
        fits = D.acc_within(acc, bits)
        for kind, want in ((K.ACC32, lambda: acc.astype("<i4")),
                           (K.REQ_I8, lambda: D.mpe_requant_i8(acc + bias, mult, shift, lut)),
                           (K.REQ_I32, lambda: D.requant_i32(acc + bias, mult, shift)),
                           (K.REQ_ADD, lambda: D.residual_add(res, acc + bias, mult, shift))):
            got = K.mpe_output(kind, acc, bits, bias, mult, shift, lut if kind == K.REQ_I8 else None,
                               res if kind == K.REQ_ADD else None)
            assert (got is None) == (not fits)
            if fits:
                same(got, want())
    small = acc >> 12  # sums one float32 product holds exactly: taken as they come
    same(K.mpe_output(K.REQ_I8, small.astype(np.float32), 32, bias, mult, shift),
         D.mpe_requant_i8(small + bias, mult, shift, None))
    assert not K.acc_within(np.array([[1 << 23]]), 24) and K.acc_within(np.array([[-(1 << 23)]]), 24)


@pytest.mark.parametrize("seed", range(8))
def test_the_norms_equal_their_definitions(seed):
    rng = np.random.default_rng(seed)
    rows, cols = int(rng.integers(1, 5)), int(rng.choice([8, 64, 96, 128, 256]))
    x = rng.integers(-(1 << 24), 1 << 24, (rows, cols)) >> int(rng.integers(0, 24))
    gain = rng.integers(-(1 << 16), 1 << 16, cols)
    beta = rng.integers(-200, 200, cols)
    eps_q, shift = int(rng.integers(0, 1 << 20)), int(rng.integers(0, nm.NORM_SHIFT_MAX + 1))
    same(K.rmsnorm(x, gain, eps_q, shift), D.rmsnorm(x, gain, eps_q, shift))
    same(K.layernorm(x, gain, beta, eps_q, shift), D.layernorm(x, gain, beta, eps_q, shift))
    zero = np.zeros((1, cols), np.int64)  # rms 0 -> 1, the divisor's smallest
    same(K.rmsnorm(zero, gain, 0, shift), D.rmsnorm(zero, gain, 0, shift))


def test_a_norm_the_definition_refuses_is_refused_alike():
    x = np.full((1, 4), 1 << 31, np.int64)
    gain = np.ones(4, np.int64)
    for kernel, definition in ((K.rmsnorm, D.rmsnorm), (K.layernorm, D.layernorm)):
        args = (x, gain, gain, -(1 << 62), 0) if kernel is K.layernorm else (x, gain, -(1 << 62), 0)
        with pytest.raises(ValueError) as want:
            definition(*args)
        with pytest.raises(ValueError) as got:
            kernel(*args)
        assert str(got.value) == str(want.value)


@pytest.mark.parametrize("seed", range(6))
def test_rope_softmax_and_the_elementwise_ops_equal_their_definitions(seed):
    rng = np.random.default_rng(seed)
    rows, d = int(rng.integers(1, 6)), int(rng.choice([4, 32, 64]))
    x = rng.integers(-128, 128, (rows, d * int(rng.integers(1, 4))))
    cos, sin = (rng.integers(-(1 << 14), (1 << 14) + 1, (rows, d // 2)).astype(np.int16) for _ in range(2))
    same(K.rope(x, cos, sin, d), D.rope(x, cos, sin, d))

    cols = int(rng.integers(rows, 80))
    scores = rng.integers(-(1 << 31), 1 << 31, (rows, cols)) >> int(rng.integers(0, 31))
    mult, shift = int(rng.integers(1, 1 << 31)), int(rng.integers(0, 64))
    for offset, window in ((cols - rows, 0), (cols - 1, 0), (cols - rows, int(rng.integers(1, cols + 1))), (0, 1)):
        same(K.softmax(scores, mult, shift, offset, window), D.softmax(scores, mult, shift, offset, window))

    a = rng.integers(-(1 << 31), 1 << 31, (rows, 40)) >> int(rng.integers(0, 31))
    b = rng.integers(-128, 128, (rows, 40)).astype(np.int8)
    res = rng.integers(-(1 << 31), 1 << 31, (rows, 40)).astype(np.int32)
    imm, sh = int(rng.integers(-(1 << 31), 1 << 31)), int(rng.integers(0, 64))
    same(K.emul(a, b, imm, sh), D.emul(a, b, imm, sh))
    same(K.deq(a, imm, sh), D.deq(a, imm, sh))
    same(K.req(a, imm, sh), D.req(a, imm, sh))
    same(K.deq_add(res, a, imm, sh), D.deq_add(res, a, imm, sh))


def test_a_softmax_row_that_sees_nothing_is_refused_alike():
    scores = np.zeros((2, 4), np.int64)
    with pytest.raises(ValueError, match="sees no column"):
        K.softmax(scores, 1, 0, -1)


def test_operands_that_do_not_fit_each_other_are_refused_never_read_or_written_past():
    """The compiled loops index without bounds checks: each kernel checks its operands' shapes first and leaves
    a mismatch to numerics, which refuses it, instead of reading or writing past an array."""
    acc = np.ones((2, 8), np.int64)
    with pytest.raises(ValueError, match="not the same rows"):
        K.mpe_output(K.REQ_I8, acc, 32, np.zeros(4), np.ones(8), np.ones(8))
    with pytest.raises(ValueError, match="not the same rows"):
        K.mpe_output(K.REQ_ADD, acc, 32, np.zeros(8), np.ones(8), np.ones(8), res=np.zeros((1, 8), np.int32))
    with pytest.raises(ValueError):
        K.requant_i32(acc, np.ones(3), np.ones(8))
    x = np.ones((3, 8), np.int64)
    short = np.ones((2, 2), np.int16)  # two rows of angles for three rows
    for kernel, definition, args in ((K.rope, D.rope, (x, short, short, 4)),
                                     (K.emul, D.emul, (x, np.ones((2, 8), np.int8), 1, 0)),
                                     (K.deq_add, D.deq_add, (np.ones((3, 4), np.int32), x, 1, 0)),
                                     (K.rmsnorm, D.rmsnorm, (x, np.ones(4), 0, 0))):
        with pytest.raises(ValueError) as want:
            definition(*args)
        with pytest.raises(ValueError) as got:
            kernel(*args)
        assert str(got.value) == str(want.value)
