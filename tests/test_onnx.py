"""ONNX frontend: exports pattern-matched back to the IR give the Hugging Face path's bundle byte for byte."""
import functools

import onnx
import pytest
import torch

from flightc.compiler.calibrate import default_calibration
from flightc.compiler.pipeline import compile_model
from flightc.compress.plan import CompressionPlan
from flightc.errors import UnsupportedError
from flightc.frontend.onnx_import import load_onnx
from flightc.models.builtin import load_builtin, model_input


@functools.lru_cache(maxsize=None)
def exported(name: str, tokens: int = 12) -> bytes:
    """torch.onnx.export of a built-in, as a user would write it (no KV cache in the graph)."""
    model = load_builtin(name)
    model.config.use_cache = False
    program = torch.onnx.export(model, (torch.arange(1, tokens + 1)[None],), input_names=["input_ids"], dynamo=True)
    return program.model_proto.SerializeToString()


@pytest.mark.parametrize("name", ["builtin:addition", "builtin:tiny-llama-gqa", "builtin:tiny-phi3", "builtin:tiny-gemma"])
def test_onnx_and_hf_folder_give_identical_bundles(name, tmp_path):
    path = tmp_path / "m.onnx"
    path.write_bytes(exported(name))
    hf = model_input(name)
    if not isinstance(hf, type(path)):  # a random built-in: save it as a Hugging Face folder first
        hf.save_pretrained(tmp_path / "hf", safe_serialization=True)
        hf = tmp_path / "hf"
    cal = default_calibration(load_onnx(path).spec.vocab_size)
    kw = dict(max_len=20, max_prefill=11, prefill_lengths=[11], calibration=cal, source=name)  # same label
    a = compile_model(path, "tiny", CompressionPlan.parse("w4g32"), **kw).bundle.save(tmp_path / "a.flb")
    b = compile_model(hf, "tiny", CompressionPlan.parse("w4g32"), **kw).bundle.save(tmp_path / "b.flb")
    assert a.read_bytes() == b.read_bytes()


def test_an_unknown_node_is_named(tmp_path):
    model = onnx.load_from_string(exported("builtin:tiny-llama-gqa"))
    sig = next(n for n in model.graph.node if n.op_type == "Sigmoid")
    sig.op_type = "HardSigmoid"
    path = tmp_path / "bad.onnx"
    onnx.save(model, str(path))
    with pytest.raises(UnsupportedError, match=rf"{sig.name}.*HardSigmoid"):
        load_onnx(path)


def test_a_node_outside_every_pattern_is_named(tmp_path):
    model = onnx.load_from_string(exported("builtin:tiny-llama-gqa"))
    gather = next(n for n in model.graph.node if n.op_type == "Gather")
    extra = onnx.helper.make_node("Abs", [gather.output[0]], ["stray"], name="stray_abs")
    model.graph.node.append(extra)
    model.graph.output.append(onnx.helper.make_tensor_value_info("stray", onnx.TensorProto.FLOAT, None))
    path = tmp_path / "stray.onnx"
    onnx.save(model, str(path))
    with pytest.raises(UnsupportedError, match=r"no pattern covers node 'stray_abs' \(Abs\)"):
        load_onnx(path)


def test_a_tied_lm_head_gives_the_hf_folders_bundle(tmp_path):
    """The exporter reads a tied head as Transpose(embedding table): folded to the constant it is."""
    from flightc.models.seeded import random_model

    model = random_model("llama", 0, num_hidden_layers=2, hidden_size=64, intermediate_size=128, num_attention_heads=2,
                         num_key_value_heads=1, tie_word_embeddings=True)
    model.config.use_cache = False
    path = tmp_path / "tied.onnx"
    path.write_bytes(torch.onnx.export(model, (torch.arange(1, 13)[None],), input_names=["input_ids"],
                                       dynamo=True).model_proto.SerializeToString())
    assert any(n.op_type == "Transpose" and n.input[0] in {i.name for i in onnx.load(str(path)).graph.initializer}
               for n in onnx.load(str(path)).graph.node)
    model.save_pretrained(tmp_path / "hf", safe_serialization=True)
    kw = dict(max_len=20, max_prefill=11, prefill_lengths=[11], calibration=default_calibration(256), source="tied")
    a = compile_model(path, "tiny", CompressionPlan.parse("w4g32"), **kw).bundle.save(tmp_path / "a.flb")
    b = compile_model(tmp_path / "hf", "tiny", CompressionPlan.parse("w4g32"), **kw).bundle.save(tmp_path / "b.flb")
    assert a.read_bytes() == b.read_bytes()


def test_the_torchscript_exporters_file_is_refused_naming_dynamo(tmp_path):
    """torch.onnx.export(..., dynamo=False) stops inside torch on transformers' LLaMA (aten::diff); a model it does
    export is refused by name, with the exporter to use instead."""
    class Tiny(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.embed, self.head = torch.nn.Embedding(16, 8), torch.nn.Linear(8, 16)

        def forward(self, ids):
            return self.head(self.embed(ids))

    path = tmp_path / "ts.onnx"
    torch.onnx.export(Tiny(), (torch.arange(1, 5)[None],), str(path), input_names=["input_ids"], dynamo=False)
    with pytest.raises(UnsupportedError, match=r"TorchScript exporter.*'/embed/Gather'.*dynamo=True"):
        load_onnx(path)


def test_exact_gelu_is_refused_by_name(tmp_path):
    """ONNX's Gelu without approximate="tanh" is the exact GELU, which no LUT here computes: refused, not matched."""
    model = onnx.load_from_string(exported("builtin:tiny-gemma"))
    gelu = next(n for n in model.graph.node if n.op_type == "Gelu")
    assert onnx.helper.get_attribute_value(next(a for a in gelu.attribute if a.name == "approximate")) == b"tanh"
    del gelu.attribute[:]
    path = tmp_path / "exact.onnx"
    onnx.save(model, str(path))
    with pytest.raises(UnsupportedError, match=rf"{gelu.name}.*\(Gelu\) is exact GELU"):
        load_onnx(path)
