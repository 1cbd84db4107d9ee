"""Repeated components generated once: a design converted with :func:`to_verilog` instantiates every copy of a
:func:`separate` component (a lane group per memory master, a DSP chain per MPE chain) as one Verilog module.

Amaranth elaborates each instance of a component on its own, so a core with 32 lane groups and 32 chains
spends most of its generation time and memory building the same netlist 32 times over. Inside
:func:`to_verilog`, ``separate(cls, *args)`` converts ``cls(*args)`` the first time that class and those
arguments (all its netlist depends on) are seen and hands back a stand-in with the same signature that
instantiates that module by name; outside it (Amaranth's simulator, a flat conversion) it hands back the
component itself. A module's Verilog is kept on disk under a hash of the generator's sources and the arguments,
so the next process (the kernel after the testbench, a second `flightc hw verilog`) reads it back instead of
generating it again: the core of a board's kernel takes over a minute.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from contextvars import ContextVar
from dataclasses import asdict, dataclass
from pathlib import Path

from amaranth.back import verilog
from amaranth.hdl import ClockSignal, Instance, Module, ResetSignal, Signal, Value
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import Flow

from flightc.hw.buffer_map import ultra


@dataclass
class _Generated:
    name: str
    text: str
    clocked: bool  # the module has the sync domain's clk and rst ports


_LIBRARY: ContextVar[dict[tuple, _Generated] | None] = ContextVar("flightc_hw_library", default=None)


def component_ports(component: wiring.Component) -> list[tuple[Signal, bool]]:
    """(signal, is an output) of every member that is a signal (a member a signature fixes to a constant, such as
    an always-ready stream's ``ready``, is no port)."""
    out = []
    for _, member, value in component.signature.flatten(component):
        value = Value.cast(value)  # a member with a layout is a view of its signal
        if isinstance(value, Signal):
            out.append((value, member.flow is Flow.Out))
    return out


class _Instantiation(wiring.Component):
    """Stands in for a separated component: its signature's members wired to an instance of ``module``."""

    def __init__(self, signature: wiring.Signature, module: _Generated):
        self._module = module
        super().__init__(signature)

    def elaborate(self, platform):
        m = Module()
        ports = {}
        if self._module.clocked:
            ports.update(i_clk=ClockSignal("sync"), i_rst=ResetSignal("sync"))
        for sig, out in component_ports(self):
            ports[("o_" if out else "i_") + sig.name] = sig
        m.submodules.inst = Instance(self._module.name, **ports)
        return m


def generating_verilog() -> bool:
    """Whether the design is being elaborated inside :func:`to_verilog` (vendor primitives may be instantiated)
    rather than for Amaranth's simulator."""
    return _LIBRARY.get() is not None


def separate(cls: type[wiring.Component], *args, **kwargs) -> wiring.Component:
    """``cls(*args, **kwargs)``, or inside :func:`to_verilog` a stand-in instantiating the module generated once
    for every equal class and arguments (they decide the netlist; a config is a frozen, hashable dataclass)."""
    component = cls(*args, **kwargs)
    library = _LIBRARY.get()
    if library is None:
        return component
    key = (cls, args, tuple(sorted(kwargs.items())))
    generated = library.get(key)
    if generated is not None:
        component._MustUse__silence = True  # one like it is already generated: this one is never elaborated
        return _Instantiation(component.signature, generated)
    base = "flightc_" + re.sub(r"(?<!^)(?=[A-Z])", "_", cls.__name__).lower()
    same = sum(1 for g in library.values() if re.fullmatch(rf"{base}(_\d+)?", g.name))
    name = base if not same else f"{base}_{same}"
    stored = _stored_path(name, cls, args, kwargs, library)
    if stored is not None and stored.exists():
        entry = json.loads(stored.read_text())
        for inner in entry.pop("nested"):  # the modules it instantiates, generated with it
            library[("stored", inner["name"])] = _Generated(**inner)
        component._MustUse__silence = True
        generated = library[key] = _Generated(**entry)
        return _Instantiation(component.signature, generated)
    ports = [sig for sig, _ in component_ports(component)]
    names = [sig.name for sig in ports]
    if len(set(names)) != len(names):
        raise ValueError(f"{name}: two ports share a name, so the module cannot be instantiated by port name")
    before = set(library)
    text = verilog.convert(component, name=name, ports=ports, emit_src=False)
    header = text[text.index(f"module {name}("):]
    header = header[:header.index(";")]
    generated = library[key] = _Generated(name, text, re.search(r"\bclk\b", header) is not None)
    if stored is not None:
        nested = [asdict(g) for k, g in library.items() if k not in before and k != key]
        _store(stored, {**asdict(generated), "nested": nested})
    return _Instantiation(component.signature, generated)


def _stored_path(name: str, cls: type, args: tuple, kwargs: dict, library: dict) -> Path | None:
    """Where a separated module's Verilog is kept between processes (the Verilator builds' cache folder), under a
    hash of the generator's sources, the class, its arguments, its name and the modules already generated (they
    decide the names of those it instantiates); None where the arguments have no stable text (an object's default
    repr) or the sources changed since this process loaded them (its Verilog would come from the code loaded
    before the change)."""
    from flightc.sim.rtl.build import _LOADED_DIGEST, _generator_digest, cache_root

    what = (f"{cls.__module__}.{cls.__qualname__}\n{args!r}\n{sorted(kwargs.items())!r}\n{name}\n"
            f"{sorted(g.name for g in library.values())}")
    if " at 0x" in what:
        return None
    digest = _generator_digest()
    if digest != _LOADED_DIGEST:
        return None
    h = hashlib.sha256(f"{digest}\n{what}".encode()).hexdigest()[:20]
    return cache_root() / "modules" / f"{name}-{h}.json"


def _store(path: Path, entry: dict) -> None:
    """Write ``path`` whole or not at all (tests in parallel processes may generate the same module)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        json.dump(entry, f)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def to_verilog(top, name: str, ports: list | None = None) -> str:
    """``top`` as Verilog: its own modules, then each separated component's module once."""
    if _LIBRARY.get() is not None:
        raise RuntimeError("to_verilog is not re-entrant")
    library: dict[tuple, _Generated] = {}
    token = _LIBRARY.set(library)
    try:
        text = verilog.convert(top, name=name, ports=ports, emit_src=False)
    finally:
        _LIBRARY.reset(token)
    return text + "".join(g.text for g in library.values())


RAM_MODULE = "flightc_ram"

def _ram_verilog(module: str, style: str) -> str:
    return f"""
// A simple dual-port RAM with byte write enables and a registered read that returns the word before a write in
// the same cycle: the template Vivado maps to {'UltraRAM' if style == 'ultra' else 'block RAM'} (ram_style), and what
// Amaranth's Memory would build, without one initializer net per bit (minutes and gigabytes for a board's buffers).
module {module} #(parameter WIDTH = 64, parameter DEPTH = 2, parameter ABITS = 1) (
  input clk, input [ABITS-1:0] raddr, output reg [WIDTH-1:0] rdata,
  input [ABITS-1:0] waddr, input [WIDTH-1:0] wdata, input [WIDTH/8-1:0] wen);
  (* ram_style = "{style}" *) reg [WIDTH-1:0] mem [0:DEPTH-1];
  integer i;
  always @(posedge clk) begin
    rdata <= mem[raddr];
    for (i = 0; i < WIDTH / 8; i = i + 1)
      if (wen[i]) mem[waddr][8 * i +: 8] <= wdata[8 * i +: 8];
  end
endmodule
"""


RAM_VERILOG = _ram_verilog(RAM_MODULE, "block")
URAM_MODULE = "flightc_uram"
URAM_VERILOG = _ram_verilog(URAM_MODULE, "ultra")


@dataclass
class Ram:
    """A byte-writable simple dual-port RAM's ports: read ``raddr`` in one cycle, ``rdata`` the next; write the
    bytes of ``wdata`` that ``wen`` selects at ``waddr``."""

    raddr: Signal
    rdata: Signal
    waddr: Signal
    wdata: Signal
    wen: Signal


def ram(m: Module, name: str, width: int, depth: int) -> Ram:
    """A RAM of ``depth`` words of ``width`` bits (a multiple of 8) in ``m``: Amaranth's Memory, or inside
    :func:`to_verilog` an instance of :data:`RAM_VERILOG` or, where :func:`ultra`, :data:`URAM_VERILOG` (each
    appended to the design once)."""
    abits = max(1, (depth - 1).bit_length())
    ports = Ram(Signal(abits, name=f"{name}_raddr"), Signal(width, name=f"{name}_rdata"),
                Signal(abits, name=f"{name}_waddr"), Signal(width, name=f"{name}_wdata"),
                Signal(width // 8, name=f"{name}_wen"))
    library = _LIBRARY.get()
    if library is None:
        m.submodules[name] = mem = Memory(shape=width, depth=depth, init=[])
        wp, rp = mem.write_port(granularity=8), mem.read_port()
        m.d.comb += [rp.addr.eq(ports.raddr), ports.rdata.eq(rp.data), wp.addr.eq(ports.waddr),
                     wp.data.eq(ports.wdata), wp.en.eq(ports.wen)]
        return ports
    module, text = (URAM_MODULE, URAM_VERILOG) if ultra(width, depth) else (RAM_MODULE, RAM_VERILOG)
    library.setdefault((Ram, module), _Generated(module, text, True))
    m.submodules[name] = Instance(module, p_WIDTH=width, p_DEPTH=depth, p_ABITS=abits,
                                  i_clk=ClockSignal("sync"), i_raddr=ports.raddr, o_rdata=ports.rdata,
                                  i_waddr=ports.waddr, i_wdata=ports.wdata, i_wen=ports.wen)
    return ports
