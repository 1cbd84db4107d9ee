"""cocotb bench: one sparse DSP chain against the dequantizer's definition (flightc.compress.packing).

For every sparsity pattern, weight width, group size and activation signedness, random and
extreme operands are packed as the compiler packs them; the expected dot products come from
unpack_rows (the functional simulator's dequantizer), the DUT sees the raw packed bytes.
"""
from __future__ import annotations

import os

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.triggers import FallingEdge, RisingEdge

from flightc.compress.formats import WeightFormat, group_scale_max
from flightc.compress.packing import pack_weight, unpack_rows
from flightc.compress.quantize import QuantWeight
from flightc.config import load_config
from flightc.hw.latency_rules import CHAIN_LATENCY
from flightc.isa.table import SPARSITY_NM, Sparsity

def le_int(data: bytes) -> int:
    return int.from_bytes(data, "little")


@cocotb.test()
async def chain_matches_dequantizer(dut):
    cfg = load_config(os.environ["FLIGHTC_CONFIG"])
    span_max = int(os.environ["FLIGHTC_SPAN_MAX"])
    L, T = cfg.chain_length, cfg.macs_per_dsp
    rng = np.random.default_rng(int(os.environ.get("FLIGHTC_SEED", "1")))
    Clock(dut.clk, 10, unit="ns", impl="gpi").start()
    dut.rst.value = 0
    dut.enable.value = 1
    await FallingEdge(dut.clk)  # the clock's first rising edge is at time 0, before any operand
    per = int(os.environ.get("FLIGHTC_COUNT", "12"))
    cases = 0
    for sp in Sparsity:
        n_keep, m = SPARSITY_NM[sp]
        span = L * m // n_keep
        for bits in cfg.weight_bits:
            for group in (0, 16, 32, 64):
                if (group and (bits == 8 or group > span)) or span > span_max:
                    continue
                fmt = WeightFormat(bits, n_keep, m, group)
                for rep in range(per):
                    extreme = rep % 3 == 0
                    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
                    q = rng.choice([lo, hi], (1, span)) if extreme else rng.integers(lo, hi + 1, (1, span))
                    keep = None
                    if fmt.sparse:
                        order = np.argsort(rng.random((1, span // m, m)), axis=-1)[..., :n_keep]
                        keep = np.zeros((1, span // m, m), bool)
                        np.put_along_axis(keep, order, True, axis=-1)
                        keep = keep.reshape(1, span)
                        q = np.where(keep, q, 0)
                    valid = L if rep % 4 else int(rng.integers(0, L + 1))
                    nnz = fmt.nnz(span)
                    gmax = group_scale_max(bits)  # the ISA's largest multiplier, always on the extreme draws
                    gs = (np.full if extreme else lambda shape, v: rng.integers(0, v + 1, shape))(
                        (1, span // group if group else 0), gmax).astype(np.uint8)
                    packed = pack_weight(QuantWeight(fmt, q.astype(np.int8), gs, np.ones(1), keep))
                    # lanes past the row's end (valid < L): the DUT sees their values but must ignore them
                    q_ref = q.copy()
                    stored = np.flatnonzero(keep[0]) if fmt.sparse else np.arange(span)
                    q_ref[0, stored[valid:]] = 0
                    ref = pack_weight(QuantWeight(fmt, q_ref.astype(np.int8), gs, np.ones(1), keep))
                    w = unpack_rows(ref, fmt, span)[0].astype(np.int64)
                    unsigned = bool(rep % 2)
                    if extreme:
                        acts = rng.choice([0, 255] if unsigned else [-128, 127], (T, span))
                    else:
                        acts = rng.integers(0, 256, (T, span)) if unsigned else rng.integers(-128, 128, (T, span))
                    raw = packed[0].tobytes()
                    vbytes = (nnz * bits + 7) // 8
                    ibytes = (nnz * fmt.index_bits + 7) // 8
                    vals = raw[:vbytes]
                    window = np.zeros((T, span_max), np.uint8)
                    window[:, :span] = (acts & 0xFF).astype(np.uint8)
                    dut.vals.value = le_int(vals)
                    dut.idx.value = le_int(raw[vbytes:vbytes + ibytes])
                    dut.gsb.value = le_int(raw[vbytes + ibytes:])
                    dut.window.value = le_int(window.tobytes())
                    dut.a_unsigned.value = int(unsigned)
                    dut.bits_code.value = int(fmt.bits_code)
                    dut.sparse.value = int(fmt.sparse)
                    dut.m4.value = int(m == 4)
                    dut.log2n.value = n_keep.bit_length() - 1
                    dut.group_log2.value = fmt.group_log2
                    dut.valid_lanes.value = valid
                    await RisingEdge(dut.clk)  # operands sampled here
                    for _ in range(CHAIN_LATENCY - 1):
                        await RisingEdge(dut.clk)
                    await FallingEdge(dut.clk)  # sums registered
                    for t in range(T):
                        want = int(acts[t] @ w)
                        got = getattr(dut, f"sum{t}").value.to_signed()
                        assert got == want, (f"{fmt.label()} unsigned={unsigned} valid={valid} token {t}: "
                                             f"chain {got}, dequantizer {want}")
                    cases += 1
    dut._log.info("checked %d operand sets", cases)
    assert cases > 0
