"""FPGA build flows and the files a board runtime checks: Vivado (PYNQ boards) and Vitis (Alveo) scripts,
the overlay manifest, the hardware handoff (.hwh) and the virtual bitstream of the simulated board."""
