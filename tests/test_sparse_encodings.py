"""How an N:M weight stores its kept positions (ISA 1.10): positions, a bitmask or a combinatorial rank a block. The
encodings are lossless (the dequantized weights are equal), their bytes are what the datapath facts give, the
compiler picks the one of the config's that stores a layer in the fewest bytes, and a compiled model is bit-exact
on the functional simulator against the integer reference in each."""
from __future__ import annotations

import math

import numpy as np
import pytest

from flightc.compress.formats import SparseEncoding, WeightFormat, cheapest_encoding
from flightc.compress.packing import pack_weight, unpack_rows
from flightc.compress.plan import CompressionPlan
from flightc.compress.quantize import QuantWeight, quantize_rtn
from flightc.config import PRESETS
from flightc.errors import ProgramError, UnsupportedError

P, B, R = SparseEncoding.POSITIONS, SparseEncoding.BITMASK, SparseEncoding.RANK
ALL = PRESETS["tiny"].replace(sparse_encodings=(P, B, R))


@pytest.mark.parametrize("spec", ["w4g128s8:16", "w4g32s4:16", "w3g64s2:16", "w2g16s2:4", "w8s8:16", "w4s2:16"])
def test_every_encoding_dequantizes_to_the_same_weights(spec):
    """Lossless: each encoding's packed rows dequantize to the quantized weights themselves (q x multiplier where
    kept, zero elsewhere), for a K that is not a whole number of blocks and groups."""
    rng = np.random.default_rng(7)
    w = rng.standard_normal((5, 300))
    base = WeightFormat.parse(spec)
    qw = quantize_rtn(w, base)
    columns = base.whole(300)
    q = np.pad(qw.q.astype(np.int64), ((0, 0), (0, columns - 300)))
    gs = np.repeat(np.asarray(qw.gs, np.int64), base.group, axis=1)[:, :columns] if base.group else 1
    want = q * np.pad(gs, ((0, 0), (0, columns - np.shape(gs)[1]))) if base.group else q
    for enc in (P, B, R):
        fmt = base.with_encoding(enc)
        packed = pack_weight(QuantWeight(fmt, qw.q, qw.gs, qw.row_scale, qw.keep))
        assert packed.shape[1] == fmt.row_bytes(columns)
        assert np.array_equal(unpack_rows(packed, fmt, columns).astype(np.int64), want), enc


def test_row_bytes_are_the_datapath_facts():
    """Bits per weight position at W4 (../shared/reference/datapath-facts.md): positions 4 + 4 at 8:16, a bitmask
    4 + 3 (a quarter fewer bytes), a rank 4 + 2.875; at 2:16 the bitmask costs more than positions, the rank less."""
    k = 4096

    def meta(spec: str, enc: SparseEncoding) -> int:
        values, positions, scales = WeightFormat.parse(spec).with_encoding(enc).row_parts(k)
        assert (values, scales) == (k * int(spec.split("s")[1].split(":")[0]) // 16 * 4 // 8, k // 128)
        return positions

    # 4-bit positions: N of every 16 columns; a bitmask: a bit a column; a rank: 14, 11 or 7 bits every 16 columns
    assert [meta("w4g128s8:16", e) for e in (P, B, R)] == [k // 4, k // 8, k // 16 * 14 // 8]
    assert [meta("w4g128s4:16", e) for e in (P, B, R)] == [k // 8, k // 8, (k // 16 * 11 + 7) // 8]
    assert [meta("w4g128s2:16", e) for e in (P, B, R)] == [k // 16, k // 8, (k // 16 * 7 + 7) // 8]
    # a rank takes the fewest bits that number the C(16, N) sets
    assert [WeightFormat(4, n, 16, encoding=R).block_meta_bits for n in (8, 4, 2)] == \
        [(math.comb(16, n) - 1).bit_length() for n in (8, 4, 2)] == [14, 11, 7]


def test_the_format_grammar_names_the_encoding():
    for text, enc, label in [("w4g128s8:16", P, "W4 g128 8:16"), ("w4g128s8:16p", P, "W4 g128 8:16"),
                             ("w4g128s8:16m", B, "W4 g128 8:16m"), ("w4g128s8:16r", R, "W4 g128 8:16r")]:
        fmt = WeightFormat.parse(text)
        assert (fmt.encoding, fmt.label()) == (enc, label)
        assert WeightFormat.from_label(label) == fmt
    assert WeightFormat.parse("w4g128s8:16", unspecified=None).encoding is None
    assert CompressionPlan.parse("w4g128s8:16").default.encoding is None  # the compiler's choice
    assert CompressionPlan.parse("w4g128s8:16m").default.encoding is B
    assert CompressionPlan.parse("w4g128").default.encoding is P  # dense: nothing to choose
    with pytest.raises(UnsupportedError, match="p: positions, m: bitmask, r: rank"):
        WeightFormat.parse("w4g128s8:16x")
    with pytest.raises(UnsupportedError, match="dense weights store no positions"):
        WeightFormat(4, 16, 16, 128, B)
    with pytest.raises(ValueError, match="not chosen"):
        WeightFormat.parse("w4s8:16", unspecified=None).row_bytes(64)


@pytest.mark.parametrize("encodings, spec, want", [
    ((P, B, R), "w4g128s8:16", R), ((P, B), "w4g128s8:16", B), ((P, B), "w4g128s4:16", P),  # a tie: the simpler
    ((P, B), "w4g128s2:16", P), ((B,), "w4g128s2:16", B), ((P, B, R), "w4g128s2:16", R), ((P,), "w4s8:16", P),
    ((P, B), "w4g128s8:16p", P),  # named in the plan: kept
])
def test_the_fewest_bytes_of_a_packed_row_among_the_configs_encodings(encodings, spec, want):
    cfg = PRESETS["tiny"].replace(sparse_encodings=encodings)
    assert cheapest_encoding(WeightFormat.parse(spec, unspecified=None), cfg, 4096).encoding is want


@pytest.mark.parametrize("k, spec, want, costs", [
    # tiny streams through 8-byte beats, a block of 512 columns a beat of multipliers (2 rows x 4 groups) and then
    # its 8 chunks, each padded to 16 bytes: positions' 64 bytes, a bitmask's 48, a rank's 46 to 48 (a tie with the
    # bitmask: the simpler decoder). Per row: 8 blocks x (8 + 8 chunks x 64 or 48) / 2
    (4096, "w4g128s8:16", B, {P: 2080, B: 1568, R: 1568}),
    # 2:16: positions' 16-byte chunks, a bitmask's 24 bytes padded to 32; 7-bit ranks fill no whole bytes of a chunk
    (4096, "w4g128s2:16", P, {P: 544, B: 1056, R: None}),
    # K past a lane group's activations (4 KiB): through the WGT buffer, packed rows (2,048 bytes of values and 64
    # multipliers, and 4,096 positions of 4 bits, 8,192 mask bits or 512 ranks of 14 bits)
    (8192, "w4g128s8:16", R, {P: 4160, B: 3136, R: 3008}),
])
def test_the_compiler_counts_the_bytes_as_it_lays_the_layer_out(k, spec, want, costs):
    from flightc.compiler.memory import chosen_format, row_cost, stream_plan

    cfg = PRESETS["tiny"].replace(sparse_encodings=(P, B, R))
    fmt = WeightFormat.parse(spec, unspecified=None)
    assert chosen_format(fmt, cfg, k).encoding is want
    for e, c in costs.items():
        if c is None:
            assert stream_plan(cfg, 0, fmt.with_encoding(e), k)[0] is None
        else:
            assert row_cost(cfg, fmt.with_encoding(e), k) == c


def test_a_format_the_config_does_not_decode_is_refused_naming_the_layer():
    with pytest.raises(UnsupportedError, match=r"layer L0.q_proj: sparse positions as BITMASK; preset 'tiny' decodes "
                                               r"\['POSITIONS'\]"):
        WeightFormat.parse("w4g32s8:16m").check(PRESETS["tiny"], "L0.q_proj", 64)


def test_a_mask_or_rank_that_keeps_other_than_n_is_refused():
    rng = np.random.default_rng(1)
    fmt = WeightFormat.parse("w4s8:16m")
    qw = quantize_rtn(rng.standard_normal((2, 32)), fmt)
    packed = pack_weight(qw)
    values = fmt.row_parts(32)[0]
    bad = packed.copy()
    bad[1, values + 2] ^= 1  # row 1, block 1: one more (or one fewer) position kept
    with pytest.raises(ProgramError, match=r"weight row 1, block 1: the sparse bitmask keeps (7|9) of 16"):
        unpack_rows(bad, fmt, 32)
    fmt = fmt.with_encoding(R)
    packed = pack_weight(QuantWeight(fmt, qw.q, qw.gs, qw.row_scale, qw.keep))
    bad = packed.copy()
    bad[0, values:values + 2] = 0xFF  # row 0, block 0: rank 16383, past C(16, 8) = 12870
    with pytest.raises(ProgramError, match=r"weight row 0, block 0: sparse rank 16383 is past the 12870 sets"):
        unpack_rows(bad, fmt, 32)


@pytest.mark.parametrize("encodings", [(B,), (R,), (P, B, R)])
@pytest.mark.parametrize("model, hw", [("tiny-llama", "tiny"), ("tiny-llama-hd64", "hbm4")])
def test_compiled_models_are_bit_exact_in_every_encoding(encodings, model, hw):
    """A small model compiled with 8:16 and 2:16 layers for a config that decodes ``encodings`` (on tiny through the
    MPE's buffers, on hbm4 streamed into the lane groups): each layer in the encoding the compiler picked, and 8
    greedy tokens on the functional simulator equal the integer reference's, logits byte for byte."""
    from conftest import MAX_LEN, PROMPT, torch_model
    from flightc.compiler.memory import chosen_format
    from flightc.compiler.pipeline import compile_model
    from flightc.reference.integer import IntegerModel, greedy
    from flightc.runtime.session import Session

    cfg = PRESETS[hw].replace(sparse_encodings=encodings)
    plan = CompressionPlan.parse("w4g32s8:16", ["*.down_proj=w4g32s2:16"])
    c = compile_model(torch_model(model), cfg, plan, max_len=MAX_LEN, max_prefill=len(PROMPT),
                      prefill_lengths=[len(PROMPT)])
    chosen = {c.integer.node(n)["qweight"].fmt for n in c.integer.linears()}
    want = {chosen_format(WeightFormat.parse(s, unspecified=None), cfg, 64) for s in ("w4g32s8:16", "w4g32s2:16")}
    assert want <= chosen and {f.encoding for f in chosen if f.sparse} <= set(encodings)
    ref_tokens, ref_logits = greedy(IntegerModel(c.integer, MAX_LEN), PROMPT, 8)
    got = list(Session(c.bundle).generate(PROMPT, 8))
    assert [t for t, _ in got] == ref_tokens
    assert all(logits.tobytes() == ref.tobytes() for (_, logits), ref in zip(got, ref_logits))


def test_the_rtl_generator_refuses_an_encoding_it_does_not_build():
    from flightc.errors import ConfigError
    from flightc.hw.core import check_rtl_config

    check_rtl_config(PRESETS["tiny"].replace(sparse_encodings=(P, B)))
    check_rtl_config(PRESETS["tiny"].replace(sparse_encodings=(B,)))
    with pytest.raises(ConfigError, match=r"sparse_encodings \['RANK'\]: the lane groups and the DSP chains decode "
                                          r"\['POSITIONS', 'BITMASK'\] \(a rank needs an unranking table"):
        check_rtl_config(PRESETS["tiny"].replace(sparse_encodings=(P, R)))


def _decode_step(model, cfg, plan: str, context: int):
    """A decode step at ``context`` of ``model``'s programs (no weights) compiled for ``cfg``: (bytes, seconds), as
    the performance model counts them, and the encodings its sparse layers got. Measured on one- and two-layer
    copies and extrapolated to the model's layers, as the DSE does (bytes exactly, times within 0.1%:
    tests/test_dse.py checks it against a full compile)."""
    from flightc.compiler.pipeline import compile_model
    from flightc.dse.evaluate import layer_copies, resolve_model
    from flightc.sim.perf.workload import WorkloadModel

    _, layers, _ = resolve_model(model)
    measured, encodings = [], set()
    with layer_copies(model, (1, 2)) as copies:
        for copy in copies:
            c = compile_model(copy, cfg, CompressionPlan.parse(plan), max_len=context + 1, max_prefill=1,
                              prefill_lengths=[1], random_weights=0, weights=False)
            wm = WorkloadModel(c.bundle)
            measured.append((wm.token_bytes(context).total, wm.step(1, context).seconds))
            encodings |= {f.encoding for f in (c.integer.node(n)["qweight"].fmt for n in c.integer.linears())
                          if f.sparse}
    (b1, s1), (b2, s2) = measured
    return b1 + (layers - 1) * (b2 - b1), s1 + (layers - 1) * (s2 - s1), encodings


def test_a_bitmask_8_16_decode_step_streams_at_most_80_percent_of_dense_w4():
    """LLaMA2-7B on u280 with 8:16 and bitmasks allowed, context 512, one command for both plans: every byte the
    performance model counts for a decode step at W4 g128 8:16 (the compiler picks the bitmask: 3 bits a weight,
    chunks of 48 bytes back to back in the stream) is at most 80% of dense W4's, and the step is no slower (u280's
    lane groups take 64 columns a cycle and its output stage a result a cycle in either: docs/compression.md)."""
    from pathlib import Path

    configs = Path(__file__).resolve().parents[1] / "flightc" / "models" / "configs"
    cfg = PRESETS["u280"].replace(sparse_n=(8, 16), sparse_encodings=(P, B))  # (the preset decodes no N:M)
    dense, dense_s, _ = _decode_step(configs / "llama2-7b", cfg, "w4g128", 512)
    sparse, sparse_s, encodings = _decode_step(configs / "llama2-7b", cfg, "w4g128s8:16", 512)
    print(f"dense W4 {dense / 1e6:,.0f} MB {1 / dense_s:.1f} tokens/s; 8:16 {sparse / 1e6:,.0f} MB "
          f"{1 / sparse_s:.1f} tokens/s")
    assert encodings == {B}
    assert sparse <= 0.80 * dense
    assert sparse_s <= dense_s


def test_a_pattern_the_config_does_not_decode_is_pruned_and_stored_dense(caplog, capsys):
    """On a config whose lane groups decode no N:M (u280's since it has three cores), an 8:16 plan is pruned 8:16 and
    stored as dense W4 with the pruned weights zero: said in a warning naming the layers and in the formats table
    `flightc info` prints, every layer dense with at most half its weights non-zero per block of 16, and 8 greedy
    tokens on the functional simulator equal the integer reference's, logits byte for byte."""
    import logging

    from conftest import MAX_LEN, PROMPT, torch_model
    from flightc.cli.render import print_layers
    from flightc.compiler.pipeline import compile_model
    from flightc.reference.integer import IntegerModel, greedy
    from flightc.runtime.session import Session

    cfg = PRESETS["hbm4"].replace(sparse_n=(16,), sparse_encodings=(P,))
    with caplog.at_level(logging.WARNING, logger="flightc.compiler.compress"):
        c = compile_model(torch_model("tiny-llama-hd64"), cfg, CompressionPlan.parse("w4g32s8:16"), max_len=MAX_LEN,
                          max_prefill=len(PROMPT), prefill_lengths=[len(PROMPT)], keep_integer=True)
    assert "decodes no 8:16 sparse weights" in caplog.text and "stored dense" in caplog.text
    for name in [n for n in c.integer.linears() if n != "lm_head"]:  # (the LM head keeps the plan's own format)
        qw = c.integer.node(name)["qweight"]
        assert qw.fmt == WeightFormat(4, group=32) and qw.keep is None
        blocks = (qw.q != 0).reshape(qw.shape[0], -1, 16).sum(axis=2)
        assert blocks.max() <= 8 and blocks.mean() > 7  # pruned 8:16 (a kept weight may round to zero)
    ref_tokens, ref_logits = greedy(IntegerModel(c.integer, MAX_LEN), PROMPT, 8)
    got = list(Session(c.bundle).generate(PROMPT, 8))
    assert [t for t, _ in got] == ref_tokens
    assert all(logits.tobytes() == ref.tobytes() for (_, logits), ref in zip(got, ref_logits))
    print_layers(c.bundle.manifest)  # what `flightc info` and the compile print
    assert "none: pruned 8:16 as planned, stored" in capsys.readouterr().out
    with pytest.raises(UnsupportedError, match="L0.q_proj: 3:16"):  # a pattern the ISA does not name stays refused
        WeightFormat(bits=4, n=3, m=16).stored_for(cfg).check(cfg, "L0.q_proj", 128)
