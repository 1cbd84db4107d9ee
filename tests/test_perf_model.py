"""The performance model on its own (its agreement with the RTL is in tests/rtl/test_perf_calibration.py)."""
from __future__ import annotations

import json

import pytest

from conftest import PROMPT, compiled
from flightc.compiler.tokens import insert_tokens
from flightc.config import PRESETS, Buffer
from flightc.errors import ProgramError, UnsupportedError
from flightc.isa.codec import decode_program, encode_program, make
from flightc.isa.table import MiscOp, Opcode, OutMode, SysOp, Unit
from flightc.runtime.session import Session
from flightc.sim.functional import Machine
from flightc.sim.perf.report import step_report
from flightc.sim.perf.schedule import schedule
from flightc.sim.perf.timing import instruction_work
from flightc.sim.perf.trace import trace_events

CFG = PRESETS["tiny"]


def fanout_program(n: int) -> list:
    """n MPE results, then n stores each reading one of them: n tokens from MPE to ST if synced one by one."""
    prog = [make("LD", buf=Buffer.ACT, rows=1, row_bytes=64, hbm_stride=64, buf_stride=64),
            make("LD", buf=Buffer.WGT, buf_addr=0, rows=1, row_bytes=8 * 64, hbm_stride=512, buf_stride=512,
                 hbm_addr=64)]
    for i in range(n):
        prog.append(make("MV", n=8, k=64, w_buf=Buffer.WGT, w_stride=64, w_bits=3, out_mode=OutMode.ACC32,
                         out_addr=1024 + 64 * i))
    for i in range(n):
        prog.append(make("ST", buf=Buffer.ACC, buf_addr=1024 + 64 * i, channel=1, hbm_addr=64 * i, rows=1,
                         row_bytes=32, hbm_stride=32, buf_stride=32))
    prog.append(make("SYS", op=SysOp.END))
    return prog


def test_tokens_beyond_the_counters_deadlock_in_order_dispatch_and_are_refused():
    n = 24
    small = CFG.replace(token_fifo_depth=8)
    prog = insert_tokens(fanout_program(n))  # one MPE->ST token per store
    assert sum(1 for i in prog if i.unit is Unit.MPE and i.release >> int(Unit.ST) & 1) == n
    with pytest.raises(ProgramError, match="deadlocks"):  # MPE waits for room, the stores are never dispatched
        schedule(small, [prog])
    with pytest.raises(UnsupportedError, match=r"'MPE->ST': 24\} tokens between units, more than .*token_fifo_depth 8"):
        insert_tokens(fanout_program(n), capacity=small.token_fifo_depth)
    prog = insert_tokens(fanout_program(n), capacity=CFG.token_fifo_depth)
    s = schedule(CFG, [prog])
    assert s.cycles > sum(instruction_work(CFG, i).cycles for i in prog if i.unit is Unit.MPE)
    Machine(CFG, {0: 4096, 1: 4096}).run(encode_program(prog))  # and the hazard checker accepts the tokens


def test_schedule_names_a_deadlock():
    prog = [make("LD", buf=Buffer.ACT, rows=1, row_bytes=16, hbm_stride=16, buf_stride=16, wait=1 << int(Unit.MPE)),
            make("SYS", op=SysOp.END)]
    with pytest.raises(ProgramError, match="waits for a token from MPE that no earlier instruction releases"):
        schedule(CFG, [prog])


def test_units_overlap_and_the_step_is_no_shorter_than_its_busiest_unit():
    c = compiled("tiny-llama", "w4g32")
    s = schedule(c.config, [decode_program(p) for p in c.bundle.program("decode", 9)])
    busy = s.busy_per_class()
    assert s.cycles >= max(busy.values())
    assert s.cycles < sum(busy.values())  # LD prefetches while the MPE computes
    r = step_report("decode", s)
    assert 0 < r.hbm_utilization < 1 and 0 < r.mpe_utilization < 1
    assert all(0 < v <= 1 for v in r.unit_busy.values())
    assert 0 < r.roofline_seconds < r.seconds


