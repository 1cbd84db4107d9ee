"""cocotb bench: the Vitis kernel top with cocotbext-axi serving memory under random backpressure.

The control port is driven with AxiLiteMaster, memory is an AxiRam behind every master port whose five channels
pause at random; each seeded random program (with several cores, a program per core: random_multicore_case, barriers
between them; or a one-core program on core 0, the seeds of FLIGHTC_SEEDS_ALONE) must leave memory exactly as the
functional simulator does.
"""
from __future__ import annotations

import os
import random

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, First, RisingEdge, Timer
from cocotbext.axi import AxiBus, AxiLiteBus, AxiLiteMaster, AxiRam

from flightc.config import load_config
from flightc.hw import regs as R
from flightc.hw.core import master_port
from flightc.sim.rtl.differential import CHANNEL_SPAN, memory_bytes_for, program_base, run_fsim
from flightc.sim.rtl.random_programs import on_first_core, random_case, random_multicore_case


def present_only(bus, channels):
    """Drop the optional AXI signals the kernel does not have (cocotb-bus leaves them as None attributes)."""
    for name in channels:
        ch = bus
        for part in name.split("."):
            ch = getattr(ch, part)
        for key, value in list(vars(ch).items()):
            if value is None:
                delattr(ch, key)
    return bus


def pauses(rng: random.Random, rate: float):
    while True:
        yield rng.random() < rate


