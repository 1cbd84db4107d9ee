"""The command line, run as users run it; its JSON outputs against their declared schemas."""
import argparse
import json
import re
from pathlib import Path

import pytest

from flightc.cli import build_parser, main
from flightc.schema import PERF_SCHEMA, RUN_SCHEMA, SchemaError, render

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "new" / "folder" / "m.flb"  # (compile makes the folders it writes into)
    assert main(["compile", "builtin:tiny-llama-gqa", "--hw", "tiny", "--bits", "4", "--group", "32",
                 "--sparsity", "8:16", "--layer", "*.down_proj=w8", "--max-len", "16", "--max-prefill", "4",
                 "-o", str(out)]) == 0
    return out


def test_info_and_json(bundle, capsys):
    assert main(["info", str(bundle)]) == 0
    text = capsys.readouterr().out
    assert "tiny" in text and "W4 g32 8:16" in text and "W8" in text
    assert "every linear layer streams its weights" in text
    # 32-wide heads do not fill a 64-slot lane group: the keys and values go through the KV buffer; info says why
    assert "keys through the KV buffer" in text and "lane group's 64 columns" in text
    assert "values through the KV buffer" in text and "row pairs for each of" in text
    assert main(["info", str(bundle), "--json"]) == 0
    m = json.loads(capsys.readouterr().out)
    assert m["isa_version"] and m["model"]["num_kv_heads"] == 2


def test_info_names_the_layers_that_do_not_stream_and_why(tmp_path, capsys):
    """Two cores on five masters: core 1's three are no power of two and cannot stream; compile says so in its log,
    info in its summary."""
    hw = tmp_path / "two.json"
    assert main(["config", "tiny", "--set", "num_cores=2", "--set", "mem_channels=5", "--set", "axi_masters=5", "-o",
                 str(hw)]) == 0
    out = tmp_path / "two.flb"
    assert main(["compile", "builtin:tiny-llama", "--hw", str(hw), "--bits", "8", "--max-len", "16",
                 "--max-prefill", "4", "-o", str(out)]) == 0
    capsys.readouterr()
    assert main(["info", str(out)]) == 0
    text = " ".join(capsys.readouterr().out.split())  # as wrapped to the terminal
    assert "weights through the WGT buffer" in text and "not a power of two of whole masters" in text
    # each core's channels and KV heads (tiny-llama's four KV heads in proportion to the channels)
    assert "2 cores" in text and "│ 0 │ 0-1 │ 0 │" in text and "│ 1 │ 2-4 │ 1-3 │" in text


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
    RUN_SCHEMA.validate(run)
    assert len(run["tokens"]) == 5 and run["counters"]["macs"] > 0
    assert run["counters"]["cycles"] is None and run["counters"]["cycle_source"] == "none"


def test_errors_are_reported_not_raised(bundle, capsys):
    assert main(["sim", str(bundle), "--prompt-ids", ",".join(["1"] * 15), "--max-new-tokens", "3"]) == 2
    err = capsys.readouterr()
    assert "needs 17 positions; the bundle's max_len is 16: ask for at most 2 new tokens" in " ".join(err.err.split())
    assert "tokens:" not in err.out  # refused before the first step
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
    RUN_SCHEMA.validate(run)
    assert run["counters"]["cycle_source"] == "modeled"
    assert [s["name"] for s in run["modeled_steps"]] == ["prefill 4 at 0", "prefill 1 at 4", "decode at 5"]
    assert run["counters"]["cycles"]["cycles"] == sum(s["cycles"] for s in run["modeled_steps"])
    assert json.loads(trace.read_text())["traceEvents"]
    assert main(["sim", str(bundle), "--prompt-ids", "1,2", "--trace", str(trace)]) == 2  # fsim has no timeline


def test_run_compares_with_the_float_reference(bundle, tmp_path, capsys):
    out = tmp_path / "run.json"
    assert main(["run", str(bundle), "--prompt-ids", "1,2,3,4", "--max-new-tokens", "4", "--backend", "perf",
                 "--compare", "reference", "--json", str(out)]) == 0
    assert "float reference" in capsys.readouterr().out
    run = json.loads(out.read_text())
    RUN_SCHEMA.validate(run)
    ref = run["reference"]
    assert ref["device_tokens_per_s"] == pytest.approx(4 / (run["counters"]["cycles"]["cycles"] / 100e6))  # tiny
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


