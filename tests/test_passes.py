"""Each compiler pass on its own: IR in, IR out."""
import numpy as np
import pytest

from conftest import torch_model
from flightc.compiler.calibrate import calibrate, default_calibration
from flightc.compiler.compress import compress
from flightc.compiler.fuse import fuse
from flightc.compiler.integerize import integerize
from flightc.compiler.lower import lower_step
from flightc.compiler.memory import StreamPlan, output_tile_rows, place
from flightc.compiler.tokens import insert_tokens
from flightc.compress.plan import CompressionPlan
from flightc import numerics as nm
from flightc.config import PRESETS, Buffer, SparseEncoding
from flightc.errors import UnsupportedError
from flightc.frontend.hf import load_hf
from flightc.ir.graph import OpKind
from flightc.isa.footprint import footprint
from flightc.isa.table import MiscOp, Opcode, OutMode, Unit
from flightc.reference.integer import IntegerModel

from cards import U280_32


@pytest.fixture(scope="module")
def stages():
    g = load_hf(torch_model("tiny-llama"))
    gc = compress(g, CompressionPlan.parse("w4g32", ["*.down_proj=w8"]), PRESETS["tiny"])
    gk = calibrate(gc, default_calibration(g.spec.vocab_size))
    gi = integerize(gk)
    return g, gc, gk, gi, fuse(gi)


def test_passes_do_not_mutate_their_input(stages):
    g, gc, gk, gi, gf = stages
    assert "qweight" not in g.node("L0.q_proj") and "amax" not in gc.node("L0.q_proj")
    assert "mult" not in gk.node("L0.q_proj") and "L0.act" in gi
    assert [x.stage for x in stages] == ["float", "compressed", "calibrated", "integer", "fused"]


def test_compress_attaches_formats(stages):
    gc = stages[1]
    assert gc.node("L0.q_proj")["qweight"].fmt.label() == "W4 g32"
    assert gc.node("L1.down_proj")["qweight"].fmt.label() == "W8"
    assert gc.node("embed")["qembed"].q.dtype == np.int8


def test_compress_rejects_a_width_the_preset_lacks():
    g = load_hf(torch_model("tiny-llama"))
    with pytest.raises(UnsupportedError, match=r"layer L0\.q_proj: 3-bit weights"):
        compress(g, CompressionPlan.parse("w3g32"), PRESETS["tiny"].replace(weight_bits=(4, 8)))


def test_n_m_at_a_width_the_preset_stores_dense_is_pruned_and_stored_dense(caplog):
    """``sparse_bits`` (4,): a W3 8:16 plan is pruned 8:16 and stored as dense W3 (a warning names the layers and
    sparse_bits), a W4 8:16 plan stays 8:16, and a W3 8:16 format asked of the hardware directly is refused by name."""
    import logging

    from flightc.compress.formats import WeightFormat

    cfg = PRESETS["tiny"].replace(sparse_n=(8, 16), supports_2_4=False, sparse_bits=(4,))
    g = load_hf(torch_model("tiny-llama"))
    with caplog.at_level(logging.WARNING, logger="flightc.compiler.compress"):
        out = compress(g, CompressionPlan.parse("w3g32s8:16"), cfg, values=False)
    assert out.node("L0.q_proj")["qweight"].fmt == WeightFormat(3, group=32)
    assert "decodes no 8:16 sparse weights of 3 bits" in caplog.text and "sparse_bits" in caplog.text
    out = compress(g, CompressionPlan.parse("w4g32s8:16"), cfg, values=False)
    assert (out.node("L0.q_proj")["qweight"].fmt.n, out.node("L0.q_proj")["qweight"].fmt.m) == (8, 16)
    with pytest.raises(UnsupportedError, match=r"layer L0\.q_proj: 3-bit weights with 8:16 .*\(sparse_bits\)"):
        WeightFormat(3, 8, 16, 32, SparseEncoding.POSITIONS).check(cfg, "L0.q_proj", 128)


def test_calibrate_records_the_ranges_the_model_reaches(stages):
    """The embedding's range is exactly that of the dequantized rows the calibration tokens pick; the first
    projection's is close to what PyTorch's float model reaches on the same tokens (W4 weights move it a little)."""
    import torch

    g, gc, gk = stages[:3]
    tokens = default_calibration(g.spec.vocab_size)
    rows = gc.node("embed")["qembed"].dequantized()[tokens]
    assert gk.node("embed")["amax"] == pytest.approx(float(np.abs(rows).max()), rel=1e-12)
    model, seen = torch_model("tiny-llama"), []
    hook = model.model.layers[0].self_attn.q_proj.register_forward_hook(
        lambda mod, inputs, out: seen.append(float(out.abs().max())))
    with torch.no_grad():
        model(torch.as_tensor(tokens, device=model.device))
    hook.remove()
    assert gk.node("L0.q_proj")["amax"] == pytest.approx(max(seen), rel=0.05)


def test_integerize_chooses_output_stages(stages):
    gi = stages[3]
    assert gi.node("L0.q_proj")["out_mode"] is OutMode.REQ_I8
    assert gi.node("L0.o_proj")["out_mode"] is OutMode.REQ_ADD
    assert gi.node("lm_head")["out_mode"] is OutMode.REQ_I32
    assert gi.node("L0.act")["lut"].shape == (256,)
    mult = gi.node("L0.q_proj")["mult"]
    assert ((mult >= 1 << 30) & (mult < 1 << 31)).all()


def test_fuse_folds_silu_and_rope_into_projections(stages):
    gi, gf = stages[3], stages[4]
    assert not list(gf.nodes_of(OpKind.SILU)) and not list(gf.nodes_of(OpKind.ROPE))
    assert gf.node("L0.q_proj")["rope"] and gf.node("L1.k_proj")["fused"] == ["L1.k_rope"]
    assert gf.node("L0.attn")["inputs"] == ("L0.q_proj", "L0.k_proj", "L0.v_proj")
    assert np.array_equal(gf.node("L0.gate_proj")["lut"], gi.node("L0.act")["lut"])
    assert gf.node("L0.mul")["inputs"] == ("L0.gate_proj", "L0.up_proj")


def test_fused_graph_runs_the_same_integers_as_the_unfused_one(stages):
    """The integer reference on the fused graph applies each projection's fused LUT and RoPE itself: the same
    INT32 logits as the unfused graph at every position, prefill and decode (a fused RoPE it skipped silently
    once gave a 7B model's reference unrotated queries and keys)."""
    gi, gf = stages[3], stages[4]
    ids = [3, 141, 59, 255, 35, 89, 79, 123]
    a, b = IntegerModel(gi, 16), IntegerModel(gf, 16)
    assert np.array_equal(a.forward_all(ids), b.forward_all(ids))
    assert np.array_equal(a.forward([7]), b.forward([7]))
    unrotated = gf.copy(stage="fused")
    for name in unrotated.order():
        unrotated.node(name).pop("rope", None)
    assert not np.array_equal(IntegerModel(unrotated, 16).forward_all(ids), IntegerModel(gi, 16).forward_all(ids))


def test_place_keeps_regions_apart_and_within_channels(stages):
    gf = stages[4]
    cfg = PRESETS["tiny"]
    mem = place(gf, cfg, 40, 8)
    by_channel = {}
    for r in mem.regions.values():
        for ch, addr, n in r.spans():
            by_channel.setdefault(ch, []).append((addr, addr + n, r.name))
    for ch, spans in by_channel.items():
        spans.sort()
        for (a0, a1, n0), (b0, b1, n1) in zip(spans, spans[1:]):
            assert a1 <= b0, f"{n0} overlaps {n1} on channel {ch}"
        assert spans[-1][1] <= cfg.mem_channel_bytes
    # every weight tile is striped over every channel, equal shares to a stripe unit
    weights = [r for r in mem.regions.values() if r.kind.value == "weight"]
    assert weights and all(r.stripe == cfg.mem_channels for r in weights)
    for r in weights:
        shares = [n for _, _, n in r.spans()]
        assert max(shares) - min(shares) <= cfg.stripe_bytes and sum(shares) == r.nbytes
    # on one core every layer streams (its rows as a stream image); records fit a quarter of PRM per tile
    assert not mem.buffered
    for tiles in mem.linears.values():
        (t,) = tiles
        assert t.stream is not None and t.tile_rows * nm.REQUANT_RECORD_BYTES <= cfg.buffer_bytes(Buffer.PRM) // 4
    # five masters over two cores: core 1's three are no power of two, so its tiles go through the WGT buffer (core
    # 0's two stream), and the map says why
    two = place(gf, cfg.replace(num_cores=2, mem_channels=5, axi_masters=5), 40, 8)
    assert set(two.buffered) == set(gf.linears()) and "whole masters" in two.buffered["L0.q_proj"]
    for first, second in two.linears.values():
        assert first.stream is not None and second.stream is None
        assert second.tile_rows * second.row_bytes <= cfg.buffer_bytes(Buffer.WGT) // 2


def test_lower_keeps_decode_on_chip(stages):
    gf = stages[4]
    cfg = PRESETS["tiny"]
    mem = place(gf, cfg, 40, 8)
    (prog,) = lower_step(gf, cfg, mem, 1, 9).cores
    stores = [i for i in prog if i.opcode is Opcode.ST]
    kv = {r.name: r.addr for r in mem.regions.values() if r.kind.value == "kv"}
    d = gf.spec.head_dim
    # one K row and one V column (V is kept transposed) per KV head per layer, then the logits: nothing else
    # leaves the chip
    assert len(stores) == 2 * gf.spec.num_kv_heads * gf.spec.num_layers + 1
    k_rows = [s for s in stores[:-1] if s.rows == 1]
    v_cols = [s for s in stores[:-1] if s.rows == d]
    assert len(k_rows) == len(v_cols) == gf.spec.num_kv_heads * gf.spec.num_layers
    assert {s.hbm_addr - 9 * d for s in k_rows} == {a for n, a in kv.items() if ".k" in n}
    assert {s.hbm_addr - 9 for s in v_cols} == {a for n, a in kv.items() if ".v" in n}
    assert all(s.row_bytes == 1 and s.hbm_stride == 40 for s in v_cols)  # a byte per dimension, max_len apart
    assert stores[-1].hbm_addr == mem["io.logits"].addr
    assert {i.opcode for i in prog} >= {Opcode.LD, Opcode.MV, Opcode.MISC, Opcode.SYS}
    assert Opcode.MM not in {i.opcode for i in prog}


def test_lower_refuses_what_does_not_fit(stages):
    gf = stages[4]
    cfg = PRESETS["tiny"]
    mem = place(gf, cfg, 40, 8)
    with pytest.raises(UnsupportedError, match="ACT buffer"):
        lower_step(gf, cfg.replace(act_buffer_kib=1), mem, 8, 0)


def test_tokens_order_every_conflict(stages):
    gf = stages[4]
    cfg = PRESETS["tiny"]
    mem = place(gf, cfg, 40, 8)
    step = lower_step(gf, cfg, mem, 8, 0)
    prog = insert_tokens(step.cores[0], step.extras[0], cfg=cfg)
    # every MPE instruction waits for the LD that brought its weights
    for i, ins in enumerate(prog):
        if ins.opcode is Opcode.MM and ins.w_buf == Buffer.WGT:
            assert ins.wait & (1 << Unit.LD)
    # releases and waits balance per unit pair
    for a in Unit:
        for b in Unit:
            if a != b:
                rel = sum(1 for i in prog if i.unit is a and i.release >> b & 1)
                wait = sum(1 for i in prog if i.unit is b and i.wait >> a & 1)
                assert rel == wait
    # no token on independent work: the first LD waits for nothing
    assert prog[0].wait == 0
    assert footprint(prog[0])[1][0].space == ("buf", int(Buffer.ACT))


