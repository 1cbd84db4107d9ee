"""Replay the MPE and SFU instructions of a compiled program one by one, each in isolation.

The functional simulator runs the program in program order (a valid schedule: every token points
forward); before each MM, MV or MISC instruction the bytes it reads are captured, and a small
case is built that loads exactly those bytes, runs the instruction alone and stores what it
writes. Running such cases on the RTL pins a model-level mismatch to one instruction.
"""
from __future__ import annotations

import numpy as np

from flightc.config import Buffer, HardwareConfig
from flightc.isa.codec import Instruction, decode_program, make
from flightc.isa.footprint import footprint, stream_spans, streamed
from flightc.isa.table import Opcode, SysOp, Unit
from flightc.sim.functional import Counters, Machine
from flightc.sim.rtl.random_programs import OUT_BYTES, SRC_CHANNEL, RandomCase


def isolate(cfg: HardwareConfig, machine: Machine, ins: Instruction, index: int) -> RandomCase:
    reads, writes = footprint(ins, cfg)
    case = RandomCase(seed=index, images={SRC_CHANNEL: bytearray(), 1: bytearray(OUT_BYTES)})
    src = case.images[SRC_CHANNEL]
    base = 0  # where the loads' sources and the stores' results start: past a streamed MV's tile
    if streamed(ins):  # its tile stays where it is, on the channels it streams from
        spans = stream_spans(cfg, ins)
        base = -(-max(addr + n for _, addr, n in spans) // cfg.stripe_bytes) * cfg.stripe_bytes
        for ch, addr, n in spans:
            image = case.images.setdefault(ch, bytearray())
            image.extend(bytes(max(0, addr + n - len(image))))
            image[addr:addr + n] = machine.read_hbm(ch, addr, n)
        src.extend(bytes(max(0, base - len(src))))
    loads = []
    for acc in reads:
        if acc.space[0] != "buf":
            continue
        b = Buffer(acc.space[1])
        data = machine.buf[b][acc.indices()].tobytes()
        addr = len(src)
        src += data
        loads.append(make("LD", buf=b, buf_addr=acc.addr, channel=SRC_CHANNEL, hbm_addr=addr, rows=acc.rows,
                          row_bytes=acc.width, hbm_stride=acc.width, buf_stride=acc.stride))
    unit = ins.unit
    loads[-1] = loads[-1].replace(release=1 << unit)
    case.instructions += loads
    case.instructions.append(ins.replace(wait=1 << Unit.LD, release=1 << Unit.ST))
    out = base
    for k, acc in enumerate(writes):
        case.instructions.append(make("ST", buf=acc.space[1], buf_addr=acc.addr, channel=1, hbm_addr=out,
                                      rows=acc.rows, row_bytes=acc.width, hbm_stride=acc.width, buf_stride=acc.stride,
                                      wait=(1 << unit) if k == 0 else 0))
        out += acc.rows * acc.width
    if out > len(case.images[1]):
        case.images[1].extend(bytes(out - len(case.images[1])))
    case.instructions.append(make("SYS", op=SysOp.END))
    src += bytes(-len(src) % 8 or 8)
    case.kinds.append(f"#{index} {ins.cls.name}")
    return case


def isolated_cases(cfg: HardwareConfig, extent: dict[int, int], images: dict[int, bytes], program: bytes):
    """Yield (index, instruction, case) for every MPE/SFU instruction of ``program`` (one core)."""
    m = Machine(cfg, extent, check_hazards=False)
    for ch, img in images.items():
        m.write_hbm(ch, 0, img)
    c = Counters()
    for i, ins in enumerate(decode_program(program)):
        if ins.opcode in (Opcode.MM, Opcode.MV, Opcode.MISC):
            m.buf = m.cores[0]
            yield i, ins, isolate(cfg, m, ins, i)
        if ins.opcode is not Opcode.SYS:
            m._execute(0, ins, c)
    _ = np
