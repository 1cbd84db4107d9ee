"""Pass ``templates``: length-adaptive compilation, one program template per step length.

A step processes ``L`` tokens at positions ``p0 .. p0+L-1`` (a decode step is ``L = 1``; a prompt
is processed in steps of at most ``max_prefill`` tokens). Lowered with its attention buffers sized
for the longest context it will see, a step's program is the same instruction list at every
position except for a few fields — K/V cache addresses, the number of K/V rows read, softmax
lengths and offsets, RoPE and positional-table offsets — and each of those is an affine function of
``p0``. So one template per ``(L, position range)`` plus a patch table (:mod:`flightc.isa.patch`)
serves every position: the runtime adds ``coef * (p0 - p_lo)`` to each patched field.

Ranges are split only where one template cannot serve both sides: where a sliding window starts to
slide, where double-buffered K/V rows stop fitting the KV buffer, and at an optional ``bucket``.
The pass lowers each template at the first, second and last position of its range and refuses, with
the field named, any program that is not affine in between.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from flightc.compiler.lower import lower_step
from flightc.compiler.memory import MemoryMap
from flightc.compiler.tokens import insert_tokens
from flightc.config import Buffer, HardwareConfig
from flightc.errors import UnsupportedError
from flightc.ir.graph import GraphIR
from flightc.isa.codec import Instruction, encode_program
from flightc.isa.patch import patch_entries


@dataclass(frozen=True)
class TemplateSpec:
    """A template serves steps of ``length`` tokens at every start position in ``p_lo .. p_hi``."""

    length: int
    p_lo: int
    p_hi: int

    @property
    def key(self) -> str:
        return f"step/{self.length:04d}/{self.p_lo:05d}"


@dataclass
class StepTemplate:
    spec: TemplateSpec
    streams: list[bytes]  # per core, lowered at p_lo
    patches: list[np.ndarray]  # per core, flightc.isa.patch.PATCH_DTYPE
    counts: dict[str, int]  # instructions per class, all cores


def first_visible(spec_window: int, p0: int) -> int:
    return max(0, p0 - spec_window + 1) if spec_window else 0


def template_specs(graph: GraphIR, cfg: HardwareConfig, length: int, max_len: int,
                   bucket: int | None = None) -> list[TemplateSpec]:
    """Position ranges for steps of ``length`` tokens, cut where one template cannot serve both sides."""
    s = graph.spec
    last = max_len - length
    if last < 0:
        raise UnsupportedError(f"a {length}-token step does not fit max_len {max_len}")
    cuts = set()  # a range ends at each cut
    w = s.sliding_window
    if w and w - 1 < last:
        cuts.add(w - 1)  # from here on, the first visible row moves with the position
    kv = cfg.buffer_bytes(Buffer.KV)

    def window(p0: int) -> int:
        return p0 + length - first_visible(w, p0)

    if 4 * window(last) * s.head_dim > kv >= 4 * window(0) * s.head_dim:
        lo, hi = 0, last  # the last position whose window still double-buffers
        while lo < hi:
            mid = (lo + hi + 1) // 2
            lo, hi = (mid, hi) if 4 * window(mid) * s.head_dim <= kv else (lo, mid - 1)
        cuts.add(lo)
    if bucket:
        cuts.update(range(bucket - 1, last, bucket))
    bounds = sorted(c for c in cuts if c < last) + [last]
    specs, lo = [], 0
    for hi in bounds:
        specs.append(TemplateSpec(length, lo, hi))
        lo = hi + 1
    return specs


def _lowered(graph: GraphIR, cfg: HardwareConfig, mem: MemoryMap, spec: TemplateSpec, p0: int,
             window_cap: int) -> list[list[Instruction]]:
    step = lower_step(graph, cfg, mem, spec.length, p0, window_cap)
    return [insert_tokens(prog, extra) for prog, extra in zip(step.cores, step.extras)]


def build_template(graph: GraphIR, cfg: HardwareConfig, mem: MemoryMap, spec: TemplateSpec) -> StepTemplate:
    """Lower a template and derive its patch table, checking that every field is affine in the position."""
    w = graph.spec.sliding_window
    window_cap = spec.p_hi + spec.length - first_visible(w, spec.p_hi)
    base = _lowered(graph, cfg, mem, spec, spec.p_lo, window_cap)
    samples = []
    if spec.p_hi > spec.p_lo:
        samples.append((1, _lowered(graph, cfg, mem, spec, spec.p_lo + 1, window_cap)))
    if spec.p_hi > spec.p_lo + 1:
        samples.append((spec.p_hi - spec.p_lo, _lowered(graph, cfg, mem, spec, spec.p_hi, window_cap)))
    patches, counts = [], {}
    for core, prog in enumerate(base):
        offsets, fields, coefs = [], [], []
        others = [(d, s[core]) for d, s in samples]
        for d, other in others:
            if len(other) != len(prog) or any(a.opcode != b.opcode for a, b in zip(prog, other)):
                raise UnsupportedError(f"length-adaptive: the {spec.length}-token step lowers to different "
                                       f"instruction sequences at positions {spec.p_lo} and {spec.p_lo + d} "
                                       f"(core {core}); it cannot be patched")
        offset = 0
        for i, ins in enumerate(prog):
            counts[ins.cls.name] = counts.get(ins.cls.name, 0) + 1
            if others:
                step_ins = others[0][1][i]
                for index, placed in enumerate(ins.cls.layout):
                    name = placed.field.name
                    if name not in ins.fields:
                        continue
                    coef = step_ins.fields[name] - ins.fields[name]
                    for d, other in others[1:]:
                        if other[i].fields[name] != ins.fields[name] + coef * d:
                            raise UnsupportedError(
                                f"length-adaptive: {ins.cls.name}.{name} of instruction {i} (core {core}) of the "
                                f"{spec.length}-token step is not affine in the position between {spec.p_lo} and "
                                f"{spec.p_hi}: {ins.fields[name]}, {step_ins.fields[name]}, ..., {other[i].fields[name]}")
                    if coef:
                        if name in ("wait", "release"):
                            raise UnsupportedError(f"length-adaptive: the tokens of instruction {i} (core {core}) "
                                                   f"of the {spec.length}-token step change with the position")
                        offsets.append(offset)
                        fields.append(index)
                        coefs.append(coef)
            offset += ins.cls.width // 8
        patches.append(patch_entries(offsets, fields, coefs))
    return StepTemplate(spec, [encode_program(p) for p in base], patches, counts)


def per_length_bytes(index: list[dict], max_len: int, max_step: int) -> int:
    """Instruction bytes a compiler with one program per length would store (computed, not built): a
    prefill program for every prompt length 1..max_len-1 (as long as its steps here) and a decode
    program for every position 1..max_len-1."""
    size: dict[int, list[tuple[int, int, int]]] = {}
    for t in index:
        size.setdefault(t["length"], []).append((t["p_lo"], t["p_hi"], t["bytes"]))

    def at(length: int, p0: int) -> int:
        for lo, hi, nbytes in size.get(length, ()):
            if lo <= p0 <= hi:
                return nbytes
        return 0

    chunk = np.cumsum([0] + [at(max_step, c * max_step) for c in range(max_len // max_step + 1)])
    total = 0
    for n in range(1, max_len):
        chunks, rest = divmod(n, max_step)
        total += int(chunk[chunks]) + (at(rest, chunks * max_step) if rest else 0) + at(1, n)
    return total
