"""The pynq backend on the virtual board (functional-simulator backed), driven by the unmodified pynq client.

Each test starts ``flightc board serve`` in its own process on its own loopback address and programs it
with a virtual overlay (`flightc hw bitstream --virtual`), as a user would.
"""
from __future__ import annotations

import functools
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from boards import virtual_board, virtual_overlay, wait_listening
from flightc.bitstreams.manifest import OverlayManifest, manifest_path, read_manifest, write_manifest
from flightc.cli import main
from flightc.config import PRESETS
from flightc.errors import BundleError, FlightcError
from flightc.runtime.session import Session

PROMPT = [5, 6, 7, 8]


@functools.lru_cache(maxsize=None)
def _addition_bundle(folder: str) -> str:
    """The built-in default model, compiled for the kv260 (one core, as the kernel generator builds)."""
    path = os.path.join(folder, "addition_kv260.flb")
    assert main(["compile", "builtin:addition", "--hw", "kv260", "--bits", "8", "--max-len", "32", "-o", path]) == 0
    return path


@pytest.fixture(scope="module")
def addition(tmp_path_factory):
    folder = tmp_path_factory.mktemp("board")
    bundle = _addition_bundle(str(folder))
    overlay = virtual_overlay(folder / "overlay", PRESETS["kv260"])
    return bundle, overlay


def test_builtin_model_on_the_virtual_board_matches_fsim(addition, tmp_path, capsys):
    bundle, overlay = addition
    on_board, on_fsim = tmp_path / "board.json", tmp_path / "fsim.json"
    common = [bundle, "--prompt-ids", ",".join(map(str, PROMPT)), "--max-new-tokens", "6"]
    with virtual_board("127.0.0.11"):
        assert main(["run", *common, "--backend", "pynq", "--overlay", str(overlay), "--board", "127.0.0.11",
                     "--compare", "reference", "--json", str(on_board)]) == 0
    out = capsys.readouterr().out
    assert "cycles (modeled" in out and "pynq vs the float reference" in out
    assert main(["run", *common, "--backend", "fsim", "--json", str(on_fsim)]) == 0
    board, fsim = json.loads(on_board.read_text()), json.loads(on_fsim.read_text())
    assert board["tokens"] == fsim["tokens"] and len(board["tokens"]) == 6
    assert board["counters"]["macs"] == fsim["counters"]["macs"]
    assert (board["counters"]["cycle_source"], fsim["counters"]["cycle_source"]) == ("modeled", "none")
    assert board["counters"]["cycles_where"] == "virtual board, functional simulator"
    assert board["counters"]["cycles"]["cycles"] > board["counters"]["cycles"]["busy_mv"] > 0
    assert board["reference"]["tokens"] and 0 <= board["reference"]["greedy_match"] <= 1


