"""The machine-readable outputs scripts rely on (`flightc perf --json`, `flightc run --json`), declared once.

Each schema names its version (the ``schema`` key of every document), its keys, their types, units and
meanings. :meth:`Schema.validate` checks a document key for key (nothing missing, nothing extra);
:func:`render` writes docs/json.md. Any change to the keys (renamed, removed, retyped or added) bumps the version.
"""
from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from flightc.errors import FlightcError


class SchemaError(FlightcError):
    """A document that does not follow its schema."""


class Kind(Enum):
    INT = "integer"
    NUMBER = "number"
    STR = "string"
    BOOL = "boolean"
    OBJECT = "object"
    MAP = "map"  # an object with free keys (unit names, channels, instruction classes) and values of one kind
    LIST = "list"


_PY = {Kind.INT: (int,), Kind.NUMBER: (int, float), Kind.STR: (str,), Kind.BOOL: (bool,), Kind.OBJECT: (dict,),
       Kind.MAP: (dict,), Kind.LIST: (list,)}


@dataclass(frozen=True)
class Key:
    """One key of a document: its kind, unit and meaning; ``keys`` for an object (or a list of objects),
    ``item`` for the values of a map or the items of a list."""

    name: str
    kind: Kind
    doc: str
    unit: str = ""
    keys: tuple["Key", ...] = ()
    item: Kind | None = None
    nullable: bool = False


def _check(value, kind: Kind, path: str) -> None:
    if isinstance(value, bool) and kind is not Kind.BOOL or not isinstance(value, _PY[kind]):
        raise SchemaError(f"{path}: expected {kind.value}, got {type(value).__name__} {value!r:.60}")


def _validate(value, key: Key, path: str) -> None:
    if value is None:
        if not key.nullable:
            raise SchemaError(f"{path}: null, but the schema requires a {key.kind.value}")
        return
    _check(value, key.kind, path)
    if key.kind is Kind.MAP:
        for k, v in value.items():
            _check(v, key.item, f"{path}.{k}")
    elif key.kind is Kind.LIST:
        for i, v in enumerate(value):
            if key.keys:
                _validate_keys(v, key.keys, f"{path}[{i}]")
            else:
                _check(v, key.item, f"{path}[{i}]")
    elif key.kind is Kind.OBJECT:
        _validate_keys(value, key.keys, path)


def _validate_keys(doc, keys: tuple[Key, ...], path: str) -> None:
    _check(doc, Kind.OBJECT, path)
    want = {k.name: k for k in keys}
    missing, extra = sorted(set(want) - set(doc)), sorted(set(doc) - set(want))
    if missing or extra:
        raise SchemaError(f"{path}: " + "; ".join(filter(None, (missing and f"missing keys {missing}",
                                                                 extra and f"keys the schema does not declare "
                                                                           f"{extra}"))))
    for name, key in want.items():
        _validate(doc[name], key, f"{path}.{name}")


@dataclass(frozen=True)
class Schema:
    command: str
    version: str
    doc: str
    keys: tuple[Key, ...]

    def validate(self, doc: dict) -> None:
        """Raise SchemaError naming the first key that is missing, undeclared or of the wrong kind."""
        _validate_keys(doc, self.keys, self.command)
        if doc["schema"] != self.version:
            raise SchemaError(f"{self.command}: schema {doc['schema']!r}, expected {self.version!r}")


_PHASE = (
    Key("steps", Kind.INT, "programs run (prompts longer than max_prefill take several)"),
    Key("tokens", Kind.INT, "tokens processed", "tokens"),
    Key("seconds", Kind.NUMBER, "modeled time of the phase", "s"),
    Key("tokens_per_s", Kind.NUMBER, "tokens / seconds", "tokens/s"),
    Key("hbm_bytes", Kind.NUMBER, "off-chip bytes read and written", "bytes"),
    Key("macs", Kind.NUMBER, "multiply-accumulates of the MPE", "MACs"),
    Key("bandwidth_used", Kind.NUMBER, "hbm_bytes / seconds over the nominal bandwidth (config.mem_bytes_per_s)",
        "fraction"),
    Key("macs_used", Kind.NUMBER, "macs / seconds over every core's peak (config.peak_macs_per_s)", "fraction"),
    Key("unit_busy", Kind.MAP, "time-weighted share of the phase each unit (LD, ST, MPE, SFU) was busy, averaged "
        "over cores", "fraction", item=Kind.NUMBER),
    Key("exact_steps", Kind.INT, "steps scheduled exactly; the others are interpolated (--sample)"),
)

