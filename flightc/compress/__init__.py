"""Compression: weight formats, quantization, pruning and the packed layout."""
