"""The weight-stationary prefill array (hw/prefill_array.py) in Amaranth's simulator: token pairs packed two to a
DSP48E2 against held weights, the next k block's weights loaded under the pass before and swapped in a pair's
wave, the chains' sums split, scaled by their group multipliers and accumulated per pair; every pair's sums equal
the integer dot products of the stored weights (prefill_cases.py), at the longest chain whose low field stays
exact and at the operands' extremes. tests/rtl/test_rtl_blocks.py runs the same plan on the Verilog's DSP48E2
instances."""
from __future__ import annotations

import numpy as np
import pytest
from amaranth.sim import Simulator

from flightc.hw.prefill_array import WeightArray, chain_length_max, check_chain, latency, load_gap, pass_cycles
from flightc.sim.rtl.benches.prefill_cases import Case, cases, ports_at, schedule, unpack_sums


def run_array(case: Case) -> tuple[np.ndarray, int]:
    """``case`` on :func:`schedule`: the partial sums read back [tokens, chains], and the cycles from the first
    pair in to the last."""
    chains, blocks, length = case.q.shape
    dut = WeightArray(chains, length, case.pairs)
    loads, ins = schedule(chains, blocks, length, case.pairs)
    out = np.zeros((2 * case.pairs, chains), np.int64)

    async def bench(ctx):
        for cycle in range(max(ins) + 1):
            for name, value in ports_at(case, cycle, loads, ins).items():
                ctx.set(getattr(dut, name), value)
            await ctx.tick()
        ctx.set(dut.valid, 0)
        ctx.set(dut.load, 0)
        for _ in range(latency(length)):
            await ctx.tick()
        for p in range(case.pairs):
            ctx.set(dut.rd_pair, p)
            await ctx.tick()
            for c, sums in enumerate(unpack_sums(ctx.get(dut.rd_data), chains)):
                out[2 * p:2 * p + 2, c] = sums

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    return out, max(ins) + 1 - min(ins)


def test_pairs_accumulate_over_k_blocks_exactly():
    for case in cases(np.random.default_rng(7), chains=3, blocks=4, length=8, pairs=5):
        got, _ = run_array(case)
        assert (got == case.expected()).all(), case.unsigned


def test_the_longest_exact_chain_at_the_operands_extremes():
    """A chain of chain_length_max(4) = 64 DSPs with every q at -8 against 255 (the low field's largest sum:
    64 x 8 x 255 = 130,560 of 131,071) and the largest multiplier: exact; a chain one longer is refused."""
    length = chain_length_max(4)
    assert length == 64
    for case in cases(np.random.default_rng(8), chains=2, blocks=2, length=length, pairs=2)[1::2]:
        got, _ = run_array(case)
        assert (got == case.expected()).all(), case.unsigned
    with pytest.raises(ValueError, match="at most 64"):
        check_chain(length + 1, 4)


@pytest.mark.parametrize("pairs", [3, 13, 14])
def test_passes_run_back_to_back_with_the_next_weights_loaded_under_them(pairs):
    """Passes long enough to hide the next block's loads (load_gap + chains = 14 pairs here) run back to back: the
    array takes a pair every cycle, 2 x length x chains multiply-accumulates; shorter ones wait for the loads. The
    simulated cycles are pass_cycles' (the closed form a performance model takes)."""
    chains, blocks, length = 2, 3, 8
    assert load_gap(length) + chains == 14
    case = cases(np.random.default_rng(3), chains, blocks, length, pairs)[0]
    got, cycles = run_array(case)
    assert (got == case.expected()).all()
    assert cycles == pass_cycles(chains, length, pairs, blocks)
    assert (cycles == blocks * pairs) == (pairs >= 14)