PERF_SCHEMA = Schema("flightc perf --json", "flightc.perf/1",
                     "The modeled speed of one request (a prompt, then generated tokens) on a bundle. Every figure is "
                     "modeled by the performance model (the RTL's timing contract, checked against RTL cycles), not "
                     "measured.", (
    Key("schema", Kind.STR, 'the version of this schema: "flightc.perf/1"'),
    Key("modeled", Kind.BOOL, "always true: these are performance-model figures"),
    Key("config", Kind.OBJECT, "the hardware the bundle was compiled for", keys=(
        Key("name", Kind.STR, "config name (a label; not part of the hash)"),
        Key("hash", Kind.STR, "config hash, as the kernel's identity register reports it"),
        Key("clock_mhz", Kind.NUMBER, "kernel clock", "MHz"),
        Key("mem_bytes_per_s", Kind.NUMBER, "nominal off-chip bandwidth: mem_channels x mem_channel_gbps", "bytes/s"),
        Key("peak_macs_per_s", Kind.NUMBER, "DSPs x MACs per DSP x clock", "MACs/s"))),
    Key("request", Kind.OBJECT, "what was modeled", keys=(
        Key("prompt", Kind.INT, "prompt tokens", "tokens"),
        Key("decode", Kind.INT, "generated tokens", "tokens"),
        Key("sample_every", Kind.INT, "every Nth position scheduled exactly, linear in between"))),
    Key("prefill", Kind.OBJECT, "the prompt", keys=_PHASE),
    Key("decode", Kind.OBJECT, "the generated tokens (null when decode is 0)", keys=_PHASE, nullable=True),
    Key("token_bytes", Kind.OBJECT, "bytes the decode step at the middle of the generated tokens streams from "
        "memory, by kind (null when decode is 0)", "bytes", nullable=True, keys=(
        Key("position", Kind.INT, "the position of that decode step"),
        Key("weight_values", Kind.INT, "packed weight values", "bytes"),
        Key("sparse_indices", Kind.INT, "N:M index bits of sparse weights", "bytes"),
        Key("group_scales", Kind.INT, "group multipliers of sub-8-bit weights", "bytes"),
        Key("requant_records", Kind.INT, "requantization records", "bytes"),
        Key("kv_cache", Kind.INT, "K and V rows read", "bytes"),
        Key("other", Kind.INT, "embedding row, norm parameters, LUTs, RoPE rows, exchanges between cores", "bytes"),
        Key("total", Kind.INT, "the sum of the above", "bytes"))),
    Key("roofline_tokens_per_s", Kind.NUMBER, "the HBM roofline: nominal bandwidth (mem_channels x "
        "mem_channel_gbps) / token_bytes.total (null when decode is 0)", "tokens/s", nullable=True),
    Key("of_roofline", Kind.NUMBER, "decode.tokens_per_s / roofline_tokens_per_s", "fraction", nullable=True),
))

_STEP = (
    Key("name", Kind.STR, '"prefill N at P" or "decode at P"'),
    Key("cycles", Kind.INT, "modeled cycles of the step", "cycles"),
    Key("seconds", Kind.NUMBER, "cycles / clock", "s"),
    Key("unit_busy", Kind.MAP, "share of the step each unit was busy, averaged over cores", "fraction",
        item=Kind.NUMBER),
    Key("hbm_read_bytes", Kind.INT, "off-chip bytes read", "bytes"),
    Key("hbm_written_bytes", Kind.INT, "off-chip bytes written", "bytes"),
    Key("hbm_utilization", Kind.NUMBER, "bytes moved / (seconds x nominal bandwidth)", "fraction"),
    Key("macs", Kind.INT, "MPE multiply-accumulates", "MACs"),
    Key("mpe_utilization", Kind.NUMBER, "macs / (cycles x peak MACs per cycle)", "fraction"),
    Key("roofline_seconds", Kind.NUMBER, "the larger of bytes / nominal bandwidth and MACs / peak", "s"),
    Key("bound", Kind.STR, '"memory" or "compute": which roof bounds the step'),
)

