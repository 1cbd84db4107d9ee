"""Buffer words an access touches: the unit of every unit's buffer traffic (``hw/buffers.py``'s word ports).

A contiguous access of ``n`` bytes at ``addr`` costs a cycle per word it touches; a word-engine read
takes ``words + 3`` cycles from the state that issues it to the state after the one that sees it
done, a write ``words + 2``.
"""
from __future__ import annotations

import numpy as np


def span_words(addr, nbytes, w: int):
    """Buffer words of ``w`` bytes that ``nbytes`` contiguous bytes from ``addr`` touch (either may be an array)."""
    words = (addr % w + nbytes - 1) // w + 1
    if np.ndim(addr) or np.ndim(nbytes):
        return np.where(np.asarray(nbytes) > 0, words, 0)
    return words if nbytes > 0 else 0


def read_cycles(addr, nbytes: int, w: int):
    return span_words(addr, nbytes, w) + 3


def write_cycles(addr, nbytes: int, w: int):
    return span_words(addr, nbytes, w) + 2
