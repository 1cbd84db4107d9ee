"""MV.w_stream (ISA 1.4) in the functional simulator: a tile streamed from its stream image in memory gives the same
results as the same rows loaded into the WGT buffer, on one master (tiny) and on a master per channel (hbm4); bad
streamed MVs are refused by name."""
from __future__ import annotations

import numpy as np
import pytest

from flightc.compress.formats import WeightFormat
from flightc import numerics as nm
from flightc.compress.stream import image_cols, image_rows, record_columns, stream_image
from flightc.config import PRESETS, Buffer
from flightc.errors import ProgramError, UnsupportedError
from flightc.isa.codec import encode_program, make
from flightc.isa.footprint import footprint, store_rows, store_target, stream_shape, stripe_layout
from flightc.isa.table import OutMode, SysOp, Unit
from flightc.sim.functional import Machine
from flightc.sim.perf.timing import instruction_work
from flightc.sim.rtl.random_programs import random_weights

OUT = 1 << 16  # channel 0: activations from 0, results from here


def _mv(fmt: WeightFormat, n: int, k: int, **weights):
    return make("MV", n=n, k=k, a_addr=0, w_bits=fmt.bits_code, sparsity=fmt.sparsity, group_log2=fmt.group_log2,
                out_mode=OutMode.ACC32, out_addr=0, wait=1 << Unit.LD, release=1 << Unit.ST, **weights)


def _run(cfg, program, images: dict[int, bytes]) -> Machine:
    m = Machine(cfg, {ch: 1 << 20 for ch in range(cfg.mem_channels)})
    for ch, data in images.items():
        m.write_hbm(ch, 0, data)
    m.run(encode_program(program))
    return m


def _both(cfg_name: str, fmt: WeightFormat, n: int, k: int, seed: int = 0):
    """(results of the buffered MV, results of the streamed MV, the streamed MV)."""
    cfg = PRESETS[cfg_name]
    rng = np.random.default_rng(seed)
    packed = random_weights(rng, fmt, n, k)
    acts = rng.integers(0, 256, k).astype(np.uint8).tobytes()
    end = make("SYS", op=SysOp.END)
    store = make("ST", buf=Buffer.ACC, buf_addr=0, channel=0, hbm_addr=OUT, rows=1, row_bytes=4 * n, wait=1 << Unit.MPE)
    load_a = make("LD", buf=Buffer.ACT, buf_addr=0, channel=0, hbm_addr=0, rows=1, row_bytes=k, release=1 << Unit.MPE)
    # buffered: the packed rows from channel 1 into WGT
    rb = fmt.row_bytes(k)
    buffered = [make("LD", buf=Buffer.WGT, buf_addr=0, channel=1, hbm_addr=0, rows=n, row_bytes=rb, hbm_stride=rb,
                     buf_stride=rb), load_a, _mv(fmt, n, k, w_buf=Buffer.WGT, w_addr=0, w_stride=rb), store, end]
    m = _run(cfg, buffered, {0: acts, 1: packed.tobytes()})
    want = m.read_hbm(0, OUT, 4 * n)
    # streamed: the tile's stream image striped over every channel at 4 KiB
    mv = _mv(fmt, n, k, w_stream=1, w_channel=0, w_hbm_addr=4096, w_stripe=cfg.mem_channels)
    shape = stream_shape(cfg, mv)
    image = np.frombuffer(stream_image(packed, shape), np.uint8)
    images = {ch: bytearray(1 << 20) for ch in range(cfg.mem_channels)}
    images[0][:k] = acts
    u = np.arange(image.size) // shape.unit
    for ch, base, nb in stripe_layout(0, 4096, image.size, cfg.mem_channels, shape.unit):
        mine = image[(u % cfg.mem_channels) == ch]
        images[ch][base:base + nb] = mine.tobytes()
    m = _run(cfg, [load_a, mv, store, end], {ch: bytes(v) for ch, v in images.items()})
    return want, m.read_hbm(0, OUT, 4 * n), mv


@pytest.mark.parametrize("cfg_name", ["tiny", "hbm4"])
@pytest.mark.parametrize("fmt", [WeightFormat(4, group=32), WeightFormat(4, 8, 16, 16), WeightFormat(8),
                                 WeightFormat(3, 2, 4, 64)], ids=lambda f: f.label())
def test_a_streamed_mv_equals_the_buffered_one(cfg_name, fmt):
    want, got, _ = _both(cfg_name, fmt, n=37, k=256)
    assert got == want


def test_a_streamed_mv_reads_its_stream_image_from_every_channel():
    cfg = PRESETS["hbm4"]
    _, _, mv = _both("hbm4", WeightFormat(4, group=32), n=64, k=512)
    reads, _ = footprint(mv, cfg)
    channels = sorted({a.space[1] for a in reads if a.space[0] == "hbm"})
    assert channels == [0, 1, 2, 3]
    assert sum(a.width for a in reads if a.space[0] == "hbm") == stream_shape(cfg, mv).nbytes
    with pytest.raises(ValueError, match="needs the hardware config"):
        footprint(mv)


