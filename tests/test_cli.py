"""The command line, run as users run it."""
import json

import pytest

from flightc.cli import main


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "m.flb"
    assert main(["compile", "builtin:tiny-llama-gqa", "--hw", "tiny", "--bits", "4", "--group", "32",
                 "--sparsity", "8:16", "--layer", "*.down_proj=w8", "--max-len", "16", "--max-prefill", "4",
                 "-o", str(out)]) == 0
    return out


def test_info_and_json(bundle, capsys):
    assert main(["info", str(bundle)]) == 0
    text = capsys.readouterr().out
    assert "tiny" in text and "W4 g32 8:16" in text and "W8" in text
    assert main(["info", str(bundle), "--json"]) == 0
    m = json.loads(capsys.readouterr().out)
    assert m["isa_version"] and m["model"]["num_kv_heads"] == 2


def test_disasm_lists_every_instruction(bundle, capsys):
    assert main(["disasm", str(bundle), "--program", "prefill/4"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].split()[1] == "LD" and "gather=1" in lines[0]
    assert lines[-1].split()[1] == "SYS" and "op=END" in lines[-1]
    assert any(" MM " in f" {l} " for l in lines)


def test_sim_streams_tokens_and_counters(bundle, capsys, tmp_path):
    out = tmp_path / "run.json"
    assert main(["sim", str(bundle), "--prompt-ids", "1,2,3", "--max-new-tokens", "5", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "MV instructions" in text and "MACs" in text
    run = json.loads(out.read_text())
    assert len(run["tokens"]) == 5 and run["counters"]["macs"] > 0


def test_errors_are_reported_not_raised(bundle, capsys):
    assert main(["sim", str(bundle), "--prompt-ids", ",".join(["1"] * 15), "--max-new-tokens", "3"]) == 2
    assert "exceeds the bundle's max_len 16" in capsys.readouterr().err
    assert main(["compile", "builtin:tiny-llama", "--bits", "5", "-o", "x.flb"]) == 2
    assert main(["sim", str(bundle), "--prompt-ids", "1,999", "--max-new-tokens", "2"]) == 2


def test_config_presets_and_derived_json(tmp_path, capsys):
    assert main(["config"]) == 0
    assert "u280" in capsys.readouterr().out
    path = tmp_path / "one.json"
    assert main(["config", "u280", "--set", "num_cores=1", "-o", str(path)]) == 0
    assert json.loads(path.read_text())["num_cores"] == 1


def test_sim_on_the_performance_model_writes_a_timeline(bundle, capsys, tmp_path):
    trace, out = tmp_path / "t.json", tmp_path / "run.json"
    assert main(["sim", str(bundle), "--prompt-ids", "1,2,3,4,5", "--max-new-tokens", "2", "--backend", "perf",
                 "--trace", str(trace), "--json", str(out)]) == 0
    assert "performance model" in capsys.readouterr().out
    run = json.loads(out.read_text())
    assert [s["name"] for s in run["modeled_steps"]] == ["prefill 4 at 0", "prefill 1 at 4", "decode at 5"]
    assert run["counters"]["cycles"]["cycles"] == sum(s["cycles"] for s in run["modeled_steps"])
    assert json.loads(trace.read_text())["traceEvents"]
    assert main(["sim", str(bundle), "--prompt-ids", "1,2", "--trace", str(trace)]) == 2  # fsim has no timeline


def test_run_compares_with_the_float_reference(bundle, tmp_path, capsys):
    out = tmp_path / "run.json"
    assert main(["run", str(bundle), "--prompt-ids", "1,2,3,4", "--max-new-tokens", "4", "--backend", "perf",
                 "--compare", "reference", "--json", str(out)]) == 0
    assert "float reference" in capsys.readouterr().out
    ref = json.loads(out.read_text())["reference"]
    assert ref["source"] == "builtin:tiny-llama-gqa" and len(ref["tokens"]) == 4
    assert 0 <= ref["greedy_match"] <= 1 and ref["logit_cosine"] > 0.5


def test_run_compare_needs_to_know_the_float_model(tmp_path, capsys):
    from conftest import compiled

    path = tmp_path / "m.flb"
    compiled("tiny-llama", "w8").bundle.save(path)  # compiled from a model object: no source in the manifest
    assert main(["run", str(path), "--prompt-ids", "1,2", "--max-new-tokens", "2", "--compare", "reference"]) == 2
    assert "pass --reference MODEL" in capsys.readouterr().err
    assert main(["run", str(path), "--prompt-ids", "1,2", "--max-new-tokens", "2", "--compare", "reference",
                 "--reference", "builtin:tiny-llama"]) == 0
