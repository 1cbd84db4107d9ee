"""One accelerator core and the Vitis-RTL-kernel top level around it.

The core = control (fetch, queues, tokens, registers) + LD/ST DMA + MPE + SFU + the buffer bank.
Everything is sized from one HardwareConfig; fields come from the ISA table.
"""
from __future__ import annotations

from amaranth.hdl import ClockDomain, Module, Mux
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from flightc.config import Buffer, HardwareConfig
from flightc.errors import ConfigError
from flightc.hw.axi import axi4_lite_signature, axi4_lite_table, axi4_signature, axi4_table, flat_ports
from flightc.hw.axi_master import AxiMaster
from flightc.hw.buffer_map import core_roles, lane_port_name
from flightc.hw.buffers import BufferBank
from flightc.hw.control import AxiLiteRegs, Control, unit_port
from flightc.hw.dma import StoreUnit
from flightc.hw.hierarchy import separate
from flightc.hw.lane_group import RTL_ENCODINGS
from flightc.hw.load import LoadUnit
from flightc.hw.mpe import Mpe
from flightc.hw.sfu import Sfu
from flightc.isa.table import Unit

M_AXI = "m_axi_gmem"
S_AXI = "s_axi_control"


def master_port(cfg: HardwareConfig, master: int) -> str:
    """The kernel port of memory master ``master``: m_axi_gmem with one, m_axi_gmem0, m_axi_gmem1, ... with more."""
    return M_AXI if cfg.axi_masters == 1 else f"{M_AXI}{master}"


def master_channels(cfg: HardwareConfig, master: int) -> range:
    """The memory channels master ``master`` reads and writes (hw/load.py, the Vitis link map)."""
    return range(master * cfg.channels_per_master, (master + 1) * cfg.channels_per_master)


def check_rtl_config(cfg: HardwareConfig) -> None:
    """Raise if the generator cannot build this configuration (each limit named)."""
    problems = []
    if cfg.num_cores != 1:
        problems.append(f"num_cores = {cfg.num_cores}: the RTL generator builds one core per kernel so far")
    if cfg.chain_length % 8:
        problems.append(f"chain_length = {cfg.chain_length}: must be a multiple of 8 (byte-aligned weight lanes)")
    if cfg.macs_per_dsp not in (1, 2):
        problems.append(f"macs_per_dsp = {cfg.macs_per_dsp}: a DSP48E2 packs at most two INT8 products")
    w = cfg.buffer_port_bytes
    if w & (w - 1) or w < 4:
        problems.append(f"buffer_port_bytes = {w}: must be a power of two >= 4")
    if cfg.sparse_m != 16:
        problems.append(f"sparse_m = {cfg.sparse_m}: the sparse MUX is built for blocks of 16")
    unbuilt = [e.name for e in cfg.sparse_encodings if e not in RTL_ENCODINGS]
    if unbuilt:
        problems.append(f"sparse_encodings {unbuilt}: the lane groups and the DSP chains decode "
                        f"{[e.name for e in RTL_ENCODINGS]} (a rank needs an unranking table a block at line rate; "
                        f"the functional simulator and the performance model run it)")
    if cfg.axi_data_bytes != w:
        problems.append(f"axi_data_bytes = {cfg.axi_data_bytes}: the DMA moves a beat as one buffer word, so it must "
                        f"equal buffer_port_bytes ({w}) so far")
    masters = cfg.axi_masters
    if cfg.lane_slots % w:
        problems.append(f"lane_slots = {cfg.lane_slots}: a lane group's activation word must be whole buffer words "
                        f"({w} bytes)")
    if masters & (masters - 1):
        problems.append(f"axi_masters = {masters}: must be a power of two (the buffers are banked per master)")
    elif masters > 1:
        per = cfg.channels_per_master
        if per & (per - 1):
            problems.append(f"{per} memory channels a master: must be a power of two (a master's LD lane writes the "
                            f"bank its channels' stripe units land in)")
        span = masters * cfg.bank_bytes
        small = [b.name for b in Buffer if cfg.buffer_bytes(b) % span]
        if small:
            problems.append(f"buffers {', '.join(small)}: with {masters} masters each buffer is {masters} banks "
                            f"interleaved every {cfg.bank_bytes} bytes, so its size must be a multiple of {span} "
                            f"bytes")
    if problems:
        raise ConfigError(f"config {cfg.name!r} cannot be generated as RTL: " + "; ".join(problems))


