"""AXI4 (memory master) and AXI4-Lite (control slave): signal tables named as Vitis RTL kernels name them, the
wiring signatures built from them, and the streams the units speak to the memory master.

Each table lists (signal, width, driven by the master); the signatures, the top level's flat ports,
the simulation memory model and the cocotb harness all come from these tables. Inside the core a
unit does not see AXI: it sends read or write requests and data as ``amaranth.lib.stream``
streams (:func:`read_client_signature`, :func:`write_client_signature`) and the memory master
(:mod:`flightc.hw.axi_master`) puts them on the bus.
"""
from __future__ import annotations

from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from flightc.hw.axi_rules import AXI_LEN_BITS

AXI_ADDR_BITS = 64
AXI_ID_BITS = 1  # one ID: a master's read bursts are answered in order
LITE_ADDR_BITS = 12
LITE_DATA_BITS = 32


def axi4_table(data_bits: int) -> tuple[tuple[str, int, bool], ...]:
    strb = data_bits // 8
    return (
        ("awvalid", 1, True), ("awready", 1, False), ("awid", AXI_ID_BITS, True), ("awaddr", AXI_ADDR_BITS, True),
        ("awlen", AXI_LEN_BITS, True), ("awsize", 3, True), ("awburst", 2, True),
        ("wvalid", 1, True), ("wready", 1, False), ("wdata", data_bits, True), ("wstrb", strb, True),
        ("wlast", 1, True),
        ("bvalid", 1, False), ("bready", 1, True), ("bid", AXI_ID_BITS, False), ("bresp", 2, False),
        ("arvalid", 1, True), ("arready", 1, False), ("arid", AXI_ID_BITS, True), ("araddr", AXI_ADDR_BITS, True),
        ("arlen", AXI_LEN_BITS, True), ("arsize", 3, True), ("arburst", 2, True),
        ("rvalid", 1, False), ("rready", 1, True), ("rid", AXI_ID_BITS, False), ("rdata", data_bits, False),
        ("rlast", 1, False), ("rresp", 2, False),
    )


def axi4_lite_table(addr_bits: int = LITE_ADDR_BITS) -> tuple[tuple[str, int, bool], ...]:
    """``addr_bits``: a one-core kernel's 4 KiB register window, a bit more per doubling of its cores
    (:func:`flightc.hw.regs.lite_addr_bits`)."""
    return (
        ("awvalid", 1, True), ("awready", 1, False), ("awaddr", addr_bits, True),
        ("wvalid", 1, True), ("wready", 1, False), ("wdata", LITE_DATA_BITS, True), ("wstrb", LITE_DATA_BITS // 8, True),
        ("bvalid", 1, False), ("bready", 1, True), ("bresp", 2, False),
        ("arvalid", 1, True), ("arready", 1, False), ("araddr", addr_bits, True),
        ("rvalid", 1, False), ("rready", 1, True), ("rdata", LITE_DATA_BITS, False), ("rresp", 2, False),
    )


READ_CHANNELS = ("ar", "r")  # an AXI4 signal belongs to the read channels where its name starts so


def reads(name: str) -> bool:
    """Whether AXI4 signal ``name`` is on a read channel (AR, R), not a write one (AW, W, B)."""
    return name.startswith(READ_CHANNELS)


def axi4_signature(data_bits: int, channels: str = "rw") -> wiring.Signature:
    """An AXI4 memory interface from the master's side (the slave takes it flipped): all of it, or with
    ``channels`` "r" its read channels alone, "w" its write channels alone (a core's masters read; its writes go by
    hw/write_router.py)."""
    table = axi4_table(data_bits)
    if channels != "rw":
        table = tuple(row for row in table if reads(row[0]) == (channels == "r"))
    return _signature(table)


def axi4_lite_signature(addr_bits: int = LITE_ADDR_BITS) -> wiring.Signature:
    """An AXI4-Lite interface from the master's side (the kernel's control slave takes it flipped)."""
    return _signature(axi4_lite_table(addr_bits))


def _signature(table: tuple[tuple[str, int, bool], ...]) -> wiring.Signature:
    return wiring.Signature({name: Out(width) if by_master else In(width) for name, width, by_master in table})


BURST = data.StructLayout({"addr": AXI_ADDR_BITS, "len": AXI_LEN_BITS})  # an AR or AW request: address, beats - 1


def read_client_signature(data_bits: int) -> wiring.Signature:
    """A reader's side of the memory master: burst requests out, beats (data, last) back; ``hold``: the reader
    works out a burst it will ask for next cycle, and no reader after it in the master's order may take the master
    now (LD's lanes: hw/load.py)."""
    beat = data.StructLayout({"data": data_bits, "last": 1})
    return wiring.Signature({"ar": Out(stream.Signature(BURST)), "r": In(stream.Signature(beat)), "hold": Out(1)})


def write_client_signature(data_bits: int) -> wiring.Signature:
    """A writer's side of the memory master: burst requests and strobed beats out, responses back."""
    beat = data.StructLayout({"data": data_bits, "strb": data_bits // 8, "last": 1})
    return wiring.Signature({"aw": Out(stream.Signature(BURST)), "w": Out(stream.Signature(beat)),
                             "b": In(stream.Signature(2))})


def flat_ports(prefix: str, iface, table: tuple[tuple[str, int, bool], ...], outward_by_master: bool) -> list:
    """(port name, signal, leaves the kernel) of an interface's signals, named ``{prefix}_{signal}`` as Vitis
    wants them (wiring's own names join with a double underscore)."""
    return [(f"{prefix}_{name}", getattr(iface, name), by_master == outward_by_master)
            for name, _, by_master in table]
