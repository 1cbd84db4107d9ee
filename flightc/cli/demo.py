"""flightc demo: the built-in model compiled, answering prompts on the simulator, beside the float model."""
from __future__ import annotations

from pathlib import Path

from flightc.cli.render import console, presets_help


def register(sub) -> None:
    from flightc.models.builtin import DEFAULT_MODEL

    m = sub.add_parser("demo", help="compile the built-in model, answer prompts on the simulator and the RTL, "
                       "compare with the float model, model its speed and a 7B's on the U280")
    m.add_argument("--model", default=DEFAULT_MODEL)
    m.add_argument("--hw", default="tiny", help=presets_help())
    m.add_argument("--formats", default="w8,w4g128s8:16", help="weight formats to compile, comma-separated")
    m.add_argument("-n", type=int, default=40, help="held-out problems for the accuracy line")
    m.add_argument("--out", default="out/demo", help="folder for the bundles")
    m.add_argument("--parts", default="fsim,rtl,speed", help="what to show, comma-separated: fsim (answers and "
                   "accuracy on the functional simulator), rtl (one answer on the generated Verilog), speed (modeled "
                   "decode speed and resources, the built-in model and LLaMA2-7B on the U280)")
    m.set_defaults(func=cmd_demo)


def cmd_demo(args) -> int:
    from flightc.demo import run_demo

    return run_demo(args.model, args.hw, args.formats.split(","), args.n, Path(args.out), console,
                    tuple(p for p in args.parts.split(",") if p))
