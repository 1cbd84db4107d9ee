"""Virtual boards for tests: ``flightc board serve`` in its own process (so a test can kill it), on a
loopback address of its own, and the overlays to program it with."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import grpc

PORT = 7967


def wait_listening(address: str, proc: subprocess.Popen, timeout: float = 120.0) -> None:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if proc.poll() is not None:
            raise RuntimeError(f"the virtual board exited with {proc.returncode}:\n{proc.stdout.read()}")
        try:
            grpc.channel_ready_future(grpc.insecure_channel(f"{address}:{PORT}")).result(timeout=0.5)
            return
        except grpc.FutureTimeoutError:
            pass
    raise RuntimeError(f"the virtual board did not listen on {address}:{PORT} within {timeout} s")


@contextmanager
def virtual_board(address: str, backend: str = "fsim", *extra: str):
    """A running virtual board; yields its process (stdout merged into one pipe)."""
    cmd = [sys.executable, "-m", "flightc.cli", "-v", "board", "serve", "--backend", backend, "--address", address,
           *extra]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        wait_listening(address, proc)
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
        if proc.stdout:
            proc.stdout.close()


def virtual_overlay(folder: Path, cfg, board: str = "kv260") -> Path:
    from flightc.bitstreams.boards import BOARDS
    from flightc.bitstreams.flow import write_flow

    bit, _ = write_flow(BOARDS[board], cfg, folder, virtual=True)
    return bit
