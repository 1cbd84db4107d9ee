"""torch.export frontend: ExportedPrograms matched back to the IR give the Hugging Face path's bundle byte for byte."""
import pytest
import torch

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


@pytest.mark.parametrize("name", ["builtin:addition", "builtin:tiny-llama-gqa", "builtin:tiny-mistral"])
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
    model = random_model("llama", 0, hidden_act="gelu")
    with pytest.raises(UnsupportedError, match=r"no pattern covers node 'gelu.*' \(aten\.gelu"):
        load_exported(export(model))
