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
        elif o.store_true:
            parser.add_argument(o.flag, dest=o.name, action="store_const", const=True, default=None, help=o.help)
        else:
            parser.add_argument(o.flag, dest=o.name, type=o.type, default=None, help=o.help,
                                metavar=o.flag.lstrip("-").replace("-", "_").upper())


def given_options(args: argparse.Namespace) -> dict:
    """The backend flags given on the command line, checked against --backend (an error names what applies)."""
    given = {o.name: getattr(args, o.name) for o in OPTIONS.values()
             if o.flag is not None and getattr(args, o.name, None) is not None}
    backend_spec(args.backend).check_options(given)
    return given


def add_sampling_flags(parser: argparse.ArgumentParser) -> None:
    """The host-side sampler's flags (flightc.runtime.sampling): the same tokens on every backend for one seed."""
    g = parser.add_argument_group("sampling (default: greedy)")
    g.add_argument("--temperature", type=float, default=0.0, help="0: greedy; > 0 samples from the softened logits")
    g.add_argument("--top-k", type=int, default=0, help="sample among the k most likely tokens (0: all)")
    g.add_argument("--top-p", type=float, default=1.0, help="sample among the most likely tokens whose probability "
                                                            "reaches p")
    g.add_argument("--repetition-penalty", type=float, default=1.0, help="> 1 discourages tokens already present")
    g.add_argument("--seed", type=int, default=0, help="seed of the sampler")


def sampler_of(args: argparse.Namespace):
    from flightc.runtime.sampling import Sampler

    return Sampler(args.temperature, args.top_k, args.top_p, args.repetition_penalty, args.seed)
