"""Channel images grown in a temporary file rather than in memory.

A 7B model's channel images are gigabytes (its weights and the zeroed stream images of its KV heads). A compile
that only writes a bundle keeps them in an unlinked temporary file: the page cache holds them as well as the process
would, without counting as its memory, and :meth:`flightc.bundle.Bundle.save` copies them from a read-only map.
"""
from __future__ import annotations

import mmap
import tempfile
import weakref

from flightc.errors import UnsupportedError


class ImageSpool:
    """An append-only channel image in an unlinked temporary file (in ``$TMPDIR``)."""

    def __init__(self) -> None:
        self._file = tempfile.TemporaryFile(prefix="flightc-image-")
        self._size = 0
        # closed with the spool (a map of it keeps its own handle), not left to the collector's ResourceWarning
        weakref.finalize(self, self._file.close)

    def __len__(self) -> int:
        return self._size

    def append_at(self, addr: int, data) -> None:
        """Write ``data`` at ``addr``, at or past the image's end; the gap reads as zeros (a hole in the file)."""
        if addr < self._size:
            raise ValueError(f"an image grows at its end ({self._size} bytes), not at {addr}")
        try:
            self._file.seek(addr)
            self._file.write(data)
        except OSError as e:
            raise UnsupportedError(f"a channel image could not grow past {self._size:,} bytes in "
                                   f"{tempfile.gettempdir()} ({e.strerror}): point TMPDIR at a folder with room for "
                                   f"the bundle's size") from None
        self._size = addr + memoryview(data).nbytes

    def view(self) -> mmap.mmap | bytes:
        """The image, read-only, mapped from the file (the file is gone once the map and this spool are)."""
        self._file.flush()
        if not self._size:
            return b""
        return mmap.mmap(self._file.fileno(), self._size, access=mmap.ACCESS_READ)


def append_at(image: bytearray | ImageSpool, addr: int, data) -> None:
    """Write ``data`` at ``addr`` of a channel image, at or past its end (zeros between)."""
    if isinstance(image, ImageSpool):
        image.append_at(addr, data)
        return
    if addr < len(image):
        raise ValueError(f"an image grows at its end ({len(image)} bytes), not at {addr}")
    image.extend(bytes(addr - len(image)))
    image.extend(data)
