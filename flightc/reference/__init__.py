"""References: the integer model (bit-exact target) and the float model."""
