"""The streamed-MV timing by row pairs (sim/perf/streamed_pairs.py) against the cycle-stepped model it stands in for
on large MVs (that one is held to the RTL in tests/rtl/test_perf_calibration.py)."""
from __future__ import annotations

import numpy as np
import pytest

from flightc.compress.formats import WeightFormat
from flightc.config import PRESETS
from flightc.isa.codec import make
from flightc.isa.table import OutMode
from flightc.sim.perf.streamed import streamed_mv_cycles
from flightc.sim.perf.streamed_pairs import pair_model_applies, streamed_mv_cycles_by_pairs, streamed_mv_time

from cards import U280_32

# streamed MVs over 4 masters (hbm4) and over 32 (the u280 on all its channels, tests/cards.py)
CARDS = {"hbm4": PRESETS["hbm4"], "u280-32": U280_32}

FORMATS = [WeightFormat(4, 8, 16, 128), WeightFormat(4, 16, 16, 128), WeightFormat(8, 16, 16, 0),
           WeightFormat(2, 16, 16, 64), WeightFormat(3, 16, 16, 32), WeightFormat(4, 4, 16, 0),
           WeightFormat(8, 2, 16, 0), WeightFormat(4, 2, 4, 16)]


def streamed_mv(cfg, fmt, n, k, mode, span, out_addr=0, lut=False):
    per = cfg.channels_per_master
    return make("MV", n=n, k=k, a_addr=0, w_bits=fmt.bits_code, sparsity=fmt.sparsity, group_log2=fmt.group_log2,
                out_mode=mode, out_addr=out_addr, scale_addr=0, lut=int(lut), w_stream=1, w_channel=0,
                w_stripe=span * per)


@pytest.mark.parametrize("hw", ["hbm4", "u280-32"])
def test_the_pair_model_equals_the_cycle_stepped_one(hw):
    """Random shapes, formats (memory- and compute-bound), output modes and result alignments: the same cycle."""
    cfg = CARDS[hw]
    rng = np.random.default_rng(7)
    wrong = []
    for _ in range(30):
        fmt = FORMATS[rng.integers(len(FORMATS))]
        mode = OutMode(int(rng.integers(4)))
        elem = 1 if mode is OutMode.REQ_I8 else 4
        span = 1 << int(rng.integers(cfg.axi_masters.bit_length()))
        ins = streamed_mv(cfg, fmt, int(rng.integers(1, 1200)), cfg.lane_slots * int(rng.integers(1, 40)), mode, span,
                          out_addr=elem * int(rng.integers(0, 64)), lut=mode is OutMode.REQ_I8 and rng.random() < .5)
        assert pair_model_applies(cfg, ins)
        want, got = streamed_mv_cycles(cfg, ins), streamed_mv_cycles_by_pairs(cfg, ins)
        if want != got:
            wrong.append(f"{fmt.label()} n={ins.n} k={ins.k} {mode.name} over {span}: cycles {want}, pairs {got}")
    assert not wrong, "\n".join(wrong)


def test_a_narrow_port_is_left_to_the_cycle_stepped_model():
    """tiny's 8-byte port feeds the output stage less than a record a cycle: the pair model does not apply there."""
    cfg = PRESETS["tiny"]
    ins = streamed_mv(cfg, WeightFormat(4, 16, 16, 32), 64, 128, OutMode.REQ_I8, 1)
    assert not pair_model_applies(cfg, ins)
    assert streamed_mv_time(cfg, ins) == streamed_mv_cycles(cfg, ins)


def test_a_7b_matrix_streams_near_the_sustained_rate():
    """LLaMA2-7B's MLP up-projection on the u280's 32 channels (11,008 x 4,096, W4 g128 8:16 over 32 masters): the
    pair model takes it in a fraction of the cycle-stepped model's time and puts it within 2% of the channels'
    sustained rate."""
    from flightc.isa.footprint import stream_shape
    from flightc.sim.perf.memory import channel_bytes_per_cycle

    cfg = U280_32
    ins = streamed_mv(cfg, WeightFormat(4, 8, 16, 128), 11008, 4096, OutMode.REQ_I8, cfg.axi_masters)
    cycles = streamed_mv_cycles_by_pairs(cfg, ins)
    ideal = stream_shape(cfg, ins).nbytes / (cfg.mem_channels * channel_bytes_per_cycle(cfg))
    assert ideal < cycles < 1.02 * ideal


