"""cocotb test module that serves the RTL backend: memory access, register access and runs.

It connects to the Unix socket named by FLIGHTC_RTL_SOCKET and executes commands until told to
stop. Python only acts between runs: during a run the clock is driven by cocotb's GPI clock and
the test sleeps until the kernel's interrupt rises, so simulation speed is Verilator's.
"""
from __future__ import annotations

import os
import socket
import time

import cocotb
from cocotb.triggers import ClockCycles, First, RisingEdge, Timer
from cocotbext.axi import AxiLiteBus, AxiLiteMaster

from flightc.sim.rtl import wire

PERIOD_NS = 10


class Kernel:
    def __init__(self, dut, word_bytes: int):
        self.dut = dut
        self.word_bytes = word_bytes
        self.storage = dut.kernel.memory.storage.storage  # hw/sim_memory.py STORAGE_VERILOG's array
        self.lite = AxiLiteMaster(AxiLiteBus.from_prefix(dut, "s_axi_control"), dut.ap_clk, dut.ap_rst_n,
                                  reset_active_level=False)

    def write_mem(self, addr: int, data: bytes) -> None:
        w = self.word_bytes
        if addr % w or len(data) % w:
            raise ValueError("memory writes must be whole words")
        st = self.storage
        for i in range(len(data) // w):
            st[addr // w + i].value = int.from_bytes(data[i * w:(i + 1) * w], "little")

    def read_mem(self, addr: int, nbytes: int) -> bytes:
        w = self.word_bytes
        first, last = addr // w, (addr + nbytes + w - 1) // w
        st = self.storage
        raw = b"".join(int(st[i].value).to_bytes(w, "little") for i in range(first, last))
        return raw[addr - first * w: addr - first * w + nbytes]

    async def reg_write(self, offset: int, value: int, bits: int = 32) -> None:
        for k in range(bits // 32):
            await self.lite.write_dword(offset + 4 * k, (value >> (32 * k)) & 0xFFFFFFFF)

    async def reg_read(self, offset: int, bits: int = 32) -> int:
        v = 0
        for k in range(bits // 32):
            v |= await self.lite.read_dword(offset + 4 * k) << (32 * k)
        return v


@cocotb.test()
async def serve(dut):
    from flightc.hw import regs as R

    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(os.environ["FLIGHTC_RTL_SOCKET"])
    word_bytes = int(os.environ["FLIGHTC_RTL_WORD_BYTES"])
    # ap_clk is made inside the model (Verilator --timing): nothing runs in Python per cycle
    dut.ap_rst_n.value = 0
    dut.stall_rate.value = 0
    dut.unthrottled.value = 0
    await ClockCycles(dut.ap_clk, 4)
    dut.ap_rst_n.value = 1
    await ClockCycles(dut.ap_clk, 2)
    k = Kernel(dut, word_bytes)
    await k.reg_write(R.GIE, 1)
    await k.reg_write(R.IER, 1)
    wire.send(sock, ("ready", None))
    while True:
        cmd, args = wire.recv(sock)
        try:
            if cmd == "stop":
                wire.send(sock, ("ok", None))
                break
            if cmd == "write_mem":
                k.write_mem(*args)
                reply = None
            elif cmd == "read_mem":
                reply = k.read_mem(*args)
            elif cmd == "reg_write":
                await k.reg_write(*args)
                reply = None
            elif cmd == "reg_read":
                reply = await k.reg_read(*args)
            elif cmd == "run":
                stall_rate, max_cycles, throttle = args
                dut.stall_rate.value = stall_rate
                dut.unthrottled.value = int(not throttle)
                t0 = time.perf_counter()
                await k.reg_write(R.CTRL, R.AP_START)
                done = RisingEdge(dut.interrupt)
                timeout = Timer(max_cycles * PERIOD_NS, unit="ns")
                fired = await First(done, timeout)
                wall = time.perf_counter() - t0
                if fired is timeout:
                    reply = {"timeout": True, "wall_s": wall}
                else:
                    await k.reg_write(R.ISR, 1)  # toggle-on-write clears the done interrupt
                    reply = {"timeout": False, "wall_s": wall}
                dut.stall_rate.value = 0
                dut.unthrottled.value = 0
            else:
                raise ValueError(f"unknown command {cmd!r}")
            wire.send(sock, ("ok", reply))
        except Exception as e:  # report to the client rather than killing the simulation
            wire.send(sock, ("error", f"{type(e).__name__}: {e}"))
    sock.close()