def test_perf_json_follows_its_schema_with_and_without_decode(bundle, tmp_path, capsys):
    out = tmp_path / "perf.json"
    assert main(["perf", str(bundle), "--prompt", "4", "--decode", "4", "--sample", "2", "--json", str(out)]) == 0
    assert "HBM roofline for those bytes" in capsys.readouterr().out
    doc = json.loads(out.read_text())
    PERF_SCHEMA.validate(doc)
    tb = doc["token_bytes"]
    assert tb["total"] == sum(v for k, v in tb.items() if k not in ("total", "position")) and tb["position"] == 6
    # the roofline: nominal bandwidth (mem_channels x mem_channel_gbps: 4 x 1.6 GB/s on tiny) over those bytes
    assert doc["roofline_tokens_per_s"] == pytest.approx(6.4e9 / tb["total"])
    assert doc["of_roofline"] == pytest.approx(doc["decode"]["tokens_per_s"] / doc["roofline_tokens_per_s"])
    assert main(["perf", str(bundle), "--prompt", "4", "--decode", "0", "--json", str(out)]) == 0
    doc = json.loads(out.read_text())
    PERF_SCHEMA.validate(doc)
    assert doc["decode"] is doc["token_bytes"] is doc["roofline_tokens_per_s"] is None


def test_perf_and_run_without_counts_fit_the_bundles_max_len(bundle, tmp_path, capsys):
    """FlightLLM's 128 + 512 (perf) and 16 new tokens (run) are the defaults; on a bundle of max_len 16 they shrink
    to what fits and say so, where counts that do not fit are refused."""
    from flightc.cli.perf import default_request

    assert default_request(640, None, None) == (128, 512)
    assert default_request(16, None, None) == (3, 13) and default_request(16, 10, None) == (10, 6)
    assert default_request(16, None, 12) == (4, 12)
    out = tmp_path / "perf.json"
    assert main(["perf", str(bundle), "--sample", "4", "--json", str(out)]) == 0
    assert "3 prompt + 13 generated tokens" in " ".join(capsys.readouterr().out.split())
    doc = json.loads(out.read_text())
    assert (doc["prefill"]["tokens"], doc["decode"]["tokens"]) == (3, 13)
    assert main(["run", str(bundle), "--prompt-ids", "1,2,3,4", "--json", str(out)]) == 0
    assert "at most 13 tokens" in capsys.readouterr().out
    assert len(json.loads(out.read_text())["tokens"]) == 13
    assert main(["perf", str(bundle), "--prompt", "10", "--decode", "10"]) == 2


def test_schema_validation_catches_missing_extra_and_mistyped_keys(bundle, tmp_path):
    out = tmp_path / "perf.json"
    assert main(["perf", str(bundle), "--prompt", "2", "--decode", "2", "--json", str(out)]) == 0
    good = json.loads(out.read_text())
    missing = {k: v for k, v in good.items() if k != "of_roofline"}
    with pytest.raises(SchemaError, match=r"missing keys \['of_roofline'\]"):
        PERF_SCHEMA.validate(missing)
    with pytest.raises(SchemaError, match=r"prefill: keys the schema does not declare \['speed'\]"):
        PERF_SCHEMA.validate({**good, "prefill": {**good["prefill"], "speed": 1}})
    with pytest.raises(SchemaError, match=r"request.prompt: expected integer, got str"):
        PERF_SCHEMA.validate({**good, "request": {**good["request"], "prompt": "2"}})
    with pytest.raises(SchemaError, match=r"prefill: null"):
        PERF_SCHEMA.validate({**good, "prefill": None})
    with pytest.raises(SchemaError, match="expected 'flightc.perf/1'"):
        PERF_SCHEMA.validate({**good, "schema": "flightc.perf/0"})


def test_json_reference_is_current():
    assert (ROOT / "docs" / "json.md").read_text() == render(), "run `make docs`"


def _leaf_commands(parser, prefix=()):
    sub = next((a for a in parser._actions if isinstance(a, argparse._SubParsersAction)), None)
    if sub is None:
        yield " ".join(prefix)
        return
    for name, p in sub.choices.items():
        if p.prog.split()[-1] == name:  # an alias (sim) shares its parser with run
            yield from _leaf_commands(p, prefix + (name,))


# subcommands whose test lives beside what they drive (slow, or needing a server or a tier of their own)
DRIVEN_ELSEWHERE = {
    "eval": "tests/test_eval.py::test_eval_cli_reports_accuracy",
    "dse": "tests/test_dse.py::test_dse_writes_front_plots_and_configs_that_compile_simulate_and_generate",
    "hw verilog": "tests/rtl/test_rtl_hw_cli.py::test_hw_verilog_writes_a_vitis_kernel",
    "hw synth": "tests/rtl/test_rtl_hw_cli.py::test_hw_synth_maps_each_chain_lane_to_one_dsp48e2",
    "hw resources": "tests/test_dse.py::test_cli_names_what_it_refuses",
    "hw bitstream": "tests/test_bitstreams.py::test_cli_writes_flows_and_refuses_a_virtual_alveo",
    "board serve": "tests/boards.py::virtual_board",  # the helper test_board.py serves its boards with
}


