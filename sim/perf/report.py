"""What a schedule means for users: time, unit and memory utilization, and the roofline it is held to."""
from __future__ import annotations

from dataclasses import asdict, dataclass

from flightc.config import HardwareConfig
from flightc.isa.footprint import mpe_macs
from flightc.isa.table import Opcode, Unit
from flightc.sim.perf.schedule import Schedule, covered


@dataclass
class StepReport:
    """One step (one prefill or one decode program) on the modeled hardware."""

    name: str
    cycles: int
    seconds: float
    unit_busy: dict[str, float]  # fraction of the step each unit was busy, averaged over cores
    hbm_read_bytes: int
    hbm_written_bytes: int
    hbm_utilization: float  # bytes moved / (step time x peak bandwidth of all channels)
    macs: int
    mpe_utilization: float  # MACs / (cycles x peak MACs per cycle of all cores)
    roofline_seconds: float  # the larger of bytes / peak bandwidth and MACs / peak compute
    bound: str  # which roof is the lower bound: "memory" or "compute"

    def to_dict(self) -> dict:
        return asdict(self)


def step_report(name: str, s: Schedule) -> StepReport:
    cfg: HardwareConfig = s.cfg
    seconds = s.cycles / (cfg.clock_mhz * 1e6)
    busy: dict[str, float] = {}
    read = written = macs = 0
    for core, prog in zip(s.cores, s.instructions):
        for u in Unit:
            sel = core.units == int(u)
            if sel.any():
                busy[u.name] = busy.get(u.name, 0.0) + float(covered(core.start[sel] - 1, core.end[sel]))
        read += int(core.hbm_bytes[core.opcodes != int(Opcode.ST)].sum())  # LD, and the streamed MVs' weights
        written += int(core.hbm_bytes[core.opcodes == int(Opcode.ST)].sum())
        macs += sum(mpe_macs(i) for i in prog if i.opcode in (Opcode.MM, Opcode.MV))
    span = max(1, s.cycles) * cfg.num_cores
    bandwidth, peak = cfg.mem_bytes_per_s, cfg.peak_macs_per_s
    t_mem, t_mac = (read + written) / bandwidth, macs / peak
    return StepReport(name, s.cycles, seconds, {u: b / span for u, b in busy.items()}, read, written,
                      (read + written) / (seconds * bandwidth) if seconds else 0.0, macs,
                      macs / (span * cfg.dsp_per_core * cfg.macs_per_dsp) if s.cycles else 0.0,
                      max(t_mem, t_mac), "memory" if t_mem >= t_mac else "compute")


def busy_counters(s: Schedule) -> dict[str, int]:
    """The RTL's cycle counters (hw/regs.py) as the model predicts them: cycles and busy_<class>."""
    out = {"cycles": s.cycles}
    for cls, v in s.busy_per_class().items():
        out[f"busy_{cls.lower()}"] = v
    return out
