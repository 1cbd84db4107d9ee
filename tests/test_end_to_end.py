"""The issue's acceptance runs: 32 greedy tokens after an 8-token prompt, simulator vs integer reference."""
import numpy as np
import pytest

from conftest import MAX_LEN, NEW_TOKENS, PROMPT, compiled
from flightc.config import Buffer
from flightc.isa.codec import iter_program
from flightc.isa.table import MiscOp, Opcode, OutMode
from flightc.reference.integer import IntegerModel, greedy
from flightc.runtime.session import Session

CASES = {
    "a-w8-dense": ("tiny-llama", "w8", ()),
    "b-w4g128-8:16": ("tiny-llama", "w4g128s8:16", ()),
    "c-mixed-2-3-4-8": ("tiny-llama", "w4g32", ("*.q_proj=w2g32s2:4", "*.k_proj=w3g64", "*.up_proj=w3g32s4:16",
                                                "*.down_proj=w8", "L1.v_proj=w2g16s2:16")),
    "d-gqa": ("tiny-llama-gqa", "w8", ()),
    "e-keys-streamed": ("tiny-llama-hd64", "w4g32", ()),  # 64-wide heads: the keys stream from their image
    "f-kv-streamed": ("tiny-llama-hd64", "w4g32", (), "hbm4"),  # four masters: the values from theirs too
}


@pytest.mark.parametrize("case", list(CASES))
def test_simulator_equals_integer_reference(case):
    name, fmt, overrides, *hw = CASES[case]
    c = compiled(name, fmt, overrides, *hw)
    if case.startswith("c"):
        bits = {c.integer.node(n)["qweight"].fmt.bits for n in c.integer.linears()}
        assert bits == {2, 3, 4, 8}
    ref_tokens, ref_logits = greedy(IntegerModel(c.integer, MAX_LEN), PROMPT, NEW_TOKENS)
    session = Session(c.bundle)
    got = list(session.generate(PROMPT, NEW_TOKENS))
    assert [t for t, _ in got] == ref_tokens
    for step, ((_, logits), ref) in enumerate(zip(got, ref_logits)):
        assert logits.dtype == np.int32 and logits.tobytes() == ref.tobytes(), f"logits differ at step {step}"
    assert len(set(ref_tokens)) > 3, "degenerate generation proves little"
    c_ = session.counters
    assert c_.instructions["MV"] > 0 and c_.macs > 0
    assert c_.instructions.get("MM", 0) > 0 or case[0] == "f"  # on hbm4 every matrix streams, a token at a time
    assert sum(c_.hbm_read.values()) > 0
    if case[0] in "ef":  # Q.K^T (and P.V) streamed a token at a time, nothing through the KV buffer
        spec, mm = c.integer.spec, c.bundle.manifest.memory_map
        layers, heads, kv_heads = spec.num_layers, spec.num_heads, spec.num_kv_heads
        images = 1 if case[0] == "f" else 0  # a value image a KV head: one P.V and one ST.img_col a head and token
        assert not mm["keys_loaded"] and bool(mm["values_loaded"]) == (case[0] == "e")
        for kind, n, tokens, window in (("prefill", len(PROMPT), len(PROMPT), len(PROMPT)),
                                        ("decode", len(PROMPT) + 3, 1, len(PROMPT) + 4)):
            prog = [i for core in c.bundle.program(kind, n) for i in iter_program(core)]
            streamed = [i for i in prog if i.opcode is Opcode.MV and i.w_stream]
            keys = [i for i in streamed if i.out_mode == OutMode.ACC32 and not i.a_unsigned]
            values = [i for i in streamed if i.a_unsigned]  # decode: raw sums, each requantized by a MISC REQ
            reqs = [i for i in prog if i.opcode is Opcode.MISC and i.op == MiscOp.REQ]
            assert len(keys) == tokens * layers * heads and {i.n for i in keys} == {window}
            assert len(values) == tokens * layers * heads * images and {i.k for i in values} <= {window}
            raw = tokens == 1
            assert {i.n for i in values} <= {spec.head_dim}
            assert all(i.out_mode == (OutMode.ACC32 if raw else OutMode.REQ_I8) for i in values)
            assert len(reqs) == (len(values) if raw else 0)
            softmaxes = [i for i in prog if i.opcode is Opcode.MISC and i.op == MiscOp.SOFTMAX]
            # decode's scores carry their maximum to the softmax (out_max, max_given); a prompt's rows see less
            assert {i.out_max for i in keys} == {int(raw)} and {i.max_given for i in softmaxes} == {int(raw)}
            stores = [i for i in prog if i.opcode is Opcode.ST and i.img]
            assert len(stores) == tokens * layers * kv_heads * (1 + images)
            assert not any(i.opcode is Opcode.LD and i.buf == Buffer.KV for i in prog) or not images