RUN_SCHEMA = Schema("flightc run --json", "flightc.run/2",
                    "Tokens generated from a bundle on a backend, what the backend counted, and (with --compare "
                    "reference) the float model beside it.", (
    Key("schema", Kind.STR, 'the version of this schema: "flightc.run/2"'),
    Key("backend", Kind.STR, "fsim, perf, rtl, pynq or xrt"),
    Key("prompt", Kind.LIST, "prompt token ids", item=Kind.INT),
    Key("prompt_text", Kind.STR, "--prompt: the prompt as given (null with --prompt-ids)", nullable=True),
    Key("tokens", Kind.LIST, "tokens generated (ending at an EOS id when the tokenizer has one)", item=Kind.INT),
    Key("text", Kind.STR, "--prompt: the generated tokens decoded by the model's tokenizer (null with "
        "--prompt-ids)", nullable=True),
    Key("sampler", Kind.OBJECT, "how tokens were chosen (host-side, the same for every backend)", keys=(
        Key("temperature", Kind.NUMBER, "0: greedy"),
        Key("top_k", Kind.INT, "0: every token"),
        Key("top_p", Kind.NUMBER, "nucleus mass kept"),
        Key("repetition_penalty", Kind.NUMBER, "1: none"),
        Key("seed", Kind.INT, "seed of the numpy generator"))),
    Key("wall_s", Kind.NUMBER, "wall-clock time of the generation on this machine (simulation speed for fsim, perf "
        "and rtl; end to end, host included, for boards)", "s"),
    Key("modeled_steps", Kind.LIST, "perf backend: each step as the performance model sees it (empty otherwise)",
        keys=_STEP),
    Key("reference", Kind.OBJECT, "--compare reference: the float model on the same prompt (null otherwise)",
        nullable=True, keys=(
        Key("source", Kind.STR, "the float model: a Hugging Face folder or builtin:NAME"),
        Key("device", Kind.STR, "where PyTorch ran it: cuda or cpu"),
        Key("tokens", Kind.LIST, "its greedy tokens", item=Kind.INT),
        Key("wall_s", Kind.NUMBER, "its wall-clock time here", "s"),
        Key("device_tokens_per_s", Kind.NUMBER, "tokens / (the backend's cycles / clock): the device's speed by "
            "counters.cycle_source (null when the backend counts no cycles)", "tokens/s", nullable=True),
        Key("greedy_match", Kind.NUMBER, "share of generated positions where both greedy sequences agree",
            "fraction"),
        Key("first_divergence", Kind.INT, "index of the first differing generated token (null: none differ)",
            nullable=True),
        Key("teacher_forced_match", Kind.NUMBER, "on the backend's tokens: the float argmax equals its token",
            "fraction"),
        Key("logit_rel_error", Kind.NUMBER, "||z_q - z_f|| / ||z_f|| over those positions (dequantized logits)"),
        Key("logit_cosine", Kind.NUMBER, "mean cosine between the two logit vectors per position"))),
    Key("counters", Kind.OBJECT, "what the backend counted over the whole generation", keys=(
        Key("instructions", Kind.MAP, "instructions run, per ISA class", item=Kind.INT),
        Key("macs", Kind.INT, "MPE multiply-accumulates", "MACs"),
        Key("sfu_elements", Kind.INT, "elements through the SFU"),
        Key("hbm_read_bytes", Kind.INT, "off-chip bytes read", "bytes"),
        Key("hbm_written_bytes", Kind.INT, "off-chip bytes written", "bytes"),
        Key("hbm_read_per_channel", Kind.MAP, "bytes read per memory channel (keys: channel numbers)", "bytes",
            item=Kind.INT),
        Key("cycles", Kind.MAP, 'the kernel\'s cycle counters: "cycles" (the whole run) and "busy_<class>" (null '
            "when the backend counts no cycles)", "cycles", item=Kind.INT, nullable=True),
        Key("cycle_source", Kind.STR, 'where the cycles come from: "none" (fsim), "modeled" (the performance model), '
            '"rtl" (measured on the generated RTL) or "board" (the kernel\'s counters on an FPGA)'),
        Key("cycles_where", Kind.STR, "which board, or what a virtual board says it is (null for simulators)",
            nullable=True))),
))

SCHEMAS = (PERF_SCHEMA, RUN_SCHEMA)


def _rows(keys: tuple[Key, ...], prefix: str = "") -> list[str]:
    out = []
    for k in keys:
        kind = k.kind.value + (f" of {k.item.value}" if k.item else "") + (" or null" if k.nullable else "")
        if k.kind is Kind.LIST and k.keys:
            kind = "list of objects"
        out.append(f"| `{prefix}{k.name}` | {kind} | {k.unit or '-'} | {k.doc} |")
        if k.keys:
            out += _rows(k.keys, f"{prefix}{k.name}{'[]' if k.kind is Kind.LIST else ''}.")
    return out


def render() -> str:
    """docs/json.md: every schema as a table of its keys."""
    lines = ["# Machine-readable output", "",
             "Generated from `flightc/schema.py` by `make docs`; a test checks that this page is current and that "
             "the commands write exactly these keys. Every document carries its version in `schema`; the version "
             "changes whenever its keys do (renamed, removed, retyped or added).", ""]
    for s in SCHEMAS:
        lines += [f"## `{s.command}` — `{s.version}`", "", s.doc, "", "| key | type | unit | meaning |",
                  "|---|---|---|---|", *_rows(s.keys), ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """``python -m flightc.schema [-o docs/json.md]``"""
    import argparse

    from flightc.files import write_atomic

    ap = argparse.ArgumentParser(prog="python -m flightc.schema", description="write the JSON output reference")
    ap.add_argument("-o", "--output", help="e.g. docs/json.md (default: print it)")
    args = ap.parse_args(argv)
    if args.output:
        write_atomic(args.output, render())
    else:
        print(render())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
