"""The virtual board's bitstream: a .bit file with a real Xilinx header whose payload names the hardware
config, so that programming the virtual board builds the same kernel a real bitstream would hold.

pynq's client converts .bit to .bin (bit2bin swaps the bytes of every 32-bit word) and writes it to the
board's /lib/firmware; the board reverses the swap and reads the payload back with :func:`read_payload`.
"""
from __future__ import annotations

import json
import struct
import time
from pathlib import Path

import numpy as np

from flightc.config import HardwareConfig
from flightc.errors import FlightcError

from .boards import Board, Flow
from .hwh import KERNEL, hwh
from .manifest import OverlayManifest, write_manifest

MAGIC = b"FLIGHTC-VIRTUAL-BITSTREAM\x00\x00\x00"  # 28 bytes: whole 32-bit words
SYNC_HEADER = bytes.fromhex("0ff00ff00ff00ff000")  # the fixed first field of every .bit file


def _field(key: bytes, text: str) -> bytes:
    data = text.encode("ascii") + b"\x00"
    return key + struct.pack(">h", len(data)) + data


def bit_file(design: str, part: str, payload: bytes) -> bytes:
    """A .bit file: the header fields Vivado writes (design, part, date, time) and ``payload`` as the data."""
    payload += bytes(-len(payload) % 4)
    now = time.gmtime()
    head = struct.pack(">h", len(SYNC_HEADER)) + SYNC_HEADER + struct.pack(">h", 1)
    head += _field(b"a", f"{design};UserID=0XFFFFFFFF;Version=2024.2") + _field(b"b", part)
    head += _field(b"c", time.strftime("%Y/%m/%d", now)) + _field(b"d", time.strftime("%H:%M:%S", now))
    return head + b"e" + struct.pack(">i", len(payload)) + payload


def write_virtual_overlay(board: Board, cfg: HardwareConfig, folder: str | Path, name: str | None = None) -> Path:
    """``NAME.bit``, ``NAME.hwh`` and ``NAME.flightc.json`` for the virtual board; the .bit's path."""
    if board.flow is not Flow.PYNQ:
        raise FlightcError(f"the virtual board is a PYNQ board; {board.name} is programmed through XRT "
                           f"(use a PYNQ board: kv260, zcu104)")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    name = name or f"flightc_{board.name}_{cfg.name}"
    manifest = OverlayManifest(board, cfg, KERNEL, virtual=True)
    payload = MAGIC + json.dumps(manifest.to_dict(), sort_keys=True).encode()
    bit = folder / f"{name}.bit"
    bit.write_bytes(bit_file(name, board.part, payload))
    (folder / f"{name}.hwh").write_text(hwh(board, cfg, name))
    write_manifest(bit, manifest)
    return bit


def read_payload(bin_data: bytes) -> OverlayManifest:
    """The manifest inside a .bin the pynq client wrote to the board (raises if it is not a virtual bitstream)."""
    words = np.frombuffer(bin_data[:len(bin_data) // 4 * 4], ">u4").astype("<u4").tobytes()  # undo bit2bin's swap
    if not words.startswith(MAGIC):
        raise FlightcError("this bitstream is not a flightc virtual bitstream; the virtual board is programmed with "
                           "overlays from `flightc hw bitstream --virtual`")
    text = words[len(MAGIC):].rstrip(b"\x00").decode()
    return OverlayManifest.from_dict(json.loads(text), "virtual bitstream")
