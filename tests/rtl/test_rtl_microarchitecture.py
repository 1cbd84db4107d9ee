"""The memory calibration preset, ``hbm4``: the u280's memory system scaled down to four HBM2 pseudo-channels with
a 512-bit master each (64-cycle latency, eight 16-beat bursts in flight, each channel throttled to its sustained
rate), three SFU lanes and a 76-bit divider. Its kernel stays byte-identical with the functional simulator, the
timing contract stays exact per instruction and within the usual bounds per program, and a matrix striped over
the four channels streams at the channels' sustained rate on every one of them, as the performance model says.
Every test of hbm4's kernel lives here, so a test run's workers never wait for one another's build of it."""
from __future__ import annotations

import pytest

from conftest import compiled, run_steps
from flightc.config import PRESETS, Buffer
from flightc.hw.axi_rules import ST_PAIRED_GROUPS_LOG2
from flightc.isa.codec import decode_program, make
from flightc.isa.table import MiscOp, Opcode, SysOp, Unit
from flightc.records import NORM
from flightc.sim.perf.calibration import TOLERANCE, calibration_bundle, compiled_agreement, model_cycles
from flightc.sim.perf.memory import channel_bytes_per_cycle, throttled
from flightc.sim.perf.timing import instruction_work
from flightc.sim.rtl.differential import CHANNEL_SPAN, compare, memory_bytes_for, run_rtl
from flightc.sim.rtl.random_programs import RandomCase, block_case, random_case, stream_early_case, stream_pair_case
from flightc.sim.rtl.replay import isolated_cases

CFG = PRESETS["hbm4"]
TILE = 32 << 10  # one LD: 8 KiB on each of the four channels
TILES = 8  # 64 KiB a channel in all, into the two halves of the WGT buffer in turn


@pytest.fixture(scope="module")
def sim():
    from flightc.sim.rtl.backend import RtlSimulator

    s = RtlSimulator(CFG, memory_bytes_for(CFG))
    yield s
    s.close()


def test_random_programs_match_the_functional_simulator_and_the_model(sim):
    """Byte-identical with fsim (every other seed with a stalling memory), and without stalls the model within the
    calibration tolerance of the RTL's cycles."""
    failing, off = [], []
    for seed in range(12):
        case = random_case(CFG, seed)
        outcome = compare(sim, case, 64 * (seed % 2))
        if not outcome.equal:
            failing.append(f"seed {seed}: {outcome.detail}")
        elif seed % 2 == 0:
            model = model_cycles([case.program], CFG)["cycles"]
            if abs(model - outcome.cycles) > TOLERANCE * outcome.cycles:
                off.append(f"seed {seed}: rtl {outcome.cycles}, model {model}; blocks {case.kinds}")
    assert not failing, "\n".join(failing)
    assert not off, "\n".join(off)


def test_streamed_mvs_over_four_masters_match_fsim_and_their_timing_contract(sim):
    """Streamed MVs on one, two or four masters (throttled channels, 64-cycle latency): byte-identical with fsim in
    random programs (half with a stalling memory), and on their own the model's cycles are the RTL's."""
    failing, wrong = [], []
    for seed in range(12):
        outcome = compare(sim, random_case(CFG, 100 + seed, streams=True), 64 * (seed % 2))
        if not outcome.equal:
            failing.append(f"seed {100 + seed}: {outcome.detail}")
        case = block_case(CFG, seed, "stream")
        wrong += mv_timing_off(sim, case, f"seed {seed} {case.kinds}")
    assert not failing, "\n".join(failing)
    assert not wrong, "\n".join(wrong)


def mv_timing_off(sim, case, label: str) -> list[str]:
    """The case's streamed MV on its own: [] if the RTL's busy_mv is the model's cycles, else what differs."""
    mv = next(i for i in case.instructions if i.opcode is Opcode.MV)
    _, counters = run_rtl(sim, case)
    want = instruction_work(CFG, mv).cycles
    return [] if counters["busy_mv"] == want else [f"{label}: rtl {counters['busy_mv']}, model {want}"]