class Core(wiring.Component):
    """``axi[g]``: memory master g's bus; ``lite``: the control slave; ``interrupt``: ap_done's interrupt."""

    def __init__(self, cfg: HardwareConfig, core_id: int = 0):
        check_rtl_config(cfg)
        self.cfg = cfg
        self.core_id = core_id
        super().__init__(self.ports(cfg))

    @staticmethod
    def ports(cfg: HardwareConfig) -> wiring.Signature:
        return wiring.Signature({"axi": Out(axi4_signature(8 * cfg.axi_data_bytes)).array(cfg.axi_masters),
                                 "lite": In(axi4_lite_signature()), "interrupt": Out(1)})

    def elaborate(self, platform):
        m = Module()
        cfg = self.cfg
        n = cfg.axi_masters
        m.submodules.regs = regs = AxiLiteRegs(cfg, self.lite, self.core_id)
        bases = [regs.values[f"channel_base{ch}"] for ch in range(cfg.mem_channels)]
        m.submodules.ld = ld = LoadUnit(cfg, bases)
        m.submodules.st = st = StoreUnit(cfg, bases)
        m.submodules.mpe = mpe = Mpe(cfg, bases)
        m.submodules.sfu = sfu = Sfu(cfg)
        units = {Unit.LD: ld, Unit.ST: st, Unit.MPE: mpe, Unit.SFU: sfu}
        lanes = [lane_port_name(cfg, k) for k in range(n)]
        m.submodules.buffers = bank = buffer_bank(cfg)
        for k, name in enumerate(lanes):
            wiring.connect(m, ld.port[k], getattr(bank, f"port_{name}"))
        unit_ports = {}
        for u, blk in units.items():
            if u is not Unit.LD:
                wiring.connect(m, blk.port, getattr(bank, f"port_{u.name.lower()}"))
            unit_ports[u] = up = unit_port(u)
            wiring.connect(m, up, blk.ctl)
        wiring.connect(m, sfu.wport, bank.port_sfu_results)
        wiring.connect(m, sfu.pport, bank.port_sfu_params)
        m.submodules.control = ctl = Control(cfg, unit_ports, regs, ready={Unit.LD: ld.ready, Unit.ST: st.ready})
        m.d.comb += [mpe.head_ok.eq(ctl.head_ok[Unit.MPE]), mpe.head_in.eq(ctl.head_in[Unit.MPE])]
        # memory: master g serves LD lane g and, past the first, lane 0's plain and gathered rows; master 0 also
        # the fetch, whose requests go first (LD asks for a burst whenever a slot frees; the fetch asks only while
        # its FIFO has room for a whole burst, so it never holds more than two slots); last, the MPE's stream
        # reader of master g (a streamed MV's tile)
        masters = []
        for g in range(n):
            m.submodules[f"master{g}" if n > 1 else "master"] = master = separate(
                AxiMaster, cfg.axi_data_bytes, readers=3, outstanding=cfg.axi_outstanding)
            wiring.connect(m, ctl.rd if g == 0 else ld.rd[g], master.read[0])
            wiring.connect(m, ld.rd[0] if g == 0 else ld.far[g - 1], master.read[1])
            wiring.connect(m, mpe.rd[g], master.read[2])
            wiring.connect(m, wiring.flipped(self.axi[g]), master.bus)
            masters.append(master)
        _route_writes(m, st, [x.write for x in masters])
        m.d.comb += [ctl.barrier_go.eq(ctl.barrier_req), self.interrupt.eq(regs.interrupt)]
        return m


def buffer_bank(cfg: HardwareConfig) -> BufferBank:
    """The core's buffers and their ports (:func:`flightc.hw.buffer_map.core_roles`)."""
    return BufferBank(cfg, core_roles(cfg))


def _route_writes(m: Module, st: StoreUnit, writes: list) -> None:
    """ST's bursts to the master of its instruction's channel, its second writer's (a dealt column's next row) to
    that row's master, another; every master's write responses taken as they come (ST counts them per master)."""
    wr, wr2 = st.wr, st.wr2
    for g, x in enumerate(writes):
        mine = st.master == g
        mine2 = (st.master2 == g) & ~mine
        m.d.comb += [x.aw.valid.eq((wr.aw.valid & mine) | (wr2.aw.valid & mine2)),
                     x.aw.payload.eq(Mux(mine, wr.aw.payload, wr2.aw.payload)),
                     x.w.valid.eq((wr.w.valid & mine) | (wr2.w.valid & mine2)),
                     x.w.payload.eq(Mux(mine, wr.w.payload, wr2.w.payload)), x.b.ready.eq(1),
                     st.responses[g].eq(x.b.valid)]
        with m.If(mine):
            m.d.comb += [wr.aw.ready.eq(x.aw.ready), wr.w.ready.eq(x.w.ready)]
        with m.If(mine2):
            m.d.comb += [wr2.aw.ready.eq(x.aw.ready), wr2.w.ready.eq(x.w.ready)]


class VitisKernel(wiring.Component):
    """Top level with the port names of a Vitis RTL kernel: ap_clk, ap_rst_n, s_axi_control and a memory master
    port per master (:func:`master_port`). Its core is one separated module (:func:`separate`), so the kernel and
    the simulation testbench share its generated Verilog."""

    def __init__(self, cfg: HardwareConfig):
        check_rtl_config(cfg)
        self.cfg = cfg
        members = {"ap_clk": In(1), "ap_rst_n": In(1), "interrupt": Out(1)}
        for name, sig, outward in self.flat_ports(Core.ports(cfg).create()):
            members[name] = Out(len(sig)) if outward else In(len(sig))
        super().__init__(members)

    def flat_ports(self, core) -> list:
        """The core's AXI4 masters and AXI4-Lite slave as the kernel's flat ports."""
        table = axi4_table(8 * self.cfg.axi_data_bytes)
        return ([p for g in range(self.cfg.axi_masters)
                 for p in flat_ports(master_port(self.cfg, g), core.axi[g], table, True)]
                + flat_ports(S_AXI, core.lite, axi4_lite_table(), False))

    def elaborate(self, platform):
        m = Module()
        m.domains.sync = cd = ClockDomain("sync")
        m.d.comb += [cd.clk.eq(self.ap_clk), cd.rst.eq(~self.ap_rst_n)]
        m.submodules.core = core = separate(Core, self.cfg)
        for name, sig, outward in self.flat_ports(core):
            port = getattr(self, name)
            m.d.comb += port.eq(sig) if outward else sig.eq(port)
        m.d.comb += self.interrupt.eq(core.interrupt)
        return m
