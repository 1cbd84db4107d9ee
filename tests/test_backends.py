"""The backend contract: one registry, one result type, options checked against the backend that takes them."""
import inspect

import pytest

from conftest import PROMPT, compiled
from flightc.cli import build_parser, main
from flightc.runtime.backends import BACKENDS, OPTIONS, BackendOptionError, open_backend
from flightc.runtime.counters import Counters, CycleSource
from flightc.runtime.session import Session


def _choices(parser, command: str) -> tuple:
    sub = next(a for a in parser._actions if a.dest == "command").choices[command]
    return tuple(next(a for a in sub._actions if a.dest == "backend").choices)


def test_registry_drives_the_cli_choices_and_flags():
    p = build_parser()
    assert _choices(p, "run") == _choices(p, "eval") == tuple(BACKENDS)
    run = next(a for a in p._actions if a.dest == "command").choices["run"]
    flags = {s for a in run._actions for s in a.option_strings}
    assert {o.flag for o in OPTIONS.values() if o.flag} <= flags


@pytest.mark.parametrize("name", list(BACKENDS))
def test_each_backend_takes_exactly_the_options_it_declares(name):
    """The registry and the constructors agree, and each backend has the whole interface."""
    spec = BACKENDS[name]
    cls = spec.factory.rpartition(":")[2]
    module = __import__(spec.factory.partition(":")[0], fromlist=[cls])
    backend = getattr(module, cls)
    params = list(inspect.signature(backend.__init__).parameters.values())[2:]  # self, bundle
    assert [p.name for p in params] == list(spec.options)
    assert all(p.kind is p.POSITIONAL_OR_KEYWORD for p in params)  # no **kwargs that would swallow options
    for method in ("write", "read", "run", "close"):
        assert callable(getattr(backend, method)), (name, method)
    assert set(spec.options) <= set(OPTIONS)


def test_an_option_the_backend_does_not_take_is_an_error(tiny_w8, capsys, tmp_path):
    with pytest.raises(BackendOptionError, match=r"backend 'fsim' does not take stall_rate \(--stall-rate\), an "
                                                 r"option of rtl; it takes check_hazards \(--no-hazard-check\)"):
        open_backend("fsim", tiny_w8.bundle, stall_rate=8)
    with pytest.raises(BackendOptionError, match="check_hazards.*an option of fsim, perf"):
        Session(tiny_w8.bundle, backend="rtl", check_hazards=False)  # refused before anything is built
    with pytest.raises(BackendOptionError, match="bogus, which no backend takes"):
        open_backend("perf", tiny_w8.bundle, bogus=1)
    path = tmp_path / "m.flb"
    tiny_w8.bundle.save(path)
    assert main(["run", str(path), "--prompt-ids", "1,2", "--backend", "perf", "--board", "127.0.0.9"]) == 2
    assert "backend 'perf' does not take board (--board), an option of pynq" in capsys.readouterr().err
    assert main(["eval", str(path), "--backend", "rtl", "--hazard-check", "-n", "1"]) == 2
    assert "backend 'rtl' does not take check_hazards" in capsys.readouterr().err


def test_run_returns_counters_with_their_cycle_provenance(tmp_path):
    c = compiled("tiny-llama", "w8")
    prompt = PROMPT[:4]
    with Session(c.bundle, backend="fsim") as fsim:
        list(fsim.generate(prompt, 2))
    trace = tmp_path / "t.json"
    with Session(c.bundle, backend="perf", trace=str(trace)) as perf:
        list(perf.generate(prompt, 2))
    for s, source in ((fsim, CycleSource.NONE), (perf, CycleSource.MODELED)):
        assert isinstance(s.counters, Counters) and s.counters.cycle_source is source is BACKENDS[s.device.name].cycles
    assert not fsim.counters.cycles and perf.counters.cycles["cycles"] > 0
    assert perf.counters.macs == fsim.counters.macs and perf.counters.instructions == fsim.counters.instructions
    assert trace.stat().st_size > 0  # written by close(), on leaving the with block
    assert perf.counters.cycles_label == "modeled" and fsim.counters.to_dict()["cycle_source"] == "none"
