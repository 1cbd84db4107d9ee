"""The graph IR's schema (flightc/ir/schema.py): every op kind's node, at every stage the compile passes through,
carries what the schema declares; a node with one attribute missing, mistyped or unknown is refused by name."""
from __future__ import annotations

import pytest

from conftest import compiled
from flightc.errors import ProgramError
from flightc.ir.graph import OpKind
from flightc.ir.schema import Stage, allowed, verify

MODELS = ("tiny-llama", "tiny-opt", "tiny-gemma")  # between them every op kind: LayerNorm and ReLU, GELU, SiLU


def stages():
    for name in MODELS:
        c = compiled(name, "w4g32")
        yield from ((name, c.float_graph), (name, c.integer), (name, c.fused))


def test_every_compiled_stage_verifies_and_every_op_kind_is_seen():
    seen = set()
    for _, g in stages():
        verify(g)
        seen |= {g.node(n)["op"] for n in g.order()}
    assert seen == set(OpKind)


@pytest.mark.parametrize("op", list(OpKind), ids=lambda o: o.value)
def test_a_missing_mistyped_or_unknown_attribute_is_named(op):
    name, g = next((m, g) for m, g in stages() if g.stage == Stage.INTEGER.value and any(g.nodes_of(op)))
    node = next(g.nodes_of(op))
    required = [k for k, attrs in allowed(op, Stage.INTEGER).items() if not any(a.optional for a in attrs)]
    assert {"op", "inputs", "layer", "scale"} <= set(required)
    for key in required:
        if key == "op":
            continue
        if key == "inputs":  # the graph's structure: a node's attributes cannot drop or retype it
            for change in (lambda n: n.__delitem__(key), lambda n: n.__setitem__(key, object()),
                           lambda n: n.pop(key), lambda n: n.update(inputs=())):
                with pytest.raises(ProgramError, match="'inputs' are the graph's structure"):
                    change(g.copy().node(node))
            continue
        for broken, words in (("missing", f"lacks attribute {key!r}"), ("mistyped", f"attribute {key!r} is a")):
            bad = g.copy()
            if broken == "missing":
                del bad.node(node)[key]
            else:
                bad.node(node)[key] = object()
            with pytest.raises(ProgramError, match=rf"{op.value} node {node!r}.*{words}|{op.value} node "
                                                   rf"{node!r}: {words}"):
                verify(bad)
    bad = g.copy()
    bad.node(node)["stray"] = 1
    with pytest.raises(ProgramError, match=rf"{op.value} node {node!r} carries attribute 'stray'"):
        verify(bad)
    bad = g.copy()
    bad.node(node)["op"] = op.value  # a string, not the enum
    with pytest.raises(ProgramError, match=rf"node {node!r} has op '{op.value}', not an OpKind"):
        verify(bad)


def test_a_stage_gates_what_a_node_may_carry():
    g = compiled("tiny-llama", "w4g32").integer.copy(stage="float")  # integer attributes at the float stage
    with pytest.raises(ProgramError, match=r"carries attribute '(amax|scale|qweight|qembed|kv_bits|.*)', which"):
        verify(g, "frontend")
    g = compiled("tiny-llama", "w4g32").float_graph.copy(stage="integer")
    with pytest.raises(ProgramError, match=r"lacks attribute .* which an? .* has from stage (compressed|calibrated|"
                                           r"integer) on"):
        verify(g)
    with pytest.raises(ProgramError, match=r"stage 'cooked' is none of \['float', 'compressed'"):
        compiled("tiny-llama", "w4g32").float_graph.copy(stage="cooked")
    g = compiled("tiny-llama", "w4g32").float_graph.copy()
    g.stage = "float"  # a name set past the constructor, which takes names for members
    with pytest.raises(ProgramError, match=r"stage 'float' is not a Stage"):
        verify(g)


