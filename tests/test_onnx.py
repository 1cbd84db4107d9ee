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


@pytest.mark.parametrize("name", ["builtin:addition", "builtin:tiny-llama-gqa"])
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
