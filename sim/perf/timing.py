"""How many cycles each unit of the generated core spends on one instruction: its timing contract.

Every formula here counts the states of a unit's state machine in ``flightc.hw`` (the MPE in
``hw/mpe.py``, LD/ST in ``hw/dma.py``, the SFU in ``hw/sfu.py``) for an uncontended run; the
microarchitecture parameters (fill size, burst length, AXI width, divider and square-root
widths) come from the config, which the generator builds from too; nothing here imports Amaranth.
The calibration tests run the same instructions on the RTL and compare, so a change to a state
machine that is not mirrored here fails the build.

Conventions: a unit's *busy* time runs from the cycle after it accepts an instruction to the cycle
it reports done, inclusive (the ``busy_<class>`` counters of ``hw/regs.py`` count exactly that).
A byte-engine read of ``n`` bytes, from the state that issues it to the state after the one that
sees it done, takes ``n + 3`` cycles; a write takes ``n + 2`` (``hw/bytebus.py``: one grant per
cycle, read data one cycle after its grant, ``done`` registered).
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from flightc.compress.formats import WeightFormat
from flightc.config import HardwareConfig
from flightc.hw.axi_rules import AXI_BOUNDARY
from flightc.isa.codec import Instruction
from flightc.isa.footprint import MISC_DST_BYTES, MISC_SRC_BYTES, mpe_shape, weight_format
from flightc.isa.table import SPARSITY_NM, MiscOp, Opcode, OutMode, Sparsity
from flightc.records import NORM, REQUANT, ROPE

def div_cycles(cfg: HardwareConfig) -> int:
    """From the cycle that starts the SFU's divider to the cycle that sees it done: a quotient bit a cycle."""
    return cfg.sfu_div_bits + 1


def sqrt_cycles(cfg: HardwareConfig) -> int:
    """The same for the square root (two input bits a cycle), plus the state that leaves it."""
    return cfg.sfu_sqrt_bits // 2 + 2


def read_cycles(n: int) -> int:
    return n + 3


def write_cycles(n: int) -> int:
    return n + 2


