"""How far the compressed models are from the float model, and that the simulator matches the integer reference.

    python bench/float_agreement.py [--tokens 32] [--hw tiny]

Prints a markdown table (recorded in docs/accuracy.md). Models are the built-in seeded random
LLaMA configs, so the numbers measure the numerics, not a task.
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from flightc.compiler.pipeline import compile_model
from flightc.compress.plan import CompressionPlan
from flightc.models.builtin import load_builtin
from flightc.reference.float_ref import FloatReference, agreement
from flightc.reference.integer import IntegerModel, greedy
from flightc.runtime.session import Session

PROMPT = [17, 42, 99, 3, 250, 7, 128, 64]
MIXED = ("*.q_proj=w2g32s2:4", "*.k_proj=w3g64", "*.up_proj=w3g32s4:16", "*.down_proj=w8", "L1.v_proj=w2g16s2:16")
CASES = [
    ("(a) W8 dense", "tiny-llama", "w8", ()),
    ("(b) W4 g128 + 8:16", "tiny-llama", "w4g128s8:16", ()),
    ("(c) mixed 2/3/4/8-bit", "tiny-llama", "w4g32", MIXED),
    ("(d) GQA, W8 dense", "tiny-llama-gqa", "w8", ()),
    ("W4 g32 dense", "tiny-llama", "w4g32", ()),
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--tokens", type=int, default=32)
    ap.add_argument("--hw", default="tiny")
    args = ap.parse_args()
    n = args.tokens
    rows = []
    for label, model_name, fmt, overrides in CASES:
        model = load_builtin(f"builtin:{model_name}")
        c = compile_model(model, args.hw, CompressionPlan.parse(fmt, list(overrides)), max_len=len(PROMPT) + n,
                          max_prefill=len(PROMPT), prefill_lengths=[len(PROMPT)])
        ref_tokens, ref_logits = greedy(IntegerModel(c.integer, len(PROMPT) + n), PROMPT, n)
        t0 = time.perf_counter()
        sim = list(Session(c.bundle).generate(PROMPT, n))
        wall = time.perf_counter() - t0
        exact = [t for t, _ in sim] == ref_tokens and all(a.tobytes() == b.tobytes() for (_, a), b in zip(sim, ref_logits))
        ref = FloatReference(model)
        a = agreement(ref, PROMPT, [t for t, _ in sim], [z for _, z in sim], c.bundle.manifest.io["logit_scale"])
        rows.append((label, "yes" if exact else "NO", f"{a.greedy_match:.0%}", str(a.first_divergence),
                     f"{a.teacher_forced_match:.0%}", f"{a.logit_rel_error:.3f}", f"{a.logit_cosine:.4f}",
                     f"{n / wall:.1f}", ref.device))
    head = ("config", "sim = int ref (bytes)", "greedy agreement", "first divergence", "teacher-forced",
            "logit rel. error", "logit cosine", "sim tokens/s", "float on")
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for r in rows:
        print("| " + " | ".join(r) + " |")


if __name__ == "__main__":
    np.set_printoptions(precision=3)
    main()
