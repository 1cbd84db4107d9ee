"""The performance model against the RTL: exact per instruction, within 5% per program."""
from __future__ import annotations

import pytest

from flightc.isa.codec import decode_program, make
from flightc.isa.table import MiscOp, Opcode, SoftmaxPart, SysOp
from flightc.sim.perf.calibration import CFG, TOLERANCE, Agreement, calibration_bundle, compiled_agreement, model_cycles
from flightc.sim.perf.timing import instruction_work
from flightc.sim.rtl.differential import compare, run_fsim, run_rtl
from flightc.sim.rtl.random_programs import RandomCase, block_case, random_case, stream_pair_case
from flightc.sim.rtl.replay import isolated_cases


@pytest.fixture(scope="module")
def bundle():
    return calibration_bundle()


def test_timing_contract_is_exact_for_every_mpe_and_sfu_instruction(kernel_sim, bundle):
    extent = {int(k): v for k, v in bundle.manifest.memory_map["extent"].items()}
    checked, wrong = 0, []
    for kind, n in (("prefill", 4), ("decode", 4)):
        for i, ins, case in isolated_cases(CFG, extent, bundle.images, bundle.program(kind, n)[0]):
            _, counters = run_rtl(kernel_sim, case)
            model = model_cycles([case.program])
            # a weight tile (MV.w_early) is read while its loads run: its cycles are the program's, not its own alone
            early = ins.opcode is Opcode.MV and ins.w_early
            want = model["busy_mv"] if early else instruction_work(CFG, ins).cycles
            got = counters[f"busy_{ins.cls.name.lower()}"]
            stores = model.get("busy_st", 0)  # its results' STs, in flight as they overlap
            if got != want or counters["busy_st"] != stores:
                wrong.append(f"{kind}/{n} #{i} {ins.cls.name}: rtl {got} / ST {counters['busy_st']}, "
                             f"model {want} / ST {stores}")
            checked += 1
    assert checked >= 40
    assert not wrong, "\n".join(wrong)


def test_timing_contract_is_exact_for_every_ld_alone_and_in_pairs(kernel_sim, bundle):
    """Every LD of a prompt and a decode step of the calibration model (a gathered embedding row, plain and striped
    rows, a column of many few-byte rows), alone and with the LD after it: the model's busy cycles and total cycles
    are the RTL's (hw/load.py's issuer pipeline, sim/perf/load.py: the stripe decided before the first row, each
    burst sized the cycle before it is asked for, a gathered row's address from its id)."""
    wrong, checked, gathers = [], 0, 0
    for kind, n in (("prefill", 2), ("decode", 4)):
        lds = [i.replace(wait=0, release=0) for i in decode_program(bundle.program(kind, n)[0])
               if i.opcode is Opcode.LD]
        gathers += sum(1 for i in lds if i.gather)
        for k in range(len(lds)):
            for body in ([lds[k]], lds[k:k + 2]) if k + 1 < len(lds) else ([lds[k]],):
                case = RandomCase(0, {ch: bytearray(img) for ch, img in bundle.images.items()},
                                  [*body, make("SYS", op=SysOp.END)])
                _, counters = run_rtl(kernel_sim, case)
                model = model_cycles([case.program])
                got, want = (counters["busy_ld"], counters["cycles"]), (model["busy_ld"], model["cycles"])
                if got != want:
                    wrong.append(f"{kind}/{n} LD {k} (+{len(body) - 1}): rtl {got}, model {want}")
                checked += 1
    assert checked >= 30 and gathers >= 2
    assert not wrong, "\n".join(wrong)


LD_TOLERANCE = 0.10  # LD's busy cycles: see below


def test_model_within_tolerance_on_compiled_programs(bundle):
    """Every step's cycles within 5% (measured 2026-12-05: within 1.8%), and every unit's busy cycles within 5%
    but LD's within 10%: the model puts LD 4.3-9.6% under the RTL (an LD beside a streamed MV's reader reading its
    tile ahead, which takes the master's free slots while the LD decides its stripe), though each LD alone and each
    pair of them is exact (docs/performance.md, "Checked against the RTL")."""
    bad = []
    results = compiled_agreement(bundle)
    for a, r, m in results:
        print(f"{a.name}: rtl {a.rtl_cycles:,} model {a.model_cycles:,} ({a.error:+.2%})")
        if abs(a.error) > TOLERANCE:
            bad.append(f"{a.name}: {a.error:+.2%}")
        for key, v in r.items():  # every unit's busy cycles too
            bound = LD_TOLERANCE if key == "busy_ld" else TOLERANCE
            if key.startswith("busy_") and v > 1000 and abs(m.get(key, 0) - v) > bound * v:
                bad.append(f"{a.name} {key}: rtl {v}, model {m.get(key, 0)}")
    assert len(results) == 7
    assert not bad, "\n".join(bad)