@pytest.mark.parametrize("hw", ["hbm4", "u280-32"])
def test_raw_sums_go_a_word_of_pairs_a_cycle(hw):
    """Raw sums (ACC32) from pair-aligned addresses anywhere in a word, over every span: the pair model is the
    cycle-stepped one; and a wide stream of Q·Kᵀ-like rows (dense INT4, 128 columns) takes about a cycle per word of
    scores where a result a cycle took one per score."""
    cfg = CARDS[hw]
    rng = np.random.default_rng(11)
    wrong = []
    for _ in range(20):
        span = 1 << int(rng.integers(cfg.axi_masters.bit_length()))
        fmt = FORMATS[rng.integers(len(FORMATS))]
        ins = streamed_mv(cfg, fmt, int(rng.integers(1, 700)), cfg.lane_slots * int(rng.integers(1, 6)),
                          OutMode.ACC32, span, out_addr=8 * int(rng.integers(0, 64)))
        want, got = streamed_mv_cycles(cfg, ins), streamed_mv_cycles_by_pairs(cfg, ins)
        if want != got:
            wrong.append(f"{fmt.label()} n={ins.n} k={ins.k} over {span} at {ins.out_addr}: cycles {want}, pairs {got}")
    assert not wrong, "\n".join(wrong)
    keys = WeightFormat(4, 16, 16, 0)
    pairs = streamed_mv(cfg, keys, 2048, 128, OutMode.ACC32, cfg.axi_masters)
    one_by_one = pairs.replace(out_addr=4)  # not pair-aligned: a result a cycle
    fast, slow = streamed_mv_cycles_by_pairs(cfg, pairs), streamed_mv_cycles_by_pairs(cfg, one_by_one)
    assert slow > 2048 and fast < slow / 2


@pytest.mark.parametrize("hw", ["hbm4", "u280-32"])
def test_a_tile_read_ahead_agrees_in_both_models(hw):
    """Attention-sized MVs (their shares fit the readers' FIFOs) whose readers started ahead of them, behind the
    beats of the MV before: the pair model is the cycle-stepped one, cycle for cycle, and both report the same
    first cycle every reader has asked for all of its bursts (where the next MV's readers may start)."""
    from flightc.isa.footprint import stream_shape
    from flightc.sim.perf.streamed import Ahead, fits

    cfg = CARDS[hw]
    rng = np.random.default_rng(5)
    wrong, checked = [], 0
    for _ in range(20):
        span = 1 << int(rng.integers(cfg.axi_masters.bit_length()))
        fmt = WeightFormat(8) if rng.random() < 0.5 else WeightFormat(4)
        mode = OutMode.ACC32 if rng.random() < 0.5 else OutMode.REQ_I8
        ins = streamed_mv(cfg, fmt, 2 * span * int(rng.integers(1, 17)), cfg.lane_slots * int(rng.integers(1, 3)),
                          mode, span)
        if not fits(cfg, ins):
            continue
        if stream_shape(cfg, ins).pair_beats < 2:  # left to the cycle-stepped model (streamed_mv_time)
            assert streamed_mv_time(cfg, ins, None, 0, Ahead(ask_from=-50)) == \
                streamed_mv_cycles(cfg, ins, None, 0, Ahead(ask_from=-50))
            continue
        lead = int(rng.integers(1, 200))
        end = float(rng.integers(-lead, 40)) + 0.25 * int(rng.integers(4))  # the MV before's last beat, as it left
        tail = {g: end for g in range(span)}  # every master of a tile alike
        a, b = Ahead(ask_from=1 - lead, tail=dict(tail)), Ahead(ask_from=1 - lead, tail=dict(tail))
        want, got = streamed_mv_cycles(cfg, ins, None, 0, a), streamed_mv_cycles_by_pairs(cfg, ins, None, 0, b)
        if (want, a.asked) != (got, b.asked) or not b.fits:
            wrong.append(f"{fmt.label()} n={ins.n} k={ins.k} {mode.name} over {span}, lead {lead}: cycles {want}, "
                         f"pairs {got}; asked {a.asked}, {b.asked}")
        checked += 1
    assert checked >= 10
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize("hw", ["hbm4", "u280-32"])
def test_a_tile_read_ahead_past_its_fifo_agrees_in_both_models(hw):
    """Weight tiles larger than the readers' FIFOs (MV.w_early) read ahead while the MPE idled for up to a thousand
    cycles: each reader fills its FIFO, then asks for a burst only as the feed makes room, so the arrivals past the
    FIFO's worth follow the pops. The pair model's arrivals (worked out until they agree with its pops) are the
    cycle-stepped model's, cycle for cycle, and reading ahead never makes an MV longer than starting cold."""
    from flightc.sim.perf.streamed import Ahead, fits

    cfg = CARDS[hw]
    rng = np.random.default_rng(9)
    wrong, checked, gains = [], 0, []
    for _ in range(8):
        span = 1 << int(rng.integers(cfg.axi_masters.bit_length()))
        fmt = FORMATS[rng.integers(3)]
        mode = [OutMode.REQ_I8, OutMode.REQ_ADD, OutMode.ACC32][int(rng.integers(3))]
        ins = streamed_mv(cfg, fmt, 2 * span * int(rng.integers(8, 40)), cfg.lane_slots * int(rng.integers(8, 40)),
                          mode, span)
        if fits(cfg, ins):
            continue
        lead = int(rng.integers(1, 1000))
        a, b = Ahead(ask_from=1 - lead), Ahead(ask_from=1 - lead)
        want, got = streamed_mv_cycles(cfg, ins, None, 0, a), streamed_mv_cycles_by_pairs(cfg, ins, None, 0, b)
        if (want, a.asked) != (got, b.asked):
            wrong.append(f"{fmt.label()} n={ins.n} k={ins.k} {mode.name} over {span}, lead {lead}: cycles {want}, "
                         f"pairs {got}; asked {a.asked}, {b.asked}")
        cold = streamed_mv_cycles_by_pairs(cfg, ins)
        gains.append(cold - got)
        checked += 1
    assert checked >= 4
    assert not wrong, "\n".join(wrong)
    assert min(gains) >= 0 and max(gains) > cfg.mem_latency_cycles  # reading ahead saves the latency, or more



