"""Chrome / Perfetto timeline of modeled steps: a track per unit of each core and per memory channel.

Open the JSON in https://ui.perfetto.dev or chrome://tracing to see which units overlap and where
they wait on each other.
"""
from __future__ import annotations

import json
from pathlib import Path

from flightc.files import write_atomic
from flightc.isa.disasm import format_instruction
from flightc.isa.table import MiscOp, Opcode, Unit
from flightc.sim.perf.schedule import Schedule

MEMORY_PID = 1000  # the process id of the memory-channel tracks


def trace_events(steps: list[tuple[str, Schedule]], detail: bool = True) -> list[dict]:
    """Complete events ('X') in microseconds; steps are laid end to end in the order given."""
    events: list[dict] = []
    if not steps:
        return events
    cfg = steps[0][1].cfg
    us = 1.0 / cfg.clock_mhz
    for c in range(cfg.num_cores):
        events.append({"ph": "M", "name": "process_name", "pid": c, "args": {"name": f"core {c}"}})
        for u in Unit:
            events.append({"ph": "M", "name": "thread_name", "pid": c, "tid": int(u), "args": {"name": u.name}})
    events.append({"ph": "M", "name": "process_name", "pid": MEMORY_PID, "args": {"name": "memory channels"}})
    for ch in range(cfg.mem_channels):
        events.append({"ph": "M", "name": "thread_name", "pid": MEMORY_PID, "tid": ch, "args": {"name": f"ch{ch}"}})
    t0 = 0
    for name, s in steps:
        events.append({"ph": "i", "name": name, "pid": 0, "tid": int(Unit.SYS), "ts": t0 * us, "s": "g"})
        for c, (core, prog) in enumerate(zip(s.cores, s.instructions)):
            for i, ins in enumerate(prog):
                start, dur = (t0 + int(core.start[i])) * us, int(core.end[i] - core.start[i] + 1) * us
                ev = {"ph": "X", "name": ins.cls.name if ins.opcode is not Opcode.MISC else f"MISC {MiscOp(ins.op).name}",
                      "pid": c, "tid": int(ins.unit), "ts": start, "dur": dur}
                if detail:
                    ev["args"] = {"step": name, "index": i, "instruction": format_instruction(ins)}
                events.append(ev)
                if ins.opcode in (Opcode.LD, Opcode.ST):
                    events.append({"ph": "X", "name": f"{ins.cls.name} core {c}", "pid": MEMORY_PID,
                                   "tid": int(core.channels[i]), "ts": start, "dur": dur,
                                   "args": {"bytes": int(core.hbm_bytes[i])}})
        t0 += s.cycles
    return events


def write_trace(steps: list[tuple[str, Schedule]], path: str | Path) -> Path:
    path = Path(path)
    write_atomic(path, json.dumps({"traceEvents": trace_events(steps), "displayTimeUnit": "ns"}))
    return path