def test_model_within_tolerance_on_random_programs(kernel_sim):
    bad = []
    for seed in range(40):
        case = random_case(CFG, seed)
        _, counters = run_rtl(kernel_sim, case)
        a = Agreement(f"seed {seed}", counters["cycles"], model_cycles([case.program])["cycles"])
        if abs(a.error) > TOLERANCE:
            bad.append(f"{a.name}: rtl {a.rtl_cycles}, model {a.model_cycles} ({a.error:+.2%}); blocks {case.kinds}")
    assert not bad, "\n".join(bad)


def test_timing_contract_is_exact_for_every_sfu_operation(kernel_sim):
    """An SFU instruction on its own (every operation the random blocks draw: the norms, softmax with its window,
    RoPE, EMUL, DEQ and DEQ_ADD at any alignment): the model's cycles are the RTL's busy_misc, cycle for cycle."""
    wrong, ops, given = [], set(), 0
    for seed in range(40):
        case = block_case(CFG, seed, "misc")
        ins = next(i for i in case.instructions if i.opcode is Opcode.MISC)
        ops.add(MiscOp(ins.op))
        given += ins.max_given
        _, counters = run_rtl(kernel_sim, case)
        if counters["busy_misc"] != instruction_work(CFG, ins).cycles:
            wrong.append(f"seed {seed} {MiscOp(ins.op).name}: rtl {counters['busy_misc']}, "
                         f"model {instruction_work(CFG, ins).cycles}")
    assert not wrong, "\n".join(wrong)
    assert ops >= {MiscOp.RMSNORM, MiscOp.LAYERNORM, MiscOp.SOFTMAX, MiscOp.DEQ, MiscOp.DEQ_ADD}
    assert given >= 1  # a softmax that reads its row maximum (max_given) rather than finding it


def test_timing_contract_is_exact_for_every_buffered_mm_and_mv(kernel_sim):
    """An MM or MV through a buffer on its own (any format, output mode and alignment; some K-major, some starting
    from partial sums, acc_in): the model's cycles are the RTL's busy_mm / busy_mv, and its results fsim's."""
    wrong, partial = [], 0
    for seed in range(24):
        case = block_case(CFG, seed, "mpe")
        ins = next(i for i in case.instructions if i.opcode in (Opcode.MM, Opcode.MV))
        partial += ins.acc_in
        memory, counters = run_rtl(kernel_sim, case)
        got, want = counters[f"busy_{ins.cls.name.lower()}"], instruction_work(CFG, ins).cycles
        same = memory == run_fsim(CFG, case)
        if got != want or not same:
            wrong.append(f"seed {seed} {case.kinds}: rtl {got}, model {want}{'' if same else '; results differ'}")
    assert not wrong, "\n".join(wrong)
    assert partial >= 3


def test_timing_contract_is_exact_for_every_part_of_a_blocked_softmax(kernel_sim):
    """SOFTMAX's parts (ISA 1.11: MAX and SUM, first or not, and NORM; rows that see none of the block among them):
    the model's cycles are the RTL's busy_misc, and its results (probabilities and rows' statistics) fsim's."""
    wrong, parts = [], set()
    for seed in range(24):
        case = block_case(CFG, seed, "softmax_part")
        ins = next(i for i in case.instructions if i.opcode is Opcode.MISC)
        parts.add((SoftmaxPart(ins.part), bool(ins.first)))
        memory, counters = run_rtl(kernel_sim, case)
        same = memory == run_fsim(CFG, case)
        if counters["busy_misc"] != instruction_work(CFG, ins).cycles or not same:
            wrong.append(f"seed {seed} {case.kinds}: rtl {counters['busy_misc']}, model "
                         f"{instruction_work(CFG, ins).cycles}{'' if same else '; results differ'}")
    assert not wrong, "\n".join(wrong)
    assert parts == {(p, f) for p in (SoftmaxPart.MAX, SoftmaxPart.SUM) for f in (False, True)} | {
        (SoftmaxPart.NORM, False)}


def test_an_empty_row_ends_on_time(kernel_sim):
    """MISC with cols 0 (every op but RoPE, whose head size must divide cols): the SFU's pipelined passes find no
    chunk to wait for and end in the model's cycles instead of hanging."""
    case = block_case(CFG, 0, "misc")
    misc = next(i for i in case.instructions if i.opcode is Opcode.MISC)
    end = case.instructions[-1]
    assert end.opcode is Opcode.SYS and end.op == SysOp.END
    wrong = []
    for op in (MiscOp.DEQ, MiscOp.REQ, MiscOp.EMUL, MiscOp.DEQ_ADD, MiscOp.SOFTMAX):
        empty = misc.replace(wait=0, release=0, cols=0, op=int(op))
        case.instructions = [empty, end]
        _, counters = run_rtl(kernel_sim, case)
        if counters["busy_misc"] != instruction_work(CFG, empty).cycles:
            wrong.append(f"{op.name}: rtl {counters['busy_misc']}, model {instruction_work(CFG, empty).cycles}")
    assert not wrong, "\n".join(wrong)


