"""RTL simulation harness: builds the generated Verilog with Verilator and drives it with cocotb."""
