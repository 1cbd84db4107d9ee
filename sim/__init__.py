"""Simulators: the bit-exact functional simulator (functional.py) and its hazard checker (hazards.py)."""
