"""The programs the performance model is checked on against the RTL, and how agreement is measured.

Three sets, all on the ``tiny`` preset (small enough to simulate as RTL in seconds):

- *compiled*: every program of a 1-layer LLaMA bundle (mixed 2/4/8-bit weights, 8:16 and 2:4
  sparsity): prefill of 1..4 tokens and decode steps;
- *isolated*: each MPE and SFU instruction of those programs run alone, where the RTL's busy
  counter must equal the timing contract (:mod:`.timing`) exactly;
- *random*: the seeded random programs of the RTL differential test (every class, overlapping
  units), memory without backpressure.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from flightc.bundle import Bundle
from flightc.config import PRESETS, HardwareConfig
from flightc.isa.codec import decode_program

CFG: HardwareConfig = PRESETS["tiny"]
PROMPT = [5, 77, 130, 9]
DECODE = [11, 200, 42]
TOLERANCE = 0.05  # the model's cycle count must be within 5% of the RTL's on every calibration program


@dataclass
class Agreement:
    name: str
    rtl_cycles: int
    model_cycles: int

    @property
    def error(self) -> float:
        """Signed relative error of the model against the RTL."""
        return (self.model_cycles - self.rtl_cycles) / self.rtl_cycles


def calibration_bundle(cfg: HardwareConfig = CFG, kv_bits: int = 8) -> Bundle:
    from flightc.compiler.pipeline import compile_model
    from flightc.compress.plan import CompressionPlan
    from flightc.models.seeded import random_model

    # one 64-wide head: a lane group's 64 slots, so decode streams the keys from their image (ST.img, MV.w_stream)
    model = random_model("llama", 0, num_hidden_layers=1, hidden_size=64, intermediate_size=128, num_attention_heads=1,
                         num_key_value_heads=1)
    plan = CompressionPlan.parse("w4g32s8:16", ["*.down_proj=w8", "*.v_proj=w2g16s2:4"], kv_bits=kv_bits)
    return compile_model(model, cfg, plan, max_len=len(PROMPT) + len(DECODE) + 1, max_prefill=len(PROMPT),
                         prefill_lengths=list(range(1, len(PROMPT) + 1))).bundle


def compiled_steps(bundle: Bundle) -> list[tuple[str, list[int], list[bytes]]]:
    """(name, token ids to write first, per-core program) for every calibration step, in a valid order:
    each prefill length starts a sequence; the decode steps continue the longest prompt."""
    steps = [(f"prefill/{n}", PROMPT[:n], bundle.program("prefill", n)) for n in range(1, len(PROMPT) + 1)]
    steps += [(f"decode/{len(PROMPT) + i}", [t], bundle.program("decode", len(PROMPT) + i)) for i, t in enumerate(DECODE)]
    return steps


def run_compiled(bundle: Bundle, backend) -> list[tuple[str, dict]]:
    """Run the compiled steps on a backend (rtl or perf); the cycle counters of each."""
    ids = bundle.region("io.ids")
    out = []
    for name, tokens, program in compiled_steps(bundle):
        backend.write(ids["channel"], ids["addr"], np.asarray(tokens, "<i4").tobytes())
        out.append((name, backend.run(program).cycles))
    return out


def compiled_agreement(bundle: Bundle) -> list[tuple[Agreement, dict, dict]]:
    """Every compiled step on the RTL and on the performance model: agreement, RTL and model counters."""
    from flightc.runtime.backends import open_backend

    rtl = open_backend("rtl", bundle)
    try:
        measured = run_compiled(bundle, rtl)
    finally:
        rtl.close()
    modeled = run_compiled(bundle, open_backend("perf", bundle))
    return [(Agreement(name, r["cycles"], m["cycles"]), r, m) for (name, r), (_, m) in zip(measured, modeled)]


def model_cycles(programs: list[bytes], cfg: HardwareConfig = CFG) -> dict:
    from flightc.sim.perf.report import busy_counters
    from flightc.sim.perf.schedule import schedule

    return busy_counters(schedule(cfg, [decode_program(p) for p in programs]))
