"""Block-level benches: small Amaranth tops around one block and the cocotb modules that drive them."""
