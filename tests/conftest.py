"""Shared fixtures: compiled built-in models are cached per test session (compiling takes seconds); the test
tiers: every test under tests/rtl runs the generated Verilog and carries the ``rtl`` marker."""
from __future__ import annotations

import functools
from pathlib import Path

import pytest

from flightc.compress.plan import CompressionPlan
from flightc.config import HardwareConfig

RTL_TESTS = Path(__file__).resolve().parent / "rtl"


def pytest_collection_modifyitems(config, items):
    """`make test-fast` (-m "not rtl and not synth and not slow") leaves these out; `make test` runs them."""
    for item in items:
        if RTL_TESTS in Path(item.fspath).resolve().parents:
            item.add_marker(pytest.mark.rtl)


PROMPT = [17, 42, 99, 3, 250, 7, 128, 64]
NEW_TOKENS = 32
MAX_LEN = len(PROMPT) + NEW_TOKENS


@functools.lru_cache(maxsize=None)
def torch_model(name: str):
    from flightc.models.builtin import load_builtin

    return load_builtin(f"builtin:{name}")


@functools.lru_cache(maxsize=None)
def compiled(name: str, fmt: str, overrides: tuple[str, ...] = (), hw: str | HardwareConfig = "tiny"):
    from flightc.compiler.pipeline import compile_model

    return compile_model(torch_model(name), hw, CompressionPlan.parse(fmt, list(overrides)), max_len=MAX_LEN,
                         max_prefill=len(PROMPT), prefill_lengths=[len(PROMPT)])


@pytest.fixture
def tiny_w8():
    return compiled("tiny-llama", "w8")


@pytest.fixture(scope="session")
def kernel_sim():
    """The tiny preset's kernel testbench under Verilator (built once per run, cached across runs)."""
    from flightc.config import PRESETS
    from flightc.sim.rtl.backend import RtlSimulator
    from flightc.sim.rtl.differential import memory_bytes_for

    cfg = PRESETS["tiny"]
    sim = RtlSimulator(cfg, memory_bytes_for(cfg))
    yield sim
    sim.close()


def run_steps(bundle, steps) -> list[dict]:
    """(tests/rtl) Each (kind, tokens, ids) program on fsim and on the RTL, asserting every channel's bytes equal
    after each: the RTL's cycle counters of each."""
    import numpy as np

    from flightc.runtime.backends import open_backend

    fsim, rtl = open_backend("fsim", bundle), open_backend("rtl", bundle)
    out = []
    try:
        extent = {int(k): v for k, v in bundle.manifest.memory_map["extent"].items()}
        ids = bundle.region("io.ids")
        for kind, n, tokens in steps:
            for backend in (fsim, rtl):
                backend.write(ids["channel"], ids["addr"], np.asarray(tokens, "<i4").tobytes())
            program = bundle.step(*n) if kind == "step" else bundle.program(kind, n)  # ("step", (tokens, position))
            fsim.run(program)
            counters = rtl.run(program)
            for ch, nbytes in extent.items():
                assert rtl.read(ch, 0, nbytes) == fsim.read(ch, 0, nbytes), f"{kind}/{n}: channel {ch} differs"
            cyc = counters.cycles
            busy = {k: v for k, v in cyc.items() if k.startswith("busy_") and v}
            print(f"{kind}/{n}: {cyc['cycles']:,} cycles; busy per class {busy}")
            out.append(cyc)
    finally:
        rtl.close()
    return out