def test_three_cores_are_bit_exact_too():
    c = compiled("tiny-llama-gqa", "w4g32", (), hw=_three_core_tiny())
    ref_tokens, ref_logits = greedy(IntegerModel(c.integer, MAX_LEN), PROMPT, 12)
    got = list(Session(c.bundle).generate(PROMPT, 12))
    assert [t for t, _ in got] == ref_tokens
    assert all(a.tobytes() == b.tobytes() for (_, a), b in zip(got, ref_logits))
    streams = c.bundle.program("decode", 9)
    assert len(streams) == 3


def _three_core_tiny():
    from flightc.config import PRESETS

    return PRESETS["tiny"].replace(name="tiny-3core", num_cores=3, mem_channels=6, axi_masters=3)


def test_the_lm_heads_tiles_store_their_logits_as_they_are_made():
    """With the LM head streamed in several tiles (a PRM buffer with room for half its records), decode stores each
    tile's logits right after its MV, so the stores go under the next tile's stream; the logits stay exact."""
    from flightc.config import PRESETS

    hw = PRESETS["hbm4"].replace(name="hbm4-small-prm", prm_buffer_kib=8)
    c = compiled("tiny-llama-hd64", "w4g32", (), hw=hw)
    (region,) = [r for r in c.bundle.manifest.memory_map["regions"] if r["name"] == "io.logits"]
    prog = [i for core in c.bundle.program("decode", len(PROMPT) + 1) for i in iter_program(core)]
    head = [k for k, i in enumerate(prog) if i.opcode is Opcode.MV and i.out_mode == OutMode.REQ_I32]
    outs = [k for k, i in enumerate(prog) if i.opcode is Opcode.ST and i.channel == region["channel"]
            and region["addr"] <= i.hbm_addr < region["addr"] + region["nbytes"]]
    assert len(head) == len(outs) >= 2  # a store per tile, each before the next tile's MV
    assert all(a < s < b for a, s, b in zip(head, outs, head[1:] + [len(prog)]))
    spans = sorted((prog[k].hbm_addr - region["addr"], prog[k].row_bytes) for k in outs)
    assert spans[0][0] == 0 and all(a + n == b for (a, n), (b, _) in zip(spans, spans[1:]))
    assert spans[-1][0] + spans[-1][1] == region["nbytes"] == 4 * c.integer.spec.vocab_size
    ref_tokens, ref_logits = greedy(IntegerModel(c.integer, MAX_LEN), PROMPT, 4)
    got = list(Session(c.bundle).generate(PROMPT, 4))
    assert [t for t, _ in got] == ref_tokens
    assert all(a.tobytes() == b.tobytes() for (_, a), b in zip(got, ref_logits))


def test_logits_larger_than_the_acc_buffer_go_out_a_tile_at_a_time():
    """A vocabulary of 8,192 on hbm4: its 32 KiB of INT32 logits are all of the ACC buffer, so they are made and
    stored a streamed tile at a time, two tiles' room on chip in turn; the logits stay exact."""
    from flightc.compiler.pipeline import compile_model
    from flightc.compress.plan import CompressionPlan
    from flightc.config import PRESETS
    from flightc.models.seeded import random_model

    hw = PRESETS["hbm4"]
    model = random_model("llama", 5, vocab_size=8192)
    assert 4 * 8192 >= hw.buffer_bytes(Buffer.ACC)
    c = compile_model(model, hw, CompressionPlan.parse("w4g32"), max_len=32, max_prefill=len(PROMPT),
                      prefill_lengths=[len(PROMPT)])
    prog = [i for core in c.bundle.program("decode", len(PROMPT) + 1) for i in iter_program(core)]
    head = [i for i in prog if i.opcode is Opcode.MV and i.out_mode == OutMode.REQ_I32]
    assert len(head) >= 3 and len({i.out_addr for i in head}) == 2  # tiles in turn in two places
    ref_tokens, ref_logits = greedy(IntegerModel(c.integer, 32), PROMPT, 4)
    got = list(Session(c.bundle).generate(PROMPT, 4))
    assert [t for t, _ in got] == ref_tokens
    assert all(a.tobytes() == b.tobytes() for (_, a), b in zip(got, ref_logits))
