"""Every field of a config.json is read, left aside for a stated reason, or refused by name
(flightc/frontend/config_fields.py); the model zoo's configs (flightc/models/configs) read as transformers reads them."""
from __future__ import annotations

import pytest
import transformers

from flightc.errors import UnsupportedError
from flightc.frontend.config_fields import ELSEWHERE, IGNORED, IGNORED_BY_FAMILY
from flightc.frontend.hf import SPECS, spec_from_config
from flightc.models.zoo import published as _zoo
from flightc.models.zoo import zoo

ZOO = zoo()


@pytest.mark.parametrize("family", sorted(SPECS))
def test_every_field_of_a_supported_familys_transformers_config_is_known(family):
    """An in-memory transformers model's config carries every field its class defines: none is refused."""
    cfg = transformers.AutoConfig.for_model(family).to_dict()
    assert spec_from_config(cfg).family == family


def test_an_unknown_field_is_refused_by_name_and_a_known_one_is_not():
    cfg = _zoo("llama2-7b")
    with pytest.raises(UnsupportedError, match=r"config field quantization_config = \{'bits': 4\} not known to "
                                               r"flightc for model_type 'llama'.*remove it"):
        spec_from_config({**cfg, "quantization_config": {"bits": 4}})
    with pytest.raises(UnsupportedError, match="config fields a = 1, b = 2 not known"):
        spec_from_config({**cfg, "a": 1, "b": 2})
    for field in (*IGNORED, *ELSEWHERE):
        spec_from_config({**cfg, field: cfg.get(field, 0)})
    # a field one family leaves aside is unknown to another
    assert "sliding_window" in IGNORED_BY_FAMILY["qwen2"]
    with pytest.raises(UnsupportedError, match="sliding_window = 4096 not known to flightc for model_type 'llama'"):
        spec_from_config({**cfg, "sliding_window": 4096})


def test_fields_that_change_the_arithmetic_are_refused_by_name():
    smol, qwen = _zoo("smollm2-135m"), _zoo("qwen2.5-0.5b")
    with pytest.raises(UnsupportedError, match="rope_interleaved = True"):
        spec_from_config({**smol, "rope_interleaved": True})
    with pytest.raises(UnsupportedError, match="use_mrope = True"):
        spec_from_config({**qwen, "use_mrope": True})
    layers = ["full_attention"] * 23 + ["sliding_attention"]
    with pytest.raises(UnsupportedError, match=r"layer_types: layers \[23\] are 'sliding_attention'"):
        spec_from_config({**qwen, "layer_types": layers})
    assert spec_from_config({**qwen, "layer_types": ["full_attention"] * 24}).num_layers == 24


def test_the_zoo_holds_at_least_twelve_models_of_every_supported_family():
    assert len(ZOO) >= 12
    assert {_zoo(name)["model_type"] for name in ZOO} == set(SPECS)


@pytest.mark.parametrize("name", ZOO)
def test_a_zoo_config_reads_as_transformers_reads_it(name):
    """Its shape, attention heads, head size, RoPE theta and tied head as transformers' config class reads them."""
    cfg = _zoo(name)
    spec = spec_from_config(cfg)
    theirs = transformers.AutoConfig.for_model(**cfg)
    assert (spec.hidden_size, spec.num_layers, spec.num_heads, spec.vocab_size) == \
        (theirs.hidden_size, theirs.num_hidden_layers, theirs.num_attention_heads, theirs.vocab_size)
    assert spec.intermediate_size == getattr(theirs, "intermediate_size", getattr(theirs, "ffn_dim", None))
    assert spec.num_kv_heads == getattr(theirs, "num_key_value_heads", theirs.num_attention_heads)
    assert spec.head_dim == (getattr(theirs, "head_dim", None) or theirs.hidden_size // theirs.num_attention_heads)
    if spec.family != "opt":
        assert spec.rope_theta == theirs.rope_parameters["rope_theta"]
        assert spec.rope_scaling.type.value == theirs.rope_parameters.get("rope_type", "default")
