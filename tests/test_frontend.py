import json

import numpy as np
import pytest
import torch

from conftest import torch_model
from flightc.errors import UnsupportedError
from flightc.frontend.hf import load_hf, spec_from_config
from flightc.ir.graph import OpKind
from flightc.reference.float_graph import run_float


def test_folder_and_in_memory_model_give_the_same_graph(tmp_path):
    model = torch_model("tiny-llama-gqa")
    model.save_pretrained(tmp_path, safe_serialization=True)
    a, b = load_hf(model), load_hf(tmp_path)
    assert a.spec == b.spec and a.spec.num_kv_heads == 2
    assert a.order() == b.order()
    for n in a.linears():
        assert np.array_equal(a.node(n)["weight"], b.node(n)["weight"])


def test_graph_has_the_llama_ops():
    g = load_hf(torch_model("tiny-llama"))
    kinds = {g.node(n)["op"] for n in g.order()}
    assert kinds == set(OpKind) - {OpKind.LAYERNORM, OpKind.RELU, OpKind.GELU_TANH}
    assert len(g.linears()) == 7 * g.spec.num_layers + 1
    assert g.output == "lm_head"


@pytest.mark.parametrize("name", ["tiny-llama", "tiny-llama-gqa"])
def test_float_interpreter_matches_transformers(name):
    model = torch_model(name)
    ids = [5, 9, 200, 3, 77, 1]
    ours = run_float(load_hf(model), np.array(ids))["lm_head"]
    device = next(model.parameters()).device  # the float reference may have moved it to CUDA
    with torch.no_grad():
        theirs = model(torch.tensor([ids], device=device)).logits[0].double().cpu().numpy()
    assert np.abs(ours - theirs).max() < 1e-4


@pytest.mark.parametrize("field, value", [("hidden_act", "gelu"), ("rope_scaling", {"type": "longrope", "factor": 2}),
                                          ("pretraining_tp", 2)])
def test_unsupported_config_fields_are_named(field, value):
    cfg = torch_model("tiny-llama").config.to_dict()
    cfg[field] = value
    with pytest.raises(UnsupportedError, match=field):
        spec_from_config(cfg)


def test_other_architectures_and_missing_files_are_refused(tmp_path):
    cfg = torch_model("tiny-llama").config.to_dict()
    cfg["model_type"] = "gpt2"
    with pytest.raises(UnsupportedError,
                       match="model_type 'gpt2'.*flightc reads llama, mistral, qwen2, phi3, gemma, opt"):
        spec_from_config(cfg)
    with pytest.raises(UnsupportedError, match="no config.json"):
        load_hf(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps(torch_model("tiny-llama").config.to_dict()))
    with pytest.raises(UnsupportedError, match="safetensors"):
        load_hf(tmp_path)


def test_a_sharded_bf16_checkpoint_loads_as_its_model_does(tmp_path):
    """A checkpoint in bfloat16 saved in shards (model.safetensors.index.json) gives the graph of the same model
    rounded to bfloat16; a shard the index names but the folder lacks is named."""
    model = torch_model("tiny-llama-gqa")
    bf16 = type(model)(model.config).to(torch.bfloat16)
    bf16.load_state_dict(model.state_dict())
    bf16.save_pretrained(tmp_path, safe_serialization=True, max_shard_size="100KB")
    shards = sorted(tmp_path.glob("model-*.safetensors"))
    assert len(shards) > 1 and (tmp_path / "model.safetensors.index.json").exists()
    ours, theirs = load_hf(tmp_path), load_hf(bf16)
    for n in theirs.linears():
        assert np.array_equal(ours.node(n)["weight"], theirs.node(n)["weight"]), n
    assert not np.array_equal(ours.node("L0.q_proj")["weight"],
                              load_hf(model).node("L0.q_proj")["weight"])  # rounded: the bf16 values were read
    (tmp_path / "stray.safetensors").write_bytes(b"not a checkpoint")  # outside the index: never read
    load_hf(tmp_path)
    shards[-1].unlink()
    with pytest.raises(UnsupportedError, match=rf"names {len(shards)} shards; {shards[-1].name} is not in"):
        load_hf(tmp_path)
