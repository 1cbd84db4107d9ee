"""The functional simulator's fast path (each token structure's order, hazard-checked once: sim.static_check)
against its slow path (scheduled and checked instruction by instruction): the same bytes, the same refusals."""
from __future__ import annotations

import re

import numpy as np
import pytest

from flightc.config import PRESETS, Buffer, SparseEncoding
from flightc.errors import FlightcError, ProgramError
from flightc.isa.codec import decode_program, encode_program
from flightc.isa.table import FieldKind, Opcode, SysOp
from flightc.sim.functional import Machine
from flightc.sim.rtl.random_programs import random_case

CFG = PRESETS["tiny"]
# a third of the seeds' sparse weights in any of the encodings of their positions (ISA 1.10)
ENCODED = CFG.replace(sparse_encodings=tuple(SparseEncoding))
SEEDS = range(40)
RACE = re.compile("racing|before the write|overwrites")  # the hazard checks' refusals
NOT_MUTATED = {"opcode", "wait", "release"}  # mutations keep the tokens: the fast path re-checks, not re-plans


def config(seed: int):
    return ENCODED if seed % 3 == 2 else CFG


def machine(case, slow: bool, cfg=CFG) -> Machine:
    m = Machine(cfg, {**case.extent, **{ch: 1 << 15 for ch in range(1, CFG.mem_channels)}}, slow_path=slow)
    for ch, img in case.images.items():
        m.write_hbm(ch, 0, bytes(img))
    return m


def state(m: Machine) -> list[bytes]:
    return [m.hbm[ch].tobytes() for ch in sorted(m.hbm)] + [core[b].tobytes() for core in m.cores for b in Buffer]


def outcome(m: Machine, program: bytes):
    """What running ``program`` on ``m`` does: the counters and every byte after it, or the error's kind."""
    try:
        c = m.run(program)
    except FlightcError as e:
        return ("refused", type(e).__name__)
    return ("ran", c.instructions, c.macs, c.sfu_elements, c.hbm_read, c.hbm_written, state(m))


@pytest.mark.parametrize("seed", SEEDS)
def test_the_fast_path_equals_the_slow_path_on_random_programs(seed):
    cfg = config(seed)
    case = random_case(cfg, seed, streams=seed % 2 == 1)  # every other seed with streamed MVs among its blocks
    fast, slow = outcome(machine(case, False, cfg), case.program), outcome(machine(case, True, cfg), case.program)
    assert fast[0] == "ran"
    assert fast == slow


def mutated(program: bytes, rng: np.random.Generator) -> bytes:
    """``program`` with one field of one instruction moved a little (or redrawn, for small fields)."""
    instrs = list(decode_program(program))
    while True:
        i = int(rng.integers(len(instrs)))
        ins = instrs[i]
        names = [p.field.name for p in ins.cls.layout
                 if p.field.kind is not FieldKind.RESERVED and p.field.name not in NOT_MUTATED]
        if not names or ins.opcode is Opcode.SYS:
            continue
        name = names[int(rng.integers(len(names)))]
        f = ins.cls.placed(name).field
        old = ins.fields[name]
        new = int(rng.integers(f.lo_value, f.hi_value + 1)) if f.bits <= 4 else \
            int(np.clip(old + rng.integers(-64, 65), f.lo_value, f.hi_value))
        if new == old:
            continue
        try:
            instrs[i] = ins.replace(**{name: new})
        except FlightcError:
            continue
        return encode_program(instrs)


@pytest.mark.parametrize("seed", SEEDS)
def test_a_mutated_program_runs_or_is_refused_alike_on_both_paths(seed):
    """Run after the original on the same machines, so the fast path checks the mutant against the original's
    plan (the same tokens) instead of planning it afresh."""
    cfg = config(seed)
    case = random_case(cfg, seed, streams=seed % 2 == 1)
    rng = np.random.default_rng(1000 + seed)
    for _ in range(4):
        program = mutated(case.program, rng)
        fast, slow = machine(case, False, cfg), machine(case, True, cfg)  # fresh: a refusal may leave the slow path's
        assert outcome(fast, case.program) == outcome(slow, case.program)  # memory half-written
        a, b = outcome(fast, program), outcome(slow, program)
        assert a[0] == b[0], (a[:2], b[:2])
        if a[0] == "ran":
            assert a == b


def token_pairs(instrs) -> list[tuple[int, int]]:
    """(releasing, waiting) instruction indices of every token: the k-th release from unit A to unit B meets
    B's k-th wait on A."""
    sent: dict[tuple, list[int]] = {}
    pairs = []
    for i, ins in enumerate(instrs):
        u = ins.unit
        for v in range(8):
            if ins.wait >> v & 1:
                pairs.append((sent[(v, int(u))].pop(0), i))
        for v in range(8):
            if ins.release >> v & 1:
                sent.setdefault((int(u), v), []).append(i)
    return pairs