def test_last_touch_knows_the_latest_instruction_on_every_byte():
    """The token pass's record of who last touched each byte, against a byte array painted by brute force."""
    from flightc.compiler.tokens import LastTouch

    rng = np.random.default_rng(0)
    last, brute = LastTouch(), np.full(300, -1)
    for i in range(400):
        lo = int(rng.integers(0, 290))
        hi = lo + int(rng.integers(1, 40))
        q_lo = int(rng.integers(0, 299))
        q_hi = q_lo + int(rng.integers(1, 30))
        assert last.latest(q_lo, q_hi) == int(brute[q_lo:q_hi].max())
        last.touch(lo, hi, i)
        brute[lo:hi] = i
        assert all(a <= b for a, b in zip(last.hi, last.lo[1:]))  # disjoint, in order


def test_the_lm_heads_tiles_shrink_so_each_store_hides_under_the_next_stream():
    """Worked out by hand for LLaMA2-7B's LM head on the u280's 32 channels (32,000 rows of 4,096 INT8 weights, PRM room for 16,000
    rows' records, 32 lane groups): a row's logit store costs 4 bytes at 32 single-beat writes of 64 bytes per 66
    cycles (0.129 cycles), its stream 4,096 bytes at 2,044 bytes a cycle (2.0 cycles), so each tile may be 15x the
    next; the last is 128 cycles of stores (992 rows) rounded up to whole rounds of 64 row pairs (1,024 rows)."""
    u280, every = U280_32, StreamPlan(0, 32, 32)
    assert output_tile_rows(u280, 32000, 16000, every, 4096) == [15616, 15360, 1024]
    # a core streaming from 8 channels takes 8.0 cycles a row: each tile may be 62x the next (992 rows, rounds of 16)
    assert output_tile_rows(u280, 32000, 16000, StreamPlan(0, 8, 8), 4096) == [15008, 16000, 992]
    # 8 writes awaiting responses (0.52 cycles a row): 3x the next, the last 256 rows
    eight = u280.replace(axi_write_outstanding=8)
    assert output_tile_rows(eight, 32000, 16000, every, 4096) == [5760, 16000, 6912, 2304, 768, 256]
    # a stream no slower than twice the stores (a narrow row): equal tiles, as every other layer has
    assert output_tile_rows(eight, 32000, 16000, every, 128) == [16000, 16000]
    assert output_tile_rows(u280, 300, 16000, every, 4096) == [300]  # one tile's worth: nothing to hide under


def test_a_gated_mlps_up_projection_ends_in_a_small_tile_its_product_follows_a_tile_at_a_time():
    """The second projection of a gated pair (up_proj, after gate_proj in the graph's order) ends in a tile of an
    eighth of its rows in whole rounds of row pairs (at least 256 rows), and lowering makes the product of the two
    (the SFU's EMUL) a tile of it at a time, right after the tile's MV: LLaMA2-7B's 11,008 rows on the u280's 32
    channels as one core as 9,600 + 1,408 (a round is a row pair for each of 32 lane groups; an eighth is 21.5 rounds, so 22), so only
    1,408 elements of EMUL wait for the last stream."""
    from flightc.compiler.memory import gated_projections, gated_tiles
    from flightc.compiler.pipeline import compile_model
    from flightc.isa.codec import iter_program
    from flightc.models.seeded import random_model

    assert gated_tiles(11008, 24576, 64) == [9600, 1408]
    assert gated_tiles(5504, 24576, 32) == [4800, 704]  # the first of three cores on 32 channels (16 lane groups)
    assert gated_tiles(2752, 24576, 16) == [2400, 352]
    assert gated_tiles(512, 24576, 64) == [256, 256]  # 256 rows at least
    assert gated_tiles(500, 24576, 64) == [500]  # too few rows for two such tiles
    assert gated_tiles(11008, 4096, 64) == [4096, 4096, 1408, 1408]  # the PRM's records bound the others
    model = random_model("llama", 3, num_hidden_layers=1, hidden_size=256, intermediate_size=2048,
                         num_attention_heads=4, num_key_value_heads=4)
    c = compile_model(model, U280_32.replace(num_cores=1), CompressionPlan.parse("w4g32"), max_len=16,
                      max_prefill=4, prefill_lengths=[4], weights=False)  # one core: all 32 lane groups
    assert gated_projections(c.fused) == {"L0.up_proj"} == c.memory.gated
    (up,) = c.memory.linears["L0.up_proj"]
    assert [len(t.weights) for t in c.memory.linears["L0.gate_proj"]] == [1] and up.firsts == (0, 1792)
    prog = list(iter_program(c.bundle.program("decode", 5)[0]))
    tiles = {r.addr for r in up.weights}
    mvs = [j for j, i in enumerate(prog) if i.opcode is Opcode.MV and i.w_stream and i.w_hbm_addr in tiles]
    emuls = [j for j, i in enumerate(prog) if i.opcode is Opcode.MISC and i.op == MiscOp.EMUL]
    assert [prog[j].cols for j in emuls] == [1792, 256] and [prog[j].n for j in mvs] == [1792, 256]
    assert mvs[0] < emuls[0] < mvs[1] < emuls[1]  # the first tile's product before the last tile's MV


