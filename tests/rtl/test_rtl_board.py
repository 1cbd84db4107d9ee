"""The pynq backend on the RTL-backed virtual board: the generated Verilog under Verilator behind pynq's
remote-device protocol. Logits, memory and cycle counters must equal the simulators' bit for bit."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/boards.py

from boards import virtual_board, virtual_overlay  # noqa: E402
from flightc.runtime.counters import CycleSource  # noqa: E402
from flightc.runtime.session import Session  # noqa: E402
from flightc.sim.perf.calibration import PROMPT, calibration_bundle  # noqa: E402

NEW = 3


def _generate(session: Session) -> tuple[list[int], list[bytes], dict]:
    tokens, logits = [], []
    for t, z in session.generate(PROMPT, NEW):
        tokens.append(t)
        logits.append(z.tobytes())
    return tokens, logits, session.counters


def test_rtl_board_is_byte_identical_to_fsim_and_counts_the_rtl_cycles(tmp_path):
    bundle = calibration_bundle()  # tiny preset, 1 layer, hidden 64, W4/W8/W2 mixed
    overlay = virtual_overlay(tmp_path, bundle.config)
    fsim = Session(bundle, backend="fsim")
    want_tokens, want_logits, _ = _generate(fsim)
    rtl = Session(bundle, backend="rtl")
    try:
        _, rtl_logits, rtl_counters = _generate(rtl)
    finally:
        rtl.close()
    assert rtl_logits == want_logits
    with virtual_board("127.0.0.21", "rtl"):
        board = Session(bundle, backend="pynq", overlay=overlay, board="127.0.0.21")
        tokens, logits, counters = _generate(board)
        assert counters.cycle_source is CycleSource.RTL and counters.cycles_where == "virtual board under Verilator"
        extent = bundle.manifest.memory_map["extent"]
        for ch, nbytes in extent.items():
            assert board.device.read(int(ch), 0, nbytes) == fsim.device.read(int(ch), 0, nbytes), f"channel {ch}"
        board.close()
    assert tokens == want_tokens and logits == want_logits
    assert counters.cycles == rtl_counters.cycles  # the same RTL, the same cycles, wherever its buffers sit
    assert counters.cycles["cycles"] > 0
    print(f"{len(board.steps)} steps on the RTL board: {counters.cycles['cycles']:,} cycles; logits of step 0 "
          f"{np.frombuffer(logits[0], '<i4')[:4]}")
