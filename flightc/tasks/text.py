"""Byte-level language modelling on Python source: held-out perplexity is the metric.

The text is the Python standard library's own source, which every machine with Python has. Files
are split into training and held-out sets by a hash of their path, so the split does not depend on
which files a given Python version ships. The held-out and calibration samples the metric uses are
committed next to the model's weights (``heldout.txt``, ``calib.txt``), so every machine measures on
the same bytes.
"""
from __future__ import annotations

import hashlib
import json
import sysconfig
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from flightc.errors import UnsupportedError


HELDOUT_FILE = "heldout.txt"
CALIB_FILE = "calib.txt"
SKIP_DIRS = ("test", "tests", "idlelib", "site-packages", "lib2to3", "turtledemo", "__pycache__")


def stdlib_files() -> list[Path]:
    """The standard library's .py files outside test suites, sorted by relative path."""
    root = Path(sysconfig.get_path("stdlib"))
    files = [p for p in root.rglob("*.py") if not any(part in SKIP_DIRS for part in p.relative_to(root).parts)]
    return sorted(files, key=lambda p: str(p.relative_to(root)))


def is_held_out(path: Path, every: int = 16) -> bool:
    rel = str(path.relative_to(Path(sysconfig.get_path("stdlib"))))
    return int(hashlib.sha1(rel.encode()).hexdigest(), 16) % every == 0


def ascii_bytes(text: str) -> bytes:
    """Source text as bytes, non-ASCII characters dropped (the vocabulary is the 128 ASCII codes + room)."""
    return text.encode("ascii", "ignore")


def text_windows(ids, window: int, count: int | None = None) -> np.ndarray:
    """Non-overlapping windows [count, window] of a token sequence (at most ``count``, None: all)."""
    ids = np.asarray(ids, np.int64)
    n = len(ids) // window
    if n == 0:
        raise UnsupportedError(f"the text is {len(ids)} tokens, shorter than one window of {window}: give more "
                               f"text or a smaller --window")
    rows = ids[: n * window].reshape(n, window)
    return rows if count is None else rows[:count]


@dataclass(frozen=True)
class TextTask:
    """Next-byte prediction over windows of ``seq_len`` bytes of ``folder``'s held-out text."""

    folder: Path
    seq_len: int = 64
    vocab_size: int = 128

    def _windows(self, name: str, count: int | None) -> np.ndarray:
        return text_windows(np.frombuffer((self.folder / name).read_bytes(), np.uint8), self.seq_len, count)

    def held_out(self, count: int | None = None) -> np.ndarray:
        """Non-overlapping windows [count, seq_len] of the held-out text."""
        return self._windows(HELDOUT_FILE, count)

    def calibration(self, count: int = 8) -> np.ndarray:
        """A handful of training-text windows for calibration (never the held-out text)."""
        return self._windows(CALIB_FILE, count)

    def to_json(self) -> str:
        return json.dumps({"task": "text", "seq_len": self.seq_len, "vocab_size": self.vocab_size,
                           "heldout": HELDOUT_FILE, "calib": CALIB_FILE})


def mean_nll(logits: np.ndarray, targets: np.ndarray) -> float:
    """Mean negative log-likelihood (nats) of ``targets`` [T] under the rows of ``logits`` [T, V]."""
    z = np.asarray(logits, np.float64)
    z = z - z.max(axis=-1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=-1, keepdims=True))
    return -float(np.mean(logp[np.arange(len(targets)), np.asarray(targets)]))
