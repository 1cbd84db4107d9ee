"""Frontends: models in, graph IR out."""
