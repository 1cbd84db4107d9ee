"""Files a Vitis RTL-kernel flow needs: the kernel's Verilog and its kernel.xml, both from one config."""
from __future__ import annotations

import re
from pathlib import Path
from xml.sax.saxutils import quoteattr

from flightc.files import write_atomic
from flightc.config import HardwareConfig
from flightc.hw import regs as R
from flightc.hw.core import S_AXI, master_port
from flightc.hw.synth import TOP, kernel_verilog


def argument_port(cfg: HardwareConfig, register: str) -> str:
    """The kernel port a register's argument belongs to: a channel's base to its core's master of that channel,
    a core's instruction stream to its master 0 (the fetch reads through it), every scalar to the control port. A
    channel of another core's is reached through the core's master :meth:`HardwareConfig.master_of` names."""
    suffixed = re.fullmatch(r"(.+)_c(\d+)", register)  # flightc.hw.regs.core_register
    name, core = (suffixed[1], int(suffixed[2])) if suffixed else (register, 0)
    first = cfg.master_runs[core][0]
    if name == "program_addr":
        return master_port(cfg, first)
    if name.startswith("channel_base"):
        return master_port(cfg, first + cfg.core(core).master_of(int(name.removeprefix("channel_base"))))
    return S_AXI


def kernel_xml(cfg: HardwareConfig) -> str:
    """kernel.xml with ap_ctrl_hs, the AXI4-Lite port, a port per memory master and one argument per register of
    the map."""
    data_bits = 8 * cfg.axi_data_bytes
    args = []
    for i, r in enumerate(x for x in R.register_map(cfg) if x.access is R.RegAccess.RW):
        port = argument_port(cfg, r.name)
        pointer = port != S_AXI
        args.append(f'      <arg name={quoteattr(r.name)} addressQualifier="{1 if pointer else 0}" id="{i}" '
                    f'port="{port}" size="{r.bits // 8:#x}" offset="{r.offset:#x}" '
                    f'type="{"void*" if pointer else "uint"}" hostOffset="0x0" hostSize="{r.bits // 8:#x}"/>')
    masters = "\n".join(f'      <port name="{master_port(cfg, g)}" mode="master" range="0xFFFFFFFFFFFFFFFF" '
                         f'dataWidth="{data_bits}" portType="addressable" base="0x0"/>'
                         for g in range(cfg.kernel_masters))
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<root versionMajor="1" versionMinor="6">
  <kernel name="{TOP}" language="ip_c" vlnv="flightc:kernel:{TOP}:1.0" attributes="" preferredWorkGroupSizeMultiple="0"
          workGroupSize="1" interrupt="true" hwControlProtocol="ap_ctrl_hs">
    <ports>
      <port name="{S_AXI}" mode="slave" range="{1 << R.lite_addr_bits(cfg):#x}" dataWidth="32" portType="addressable" base="0x0"/>
{masters}
    </ports>
    <args>
{chr(10).join(args)}
    </args>
  </kernel>
</root>
"""


def write_kernel(cfg: HardwareConfig, folder: Path) -> list[Path]:
    """Both files, generated before anything is written (a config the generator refuses leaves no folder) and
    each written atomically."""
    texts = {f"{TOP}.v": kernel_verilog(cfg), "kernel.xml": kernel_xml(cfg)}
    folder.mkdir(parents=True, exist_ok=True)
    return [write_atomic(folder / name, text) for name, text in texts.items()]
