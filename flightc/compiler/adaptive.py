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

import multiprocessing as mp
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import Callable

import numpy as np

from flightc.compiler.lower import blocked_attention, first_visible, key_block, lower_step
from flightc.compiler.memory import MemoryMap
from flightc.compiler.early_tiles import mark_early_tiles
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


def template_specs(graph: GraphIR, cfg: HardwareConfig, length: int, max_len: int,
                   bucket: int | None = None, mem: MemoryMap | None = None) -> list[TemplateSpec]:
    """Position ranges for steps of ``length`` tokens, cut where one template cannot serve both sides (with the
    memory map, also where a blocked softmax's window gains a key block)."""
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
    if mem is not None and blocked_attention(cfg, mem, length, window(last)):
        block = key_block(cfg, length)  # each position whose window ends a block, before one that starts the next
        cuts.update(p for p in range(last) if window(p) % block == 0 and window(p + 1) > window(p))
    if bucket:
        cuts.update(range(bucket - 1, last, bucket))
    bounds = sorted(c for c in cuts if c < last) + [last]
    specs, lo = [], 0
    for hi in bounds:
        specs.append(TemplateSpec(length, lo, hi))
        lo = hi + 1
    return specs


def _lowered(graph: GraphIR, cfg: HardwareConfig, mem: MemoryMap, spec: TemplateSpec, p0: int,
             window_cap: int, tokens: bool) -> list[list[Instruction]]:
    step = lower_step(graph, cfg, mem, spec.length, p0, window_cap)
    cores = mark_early_tiles(step.cores, cfg)
    if not tokens:
        return cores
    return [insert_tokens(prog, extra, cfg.token_fifo_depth, cfg) for prog, extra in zip(cores, step.extras)]


def build_template(graph: GraphIR, cfg: HardwareConfig, mem: MemoryMap, spec: TemplateSpec) -> StepTemplate:
    """Lower a template and derive its patch table, checking that every field is affine in the position.

    The step is lowered at ``p_lo`` (the template), ``p_lo + 1`` (the slope of every field) and ``p_hi``
    (the check); the token pass runs at both ends, whose wait/release masks must agree.
    """
    w = graph.spec.sliding_window
    window_cap = spec.p_hi + spec.length - first_visible(w, spec.p_hi)
    base = _lowered(graph, cfg, mem, spec, spec.p_lo, window_cap, tokens=True)
    samples = []
    if spec.p_hi > spec.p_lo:
        samples.append((1, _lowered(graph, cfg, mem, spec, spec.p_lo + 1, window_cap, tokens=False)))
    if spec.p_hi > spec.p_lo + 1:
        samples.append((spec.p_hi - spec.p_lo, _lowered(graph, cfg, mem, spec, spec.p_hi, window_cap, tokens=True)))
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
                    if name in ("wait", "release"):  # only the two ends went through the token pass
                        if len(others) > 1 and others[1][1][i].fields[name] != ins.fields[name]:
                            raise UnsupportedError(f"length-adaptive: the tokens of instruction {i} (core {core}) "
                                                   f"of the {spec.length}-token step change between positions "
                                                   f"{spec.p_lo} and {spec.p_hi}")
                        continue
                    coef = step_ins.fields[name] - ins.fields[name]
                    for d, other in others[1:]:
                        if other[i].fields[name] != ins.fields[name] + coef * d:
                            raise UnsupportedError(
                                f"length-adaptive: {ins.cls.name}.{name} of instruction {i} (core {core}) of the "
                                f"{spec.length}-token step is not affine in the position between {spec.p_lo} and "
                                f"{spec.p_hi}: {ins.fields[name]}, {step_ins.fields[name]}, ..., {other[i].fields[name]}")
                    if coef:
                        offsets.append(offset)
                        fields.append(index)
                        coefs.append(coef)
            offset += ins.cls.width // 8
        patches.append(patch_entries(offsets, fields, coefs))
    return StepTemplate(spec, [encode_program(p) for p in base], patches, counts)


_JOB: tuple | None = None  # (graph, cfg, mem) for forked workers


def _build_job(spec: TemplateSpec) -> StepTemplate:
    assert _JOB is not None
    return build_template(*_JOB, spec)


def build_templates(graph: GraphIR, cfg: HardwareConfig, mem: MemoryMap, specs: list[TemplateSpec],
                    jobs: int = 1, progress: Callable[[int, int], None] | None = None) -> list[StepTemplate]:
    """Every template, in ``jobs`` forked processes when more than one (the graph is shared, not copied)."""
    global _JOB
    out: list[StepTemplate] = []
    if jobs <= 1 or len(specs) <= 1 or "fork" not in mp.get_all_start_methods():
        for spec in specs:
            out.append(build_template(graph, cfg, mem, spec))
            if progress:
                progress(len(out), len(specs))
        return out
    _JOB = (graph, cfg, mem)
    try:
        with ProcessPoolExecutor(max_workers=jobs, mp_context=mp.get_context("fork")) as pool:
            for tpl in pool.map(_build_job, specs):
                out.append(tpl)
                if progress:
                    progress(len(out), len(specs))
    finally:
        _JOB = None
    return out


def per_length_bytes(index: list[dict], max_len: int) -> int:
    """Instruction bytes a compiler with one program per length would store (computed, not built): a
    prefill program for every prompt length 1..max_len-1, as long as the steps that run it here, and a
    decode program for every position 1..max_len-1."""
    size: dict[int, list[tuple[int, int, int]]] = {}
    for t in index:
        size.setdefault(t["length"], []).append((t["p_lo"], t["p_hi"], t["bytes"]))
    lengths = sorted(size, reverse=True)

    def at(length: int, p0: int) -> int:
        for lo, hi, nbytes in size[length]:
            if lo <= p0 <= hi:
                return nbytes
        raise ValueError(f"no template for {length} tokens at {p0}")

    top = lengths[0]
    chunk = np.cumsum([0] + [at(top, c * top) for c in range((max_len - 1) // top)])
    total = 0
    for n in range(1, max_len):
        full = n // top
        total += int(chunk[full]) + at(1, n)
        pos, left = full * top, n - full * top
        for length in lengths[1:]:
            while left >= length:
                total += at(length, pos)
                pos, left = pos + length, left - length
    return total