def test_the_ir_docs_are_the_schemas():
    from pathlib import Path

    from flightc.ir.schema import markdown

    assert (Path(__file__).resolve().parents[1] / "docs" / "ir.md").read_text() == markdown(), \
        "docs/ir.md is stale: python -m flightc.ir.schema > docs/ir.md"


def test_a_compile_stops_after_a_named_pass_with_its_graph(capsys):
    from conftest import torch_model
    from flightc.cli import main
    from flightc.compiler.pipeline import compile_model
    from flightc.compress.plan import CompressionPlan
    from flightc.errors import UnsupportedError
    from flightc.ir.graph import GraphIR

    model, plan = torch_model("tiny-llama"), CompressionPlan.parse("w4g32")
    for name, stage in (("frontend", "float"), ("equalize", "float"), ("compress", "compressed"),
                        ("calibrate", "calibrated"), ("integerize", "integer"), ("fuse", "fused")):
        g = compile_model(model, "tiny", plan, max_len=16, stop_after=name)
        assert isinstance(g, GraphIR) and g.stage == stage, name
    assert compile_model(model, "tiny", plan, max_len=16, weights=False, stop_after="calibrate").stage == "calibrated"
    with pytest.raises(UnsupportedError, match="stop after 'place': the passes that give a graph are frontend"):
        compile_model(model, "tiny", plan, stop_after="place")
    with pytest.raises(UnsupportedError, match="programs-only compile does not equalize"):
        compile_model(model, "tiny", plan, weights=False, stop_after="equalize")
    assert main(["compile", "builtin:tiny-gemma", "--format", "w4g32", "--stop-after", "integerize"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "graph IR after pass integerize: stage integer" in out and "gelu_tanh │ 2 │ amax, lut, scale" in out
    assert main(["compile", "builtin:tiny-gemma"]) == 2  # neither a bundle to write nor a pass to stop after
    assert "needs -o BUNDLE.flb (or --stop-after PASS" in " ".join(capsys.readouterr().err.split())


def test_the_inputs_are_the_only_record_of_the_edges():
    """Consumers, order and the output derive from the nodes' inputs and follow every structural change; a node
    reading a missing node or a cycle is refused by name."""
    import pickle

    from flightc.ir.graph import GraphIR, ModelSpec

    spec = ModelSpec("llama", 8, 4, 8, 1, 1, 1, 4, 1e4, 1e-6, 0)
    g = GraphIR(spec)
    g.add("x", OpKind.EMBED, [])
    g.add("n", OpKind.RMSNORM, ["x"], 0)
    g.add("sq", OpKind.MUL, ["n", "n"], 0)  # one node read twice: one consumer, not two
    g.add("act", OpKind.SILU, ["sq"], 0)
    g.add("out", OpKind.ADD, ["act", "x"], 0)
    assert g.consumers("n") == ["sq"] and g.consumers("x") == ["n", "out"] and g.output == "out"
    assert g.order() == ["x", "n", "sq", "act", "out"]
    g.remove_and_bypass("act", "sq")
    assert g.node("out")["inputs"] == ("sq", "x") and g.consumers("sq") == ["out"] and "act" not in g
    assert pickle.loads(pickle.dumps(g)).order() == g.order()  # what the lowering's worker processes receive
    with pytest.raises(KeyError, match="input 'nope' of 'y' does not exist"):
        g.add("y", OpKind.ADD, ["x", "nope"], 0)
    bad = compiled("tiny-llama", "w4g32").integer.copy()
    dict.__setitem__(bad.node("L0.mul"), "inputs", ("L0.gate_proj", "gone"))  # forged past the guard
    bad._derived = None
    with pytest.raises(ProgramError, match=r"mul node 'L0.mul' reads \['gone'\], which the graph lacks"):
        verify(bad, "fuse")
    bad = g.copy()
    dict.__setitem__(bad.node("n"), "inputs", ("out",))
    bad._derived = None
    with pytest.raises(ProgramError, match=r"nodes \['n', 'sq', 'out'\] read each other in a cycle"):
        bad.order()
