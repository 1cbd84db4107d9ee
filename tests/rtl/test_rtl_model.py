"""A compiled model's bundle on the RTL: every memory byte equals the functional simulator's after each program."""
from __future__ import annotations

import numpy as np
import pytest

from conftest import compiled
from flightc.isa.codec import decode_program
from flightc.isa.table import MiscOp, Opcode
from flightc.runtime.backends import open_backend
from flightc.sim.perf.calibration import PROMPT, calibration_bundle


def run_steps(bundle, steps) -> list[dict]:
    """Each (kind, tokens, ids) program on fsim and on the RTL, asserting every channel's bytes equal after each:
    the RTL's cycle counters of each."""
    fsim, rtl = open_backend("fsim", bundle), open_backend("rtl", bundle)
    out = []
    try:
        extent = {int(k): v for k, v in bundle.manifest.memory_map["extent"].items()}
        ids = bundle.region("io.ids")
        for kind, n, tokens in steps:
            for backend in (fsim, rtl):
                backend.write(ids["channel"], ids["addr"], np.asarray(tokens, "<i4").tobytes())
            program = bundle.program(kind, n)
            fsim.run(program)
            counters = rtl.run(program)
            for ch, nbytes in extent.items():
                assert rtl.read(ch, 0, nbytes) == fsim.read(ch, 0, nbytes), f"{kind}/{n}: channel {ch} differs"
            cyc = counters.cycles
            busy = {k: v for k, v in cyc.items() if k.startswith("busy_") and v}
            print(f"{kind}/{n}: {cyc['cycles']:,} cycles; busy per class {busy}")
            out.append(cyc)
    finally:
        rtl.close()
    return out


@pytest.mark.parametrize("kv_bits", [8, 4])
def test_small_model_prefill_and_decode_are_byte_identical(kv_bits):
    bundle = calibration_bundle(kv_bits=kv_bits)  # 1 layer, hidden 64: W4 g32 8:16, W8 down_proj, W2 g16 2:4 v_proj
    assert bundle.manifest.plan["kv_bits"] == kv_bits
    for cyc in run_steps(bundle, [("prefill", len(PROMPT), PROMPT), ("decode", 4, [11]), ("decode", 5, [200])]):
        busy = [v for k, v in cyc.items() if k.startswith("busy_") and v]
        assert cyc["cycles"] >= max(busy) and cyc["busy_mv"] > 0


def test_heads_pipelined_over_streamed_keys_and_values_are_byte_identical():
    """Two 64-wide heads on hbm4's four masters: K and V streamed from their images, the second head's Q.K^T
    under the first's softmax (two score buffers), the stores interleaved with the heads."""
    bundle = compiled("tiny-llama-hd64", "w4g32", (), "hbm4").bundle
    decode = decode_program(bundle.program("decode", 8)[0])
    assert len({i.src_addr for i in decode if i.opcode is Opcode.MISC and i.op == MiscOp.SOFTMAX}) == 2
    assert any(i.opcode is Opcode.ST and i.img_col for i in decode)
    run_steps(bundle, [("prefill", 8, [1, 5, 9, 3, 7, 2, 8, 4]), ("decode", 8, [11]), ("decode", 9, [200])])


def test_odd_shapes_padded_to_whole_chunks_are_byte_identical():
    """Dimensions that are no multiple of 16: hidden 68 (W4 g32 8:16 rows end in a partial group and a partial block
    of 4 real columns, so padded positions are kept), intermediate 40 (2:4 g16 down_proj, a partial group), a
    vocabulary of 301. The packed rows run to whole lane-group chunks of zero weights, and the activations they meet
    past the true columns change nothing."""
    from flightc.compiler.pipeline import compile_model
    from flightc.compress.plan import CompressionPlan
    from flightc.models.seeded import random_model

    model = random_model("llama", 0, num_hidden_layers=1, hidden_size=68, intermediate_size=40, num_attention_heads=2,
                         num_key_value_heads=1, head_dim=64, vocab_size=301)
    plan = CompressionPlan.parse("w4g32s8:16", ["*.down_proj=w2g16s2:4", "lm_head=w8"])
    bundle = compile_model(model, "tiny", plan, max_len=12, max_prefill=8, prefill_lengths=[8]).bundle
    mv = next(i for i in decode_program(bundle.program("decode", 8)[0]) if i.opcode is Opcode.MV and i.w_stream)
    assert mv.k == 128  # hidden 68 rounded up to the lane group's 64 columns
    run_steps(bundle, [("prefill", 8, [1, 5, 9, 3, 7, 2, 8, 4]), ("decode", 8, [11]), ("decode", 9, [300])])
