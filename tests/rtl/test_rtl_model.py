"""A compiled model's bundle on the RTL: every memory byte equals the functional simulator's after each program."""
from __future__ import annotations

import numpy as np
import pytest

from flightc.runtime.backends import open_backend
from flightc.sim.perf.calibration import PROMPT, calibration_bundle


@pytest.mark.parametrize("kv_bits", [8, 4])
def test_small_model_prefill_and_decode_are_byte_identical(kv_bits):
    bundle = calibration_bundle(kv_bits=kv_bits)  # 1 layer, hidden 64: W4 g32 8:16, W8 down_proj, W2 g16 2:4 v_proj
    assert bundle.manifest["plan"]["kv_bits"] == kv_bits
    fsim, rtl = open_backend("fsim", bundle), open_backend("rtl", bundle)
    try:
        extent = {int(k): v for k, v in bundle.manifest["memory_map"]["extent"].items()}
        ids = bundle.region("io.ids")
        steps = [("prefill", len(PROMPT), PROMPT), ("decode", 4, [11]), ("decode", 5, [200])]
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
            assert cyc["cycles"] >= max(busy.values()) and cyc["busy_mv"] > 0
    finally:
        rtl.close()
