"""Calibration sequences from what the user supplies (``--calib FILE``): text or token ids."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from flightc.errors import UnsupportedError


def _tokenize(text: str, model: Any) -> list[int]:
    folder = Path(model) if isinstance(model, (str, Path)) else None
    if folder is not None and any((folder / f).exists() for f in ("tokenizer.json", "tokenizer_config.json")):
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(str(folder), trust_remote_code=False)  # no code from the folder runs
        return tok(text, add_special_tokens=False)["input_ids"]
    from flightc.tasks import task_of
    from flightc.tasks.text import TextTask, ascii_bytes

    if folder is not None and isinstance(task_of(folder), TextTask):
        return list(ascii_bytes(text))
    raise UnsupportedError(f"--calib: {model} has no tokenizer (tokenizer.json) to turn text into token ids; "
                           f"pass a .npy of token ids instead")


def calibration_from_file(path: str | Path, model: Any, count: int = 8, length: int = 64) -> np.ndarray:
    """``count`` windows of ``length`` tokens, evenly spaced over the file ([count, length] int64).

    A ``.npy`` file is taken as token ids [sequences, length] as it is.
    """
    path = Path(path)
    if not path.exists():
        raise UnsupportedError(f"--calib: {path} does not exist")
    if path.suffix == ".npy":
        ids = np.load(path)
        if ids.ndim != 2 or not np.issubdtype(ids.dtype, np.integer):
            raise UnsupportedError(f"--calib {path}: expected integer token ids [sequences, length], got "
                                   f"{ids.dtype} {ids.shape}")
        return ids.astype(np.int64)
    ids = np.asarray(_tokenize(path.read_text(errors="replace"), model), np.int64)
    if len(ids) < length:
        raise UnsupportedError(f"--calib {path}: {len(ids)} tokens, fewer than one window of {length}")
    starts = np.linspace(0, len(ids) - length, num=min(count, len(ids) // length)).astype(int)
    return np.stack([ids[s:s + length] for s in starts])