def test_bad_streamed_mvs_are_refused_by_name():
    cfg = PRESETS["hbm4"]
    fmt = WeightFormat(4, group=32)
    with pytest.raises(ProgramError, match="cover a power of two of whole masters"):
        stream_shape(cfg, _mv(fmt, 8, 256, w_stream=1, w_channel=1, w_stripe=3))
    with pytest.raises(ProgramError, match="multiple of stripe_bytes"):
        stream_shape(cfg, _mv(fmt, 8, 256, w_stream=1, w_stripe=4, w_hbm_addr=64))
    with pytest.raises(ProgramError, match="exceeds the 4096 activations"):
        stream_shape(cfg, _mv(fmt, 8, 8192, w_stream=1, w_stripe=4))
    with pytest.raises(ProgramError, match="takes no buffer operand"):
        stream_shape(cfg, _mv(fmt, 8, 256, w_stream=1, w_stripe=4, w_buf=Buffer.WGT))
    with pytest.raises(ProgramError, match="not a multiple of the lane group's 64 columns"):
        stream_shape(cfg, _mv(fmt, 8, 96, w_stream=1, w_stripe=4))



def test_the_model_charges_a_streamed_mv_its_tile_on_every_channel():
    cfg = PRESETS["hbm4"]
    mv = _mv(WeightFormat(4, group=32), 64, 512, w_stream=1, w_stripe=4)
    work = instruction_work(cfg, mv)
    assert work.hbm_bytes == stream_shape(cfg, mv).nbytes
    assert sorted(ch for ch, _ in work.shares) == [0, 1, 2, 3]
    assert work.cycles > work.hbm_bytes / (4 * cfg.axi_data_bytes)  # no faster than four masters' beats


@pytest.mark.parametrize("cfg_name,bits,k,stripe", [("tiny", 8, 64, 4), ("tiny", 4, 128, 4), ("hbm4", 8, 128, 4),
                                                    ("hbm4", 4, 64, 2), ("u280", 8, 128, 8), ("hbm4", 8, 128, 1)])
def test_image_rows_written_one_at_a_time_lay_out_the_stream_image(cfg_name, bits, k, stripe):
    """ST.img writes a K cache's stream image a position at a time: row by row, every byte lands where
    stream_image puts it, on one master of four channels (tiny) and on a master per channel (hbm4, u280)."""
    cfg = PRESETS[cfg_name]
    fmt = WeightFormat(bits, 16, 16)
    rows = 2 * 2 * stripe * 3 + 1  # three rounds of row pairs over every group, then one row more
    rng = np.random.default_rng(bits + k)
    q = rng.integers(-8 if bits == 4 else -128, 8 if bits == 4 else 128, (rows, k)).astype(np.int8)
    packed = np.frombuffer(nm.pack_int4(q) if bits == 4 else q.tobytes(), np.uint8).reshape(rows, -1)
    mv = _mv(fmt, rows, k, w_stream=1, w_channel=0, w_hbm_addr=0, w_stripe=stripe)
    shape = stream_shape(cfg, mv)
    want = _image_by_channel(packed, shape, stripe)
    fields = image_rows(shape)
    got = {ch: bytearray(shape.nbytes) for ch in range(stripe)}
    for t in range(rows):
        st = make("ST", buf=Buffer.ACT, buf_addr=0, channel=0, hbm_addr=0, rows=fields.pieces,
                  row_bytes=fields.piece_bytes, hbm_stride=fields.piece_stride, buf_stride=fields.piece_columns,
                  pack4=int(bits == 4), img=1, img_row=t, img_groups_log2=fields.groups_log2,
                  img_pair_log2=fields.pair_log2, img_half_log2=fields.half_log2)
        ch, addr = store_target(cfg, st)
        row = packed[t]
        for p in range(fields.pieces):
            got[ch][addr + p * fields.piece_stride:addr + p * fields.piece_stride + fields.piece_bytes] = \
                row[p * fields.piece_bytes:(p + 1) * fields.piece_bytes].tobytes()
    assert got == want


def test_image_rows_refuse_what_a_row_cannot_be_written_alone():
    cfg = PRESETS["hbm4"]
    grouped = _mv(WeightFormat(4, 16, 16, 32), 8, 128, w_stream=1, w_channel=0, w_hbm_addr=0, w_stripe=4)
    with pytest.raises(UnsupportedError, match="dense, ungrouped INT8 or INT4"):
        image_rows(stream_shape(cfg, grouped))
    st = make("ST", buf=Buffer.ACT, buf_addr=0, channel=0, hbm_addr=0, rows=3, row_bytes=64, hbm_stride=128, img=1,
              img_row=0, img_groups_log2=2, img_pair_log2=8, img_half_log2=6)
    assert store_target(cfg, st.replace(img_row=7)) == (3, 64)  # pair 3: group 3's first record, second row
    with pytest.raises(ProgramError, match="run past the 1024-byte unit"):
        store_target(cfg, st.replace(rows=9))


