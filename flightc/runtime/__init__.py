"""Runtime: run a bundle on a backend."""
