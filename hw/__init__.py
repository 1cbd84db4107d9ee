"""Amaranth generators for the accelerator (installed as flightc.hw).

The RTL is generated from flightc.config.HardwareConfig and the ISA table in flightc.isa.table;
see docs/rtl.md. Top level: flightc.hw.kernel.VitisKernel.
"""
