"""What a search leaves behind: the Pareto set as tables (terminal, CSV, markdown), plots, config files."""
from __future__ import annotations

import csv
import html
import io
import json
from pathlib import Path

from flightc.compress.formats import ENCODING_LETTERS
from flightc.config import HardwareConfig, SparseEncoding
from flightc.files import atomic_path, write_atomic
from flightc.parts import FLIGHTLLM_U280, Part
from flightc.dse.search import Direction, Objective, Trial


def dominates(a: list[float], b: list[float], objectives: list[Objective]) -> bool:
    better = False
    for x, y, o in zip(a, b, objectives):
        if o.direction is Direction.MINIMIZE:
            x, y = -x, -y
        if x < y:
            return False
        better = better or x > y
    return better


def pareto_front(trials: list[Trial], objectives: list[Objective]) -> list[Trial]:
    """Feasible points no other feasible point dominates (one per distinct objective vector)."""
    ok = [t for t in trials if t.result.feasible]
    vals = {t.number: [o.get(t.result) for o in objectives] for t in ok}
    front, seen = [], set()
    for t in sorted(ok, key=lambda t: t.number):
        key = tuple(vals[t.number])
        if key in seen or any(dominates(vals[u.number], vals[t.number], objectives) for u in ok):
            continue
        seen.add(key)
        front.append(t)
    return sorted(front, key=lambda t: -t.result.decode_tokens_per_s)


COLUMNS = ("trial", "cores", "chains x length", "sparsest N:16 (p: positions, m: bitmask)",
           "buffers KiB act/wgt/acc/prm/kv", "port B",
           "channels", "masters x slots", "SFU lanes", "MHz", "decode tok/s", "prefill ms", "DSP", "LUT", "FF",
           "BRAM36", "URAM", "fullest")


def sparsest(config: dict) -> str:
    """A point's sparsest N:16 and, where it is sparse, the grammar's letter of each encoding it decodes."""
    n = min(config["sparse_n"])
    letters = "".join(ENCODING_LETTERS[SparseEncoding[e]] for e in config["sparse_encodings"])
    return str(n) if n == 16 else f"{n}{letters}"


def row(t: Trial) -> list[str]:
    c, r = t.result.config, t.result
    util = [(k, v) for k, v in r.utilization.items() if v is not None]
    fullest = max(util, key=lambda kv: kv[1]) if util else None
    return [str(t.number), str(c["num_cores"]), f"{c['mpe_chains']} x {c['chain_length']}", sparsest(c),
            "/".join(str(c[f"{b}_buffer_kib"]) for b in ("act", "wgt", "acc", "prm", "kv")),
            str(c["buffer_port_bytes"]), str(c["mem_channels"]), f"{c['axi_masters']} x {c['lane_slots']}",
            str(c["sfu_lanes"]), f"{c['clock_mhz']:g}",
            f"{r.decode_tokens_per_s:.4g}", f"{r.prefill_ms:,.4g}", f"{r.resources['DSP']:,}",
            f"{r.resources['LUT']:,}", f"{r.resources['FF']:,}", f"{r.resources['BRAM36']:,}",
            f"{r.resources['URAM']:,}", f"{fullest[0]} {fullest[1]:.0%}" if fullest else "unchecked"]


def markdown(trials: list[Trial]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(row(t)) + " |" for t in trials]
    return "\n".join(lines) + "\n"


def write_csv(trials: list[Trial], path: Path) -> None:
    keys = ("decode_tokens_per_s", "prefill_ms", "memory_bytes", "memory_capacity", "seconds")
    with atomic_path(path) as tmp, tmp.open("w", newline="") as f:
        w = csv.writer(f)
        cfg_keys = sorted(trials[0].result.config) if trials else []
        res_keys = ("DSP", "LUT", "FF", "BRAM36", "URAM")
        w.writerow(["trial", "feasible", *keys, *res_keys, *cfg_keys, "violations", "error"])
        for t in trials:
            r = t.result
            w.writerow([t.number, r.feasible, *(getattr(r, k) for k in keys),
                        *(r.resources.get(k, "") for k in res_keys),
                        *(json.dumps(r.config[k]) if isinstance(r.config[k], list) else r.config[k]
                          for k in cfg_keys), "; ".join(r.violations), r.error])


