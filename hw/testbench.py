"""Simulation top: the Vitis kernel with its memory masters on :class:`AxiMemory`, a port each (the config's
latency, bursts in flight and one channel's sustained rate: a master over several channels is throttled as if
it read one at a time, as the performance model charges it).

Only ``ap_clk``, ``ap_rst_n``, the AXI4-Lite control port, ``stall_rate``, ``unthrottled`` and ``interrupt`` leave
it; the harness reaches the memory's ``storage`` array directly between runs.
"""
from __future__ import annotations

from amaranth.hdl import ClockDomain, Module
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from flightc.config import HardwareConfig
from flightc.hw import regs as R
from flightc.hw.axi import axi4_lite_table, flat_ports
from flightc.hw.core import S_AXI
from flightc.hw.kernel import Kernel
from flightc.hw.sim_memory import STALL_RATE_BITS, AxiMemory
from flightc.sim.perf.memory import channel_rate_q

MEMORY_NAME = "memory"  # the submodule holding the storage array (the harness's VPI path)


class KernelTestbench(wiring.Component):
    def __init__(self, cfg: HardwareConfig, memory_bytes: int):
        self.cfg = cfg
        self.memory_words = memory_bytes // cfg.axi_data_bytes
        members = {"ap_clk": In(1), "ap_rst_n": In(1), "interrupt": Out(1), "stall_rate": In(STALL_RATE_BITS),
                   "unthrottled": In(1)}
        for name, width, by_master in axi4_lite_table(R.lite_addr_bits(cfg)):
            members[f"{S_AXI}_{name}"] = In(width) if by_master else Out(width)
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        m.domains.sync = cd = ClockDomain("sync")
        m.d.comb += [cd.clk.eq(self.ap_clk), cd.rst.eq(~self.ap_rst_n)]
        cfg = self.cfg
        m.submodules.core = core = Kernel(cfg)  # the kernel (hw/kernel.py): its cores are the Vitis kernel's modules
        masters = cfg.kernel_masters
        m.submodules[MEMORY_NAME] = mem = AxiMemory(cfg.axi_data_bytes, self.memory_words,
                                                    latency=cfg.mem_latency_cycles, outstanding=cfg.axi_outstanding,
                                                    write_outstanding=cfg.axi_write_outstanding,
                                                    rate_q=channel_rate_q(cfg), ports=masters, verilog_storage=True)
        for k in range(masters):
            wiring.connect(m, core.axi[k], mem.axi[k])
        m.d.comb += [mem.stall_rate.eq(self.stall_rate), mem.unthrottled.eq(self.unthrottled)]
        for name, sig, outward in flat_ports(S_AXI, core.lite, axi4_lite_table(R.lite_addr_bits(cfg)), False):
            port = getattr(self, name)
            m.d.comb += port.eq(sig) if outward else sig.eq(port)
        m.d.comb += self.interrupt.eq(core.interrupt)
        return m
