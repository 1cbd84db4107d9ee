"""Text in, text out, and the host-side sampler: prompts through the model's tokenizer, answers decoded as they
stream, and seeded sampling that gives every backend the same tokens."""
from __future__ import annotations

import json

import numpy as np
import pytest

from flightc.cli import main
from flightc.errors import UnsupportedError
from flightc.models.builtin import trained_folder
from flightc.runtime.sampling import Sampler
from flightc.runtime.text import TextCodec, load_codec
from flightc.tasks.addition import AdditionTask, Problem


@pytest.fixture(scope="module")
def addition(tmp_path_factory):
    """builtin:addition compiled from its Hugging Face folder (config, safetensors and tokenizer files)."""
    out = tmp_path_factory.mktemp("text") / "add.flb"
    assert main(["compile", str(trained_folder("addition")), "--hw", "tiny", "--max-len", "24", "-o", str(out)]) == 0
    return out


def _run(argv, capsys) -> dict:
    capsys.readouterr()
    assert main(argv) == 0
    out = capsys.readouterr().out
    return json.loads(open(argv[argv.index("--json") + 1]).read()) | {"printed": out}


def test_a_text_prompt_is_answered_in_text_through_the_folders_tokenizer(addition, tmp_path, capsys):
    task, p = AdditionTask(), Problem(1234, 5678)
    doc = _run(["run", str(addition), "--prompt", task.prompt_text(p), "--max-new-tokens", str(task.answer_len),
                "--json", str(tmp_path / "r.json")], capsys)
    assert doc["prompt"] == task.prompt_ids(p)  # the model's BOS first, as it was trained
    assert doc["text"] == task.answer_text(p) == "21960"  # 6912, least significant digit first
    assert "text: 21960" in doc["printed"]
    ids = _run(["run", str(addition), "--prompt-ids", ",".join(map(str, doc["prompt"])), "--max-new-tokens", "5",
                "--json", str(tmp_path / "i.json")], capsys)
    assert ids["tokens"] == doc["tokens"] and ids["text"] is None


def test_the_python_api_takes_text_the_same_way(addition):
    from flightc.runtime.session import Session

    with Session(addition) as s:
        assert "".join(s.generate_text("1234+5678=", 5)) == "21960"


def test_the_same_seed_gives_the_same_text_and_another_seed_may_not(addition, tmp_path, capsys):
    runs = {}
    for seed in (1, 1, 2):
        doc = _run(["run", str(addition), "--prompt", "0009+0001=", "--max-new-tokens", "5", "--temperature", "3",
                    "--seed", str(seed), "--json", str(tmp_path / f"s{seed}.json")], capsys)
        runs.setdefault(seed, []).append(doc["tokens"])
        assert doc["sampler"]["temperature"] == 3 and doc["sampler"]["seed"] == seed
    assert runs[1][0] == runs[1][1]
    assert len({tuple(r[0]) for r in runs.values()}) > 1  # at temperature 3 the seeds disagree somewhere


@pytest.fixture(scope="module")
def pylm_compiled(tmp_path_factory):
    """builtin:pylm for tiny (W8, max_len 24): the bundle on disk and what the integer reference runs."""
    from flightc.compiler.pipeline import compile_model
    from flightc.compress.plan import CompressionPlan
    from flightc.models.builtin import model_input

    c = compile_model(model_input("builtin:pylm"), "tiny", CompressionPlan.parse("w8"), max_len=24,
                      source="builtin:pylm")
    return c.bundle.save(tmp_path_factory.mktemp("pylm") / "pylm.flb"), c


@pytest.fixture(scope="module")
def pylm(pylm_compiled):
    return pylm_compiled[0]


@pytest.mark.parametrize("model, prompt", [("builtin:addition", "0001+0002="), ("builtin:pylm", "import os\ndef ")])
def test_the_built_in_models_take_text(model, prompt, tmp_path, capsys, addition, pylm):
    out = pylm if model == "builtin:pylm" else tmp_path / "m.flb"
    if model == "builtin:addition":
        assert main(["compile", model, "--hw", "tiny", "--max-len", "24", "-o", str(out)]) == 0
    doc = _run(["run", str(out), "--prompt", prompt, "--max-new-tokens", "5", "--json", str(tmp_path / "r.json")],
               capsys)
    codec = load_codec(model)
    assert doc["prompt"] == codec.encode(prompt) and doc["text"] == codec.decode(doc["tokens"])
    assert len(doc["tokens"]) == 5 and f"text: {doc['text']}" in doc["printed"]
    if model == "builtin:addition":
        assert doc["text"] == "30000"  # 0003, least significant digit first


