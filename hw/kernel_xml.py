"""Files a Vitis RTL-kernel flow needs: the kernel's Verilog and its kernel.xml, both from one config."""
from __future__ import annotations

from pathlib import Path
from xml.sax.saxutils import quoteattr

from flightc.files import write_atomic
from flightc.config import HardwareConfig
from flightc.hw import regs as R
from flightc.hw.core import M_AXI, S_AXI
from flightc.hw.synth import TOP, kernel_verilog


def kernel_xml(cfg: HardwareConfig) -> str:
    """kernel.xml with ap_ctrl_hs, the AXI4-Lite port and one argument per register of the map."""
    data_bits = 8 * cfg.axi_data_bytes
    args = []
    for i, r in enumerate(x for x in R.register_map(cfg) if x.access is R.RegAccess.RW):
        pointer = r.name == "program_addr" or r.name.startswith("channel_base")
        args.append(f'      <arg name={quoteattr(r.name)} addressQualifier="{1 if pointer else 0}" id="{i}" '
                    f'port="{M_AXI if pointer else S_AXI}" size="{r.bits // 8:#x}" offset="{r.offset:#x}" '
                    f'type="{"void*" if pointer else "uint"}" hostOffset="0x0" hostSize="{r.bits // 8:#x}"/>')
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<root versionMajor="1" versionMinor="6">
  <kernel name="{TOP}" language="ip_c" vlnv="flightc:kernel:{TOP}:1.0" attributes="" preferredWorkGroupSizeMultiple="0"
          workGroupSize="1" interrupt="true" hwControlProtocol="ap_ctrl_hs">
    <ports>
      <port name="{S_AXI}" mode="slave" range="0x1000" dataWidth="32" portType="addressable" base="0x0"/>
      <port name="{M_AXI}" mode="master" range="0xFFFFFFFFFFFFFFFF" dataWidth="{data_bits}" portType="addressable"
            base="0x0"/>
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
