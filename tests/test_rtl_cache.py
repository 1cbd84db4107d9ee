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
