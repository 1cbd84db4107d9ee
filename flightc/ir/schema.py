"""What each op kind of the graph IR carries at each stage, declared once, and the verifier that holds a graph to it.

Every pass turns a graph of one :class:`Stage` into the next and adds attributes: the float model's weights, the
compressed weights, the calibrated ranges, the integer parameters, the fusion marks. :data:`ATTRIBUTES` lists each
attribute once (its type, the op kinds that carry it, the stage from which it is required or allowed); :func:`verify`
refuses a graph with an attribute missing, mistyped or unknown for its op, naming the node, the op and the attribute.
``flightc.compiler.pipeline.compile_model`` verifies after every pass. ``docs/ir.md`` is written from it.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from flightc.errors import ProgramError
from flightc.ir.graph import LUT_ACTIVATIONS, GraphIR, OpKind, Stage


def _array(v) -> bool:
    from flightc.frontend.lazy import LazyArray

    return isinstance(v, (np.ndarray, LazyArray))


def _quant(v) -> bool:
    from flightc.compress.quantize import QuantWeight

    return isinstance(v, QuantWeight)


def _pair(v) -> bool:  # (multiplier, shift): a quantized scale
    return isinstance(v, tuple) and len(v) == 2 and all(isinstance(x, (int, np.integer)) for x in v)


def _out_mode(v) -> bool:
    from flightc.isa.table import OutMode

    return isinstance(v, OutMode)


def _int(v) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


def _float(v) -> bool:
    return isinstance(v, (float, np.floating))


def _layer(v) -> bool:
    return v is None or _int(v)


def _names(v) -> bool:
    return isinstance(v, list) and all(isinstance(x, str) for x in v)


def _inputs(v) -> bool:
    return isinstance(v, tuple) and all(isinstance(x, str) for x in v)


@dataclass(frozen=True)
class Attr:
    """One node attribute: ``check`` is its type, ``ops`` the op kinds that carry it (empty: every op), ``since``
    the stage that adds it; ``optional``: it may be absent from then on."""

    name: str
    check: object
    what: str  # the type, in words (for errors and docs)
    since: Stage
    ops: tuple[OpKind, ...] = ()
    optional: bool = False
    doc: str = ""


NORMS = (OpKind.RMSNORM, OpKind.LAYERNORM)
F, C, K, I, U = Stage.FLOAT, Stage.COMPRESSED, Stage.CALIBRATED, Stage.INTEGER, Stage.FUSED

ATTRIBUTES: tuple[Attr, ...] = (
    Attr("op", lambda v: isinstance(v, OpKind), "an OpKind", F, doc="the op kind"),
    Attr("inputs", _inputs, "a tuple of node names", F,
         doc="the input nodes, in the op's order: the graph's only record of its edges"),
    Attr("layer", _layer, "an int or None", F, doc="the transformer layer (None: embedding, final norm, head)"),
    Attr("weight", _array, "an array", F, (OpKind.EMBED, OpKind.LINEAR, *NORMS),
         doc="float weight: the embedding table, a linear's [N, K] matrix, a norm's gain"),
    Attr("bias", _array, "an array", F, (OpKind.LINEAR, OpKind.LAYERNORM), optional=True, doc="float bias"),
    Attr("positions", _array, "an array", F, (OpKind.EMBED,), optional=True, doc="learned positions (OPT)"),
    Attr("qweight", _quant, "a QuantWeight", C, (OpKind.LINEAR,), doc="the compressed weight"),
    Attr("qembed", _quant, "a QuantWeight", C, (OpKind.EMBED,), doc="the INT8 embedding table"),
    Attr("qpositions", _quant, "a QuantWeight", C, (OpKind.EMBED,), optional=True, doc="the INT8 positions"),
    Attr("kv_bits", _int, "an int", C, (OpKind.ATTENTION,), doc="the KV cache's width in memory (8 or 4)"),
    Attr("amax", _float, "a float", K, doc="the largest magnitude the node's output reaches on calibration"),
    Attr("kv_clip", _float, "a float", K, (OpKind.LINEAR, OpKind.ROPE), optional=True,
         doc="the clip of a tensor an INT4 KV cache holds"),
    Attr("scale", _float, "a float", I, doc="the real value of one unit of the node's integer output"),
    Attr("deq", _pair, "a (multiplier, shift) pair", I, (OpKind.EMBED,), doc="DEQ's requantization"),
    Attr("pos_deq", _pair, "a (multiplier, shift) pair", I, (OpKind.EMBED,), optional=True,
         doc="DEQ_ADD's requantization of the positions"),
    Attr("gain", _array, "an array", I, NORMS, doc="the norm's integer gains"),
    Attr("eps_q", _int, "an int", I, NORMS, doc="epsilon in the norm's integer units"),
    Attr("norm_shift", _int, "an int", I, NORMS, doc="the norm's output shift"),
    Attr("beta_q", _array, "an array", I, (OpKind.LAYERNORM,), doc="LayerNorm's integer bias"),
    Attr("mult", _array, "an array", I, (OpKind.LINEAR,), doc="per-row requantization multipliers"),
    Attr("shift", _array, "an array", I, (OpKind.LINEAR,), doc="per-row requantization shifts"),
    Attr("bias_q", _array, "an array", I, (OpKind.LINEAR,), doc="per-row INT32 bias"),
    Attr("out_mode", _out_mode, "an OutMode", I, (OpKind.LINEAR,), doc="the MPE's output stage"),
    Attr("lut", _array, "an array", I, LUT_ACTIVATIONS, doc="the activation's 256-entry table"),
    Attr("softmax", _pair, "a (multiplier, shift) pair", I, (OpKind.ATTENTION,), doc="the scores' scale"),
    Attr("pv", _pair, "a (multiplier, shift) pair", I, (OpKind.ATTENTION,), doc="P.V's requantization"),
    Attr("emul", _pair, "a (multiplier, shift) pair", I, (OpKind.MUL,), doc="EMUL's requantization"),
    Attr("fused", _names, "a list of node names", U, (OpKind.LINEAR,), optional=True,
         doc="the activation folded into the output stage"),
    Attr("lut", _array, "an array", U, (OpKind.LINEAR,), optional=True, doc="a fused activation's table"),
    Attr("rope", lambda v: isinstance(v, bool), "a bool", U, (OpKind.LINEAR,), optional=True,
         doc="RoPE applied in place after the product"),
)


def allowed(op: OpKind, stage: Stage) -> dict[str, list[Attr]]:
    """The attributes a node of ``op`` may carry at ``stage``, by name."""
    out: dict[str, list[Attr]] = {}
    for a in ATTRIBUTES:
        if (not a.ops or op in a.ops) and a.since.rank <= stage.rank:
            out.setdefault(a.name, []).append(a)
    return out


def verify(graph: GraphIR, after: str = "") -> None:
    """Refuse a graph whose nodes do not carry what their op declares at the graph's stage (an attribute missing,
    of another type, or unknown), naming the node, the op and the attribute; ``after`` names the pass just run."""
    where = f" after pass {after}" if after else ""
    if not isinstance(graph.stage, Stage):
        raise ProgramError(f"graph IR{where}: stage {graph.stage!r} is not a Stage (one of {[s.value for s in Stage]})")
    stage = graph.stage
    for name, node in graph.items():
        op = node.get("op")
        if not isinstance(op, OpKind):
            raise ProgramError(f"graph IR{where}: node {name!r} has op {op!r}, not an OpKind")
        rules = allowed(op, stage)
        for key, value in node.items():
            if key not in rules:
                raise ProgramError(f"graph IR{where}: {op.value} node {name!r} carries attribute {key!r}, which "
                                   f"{_a(op)} does not have at stage {stage.value} (it has "
                                   f"{', '.join(sorted(rules))})")
            if not any(a.check(value) for a in rules[key]):
                raise ProgramError(f"graph IR{where}: {op.value} node {name!r}: attribute {key!r} is a "
                                   f"{type(value).__name__}, not {rules[key][0].what}")
        for key, attrs in rules.items():
            if key not in node and not any(a.optional for a in attrs):
                raise ProgramError(f"graph IR{where}: {op.value} node {name!r} lacks attribute {key!r} "
                                   f"({attrs[0].what}: {attrs[0].doc}), which {_a(op)} has from stage "
                                   f"{attrs[0].since.value} on")
        missing = [i for i in node["inputs"] if i not in graph]
        if missing:
            raise ProgramError(f"graph IR{where}: {op.value} node {name!r} reads {missing}, which the graph lacks")
    graph.order()  # and no cycle


def _a(op: OpKind) -> str:
    return ("an " if op.value[0] in "aeiou" else "a ") + op.value


def markdown() -> str:
    """docs/ir.md: the stages and every attribute, as declared here (``python -m flightc.ir.schema`` writes it)."""
    lines = ["# The graph IR: stages and node attributes", "",
             "Generated from `flightc/ir/schema.py` (`python -m flightc.ir.schema > docs/ir.md`); "
             "`flightc.compiler.pipeline.compile_model` verifies the graph against it after every pass. "
             "`flightc compile MODEL --stop-after PASS` (or `compile_model(..., stop_after=PASS)`) stops after one of "
             "the passes below and shows its graph: each op kind's nodes and the attributes they carry.", "",
             "| stage | added by |", "|---|---|"]
    lines += [f"| `{s.value}` | {_STAGE_DOCS[s]} |" for s in Stage]
    lines += ["", "| attribute | type | op kinds | from stage | required | meaning |", "|---|---|---|---|---|---|"]
    for a in ATTRIBUTES:
        ops = ", ".join(o.value for o in a.ops) if a.ops else "every op"
        lines.append(f"| `{a.name}` | {a.what} | {ops} | {a.since.value} | {'no' if a.optional else 'yes'} | "
                     f"{a.doc} |")
    return "\n".join(lines) + "\n"


_STAGE_DOCS = {Stage.FLOAT: "a frontend (Hugging Face, ONNX, torch.export)", Stage.COMPRESSED: "pass `compress`",
               Stage.CALIBRATED: "pass `calibrate`", Stage.INTEGER: "pass `integerize`", Stage.FUSED: "pass `fuse`"}


if __name__ == "__main__":
    print(markdown(), end="")
