"""A core's writes onto its masters' write channels, on the kernel's side of the core (hw/kernel.py).

ST has two writers (hw/dma.py): a burst of the first goes to the master of its instruction's channel, one of the
second (a dealt column's next row) to that row's master, never the first's in the same cycle. Routing them here
rather than in the core means a core in another SLR than its masters' ports sends its writes across as ST's two
writers, not as a write channel a master: in a kernel of several cores the two writers' bursts cross as one
stream of *write pairs* (what both writers offer in a cycle, each with its master) through register slices
(hw/crossing.py), and each pair is dealt to the masters in the order ST sent them, so each master's writes and
their responses keep ST's order (ST counts a master's responses as its oldest writes'). The responses cross back
as a pulse a master. With no crossing (one core) the writers go to the masters as they offer them.
"""
from __future__ import annotations

from amaranth.hdl import Cat, Module, Mux, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from flightc.config import HardwareConfig
from flightc.hw.axi import BURST, axi4_signature, write_client_signature
from flightc.hw.axi_master import INCR
from flightc.hw.crossing import crossing, slices

WRITERS = 2  # ST's first and second writer


def master_bits(cfg: HardwareConfig) -> int:
    return max(1, (cfg.axi_masters - 1).bit_length())


def core_write_signature(cfg: HardwareConfig) -> wiring.Signature:
    """A core's writes, from the core's side: ST's two writers (``wr``, ``wr2``), the master each one's burst is
    for (``master``, ``master2``); the write responses taken from each master (a pulse a master) back."""
    bits = 8 * cfg.axi_data_bytes
    return wiring.Signature({"wr": Out(write_client_signature(bits)), "wr2": Out(write_client_signature(bits)),
                             "master": Out(master_bits(cfg)), "master2": Out(master_bits(cfg)),
                             "responses": In(cfg.axi_masters)})


def pair_layout(cfg: HardwareConfig) -> data.StructLayout:
    """What the two writers offer in a cycle: per writer, whether it offers an address and a beat, its master,
    the address and the beat."""
    bits = 8 * cfg.axi_data_bytes
    beat = data.StructLayout({"data": bits, "strb": bits // 8, "last": 1})
    part = data.StructLayout({"aw": 1, "w": 1, "master": master_bits(cfg), "burst": BURST, "beat": beat})
    return data.StructLayout({"first": part, "second": part})


class WriteRouter(wiring.Component):
    """``core``: the core's writes (:func:`core_write_signature`); ``bus[g]``: master g's write channels;
    ``stages``: register slices on the way from the core (0: the writers straight to the masters)."""

    def __init__(self, cfg: HardwareConfig, stages: int):
        self.cfg, self.stages = cfg, stages
        super().__init__({"core": In(core_write_signature(cfg)),
                          "bus": Out(axi4_signature(8 * cfg.axi_data_bytes, "w")).array(cfg.axi_masters)})

    def elaborate(self, platform):
        m = Module()
        core, size_log2 = self.core, self.cfg.axi_data_bytes.bit_length() - 1
        for x in self.bus:
            m.d.comb += [x.awsize.eq(size_log2), x.awburst.eq(INCR), x.bready.eq(1)]
        m.d.comb += core.responses.eq(crossing(m, Cat(*(x.bvalid for x in self.bus)), "responses", self.stages))
        if self.stages == 0:
            self.direct(m)
        else:
            self.paired(m)
        return m

    def direct(self, m: Module) -> None:
        """Each writer's burst to its master as it offers it (the second's where the first's master is another)."""
        core = self.core
        wr, wr2 = core.wr, core.wr2
        for g, x in enumerate(self.bus):
            mine = core.master == g
            mine2 = (core.master2 == g) & ~mine
            m.d.comb += [x.awvalid.eq((wr.aw.valid & mine) | (wr2.aw.valid & mine2)),
                         x.awaddr.eq(Mux(mine, wr.aw.payload.addr, wr2.aw.payload.addr)),
                         x.awlen.eq(Mux(mine, wr.aw.payload.len, wr2.aw.payload.len)),
                         x.wvalid.eq((wr.w.valid & mine) | (wr2.w.valid & mine2)),
                         x.wdata.eq(Mux(mine, wr.w.payload.data, wr2.w.payload.data)),
                         x.wstrb.eq(Mux(mine, wr.w.payload.strb, wr2.w.payload.strb)),
                         x.wlast.eq(Mux(mine, wr.w.payload.last, wr2.w.payload.last))]
            with m.If(mine):
                m.d.comb += [wr.aw.ready.eq(x.awready), wr.w.ready.eq(x.wready)]
            with m.If(mine2):
                m.d.comb += [wr2.aw.ready.eq(x.awready), wr2.w.ready.eq(x.wready)]

    def paired(self, m: Module) -> None:
        """The writers' offers as one stream of pairs through the slices, each pair's addresses and beats dealt to
        their masters (a part taken as its master takes it; the pair leaves once all its parts are taken)."""
        core, layout = self.core, pair_layout(self.cfg)
        pairs = stream.Signature(layout).create()  # (the core's side of the slices)
        writers = ((core.wr, core.master), (core.wr2, core.master2))
        m.d.comb += pairs.valid.eq(Cat(*(w.aw.valid | w.w.valid for w, _ in writers)).any())
        for (w, master), part in zip(writers, (pairs.payload.first, pairs.payload.second)):
            m.d.comb += [part.aw.eq(w.aw.valid), part.w.eq(w.w.valid), part.master.eq(master),
                         part.burst.eq(w.aw.payload), part.beat.eq(w.w.payload),
                         w.aw.ready.eq(pairs.ready), w.w.ready.eq(pairs.ready)]
        head = slices(m, pairs, layout, "pairs", self.stages)
        parts = (head.payload.first, head.payload.second)
        # each part's address and beat: taken in an earlier cycle (``done``), offered now (``live``), taken now
        done = {(p, ch): Signal(name=f"{ch}{p}_done") for p in range(WRITERS) for ch in ("aw", "w")}
        live = {(p, ch): Signal(name=f"{ch}{p}_live") for p in range(WRITERS) for ch in ("aw", "w")}
        taken = {(p, ch): Signal(name=f"{ch}{p}_taken") for p in range(WRITERS) for ch in ("aw", "w")}
        for (p, ch), s in live.items():
            m.d.comb += s.eq(head.valid & getattr(parts[p], ch) & ~done[p, ch])
        for g, x in enumerate(self.bus):
            for ch, valid, ready, fields in (("aw", x.awvalid, x.awready, ((x.awaddr, "burst", "addr"),
                                                                           (x.awlen, "burst", "len"))),
                                             ("w", x.wvalid, x.wready, ((x.wdata, "beat", "data"),
                                                                        (x.wstrb, "beat", "strb"),
                                                                        (x.wlast, "beat", "last")))):
                first = live[0, ch] & (parts[0].master == g)
                second = live[1, ch] & (parts[1].master == g) & ~first
                m.d.comb += valid.eq(first | second)
                for port, group, name in fields:
                    m.d.comb += port.eq(Mux(first, getattr(getattr(parts[0], group), name),
                                            getattr(getattr(parts[1], group), name)))
                with m.If(first):
                    m.d.comb += taken[0, ch].eq(ready)
                with m.If(second):
                    m.d.comb += taken[1, ch].eq(ready)
        complete = Cat(*(~live[k] | taken[k] for k in live)).all()
        m.d.comb += head.ready.eq(complete)
        for k, d in done.items():
            m.d.sync += d.eq(Mux(head.valid & complete, 0, d | taken[k]))
