"""Length-prefixed pickled messages between the RTL backend and the cocotb process it drives."""
from __future__ import annotations

import pickle
import socket
import struct


def send(sock: socket.socket, obj) -> None:
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    sock.sendall(struct.pack("<Q", len(data)) + data)


def recv(sock: socket.socket):
    head = _exact(sock, 8)
    return pickle.loads(_exact(sock, struct.unpack("<Q", head)[0]))


def _exact(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(min(n - len(buf), 1 << 20))
        if not chunk:
            raise ConnectionError("the RTL simulator closed the connection")
        buf += chunk
    return bytes(buf)