def test_raw_sums_go_a_word_of_pairs_a_cycle(sim):
    """Streamed MVs writing raw sums (ACC32) from pair-aligned addresses over two and four masters, where the output
    stage takes several groups' pairs a cycle: byte-identical with fsim (half with a stalling memory) and the model's
    cycles are the RTL's."""
    from flightc.sim.perf.streamed import takes_pairs

    cases = []
    for seed in range(400):
        case = block_case(CFG, seed, "stream")
        mv = next(i for i in case.instructions if i.opcode is Opcode.MV)
        if takes_pairs(mv) and mv.w_stripe > CFG.channels_per_master and mv.n > 2:
            cases.append((seed, case, mv))
        if len(cases) == 6:
            break
    assert len(cases) == 6
    failing, wrong = [], []
    for i, (seed, case, mv) in enumerate(cases):
        outcome = compare(sim, case, 64 * (i % 2))
        if not outcome.equal:
            failing.append(f"seed {seed}: {outcome.detail}")
        wrong += mv_timing_off(sim, case, f"seed {seed} n={mv.n}")
    assert not failing, "\n".join(failing)
    assert not wrong, "\n".join(wrong)


def test_stores_keep_their_writes_in_flight_as_the_model_says(sim):
    """Programs whose STs write stream images a row (ST.img) or a column (ST.img_col, a byte a row to a channel of
    its own, formed a cycle apart from one buffer word; with pairs dealt round the masters and an even number of
    rows, the pairs' first rows, then their second rows: "dealt"; over four masters or more two rows a cycle on
    two writers: "paired") at a time, besides plain rows: the ST unit's busy cycles are
    the model's (the bench memory's throttle lifted), every write's response waited for at the 64-cycle latency, and the next ST's writes going while
    the one before awaits its responses (in some cases the unit is busy for fewer cycles than its STs alone take)."""
    from flightc.isa.codec import Instruction

    def stores(case) -> list[Instruction]:
        return [i for i in case.instructions if i.opcode is Opcode.ST]

    def kind(i: Instruction) -> str:
        if not i.img:
            return "plain"
        if not i.img_col:
            return "row"
        if i.img_groups_log2 and i.rows % 2 == 0:  # two rows a cycle on two writers over four groups or more
            return "paired" if i.img_groups_log2 >= ST_PAIRED_GROUPS_LOG2 else "dealt"
        return "col"

    every = {"col", "dealt", "paired", "row", "plain"}
    cases, kinds = [], set()
    for seed in range(300):
        case = block_case(CFG, seed, "stream")
        found = {kind(i) for i in stores(case)}
        if found - kinds or ({"col", "dealt"} & found and len(cases) < 6):
            cases.append((seed, case))
            kinds |= found
        if len(cases) >= 8 and kinds >= every:
            break
    assert kinds >= every
    wrong, overlapped = [], 0
    for seed, case in cases:
        # the bench memory's throttle lifted: the model does not simulate the credit a master's reads (the program's
        # fetch) and ST's writes share, and a write meeting the end of a fetch burst may wait a cycle for it
        _, counters = run_rtl(sim, case, throttle=False)
        want = model_cycles([case.program], CFG).get("busy_st", 0)  # each one's cycles, overlapping in flight
        if counters["busy_st"] != want:
            wrong.append(f"seed {seed} {case.kinds}: rtl {counters['busy_st']}, model {want}")
        overlapped += counters["busy_st"] < sum(instruction_work(CFG, x).cycles for x in stores(case))
        if {"dealt", "paired"} & {kind(i) for i in stores(case)}:  # a column walked out of order lands where fsim says
            outcome = compare(sim, case)
            if not outcome.equal:
                wrong.append(f"seed {seed}: {outcome.detail}")
    assert not wrong, "\n".join(wrong)
    assert overlapped