def test_compile_defaults_fit_the_model_and_the_preset(capsys, tmp_path):
    """No --max-len or --max-prefill: max_len stays within the model's positions (builtin:addition has 32) and the
    prefill step is the longest of 16, 8, 4, 2, 1 whose program fits the preset's buffers, and the CLI says so."""
    from flightc.cli import main
    from flightc.compiler.pipeline import compile_model

    out = tmp_path / "addition.flb"
    assert main(["compile", "builtin:addition", "--hw", "u280", "--programs-only", "-o", str(out)]) == 0
    assert "chose max_len 32 and max_prefill 16" in " ".join(capsys.readouterr().out.split())
    small = PRESETS["tiny"].replace(name="tiny-act4", act_buffer_kib=4)  # room for steps of 4 tokens, not 8
    m = compile_model(torch_model("tiny-llama"), small, weights=False).bundle.manifest
    assert (m.max_len, m.max_prefill) == (64, 4)
    with pytest.raises(UnsupportedError, match="on-chip: .* ACT buffer"):  # an explicit step is not shrunk
        compile_model(torch_model("tiny-llama"), small, max_prefill=8, weights=False)


def test_every_builtin_model_compiles_for_every_preset_with_no_flags():
    """Programs only (placement and lowering, which the lengths decide): the defaults fit everywhere — 64
    positions (addition: its 32; the others have 128 or more) and steps of 16, which every preset's buffers hold
    for these small models."""
    from flightc.compiler.pipeline import compile_model
    from flightc.models.builtin import BUILTIN, TRAINED, model_input

    for name in [*BUILTIN, *TRAINED]:
        for hw in PRESETS:
            m = compile_model(model_input(f"builtin:{name}"), hw, weights=False).bundle.manifest
            assert (m.max_len, m.max_prefill) == (32 if name == "addition" else 64, 16), (name, hw)


def test_early_tiles_marks_exactly_the_tiles_no_instruction_writes(stages):
    """Pass early_tiles: a streamed MV may read its tile ahead of its waits (MV.w_early) exactly when no instruction
    of the step writes one of its bytes — checked byte by byte here — so a step's weight tiles are marked (not its
    K and V caches' images), and an ST into one tile unmarks the MVs that read it and no other."""
    from flightc.compiler.early_tiles import mark_early_tiles
    from flightc.isa.codec import make
    from flightc.isa.footprint import byte_indices, stream_spans, streamed

    gf = stages[4]
    cfg = PRESETS["hbm4"]
    mem = place(gf, cfg, 40, 8)
    (prog,) = lower_step(gf, cfg, mem, 1, 9).cores
    mvs = [i for i, ins in enumerate(prog) if streamed(ins)]
    assert len(mvs) >= 8
    first = prog[mvs[0]]
    ch, addr, _ = stream_spans(cfg, first)[0]
    patched = [make(Opcode.ST, buf=Buffer.ACT, buf_addr=0, channel=ch, hbm_addr=addr + 8, rows=1, row_bytes=4,
                    hbm_stride=4, buf_stride=4)] + [ins.replace(w_early=1) if streamed(ins) else ins for ins in prog]

    def brute(program):
        painted = {(a.space, int(b)) for ins in program for a in footprint(ins, cfg)[1] if a.space[0] == "hbm"
                   for b in byte_indices(a.addr, a.rows, a.width, a.stride)}
        return [int(not any((a.space, int(b)) in painted for a in footprint(ins, cfg)[0] if a.space[0] == "hbm"
                            for b in byte_indices(a.addr, a.rows, a.width, a.stride)))
                for ins in program if streamed(ins)]

    for program in (prog, patched):
        (marked,) = mark_early_tiles([program], cfg)
        assert [ins.w_early for ins in marked if streamed(ins)] == brute(program)
        unmark = [ins.replace(w_early=0) if streamed(ins) else ins for ins in marked]
        assert unmark == [ins.replace(w_early=0) if streamed(ins) else ins for ins in program]  # nothing else moves
    before = [ins.w_early for ins in mark_early_tiles([prog], cfg)[0] if streamed(ins)]
    after = [ins.w_early for ins in mark_early_tiles([patched], cfg)[0] if streamed(ins)]
    moved = [b != a for b, a in zip(before, after)]
    assert before[0] == 1 and after[0] == 0 and sum(moved) < sum(before)  # that tile's readers alone