def test_perf_backend_runs_a_session_and_writes_a_timeline(tmp_path):
    c = compiled("tiny-llama", "w4g32")
    trace = tmp_path / "t.json"
    fsim = list(Session(c.bundle).generate(PROMPT, 3))
    s = Session(c.bundle, backend="perf", trace=str(trace))
    got = list(s.generate(PROMPT, 3))
    s.close()
    assert [t for t, _ in got] == [t for t, _ in fsim]  # values come from the functional simulator
    assert s.counters.cycles["cycles"] > 0 and s.counters.cycles["busy_mv"] > 0
    events = json.loads(trace.read_text())["traceEvents"]
    spans = [e for e in events if e["ph"] == "X"]
    assert {e["tid"] for e in spans if e["pid"] == 0} >= {int(Unit.LD), int(Unit.MPE), int(Unit.SFU)}
    assert any(e["pid"] == 1000 for e in spans)  # memory-channel tracks
    assert len(s.device.steps) == 3 and s.steps == [(len(PROMPT), 0), (1, len(PROMPT)), (1, len(PROMPT) + 1)]


def test_timeline_lays_steps_end_to_end():
    c = compiled("tiny-llama", "w4g32")
    steps = [(n, schedule(c.config, [decode_program(p) for p in c.bundle.program("decode", n)])) for n in (9, 10)]
    spans = [e for e in trace_events(steps, detail=False) if e["ph"] == "X" and e["pid"] == 0]
    first = max(e["ts"] + e["dur"] for e in spans[:len(steps[0][1].instructions[0])])
    assert min(e["ts"] for e in spans[len(steps[0][1].instructions[0]):]) >= first - 1e-9
    assert any(e["name"] == Opcode.MV.name for e in spans)


def test_programs_only_compile_has_the_same_programs_and_refuses_to_compute(tmp_path, capsys):
    from conftest import MAX_LEN, torch_model
    from flightc.cli import main
    from flightc.compiler.pipeline import compile_model
    from flightc.compress.plan import CompressionPlan
    from flightc.errors import BundleError

    plan = CompressionPlan.parse("w4g32s8:16", ["*.down_proj=w8"])
    full = compile_model(torch_model("tiny-llama"), "tiny", plan, max_len=MAX_LEN, max_prefill=4).bundle
    bare = compile_model(torch_model("tiny-llama"), "tiny", plan, max_len=MAX_LEN, max_prefill=4,
                         weights=False).bundle
    assert bare.manifest.programs_only and not any(bare.images.values())
    assert bare.manifest.memory_map == full.manifest.memory_map
    for length, pos in ((4, 0), (1, 9), (1, MAX_LEN - 1)):
        a = [decode_program(p) for p in full.step(length, pos)]
        b = [decode_program(p) for p in bare.step(length, pos)]
        differ = {(x.cls.name, k) for pa, pb in zip(a, b) for x, y in zip(pa, pb) for k in x.fields
                  if x.fields[k] != y.fields[k]}
        assert differ <= {("MISC", "imm"), ("MISC", "shift")}  # only the scales' immediates
        assert schedule(CFG, a).cycles == schedule(CFG, b).cycles
    with pytest.raises(BundleError, match="--programs-only"):
        Session(bare)
    path = tmp_path / "bare.flb"
    bare.save(path)
    assert main(["perf", str(path), "--prompt", "5", "--decode", "3", "--sample", "1", "--json",
                 str(tmp_path / "p.json")]) == 0
    figures = json.loads((tmp_path / "p.json").read_text())
    assert figures["prefill"]["steps"] == 2 and figures["decode"]["exact_steps"] == 3
    assert figures["token_bytes"]["weight_values"] > 0 and figures["roofline_tokens_per_s"] > 0


