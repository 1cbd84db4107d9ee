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
        extent = {int(k): v for k, v in bundle.manifest["memory_map"]["extent"].items()}
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
    assert bundle.manifest["plan"]["kv_bits"] == kv_bits
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
