"""AXI4 (memory master) and AXI4-Lite (control slave) signal tables, named as Vitis RTL kernels name them.

Each table lists (signal, width, driven by the master); the top level, the DMA, the simulation
memory model and the cocotb harness all build their signals from these tables.
"""
from __future__ import annotations

from amaranth.hdl import Signal

from flightc.hw.axi_rules import AXI_BOUNDARY, AXI_LEN_BITS, AXI_MAX_BEATS  # noqa: F401  (re-exported)

AXI_ADDR_BITS = 64
AXI_ID_BITS = 1  # one ID: the kernel keeps one burst per direction in flight
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


def axi4_lite_table() -> tuple[tuple[str, int, bool], ...]:
    return (
        ("awvalid", 1, True), ("awready", 1, False), ("awaddr", LITE_ADDR_BITS, True),
        ("wvalid", 1, True), ("wready", 1, False), ("wdata", LITE_DATA_BITS, True), ("wstrb", LITE_DATA_BITS // 8, True),
        ("bvalid", 1, False), ("bready", 1, True), ("bresp", 2, False),
        ("arvalid", 1, True), ("arready", 1, False), ("araddr", LITE_ADDR_BITS, True),
        ("rvalid", 1, False), ("rready", 1, True), ("rdata", LITE_DATA_BITS, False), ("rresp", 2, False),
    )


class AxiSignals:
    """One interface's signals as attributes (``port.arvalid``), named ``{prefix}_{signal}``."""

    def __init__(self, prefix: str, table: tuple[tuple[str, int, bool], ...]):
        self.prefix, self.table = prefix, table
        for name, width, _ in table:
            setattr(self, name, Signal(width, name=f"{prefix}_{name}"))

    def signals(self, master_side: bool | None = None) -> list[tuple[str, Signal, bool]]:
        return [(n, getattr(self, n), by_master) for n, _, by_master in self.table
                if master_side is None or by_master == master_side]

    def connect(self, other: "AxiSignals") -> list:
        """Assignments joining a master (self) to a slave (other) with the same table."""
        out = []
        for name, sig, by_master in self.signals():
            theirs = getattr(other, name)
            out.append(theirs.eq(sig) if by_master else sig.eq(theirs))
        return out
