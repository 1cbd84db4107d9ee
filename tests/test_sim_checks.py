"""The functional simulator refuses broken programs instead of computing something."""
import numpy as np
import pytest

from conftest import PROMPT
from flightc.errors import ProgramError
from flightc.isa.codec import decode_program, encode_program, make
from flightc.isa.table import Opcode, SysOp, Unit
from flightc.sim.functional import Machine


def _machine(c):
    m = Machine.from_bundle(c.bundle)
    ids = c.bundle.region("io.ids")
    m.write_hbm(ids["channel"], ids["addr"], np.asarray(PROMPT, "<i4").tobytes())
    return m


def _prefill(c):
    return decode_program(c.bundle.program("prefill", len(PROMPT))[0])


def test_the_compiled_program_passes(tiny_w8):
    counters = _machine(tiny_w8).run(encode_program(_prefill(tiny_w8)))
    assert counters.instructions["MM"] > 0 and counters.macs > 0


def test_a_missing_token_is_caught_as_a_race(tiny_w8):
    prog = _prefill(tiny_w8)
    # the first streamed MV waits for the LD of its requantization records; drop that wait and the matching release
    i = next(k for k, ins in enumerate(prog) if ins.opcode is Opcode.MV and ins.w_stream and ins.wait >> Unit.LD & 1)
    j = max(k for k in range(i) if prog[k].opcode is Opcode.LD and prog[k].release >> Unit.MPE & 1)
    prog[i] = prog[i].replace(wait=prog[i].wait & ~(1 << Unit.LD))
    prog[j] = prog[j].replace(release=prog[j].release & ~(1 << Unit.MPE))
    with pytest.raises(ProgramError, match="before the write by core0.LD has been released"):
        _machine(tiny_w8).run(encode_program(prog))


def test_a_wait_nobody_releases_deadlocks(tiny_w8):
    prog = _prefill(tiny_w8)
    prog.insert(0, make(Opcode.MISC, wait=1 << Unit.ST, op=0, rows=0, cols=0))
    with pytest.raises(ProgramError, match="deadlock: .*SFU at instruction 0 .* waits for tokens from \\['ST'\\]"):
        _machine(tiny_w8).run(encode_program(prog))


def test_a_release_nobody_waits_for_is_unbalanced(tiny_w8):
    prog = _prefill(tiny_w8)
    prog[-1] = make(Opcode.SYS, op=SysOp.END, release=1 << Unit.LD)
    with pytest.raises(ProgramError, match="unbalanced tokens.*SYS->LD"):
        _machine(tiny_w8).run(encode_program(prog))


def test_out_of_buffer_access_and_missing_end(tiny_w8):
    m = _machine(tiny_w8)
    bad = make(Opcode.LD, buf=0, buf_addr=(1 << 24) - 4, channel=0, hbm_addr=0, rows=1, row_bytes=64, hbm_stride=64,
               buf_stride=64)
    with pytest.raises(ProgramError, match="beyond the buffer"):
        m.run(encode_program([bad, make(Opcode.SYS, op=SysOp.END)]))
    with pytest.raises(ProgramError, match="does not end with SYS END"):
        m.run(encode_program([make(Opcode.SYS, op=SysOp.NOP)]))


def _alone(cfg, *instrs):
    m = Machine(cfg, {0: 4096})
    m.run(encode_program(list(instrs) + [make("SYS", op=SysOp.END)]))


def test_a_result_partly_overlapping_an_operand_is_refused():
    from flightc.config import Buffer, PRESETS
    from flightc.isa.table import MiscOp

    cfg = PRESETS["tiny"]
    deq = dict(op=MiscOp.DEQ, rows=1, cols=8, src_buf=Buffer.ACT, src_addr=0, src_stride=8, dst_buf=Buffer.ACT,
               dst_stride=32, imm=1, shift=0)
    _alone(cfg, make("MISC", dst_addr=64, **deq))  # apart: fine
    with pytest.raises(ProgramError, match="overlaps an operand"):
        _alone(cfg, make("MISC", dst_addr=4, **deq))  # INT32 results over the INT8 source
    emul = dict(op=MiscOp.EMUL, rows=2, cols=8, src_buf=Buffer.ACT, src_addr=0, src2_addr=64, src_stride=16,
                dst_buf=Buffer.ACT, imm=1, shift=0)
    _alone(cfg, make("MISC", dst_addr=0, dst_stride=16, **emul))  # exactly in place: fine


def test_sparse_positions_must_ascend_within_a_block():
    from flightc.compress.formats import WeightFormat
    from flightc.config import Buffer, PRESETS

    cfg = PRESETS["tiny"]
    fmt = WeightFormat(8, 2, 16)
    m = Machine(cfg, {0: 4096})
    row = bytearray(fmt.row_bytes(16))
    row[2] = 0x35  # positions 5 then 3: not ascending
    m.buf = m.cores[0]
    m.cores[0][Buffer.WGT][:len(row)] = np.frombuffer(bytes(row), np.uint8)
    mv = make("MV", n=1, k=16, w_buf=Buffer.WGT, w_stride=len(row), w_bits=fmt.bits_code, sparsity=fmt.sparsity,
              out_addr=0)
    with pytest.raises(ProgramError, match="distinct and ascending"):
        m.run(encode_program([mv, make("SYS", op=SysOp.END)]))