def write_configs(front: list[Trial], folder: Path, part: Part) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for t in front:
        cfg = HardwareConfig.from_dict({**t.result.config, "name": f"{part.name}-dse-{t.number}"})
        p = folder / f"{cfg.name}.json"
        out.append(write_atomic(p, cfg.to_json() + "\n"))
    return out


def plot(trials: list[Trial], front: list[Trial], part: Part, title: str, path: Path, fmt: str = "png",
         flightllm: bool = False) -> Path:
    """Two panels: decode tokens/s against DSP, prefill latency against LUT; the part's capacity as a line,
    and with ``flightllm`` (LLaMA2-7B on u280) FlightLLM's published U280 build."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.8))
    ok = [t for t in trials if t.result.feasible]
    over = [t for t in trials if not t.result.error and t.result.violations]
    panels = ((axes[0], "DSP", "decode_tokens_per_s", "DSP48E2", "decode tokens/s", part.dsp),
              (axes[1], "LUT", "prefill_ms", "LUT", "prefill latency (ms)", part.lut))
    for ax, res, metric, xlabel, ylabel, cap in panels:
        def xy(ts):
            return [t.result.resources[res] for t in ts], [getattr(t.result, metric) for t in ts]

        ax.scatter(*xy(over), s=14, c="#d9b3b3", marker="x", label="over the part")
        ax.scatter(*xy(ok), s=16, c="#9aa9bd", label="feasible")
        ax.scatter(*xy(front), s=42, c="#c0392b", edgecolors="black", linewidths=0.5, label="Pareto set", zorder=3)
        for t in front:
            (x,), (y,) = xy([t])
            ax.annotate(str(t.number), (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
        if cap:
            ax.axvline(cap, color="black", lw=0.8, ls="--")
            ax.text(cap, ax.get_ylim()[1], f" {part.name} {xlabel}", fontsize=8, va="top")
        if flightllm:
            fl = FLIGHTLLM_U280
            if metric == "decode_tokens_per_s":
                ax.scatter([fl["DSP"]], [fl["decode_tokens_per_s"]], marker="*", s=160, c="#f1c40f",
                           edgecolors="black", label="FlightLLM U280 (measured, LLaMA2-7B)", zorder=4)
            else:
                ax.axvline(fl["LUT"], color="#b7950b", lw=1, ls=":")
                ax.text(fl["LUT"], ax.get_ylim()[0], " FlightLLM LUT", fontsize=8, color="#b7950b", rotation=90,
                        va="bottom")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel(f"{xlabel} (modeled, yosys-calibrated)")
        ax.set_ylabel(f"{ylabel} (modeled)")
        ax.grid(True, which="both", alpha=0.25)
        for axis in (ax.xaxis, ax.yaxis):
            axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.6g}"))
        ax.legend(fontsize=7, loc="best")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path = path.with_suffix(f".{fmt}")
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format=fmt, dpi=120 if fmt == "png" else None)
    plt.close(fig)
    return path


def write_html(front: list[Trial], trials: list[Trial], part: Part, title: str, path: Path,
               flightllm: bool = False) -> Path:
    """A self-contained page: the plots as SVG and the Pareto table."""
    svg_path = plot(trials, front, part, title, path.with_name(path.stem + "-plot"), fmt="svg", flightllm=flightllm)
    svg = svg_path.read_text()
    svg_path.unlink()
    svg = svg[svg.index("<svg"):]
    table = io.StringIO()
    table.write("<table><thead><tr>" + "".join(f"<th>{html.escape(c)}</th>" for c in COLUMNS) + "</tr></thead><tbody>")
    for t in front:
        table.write("<tr>" + "".join(f"<td>{html.escape(v)}</td>" for v in row(t)) + "</tr>")
    table.write("</tbody></table>")
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title><style>"
            "body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;font-size:12px}"
            "td,th{border:1px solid #ccc;padding:3px 6px;text-align:right}</style></head><body>"
            f"<h2>{html.escape(title)}</h2>{svg}<h3>Pareto set ({len(front)} of {len(trials)} points)</h3>"
            f"{table.getvalue()}<p>Speeds from the performance model (the RTL's timing contract); resources from "
            "the yosys-calibrated resource model. Configs: configs/*.json.</p></body></html>")
    write_atomic(path, page)
    return path