def test_timing_contract_is_exact_for_streamed_mvs(kernel_sim):
    """A streamed MV on its own (every width, pattern, group size and output mode the random blocks draw): the
    model's cycles are the RTL's busy_mv, cycle for cycle (raw sums with their maximum, out_max, too)."""
    wrong, maxima = [], 0
    for seed in range(40):
        case = block_case(CFG, seed, "stream")
        mv = next(i for i in case.instructions if i.opcode is Opcode.MV)
        maxima += mv.out_max
        _, counters = run_rtl(kernel_sim, case)
        want = instruction_work(CFG, mv).cycles
        if counters["busy_mv"] != want:
            wrong.append(f"seed {seed} {case.kinds}: rtl {counters['busy_mv']}, model {want}")
    assert not wrong, "\n".join(wrong)
    assert maxima >= 1


def test_a_streamed_mv_that_starts_as_it_reaches_its_queues_head_waits_for_its_tile_plan(kernel_sim):
    """A streamed MV dispatched after its loads are done (NOPs between them) starts as it reaches the MPE queue's
    head, before the head's tile plan is done (hw/tile_plan.py): it waits in T for its own, TILE_PLAN_STAGES + 1
    cycles, and the model's MV cycles are the RTL's, cycle for cycle, its results byte-identical with fsim."""
    from flightc.hw.latency_rules import TILE_PLAN_STAGES

    wrong, failing = [], []
    for seed in range(6):
        case = block_case(CFG, seed, "stream")
        at = next(k for k, i in enumerate(case.instructions) if i.opcode is Opcode.MV)
        case.instructions[at:at] = [make("SYS", op=SysOp.NOP) for _ in range(64)]
        outcome = compare(kernel_sim, case, 0)
        if not outcome.equal:
            failing.append(f"seed {seed}: {outcome.detail}")
        _, counters = run_rtl(kernel_sim, case)
        mv = case.instructions[at + 64]
        want = model_cycles([case.program])["busy_mv"]
        if counters["busy_mv"] != want or want != instruction_work(CFG, mv).cycles + TILE_PLAN_STAGES + 1:
            wrong.append(f"seed {seed} {case.kinds}: rtl {counters['busy_mv']}, model {want}, alone "
                         f"{instruction_work(CFG, mv).cycles}")
    assert not failing, "\n".join(failing)
    assert not wrong, "\n".join(wrong)


def test_model_on_random_programs_with_streamed_mvs(kernel_sim):
    """Streamed MVs among the other blocks: their readers share master 0 with LD (which the read channel serves
    first) and the model queues them behind LD's bursts in flight rather than interleaving the two, so single
    programs miss by up to about 15% (14.1% at worst, measured over 80 seeds) while the average stays within 2%."""
    errors = []
    for seed in range(40):
        case = random_case(CFG, seed, streams=True)
        _, counters = run_rtl(kernel_sim, case)
        errors.append(Agreement(f"seed {seed}", counters["cycles"], model_cycles([case.program])["cycles"]).error)
    print(f"mean |error| {sum(map(abs, errors)) / len(errors):.2%}, worst {max(map(abs, errors)):.2%}")
    assert sum(map(abs, errors)) / len(errors) <= 0.02
    assert max(map(abs, errors)) <= 0.15


def test_the_next_streamed_mv_read_ahead_keeps_the_contract(kernel_sim):
    """Two streamed MVs back to back whose tiles fit the readers' FIFOs: the second one's readers start once the
    first one's have asked for all of their bursts (hw/mpe.py), its results stay byte-identical with fsim, and
    the model's MV cycles are the RTL's, cycle for cycle — fewer than the two MVs' on their own."""
    wrong, failing, ahead = [], [], 0
    for seed in range(24):
        case = stream_pair_case(CFG, seed)
        if case is None:
            continue
        outcome = compare(kernel_sim, case, 0)
        if not outcome.equal:
            failing.append(f"seed {seed}: {outcome.detail}")
        _, counters = run_rtl(kernel_sim, case)
        want = model_cycles([case.program]).get("busy_mv", 0)
        alone = sum(instruction_work(CFG, i).cycles for i in case.instructions if i.opcode is Opcode.MV)
        if counters["busy_mv"] != want:
            wrong.append(f"seed {seed} {case.kinds}: rtl {counters['busy_mv']}, model {want} (alone {alone})")
        ahead += counters["busy_mv"] < alone
    assert not failing, "\n".join(failing)
    assert not wrong, "\n".join(wrong)
    assert ahead >= 10  # tiny's 16-cycle latency: about 8 cycles saved where the second tile was read ahead

