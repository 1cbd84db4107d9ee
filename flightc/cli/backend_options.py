"""The ``--backend`` choice and the per-backend flags, derived from the backend registry."""
from __future__ import annotations

import argparse

from flightc.runtime.backends import BACKENDS, OPTIONS, backend_spec, backends_help


def add_backend_choice(parser: argparse.ArgumentParser, help: str | None = None) -> None:
    names = tuple(BACKENDS)
    parser.add_argument("--backend", default=names[0], choices=names, help=help or backends_help())


def add_backend_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per backend option that has one (they are checked against the chosen backend)."""
    for o in OPTIONS.values():
        if o.flag is None:
            continue
        if o.store_false:
            parser.add_argument(o.flag, dest=o.name, action="store_const", const=False, default=None, help=o.help)
        else:
            parser.add_argument(o.flag, dest=o.name, type=o.type, default=None, help=o.help,
                                metavar=o.flag.lstrip("-").replace("-", "_").upper())


def given_options(args: argparse.Namespace) -> dict:
    """The backend flags given on the command line, checked against --backend (an error names what applies)."""
    given = {o.name: getattr(args, o.name) for o in OPTIONS.values()
             if o.flag is not None and getattr(args, o.name, None) is not None}
    backend_spec(args.backend).check_options(given)
    return given