def without_token(program: bytes, pair: tuple[int, int]) -> bytes:
    instrs = list(decode_program(program))
    r, w = pair
    instrs[r] = instrs[r].replace(release=instrs[r].release & ~(1 << int(instrs[w].unit)))
    instrs[w] = instrs[w].replace(wait=instrs[w].wait & ~(1 << int(instrs[r].unit)))
    return encode_program(instrs)


def hazard_set() -> list[tuple[int, bytes]]:
    """Seeded programs each missing one wait/release pair: some race, some do not (the token was not needed)."""
    out = []
    for seed in range(60):
        case = random_case(CFG, seed)
        instrs = decode_program(case.program)
        pairs = [p for p in token_pairs(instrs)
                 if not any(instrs[i].opcode is Opcode.SYS and instrs[i].op == SysOp.BARRIER for i in p)]
        for k in np.random.default_rng(seed).permutation(len(pairs))[:3]:
            out.append((seed, without_token(case.program, pairs[int(k)])))
    return out


def test_the_static_check_refuses_every_program_the_dynamic_check_refuses():
    refused = both = 0
    cases = hazard_set()
    for seed, program in cases:
        case = random_case(CFG, seed)
        fast, slow = outcome(machine(case, False), program), outcome(machine(case, True), program)
        assert fast[0] == slow[0], seed
        refused += slow[0] == "refused"
        both += fast == slow
    assert refused >= 20  # the set does exercise the checks
    assert both == len(cases)


@pytest.mark.parametrize("pairs_at_once", [None, 3])
def test_a_step_that_races_only_at_its_new_position_is_refused(pairs_at_once, monkeypatch):
    """Two programs with the same tokens: the first is race-free and plans the order; the second moves one
    load onto a buffer region another unit reads unordered, which only the re-check of changed instructions
    can see (also when it compares the access pairs a few at a time, as it does at 7B)."""
    if pairs_at_once:
        from flightc.sim import static_check
        monkeypatch.setattr(static_check, "PAIRS_AT_ONCE", pairs_at_once)
    raced = None
    for seed in range(20):
        case = random_case(CFG, seed, blocks=3)
        instrs = list(decode_program(case.program))
        lds = [i for i, ins in enumerate(instrs) if ins.opcode is Opcode.LD and not ins.gather and not ins.stripe]
        mpes = [ins for ins in instrs if ins.opcode in (Opcode.MM, Opcode.MV)]
        for i in lds:
            for target in mpes:
                trial = list(instrs)
                trial[i] = instrs[i].replace(buf=int(Buffer.ACT), buf_addr=target.a_addr)
                program = encode_program(trial)
                slow = machine(case, True)
                slow.run(case.program)
                try:
                    slow.run(program)
                except ProgramError as e:
                    if RACE.search(str(e)):
                        raced, said = program, str(e)
                        break
            if raced:
                break
        if raced:
            break
    assert raced is not None
    fast = machine(case, False)
    assert outcome(fast, case.program)[0] == "ran"
    with pytest.raises(ProgramError) as refused:
        fast.run(raced)
    assert str(refused.value) == said  # the slow path's words, naming the same instruction, bytes and unit
    assert fast.plans and len(fast.plans) == 1  # checked against the first program's plan, not planned anew
    with pytest.raises(ProgramError) as again:  # a refused program is not taken for a checked one
        fast.run(raced)
    assert str(again.value) == said


def test_a_program_is_checked_once_and_its_gathers_every_run(tiny_w8, monkeypatch):
    """Race freedom is a property of the program: a step checked against its plan once is not re-examined when it
    runs again (another machine, the same bytes), except for its embedding gathers, whose rows depend on the ids
    in memory."""
    from conftest import PROMPT
    from flightc.sim import functional

    looked = []
    check = functional.check_against_plan
    monkeypatch.setattr(functional, "_PLANS", {})  # whatever ran before: this test makes the plan
    monkeypatch.setattr(functional, "_CHECKED", {})
    monkeypatch.setattr(functional, "check_against_plan", lambda *a, **k: looked.append(check(*a, **k)))
    b = tiny_w8.bundle
    ids = b.region("io.ids")
    first, later = b.step(1, len(PROMPT)), b.step(1, len(PROMPT) + 3)
    for _ in range(2):
        m = Machine.from_bundle(b)
        m.write_hbm(ids["channel"], ids["addr"], np.asarray(PROMPT[:1], "<i4").tobytes())
        m.run(first)  # the plan (or, on the second machine, a program checked already)
        m.run(later)
    gathers = sum(ins.opcode is Opcode.LD and ins.gather for ins in decode_program(later[0]))
    assert gathers and looked[0] > gathers and looked[1:] == [gathers, gathers]


