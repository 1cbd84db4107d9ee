"""torch.export frontend: ExportedPrograms matched back to the IR give the Hugging Face path's bundle byte for byte."""
import subprocess
import sys

import pytest
import torch

from flightc.bundle import load_bundle
from flightc.compiler.calibrate import default_calibration
from flightc.compiler.pipeline import compile_model
from flightc.compress.plan import CompressionPlan
from flightc.errors import UnsupportedError
from flightc.frontend.torch_export import load_exported
from flightc.models.builtin import load_builtin, model_input
from flightc.models.seeded import random_model


def export(model, tokens: int = 12):
    model.config.use_cache = False
    return torch.export.export(model, (torch.arange(1, tokens + 1)[None],))


@pytest.mark.parametrize("name", ["builtin:addition", "builtin:tiny-llama-gqa", "builtin:tiny-mistral",
                                  "builtin:tiny-phi3", "builtin:tiny-gemma"])
def test_exported_program_and_hf_folder_give_identical_bundles(name, tmp_path):
    model = load_builtin(name)
    graph = load_exported(export(model))
    hf = model_input(name)
    if not hasattr(hf, "exists"):  # a random built-in: save it as a Hugging Face folder first
        hf.save_pretrained(tmp_path / "hf", safe_serialization=True)
        hf = tmp_path / "hf"
    cal = default_calibration(graph.spec.vocab_size)
    kw = dict(max_len=20, max_prefill=11, prefill_lengths=[11], calibration=cal, source=name)  # same label
    a = compile_model(graph, "tiny", CompressionPlan.parse("w4g32"), **kw).bundle.save(tmp_path / "a.flb")
    b = compile_model(hf, "tiny", CompressionPlan.parse("w4g32"), **kw).bundle.save(tmp_path / "b.flb")
    assert a.read_bytes() == b.read_bytes()
    if "mistral" in name:
        assert graph.spec.sliding_window == 8


def test_an_aten_op_without_a_pattern_is_named():
    model = random_model("llama", 0, hidden_act="relu")
    with pytest.raises(UnsupportedError, match=r"no pattern covers node 'relu.*' \(aten\.relu"):
        load_exported(export(model))
    with pytest.raises(UnsupportedError, match=r"node 'gelu' \(aten.gelu\) is exact GELU.*tanh approximation"):
        load_exported(export(random_model("llama", 0, hidden_act="gelu")))


def test_a_pt2_file_gives_the_exported_programs_bundle(tmp_path):
    """`flightc compile model.pt2` (torch.export.save's file) compiles as the ExportedProgram does; a tied head too."""
    model = random_model("llama", 0, num_hidden_layers=2, hidden_size=64, intermediate_size=128, num_attention_heads=2,
                         num_key_value_heads=1, tie_word_embeddings=True)
    ep = export(model)
    torch.export.save(ep, tmp_path / "m.pt2")
    kw = dict(max_len=20, max_prefill=11, prefill_lengths=[11], calibration=default_calibration(256), source="m")
    a = compile_model(tmp_path / "m.pt2", "tiny", CompressionPlan.parse("w4g32"), **kw).bundle.save(tmp_path / "a.flb")
    b = compile_model(load_exported(ep), "tiny", CompressionPlan.parse("w4g32"), **kw).bundle.save(tmp_path / "b.flb")
    assert a.read_bytes() == b.read_bytes()
    # the command line, in a fresh process (where nothing has imported transformers' output classes yet)
    cli = subprocess.run([sys.executable, "-m", "flightc.cli", "compile", str(tmp_path / "m.pt2"), "--format", "w4g32",
                          "--max-len", "20", "-o", str(tmp_path / "cli.flb")], capture_output=True, text=True)
    assert cli.returncode == 0, cli.stderr[-2000:]
    assert load_bundle(tmp_path / "cli.flb").program("decode", 8) == load_bundle(a).program("decode", 8)


def test_a_pt2_file_holding_more_than_tensors_is_refused_unrun(tmp_path):
    """A .pt2 whose example inputs unpickle to a call (torch.export.load falls back to full pickle for them) is refused
    by name, and the call never runs."""
    import io
    import zipfile

    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return open, (str(marker), "w")

    model = random_model("llama", 0, num_hidden_layers=1, hidden_size=64, intermediate_size=128)
    torch.export.save(export(model), tmp_path / "good.pt2")
    evil = io.BytesIO()
    torch.save(((Payload(),), {}), evil)
    with zipfile.ZipFile(tmp_path / "good.pt2") as src, zipfile.ZipFile(tmp_path / "evil.pt2", "w") as dst:
        names = [n for n in src.namelist() if n.endswith("sample_inputs/model.pt")]
        assert names
        for item in src.infolist():
            dst.writestr(item, evil.getvalue() if item.filename in names else src.read(item.filename))
    with pytest.raises(UnsupportedError, match=r"evil.pt2: holds pickled data beyond tensors.*weights-only"):
        compile_model(tmp_path / "evil.pt2", "tiny", CompressionPlan.parse("w8"), max_len=8)
    assert not marker.exists()
    (tmp_path / "text.pt2").write_text("not a zip")
    with pytest.raises(UnsupportedError, match="text.pt2: not a torch.export archive"):
        compile_model(tmp_path / "text.pt2", "tiny", CompressionPlan.parse("w8"), max_len=8)
