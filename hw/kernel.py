"""The kernel: every core of a config, the register file they share and the barrier between them, and the Vitis
RTL-kernel top level around it.

Topology: one kernel spanning the SLRs, not a compute unit per SLR. Its cores start together on one ap_start, meet
at SYS BARRIERs in hardware and finish on one ap_done, so a step is one kernel run with no host round trip per layer;
the activations they exchange go through memory (each core's stores, the barrier, every core's loads: the compiler's
exchange regions). Each core has its own run of the kernel's memory masters (core c's master g is kernel master
``first + g`` of its run, :attr:`HardwareConfig.master_runs`: u280's 32 as 16, 8 and 8), one core module for the
cores of equal runs (hw/core.py ``core_module_config``), and its own window of registers (hw/regs.py). With several
cores every signal between a core and the shared logic is registered on the way, and so is every one between a core
beyond core 0 and its masters' ports (``SLR_CROSSING``, hw/crossing.py): core 0 sits beside the shared logic and the
ports, each other core may sit in any SLR, and as few wires cross as the core needs (:func:`kernel_logic`).
"""
from __future__ import annotations

from amaranth.hdl import Cat, ClockDomain, Module, Signal, Value
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from flightc.config import HardwareConfig
from flightc.hw import regs as R
from flightc.hw.axi import axi4_lite_signature, axi4_lite_table, axi4_signature, axi4_table, flat_ports, reads
from flightc.hw.control import AxiLiteRegs
from flightc.hw.crossing import ReadCrossing, crossing
from flightc.hw.core import S_AXI, Core, check_rtl_config, core_module_config, master_port
from flightc.hw.hierarchy import separate
from flightc.hw.latency_rules import SLR_CROSSING, crossed
from flightc.hw.write_router import WriteRouter


class Kernel(wiring.Component):
    """``axi[first + g]``: master g of core c's run from ``first``; ``lite``: the control slave (every core's window);
    ``interrupt``: ap_done's."""

    def __init__(self, cfg: HardwareConfig):
        check_rtl_config(cfg)
        self.cfg = cfg
        super().__init__(self.ports(cfg))

    @staticmethod
    def ports(cfg: HardwareConfig) -> wiring.Signature:
        return wiring.Signature({"axi": Out(axi4_signature(8 * cfg.axi_data_bytes)).array(cfg.kernel_masters),
                                 "lite": In(axi4_lite_signature(R.lite_addr_bits(cfg))), "interrupt": Out(1)})

    def elaborate(self, platform):
        m = Module()
        m.d.comb += self.interrupt.eq(kernel_logic(m, self.cfg, self.axi, self.lite))
        return m


def kernel_logic(m: Module, cfg: HardwareConfig, axi, lite) -> Value:
    """The kernel's contents built into ``m`` (the Vitis top level builds them into its own module, so a one-core
    kernel's hierarchy is top, regs, core as before); its interrupt. Every core of several takes its arguments as the
    register writes that set them, and every one but core 0 (latency_rules ``crossed``) reaches the shared logic
    and its masters' ports across an SLR boundary, registered on the way: its argument writes, its writes as ST's
    two writers (hw/write_router.py), its masters' read channels through register slices (hw/crossing.py)."""
    P = cfg.num_cores
    stages = SLR_CROSSING if P > 1 else 0
    m.submodules.regs = regs = AxiLiteRegs(cfg, lite)
    bits = 8 * cfg.axi_data_bytes
    links = []
    for c in range(P):
        first, count = cfg.master_runs[c]
        apart = SLR_CROSSING if crossed(cfg.core(c)) else 0  # its memory's and arguments' way
        # (core 0's arguments come as writes too, so that cores of equal runs stay one module)
        m.submodules[f"core{c}" if P > 1 else "core"] = core = separate(Core, core_module_config(cfg, c),
                                                                        arg_writes=P > 1)
        m.submodules[f"writes{c}" if P > 1 else "writes"] = router = WriteRouter(core_module_config(cfg, c), apart)
        wiring.connect(m, core.writes, router.core)
        reading = core.axi
        if apart:
            m.submodules[f"reads{c}"] = slices = ReadCrossing(bits, count, apart)
            for g in range(count):
                wiring.connect(m, core.axi[g], slices.core[g])
            reading = slices.bus
        for g in range(count):
            port = axi[first + g]
            for name, _, by_master in axi4_table(bits):
                inner, outer = getattr(reading[g] if reads(name) else router.bus[g], name), getattr(port, name)
                m.d.comb += outer.eq(inner) if by_master else inner.eq(outer)
        view, link = regs.core(c), core.link
        m.d.comb += [link.start.eq(crossing(m, regs.started, f"start{c}", stages)),
                     view.done_pulse.eq(crossing(m, link.finished, f"finished{c}", stages)),
                     link.first_channel.eq(cfg.core(c).core_channels.start)]
        if P > 1:
            arg = regs.arg_writes[c]
            m.d.comb += [link.arg_valid.eq(crossing(m, arg.valid, f"arg_valid{c}", apart)),
                         link.arg_word.eq(crossing(m, arg.word, f"arg_word{c}", apart)),
                         link.arg_data.eq(crossing(m, arg.data, f"arg_data{c}", apart))]
        else:
            values = view.values
            own = cfg.core(c).core_channels
            m.d.comb += [link.program_addr.eq(values["program_addr"]), link.program_bytes.eq(values["program_bytes"]),
                         *(base.eq(values[f"channel_base{ch}"]) for ch, base in enumerate(link.channel_base)),
                         *(base.eq(values[f"channel_base{ch}"]) for base, ch in zip(link.own_base, own))]
        for name, cnt in zip(R.COUNTERS, link.counters):
            m.d.comb += view.counters[name].eq(crossing(m, cnt, f"{name}{c}", stages))
        links.append(link)
    if P == 1:
        m.d.comb += links[0].barrier_go.eq(links[0].barrier_req)
    else:
        _barrier(m, regs, links, stages)
    return regs.interrupt