def test_eval_measures_perplexity_on_a_text_file_of_the_users(pylm_compiled, tmp_path, capsys):
    from flightc.evaluate import reference_perplexity

    bundle, compiled = pylm_compiled
    source = "def add(a, b):\n    return a + b\n\n\nprint(add(1, 2))\n" * 3
    text = tmp_path / "mine.py"
    text.write_text(source)
    capsys.readouterr()
    assert main(["eval", str(bundle), "--text", str(text), "-n", "2", "--json", str(tmp_path / "e.json")]) == 0
    r = json.loads((tmp_path / "e.json").read_text())
    assert r["windows"] == 2 and r["predicted_tokens"] == 2 * 23  # windows of max_len 24 tokens
    # the compiled model's perplexity is the integer reference's on the same bytes of the file, exactly
    windows = np.frombuffer(source.encode(), np.uint8).astype(np.int64)[:48].reshape(2, 24)
    want = reference_perplexity(compiled.integer, windows, compiled.bundle.manifest.io["logit_scale"])
    assert r["compiled_perplexity"] == pytest.approx(want, rel=1e-9)
    assert abs(r["compiled_perplexity"] / r["float_perplexity"] - 1) < 0.2  # W8 stays close to the float model
    assert "mine.py" in " ".join(capsys.readouterr().out.split())


def test_a_model_without_a_tokenizer_asks_for_token_ids(tmp_path, capsys):
    out = tmp_path / "m.flb"
    assert main(["compile", "builtin:tiny-llama", "--hw", "tiny", "--max-len", "16", "-o", str(out)]) == 0
    capsys.readouterr()
    assert main(["run", str(out), "--prompt", "hello"]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "no tokenizer" in err and "--prompt-ids" in err


def test_byte_level_builtin_round_trips_text():
    codec = load_codec("builtin:pylm")
    ids = codec.encode("def f(x):\n    return x")
    assert ids == list(b"def f(x):\n    return x") and codec.decode(ids) == "def f(x):\n    return x"


def test_streaming_holds_back_a_character_until_its_last_byte():
    codec = TextCodec("utf-8 bytes", lambda s: list(s.encode()), lambda ids: bytes(ids).decode("utf-8", "replace"))
    pieces = list(codec.stream(list("aé€b".encode())))  # é is 2 bytes, € is 3
    assert "".join(pieces) == "aé€b"
    assert "\ufffd" not in "".join(pieces) and pieces.count("") == 0
    assert pieces == ["a", "é", "€", "b"]


def test_sampler_rules():
    z = np.array([5, 9, 9, 1, -4], np.int32)
    assert Sampler().choose(z, 0.5, []) == 1  # greedy: the first of the largest
    assert all(Sampler(temperature=1.0, top_k=1, seed=s).choose(z, 0.5, []) == 1 for s in range(20))
    assert all(Sampler(temperature=1.0, top_p=1e-6, seed=s).choose(z, 0.5, []) == 1 for s in range(20))
    drawn = {Sampler(temperature=1.0, top_k=3, seed=s).choose(z, 0.5, []) for s in range(200)}
    assert drawn == {0, 1, 2}  # exactly the three most likely tokens
    # a repetition penalty turns greedy away from a token already in the sequence
    assert Sampler(repetition_penalty=4.0).choose(z, 0.5, [1, 2]) == 0
    with pytest.raises(UnsupportedError, match="--top-p 0"):
        Sampler(top_p=0)
    with pytest.raises(UnsupportedError, match="--temperature -1"):
        Sampler(temperature=-1)


def test_generation_ends_at_an_eos_token(addition):
    from flightc.runtime.session import Session

    task, p = AdditionTask(), Problem(1, 2)
    with Session(addition) as s:
        full = [t for t, _ in s.generate(task.prompt_ids(p), 5)]
    with Session(addition) as s:
        cut = [t for t, _ in s.generate(task.prompt_ids(p), 5, stop=frozenset({full[1]}))]
    assert cut == full[:2 if full[0] != full[1] else 1]


def test_the_long_context_model_reads_its_thousand_positions():
    """builtin:pylm1k, trained on windows of 1,024 bytes, predicts the same held-out bytes better from 256 bytes of
    context than from 128, no worse from 1,024, and there several times better than builtin:pylm (windows of 128),
    whose predictions fall apart past its positions (docs/models.md quotes both)."""
    from flightc.models.builtin import load_builtin, trained_folder
    from flightc.models.pylm1k.train import perplexities
    from flightc.tasks.text import HELDOUT_FILE

    held = np.frombuffer((trained_folder("pylm1k") / HELDOUT_FILE).read_bytes(), np.uint8).astype(np.int64)
    held = held[:16 * 1024]  # 16 windows
    long = perplexities(load_builtin("builtin:pylm1k"), held, (128, 256, 1024))
    assert long[256] < long[128] and long[1024] < 1.01 * long[256]
    short = perplexities(load_builtin("builtin:pylm"), held, (1024,))
    assert 4 * long[1024] < short[1024]
