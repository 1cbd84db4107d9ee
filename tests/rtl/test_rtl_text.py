"""Text on the generated RTL: the same prompt and seed give the same sampled text under Verilator as on the
functional simulator (the logits agree bit for bit, and the sampler runs on the host)."""
from __future__ import annotations

import json

from flightc.cli import main
from flightc.models.builtin import trained_folder


def test_sampled_text_on_the_rtl_equals_the_functional_simulators(tmp_path, capsys):
    bundle = tmp_path / "add.flb"
    assert main(["compile", str(trained_folder("addition")), "--hw", "tiny", "--max-len", "16", "-o", str(bundle)]) == 0
    docs = {}
    for backend in ("fsim", "rtl"):
        out = tmp_path / f"{backend}.json"
        assert main(["run", str(bundle), "--prompt", "0457+0398=", "--max-new-tokens", "4", "--temperature", "1.5",
                     "--top-k", "4", "--seed", "7", "--backend", backend, "--json", str(out)]) == 0
        docs[backend] = json.loads(out.read_text())
    assert docs["rtl"]["text"] == docs["fsim"]["text"] and len(docs["fsim"]["tokens"]) == 4
    assert docs["rtl"]["counters"]["cycles"]  # the RTL counted its cycles
