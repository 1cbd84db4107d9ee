"""OPT, Qwen2, Mistral, Phi-3 and Gemma: the float interpreter matches transformers, the simulator matches the
integer reference."""
import numpy as np
import pytest
import torch

from conftest import PROMPT, compiled, torch_model
from flightc.frontend.hf import load_hf, spec_from_config
from flightc.errors import UnsupportedError
from flightc.reference.float_graph import run_float
from flightc.reference.integer import IntegerModel, greedy
from flightc.runtime.session import Session

FAMILIES = ["tiny-opt", "tiny-qwen2", "tiny-mistral", "tiny-phi3", "tiny-gemma"]


@pytest.mark.parametrize("name", FAMILIES)
def test_float_interpreter_matches_transformers(name):
    model = torch_model(name)
    ids = list(range(3, 23))  # 20 tokens: longer than Mistral's window of 8
    ours = run_float(load_hf(model), np.array(ids))["lm_head"]
    device = next(model.parameters()).device
    with torch.no_grad():
        theirs = model(torch.tensor([ids], device=device)).logits[0].double().cpu().numpy()
    assert np.abs(ours - theirs).max() < 1e-4


@pytest.mark.parametrize("name", FAMILIES)
def test_sixteen_tokens_bit_exact(name):
    c = compiled(name, "w4g32", ("*.o_proj=w8",))
    ref_tokens, ref_logits = greedy(IntegerModel(c.integer, len(PROMPT) + 16), PROMPT, 16)
    got = list(Session(c.bundle).generate(PROMPT, 16))
    assert [t for t, _ in got] == ref_tokens
    assert all(z.tobytes() == r.tobytes() for (_, z), r in zip(got, ref_logits))
    assert len(set(ref_tokens)) > 3


def test_families_use_their_features():
    opt = compiled("tiny-opt", "w4g32", ("*.o_proj=w8",))
    assert opt.integer.spec.learned_positions and "bias" in opt.integer.node("L0.fc1")
    assert opt.integer.node("L0.attn_norm")["op"].value == "layernorm"
    assert opt.fused.node("L0.fc1")["fused"] == ["L0.act"]  # ReLU in the output stage
    qwen = compiled("tiny-qwen2", "w4g32", ("*.o_proj=w8",))
    assert "bias" in qwen.integer.node("L0.q_proj") and "bias" not in qwen.integer.node("L0.o_proj")
    mistral = compiled("tiny-mistral", "w4g32", ("*.o_proj=w8",))
    assert mistral.integer.spec.sliding_window == 8
    phi3 = torch_model("tiny-phi3")  # fused projections, split by rows as transformers splits them
    graph, layer = load_hf(phi3), phi3.model.layers[0]
    qkv, gate_up = layer.self_attn.qkv_proj.weight.detach().numpy(), layer.mlp.gate_up_proj.weight.detach().numpy()
    q, k = graph.node("L0.q_proj")["weight"], graph.node("L0.k_proj")["weight"]
    v, gate, up = (graph.node(f"L0.{r}")["weight"] for r in ("v_proj", "gate_proj", "up_proj"))
    assert np.array_equal(np.concatenate([q, k, v]), qkv) and np.array_equal(np.concatenate([gate, up]), gate_up)
    assert (len(q), len(k)) == (128, 64) and graph.spec.sliding_window == 8
    gemma = compiled("tiny-gemma", "w4g32", ("*.o_proj=w8",))
    assert gemma.fused.node("L0.gate_proj")["fused"] == ["L0.act"]  # GELU (tanh) in the output stage
    g = load_hf(torch_model("tiny-gemma"))
    table = torch_model("tiny-gemma").model.embed_tokens.weight.detach().numpy()
    assert np.allclose(g.node("embed")["weight"], table * np.float32(np.sqrt(128)), rtol=1e-7)  # (float32 model)
    assert np.array_equal(g.node("lm_head")["weight"], table)  # the tied head reads the table unscaled
    gain = torch_model("tiny-gemma").model.layers[0].input_layernorm.weight.detach().numpy()
    assert np.allclose(g.node("L0.attn_norm")["weight"], 1.0 + gain)
    from flightc.frontend.hf import embed_scale  # in the checkpoint's dtype, as transformers holds it

    assert embed_scale({"hidden_size": 2048, "torch_dtype": "bfloat16"}) == 45.25
    assert embed_scale({"hidden_size": 2048}) == float(np.float32(np.sqrt(2048)))
    # decode past the window loads only the window's K/V rows
    from flightc.isa.codec import decode_program
    from flightc.isa.table import Opcode
    from flightc.config import Buffer

    prog = decode_program(mistral.bundle.program("decode", 20)[0])
    kv_loads = [i for i in prog if i.opcode is Opcode.LD and i.buf == Buffer.KV]
    d = mistral.integer.spec.head_dim
    # K: the window's 8 rows in one piece; V (kept transposed): a row of the window's 8 positions per dimension
    k_loads = [i for i in kv_loads if i.rows == 1]
    v_loads = [i for i in kv_loads if i.rows == d]
    assert k_loads and len(k_loads) == len(v_loads) == len(kv_loads) // 2
    assert all(i.row_bytes == 8 * d for i in k_loads) and all(i.row_bytes == 8 for i in v_loads)


def test_three_core_opt_is_bit_exact():
    from flightc.config import PRESETS

    hw = PRESETS["tiny"].replace(name="tiny-3core", num_cores=3, mem_channels=6, axi_masters=3)
    c = compiled("tiny-opt", "w8", (), hw=hw)
    ref_tokens, ref_logits = greedy(IntegerModel(c.integer, len(PROMPT) + 6), PROMPT, 6)
    got = list(Session(c.bundle).generate(PROMPT, 6))
    assert [t for t, _ in got] == ref_tokens
    assert all(z.tobytes() == r.tobytes() for (_, z), r in zip(got, ref_logits))


@pytest.mark.parametrize("field, value", [("activation_function", "gelu"), ("do_layer_norm_before", False),
                                          ("word_embed_proj_dim", 64)])
def test_unsupported_opt_variants_are_named(field, value):
    cfg = torch_model("tiny-opt").config.to_dict()
    cfg[field] = value
    with pytest.raises(UnsupportedError, match=field):
        spec_from_config(cfg)


def test_gemma2_and_long_context_phi3_are_refused_by_field():
    import transformers

    with pytest.raises(UnsupportedError, match="gemma2.*attn_logit_softcapping and final_logit_softcapping"):
        spec_from_config(transformers.Gemma2Config().to_dict())
    long_rope = {"type": "longrope", "short_factor": [1.0] * 48, "long_factor": [1.0] * 48}  # Phi-3-mini-128k's kind
    cfg = {**transformers.Phi3Config().to_dict(), "rope_scaling": long_rope, "original_max_position_embeddings": 4096}
    cfg.pop("rope_parameters")
    with pytest.raises(UnsupportedError, match="longrope"):
        spec_from_config(cfg)