def _barrier(m: Module, regs: AxiLiteRegs, links: list, stages: int) -> None:
    """Go (a pulse to every core) once every core asks; then no new go until every request seen has dropped,
    as the requests arrive ``stages`` cycles late (hw/latency_rules.py BARRIER_LATENCY)."""
    asks = Cat(*[crossing(m, link.barrier_req, f"barrier_req{c}", stages) for c, link in enumerate(links)])
    go, draining = Signal(), Signal()
    m.d.sync += go.eq(0)
    with m.If(regs.started):
        m.d.sync += draining.eq(0)
    with m.Elif(draining):
        with m.If(~asks.any()):
            m.d.sync += draining.eq(0)
    with m.Elif(asks.all()):
        m.d.sync += [go.eq(1), draining.eq(1)]
    for c, link in enumerate(links):
        m.d.comb += link.barrier_go.eq(crossing(m, go, f"barrier_go{c}", stages))


class VitisKernel(wiring.Component):
    """Top level with the port names of a Vitis RTL kernel: ap_clk, ap_rst_n, s_axi_control and a memory master
    port per master of every core (:func:`flightc.hw.core.master_port`). Its cores are separated modules
    (:func:`separate`), so the kernel and the simulation testbench share their generated Verilog."""

    def __init__(self, cfg: HardwareConfig):
        check_rtl_config(cfg)
        self.cfg = cfg
        members = {"ap_clk": In(1), "ap_rst_n": In(1), "interrupt": Out(1)}
        for name, sig, outward in self.flat_ports(Kernel.ports(cfg).create()):
            members[name] = Out(len(sig)) if outward else In(len(sig))
        super().__init__(members)

    def flat_ports(self, kernel) -> list:
        """The kernel's AXI4 masters and AXI4-Lite slave as flat ports."""
        cfg = self.cfg
        table = axi4_table(8 * cfg.axi_data_bytes)
        return ([p for k in range(cfg.kernel_masters)
                 for p in flat_ports(master_port(cfg, k), kernel.axi[k], table, True)]
                + flat_ports(S_AXI, kernel.lite, axi4_lite_table(R.lite_addr_bits(cfg)), False))

    def elaborate(self, platform):
        m = Module()
        m.domains.sync = cd = ClockDomain("sync")
        m.d.comb += [cd.clk.eq(self.ap_clk), cd.rst.eq(~self.ap_rst_n)]
        kernel = Kernel.ports(self.cfg).create()
        for name, sig, outward in self.flat_ports(kernel):
            port = getattr(self, name)
            m.d.comb += port.eq(sig) if outward else sig.eq(port)
        m.d.comb += self.interrupt.eq(kernel_logic(m, self.cfg, kernel.axi, kernel.lite))
        return m
