"""What the weight-stationary prefill array's benches share (tests/test_prefill_array.py in Amaranth's simulator,
cocotb_prefill_array.py on the Verilog with DSP48E2 instances): the cycle plan that loads each k block's weights
under the pass before it, the operands packed as the ports take them, the expected sums, and the cases."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from flightc.hw.prefill_array import load_gap
from flightc.isa.table import group_scale_max

# the Verilog bench's array: short chains but for one case at the longest exact chain (below)
CHAINS, LENGTH, BLOCKS = 3, 8, 3


@dataclass
class Case:
    """q [chains, blocks, length] stored W4 weights, mult [chains, blocks] group multipliers, x [tokens, blocks x
    length] activations (unsigned bytes where ``unsigned``)."""

    q: np.ndarray
    mult: np.ndarray
    x: np.ndarray
    unsigned: bool

    @property
    def pairs(self) -> int:
        return self.x.shape[0] // 2

    def expected(self) -> np.ndarray:
        """[tokens, chains]: each token's integer dot product with each chain's row, q times its block's
        multiplier."""
        chains, blocks, length = self.q.shape
        w = (self.q * self.mult[:, :, None]).reshape(chains, blocks * length).astype(np.int64)
        return self.x.astype(np.int64) @ w.T


def cases(rng: np.random.Generator, chains: int, blocks: int, length: int, pairs: int) -> list[Case]:
    """Random signed and unsigned operands, and the extremes: every q at its minimum (-8), the largest multiplier,
    activations at 255 and 0 (unsigned) or -128 and 127 (signed), which fill the low field at the longest chain."""
    gmax = group_scale_max(4)
    out = []
    for unsigned in (False, True):
        lo, hi = (0, 256) if unsigned else (-128, 128)
        out.append(Case(rng.integers(-8, 8, (chains, blocks, length)), rng.integers(1, gmax + 1, (chains, blocks)),
                        rng.integers(lo, hi, (2 * pairs, blocks * length)), unsigned))
        ends = [255, 0] if unsigned else [-128, 127]
        out.append(Case(np.full((chains, blocks, length), -8), np.full((chains, blocks), gmax),
                        rng.choice(ends, (2 * pairs, blocks * length)), unsigned))
    return out


def schedule(chains: int, blocks: int, length: int, pairs: int) -> tuple[dict, dict]:
    """Per cycle, the chain loaded (block, chain) and the pair in (block, pair): block 0's weights first, each next
    block's under the pass before as soon as the array allows (``load_gap`` after its swap), each pass once its
    weights are in and the pass before is."""
    loads, ins = {c: (0, c) for c in range(chains)}, {}
    start, load_at = chains, 0
    for b in range(blocks):
        for p in range(pairs):
            ins[start + p] = (b, p)
        if b + 1 < blocks:
            load_at = max(start + load_gap(length), load_at + chains)
            for c in range(chains):
                loads[load_at + c] = (b + 1, c)
            start = max(start + pairs, load_at + chains)
    return loads, ins


def packed(values, bits: int) -> int:
    """``values`` as one little-endian integer of ``bits`` each (two's complement)."""
    out = 0
    for i, v in enumerate(values):
        out |= (int(v) & ((1 << bits) - 1)) << (bits * i)
    return out


def ports_at(case: Case, cycle: int, loads: dict, ins: dict) -> dict[str, int]:
    """Every input port's value in ``cycle`` of the plan."""
    length = case.q.shape[2]
    v = {"load": int(cycle in loads), "valid": int(cycle in ins), "a_unsigned": int(case.unsigned)}
    if cycle in loads:
        b, c = loads[cycle]
        v.update(load_chain=c, weights=packed(case.q[c, b], 8), mult=int(case.mult[c, b]))
    if cycle in ins:
        b, p = ins[cycle]
        cols = case.x[2 * p:2 * p + 2, b * length:(b + 1) * length]
        v.update(pair=p, first=int(b == 0), swap=int(p == 0), acts=packed(cols.T.reshape(-1), 8))
    else:
        v.update(swap=0)
    return v


def unpack_sums(word: int, chains: int, acc_bits: int = 32) -> list[tuple[int, int]]:
    """``rd_data``'s two signed sums of each chain."""
    out = []
    for c in range(chains):
        f = [(word >> ((2 * c + k) * acc_bits)) & ((1 << acc_bits) - 1) for k in range(2)]
        out.append(tuple(v - (1 << acc_bits) if v >> (acc_bits - 1) else v for v in f))
    return out