def test_every_subcommand_is_driven_by_a_test():
    """Each subcommand runs once in this file or in the test named here (which calls it through main or as a
    process), so a new subcommand without a test fails here."""
    here = set(re.findall(r'main\(\["([a-z-]+)"', Path(__file__).read_text()))
    for command in _leaf_commands(build_parser()):
        if command in DRIVEN_ELSEWHERE:
            path, _, name = DRIVEN_ELSEWHERE[command].partition("::")
            text = (ROOT / path).read_text()
            assert f"def {name}(" in text, f"{command}: {DRIVEN_ELSEWHERE[command]} is gone"
            assert ('"' + '", "'.join(command.split()) + '"') in text, f"{path} does not run `flightc {command}`"
        else:
            assert command in here, f"no test drives `flightc {command}`"


def test_inspect_config_demo_and_isa_doc(bundle, tmp_path, capsys):
    assert main(["isa-doc", "-o", str(tmp_path / "isa.md")]) == 0
    assert (tmp_path / "isa.md").read_text() == (ROOT / "docs" / "isa.md").read_text()
    assert main(["disasm", str(bundle), "--program", "decode"]) == 2
    assert "expected KIND/N such as decode/1" in capsys.readouterr().err
    assert main(["config", "tiny", "--set", "num_cores"]) == 2
    assert "expected FIELD=JSON" in capsys.readouterr().err
    assert main(["demo", "--formats", "w8", "-n", "2", "--parts", "fsim", "--out", str(tmp_path / "demo")]) == 0
    assert "exact match on 2 held-out problems" in capsys.readouterr().out


def _nan_model_folder(folder: Path) -> Path:
    import copy

    import torch

    from conftest import torch_model

    model = copy.deepcopy(torch_model("tiny-llama"))
    with torch.no_grad():
        model.model.layers[1].mlp.up_proj.weight[3, 5] = float("nan")
    model.save_pretrained(folder)
    return folder


@pytest.mark.parametrize("case", ["malformed config", "config field type", "NaN weight", "remote board address"])
def test_bad_input_gets_a_one_line_error_naming_what_is_wrong(case, tmp_path, capsys):
    out = tmp_path / "m.flb"
    deep = tmp_path / ("folder" * 16)  # a path longer than the console is wide stays whole on the error's one line
    deep.mkdir()
    if case == "malformed config":
        (deep / "hw.json").write_text('{"name": "x", ')
        argv, words = ["compile", "builtin:tiny-llama", "--hw", str(deep / "hw.json"), "-o", str(out)], \
            [f"{deep / 'hw.json'}: not valid JSON"]
    elif case == "config field type":
        d = json.loads((ROOT / "flightc" / "dse" / "data" / "synth_calibration.json").read_text())["runs"][0]["config"]
        (deep / "hw.json").write_text(json.dumps({**d, "mpe_chains": "4"}))
        argv, words = ["compile", "builtin:tiny-llama", "--hw", str(deep / "hw.json"), "-o", str(out)], \
            [f"{deep / 'hw.json'}: hardware config: mpe_chains = '4' must be int"]
    elif case == "NaN weight":
        argv, words = ["compile", str(_nan_model_folder(tmp_path / "model")), "-o", str(out)], \
            ["layer L1.up_proj: tensor 'weight' has 1 NaN or Inf value(s)"]
    else:
        argv, words = ["board", "serve", "--address", "10.1.2.3"], ["not a loopback address", "--allow-remote"]
    capsys.readouterr()  # what making the inputs printed
    assert main(argv) == 2
    err = " ".join(capsys.readouterr().err.split())  # (rich wraps at the captured console's width)
    assert err.startswith("error:") and all(w in err for w in words), err
    assert not out.exists()


def test_a_config_clock_given_as_an_integer_is_the_same_config(tmp_path):
    path = tmp_path / "c.json"
    assert main(["config", "tiny", "--set", "clock_mhz=100", "-o", str(path)]) == 0
    from flightc.config import PRESETS, load_config

    assert load_config(path).hash == PRESETS["tiny"].hash


def test_a_bug_is_an_internal_error_with_exit_1_not_a_traceback(monkeypatch, capsys):
    import flightc.cli.config as config_cmd

    def broken(args):
        raise RuntimeError("boom")

    monkeypatch.setattr(config_cmd, "cmd_config", broken)
    assert main(["config"]) == 1
    err = " ".join(capsys.readouterr().err.split())
    assert err.startswith("error: internal error: RuntimeError: boom") and "issue tracker" in err


def test_json_outputs_are_written_atomically(bundle, tmp_path, monkeypatch):
    """A command interrupted while writing leaves no file that looks complete."""
    import flightc.files as files

    out = tmp_path / "perf.json"

    def interrupted(path, data):
        raise KeyboardInterrupt

    monkeypatch.setattr(files.Path, "write_bytes", interrupted)
    assert main(["perf", str(bundle), "--prompt", "2", "--decode", "1", "--json", str(out)]) == 130
    assert not out.exists() and not list(tmp_path.glob(".*partial"))