def test_timing_contract_is_exact_per_instruction(sim):
    bundle = calibration_bundle(CFG)
    extent = {int(k): v for k, v in bundle.manifest.memory_map["extent"].items()}
    wrong, checked = [], 0
    for kind, n in (("prefill", 2), ("decode", 4)):  # MMs too; decode's keys streamed from their image
        for i, ins, case in isolated_cases(CFG, extent, bundle.images, bundle.program(kind, n)[0]):
            _, counters = run_rtl(sim, case)
            model = model_cycles([case.program], CFG)
            # a weight tile (MV.w_early) is read while its loads run: its cycles are the program's, not its own alone
            early = ins.opcode is Opcode.MV and ins.w_early
            want = model["busy_mv"] if early else instruction_work(CFG, ins).cycles
            if counters[f"busy_{ins.cls.name.lower()}"] != want:
                wrong.append(f"{kind}/{n} #{i} {ins.cls.name}: rtl {counters[f'busy_{ins.cls.name.lower()}']}, "
                             f"model {want}")
            stores = model.get("busy_st", 0)  # its results' STs, in flight as they overlap
            if counters["busy_st"] != stores:
                wrong.append(f"{kind}/{n} #{i} ST: rtl {counters['busy_st']}, model {stores}")
            checked += 1
    assert checked >= 30 and not wrong, "\n".join(wrong)
    # and the fields matter: the tiny preset times these instructions differently
    tiny = PRESETS["tiny"]
    assert any(instruction_work(tiny, ins).cycles != instruction_work(CFG, ins).cycles
               for _, ins, _ in isolated_cases(CFG, extent, bundle.images, bundle.program("decode", 4)[0]))


def test_model_within_tolerance_on_compiled_programs(sim):
    """Every prefill and decode step of the calibration model compiled for hbm4 (weights striped over the four
    channels), on the RTL and on the performance model."""
    bad = []
    results = compiled_agreement(calibration_bundle(CFG))
    for a, _, _ in results:
        print(f"{a.name}: rtl {a.rtl_cycles:,} model {a.model_cycles:,} ({a.error:+.2%})")
        if abs(a.error) > TOLERANCE:
            bad.append(f"{a.name}: {a.error:+.2%}")
    assert len(results) == 7 and not bad, "\n".join(bad)


def test_a_striped_matrix_streams_at_the_sustained_rate_of_every_channel(sim):
    """Eight LDs stream a 256 KiB matrix striped over the four channels (1 KiB units, each channel's share one
    linear read by its own master): every channel sustains at least 90% of its sustained bytes per cycle over
    LD's busy time, and the performance model's cycles are within 2% of the RTL's."""
    assert throttled(CFG) and CFG.axi_masters == CFG.mem_channels == 4
    rate = channel_bytes_per_cycle(CFG)
    unit = CFG.stripe_bytes
    share = TILE // CFG.mem_channels
    images = {ch: bytearray((i * 7 + 3 * ch + 1) % 251 for i in range(TILES * share)) for ch in range(4)}
    assert all(len(img) <= CHANNEL_SPAN for img in images.values())
    case = RandomCase(0, {**images})
    half = CFG.buffer_bytes(Buffer.WGT) // 2
    assert TILE <= half
    lds = [make("LD", buf=Buffer.WGT, buf_addr=(t % 2) * half, channel=0, hbm_addr=t * share, rows=1,
                row_bytes=TILE, hbm_stride=TILE, buf_stride=TILE, stripe=4, stripe_log2=unit.bit_length() - 1,
                release=(1 << 1) if t == TILES - 1 else 0) for t in range(TILES)]
    # the last tile's last unit came from the end of channel 3; its last 64 bytes go to the start of channel 0
    last = (TILES - 1) % 2 * half + TILE - 64
    case.instructions = [*lds, make("ST", buf=Buffer.WGT, buf_addr=last, channel=0, hbm_addr=0, rows=1, row_bytes=64,
                                    hbm_stride=64, buf_stride=64, wait=1),
                         make("SYS", op=SysOp.END)]
    out, counters = run_rtl(sim, case)
    assert out[0][:64] == images[3][-64:] != images[0][:64]  # the stream landed where the layout says
    per_channel = TILES * share / counters["busy_ld"]
    print(f"RTL: {counters['busy_ld']} LD cycles for {TILES * TILE:,} bytes: {per_channel:.2f} of {rate:.2f} bytes "
          f"a cycle on each channel ({per_channel / rate:.1%}); run {counters['cycles']} cycles")
    assert per_channel >= 0.9 * rate
    model = model_cycles([case.program], CFG)
    assert model["busy_ld"] == pytest.approx(counters["busy_ld"], rel=0.02)
    assert model["cycles"] == pytest.approx(counters["cycles"], rel=0.02)