def test_a_compiled_model_gives_the_same_logits_on_both_paths_and_the_cli_says_what_checking_took(tiny_w8, tmp_path,
                                                                                                   capsys):
    from flightc.cli import main
    from flightc.runtime.session import Session

    prompt = [3, 1, 4, 1, 5]
    runs = []
    for slow in (False, True):
        with Session(tiny_w8.bundle, "fsim", slow_path=slow) as s:
            runs.append([(t, z.tobytes()) for t, z in s.generate(prompt, 6)])
            if not slow:
                # one plan per template run (each step length's), however many positions it ran at
                assert len(s.device.machine.plans) == len({n for n, _ in s.steps}) < len(s.steps)
                assert s.device.hazard_check_s > 0
    assert runs[0] == runs[1]
    path = tmp_path / "m.flb"
    tiny_w8.bundle.save(path)
    assert main(["run", str(path), "--prompt-ids", "3,1,4"]) == 0
    assert "hazard checks (of the wall time)" in capsys.readouterr().out
    assert main(["run", str(path), "--prompt-ids", "3,1,4", "--slow-path"]) == 0
    assert "hazard checks" not in capsys.readouterr().out


def test_a_two_core_bundle_runs_exactly_on_the_fast_path():
    """Cores meet at barriers: the plan's order crosses them as the slow path's does, and the logits equal the
    integer reference's and the slow path's."""
    from flightc.compiler.pipeline import compile_model
    from flightc.compress.plan import CompressionPlan
    from flightc.evaluate import sim_matches_reference
    from flightc.runtime.session import Session
    from conftest import torch_model

    two = PRESETS["tiny"].replace(num_cores=2, axi_masters=2)
    c = compile_model(torch_model("tiny-llama"), two, CompressionPlan.parse("w8"), max_len=16, max_prefill=4)
    assert c.bundle.config.num_cores == 2
    assert sim_matches_reference(c, [3, 1, 4, 1], new_tokens=4)
    runs = []
    for slow in (False, True):
        with Session(c.bundle, "fsim", slow_path=slow) as s:
            runs.append([z.tobytes() for _, z in s.generate([3, 1, 4, 1], 5)])
    assert runs[0] == runs[1]


def test_a_gather_whose_rows_move_onto_an_unordered_store_is_refused_on_a_later_run():
    """A program checked once is not re-examined, except its gathers: here a gather and a store no token orders
    race only when an id in memory picks the row the store writes. Ids that miss it run; then the host writes one
    that hits it and the same program is refused on the fast path as on the slow one, in the same words."""
    from flightc.isa.codec import make

    row, hit = 16, 2
    program = encode_program([
        make("LD", buf=int(Buffer.ACT), buf_addr=0, channel=1, hbm_addr=0, rows=1, row_bytes=row, hbm_stride=row,
             buf_stride=row, gather=1, ids_addr=0),
        make("ST", buf=int(Buffer.ACT), buf_addr=1024, channel=1, hbm_addr=hit * row, rows=1, row_bytes=row,
             hbm_stride=row, buf_stride=row),
        make("SYS", op=SysOp.END)])
    fast, slow = (Machine(CFG, {0: 64, **{ch: 1 << 10 for ch in range(1, CFG.mem_channels)}}, slow_path=s)
                  for s in (False, True))
    said = []
    for ids in ([0], [5], [hit]):
        for m in (fast, slow):
            m.write_hbm(0, 0, np.asarray(ids, "<i4").tobytes())
            try:
                m.run(program)
                said.append(None)
            except ProgramError as e:
                said.append(str(e))
    assert said[:4] == [None] * 4
    assert said[4] and RACE.search(said[4]) and said[4] == said[5]


def test_programs_that_share_a_token_structure_count_their_own_instructions():
    """A plan serves every program with its tokens: an MM where another program had an MV (the same unit, the same
    tokens) is counted as an MM, on a machine of its own after the other ran (plans are shared by machines)."""
    from flightc.compress.formats import WeightFormat
    from flightc.isa.codec import make
    from flightc.isa.table import OutMode, SysOp, Unit

    fmt, n, k = WeightFormat(8), 4, 64
    rb = fmt.row_bytes(k)
    counts = []
    for opcode, extra in (("MV", {}), ("MM", dict(m=1, a_stride=k, out_stride=4 * n))):
        program = encode_program([
            make("LD", buf=Buffer.WGT, buf_addr=0, channel=0, hbm_addr=0, rows=n, row_bytes=rb, hbm_stride=rb,
                 buf_stride=rb),
            make("LD", buf=Buffer.ACT, buf_addr=0, channel=0, hbm_addr=4096, rows=1, row_bytes=k,
                 release=1 << Unit.MPE),
            make(opcode, n=n, k=k, a_addr=0, w_buf=Buffer.WGT, w_addr=0, w_stride=rb, w_bits=fmt.bits_code,
                 out_mode=OutMode.ACC32, out_addr=0, wait=1 << Unit.LD, release=1 << Unit.ST, **extra),
            make("ST", buf=Buffer.ACC, buf_addr=0, channel=0, hbm_addr=8192, rows=1, row_bytes=4 * n,
                 wait=1 << Unit.MPE),
            make("SYS", op=SysOp.END)])
        m = Machine(CFG, {ch: 1 << 15 for ch in range(CFG.mem_channels)})
        counts.append(m.run(program).instructions)
    assert counts == [{"LD": 2, "MV": 1, "ST": 1, "SYS": 1}, {"LD": 2, "MM": 1, "ST": 1, "SYS": 1}]