@pytest.mark.parametrize("cfg_name,rows,stripe", [("tiny", 8, 4), ("hbm4", 16, 4), ("u280", 64, 8), ("hbm4", 6, 2)])
def test_image_columns_written_one_at_a_time_lay_out_the_stream_image(cfg_name, rows, stripe):
    """ST.img_col writes a transposed V cache's stream image a position (a column, a byte a row) at a time: column
    by column, every byte lands where stream_image puts it."""
    cfg = PRESETS[cfg_name]
    fmt = WeightFormat(8, 16, 16)
    k = record_columns(3 * cfg.lane_slots, cfg.lane_slots)  # records a power of two of chunks: 4 chunks
    assert k == 4 * cfg.lane_slots
    rng = np.random.default_rng(rows)
    q = rng.integers(-128, 128, (rows, k)).astype(np.int8)
    packed = np.frombuffer(q.tobytes(), np.uint8).reshape(rows, -1)
    mv = _mv(fmt, rows, k, w_stream=1, w_channel=0, w_hbm_addr=0, w_stripe=stripe)
    shape = stream_shape(cfg, mv)
    want = _image_by_channel(packed, shape, stripe)
    f = image_cols(shape)
    got = {ch: bytearray(shape.nbytes) for ch in range(stripe)}
    for t in range(k):
        st = make("ST", buf=Buffer.ACT, buf_addr=0, channel=0, hbm_addr=0, rows=rows, row_bytes=1, buf_stride=1,
                  img=1, img_col=1, img_row=t, img_groups_log2=f.groups_log2, img_pair_log2=f.pair_log2,
                  img_half_log2=f.half_log2, img_stride_log2=f.piece_stride.bit_length() - 1)
        for r, (ch, addr) in enumerate(store_rows(cfg, st)):
            got[ch][addr] = int(packed[r, t])
    assert got == want
    with pytest.raises(UnsupportedError, match="INT8 rows are written a column"):
        image_cols(stream_shape(cfg, _mv(WeightFormat(4, 16, 16), rows, k, w_stream=1, w_channel=0, w_hbm_addr=0,
                                         w_stripe=stripe)))


def test_a_streamed_mv_of_dense_rows_takes_any_k():
    """K past the last whole chunk: the tile holds whole chunks, the columns past K multiply zero activations (the
    functional simulator's results equal the same rows' buffered MV over K columns)."""
    for k in (1, 5, 64 + 7):
        for cfg_name in ("tiny", "hbm4"):
            cfg = PRESETS[cfg_name]
            fmt = WeightFormat(8, 16, 16)
            rng = np.random.default_rng(k)
            n = 6
            kk = -(-k // cfg.lane_slots) * cfg.lane_slots
            w = rng.integers(-128, 128, (n, kk)).astype(np.int8)  # the columns past K are not zero in the image
            acts = rng.integers(-128, 128, kk).astype(np.int8)
            mv = _mv(fmt, n, k, w_stream=1, w_channel=0, w_hbm_addr=4096, w_stripe=cfg.mem_channels)
            shape = stream_shape(cfg, mv)
            assert shape.k == kk
            image = np.frombuffer(stream_image(np.frombuffer(w.tobytes(), np.uint8).reshape(n, -1), shape), np.uint8)
            images = {ch: bytearray(1 << 20) for ch in range(cfg.mem_channels)}
            images[0][:kk] = acts.tobytes()
            u = np.arange(image.size) // shape.unit
            for ch, base, nb in stripe_layout(0, 4096, image.size, cfg.mem_channels, shape.unit):
                images[ch][base:base + nb] = image[(u % cfg.mem_channels) == ch].tobytes()
            load_a = make("LD", buf=Buffer.ACT, buf_addr=0, channel=0, hbm_addr=0, rows=1, row_bytes=kk,
                          release=1 << Unit.MPE)
            store = make("ST", buf=Buffer.ACC, buf_addr=0, channel=0, hbm_addr=OUT, rows=1, row_bytes=4 * n,
                         wait=1 << Unit.MPE)
            m = _run(cfg, [load_a, mv, store, make("SYS", op=SysOp.END)], images)
            got = np.frombuffer(m.read_hbm(0, OUT, 4 * n), "<i4")
            want = w[:, :k].astype(np.int64) @ acts[:k].astype(np.int64)
            assert got.tolist() == want.tolist(), (cfg_name, k)


def _image_by_channel(packed: np.ndarray, shape, stripe: int) -> dict[int, bytearray]:
    """The bytes each channel holds of the stream image of ``packed`` striped from channel 0, address 0."""
    image = np.frombuffer(stream_image(packed, shape), np.uint8)
    out = {ch: bytearray(shape.nbytes) for ch in range(stripe)}
    u = np.arange(image.size) // shape.unit
    for ch, base, nb in stripe_layout(0, 0, image.size, stripe, shape.unit):
        out[ch][base:base + nb] = image[(u % stripe) == ch].tobytes()
    return out
