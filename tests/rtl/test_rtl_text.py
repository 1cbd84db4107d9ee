"""Text on the generated RTL: the same prompt and seed give the same sampled text under Verilator as on the
functional simulator (the logits agree bit for bit, and the sampler runs on the host)."""
from __future__ import annotations

import json

from flightc.cli import main
from flightc.sim.perf.calibration import calibration_bundle


def test_sampled_text_on_the_rtl_equals_the_functional_simulators(tmp_path):
    # the calibration model (1 layer, a few K cycles a token on the RTL) read through builtin:pylm's byte tokenizer
    bundle = calibration_bundle().save(tmp_path / "calib.flb")
    docs = {}
    for backend in ("fsim", "rtl"):
        out = tmp_path / f"{backend}.json"
        assert main(["run", str(bundle), "--prompt", "def", "--tokenizer", "builtin:pylm", "--max-new-tokens", "4",
                     "--temperature", "1.5", "--top-k", "8", "--seed", "7", "--backend", backend,
                     "--json", str(out)]) == 0
        docs[backend] = json.loads(out.read_text())
    assert docs["fsim"]["prompt"] == list(b"def") and len(docs["fsim"]["tokens"]) == 4
    assert docs["rtl"]["tokens"] == docs["fsim"]["tokens"] and docs["rtl"]["text"] == docs["fsim"]["text"]
    greedy = tmp_path / "greedy.json"
    assert main(["run", str(bundle), "--prompt", "def", "--tokenizer", "builtin:pylm", "--max-new-tokens", "4",
                 "--json", str(greedy)]) == 0
    assert json.loads(greedy.read_text())["tokens"] != docs["fsim"]["tokens"]  # the seed did sample
    assert docs["rtl"]["counters"]["cycles"]  # the RTL counted its cycles
