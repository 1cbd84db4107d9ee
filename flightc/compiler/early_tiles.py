"""Pass ``early_tiles``: mark the streamed MVs whose tiles no instruction of the step writes (MV.w_early, ISA 1.9).

A layer's weights are written by the host before the run and never by the program, so the MPE's readers may fetch
them while the MV still waits for its activation (a norm, the gated product): the wait orders the activation, not
the tile. A tile the step writes (a K or V cache's stream image, written a row at a time by ST.img) stays ordered by
its waits. The functional simulator refuses a program that writes a tile marked so (sim.hazards).
"""
from __future__ import annotations

from flightc.compiler.footprints import footprint_once
from flightc.config import HardwareConfig
from flightc.isa.codec import Instruction
from flightc.isa.footprint import AccessIndex, streamed


def mark_early_tiles(cores: list[list[Instruction]], cfg: HardwareConfig) -> list[list[Instruction]]:
    """Each core's program with ``w_early`` set on every streamed MV none of whose tile bytes any core's
    instruction writes (and cleared on the others)."""
    written = AccessIndex((a, ins) for prog in cores for ins in prog for a in footprint_once(ins, cfg)[1]
                          if a.space[0] == "hbm")
    out = []
    for prog in cores:
        marked = []
        for ins in prog:
            if streamed(ins):
                tile = [a for a in footprint_once(ins, cfg)[0] if a.space[0] == "hbm"]
                ins = ins.replace(w_early=int(all(written.first(a) is None for a in tile)))
            marked.append(ins)
        out.append(marked)
    return out