def test_a_streamed_mv_takes_its_weights_at_the_sustained_rate_of_every_channel(sim):
    """One streamed MV of 384 x 1,024 W4 g128 weights (204 KiB of stream image, a quarter on each channel): its lane
    groups take the four channels' beats at >= 85% of their sustained rate over the MV's whole busy time (the
    activation copy and the memory's latency included), its results are fsim's, and the model's cycles are the
    RTL's (measured 2026-12-02: 967 cycles, 54.0 of 59.0 bytes a cycle on each channel, 91.5%; the model 968)."""
    import numpy as np

    from flightc import numerics as nm
    from flightc.compress.formats import WeightFormat, group_scale_max
    from flightc.compress.packing import pack_weight
    from flightc.compress.quantize import QuantWeight
    from flightc.compress.stream import stream_image
    from flightc.isa.footprint import stream_shape, stripe_layout
    from flightc.isa.table import OutMode, Unit
    from flightc.sim.rtl.differential import run_fsim

    rng = np.random.default_rng(19)
    fmt, n, k = WeightFormat(4, group=128), 384, 1024
    q = rng.integers(-8, 8, (n, k)).astype(np.int8)
    gs = rng.integers(1, group_scale_max(4) + 1, (n, k // 128)).astype(np.uint8)
    packed = pack_weight(QuantWeight(fmt, q, gs, np.ones(n), None))
    mv = make("MV", n=n, k=k, a_addr=0, w_bits=fmt.bits_code, sparsity=fmt.sparsity, group_log2=fmt.group_log2,
              out_mode=OutMode.REQ_I8, out_addr=k, scale_addr=0, w_stream=1, w_channel=0, w_hbm_addr=0, w_stripe=4,
              wait=1 << Unit.LD, release=1 << Unit.ST)
    shape = stream_shape(CFG, mv)
    image = np.frombuffer(stream_image(packed, shape), np.uint8)
    images = {ch: bytearray() for ch in range(4)}
    units = image.reshape(-1, shape.unit)
    for j, (ch, _, nb) in enumerate(stripe_layout(0, 0, image.size, 4, shape.unit)):
        images[ch] += units[j::4].tobytes()[:nb]
    share = len(images[0])
    records = nm.pack_requant(rng.integers(1 << 30, 1 << 31, n), rng.integers(20, 30, n), rng.integers(-999, 999, n))
    images[0] += rng.integers(0, 256, k).astype(np.uint8).tobytes() + records
    images[1] += bytes(n)
    assert all(len(img) <= CHANNEL_SPAN for img in images.values())
    case = RandomCase(0, images)
    case.instructions = [
        make("LD", buf=Buffer.ACT, buf_addr=0, channel=0, hbm_addr=share, rows=1, row_bytes=k),
        make("LD", buf=Buffer.PRM, buf_addr=0, channel=0, hbm_addr=share + k, rows=1, row_bytes=len(records),
             release=1 << Unit.MPE),
        mv,
        make("ST", buf=Buffer.ACT, buf_addr=k, channel=1, hbm_addr=share, rows=1, row_bytes=n, wait=1 << Unit.MPE),
        make("SYS", op=SysOp.END)]
    out, counters = run_rtl(sim, case)
    assert out == run_fsim(CFG, case)
    rate = channel_bytes_per_cycle(CFG)
    per_channel = share / counters["busy_mv"]
    print(f"RTL: {counters['busy_mv']} MV cycles for {image.size:,} stream bytes: {per_channel:.2f} of {rate:.2f} bytes "
          f"a cycle on each channel ({per_channel / rate:.1%})")
    assert per_channel >= 0.85 * rate
    # the throttle's fractional credit rounds a beat's cycle differently over a thousand beats: a cycle or so
    assert instruction_work(CFG, mv).cycles == pytest.approx(counters["busy_mv"], rel=0.005)


def mvs_against_model(sim, cases) -> tuple[list[str], list[tuple[int, dict]]]:
    """Each case byte-identical with fsim; (the cases whose MVs' busy cycles differ from the model's program, and per
    case the cycles its MVs saved against each on its own, with the RTL's counters)."""
    wrong, saved = [], []
    for seed, case in cases:
        outcome = compare(sim, case, 0)
        assert outcome.equal, f"seed {seed}: {outcome.detail}"
        _, counters = run_rtl(sim, case)
        want = model_cycles([case.program], CFG).get("busy_mv", 0)
        if counters["busy_mv"] != want:
            wrong.append(f"seed {seed} {case.kinds}: rtl {counters['busy_mv']}, model {want}")
        alone = sum(instruction_work(CFG, i).cycles for i in case.instructions if i.opcode is Opcode.MV)
        saved.append((alone - counters["busy_mv"], counters))
    return wrong, saved


def test_the_next_streamed_mv_hides_the_memory_latency(sim):
    """Two streamed MVs back to back over one to four masters: the second one's readers start while the first
    one drains, so the 64-cycle latency is paid once; byte-identical with fsim and exact against the model."""
    cases = [(seed, stream_pair_case(CFG, seed)) for seed in range(8)]
    wrong, saved = mvs_against_model(sim, [(seed, case) for seed, case in cases if case is not None])
    assert not wrong, "\n".join(wrong)
    gains = [gain for gain, _ in saved]
    assert len(gains) >= 6 and min(gains) >= CFG.mem_latency_cycles * 3 // 4, gains


def test_a_weight_tile_is_read_while_the_mpe_waits_for_its_activation(sim):
    """An SFU operation, then a streamed MV that waits for it, whose tile (more than the readers' FIFOs hold) no
    instruction writes (MV.w_early, as the compiler marks a layer's weights): its readers fill their FIFOs while the
    MPE idles and ask for the rest as the feed makes room (hw/mpe.py). Byte-identical with fsim; the model's MV
    cycles are the RTL's, cycle for cycle; the MV is never longer than on its own, shorter wherever the SFU took
    three times the memory's latency, by the latency or more where the feed keeps up with the memory."""
    wrong, saved = mvs_against_model(sim, [(seed, stream_early_case(CFG, seed)) for seed in range(8)])
    assert not wrong, "\n".join(wrong)
    gains = [(gain, counters["busy_misc"]) for gain, counters in saved]
    assert all(gain >= 0 for gain, _ in gains), gains
    assert all(gain > 0 for gain, sfu in gains if sfu > 3 * CFG.mem_latency_cycles), gains
    assert max(gain for gain, _ in gains) >= CFG.mem_latency_cycles, gains


def test_three_stores_are_in_flight_as_attention_issues_them(sim):
    """A value column (one-byte rows, each awaiting its response 64 cycles), a short store, another column, another short
    one — decode's per-head order: with three STs in flight the short one hands off at once behind the column
    still awaiting its responses, and the next column starts sending (the model's busy cycles are the RTL's, and
    in the model three STs overlap)."""
    from flightc.sim.perf.schedule import schedule
    from flightc.isa.codec import decode_program, encode_program

    for seed in range(300):
        case = block_case(CFG, seed, "stream")
        cols = [i for i in case.instructions if i.opcode is Opcode.ST and i.img and i.img_col and i.rows >= 16]
        if cols:
            break
    column = cols[0].replace(wait=0, release=0)
    short = next(i for i in case.instructions if i.opcode is Opcode.ST and not i.img).replace(wait=0, release=0)
    loads = [i for i in case.instructions if i.opcode is Opcode.LD]
    loads[-1] = loads[-1].replace(release=1 << int(Unit.ST))
    body = [column.replace(wait=1 << int(Unit.LD)), short, column, short, column, short]
    case.instructions = [*[i.replace(release=0) for i in loads[:-1]], loads[-1], *body,
                         make("SYS", op=SysOp.END)]
    _, counters = run_rtl(sim, case)
    s = schedule(CFG, [decode_program(encode_program(case.instructions))])
    core = s.cores[0]
    sts = [k for k, i in enumerate(case.instructions) if i.opcode is Opcode.ST]
    most = max(sum(core.start[j] <= core.start[k] < core.end[j] for j in sts) for k in sts)
    assert counters["busy_st"] == model_cycles([case.program], CFG).get("busy_st", 0)
    assert most == 3


def test_heads_pipelined_over_streamed_keys_and_values_are_byte_identical():
    """Two 64-wide heads on hbm4's four masters: K and V streamed from their images, the second head's Q.K^T
    under the first's softmax (two score buffers), the stores interleaved with the heads."""
    bundle = compiled("tiny-llama-hd64", "w4g32", (), "hbm4").bundle
    decode = decode_program(bundle.program("decode", 8)[0])
    assert len({i.src_addr for i in decode if i.opcode is Opcode.MISC and i.op == MiscOp.SOFTMAX}) == 2
    assert any(i.opcode is Opcode.ST and i.img_col for i in decode)
    run_steps(bundle, [("prefill", 8, [1, 5, 9, 3, 7, 2, 8, 4]), ("decode", 8, [11]), ("decode", 9, [200])])


def test_the_sfu_takes_a_chunk_a_cycle_where_its_operands_are_a_word_each(sim):
    """REQ and RMSNORM rows of 768 and 1,536 INT32 elements on hbm4's three lanes: a chunk is 12 bytes of a 64-byte
    word, read as one word or, straddling two, as two (18 words every 16 chunks). The operand reader runs up to
    SFU_READ_AHEAD chunks ahead of the lanes and the write engine writes a word a cycle, so each pass costs the
    words it reads, 1.125 cycles a chunk (two a chunk when the reader ran one chunk ahead); the RTL's cycles are the
    model's."""
    case = block_case(CFG, 0, "misc")
    misc = next(i for i in case.instructions if i.opcode is Opcode.MISC)
    gains_at_a_word = -NORM.gain_offset(0) % CFG.buffer_port_bytes  # as the compiler places a norm's parameters
    wrong, per_chunk = [], {}
    for op, passes in ((MiscOp.REQ, 1), (MiscOp.RMSNORM, 2)):
        busy = {}
        for chunks in (256, 512):
            ins = misc.replace(wait=0, release=0, op=int(op), rows=1, cols=CFG.sfu_lanes * chunks, src_buf=Buffer.ACC,
                               src_addr=0, dst_buf=Buffer.ACT, dst_addr=0, prm_addr=gains_at_a_word, offset=0, window=0,
                               max_given=0, imm=1, shift=0)
            case.instructions = [ins, make("SYS", op=SysOp.END)]
            _, counters = run_rtl(sim, case)
            busy[chunks] = counters["busy_misc"]
            if busy[chunks] != instruction_work(CFG, ins).cycles:
                wrong.append(f"{op.name} x {chunks}: rtl {busy[chunks]}, model {instruction_work(CFG, ins).cycles}")
        per_chunk[op.name] = (busy[512] - busy[256]) / (256 * passes)
    assert not wrong, "\n".join(wrong)
    assert all(v == 18 / 16 for v in per_chunk.values()), per_chunk
