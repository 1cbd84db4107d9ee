"""flightc board serve: the virtual PYNQ board on a local address."""
from __future__ import annotations

import signal
import threading

from flightc.cli.render import console, err, one_of
from flightc.errors import FlightcError


def register(sub) -> None:
    from flightc.bitstreams.boards import BOARDS, Flow
    from flightc.sim.board.backends import BOARD_BACKENDS

    pynq_boards = [b.name for b in BOARDS.values() if b.flow is Flow.PYNQ]
    bo = sub.add_parser("board", help="the virtual PYNQ board: pynq's remote-device protocol on a local address")
    bsub = bo.add_subparsers(dest="board_command", required=True)
    bs = bsub.add_parser("serve", help="serve a virtual board until interrupted; drive it with the unmodified pynq "
                                       "client (PYNQ_REMOTE_DEVICES=ADDRESS) or `flightc run --backend pynq`")
    bs.add_argument("--backend", default=next(iter(BOARD_BACKENDS)), choices=tuple(BOARD_BACKENDS),
                    help="; ".join(f"{b.name}: {b.summary}" for b in BOARD_BACKENDS.values()))
    bs.add_argument("--address", default="127.0.0.2", help="address to listen on (a loopback one by default; "
                                                           "another needs --allow-remote)")
    bs.add_argument("--allow-remote", action="store_true", help="listen on a non-loopback address: pynq's "
                    "remote-device protocol has no authentication, so anyone who reaches it drives the board")
    bs.add_argument("--port", type=int, default=7967, help="pynq's remote-device port (its client uses 7967)")
    bs.add_argument("--board", default=pynq_boards[0], help=f"which PYNQ board it is ({', '.join(pynq_boards)})")
    bs.add_argument("--memory-mib", type=int, help="the board's DDR (default "
                    + one_of(f"{b.memory_mib} for {b.name}" for b in BOARD_BACKENDS.values())
                    + ": the RTL's testbench memory, a power of two)")
    bs.add_argument("--no-hazard-check", action="store_true", help="fsim: skip the token-ordering checks")
    bs.set_defaults(func=cmd_serve)


def _loopback(address: str) -> bool:
    import ipaddress

    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return address == "localhost"


def cmd_serve(args) -> int:
    from flightc.bitstreams.boards import Flow, board
    from flightc.sim.board.board import VirtualBoard
    from flightc.sim.board.server import start_server

    b = board(args.board)
    if b.flow is not Flow.PYNQ:
        raise FlightcError(f"the virtual board is a PYNQ board; {b.name} is an Alveo card (XRT)")
    if not _loopback(args.address):
        if not args.allow_remote:
            raise FlightcError(f"--address {args.address} is not a loopback address; pynq's remote-device protocol "
                               "has no authentication: pass --allow-remote to serve it anyway")
        err.print(f"[yellow]warning:[/] serving on {args.address} without authentication: anyone who reaches "
                  "this address drives the board")
    vb = VirtualBoard(b, args.backend, args.memory_mib, check_hazards=not args.no_hazard_check)
    memory = (vb.memory.base + vb.memory.size - b.ddr_base) >> 20
    # Ctrl-C or a TERM stops it, also where SIGINT was ignored when it started (a background job of a script);
    # set before it listens, so a signal sent once a client can connect is never lost
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        server = start_server(vb, args.address, args.port)
    except OSError as e:
        raise FlightcError(str(e)) from None
    target = args.address if args.port == 7967 else f"{args.address}:{args.port}"
    console.print(f"virtual {b.name} board ({args.backend} backend, {memory} MiB of DDR) on "
                  f"{args.address}:{args.port}\n  clients: flightc run BUNDLE --backend pynq --overlay OVERLAY.bit "
                  f"--board {target}\n           or pynq itself with PYNQ_REMOTE_DEVICES={args.address}\n"
                  "  Ctrl-C stops it", highlight=False)
    try:
        while not stop.wait(0.5):
            pass
    finally:
        server.stop(0)
        vb.close()
    return 0
