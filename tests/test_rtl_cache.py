"""The Verilator build cache is keyed by the generator's sources; a build made after they changed stays out of it."""
from __future__ import annotations

import logging
import tempfile

import pytest

from flightc.sim.rtl import build as rtl_build


class Generated(Exception):
    """Raised where the Verilog would be generated: far enough to see where the build goes."""


def _stop() -> str:
    raise Generated


def test_a_build_after_its_sources_changed_goes_outside_the_cache(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("FLIGHTC_RTL_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(rtl_build, "_LOADED_DIGEST", "the sources as loaded before an edit")
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    with caplog.at_level(logging.WARNING, logger=rtl_build.__name__), pytest.raises(Generated):
        rtl_build.build_top("probe", "probe_top", _stop)
    assert "outside the cache" in caplog.text
    assert not (tmp_path / "cache").exists() and any(tmp_path.glob("flightc-probe-*"))


def test_a_build_of_the_sources_as_loaded_goes_into_the_cache(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("FLIGHTC_RTL_CACHE", str(tmp_path / "cache"))
    with caplog.at_level(logging.WARNING, logger=rtl_build.__name__), pytest.raises(Generated):
        rtl_build.build_top("probe", "probe_top", _stop)
    assert "outside the cache" not in caplog.text


def test_environments_with_cocotb_elsewhere_build_apart(tmp_path, monkeypatch):
    """A Verilator binary finds cocotb's libraries by the path it was linked with: two environments sharing the
    cache (say two checkouts' venvs) each get a build of their own, not one whose libraries the other lacks."""
    import cocotb_tools.config as cc

    monkeypatch.setenv("FLIGHTC_RTL_CACHE", str(tmp_path / "cache"))
    locks = set()
    for libs in (cc.libs_dir, tmp_path / "elsewhere" / "cocotb" / "libs"):
        monkeypatch.setattr(cc, "libs_dir", libs)
        with pytest.raises(Generated):
            rtl_build.build_top("probe", "probe_top", _stop)
        locks.add(frozenset(p.name for p in (tmp_path / "cache").glob(".probe-*.lock")))
    first, both = sorted(locks, key=len)
    assert len(first) == 1 and len(both) == 2 and first < both


def _build_in_child(log: str) -> None:
    def verilog() -> str:
        with open(log, "a") as f:
            f.write("generated\n")
        return "module probe_top; endmodule"

    rtl_build.build_top("probe", "probe_top", verilog)


def test_parallel_builds_of_one_design_build_it_once(tmp_path, monkeypatch):
    """Two processes (two test workers) asking for the same design: one generates and verilates it while the other
    waits for it, then reuses it."""
    import multiprocessing
    import time

    log = tmp_path / "log"

    def verilate(out, label, toplevel, text, digest, opt, trace, timing):
        time.sleep(1.0)  # long enough for the other process to ask for the same design meanwhile
        out.mkdir(parents=True, exist_ok=True)
        (out / toplevel).write_text("model")
        (out / ".built").write_text(digest)

    monkeypatch.setenv("FLIGHTC_RTL_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(rtl_build, "_verilate", verilate)
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_build_in_child, args=(str(log),)) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(30)
    assert [p.exitcode for p in procs] == [0, 0]
    assert log.read_text() == "generated\n"
    assert len(list((tmp_path / "cache").glob("probe-*"))) == 1
