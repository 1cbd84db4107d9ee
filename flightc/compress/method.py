"""How weights are compressed: an optional equalization of the float model, then a weight solver.

Spelled on the command line as ``rtn``, ``gptq``, ``sparsegpt``, ``awq``, ``smoothquant`` or an
equalizer joined to a solver: ``awq+gptq``, ``smoothquant+sparsegpt``; ``gptq-act`` visits columns
in activation order.
"""
from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from flightc.errors import UnsupportedError


class Equalizer(str, Enum):
    NONE = "none"
    AWQ = "awq"
    SMOOTHQUANT = "smoothquant"


class Solver(str, Enum):
    RTN = "rtn"  # round to nearest, magnitude N:M pruning
    GPTQ = "gptq"  # second-order updates; N:M mask from magnitude
    SPARSEGPT = "sparsegpt"  # second-order updates; N:M mask chosen by OBS saliency while quantizing

    @property
    def calibrated(self) -> bool:
        return self is not Solver.RTN


@dataclass(frozen=True)
class Method:
    equalizer: Equalizer = Equalizer.NONE
    solver: Solver = Solver.RTN
    act_order: bool = False

    @property
    def calibrated(self) -> bool:
        return self.equalizer is not Equalizer.NONE or self.solver.calibrated

    def label(self) -> str:
        parts = [] if self.equalizer is Equalizer.NONE else [self.equalizer.value]
        if self.solver is not Solver.RTN or not parts:
            parts.append(self.solver.value + ("-act" if self.act_order else ""))
        return "+".join(parts)

    @classmethod
    def parse(cls, text: str) -> "Method":
        eq, solver, act = Equalizer.NONE, Solver.RTN, False
        for part in text.strip().lower().split("+"):
            if part.endswith("-act"):
                part, act = part[:-4], True
            if part in Equalizer._value2member_map_ and part != "none":
                eq = Equalizer(part)
            elif part in Solver._value2member_map_:
                solver = Solver(part)
            else:
                raise UnsupportedError(f"compression method {text!r}: expected rtn, gptq, sparsegpt, awq, smoothquant "
                                       f"or EQUALIZER+SOLVER such as awq+gptq (add -act to gptq for activation order)")
        if act and solver is Solver.RTN:
            raise UnsupportedError(f"compression method {text!r}: activation order applies to gptq/sparsegpt")
        return cls(eq, solver, act)
