"""Seeded random programs (streamed MVs among them, some reading a stream image written a row at a time by
ST.img): the RTL leaves memory exactly as the functional simulator does."""
from __future__ import annotations

import collections

from flightc.config import PRESETS
from flightc.isa.codec import decode_program
from flightc.isa.table import MiscOp, Opcode, OutMode, Sparsity, WeightBits
from flightc.sim.rtl.differential import compare
from flightc.sim.rtl.random_programs import random_case

CFG = PRESETS["tiny"]
SEEDS = range(200)
STALL_RATES = (0, 64, 160)  # probability x 256 that the memory withholds ready/valid in a cycle


def test_random_programs_match_functional_simulator(kernel_sim):
    failing = []
    seen = collections.Counter()
    for seed in SEEDS:
        case = random_case(CFG, seed, streams=True)
        for ins in decode_program(case.program):
            seen[ins.cls.name] += 1
            if ins.opcode is Opcode.MV and ins.w_stream:
                seen["stream"] += 1
                seen[("stream", WeightBits(ins.w_bits), Sparsity(ins.sparsity))] += 1
            if ins.opcode in (Opcode.MM, Opcode.MV):
                seen[("w", WeightBits(ins.w_bits), Sparsity(ins.sparsity), bool(ins.w_kmajor))] += 1
                seen[("out", OutMode(ins.out_mode))] += 1
                seen["acc_in"] += ins.acc_in
            if ins.opcode is Opcode.MISC:
                seen[MiscOp(ins.op)] += 1
                seen["softmax part"] += ins.part != 0
            if ins.opcode is Opcode.LD and ins.gather:
                seen["gather"] += 1
            if ins.opcode is Opcode.ST and ins.pack4:
                seen["pack4"] += 1
            if ins.opcode is Opcode.ST and ins.img:  # a K cache's stream image a row at a time, a V cache's a column
                seen[("img", bool(ins.pack4), bool(ins.img_col))] += 1
            if ins.opcode is Opcode.MV and ins.w_stream and ins.k % CFG.lane_slots:
                seen["k past whole chunks"] += 1
        outcome = compare(kernel_sim, case, STALL_RATES[seed % len(STALL_RATES)])
        if not outcome.equal:
            failing.append(f"seed {seed}: {outcome.detail}")
    assert not failing, "RTL differs from the functional simulator:\n" + "\n".join(failing)
    # the programs must have exercised every class, SFU op, output mode and sparsity pattern
    for name in ("LD", "ST", "MM", "MV", "MISC", "SYS", "gather", "pack4", "stream", "acc_in", "softmax part"):
        assert seen[name] > 0, name
    for op in MiscOp:
        assert seen[op] > 0, op
    for mode in OutMode:
        assert seen[("out", mode)] > 0, mode
    patterns = {k[2] for k in seen if isinstance(k, tuple) and k[0] == "w"}
    widths = {k[1] for k in seen if isinstance(k, tuple) and k[0] == "w"}
    assert patterns == set(Sparsity) and widths == set(WeightBits)
    kmajor = {k[1] for k in seen if isinstance(k, tuple) and k[0] == "w" and k[3]}
    assert kmajor == {WeightBits.B8, WeightBits.B4}  # the INT8 and the INT4 KV cache's V operands
    streamed = {k[1:] for k in seen if isinstance(k, tuple) and k[0] == "stream"}  # streamed MVs: every width, pattern
    assert {w for w, _ in streamed} == set(WeightBits) and {p for _, p in streamed} == set(Sparsity)
    assert seen[("img", False, False)] and seen[("img", True, False)]  # ST.img rows of INT8 and of INT4
    assert seen[("img", False, True)] and seen["k past whole chunks"]  # ST.img_col columns; K mid-chunk