def test_killing_the_board_mid_run_is_a_clear_error(addition):
    bundle, overlay = addition
    with virtual_board("127.0.0.12") as board:
        client = subprocess.Popen([sys.executable, "-m", "flightc.cli", "run", bundle, "--backend", "pynq",
                                   "--overlay", str(overlay), "--board", "127.0.0.12", "--prompt-ids", "5,6,7,8",
                                   "--max-new-tokens", "29"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        seen = ""
        while "programming" not in seen:  # the board logs when the client downloads the overlay
            seen += board.stdout.readline()
            assert client.poll() is None, client.communicate()
        time.sleep(2.0)  # the client is generating now (29 tokens take longer than this)
        assert client.poll() is None, "the run ended before the board could be killed"
        board.send_signal(signal.SIGKILL)
        board.wait()
        out, err = client.communicate(timeout=60)  # no hang: a hung client times out here
    assert client.returncode == 2, (out, err)
    assert "the board at 127.0.0.12:7967" in err and "UNAVAILABLE" in err, err


def test_a_bundle_for_other_hardware_is_refused_by_manifest_and_by_id_registers(addition, tmp_path):
    bundle, overlay = addition
    other = PRESETS["kv260"].replace(name="kv260-wide", mpe_chains=32)
    wrong = virtual_overlay(tmp_path / "other", other)
    with pytest.raises(BundleError, match=r"was built for config 'kv260-wide' \(hash [0-9a-f]{16}\), but the "
                                          r"bundle was compiled for hash"):
        Session(bundle, backend="pynq", overlay=wrong, board="127.0.0.13")  # refused before any download
    # a mislabelled overlay: its manifest claims the bundle's config, its bitstream holds the other one
    write_manifest(wrong, OverlayManifest(read_manifest(overlay).board, PRESETS["kv260"], "flightc_0", virtual=True))
    with virtual_board("127.0.0.13"):
        with pytest.raises(BundleError, match=f"compiled for config hash {PRESETS['kv260'].hash}.*but the board at "
                                              f"127.0.0.13:7967 reports {other.hash}"):
            Session(bundle, backend="pynq", overlay=wrong, board="127.0.0.13")


def test_dma_outside_the_allocated_buffers_is_a_clear_error(addition):
    bundle, overlay = addition
    with virtual_board("127.0.0.14"):
        s = Session(bundle, backend="pynq", overlay=overlay, board="127.0.0.14")
        port = s.device.port
        base = s.device.driver.channel_base[0]
        port.reg_write("channel_base0", 0x7000_0000)  # a host bug: an address no buffer covers
        with pytest.raises(FlightcError, match=r"memory channel 0 \(channel_base0\) at 0x70000000 is outside every "
                                               r"allocated buffer"):
            s.prefill(PROMPT)
        with pytest.raises(FlightcError, match="the kernel faulted and stopped.*program the board again"):
            port.reg_read("cycles")  # the fault sticks until the board is programmed again

    with virtual_board("127.0.0.14"):
        s = Session(bundle, backend="pynq", overlay=overlay, board="127.0.0.14")
        port = s.device.port
        extent = s.bundle.manifest.memory_map["extent"]["0"]
        port.reg_write("channel_base0", s.device.driver.channel_base[0] + extent - 4096)  # inside, too near the end
        with pytest.raises(FlightcError, match="runs past the end of the buffer channel_base points into"):
            s.prefill(PROMPT)
    assert base % 4096 == 0


def test_the_unmodified_pynq_client_sees_the_kernel_and_its_registers(addition):
    """pynq itself, no flightc host code: Overlay, ip_dict from the .hwh, MMIO on the ID registers, allocate."""
    _, overlay = addition
    code = f"""
import os, numpy as np
os.environ["PYNQ_REMOTE_DEVICES"] = "127.0.0.15"
import pynq
ov = pynq.Overlay({str(overlay)!r})
ip = ov.ip_dict["flightc_0"]
mmio = pynq.MMIO(ip["phys_addr"], ip["addr_range"])
buf = pynq.allocate((1000,), np.uint8)
buf[:] = np.arange(1000) % 251
buf.flush(); buf[:] = 0; buf.invalidate()
print(hex(ip["phys_addr"]), hex(mmio.read(0x400)), hex(mmio.read(0x404) | mmio.read(0x408) << 32),
      sorted(ip["registers"])[:3], int(buf.sum()), hex(buf.device_address))
"""
    with virtual_board("127.0.0.15"):
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    from flightc.hw import regs as R

    cfg = PRESETS["kv260"]
    words = out.stdout.split()
    assert words[0] == "0xa0000000" and int(words[1], 16) == R.isa_version_word()
    assert int(words[2], 16) == R.config_hash_word(cfg)
    assert int(words[-2]) == int((np.arange(1000) % 251).sum())


def test_servicers_implement_every_rpc_of_pynqs_generated_services():
    from flightc.sim.board.services import SERVICES

    for service, _ in SERVICES:
        base = service.__mro__[1]
        rpcs = [name for name in vars(base) if not name.startswith("_")]
        assert rpcs, base
        missing = [name for name in rpcs if getattr(service, name) is getattr(base, name)]
        assert not missing, f"{service.__name__} leaves {missing} unimplemented"


def test_xrt_backend_says_clearly_that_pyxrt_is_missing(addition, tmp_path):
    from flightc.bitstreams.boards import BOARDS
    from flightc.bitstreams.vitis import CU
    from flightc.bundle import load_bundle
    from flightc.runtime.backends import open_backend

    b = load_bundle(addition[0])
    xclbin = tmp_path / "flightc_u280.xclbin"
    write_manifest(xclbin, OverlayManifest(BOARDS["u280"], b.config, CU))
    assert manifest_path(xclbin).exists()
    import importlib.util

    if importlib.util.find_spec("pyxrt") is not None:  # ships with XRT, never with flightc's environment
        pytest.skip("pyxrt is installed here: its absence cannot be checked")
    with pytest.raises(FlightcError, match=r"needs XRT's Python bindings \(pyxrt\), which ship with XRT"):
        open_backend("xrt", b, overlay=xclbin)
    with pytest.raises(FlightcError, match="needs the card's .xclbin"):
        open_backend("xrt", b)


def test_the_board_stops_on_sigint_even_when_started_with_it_ignored():
    """A background job of a script starts with SIGINT ignored; `flightc board serve` still stops on it."""
    proc = subprocess.Popen([sys.executable, "-m", "flightc.cli", "board", "serve", "--address", "127.0.0.15"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    try:
        wait_listening("127.0.0.15", proc)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=20) == 0  # a board that ignored it would still be serving: the wait times out
    finally:
        if proc.poll() is None:
            proc.kill()
