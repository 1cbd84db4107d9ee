"""Run the same program on the functional simulator and on the RTL and compare every memory byte."""
from __future__ import annotations

from dataclasses import dataclass

from flightc.config import HardwareConfig
from flightc.errors import ProgramError
from flightc.sim.functional import Machine
from flightc.sim.rtl.backend import RtlSimulator
from flightc.sim.rtl.random_programs import RandomCase

CHANNEL_SPAN = 1 << 16  # where each channel starts in the RTL's memory (channel * span)
MAX_CYCLES = 2_000_000


@dataclass
class Outcome:
    seed: int
    equal: bool
    cycles: int
    detail: str = ""


def program_base(cfg: HardwareConfig) -> int:
    """Where the instruction stream goes: after the last channel."""
    return cfg.mem_channels * CHANNEL_SPAN


def memory_bytes_for(cfg: HardwareConfig) -> int:
    return max(1 << 20, (cfg.mem_channels + 2) * CHANNEL_SPAN)


def run_fsim(cfg: HardwareConfig, case: RandomCase) -> dict[int, bytes]:
    m = Machine(cfg, case.extent, check_hazards=True)
    for ch, img in case.images.items():
        m.write_hbm(ch, 0, bytes(img))
    m.run(case.program)
    return {ch: m.read_hbm(ch, 0, len(img)) for ch, img in case.images.items()}


def run_rtl(sim: RtlSimulator, case: RandomCase, stall_rate: int = 0,
            throttle: bool = True) -> tuple[dict[int, bytes], dict]:
    cfg = sim.cfg
    for ch in range(cfg.mem_channels):
        sim.reg_write(f"channel_base{ch}", ch * CHANNEL_SPAN)
    for ch, img in case.images.items():
        if len(img) > CHANNEL_SPAN:
            raise ProgramError(f"seed {case.seed}: channel {ch} image of {len(img)} bytes exceeds {CHANNEL_SPAN}")
        sim.write_mem(ch * CHANNEL_SPAN, bytes(img) + bytes(-len(img) % cfg.axi_data_bytes))
    program = case.program
    base = program_base(cfg)
    sim.write_mem(base, program + bytes(-len(program) % cfg.axi_data_bytes))
    sim.reg_write("program_addr", base)
    sim.reg_write("program_bytes", len(program))
    counters = sim.run(stall_rate, max_cycles=MAX_CYCLES, throttle=throttle)
    return {ch: sim.read_mem(ch * CHANNEL_SPAN, len(img)) for ch, img in case.images.items()}, counters


def compare(sim: RtlSimulator, case: RandomCase, stall_rate: int = 0) -> Outcome:
    want = run_fsim(sim.cfg, case)
    got, counters = run_rtl(sim, case, stall_rate)
    for ch in want:
        if want[ch] != got[ch]:
            diff = [i for i, (a, b) in enumerate(zip(want[ch], got[ch])) if a != b]
            return Outcome(case.seed, False, counters["cycles"],
                           f"channel {ch}: {len(diff)} bytes differ, first at {diff[0]} "
                           f"(fsim {want[ch][diff[0]]:#04x}, rtl {got[ch][diff[0]]:#04x}); blocks: {case.kinds}")
    return Outcome(case.seed, True, counters["cycles"])
