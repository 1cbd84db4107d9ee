"""One accelerator core: control (fetch, queues, tokens) + LD/ST DMA + MPE + SFU + the buffer bank + its memory
masters' reads (its writes leave it as ST's two writers, routed to the masters by the kernel: hw/write_router.py).
The kernel around its copies (registers, barrier, the Vitis top level) is hw/kernel.py.

Everything is sized from one HardwareConfig; fields come from the ISA table.
"""
from __future__ import annotations

from amaranth.hdl import Module, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from flightc.config import Buffer, HardwareConfig
from flightc.errors import ConfigError
from flightc.hw.axi import axi4_signature
from flightc.hw import regs as R
from flightc.hw.axi_master import AxiMaster
from flightc.hw.buffer_map import core_roles, lane_port_name
from flightc.hw.buffers import BufferBank
from flightc.hw.control import Control, CoreRegs, unit_port
from flightc.hw.dma import StoreUnit
from flightc.hw.hierarchy import separate
from flightc.hw.lane_group import RTL_ENCODINGS
from flightc.hw.load import LoadUnit
from flightc.hw.mpe import Mpe
from flightc.hw.sfu import Sfu
from flightc.hw.write_router import core_write_signature
from flightc.isa.table import Unit

M_AXI = "m_axi_gmem"
S_AXI = "s_axi_control"


def master_port(cfg: HardwareConfig, master: int) -> str:
    """The kernel port of memory master ``master`` (core c's master g is ``first + g`` of its run,
    :attr:`HardwareConfig.master_runs`): m_axi_gmem with one, m_axi_gmem0, m_axi_gmem1, ... with more."""
    return M_AXI if cfg.kernel_masters == 1 else f"{M_AXI}{master}"


def master_reach(cfg: HardwareConfig, master: int) -> list[int]:
    """Every channel kernel master ``master`` reads or writes: its own, and those of the other cores' masters its
    core reaches through it (:meth:`HardwareConfig.master_of`), over the memory's switch."""
    for c, (first, count) in enumerate(cfg.master_runs):
        if first <= master < first + count:
            view = cfg.core(c)
            return [ch for ch in range(cfg.mem_channels) if first + view.master_of(ch) == master]
    raise ValueError(f"master {master} of a kernel of {cfg.kernel_masters}")


def check_rtl_config(cfg: HardwareConfig) -> None:
    """Raise if the generator cannot build this configuration (each limit named)."""
    problems = []
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
    if cfg.num_cores > 1:
        for c, (first, count) in enumerate(cfg.master_runs):
            if count & (count - 1) or first % count:
                problems.append(f"core {c}'s {count} masters from master {first}: a core's masters must be a power "
                                f"of two from a multiple of it (the buffers are banked per master); give axi_masters "
                                f"a value that splits so over {cfg.num_cores} cores (such as "
                                f"{1 << (cfg.num_cores - 1).bit_length()} x a power of two)")
        if not problems:
            for c in range(cfg.num_cores):
                try:
                    check_rtl_config(cfg.core(c))
                except ConfigError as e:
                    problems.append(f"core {c}: {str(e).split(': ', 1)[1]}")
    elif masters & (masters - 1):
        problems.append(f"axi_masters = {masters}: must be a power of two (the buffers are banked per master)")
    per = cfg.channels_per_master
    if cfg.num_cores == 1 and cfg.kernel_masters > 1 and per & (per - 1):
        problems.append(f"{per} memory channels a master: must be a power of two (a master's LD lane writes the "
                        f"bank its channels' stripe units land in)")
    if cfg.num_cores == 1 and masters > 1 and not masters & (masters - 1):
        span = masters * cfg.bank_bytes
        small = [b.name for b in Buffer if cfg.buffer_bytes(b) % span]
        if small:
            problems.append(f"buffers {', '.join(small)}: with {masters} masters each buffer is {masters} banks "
                            f"interleaved every {cfg.bank_bytes} bytes, so its size must be a multiple of {span} "
                            f"bytes")
    if problems:
        raise ConfigError(f"config {cfg.name!r} cannot be generated as RTL: " + "; ".join(problems))


def core_link_signature(cfg: HardwareConfig, arg_writes: bool = False) -> wiring.Signature:
    """What joins a core to the kernel around it (hw/kernel.py), from the kernel's side: the run's arguments, the
    first of the core's own channels (a constant of the kernel, so that cores of equal runs are one module:
    :func:`core_module_config`) and start out; the core's finish (a pulse), its counters (hw/regs.py COUNTERS) and
    its barrier request in; the barrier's go out. The arguments come as their values (every channel's base, the
    core's own channels' bases apart) or, with ``arg_writes`` (a core of several, which may sit in another SLR than
    the register file), as the register writes that set them (``arg_*``: a word a write,
    :func:`flightc.hw.regs.argument_word`), so that a word crosses, not every register: the core keeps its own copy
    (:func:`argument_copy`)."""
    if arg_writes:
        args = {"arg_valid": Out(1), "arg_word": Out(range(max(R.argument_words(cfg)) + 1)), "arg_data": Out(32)}
    else:
        args = {"program_addr": Out(64), "program_bytes": Out(32),
                "channel_base": Out(64).array(cfg.mem_channels),
                "own_base": Out(64).array(len(cfg.core_channels))}
    return wiring.Signature({**args, "first_channel": Out(range(max(2, cfg.mem_channels))), "start": Out(1),
                             "finished": In(1), "counters": In(64).array(len(R.COUNTERS)), "barrier_req": In(1),
                             "barrier_go": Out(1)})


