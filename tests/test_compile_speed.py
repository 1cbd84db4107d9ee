"""The compile's faster paths change no byte of the bundle: the previous code paths live here as references (round
to nearest on the whole weight with a sorted N:M mask, sparse positions from index arrays, stream images a row
pair's record at a time), and a model compiled through them equals one compiled through the current ones."""
import mmap

import numpy as np
import pytest

from conftest import torch_model
from flightc import bundle as bundle_module
from flightc.compress.formats import WeightFormat
from flightc.compress.packing import _pack_bits, pack_weight
from flightc.compress.quantize import QuantWeight, group_multipliers, q_range, quantize_rtn, row_scales


def nm_mask_by_sorting(w: np.ndarray, n: int, m: int) -> np.ndarray:
    rows, k = w.shape
    blocks = np.abs(w).reshape(rows, k // m, m)
    order = np.argsort(-blocks, axis=-1, kind="stable")
    keep = np.zeros_like(blocks, dtype=bool)
    np.put_along_axis(keep, order[..., :n], True, axis=-1)
    return keep.reshape(rows, k)


def quantize_rtn_whole(w: np.ndarray, fmt: WeightFormat) -> QuantWeight:
    w = np.asarray(w, np.float64)
    rows, k = w.shape
    mask = nm_mask_by_sorting(w, fmt.n, fmt.m) if fmt.sparse else None
    if mask is not None:
        w = np.where(mask, w, 0.0)
    lo, hi = q_range(fmt.bits)
    row_scale = row_scales(np.abs(w).max(axis=1), fmt, np.finfo(np.float64).tiny)
    if fmt.group:
        amax = np.abs(w).reshape(rows, k // fmt.group, fmt.group).max(axis=-1)
        gs = group_multipliers(amax, row_scale[:, None], fmt.bits).astype(np.uint8)
        eff = row_scale[:, None] * np.repeat(gs.astype(np.float64), fmt.group, axis=1)
    else:
        gs = np.zeros((rows, 0), np.uint8)
        eff = np.repeat(row_scale[:, None], k, axis=1)
    q = np.clip(np.round(w / eff), lo, hi).astype(np.int8)
    if mask is not None:
        q = np.where(mask, q, 0).astype(np.int8)
    return QuantWeight(fmt, q, gs, row_scale, mask)


def pack_weight_by_index_arrays(qw: QuantWeight, columns: int | None = None) -> np.ndarray:
    fmt = qw.fmt
    rows, k = qw.q.shape
    assert columns in (None, k)  # (this model's K are whole chunks: no padding)
    nnz = fmt.nnz(k)
    if not fmt.sparse:
        return pack_weight(qw)
    keep = qw.keep.reshape(rows, k // fmt.m, fmt.m)
    pos = np.nonzero(keep)[2].reshape(rows, nnz)
    vals = qw.q.reshape(rows, k // fmt.m, fmt.m)[keep].reshape(rows, nnz)
    parts = [_pack_bits(vals, fmt.bits), _pack_bits(pos, fmt.index_bits)]
    if fmt.group:
        parts.append(qw.gs.astype(np.uint8))
    return np.concatenate(parts, axis=1)


def stream_image_by_records(rows_bytes: np.ndarray, shape) -> bytes:
    """The stream image built a row pair's record at a time from pair_chunks (how stream_image built it before it
    laid out every pair's blocks at once): the reference the vectorized one must equal byte for byte."""
    from flightc.compress.stream import _unit_order, chunk_stride, pair_chunks

    fmt, S, B = shape.fmt, shape.slots, shape.beat

    def record(pair: np.ndarray) -> bytes:
        chunks, _ = pair_chunks(pair, fmt, shape.k, S)
        stride = chunk_stride(fmt, S)
        padded = np.zeros((len(chunks), stride), np.uint8)
        padded[:, :chunks.shape[1]] = chunks
        gs = pair[:, sum(fmt.row_parts(shape.k)[:2]):] if fmt.group else None
        out, c0 = bytearray(), 0
        for cols in shape.blocks():
            if fmt.group:
                g0, g1 = c0 // fmt.group, (c0 + cols) // fmt.group
                mult = np.zeros(B, np.uint8)
                mult[:2 * (g1 - g0)] = gs[:, g0:g1].T.reshape(-1)
                out += mult.tobytes()
            body = padded[c0 // S:(c0 + cols) // S].tobytes()
            out += body + bytes(-len(body) % B)
            c0 += cols
        return bytes(out)

    full = np.zeros((2 * shape.pairs * shape.groups, rows_bytes.shape[1]), np.uint8)
    full[:rows_bytes.shape[0]] = rows_bytes
    streams = []
    for g in range(shape.groups):
        data = b"".join(record(full[2 * p:2 * p + 2]) for p in range(g, shape.pairs * shape.groups, shape.groups))
        streams.append(data + bytes(shape.group_bytes - len(data)))
    U = shape.unit
    return b"".join(streams[g][n * U:(n + 1) * U] for g, n in _unit_order(shape))



FORMATS = ["w4g128s8:16", "w8", "w3g32s2:4", "w2g16s2:16", "w4g64", "w4s4:16"]


def test_the_sorting_network_selects_as_partition_does():
    """kth_smallest's network gives np.partition's value at every rank, for blocks of 2, 4, 8 and 16 with ties."""
    from flightc.compress.quantize import kth_smallest

    rng = np.random.default_rng(4)
    for m in (2, 4, 8, 16):
        blocks = rng.integers(0, 6, (50, 33, m)).astype(np.float64)  # small integers: many ties
        for k in range(m):
            assert np.array_equal(kth_smallest(blocks, k), np.partition(blocks, k, axis=-1)[..., k:k + 1]), (m, k)


@pytest.mark.parametrize("label", FORMATS)
def test_round_to_nearest_equals_the_whole_weight_sorted_mask(label):
    """Rows rounded in blocks, the N:M mask by partition: the same values, multipliers, scales and mask as the
    whole weight with a stable sort, ties (equal magnitudes, a zero row) included, across several row blocks."""
    fmt = WeightFormat.parse(label)
    rng = np.random.default_rng(3)
    w = np.round(rng.standard_normal((700, 512)) * 300) / 300 * 0.02  # many equal magnitudes
    w[5] = 0
    w[9, :32] = 0.01
    for given in (w, w.astype(np.float32)):  # float32 (what the frontends give) is compared in its own dtype
        a, b = quantize_rtn_whole(given, fmt), quantize_rtn(given, fmt)
        for field in ("q", "gs", "row_scale"):
            assert np.array_equal(getattr(a, field), getattr(b, field)), (given.dtype, field)
        assert (a.keep is None and b.keep is None) or np.array_equal(a.keep, b.keep)
        assert np.array_equal(pack_weight_by_index_arrays(a), pack_weight(b))


def test_a_model_compiles_to_the_same_bundle_through_the_previous_paths(monkeypatch):
    """tiny-llama (W4 g32 8:16, the down projections W3 g64 2:4) on hbm4, whose streamed tiles go through
    stream_image: the bundle's every member and its manifest digests are equal either way."""
    from flightc.compiler import compress as compress_pass, memory
    from flightc.compiler.pipeline import compile_model
    from flightc.compress.plan import CompressionPlan

    def build():
        c = compile_model(torch_model("tiny-llama"), "hbm4", CompressionPlan.parse("w4g32s8:16",
                          ["*.down_proj=w3g64s2:4"]), max_len=24, max_prefill=8)
        return c.bundle.members(), c.bundle.manifest

    now, now_manifest = build()
    monkeypatch.setattr(compress_pass, "quantize_rtn", quantize_rtn_whole)
    monkeypatch.setattr(memory, "pack_weight", pack_weight_by_index_arrays)
    monkeypatch.setattr(memory, "stream_image", stream_image_by_records)
    before, before_manifest = build()
    assert sorted(now) == sorted(before)
    for name in now:
        assert now[name] == before[name], name
    assert now_manifest == before_manifest


def test_a_compile_that_releases_its_values_writes_the_same_bundle_and_refuses_the_reference(tmp_path, monkeypatch):
    """keep_integer=False (what `flightc compile` does) drops each layer's values once packed: the same bundle,
    while the integer reference on that compile's graph is refused by name rather than run on missing values."""
    from flightc.compiler.pipeline import compile_model
    from flightc.compress.plan import CompressionPlan
    from flightc.compress.quantize import ReleasedWeightError
    from flightc.reference.integer import IntegerModel

    def build(keep: bool):
        return compile_model(torch_model("tiny-llama"), "hbm4", CompressionPlan.parse("w4g32s8:16"), max_len=24,
                             max_prefill=8, keep_integer=keep)

    kept, released = build(True), build(False)
    assert kept.bundle.members() == released.bundle.members()
    # the released compile's images grew in temporary files and are saved from their maps, a piece at a time
    assert all(isinstance(im, mmap.mmap) for im in released.bundle.images.values() if len(im))
    monkeypatch.setattr(bundle_module, "SAVE_CHUNK", mmap.PAGESIZE)  # many pieces, each image's pages dropped behind
    a, b = kept.bundle.save(tmp_path / "kept.flb"), released.bundle.save(tmp_path / "released.flb")
    assert a.read_bytes() == b.read_bytes()
    qw = released.integer.node("L0.q_proj")["qweight"]
    assert qw.shape == kept.integer.node("L0.q_proj")["qweight"].shape
    with pytest.raises(ReleasedWeightError, match=r"W4 g32 8:16 weight's values were released after packing"):
        IntegerModel(released.integer, 16)
    IntegerModel(kept.integer, 16).forward([1, 2, 3])


def test_values_of_four_bits_or_fewer_are_held_two_a_byte():
    """A W4/W3/W2 weight keeps its values as nibbles and gives back the same int8 values, any row range."""
    rng = np.random.default_rng(8)
    for label in ("w4g128s8:16", "w3g32s2:4", "w2g16s2:16", "w4g64"):
        fmt = WeightFormat.parse(label)
        w = rng.standard_normal((300, 256))
        qw, whole = quantize_rtn(w, fmt), quantize_rtn_whole(w, fmt)
        assert qw._q is None and qw._nib.nbytes == whole.q.nbytes // 2
        assert np.array_equal(qw.q, whole.q) and np.array_equal(qw.q_rows(17, 260), whole.q[17:260])
        assert np.array_equal(qw.int8_operand(5, 9), whole.int8_operand(5, 9))
    wide = np.array([[9, -9], [1, 2]], np.int8)  # out of a nibble's range (an illegal W4 weight): kept as int8
    odd = QuantWeight(WeightFormat(4), wide, np.zeros((2, 0), np.uint8), np.ones(2), None)
    assert np.array_equal(odd.q, wide)
    fine = QuantWeight(WeightFormat(4), wide // 2, np.zeros((2, 0), np.uint8), np.ones(2), None)
    assert np.array_equal(QuantWeight.stacked([fine, odd, fine]).q, np.concatenate([wide // 2, wide, wide // 2]))


def test_a_spooled_image_reads_back_with_zeros_between_and_names_a_full_disk(monkeypatch):
    """An image grown in a temporary file: the gap before a region reads as zeros, it grows only at its end, and a
    write the disk refuses names the folder and what to do."""
    from flightc.compiler.spool import ImageSpool, append_at
    from flightc.errors import UnsupportedError

    spool, ref = ImageSpool(), bytearray()
    for image in (spool, ref):
        append_at(image, 0, b"ab")
        append_at(image, 4096 + 3, np.arange(5, dtype=np.uint8).tobytes())
    assert len(spool) == len(ref) == 4096 + 8 and spool.view()[:] == bytes(ref)
    with pytest.raises(ValueError, match="grows at its end"):
        spool.append_at(10, b"x")

    class FullDisk:
        def seek(self, at):
            pass

        def write(self, data):
            raise OSError(28, "No space left on device")

    monkeypatch.setattr(spool, "_file", FullDisk())
    with pytest.raises(UnsupportedError, match="TMPDIR"):
        spool.append_at(len(spool), b"more")
