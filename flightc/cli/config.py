"""flightc config: the hardware presets, or one config as JSON (optionally with fields changed)."""
from __future__ import annotations

import json

from rich.table import Table

from flightc.cli.render import console
from flightc.errors import ConfigError
from flightc.files import write_atomic


def register(sub) -> None:
    g = sub.add_parser("config", help="list hardware presets, or print / derive one as JSON")
    g.add_argument("name", nargs="?", help="preset name or JSON file")
    g.add_argument("--set", action="append", metavar="FIELD=JSON", help="change a field, e.g. num_cores=1")
    g.add_argument("-o", "--output", help="write the JSON here (usable as --hw FILE)")
    g.set_defaults(func=cmd_config)


def _changes(items: list[str]) -> dict:
    changes = {}
    for item in items:
        key, sep, value = item.partition("=")
        try:
            if not sep:
                raise ValueError
            changes[key] = json.loads(value)
        except ValueError:
            raise ConfigError(f"--set {item!r}: expected FIELD=JSON, e.g. num_cores=1 or sparse_n=[2,4,8,16]") from None
    return changes


def cmd_config(args) -> int:
    from flightc.config import PRESETS, HardwareConfig, load_config

    if args.name is None:
        t = Table(title="hardware presets")
        for col in ("name", "cores", "MPE DSPs", "memory", "GB/s", "MHz", "on-chip MiB", "hash"):
            t.add_column(col)
        for cfg in PRESETS.values():
            t.add_row(cfg.name, str(cfg.num_cores), f"{cfg.dsp_count:,}", f"{cfg.mem_channels} x {cfg.mem_kind.value}",
                      f"{cfg.mem_bandwidth_gbps:.1f}", f"{cfg.clock_mhz:g}", f"{cfg.on_chip_bytes / 2**20:.1f}",
                      cfg.hash)
        console.print(t)
        return 0
    cfg = load_config(args.name)
    if args.set:
        cfg = HardwareConfig.from_dict({**cfg.to_dict(), **_changes(args.set)})
    text = cfg.to_json()
    if args.output:
        write_atomic(args.output, text + "\n")
        console.print(f"wrote {args.output} (hash {cfg.hash})")
    else:
        print(text)
    return 0
