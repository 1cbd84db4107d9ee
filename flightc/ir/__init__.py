"""Graph IR."""
