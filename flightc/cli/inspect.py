"""flightc info, disasm and isa-doc: what a bundle holds, its instructions, and the ISA reference."""
from __future__ import annotations

import json

from rich.table import Table

from flightc.cli.render import console, print_cores, print_layers
from flightc.compiler.memory import region_spans
from flightc.errors import FlightcError
from flightc.files import write_atomic


def register(sub) -> None:
    d = sub.add_parser("disasm", help="disassemble one program of a bundle")
    d.add_argument("bundle")
    d.add_argument("--program", default="decode/1", help="KIND/N: prefill/8, decode/9, ...")
    d.add_argument("--core", type=int, help="only this core's stream")
    d.add_argument("--verbose", action="store_true", help="show zero-valued fields too")
    d.set_defaults(func=cmd_disasm)

    i = sub.add_parser("info", help="summarize a bundle")
    i.add_argument("bundle")
    i.add_argument("--json", action="store_true", help="print the manifest (without the program index)")
    i.set_defaults(func=cmd_info)


def register_isa_doc(sub) -> None:
    a = sub.add_parser("isa-doc", help="write the ISA reference generated from the table")
    a.add_argument("-o", "--output", help="e.g. docs/isa.md")
    a.set_defaults(func=cmd_isa_doc)



def _print_fallbacks(what: str, noun: str, why_by_name: dict[str, str]) -> None:
    """One line per reason: what does not stream, the names it applies to (the first four), and why."""
    reasons: dict[str, list[str]] = {}
    for name, why in why_by_name.items():
        reasons.setdefault(why, []).append(name)
    for why, names in reasons.items():
        console.print(f"[yellow]{what}[/] ({len(names)} {noun}{'s' if len(names) > 1 else ''}: "
                      f"{', '.join(names[:4])}{', ...' if len(names) > 4 else ''}): {why}")

def cmd_info(args) -> int:
    from flightc.bundle import load_bundle

    b = load_bundle(args.bundle)
    m = b.manifest
    if args.json:
        print(json.dumps({k: v for k, v in m.to_dict().items() if k != "programs"}, indent=1))
        return 0
    cfg = b.config
    console.print(f"[bold]{args.bundle}[/]: {m.format} v{m.bundle_version}, ISA {m.isa_version}, "
                  f"flightc {m.flightc_version}")
    console.print(f"hardware: {cfg.name} (hash {cfg.hash}): {cfg.num_cores} cores x {cfg.mpe_chains} chains x "
                  f"{cfg.chain_length} DSPs, {cfg.mem_channels} x {cfg.mem_channel_gbps} GB/s "
                  f"{cfg.mem_kind.value}, {cfg.clock_mhz:g} MHz")
    s = m.model
    console.print(f"model: {s['family']}, {s['num_layers']} layers, hidden {s['hidden_size']}, "
                  f"heads {s['num_heads']}/{s['num_kv_heads']} (q/kv), vocab {s['vocab_size']}; max_len {m.max_len}")
    alloc = m.allocation
    console.print(f"compression: {m.method}, KV cache INT{m.plan.get('kv_bits', 8)}"
                  + (f"; bit budget {alloc['budget_bits']:g} {alloc.get('budget_counts', 'values')} bits → "
                     f"{alloc['avg_bits']:.3f} value bits/weight, "
                     f"density {alloc['avg_density']:.3f}" if alloc else ""))
    if m.programs_only:
        console.print("[yellow]programs only[/]: no weights in this bundle; it feeds the performance model "
                      "(`flightc perf`), not the backends that compute values")
    print_layers(m)
    print_cores(m)
    buffered = m.memory_map.get("buffered", {})
    if buffered:  # the others stream their weights straight into the lane groups
        _print_fallbacks("weights through the WGT buffer", "layer", buffered)
    else:
        console.print("every linear layer streams its weights into the lane groups")
    for what in ("keys", "values"):  # attention's K and V: stream images, or rows through the KV buffer
        loaded = m.memory_map.get(f"{what}_loaded", {})
        if loaded:
            _print_fallbacks(f"{what} through the KV buffer", "attention", loaded)
        else:
            console.print(f"attention streams its {what} from their stream images into the lane groups")
    regions = Table(title="memory map")
    for col in ("region kind", "regions", "bytes", "channels"):
        regions.add_column(col)
    by_kind: dict[str, list[dict]] = {}
    for r in m.memory_map["regions"]:
        by_kind.setdefault(r["kind"], []).append(r)
    for kind, rs in by_kind.items():
        channels = {ch for r in rs for ch, _, _ in region_spans(r)}
        regions.add_row(kind, str(len(rs)), f"{sum(r['nbytes'] for r in rs):,}", str(len(channels)))
    console.print(regions)
    progs = Table(title=f"program templates (length-adaptive: one per step length and position range; prompts "
                        f"over {m.max_prefill} tokens run as several steps)")
    for col in ("tokens per step", "positions", "instructions", "bytes", "patched fields"):
        progs.add_column(col, justify="right")
    for t in m.programs:
        progs.add_row(str(t["length"]), f"{t['p_lo']}..{t['p_hi']}", f"{t['instructions']:,}", f"{t['bytes']:,}",
                      f"{t['patches']:,}")
    console.print(progs)
    st = m.storage
    console.print(f"instruction storage: {st['template_bytes'] + st['patch_bytes']:,} bytes (one program per length "
                  f"would take {st['per_length_bytes']:,})")
    return 0


def cmd_disasm(args) -> int:
    from flightc.bundle import load_bundle
    from flightc.isa.codec import decode_program
    from flightc.isa.disasm import disassemble

    b = load_bundle(args.bundle)
    kind, _, n = args.program.partition("/")
    if not n.isdigit():
        raise FlightcError(f"--program {args.program!r}: expected KIND/N such as decode/1 or prefill/8")
    try:
        streams = b.program(kind, int(n))
    except FlightcError as e:
        raise type(e)(f"--program {args.program}: {e}") from None
    if args.core is not None and not 0 <= args.core < len(streams):
        raise FlightcError(f"--core {args.core}: the bundle's programs have {len(streams)} core stream(s)")
    cores = range(len(streams)) if args.core is None else [args.core]
    for core in cores:
        if len(streams) > 1:
            print(f"; core {core}")
        for line in disassemble(decode_program(streams[core]), verbose=args.verbose):
            print(line)
    return 0


def cmd_isa_doc(args) -> int:
    from flightc.isa.docgen import render

    text = render()
    if args.output:
        write_atomic(args.output, text)
        console.print(f"wrote {args.output}")
    else:
        print(text)
    return 0
