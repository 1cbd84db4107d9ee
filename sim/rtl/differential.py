"""Run the same program on the functional simulator and on the RTL and compare every memory byte."""
from __future__ import annotations

from dataclasses import dataclass

from flightc.config import HardwareConfig
from flightc.errors import ProgramError
from flightc.sim.functional import Machine
from flightc.sim.rtl.backend import RtlSimulator
from flightc.sim.rtl.random_programs import MultiCoreCase, RandomCase

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
    """The channels, then a span per core's instruction stream."""
    return max(1 << 20, (cfg.mem_channels + cfg.num_cores + 1) * CHANNEL_SPAN)


def run_fsim(cfg: HardwareConfig, case: RandomCase | MultiCoreCase) -> dict[int, bytes]:
    m = Machine(cfg, case.extent, check_hazards=True)
    for ch, img in case.images.items():
        m.write_hbm(ch, 0, bytes(img))
    m.run(case.programs if isinstance(case, MultiCoreCase) else case.program)
    return {ch: m.read_hbm(ch, 0, len(img)) for ch, img in case.images.items()}


def run_rtl(sim: RtlSimulator, case: RandomCase | MultiCoreCase, stall_rate: int = 0,
            throttle: bool = True) -> tuple[dict[int, bytes], dict]:
    """Memory after the case and the counters (core 0's; a multi-core case's cycles the longest core's)."""
    from flightc.hw.regs import COUNTERS, core_register

    cfg = sim.cfg
    programs = case.programs if isinstance(case, MultiCoreCase) else [case.program]
    for c in range(cfg.num_cores):
        for ch in range(cfg.mem_channels):
            sim.reg_write(core_register(f"channel_base{ch}", c), ch * CHANNEL_SPAN)
    for ch, img in case.images.items():
        if len(img) > CHANNEL_SPAN:
            raise ProgramError(f"seed {case.seed}: channel {ch} image of {len(img)} bytes exceeds {CHANNEL_SPAN}")
        sim.write_mem(ch * CHANNEL_SPAN, bytes(img) + bytes(-len(img) % cfg.axi_data_bytes))
    for c, program in enumerate(programs):  # each core's stream a channel's span apart
        base = program_base(cfg) + c * CHANNEL_SPAN
        sim.write_mem(base, program + bytes(-len(program) % cfg.axi_data_bytes))
        sim.reg_write(core_register("program_addr", c), base)
        sim.reg_write(core_register("program_bytes", c), len(program))
    counters = sim.run(stall_rate, max_cycles=MAX_CYCLES, throttle=throttle)
    if len(programs) > 1:
        counters["cycles"] = max(sim.reg_read(core_register("cycles", c)) for c in range(len(programs)))
        for name in COUNTERS[1:]:
            counters[name] = sum(sim.reg_read(core_register(name, c)) for c in range(len(programs)))
    return {ch: sim.read_mem(ch * CHANNEL_SPAN, len(img)) for ch, img in case.images.items()}, counters


def compare(sim: RtlSimulator, case: RandomCase | MultiCoreCase, stall_rate: int = 0) -> Outcome:
    want = run_fsim(sim.cfg, case)
    got, counters = run_rtl(sim, case, stall_rate)
    for ch in want:
        if want[ch] != got[ch]:
            diff = [i for i, (a, b) in enumerate(zip(want[ch], got[ch])) if a != b]
            return Outcome(case.seed, False, counters["cycles"],
                           f"channel {ch}: {len(diff)} bytes differ, first at {diff[0]} "
                           f"(fsim {want[ch][diff[0]]:#04x}, rtl {got[ch][diff[0]]:#04x}); blocks: {case.kinds}")
    return Outcome(case.seed, True, counters["cycles"])
