"""How close a step's weight traffic alone comes to the memory's sustained bandwidth.

The *weight stream* of a step keeps only what brings weights (the streamed MVs, and the LDs of weight tiles
into the WGT buffer) and drops everything else: no MPE, SFU, attention or stores wait in between. Modeled
by the same schedule as any program, it says what the memory path (masters, bursts in flight,
latency, channel sharing) delivers when nothing else holds it up: the ceiling a decode step's
bandwidth can reach.
"""
from __future__ import annotations

from dataclasses import dataclass

from flightc.bundle import Bundle
from flightc.config import Buffer
from flightc.isa.codec import decode_program, make
from flightc.isa.footprint import stream_spans, streamed
from flightc.isa.table import Opcode, SysOp
from flightc.sim.perf.memory import channel_bytes_per_cycle
from flightc.sim.perf.schedule import schedule


@dataclass(frozen=True)
class WeightStream:
    bytes: int
    cycles: int
    seconds: float
    gbps: float  # bytes / seconds
    sustained_gbps: float  # every channel at its sustained rate
    fraction: float  # gbps / sustained_gbps


def weight_stream(bundle: Bundle, kind: str = "decode", n: int = 1) -> WeightStream:
    """The streamed MVs of weights (not of keys) and weight LDs of one step (``kind`` and ``n`` as
    :meth:`Bundle.program` takes them) on their own."""
    cfg = bundle.config
    keys = {(r["channel"], r["addr"]) for r in bundle.manifest.memory_map["regions"] if r["kind"] == "kv"}
    programs = []
    for prog in bundle.program(kind, n):
        kept = [ins.replace(wait=0, release=0) for ins in decode_program(prog)
                if (ins.opcode is Opcode.LD and ins.buf == Buffer.WGT)
                or (streamed(ins) and (ins.w_channel, ins.w_hbm_addr) not in keys)]  # weights, not keys
        programs.append(kept + [make("SYS", op=SysOp.END)])
    s = schedule(cfg, programs)
    moved = sum(i.row_bytes * i.rows if i.opcode is Opcode.LD else sum(n for *_, n in stream_spans(cfg, i))
                for p in programs for i in p if i.opcode is not Opcode.SYS)
    seconds = s.cycles / (cfg.clock_mhz * 1e6)
    sustained = cfg.mem_channels * channel_bytes_per_cycle(cfg) * cfg.clock_mhz * 1e6 / 1e9
    gbps = moved / seconds / 1e9 if seconds else 0.0
    return WeightStream(moved, s.cycles, seconds, gbps, sustained, gbps / sustained if sustained else 0.0)
