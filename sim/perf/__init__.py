"""The performance model: cycle-level timing of a bundle's programs, checked against the RTL."""
