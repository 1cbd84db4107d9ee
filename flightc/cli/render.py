"""What every command prints with: the rich consoles, progress bars, tables, and help lists from their tables."""
from __future__ import annotations

from typing import TYPE_CHECKING

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

if TYPE_CHECKING:
    from flightc.bundle import Manifest

console = Console()
err = Console(stderr=True)


def progress() -> Progress:
    """A transient progress bar on stderr."""
    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    console=err, transient=True)


def table(title: str, columns: tuple[str, ...], rows: list[tuple[str, ...]]) -> Table:
    """A name/value table: the first column left-aligned, the others right-aligned."""
    t = Table(title=title)
    t.add_column(columns[0])
    for col in columns[1:]:
        t.add_column(col, justify="right")
    for row in rows:
        t.add_row(*row)
    return t


def print_layers(manifest: "Manifest") -> None:
    """The weight formats of a bundle, layers grouped by format: how each stores its sparse positions and the bits
    a weight takes in memory (values, positions and group multipliers)."""
    from flightc.compress.formats import WeightFormat
    from flightc.compress.plan import CompressionPlan

    fmts: dict[str, list[str]] = {}
    for layer, label in manifest.layers.items():
        fmts.setdefault(label, []).append(layer)
    plan = CompressionPlan.from_describe(manifest.plan)
    encodings = manifest.config.get("sparse_encodings", [])
    t = Table(title="weight formats", caption=f"sparse positions: the compiler takes the encoding of the hardware's "
                                              f"({', '.join(encodings)}) that stores a layer in the fewest bytes, "
                                              f"unless the format names one (p, m or r after N:M)")
    for col in ("format", "positions stored as", "bits a weight", "layers"):
        t.add_column(col, justify="right" if col == "bits a weight" else "left", overflow="fold")
    for label, layers in fmts.items():
        fmt = WeightFormat.from_label(label)
        stored = f"{fmt.encoding.name} ({fmt.block_meta_bits} bits a block of {fmt.m})" if fmt.sparse else "-"
        pruned = sorted({(f.n, f.m) for f in map(plan.format_for, layers) if f.sparse and not fmt.sparse})
        if pruned:  # planned sparse, stored dense (WeightFormat.stored_for)
            stored = (f"none: pruned {', '.join(f'{n}:{m}' for n, m in pruned)} as planned, stored dense (the "
                      f"hardware decodes no such N:M)")
        t.add_row(label, stored, f"{fmt.stored_bits:.3g}",
                  ", ".join(layers) if len(layers) <= 6 else f"{len(layers)} layers")
    console.print(t)


def print_cores(manifest: "Manifest") -> None:
    """How a bundle of several cores splits the model: each core's channels (it streams from them alone) and KV
    heads; every linear layer's rows go in proportion to the channels (flightc.compiler.memory.channel_shares)."""
    from flightc.compiler.memory import core_channels, head_shares
    from flightc.config import HardwareConfig

    cfg = HardwareConfig.from_dict(manifest.config)
    if cfg.num_cores == 1:
        return
    chans = [(cs[0], cs[-1] + 1) for cs in (core_channels(cfg, c) for c in range(cfg.num_cores))]
    heads = head_shares(cfg, manifest.model["num_kv_heads"])

    def span(a: int, b: int) -> str:
        return "none" if b <= a else str(a) if b == a + 1 else f"{a}-{b - 1}"

    t = Table(title=f"{cfg.num_cores} cores", caption="every linear layer's rows in proportion to the channels; a "
                                                      "tensor held in slices is exchanged through memory at a barrier")
    for col in ("core", "memory channels", "KV heads"):
        t.add_column(col, justify="right")
    for core, ((c0, c1), (h0, h1)) in enumerate(zip(chans, heads)):
        t.add_row(str(core), span(c0, c1), span(h0, h1))
    console.print(t)


def one_of(names) -> str:
    """'a, b or c'."""
    names = [str(n) for n in names]
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " or " + names[-1]


def presets_help(what: str = "hardware preset") -> str:
    from flightc.config import PRESETS

    return f"{what} ({', '.join(PRESETS)}) or config JSON"


def parts_help() -> str:
    from flightc.parts import PARTS

    return ", ".join(PARTS)