# link members that cross no SLR boundary: the first of a core's channels is a constant of the kernel, and (a core
# of one) its own channels' bases are channel_base's own wires
LINK_LOCAL = ("first_channel", "own_base")


def argument_copy(m: Module, cfg: HardwareConfig, link) -> tuple[dict[str, Signal], list[Signal]]:
    """A core's own copy of its arguments, written word by word as the register file is
    (:func:`core_link_signature`): every argument by name, and the bases of the core's own channels (a copy of
    their own, written with channel ``first_channel + k``'s words)."""
    values = {r.name: Signal(r.bits, name=f"arg_{r.name}") for r in R.register_map(cfg)
              if r.access is R.RegAccess.RW}
    own = [Signal(64, name=f"arg_own_base{k}") for k in range(len(cfg.core_channels))]
    for word, (name, k) in R.argument_words(cfg).items():
        with m.If(link.arg_valid & (link.arg_word == word)):
            m.d.sync += values[name].word_select(k, 32).eq(link.arg_data)
    for k, base in enumerate(own):
        low = R.channel_base_word(0) + 2 * (link.first_channel + k)
        for half in (0, 1):
            with m.If(link.arg_valid & (link.arg_word == low + half)):
                m.d.sync += base.word_select(half, 32).eq(link.arg_data)
    return values, own


def core_module_config(cfg: HardwareConfig, c: int) -> HardwareConfig:
    """The config core ``c``'s module is generated from: its view (:meth:`HardwareConfig.core`) as if its run of
    masters were the first, since where its own channels start comes in on the link (``first_channel``,
    ``own_base``); so the cores of equal runs (u280's second and third, tiny's three) are one module, generated and
    compiled once."""
    return cfg.core(c).replace(first_master=0)


class Core(wiring.Component):
    """``axi[g]``: memory master g's read channels; ``writes``: ST's writes, which the kernel routes to the masters'
    write channels (hw/write_router.py); ``link``: the register file's and the barrier's signals
    (:func:`core_link_signature`; ``arg_writes``: its arguments come as register writes). ``cfg`` is the core's
    module config (:func:`core_module_config`): its own run of the kernel's masters, where they start on the
    link; the kernel wires them to its ports and the core to its register window."""

    def __init__(self, cfg: HardwareConfig, arg_writes: bool = False):
        check_rtl_config(cfg)
        self.cfg, self.arg_writes = cfg, arg_writes
        super().__init__(self.ports(cfg, arg_writes))

    @staticmethod
    def ports(cfg: HardwareConfig, arg_writes: bool = False) -> wiring.Signature:
        return wiring.Signature({"axi": Out(axi4_signature(8 * cfg.axi_data_bytes, "r")).array(cfg.axi_masters),
                                 "writes": Out(core_write_signature(cfg)),
                                 "link": In(core_link_signature(cfg, arg_writes))})

    def elaborate(self, platform):
        m = Module()
        cfg = self.cfg
        n = cfg.axi_masters
        link = self.link
        if self.arg_writes:
            args, own = argument_copy(m, cfg, link)
        else:
            args = {"program_addr": link.program_addr, "program_bytes": link.program_bytes,
                    **{f"channel_base{ch}": b for ch, b in enumerate(link.channel_base)}}
            own = list(link.own_base)
        bases = [args[f"channel_base{ch}"] for ch in range(cfg.mem_channels)]
        regs = CoreRegs(args, link.start, link.finished, dict(zip(R.COUNTERS, link.counters)))
        m.submodules.ld = ld = LoadUnit(cfg, bases, own, link.first_channel)
        m.submodules.st = st = StoreUnit(cfg, bases)
        m.submodules.mpe = mpe = Mpe(cfg, own, link.first_channel)
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
        for g in range(n):
            m.submodules[f"master{g}" if n > 1 else "master"] = master = separate(
                AxiMaster, cfg.axi_data_bytes, readers=3, outstanding=cfg.axi_outstanding, writes=False)
            wiring.connect(m, ctl.rd if g == 0 else ld.rd[g], master.read[0])
            wiring.connect(m, ld.rd[0] if g == 0 else ld.far[g - 1], master.read[1])
            wiring.connect(m, mpe.rd[g], master.read[2])
            wiring.connect(m, wiring.flipped(self.axi[g]), master.bus)
        w = self.writes
        wiring.connect(m, st.wr, wiring.flipped(w.wr))
        wiring.connect(m, st.wr2, wiring.flipped(w.wr2))
        m.d.comb += [w.master.eq(st.master), w.master2.eq(st.master2), st.responses.eq(w.responses)]
        m.d.comb += [link.barrier_req.eq(ctl.barrier_req), ctl.barrier_go.eq(link.barrier_go)]
        return m


def buffer_bank(cfg: HardwareConfig) -> BufferBank:
    """The core's buffers and their ports (:func:`flightc.hw.buffer_map.core_roles`)."""
    return BufferBank(cfg, core_roles(cfg))
