"""`make demo` tells the whole story: answers on the simulator beside the float model, one answer on the generated
RTL with its measured cycles, the modeled decode speed of the built-in model and of LLaMA2-7B on the U280 against
the roofline and FlightLLM, and the resources, each figure labelled measured or modeled."""
from __future__ import annotations

import re

from flightc.cli import main


def test_the_demo_shows_fsim_rtl_modeled_speed_and_resources(tmp_path, capsys, monkeypatch):
    from flightc.cli.render import console

    monkeypatch.setattr(console, "width", 240)  # whole table cells, one per line
    assert main(["demo", "--formats", "w8", "-n", "2", "--out", str(tmp_path / "demo")]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "exact match on 2 held-out problems" in out
    bar = r"\s*[│|]\s*"  # (a box-drawing bar, or ASCII where the console has no UTF-8)
    rtl = re.search(rf"on the generated RTL \(tiny preset, Verilator; cycles measured.*?{bar}(\d+){bar}(\d+){bar}"
                    rf"([\d,]+){bar}", out)
    assert rtl and rtl.group(1) == rtl.group(2), "the RTL's answer should be the expected one"
    assert "modeled by the performance model" in out and "not measured on a board" in out
    assert "LLaMA2-7B" in out and "55 (measured)" in out and "roofline" in out
    assert "FPGA resources, modeled" in out and "U280 part" in out and "FlightLLM on U280 (measured)" in out
