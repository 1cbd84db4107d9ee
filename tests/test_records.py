"""The PRM record layouts, declared once (flightc/records.py), against every consumer: the RTL's view,
the compiler's images, the numerics and the functional simulator's reader."""
import numpy as np
import pytest

from conftest import compiled
from flightc import numerics as nm
from flightc.isa.footprint import striped_bytes
from flightc.records import NORM, REQUANT, ROPE, Field, Record


def _image(bundle, region: str) -> bytes:
    """A region's bytes, on one channel or striped over several (a streamed tile's records)."""
    r = next(x for x in bundle.manifest.memory_map["regions"] if x["name"] == region)
    return striped_bytes(bundle.images, r["channel"], r["addr"], r["nbytes"], r.get("stripe", 1),
                         r.get("unit", r["nbytes"]) or 1)


def test_the_rtl_view_of_a_record_is_the_codec_bit_for_bit():
    from flightc.hw.records import REQUANT_LAYOUT

    rng = np.random.default_rng(0)
    for _ in range(50):
        v = {"mult": int(rng.integers(-2**31, 2**31)), "shift": int(rng.integers(0, 256)),
             "bias": int(rng.integers(-2**31, 2**31))}
        packed = int.from_bytes(REQUANT.pack(1, **v), "little")
        assert REQUANT_LAYOUT.const(v).as_value().value == packed
        assert {k: int(x[0]) for k, x in REQUANT.unpack(REQUANT.pack(1, **v), 1).items()} == v
    assert REQUANT_LAYOUT.size == 8 * REQUANT.size == 8 * nm.REQUANT_RECORD_BYTES


def test_compiled_images_read_back_as_the_integer_graph_says():
    """What the compiler wrote, read through the layouts the simulator and the RTL use."""
    c = compiled("tiny-llama", "w8")
    g, b = c.integer, c.bundle
    norm = g.node("L0.attn_norm")
    eps, gain, bias = NORM.unpack(_image(b, "L0.attn_norm.params"), len(norm["gain"]), layernorm=False)
    assert eps == norm["eps_q"] and np.array_equal(gain, norm["gain"]) and bias is None
    q = g.node("L0.q_proj")
    rows = len(q["mult"])
    mult, shift, _ = nm.unpack_requant(_image(b, "L0.q_proj.t0.r"), rows)
    assert np.array_equal(mult, q["mult"]) and np.array_equal(shift, q["shift"])
    s = b.manifest.model
    head = s["hidden_size"] // s["num_heads"]
    rope = next(r for r in b.manifest.memory_map["regions"] if r["name"] == "rope")
    cos, sin = ROPE.unpack(_image(b, "rope"), rope["nbytes"] // ROPE.row_bytes(head), head)
    want_cos, want_sin = nm.rope_table(np.arange(len(cos)), head, g.spec.rope_theta)
    assert np.array_equal(cos, want_cos) and np.array_equal(sin, want_sin)


def test_norm_and_rope_offsets_agree_with_their_packing():
    gain, bias = np.arange(5) - 2, np.arange(5) * 7
    data = np.frombuffer(NORM.pack(-3, gain, bias), np.uint8)
    assert len(data) == NORM.nbytes(True, 5)
    assert data[NORM.gain_offset(3):NORM.gain_offset(3) + NORM.element_bytes].view(NORM.element)[0] == gain[3]
    assert data[NORM.bias_offset(5, 4):NORM.bias_offset(5, 4) + NORM.element_bytes].view(NORM.element)[0] == bias[4]
    cos, sin = np.array([[1, 2, 3]]), np.array([[-4, -5, -6]])
    row = np.frombuffer(ROPE.pack(cos, sin), np.uint8)
    assert row[ROPE.cos_offset(2):][:ROPE.entry_bytes].view(ROPE.entry)[0] == 3
    assert row[ROPE.sin_offset(6, 1):][:ROPE.entry_bytes].view(ROPE.entry)[0] == -5


def test_a_broken_record_declaration_is_refused():
    with pytest.raises(AssertionError, match="fields overlap"):
        Record("bad", 8, (Field("a", 0, "<i4"), Field("b", 2, "<i4")))
    with pytest.raises(AssertionError, match="runs past its 4 bytes"):
        Record("bad", 4, (Field("a", 2, "<i4"),))
    with pytest.raises(KeyError, match="no field"):
        REQUANT.pack(1, scale=3)
