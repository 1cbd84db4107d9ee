"""Outputs written atomically: a temporary file beside the target, renamed onto it only when complete, so an
interrupted command never leaves a file that looks finished; and a lock for what several processes share (a
cache of builds that parallel test workers fill)."""
from __future__ import annotations

import fcntl
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from flightc.errors import FlightcError


def output_folder(path: str | Path) -> Path:
    """Make ``path``'s folder if it is missing (a command checks where it will write before long work), or say why
    it cannot be."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise FlightcError(f"cannot write {path}: its folder {path.parent} cannot be made ({e.strerror or e}); "
                           f"give an output path in a folder you can write") from None
    if path.is_dir():
        raise FlightcError(f"cannot write {path}: it is a folder; give a file name in it")
    return path


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temporary path beside ``path`` (its folder made if missing); renamed onto it when the block succeeds,
    removed when it fails."""
    path = output_folder(path)
    tmp = path.with_name(f".{path.name}.partial")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_atomic(path: str | Path, data: str | bytes) -> Path:
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_bytes(data.encode() if isinstance(data, str) else data)
    return path


@contextmanager
def exclusive(path: str | Path) -> Iterator[None]:
    """Hold an exclusive lock named by ``path`` (a ``.lock`` file beside it) for the block: other processes that
    ask for the same one wait, so what one of them builds the others reuse instead of building it over."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(f".{path.name}.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield
