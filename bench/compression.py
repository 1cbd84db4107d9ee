"""The accuracy table of docs/compression.md: compressed configurations x methods x KV-cache width.

    python bench/compression.py [--models addition,pylm] [--out bench/results/compression.json] [--markdown FILE]

For each trained model, each weight configuration is compiled with round-to-nearest/magnitude and
with the calibrated methods, with an INT8 and an INT4 KV cache. Quality is measured on the integer
reference (the compressed model's exact integer datapath: addition exact match on held-out problems,
pylm held-out perplexity); every configuration is also run on the functional simulator for a short
prompt and checked byte for byte against the integer reference ("sim = ref"). Results are cached in
the JSON file, so an interrupted run resumes.
"""
from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from flightc.compiler.pipeline import compile_model
from flightc.compress.allocate import BitBudget, BudgetBits
from flightc.compress.method import Method
from flightc.compress.plan import CompressionPlan
from flightc.evaluate import (float_answer_nll, float_answers, float_perplexity, reference_answer_nll,
                              reference_exact_match, reference_perplexity, sim_matches_reference)
from flightc.models.builtin import load_torch_model, model_input, model_task
from flightc.reference.float_ref import FloatReference


@dataclass(frozen=True)
class Row:
    label: str
    fmt: str | None  # a format for every layer, or
    budget: BitBudget | None  # a bit budget for the allocator
    methods: tuple[str, ...]


ROWS = (
    Row("W8A8", "w8", None, ("rtn", "smoothquant", "gptq")),
    Row("W4 g128", "w4g128", None, ("rtn", "gptq", "awq", "awq+gptq")),
    Row("W4 g128 + 8:16", "w4g128s8:16", None, ("rtn", "gptq", "sparsegpt", "awq+sparsegpt")),
    Row("W4 g128 + 2:4", "w4g128s2:4", None, ("rtn", "gptq", "sparsegpt", "awq+sparsegpt")),
    Row("3.5-bit mixed + 8:16", None, BitBudget(3.5, "8:16", counts=BudgetBits.VALUES),  # FlightLLM's sense
        ("rtn", "sparsegpt", "awq+sparsegpt")),
    Row("W3 g128 + 8:16", "w3g128s8:16", None, ("rtn", "sparsegpt", "awq+sparsegpt")),
    Row("W2 g32 + 8:16", "w2g32s8:16", None, ("rtn", "sparsegpt", "awq+sparsegpt")),
)
KV_BITS = (8, 4)


class Model:
    """One trained model: its float quality, and how to score a compiled configuration."""

    def __init__(self, name: str, n_eval: int):
        self.name = name
        self.spec = f"builtin:{name}"
        self.task = model_task(self.spec)
        self.ref = FloatReference(load_torch_model(self.spec), device="cpu")
        self.max_len = 64 if name == "pylm" else 32
        if name == "pylm":
            self.windows = self.task.held_out(n_eval)
            self.metric, self.better = "held-out perplexity", "lower"
            self.float_score = float_perplexity(self.ref, self.windows)
            self.prompt = self.windows[0][:8].tolist()
        else:
            self.problems = self.task.held_out(n_eval)
            self.metric, self.better = "exact match", "higher"
            answers = float_answers(self.ref, self.task, self.problems)
            self.float_score = float(np.mean([self.task.is_correct(p, a) for p, a in zip(self.problems, answers)]))
            self.float_nll = float_answer_nll(self.ref, self.task, self.problems)
            self.prompt = self.task.prompt_ids(self.problems[0])

    def score(self, compiled) -> tuple[float, float | None]:
        """(the metric, and for addition the answer digits' NLL in nats)."""
        scale = compiled.bundle.manifest.io["logit_scale"]
        if self.name == "pylm":
            return reference_perplexity(compiled.integer, self.windows, scale), None
        return (reference_exact_match(compiled.integer, self.task, self.problems),
                reference_answer_nll(compiled.integer, self.task, self.problems, scale))


def run(models: list[str], out: Path, n_eval: int) -> dict:
    results = json.loads(out.read_text()) if out.exists() else {}
    for name in models:
        model = Model(name, n_eval)
        entry = results.setdefault(name, {})
        entry.update({"metric": model.metric, "better": model.better, "float": model.float_score,
                      "float_nll": getattr(model, "float_nll", None)})
        print(f"{name}: float {model.metric} {model.float_score:.4f}", flush=True)
        for row in ROWS:
            for method in row.methods:
                for kv in KV_BITS:
                    key = f"{row.label} | {method} | kv{kv}"
                    if key in entry.get("runs", {}):
                        continue
                    t0 = time.perf_counter()
                    plan = CompressionPlan.parse(row.fmt or "w8", kv_bits=kv)
                    compiled = compile_model(model_input(model.spec), "tiny", plan, max_len=model.max_len,
                                             max_prefill=16, method=Method.parse(method), budget=row.budget, jobs=1)
                    compile_s = time.perf_counter() - t0
                    score, nll = model.score(compiled)
                    exact = sim_matches_reference(compiled, model.prompt, check_hazards=False)
                    run = {"row": row.label, "method": method, "kv_bits": kv, "score": score, "answer_nll": nll,
                           "sim_equals_ref": exact, "compile_s": round(compile_s, 1)}
                    if compiled.allocation:
                        run["allocation"] = compiled.allocation.describe()
                    entry.setdefault("runs", {})[key] = run
                    out.parent.mkdir(parents=True, exist_ok=True)
                    out.write_text(json.dumps(results, indent=1))
                    print(f"  {key:45s} {score:8.4f}  {'' if nll is None else f'nll {nll:.2e}'}  sim=ref {exact}  "
                          f"compile {compile_s:.0f} s", flush=True)
    return results


def markdown(results: dict) -> str:
    lines = []
    for name, entry in results.items():
        text_model = entry["better"] == "lower"

        def key(r: dict) -> float:  # what "best" means: perplexity, or the answer NLL (exact match saturates)
            return r["score"] if text_model else r["answer_nll"]

        def cell(r: dict) -> str:
            return f"{r['score']:.3f}" if text_model else f"{100 * r['score']:.1f}% · {r['answer_nll']:.1e}"

        if text_model:
            lines.append(f"\n**builtin:{name}** — held-out perplexity (bytes; lower is better); float model: "
                         f"**{entry['float']:.3f}**\n")
        else:
            lines.append(f"\n**builtin:{name}** — exact match on held-out problems · NLL of the answer digits in nats "
                         f"(teacher-forced; lower is better); float model: **{100 * entry['float']:.1f}% · "
                         f"{entry['float_nll']:.1e}**\n")
        lines.append("| weights | method | KV INT8 | KV INT4 | sim = ref |")
        lines.append("|---|---|---|---|---|")
        runs = entry.get("runs", {})
        for row in ROWS:
            best = {kv: min((key(r) for r in runs.values() if r["row"] == row.label and r["kv_bits"] == kv),
                            default=None) for kv in KV_BITS}
            for method in row.methods:
                cells, exact = [], []
                for kv in KV_BITS:
                    r = runs.get(f"{row.label} | {method} | kv{kv}")
                    if r is None:
                        cells.append("–")
                        continue
                    cells.append(f"**{cell(r)}**" if key(r) == best[kv] else cell(r))
                    exact.append(r["sim_equals_ref"])
                label = "RTN / magnitude" if method == "rtn" else method
                lines.append(f"| {row.label} | {label} | {cells[0]} | {cells[1]} | "
                             f"{'yes' if exact and all(exact) else 'NO' if exact else '–'} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    import torch

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="addition,pylm")
    ap.add_argument("--out", type=Path, default=Path("bench/results/compression.json"))
    ap.add_argument("--markdown", type=Path, help="also write the table here")
    ap.add_argument("-n", type=int, default=0, help="held-out problems / windows (default 100 / 128)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--table-only", action="store_true", help="only print the table of what --out holds")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    results = {}
    if args.table_only:
        results = json.loads(args.out.read_text())
        args.models = ""
    for name in filter(None, args.models.split(",")):
        results.update(run([name], args.out, args.n or (128 if name == "pylm" else 100)))
    text = markdown(results)
    print(text)
    if args.markdown:
        args.markdown.write_text(text)


if __name__ == "__main__":
    main()