@pytest.mark.parametrize("hw", ["hbm4", "u280-32"])
def test_a_streamed_mv_met_again_replays_what_a_fresh_run_gives(hw):
    """streamed_mv_time keeps each outcome by MV and state relative to its start and replays it: over MVs met again
    at other starts, behind masters and MVs before in the same or other relative states, its cycles, the masters'
    shared_until and the read-ahead it reports are those of the models run afresh."""
    from flightc.sim.perf import streamed_pairs
    from flightc.sim.perf.load import LoadPipeline
    from flightc.sim.perf.streamed import Ahead

    cfg = CARDS[hw]
    rng = np.random.default_rng(11)
    span = cfg.axi_masters
    mvs = [streamed_mv(cfg, WeightFormat(4, 8, 16, 128), 2 * span * 8, cfg.lane_slots * 4, OutMode.REQ_I8, span),
           streamed_mv(cfg, WeightFormat(8), 2 * span * 2, cfg.lane_slots, OutMode.ACC32, span)]
    # (masters busy for, readers' first cycle, the MV before's last beat), relative to the start: each pair of
    # states differs in one of them
    states = [(0.0, 1, -1e9), (300.25, 1, -1e9), (0.0, -40, -1e9), (0.0, 1, 200.0), (120.5, -12, 30.0)]

    def run(time, ins, start, busy, ask_from, tail):
        masters = {m: LoadPipeline(cfg, 0.0, x_free=start + busy - 3 * m, slots=[start + busy - 3 * m - 1],
                                   shared_until=start - 5.0) for m in range(span)}
        ahead = Ahead(ask_from=ask_from, tail={m: start + tail for m in range(span)})
        cycles = time(cfg, ins, masters, start, ahead)
        return cycles, [p.shared_until for p in masters.values()], ahead.asked, ahead.beats_end, ahead.fits

    def fresh(cfg, ins, masters, start, ahead):  # the models themselves, as streamed_mv_time picks them
        from flightc.isa.footprint import stream_shape

        fast = ahead.ask_from < 1 and stream_shape(cfg, ins).pair_beats < 2
        by_pairs = pair_model_applies(cfg, ins) and not fast
        return (streamed_mv_cycles_by_pairs if by_pairs else streamed_mv_cycles)(cfg, ins, masters, start, ahead)

    streamed_pairs._RUNS.clear()
    wrong, replays = [], 0
    for k in range(40):
        ins, (busy, ask_from, tail) = mvs[k % 2], states[int(rng.integers(len(states)))]
        start = int(rng.integers(0, 1 << 20))
        kept = len(streamed_pairs._RUNS)
        replayed = run(streamed_mv_time, ins, start, busy, ask_from, tail)
        replays += len(streamed_pairs._RUNS) == kept
        if replayed != run(fresh, ins, start, busy, ask_from, tail):
            wrong.append(f"#{k} at {start}: replayed {replayed[:3]}")
    assert replays >= 20 and len(streamed_pairs._RUNS) == 40 - replays
    assert not wrong, "\n".join(wrong)