@pytest.mark.parametrize("model", ["tiny-llama", "tiny-llama-hd64"])  # keys loaded; keys streamed from their image
def test_bytes_per_token_by_kind_add_up_to_what_the_step_loads(model):
    from flightc.sim.perf.workload import WorkloadModel

    c = compiled(model, "w4g32s8:16")
    w = WorkloadModel(c.bundle)
    tb = w.token_bytes(9)
    loaded = w.step(1, 9).hbm_read_bytes  # every LD and streamed MV, as the schedule counts them
    gather_ids = sum(4 * i.rows for prog in w.programs(1, 9) for i in prog if i.opcode is Opcode.LD and i.gather)
    assert tb.total == loaded + gather_ids
    assert min(tb.weight_values, tb.sparse_indices, tb.group_scales, tb.requant_records, tb.kv_cache, tb.other) > 0


def test_a_request_extrapolated_from_one_and_two_layers_is_the_full_models(tmp_path):
    """`make demo` models LLaMA2-7B from one- and two-layer copies: on a six-layer model the extrapolated request
    streams the full compile's bytes exactly, and its prefill and decode times are within 0.1% (the channels a
    layer's records and K/V rows land on vary, and contend a little differently)."""
    from flightc.compiler.pipeline import compile_model
    from flightc.compress.plan import CompressionPlan
    from flightc.dse.evaluate import layer_copies
    from flightc.sim.perf.workload import WorkloadModel, extrapolated

    cfg = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 128,
           "intermediate_size": 384, "num_hidden_layers": 6, "num_attention_heads": 4, "num_key_value_heads": 2,
           "vocab_size": 256, "max_position_embeddings": 256, "rms_norm_eps": 1e-6, "hidden_act": "silu"}
    (tmp_path / "config.json").write_text(json.dumps(cfg))

    def request(folder):
        bundle = compile_model(folder, "u280", CompressionPlan.parse("w4g32s8:16"), max_len=64, max_prefill=4,
                               weights=False, random_weights=0).bundle
        return WorkloadModel(bundle).request(16, 32)

    full = request(tmp_path)
    with layer_copies(tmp_path, (1, 2)) as copies:
        one, two = (request(c) for c in copies)
    got = extrapolated(one, two, 6)
    assert got.token_bytes == full.token_bytes and got.token_bytes != two.token_bytes
    assert got.roofline_tokens_per_s == full.roofline_tokens_per_s
    for phase in ("prefill", "decode"):
        g, f = getattr(got, phase), getattr(full, phase)
        assert (g.steps, g.tokens) == (f.steps, f.tokens)
        assert abs(g.seconds - f.seconds) <= 1e-3 * f.seconds, (phase, g.seconds, f.seconds)
        assert abs(g.macs - f.macs) <= 1e-9 * f.macs and abs(g.hbm_bytes - f.hbm_bytes) <= 1e-3 * f.hbm_bytes
        assert g.unit_busy.keys() == f.unit_busy.keys()
        assert all(abs(g.unit_busy[u] - f.unit_busy[u]) <= 1e-2 for u in f.unit_busy)


@pytest.mark.parametrize("prm_addr, out_pass_words", [(56, 1), (0, 2)])
def test_an_sfu_pass_over_one_word_chunks_takes_a_chunk_a_cycle(prm_addr, out_pass_words):
    """The SFU's operand reader runs up to SFU_READ_AHEAD chunks ahead of the lanes and its write engine starts a
    write as the one before has its last word granted (hw/sfu.py, hw/buffers.py; the RTL keeps this model's cycles,
    tests/rtl): an RMSNORM row on 16 lanes of 64-byte words, a chunk's INT32 elements one word, costs a cycle a
    chunk in each of its two passes where its gains start at a word (the compiler's place for them, 56 bytes into a
    word past the 8-byte epsilon), two in the output pass where each chunk's gains straddle two words."""
    cfg = PRESETS["u280"].replace(sfu_lanes=16)

    def cycles(chunks: int) -> int:
        ins = make("MISC", op=MiscOp.RMSNORM, rows=1, cols=16 * chunks, src_buf=Buffer.ACC, src_addr=0,
                   dst_buf=Buffer.ACT, dst_addr=0, prm_addr=prm_addr)
        return instruction_work(cfg, ins).cycles

    assert cycles(512) - cycles(256) == 256 * (1 + out_pass_words)