def fill_cycles(nbytes: int, chunk: int) -> int:
    """The MPE's FILL/FILL_WAIT loop: reads of ``chunk`` bytes (config.mpe_fill_bytes), then one state to return."""
    if nbytes <= 0:
        return 1
    return nbytes + 3 * (-(-nbytes // chunk)) + 1


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


# ----------------------------------------------------------------------------------- MPE
@lru_cache(maxsize=4096)
def _mpe_cycles(cfg: HardwareConfig, m: int, n: int, k: int, kmajor: bool, bits: int, sparsity: Sparsity,
                group_log2: int, mode: OutMode, lut: bool) -> int:
    T, C, L, chunk = cfg.macs_per_dsp, cfg.mpe_chains, cfg.chain_length, cfg.mpe_fill_bytes
    n_keep, block = SPARSITY_NM[sparsity]
    ib = WeightFormat(8, n_keep, block).index_bits
    sparse = ib != 0 and not kmajor
    nnz = (k // block) * n_keep if sparse else k
    span = L * block // n_keep
    steps = _cdiv(nnz, L)
    if kmajor:
        chain = 1 + fill_cycles(L, chunk) + 1
    else:
        chain = (1 + fill_cycles(L * bits // 8, chunk) + 1 + (fill_cycles(L * ib // 8, chunk) if sparse else 0) + 1
                 + (fill_cycles(max(1, span >> group_log2), chunk) if group_log2 else 0) + 1)
    if mode is OutMode.ACC32:
        out_valid = 1 + write_cycles(4) + 1
    else:
        extra = read_cycles(1) if (mode is OutMode.REQ_I8 and lut) else read_cycles(4) if mode is OutMode.REQ_ADD else 1
        elem = 1 if mode is OutMode.REQ_I8 else 4
        out_valid = read_cycles(REQUANT.size) + extra + write_cycles(elem) + 1

    def group(cv: int, tt: int) -> int:
        step = tt * (1 + fill_cycles(span, chunk)) + 1 + cv * chain + (1 if cv < C else 0) + 2
        out = tt * cv * out_valid + (T * C - tt * cv) * 2 + 1
        return 1 + steps * step + 1 + out

    def pair(tt: int) -> int:
        groups = _cdiv(n, C)
        last = n - C * (groups - 1)
        return 1 + (groups - 1) * group(C, tt) + group(last, tt) + 1

    pairs = _cdiv(m, T)
    last_tt = m - T * (pairs - 1)
    return (pairs - 1) * pair(T) + pair(last_tt) + 1


def mpe_cycles(cfg: HardwareConfig, ins: Instruction) -> int:
    m, _, _ = mpe_shape(ins)
    kmajor = bool(ins.w_kmajor)
    fmt = weight_format(ins)
    return _mpe_cycles(cfg, m, ins.n, ins.k, kmajor, 8 if kmajor else fmt.bits, Sparsity(ins.sparsity),
                       0 if kmajor else ins.group_log2, OutMode(ins.out_mode), bool(ins.lut))


# ----------------------------------------------------------------------------------- DMA
def _beats_and_bursts(addr: int, nbytes: int, w: int, max_beats: int) -> tuple[int, int]:
    """AXI beats of ``w`` bytes and bursts (at most ``max_beats``, never across 4 KiB) for a span."""
    if nbytes <= 0:
        return 0, 0
    b0, b1 = addr // w, _cdiv(addr + nbytes, w)
    page = AXI_BOUNDARY // w
    p0, p1 = b0 // page, (b1 - 1) // page
    if p0 == p1:
        return b1 - b0, _cdiv(b1 - b0, max_beats)
    first = (p0 + 1) * page - b0
    last = b1 - p1 * page
    bursts = _cdiv(first, max_beats) + _cdiv(last, max_beats)
    bursts += (p1 - p0 - 1) * _cdiv(page, max_beats)
    return b1 - b0, bursts


def load_cycles(cfg: HardwareConfig, ins: Instruction) -> int:
    """LD: per row ROW, per burst AR, per beat R + PUT + the byte-engine write + NEXT, one AR to end the row."""
    w = cfg.axi_data_bytes
    total = 1
    for r in range(ins.rows):
        addr = ins.hbm_addr if ins.gather else ins.hbm_addr + r * ins.hbm_stride
        beats, bursts = _beats_and_bursts(addr, ins.row_bytes, w, cfg.axi_burst_beats)
        total += 2 + bursts + ins.row_bytes + 4 * beats
        if ins.gather:  # the row's INT32 id: AR, R, PUT, NEXT, and the AR that turns to the row
            total += 5
    return total


def store_cycles(cfg: HardwareConfig, ins: Instruction) -> int:
    """ST: per beat a byte-engine read, then one single-beat write burst (AW/W, then B). With pack4 the
    engine reads two buffer bytes per memory byte (modeled: the RTL has no INT4 KV cache to measure)."""
    w = cfg.axi_data_bytes
    total = 1
    reads = ins.row_bytes * (2 if ins.pack4 else 1)
    for r in range(ins.rows):
        beats, _ = _beats_and_bursts(ins.hbm_addr + r * ins.hbm_stride, ins.row_bytes, w, cfg.axi_burst_beats)
        total += 2 + reads + 6 * beats
    return total


# ----------------------------------------------------------------------------------- SFU
def _sfu_row(cfg: HardwareConfig, op: MiscOp, cols: int, head: int) -> int:
    """One row of a MISC operation: its passes over the elements and the statistics between them."""
    a = read_cycles(MISC_SRC_BYTES.get(op, 1))
    w = write_cycles(MISC_DST_BYTES.get(op, 1))
    end = 2  # the A state that finds the pass over, and PASS_END
    div, sqrt = div_cycles(cfg), sqrt_cycles(cfg)
    gain = NORM.element_bytes  # a gain (and LayerNorm's bias) per element
    if op is MiscOp.RMSNORM:
        stat = a + 3
        out = a + read_cycles(gain) + 1 + 1 + div + w + 1
        return cols * stat + end + div + sqrt + cols * out + end
    if op is MiscOp.LAYERNORM:
        stat = a + 3
        out = a + read_cycles(gain) + read_cycles(gain) + 1 + div + w + 1
        return cols * stat + end + div + cols * stat + end + div + sqrt + cols * out + end
    if op is MiscOp.SOFTMAX:
        stat = a + 3
        return cols * stat + end + cols * stat + end + div + cols * (a + 2 + w + 1) + end
    if op is MiscOp.ROPE:
        pairs = (cols // head) * (head // 2) if head >= 2 else 0
        return pairs * (a + read_cycles(1) + 2 * read_cycles(ROPE.entry_bytes) + 1 + 2 * w + 1) + end
    if op is MiscOp.EMUL:
        return cols * (a + read_cycles(1) + 1 + 1 + w + 1) + end
    if op is MiscOp.DEQ:
        return cols * (a + 1 + 1 + w + 1) + end
    if op is MiscOp.DEQ_ADD:
        return cols * (a + read_cycles(4) + 1 + 1 + w + 1) + end
    raise ValueError(f"no timing for MISC op {op}")


def misc_cycles(cfg: HardwareConfig, ins: Instruction) -> int:
    op = MiscOp(ins.op)
    head = read_cycles(NORM.eps.nbytes) if op in (MiscOp.RMSNORM, MiscOp.LAYERNORM) else 1  # EPS: the norms' epsilon
    return head + ins.rows * (1 + _sfu_row(cfg, op, ins.cols, ins.imm) + 1) + 1


# ----------------------------------------------------------------------------------- all units
@dataclass(frozen=True)
class Work:
    """What one instruction asks of its unit and of memory."""

    cycles: int  # busy cycles of its unit, uncontended
    hbm_bytes: int = 0  # bytes moved over the memory channel
    channel: int = -1


def instruction_work(cfg: HardwareConfig, ins: Instruction) -> Work:
    op = ins.opcode
    if op in (Opcode.MM, Opcode.MV):
        return Work(mpe_cycles(cfg, ins))
    if op is Opcode.LD:
        return Work(load_cycles(cfg, ins), ins.rows * ins.row_bytes, ins.channel)
    if op is Opcode.ST:
        return Work(store_cycles(cfg, ins), ins.rows * ins.row_bytes, ins.channel)
    if op is Opcode.MISC:
        return Work(misc_cycles(cfg, ins))
    if op is Opcode.SYS:
        return Work(1)  # NOP and END finish the cycle after they start; a barrier waits on the other cores
    raise ValueError(f"no timing for opcode {op}")
