"""The bad-input corpus: every command given what users get wrong — a missing file, the wrong kind of file,
malformed JSON, a field of the wrong type, a value out of range, a truncated binary — ends in one `error:`
line naming the file, field or layer at fault, exit code 2, and no output left behind."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pytest

from flightc.cli import main
from flightc.config import PRESETS
from flightc.models.zoo import published as _zoo


@dataclass(frozen=True)
class Inputs:
    """The files a case may point at, made once per module."""

    bundle: Path  # a real bundle (tiny, max_len 16, vocab of the built-in tiny-llama)
    truncated: Path  # that bundle cut to half its length
    text: Path  # a text file where a bundle, model or JSON is expected
    malformed: Path  # JSON cut short
    folder: Path  # where a case writes its output (must stay absent)


@dataclass(frozen=True)
class Case:
    command: str
    what: str
    argv: Callable[[Inputs], list[str]]
    words: tuple[str, ...]  # the message must name these
    out: str | None = "out"  # the output the command would write, relative to Inputs.folder
    files: dict = field(default_factory=dict)  # name -> text written into the folder first


def _cfg(**changes) -> str:
    d = PRESETS["tiny"].to_dict()
    d.update(changes)
    return json.dumps(d)


def _o(i: Inputs, name: str = "out") -> str:
    return str(i.folder / name)


CASES = [
    # ---- compile
    Case("compile", "missing model folder", lambda i: ["compile", str(i.folder / "no-model"), "-o", _o(i)],
         ("no-model",)),
    Case("compile", "a file where a model folder belongs", lambda i: ["compile", str(i.text), "-o", _o(i)],
         ("notes.txt",)),
    Case("compile", "malformed config JSON", lambda i: ["compile", "builtin:tiny-llama", "--hw", str(i.malformed),
                                                         "-o", _o(i)], ("bad.json", "not valid JSON")),
    Case("compile", "config field of the wrong type",
         lambda i: ["compile", "builtin:tiny-llama", "--hw", str(i.folder / "hw.json"), "-o", _o(i)],
         ("hw.json", "mpe_chains"), files={"hw.json": _cfg(mpe_chains="4")}),
    Case("compile", "config value out of range",
         lambda i: ["compile", "builtin:tiny-llama", "--hw", str(i.folder / "hw.json"), "-o", _o(i)],
         ("chain_length",), files={"hw.json": _cfg(chain_length=-8)}),
    Case("compile", "weight bits out of range", lambda i: ["compile", "builtin:tiny-llama", "--bits", "5",
                                                            "-o", _o(i)], ("5-bit weights", "supports")),
    Case("compile", "an unknown sparsity pattern", lambda i: ["compile", "builtin:tiny-llama", "--sparsity", "3:7",
                                                               "-o", _o(i)], ("3:7",)),
    Case("compile", "max_len past the model's positions", lambda i: ["compile", "builtin:addition", "--max-len",
                                                                      "4096", "-o", _o(i)],
         ("max_len 4096", "max_position_embeddings")),
    Case("compile", "truncated weights", lambda i: ["compile", str(i.folder / "model"), "-o", _o(i)],
         ("model.safetensors",), files={"model/config.json": "MODEL_CONFIG", "model/model.safetensors": "TRUNCATED"}),
    Case("compile", "an output under a file, as if it were a folder",
         lambda i: ["compile", "builtin:tiny-llama", "--hw", "tiny", "-o", str(i.text / "out.flb")],
         ("notes.txt", "cannot be made"), out=None),
    Case("compile", "a prompt step of no tokens",
         lambda i: ["compile", "builtin:tiny-llama", "--hw", "tiny", "--max-prefill", "0", "-o", _o(i)],
         ("--max-prefill 0", "at least 1")),
    Case("compile", "an output that is a folder",
         lambda i: ["compile", "builtin:tiny-llama", "--hw", "tiny", "-o", str(i.folder)], ("is a folder",), out=None),
    Case("compile", "a config field flightc does not know",
         lambda i: ["compile", str(i.folder / "model"), "--random-weights", "0", "-o", _o(i)],
         ("quantization_config", "remove it"),
         files={"model/config.json": json.dumps({**_zoo("llama2-7b"), "quantization_config": {"bits": 4}})}),
    Case("compile", "a vocabulary past the card's embedding gather",
         lambda i: ["compile", str(i.folder / "model"), "--hw", "kv260", "--random-weights", "0", "--programs-only",
                    "-o", _o(i)], ("embed", "151,936 rows", "LD.stripe_log2"),
         files={"model/config.json": json.dumps({**_zoo("qwen2.5-0.5b"), "num_hidden_layers": 1,
                                                 "hidden_size": 64, "intermediate_size": 128,
                                                 "num_attention_heads": 2, "num_key_value_heads": 1})}),
    # ---- run
    Case("run", "missing bundle", lambda i: ["run", str(i.folder / "no.flb"), "--prompt-ids", "1"], ("no.flb",),
         out=None),
    Case("run", "a text file as the bundle", lambda i: ["run", str(i.text), "--prompt-ids", "1"], ("notes.txt",),
         out=None),
    Case("run", "truncated bundle", lambda i: ["run", str(i.truncated), "--prompt-ids", "1"], ("half.flb",),
         out=None),
    Case("run", "prompt ids that are not integers", lambda i: ["run", str(i.bundle), "--prompt-ids", "1,x"],
         ("--prompt-ids",), out=None),
    Case("run", "a token id past the vocabulary", lambda i: ["run", str(i.bundle), "--prompt-ids", "1,99999",
                                                                       "--max-new-tokens", "1"],
         ("99999", "vocab"), out=None),
    Case("run", "more tokens than max_len", lambda i: ["run", str(i.bundle), "--prompt-ids", "1,2",
                                                        "--max-new-tokens", "100000", "--json", _o(i)],
         ("max_len",)),
    Case("run", "stall rate out of range", lambda i: ["run", str(i.bundle), "--prompt-ids", "1", "--backend",
                                                       "rtl", "--stall-rate", "300"], ("stall",), out=None),
    # ---- perf
    Case("perf", "missing bundle", lambda i: ["perf", str(i.folder / "no.flb"), "--json", _o(i)], ("no.flb",)),
    Case("perf", "truncated bundle", lambda i: ["perf", str(i.truncated), "--json", _o(i)], ("half.flb",)),
    Case("perf", "a prompt longer than max_len", lambda i: ["perf", str(i.bundle), "--prompt", "500", "--json",
                                                             _o(i)], ("max_len",)),
    Case("perf", "a negative prompt", lambda i: ["perf", str(i.bundle), "--prompt", "-3", "--json", _o(i)],
         ("--prompt",)),
    # ---- info, disasm
    Case("info", "missing bundle", lambda i: ["info", str(i.folder / "no.flb")], ("no.flb", "no such file"), out=None),
    Case("info", "a folder as the bundle", lambda i: ["info", str(i.folder)], ("a folder",), out=None),
    Case("info", "malformed JSON as the bundle", lambda i: ["info", str(i.malformed)], ("bad.json",), out=None),
    Case("disasm", "a program name without a size", lambda i: ["disasm", str(i.bundle), "--program", "prefill"],
         ("KIND/N",), out=None),
    Case("disasm", "a program the bundle lacks", lambda i: ["disasm", str(i.bundle), "--program", "decode/9999"],
         ("decode/9999",), out=None),
    Case("disasm", "a core the bundle lacks", lambda i: ["disasm", str(i.bundle), "--program", "decode/1",
                                                          "--core", "7"], ("core", "7"), out=None),
    # ---- eval
    Case("eval", "missing bundle", lambda i: ["eval", str(i.folder / "no.flb"), "--json", _o(i)], ("no.flb",)),
    Case("eval", "a missing reference model", lambda i: ["eval", str(i.bundle), "--reference",
                                                          str(i.folder / "no-model"), "--json", _o(i)],
         ("no-model",)),
    Case("eval", "a bundle whose model declares no task", lambda i: ["eval", str(i.bundle), "--json", _o(i)],
         ("tiny-llama", "declares no task", "--text")),
    Case("eval", "zero problems", lambda i: ["eval", str(i.bundle), "-n", "0", "--json", _o(i)], ("-n",)),
    Case("eval", "a missing text file", lambda i: ["eval", str(i.bundle), "--text", str(i.folder / "no.txt"),
                                                   "--json", _o(i)], ("no.txt",)),
    Case("eval", "a window past max_len", lambda i: ["eval", str(i.bundle), "--text", str(i.text), "--window", "999",
                                                      "--json", _o(i)], ("--window 999", "max_len 16")),
    # ---- hw
    Case("hw", "verilog from malformed config JSON", lambda i: ["hw", "verilog", "--hw", str(i.malformed),
                                                                 "-o", _o(i)], ("bad.json",)),
    Case("hw", "verilog for a config the generator cannot build",
         lambda i: ["hw", "verilog", "--hw", str(i.folder / "hw.json"), "-o", _o(i)], ("axi_data_bytes = 16",),
         files={"hw.json": _cfg(axi_data_bytes=16)}),
    Case("hw", "resources on an unknown part", lambda i: ["hw", "resources", "--hw", "tiny", "--part", "xcvu99"],
         ("xcvu99",), out=None),
    Case("hw", "resources with a negative field", lambda i: ["hw", "resources", "--hw", str(i.folder / "hw.json")],
         ("mpe_chains",), out=None, files={"hw.json": _cfg(mpe_chains=-1)}),
    # ---- board
    Case("board", "a remote address without --allow-remote", lambda i: ["board", "serve", "--address", "10.1.2.3"],
         ("loopback", "--allow-remote"), out=None),
    Case("board", "an address that is not one", lambda i: ["board", "serve", "--address", "not-an-ip"],
         ("not-an-ip",), out=None),
    # ---- dse
    Case("dse", "an unknown part", lambda i: ["dse", "--part", "xcvu99", "-o", _o(i)], ("xcvu99",)),
    Case("dse", "malformed --space JSON", lambda i: ["dse", "--part", "kv260", "--space", str(i.malformed),
                                                      "-o", _o(i)], ("bad.json",)),
    Case("dse", "an unknown dimension in --space", lambda i: ["dse", "--part", "kv260", "--space",
                                                               str(i.folder / "space.json"), "-o", _o(i)],
         ("chains",), files={"space.json": json.dumps({"chains": [4]})}),
    Case("dse", "an unknown model", lambda i: ["dse", "--model", "llama-99b", "--part", "kv260", "-o", _o(i)],
         ("llama-99b",)),
    Case("dse", "zero trials", lambda i: ["dse", "--part", "kv260", "--trials", "0", "-o", _o(i)], ("--trials",)),
    Case("dse", "a generation of one point", lambda i: ["dse", "--part", "kv260", "--population", "1", "-o", _o(i)],
         ("--population 1", "NSGA-II")),
    # ---- config
    Case("config", "an unknown field", lambda i: ["config", "tiny", "--set", "mpe_chainz=4"], ("mpe_chainz",),
         out=None),
]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Inputs:
    root = tmp_path_factory.mktemp("bad-input")
    bundle = root / "m.flb"
    assert main(["compile", "builtin:tiny-llama", "--hw", "tiny", "--max-len", "16", "--max-prefill", "4",
                 "-o", str(bundle)]) == 0
    data = bundle.read_bytes()
    (root / "half.flb").write_bytes(data[:len(data) // 2])
    (root / "notes.txt").write_text("not a model, a bundle or JSON\n")
    (root / "bad.json").write_text('{"name": "x", ')
    return Inputs(bundle, root / "half.flb", root / "notes.txt", root / "bad.json", root)


def _model_config() -> str:
    from conftest import torch_model

    return json.dumps(torch_model("tiny-llama").config.to_dict())


def test_the_corpus_covers_every_command_and_kind_of_mistake():
    commands = {c.command for c in CASES}
    assert len(CASES) >= 30 and {"compile", "run", "eval", "perf", "info", "disasm", "hw", "board", "dse"} <= commands


@pytest.mark.parametrize("case", CASES, ids=[f"{c.command}: {c.what}" for c in CASES])
def test_bad_input_is_one_error_line_naming_what_is_wrong(case: Case, inputs: Inputs, tmp_path, capsys):
    i = Inputs(inputs.bundle, inputs.truncated, inputs.text, inputs.malformed, tmp_path)
    for name, text in case.files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if text == "MODEL_CONFIG":
            path.write_text(_model_config())
        elif text == "TRUNCATED":
            path.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{\"a\":")  # a header promising more than is there
        else:
            path.write_text(text)
    capsys.readouterr()
    rc = main(case.argv(i))
    err = " ".join(capsys.readouterr().err.split())  # (rich wraps at the captured console's width)
    assert rc == 2, f"exit {rc}: {err}"
    assert err.startswith("error:") and "internal error" not in err, err
    flat = "".join(err.split())  # rich may break a long path anywhere
    assert all("".join(w.split()) in flat for w in case.words), f"{err!r} does not name {case.words}"
    if case.out:
        leftovers = [p.name for p in tmp_path.iterdir() if p.name.startswith(case.out)]
        assert not leftovers, f"left behind: {leftovers}"


def test_a_model_past_the_configs_memory_is_refused_with_what_makes_room():
    """hbm4's 4 channels of 16 MiB against 8 layers of 16 MiB of INT8 weights: the compiler names the region, the
    channel, the memory the config has in all and what makes room, and on u280 that the preset streams from 24 of
    the card's 32 channels."""
    from flightc.compiler.pipeline import compile_model
    from flightc.compress.plan import CompressionPlan
    from flightc.errors import UnsupportedError
    from flightc.models.seeded import random_model

    model = random_model("llama", 1, num_hidden_layers=8, hidden_size=1024, intermediate_size=4096,
                         num_attention_heads=8, num_key_value_heads=8)
    with pytest.raises(UnsupportedError) as e:
        compile_model(model, "hbm4", CompressionPlan.parse("w8"), max_len=16, max_prefill=4, prefill_lengths=[4],
                      weights=False)
    msg = str(e.value)
    assert "does not fit channel" in msg and "(16 MiB) of preset 'hbm4': its 4 channels hold 0.0625 GiB" in msg
    assert "fewer weight bits (--bits, --layer), a shorter --max-len or a config with more memory" in msg
    assert "of the card's" not in msg
    u280 = PRESETS["u280"].replace(mem_channel_mib=4)  # the u280's 24 channels at 4 MiB: 96 MiB between them
    with pytest.raises(UnsupportedError, match=r"its 24 channels hold 0\.09375 GiB in all \(the u280 preset streams "
                                               r"from 24 of the card's 32 channels: docs/dse\.md\)"):
        compile_model(model, u280, CompressionPlan.parse("w8"), max_len=16, max_prefill=4, prefill_lengths=[4],
                      weights=False)