def test_a_compile_is_its_named_steps_run_in_order():
    """compile_model runs flightc.compiler.pipeline.STEPS through run_steps: each step that applies reports progress
    and is timed under its name, in order; a step that breaks its declared contract is refused by name."""
    from flightc.compiler.pipeline import GRAPH_PASSES, STEPS, Build, Step, compile_model, run_steps
    from flightc.compress.method import Method
    from flightc.compress.plan import CompressionPlan
    from flightc.errors import ProgramError

    heard: list[str] = []
    c = compile_model(torch_model("tiny-llama"), "tiny", CompressionPlan.parse("w4g32"), max_len=16,
                      progress=lambda step, done, total: heard.append(step) if step not in heard else None)
    ran = [s.name for s in STEPS if s.name != "allocate"]  # no bit budget: allocate does not apply
    assert list(c.timings) == ran and heard == ran
    assert GRAPH_PASSES == ("frontend", "equalize", "compress", "calibrate", "integerize", "fuse")
    bare = compile_model(torch_model("tiny-llama"), "tiny", CompressionPlan.parse("w4g32"), max_len=16,
                         weights=False)
    assert "equalize" not in bare.timings and "check_weights" not in bare.timings and "place" in bare.timings
    broken = (Step("frontend", lambda b: None, "reading", graph=True),)
    with pytest.raises(ProgramError, match="compile step frontend returned NoneType, but it is declared to give a "
                                           "graph IR"):
        run_steps(broken, Build(model=None, cfg=c.config, plan=c.plan, max_len=16, max_prefill=4, calibration=None,
                                prefill_lengths=None, random_weights=None, bucket=None, jobs=1, weights=False,
                                source=None, method=Method(), budget=None, keep_integer=True))


def test_a_footprint_kept_for_the_passes_is_the_instructions_own():
    """The tokens and early-tiles passes ask for each distinct instruction's footprint once (flightc.compiler.
    footprints): asked in turn for the same program on two configs (where some instructions' bytes lie depends on
    the config's masters), every kept footprint is the one worked out afresh."""
    from flightc.compiler.footprints import footprint_once
    from flightc.compiler.pipeline import compile_model
    from flightc.isa.codec import decode_program
    from flightc.models.builtin import model_input

    bundle = compile_model(model_input("builtin:tiny-llama-gqa"), "hbm4", weights=False).bundle
    program = decode_program(bundle.step(1, 5)[0])
    configs = [PRESETS["hbm4"], PRESETS["hbm4"].replace(axi_masters=2), PRESETS["hbm4"]]
    differ = 0
    for ins in program:
        kept = [footprint_once(ins, cfg) for cfg in configs]
        fresh = [tuple(map(tuple, footprint(ins, cfg))) for cfg in configs]
        assert kept == fresh, ins
        differ += fresh[0] != fresh[1]
    assert differ > 0  # the configs do give some instruction different footprints