@cocotb.test()
async def random_programs_over_axi(dut):
    cfg = load_config(os.environ["FLIGHTC_CONFIG"])
    seeds = [int(s) for s in os.environ["FLIGHTC_SEEDS"].split(",")]
    rng = random.Random(seeds[0])
    Clock(dut.ap_clk, 10, unit="ns", impl="gpi").start()
    dut.ap_rst_n.value = 0
    ram = None  # one memory behind every master port (each core's run of them), each port pausing on its own
    for k in range(cfg.kernel_masters):
        bus = present_only(AxiBus.from_prefix(dut, master_port(cfg, k)),
                           ("write.aw", "write.w", "write.b", "read.ar", "read.r"))
        port = AxiRam(bus, dut.ap_clk, dut.ap_rst_n, reset_active_level=False, size=memory_bytes_for(cfg),
                      mem=ram.mem if ram is not None else None)
        ram = ram or port
        for ch in (port.write_if.aw_channel, port.write_if.w_channel, port.write_if.b_channel,
                   port.read_if.ar_channel, port.read_if.r_channel):
            ch.set_pause_generator(pauses(rng, 0.3))
    lite_bus = present_only(AxiLiteBus.from_prefix(dut, "s_axi_control"),
                            ("write.aw", "write.w", "write.b", "read.ar", "read.r"))
    lite = AxiLiteMaster(lite_bus, dut.ap_clk, dut.ap_rst_n,
                         reset_active_level=False)
    await ClockCycles(dut.ap_clk, 5)
    dut.ap_rst_n.value = 1
    await ClockCycles(dut.ap_clk, 2)
    regs = R.by_name(cfg)
    cores = cfg.num_cores

    async def write_reg(name: str, value: int) -> None:
        r = regs[name]
        for k in range(r.bits // 32):
            await lite.write_dword(r.offset + 4 * k, (value >> (32 * k)) & 0xFFFFFFFF)

    for c in range(cores):
        assert await lite.read_dword(regs[R.core_register("core_id", c)].offset) == c
    assert await lite.read_dword(regs["isa_version"].offset) == R.isa_version_word()
    await lite.write_dword(R.GIE, 1)
    await lite.write_dword(R.IER, 1)
    for c in range(cores):
        for ch in range(cfg.mem_channels):
            await write_reg(R.core_register(f"channel_base{ch}", c), ch * CHANNEL_SPAN)
    alone = {int(s) for s in os.environ.get("FLIGHTC_SEEDS_ALONE", "").split(",") if s}
    for seed in seeds:
        if cores == 1:
            case = random_case(cfg, seed)
        else:  # a seed of FLIGHTC_SEEDS_ALONE: a one-core program on core 0, the others idle
            case = on_first_core(cfg, random_case(cfg, seed)) if seed in alone else random_multicore_case(cfg, seed)
        programs = [case.program] if cores == 1 else case.programs
        want = run_fsim(cfg, case)
        for ch, img in case.images.items():
            ram.write(ch * CHANNEL_SPAN, bytes(img))
        # each core's stream a channel's span apart
        await run_streams(dut, ram, write_reg, lite, programs, [program_base(cfg) + c * CHANNEL_SPAN
                                                                for c in range(len(programs))],
                          2_000_000, f"seed {seed} ({case.kinds})")
        ctrl = await lite.read_dword(R.CTRL)
        assert ctrl & R.AP_DONE and ctrl & R.AP_IDLE, f"seed {seed}: ap_ctrl {ctrl:#x} after the interrupt"
        for ch, img in case.images.items():
            got = ram.read(ch * CHANNEL_SPAN, len(img))
            assert got == want[ch], f"seed {seed} ({case.kinds}): channel {ch} differs from the functional simulator"
        dut._log.info("seed %d ok: %s", seed, case.kinds)
    bundle_path = os.environ.get("FLIGHTC_BUNDLE")
    if bundle_path:
        await run_bundle(dut, cfg, ram, write_reg, lite, bundle_path)


async def run_streams(dut, ram, write_reg, lite, programs: list[bytes], addrs: list[int], timeout_ns: int,
                      what: str) -> None:
    """Each core's stream at its address, the kernel started, its interrupt awaited and cleared."""
    for c, (program, addr) in enumerate(zip(programs, addrs)):
        ram.write(addr, program)
        await write_reg(R.core_register("program_addr", c), addr)
        await write_reg(R.core_register("program_bytes", c), len(program))
    await lite.write_dword(R.CTRL, R.AP_START)
    done = RisingEdge(dut.interrupt)
    fired = await First(done, Timer(timeout_ns, unit="ns"))
    assert fired is done, f"{what} did not finish"
    await lite.write_dword(R.ISR, 1)


async def run_bundle(dut, cfg, ram, write_reg, lite, path: str) -> None:
    """A compiled model's steps (FLIGHTC_STEPS: kind/tokens/ids;...) as the host driver runs them (each channel a
    buffer, a stream buffer per core), every channel's bytes equal to the functional simulator's after each."""
    import numpy as np

    from flightc.bundle import load_bundle
    from flightc.runtime.backends import open_backend
    from flightc.runtime.driver import align, buffer_sizes

    bundle = load_bundle(path)
    fsim = open_backend("fsim", bundle)
    sizes = buffer_sizes(bundle)
    at, base = 0, {}
    for name, n in sizes.items():  # one buffer after another, as KernelDriver allocates them
        base[name] = at
        at += align(n) * (cfg.num_cores if name == "program" else 1)
    assert at <= memory_bytes_for(cfg), f"the bundle's {at:,} bytes do not fit the bench memory"
    for ch, image in bundle.images.items():
        ram.write(base[f"channel{ch}"], bytes(image))
    for c in range(cfg.num_cores):
        for ch in range(cfg.mem_channels):
            await write_reg(R.core_register(f"channel_base{ch}", c), base[f"channel{ch}"])
    ids = bundle.region("io.ids")
    for step in os.environ["FLIGHTC_STEPS"].split(";"):
        kind, n, tokens = step.split("/")
        data = np.asarray([int(t) for t in tokens.split(",")], "<i4").tobytes()
        fsim.write(ids["channel"], ids["addr"], data)
        ram.write(base[f"channel{ids['channel']}"] + ids["addr"], data)
        programs = bundle.program(kind, int(n))
        fsim.run(programs)
        await run_streams(dut, ram, write_reg, lite, [bytes(x) for x in programs],
                          [base["program"] + c * align(sizes["program"]) for c in range(len(programs))], 50_000_000,
                          f"{kind}/{n}")
        for ch, nbytes in {int(k): v for k, v in bundle.manifest.memory_map["extent"].items()}.items():
            got = ram.read(base[f"channel{ch}"], nbytes)
            assert got == fsim.read(ch, 0, nbytes), f"{kind}/{n}: channel {ch} differs from the functional simulator"
        dut._log.info("step %s/%s ok", kind, n)
