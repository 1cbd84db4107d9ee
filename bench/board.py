"""The virtual board's overhead: the built-in model on the functional simulator in-process vs the same
simulator behind pynq's remote-device protocol (flightc board serve + the pynq backend).

    python bench/board.py [--tokens 12]

Prints tokens/s of both and what one step moves across the protocol. Wall-clock figures of this
machine, end to end (host included); they measure the runtime path, not an FPGA.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from boards import virtual_board, virtual_overlay  # noqa: E402
from flightc.cli import main as flightc  # noqa: E402
from flightc.runtime.driver import buffer_sizes  # noqa: E402
from flightc.runtime.session import Session  # noqa: E402

PROMPT = [5, 6, 7, 8]


def timed(session: Session, n: int) -> tuple[list[int], float]:
    t0 = time.perf_counter()
    tokens = [t for t, _ in session.generate(PROMPT, n)]
    return tokens, time.perf_counter() - t0


def run(n: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        bundle = f"{tmp}/addition.flb"
        assert flightc(["compile", "builtin:addition", "--hw", "kv260", "--bits", "8", "--max-len", "32",
                        "-o", bundle]) == 0
        fsim = Session(bundle, backend="fsim")
        overlay = virtual_overlay(Path(tmp), fsim.bundle.config)
        want, t_fsim = timed(fsim, n)
        with virtual_board("127.0.0.31"):
            board = Session(bundle, backend="pynq", overlay=overlay, board="127.0.0.31")
            got, t_board = timed(board, n)
            board.close()
        assert got == want, (got, want)
        sizes = buffer_sizes(fsim.bundle)
    moved = 2 * sizes["channel0"] + sizes["program"]  # flush + invalidate of the channel, the program's flush
    t = Table(title=f"builtin:addition (kv260, W8), {n} tokens after a {len(PROMPT)}-token prompt")
    for col in ("path", "wall s", "tokens/s", "bytes over the protocol per step"):
        t.add_column(col, justify="right")
    t.add_row("fsim, in-process", f"{t_fsim:.2f}", f"{n / t_fsim:.2f}", "-")
    t.add_row("pynq -> virtual board (fsim)", f"{t_board:.2f}", f"{n / t_board:.2f}", f"~{moved:,}")
    t.add_row("ratio", "", f"{t_fsim / t_board:.2f}", "")
    Console().print(t)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", type=int, default=12)
    run(ap.parse_args().tokens)
