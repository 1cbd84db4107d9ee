"""The ``flightc`` command line; each subcommand mirrors a Python API call.

One module per command group holds its parser next to its handler; this module puts them in order and
turns a FlightcError into a one-line message and exit status 2.
"""
from __future__ import annotations

import argparse
import logging
import sys

from rich.markup import escape

from flightc.cli import board, config, demo, dse, hw, inspect, perf, run
from flightc.cli import compile as compile_cmd
from flightc.cli import eval as eval_cmd
from flightc.cli.render import err
from flightc import __version__
from flightc.errors import FlightcError

# the order `flightc --help` lists the subcommands in
REGISTER = (compile_cmd.register, perf.register, run.register, inspect.register, eval_cmd.register, demo.register,
            config.register, hw.register, board.register, dse.register, inspect.register_isa_doc)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="flightc", description="Compile compressed LLMs for FlightLLM-style FPGA "
                                "accelerators and run them bit-exactly on simulators and boards.")
    p.add_argument("--version", action="version", version=f"flightc {__version__}")
    p.add_argument("-v", "--verbose", action="store_true", help="log each compiler pass")
    sub = p.add_subparsers(dest="command", required=True)
    for register in REGISTER:
        register(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    """Run one command: 0 on success, 2 (one line naming what is wrong) for bad input, 1 for a flightc bug."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(name)s: %(message)s")
    try:
        return args.func(args)
    except FlightcError as e:
        # one line, never wrapped by rich (a path cut at the console's width would not paste back)
        err.print(f"[red]error:[/] {escape(str(e))}", soft_wrap=True)
        return 2
    except KeyboardInterrupt:
        err.print("interrupted")
        return 130
    except Exception as e:  # a bug, not bad input: say so, and how to report it
        if args.verbose:
            err.print_exception()
        err.print(f"[red]error:[/] internal error: {escape(type(e).__name__)}: {escape(str(e))}\n  this is a bug in "
                  f"flightc {__version__}, not in your input; please report it on flightc's issue tracker with the "
                  f"command line and its output with -v (which adds the traceback)")
        return 1


if __name__ == "__main__":
    sys.exit(main())
