"""``flightc board serve``: the virtual board on a (loopback) address, at pynq's remote-device port."""
from __future__ import annotations

import logging
from concurrent import futures

import grpc

from .board import VirtualBoard
from .services import SERVICES

log = logging.getLogger(__name__)

PYNQ_PORT = 7967  # pynq.pl_server.remote_device.PYNQ_PORT: the client connects to no other


def start_server(board: VirtualBoard, address: str = "127.0.0.2", port: int = PYNQ_PORT) -> grpc.Server:
    """Serve ``board`` on address:port; returns the started server (stop it with ``server.stop(0)``)."""
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8),
                         options=[("grpc.max_receive_message_length", 64 << 20),
                                  ("grpc.max_send_message_length", 64 << 20),
                                  ("grpc.so_reuseport", 0)])
    for service, add in SERVICES:
        add(service(board), server)
    if server.add_insecure_port(f"{address}:{port}") == 0:
        raise OSError(f"cannot listen on {address}:{port} (in use?)")
    server.start()
    log.info("virtual %s board (%s backend) listening on %s:%d", board.board.name, board.backend, address, port)
    return server
