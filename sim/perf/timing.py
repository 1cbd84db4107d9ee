"""How many cycles each unit of the generated core spends on one instruction: its timing contract.

Every formula here counts the states of a unit's state machine in ``flightc.hw`` (the MPE in
``hw/mpe.py``, LD in ``hw/load.py``, ST in ``hw/dma.py``, the SFU in ``hw/sfu.py``) for an uncontended run; the
microarchitecture parameters (buffer word, burst length, AXI width, divider and square-root
widths) come from the config, which the generator builds from too; nothing here imports Amaranth.
The calibration tests run the same instructions on the RTL and compare, so a change to a state
machine that is not mirrored here fails the build.

Conventions: a unit's *busy* time runs from the cycle after it accepts an instruction to the cycle
it reports done, inclusive (the ``busy_<class>`` counters of ``hw/regs.py`` count exactly that).
Units move whole buffer words (``hw/buffers.py``): a contiguous access of ``n`` bytes at ``addr``
costs one cycle per word it touches (:func:`span_words`), a strided one a cycle per byte. A
word-engine read, from the state that issues it to the state after the one that sees it done,
takes ``words + 3`` cycles; a write takes ``words + 2`` (one grant per cycle, read data one cycle
after its grant, ``done`` registered). Addresses matter only through their lane in a word, so
the sums below count lanes (:func:`lane_counts`) instead of walking every row.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from flightc import numerics as nm
from flightc.compress.formats import WeightFormat
from flightc.config import HardwareConfig, SparseEncoding
from flightc.hw.axi_rules import AXI_BOUNDARY, ST_IN_FLIGHT, ST_PAIRED_GROUPS_LOG2, ST_PLACE_STAGES
from flightc.hw.latency_rules import (CHAIN_LATENCY, ROUNDING_LATENCY, SFU_DIV_SETUP, SFU_FSM_READ, SFU_NORM_DEN,
                                      SFU_NORM_SHIFT, SFU_READ_AHEAD, SFU_RESULT_QUEUE, SFU_ROPE_LATENCY,
                                      SFU_STAT_QUEUE,
                                      chain_operand_stages, division_bits, recip_wait_cycles, sfu_result_latency,
                                      sfu_stat_drain)
from flightc.isa.codec import Instruction
from flightc.isa.footprint import (MISC_DST_BYTES, MISC_SRC_BYTES, mpe_shape, out_elem_bytes, store_rows, store_target, stream_spans, streamed,
                                   stripe_spans, striped, weight_format)
from flightc.isa.table import SPARSITY_NM, MiscOp, Opcode, OutMode, SoftmaxPart, Sparsity
from flightc.records import NORM, REQUANT, ROPE, SOFTMAX_STATS
from flightc.sim.perf.load import load_cycles
from flightc.sim.perf.streamed_pairs import streamed_mv_time
from flightc.sim.perf.words import read_cycles, span_words, write_cycles


def div_cycles(cfg: HardwareConfig, value_bits: int | None = None) -> int:
    """From the cycle after the one that starts the SFU's divider to the cycle that sees it done, for a numerator
    below 2^value_bits (the divider's width by default)."""
    bits = division_bits(value_bits or cfg.sfu_div_bits, cfg.sfu_div_step_bits, cfg.sfu_div_bits)
    return bits // cfg.sfu_div_step_bits + 1


def sqrt_cycles(cfg: HardwareConfig) -> int:
    """The same for the square root (two input bits a cycle), plus the state that leaves it."""
    return cfg.sfu_sqrt_bits // 2 + 2


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


def lane_counts(base: int, stride: int, count: int, w: int) -> np.ndarray:
    """How many of the addresses ``base + i * stride`` (i < count) fall in each lane of a ``w``-byte word."""
    lanes = np.zeros(w, np.int64)
    if count <= 0:
        return lanes
    period = w // np.gcd(stride % w, w) if stride % w else 1
    one = (base + stride * np.arange(min(period, count))) % w
    full, rest = divmod(count, period)
    np.add.at(lanes, one, full)
    np.add.at(lanes, one[:rest], 1)
    return lanes


def _grid_words(rows: np.ndarray, steps: np.ndarray, nbytes: int, w: int) -> int:
    """Sum of span_words(a + b, nbytes) over every pair of a row's lane count and a step's lane count."""
    words = span_words((np.arange(w)[:, None] + np.arange(w)[None, :]) % w, nbytes, w)
    return int(rows @ words @ steps)


# ----------------------------------------------------------------------------------- MPE
@lru_cache(maxsize=4096)
def _mpe_cycles(cfg: HardwareConfig, m: int, n: int, k: int, kmajor: bool, bits: int, sparsity: Sparsity,
                encoding: SparseEncoding, group_log2: int, mode: OutMode, lut: bool, a_addr: int, a_stride: int,
                w_addr: int, w_stride: int, out_addr: int, out_stride: int, scale_addr: int,
                acc_addr: int | None) -> int:
    T, C, L, w = cfg.macs_per_dsp, cfg.mpe_chains, cfg.chain_length, cfg.buffer_port_bytes
    n_keep, block = SPARSITY_NM[sparsity]
    fmt = WeightFormat(8, n_keep, block, encoding=encoding)
    sparse = fmt.sparse and not kmajor
    meta_step = L // n_keep * fmt.block_meta_bits // 8 if sparse else 0  # a step's L stored weights' positions
    nnz = (k // block) * n_keep if sparse else k
    span = L * block // n_keep
    steps = _cdiv(nnz, L)
    pairs, groups = _cdiv(m, T), _cdiv(n, C)
    # operand fetch: every step's window per token, and per row its values, positions and group multipliers
    win = _grid_words(lane_counts(a_addr, a_stride, m, w), lane_counts(0, span, steps, w), span, w)
    rows = lane_counts(w_addr, w_stride, n, w)
    if kmajor:  # a byte a lane, strided; INT4 holds two rows a byte
        rows_at = (w_addr + (np.arange(n) >> (1 if bits == 4 else 0))) % w
        chain = (steps * n * L if w_stride != 1 else
                 _grid_words(np.bincount(rows_at, minlength=w), lane_counts(0, L, steps, w), L, w))
    else:
        vbytes = (nnz * bits + 7) // 8
        ibytes = fmt.row_parts(k)[1] if sparse else 0
        chain = _grid_words(rows, lane_counts(0, L * bits // 8, steps, w), L * bits // 8, w)
        if sparse:
            chain += _grid_words(rows, lane_counts(vbytes, meta_step, steps, w), meta_step, w)
        if group_log2:  # the multipliers from the window's first group on
            at = (vbytes + ibytes + ((np.arange(steps) * span) >> group_log2)) % w
            chain += _grid_words(rows, np.bincount(at, minlength=w), max(1, span >> group_log2), w)
    # + the last step's pipeline: its last word's arrival to the chains' go, the operands' register, their sums, the
    # accumulate to the output
    fetch = groups * win + pairs * chain + (pairs * groups * (2 + chain_operand_stages(cfg) + CHAIN_LATENCY)
                                             if steps else 0)
    # output stage: per result its record, LUT entry or residual, and its write
    elem = out_elem_bytes(mode)
    tok = np.arange(m)[:, None]
    row = np.arange(n)[None, :]
    dst = out_addr + tok * out_stride + row * elem
    if mode is OutMode.ACC32:
        valid = 1 + write_cycles(dst, 4, w) + 1
    else:  # its record, its rounding (hw/requant.py) and saturation, the LUT entry or the residual (and its sum)
        extra = (read_cycles(0, 1, w) if (mode is OutMode.REQ_I8 and lut) else
                 read_cycles(dst, 4, w) + 1 if mode is OutMode.REQ_ADD else 1)
        valid = (read_cycles(scale_addr + row * REQUANT.size, REQUANT.size, w) + ROUNDING_LATENCY + 1 + extra
                 + write_cycles(dst, elem, w) + 1)
    if acc_addr is not None:  # (ISA 1.11) each result's partial sum read first, then added (before the above)
        valid = valid + read_cycles(acc_addr + 4 * (tok * n + row), 4, w)
    out = int(np.broadcast_to(valid, (m, n)).sum()) + 2 * (pairs * groups * T * C - m * n) + pairs * groups
    return fetch + pairs * groups * 2 + out + pairs * 2 + 1


def mpe_cycles(cfg: HardwareConfig, ins: Instruction) -> int:
    if streamed(ins):
        return streamed_mv_time(cfg, ins)
    m, a_stride, out_stride = mpe_shape(ins)
    kmajor = bool(ins.w_kmajor)
    fmt = weight_format(ins)
    return _mpe_cycles(cfg, m, ins.n, ins.k, kmajor, fmt.bits, Sparsity(ins.sparsity), fmt.chosen,
                       0 if kmajor else ins.group_log2, OutMode(ins.out_mode), bool(ins.lut), ins.a_addr, a_stride,
                       ins.w_addr, ins.w_stride, ins.out_addr, out_stride, ins.scale_addr,
                       ins.acc_addr if ins.acc_in else None)


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


def _beat_words(src: int, dst: int, nbytes: int, beat: int, word: int) -> int:
    """Buffer words touched, beat by beat, by ``nbytes`` moved between memory at ``src`` (beats of ``beat`` bytes)
    and a buffer at ``dst`` (words of ``word`` bytes): a beat's bytes land in one word or straddle two."""
    if nbytes <= 0:
        return 0
    first = min(nbytes, beat - src % beat)
    total = span_words(dst, first, word)
    rest = nbytes - first
    if rest <= 0:
        return total
    full, last = divmod(rest, beat)
    shift = (dst + first) % word
    total += full * (1 if shift == 0 else 2)
    if last:
        total += span_words(dst + first + full * beat, last, word)
    return total


def _packed_beat_words(src: int, dst: int, nbytes: int, beat: int, word: int) -> int:
    """As _beat_words for ST.pack4, whose beats read two buffer bytes per memory byte."""
    total, left = 0, nbytes
    while left > 0:
        nb = min(left, beat - src % beat)
        total += span_words(dst, 2 * nb, word)
        src, dst, left = src + nb, dst + 2 * nb, left - nb
    return total


class StoreModel:
    """ST's writes in flight across instructions (hw/dma.py): per master the cycles its responses are taken, and the
    done cycle of the older instruction still awaiting responses. :meth:`instruction` times one ST from its start."""

    def __init__(self, cfg: HardwareConfig):
        self.cfg = cfg
        self.responses: dict[int, list[int]] = {}  # per master, the cycle each response is taken (in order)
        self.ends: list[int] = []  # the done cycles of the STs before (the last ST_IN_FLIGHT - 1)

    def _room(self, master: int, c: int) -> int:
        """The first cycle from c in which ``master`` has room for a write: fewer than ``axi_write_outstanding`` await
        their responses (the oldest's counted the cycle after it is taken)."""
        taken, most = self.responses.get(master, []), self.cfg.axi_write_outstanding
        return max(c, taken[-most] + 1) if len(taken) >= most else c

    def _respond(self, master: int, c: int) -> int:
        """The cycle the response to a write ``master`` takes in cycle c is taken (a cycle after the one before)."""
        taken = self.responses.setdefault(master, [])
        L = self.cfg.mem_latency_cycles
        taken.append(max(c + L, taken[-1] + 1) if taken else c + L)
        del taken[:-self.cfg.axi_write_outstanding]
        return taken[-1]

    def instruction(self, ins: Instruction, s: int) -> tuple[int, int]:
        """(the cycle ST may take its next instruction, the cycle this one is done) for an ST started in cycle s.

        Per beat a word-engine read of its bytes (with pack4, twice as many buffer bytes; an ST.img_col of
        consecutive bytes reads a word of rows at once and forms the next rows' beats from it), then its single-beat
        write burst, left in flight: up to ``axi_write_outstanding`` a master await their responses, each
        ``mem_latency_cycles`` after its beat. Where the image deals its pairs round several groups (masters), such
        an ST.img_col writes the first row of a pair in the cycle after the row before's; with an even number of
        rows it walks the pairs' first rows, then their second rows (every row's master another than the one before,
        every other byte of a word read), each in the cycle after the one before; over 2^ST_PAIRED_GROUPS_LOG2 groups
        or more the rows after a word's first go two a cycle (the second on ST's second writer, each once its master
        has room). A master takes a beat at most
        every other cycle, which no channel's throttle holds up (each carries at least half a beat a cycle; the
        model leaves out the credit a master's reads, such as the program's fetch, share with its writes in the
        bench memory, which may hold a write a cycle). Once
        every write is sent, HANDOFF waits for a place among the older STs (at most ``ST_IN_FLIGHT - 1``: the one
        that many before this one done); ST then takes its next instruction, and this one is done once its last
        response is back."""
        cfg = self.cfg
        w, word = cfg.axi_data_bytes, cfg.buffer_port_bytes
        column = bool(ins.img and ins.img_col and not ins.pack4 and ins.buf_stride == 1 and ins.row_bytes == 1)
        per = 2 if ins.pack4 else 1
        dealt = column and bool(ins.img_groups_log2) and ins.rows % 2 == 0
        half = ins.rows // 2
        order = [*range(0, ins.rows, 2), *range(1, ins.rows, 2)] if dealt else range(ins.rows)
        places = store_rows(cfg, ins)
        c = s + 1  # the BEAT state's cycle, once the first row is placed (hw/store_rows.py: its steps and the ring)
        if ins.rows:
            c += ST_PLACE_STAGES + 1
        held = 0
        last = -1  # this instruction's last response
        paired = dealt and ins.img_groups_log2 >= ST_PAIRED_GROUPS_LOG2
        skip = False  # this row went beside the one before, on the second writer
        for k, r in enumerate(order):
            if skip:
                skip = False
                continue
            channel, addr = places[r]
            master = cfg.master_of(channel)
            src, dst, left = ins.buf_addr + r * ins.buf_stride, addr, ins.row_bytes
            if left == 0:
                c += 1
                continue
            while left:
                nb = min(left, w - dst % w)
                if column and held:
                    held -= 1
                    if not (dealt or r % 2 == 0 and ins.img_groups_log2):
                        c += 1  # BEAT, then WRITE (a pair's first row: straight on from the row before's WRITE)
                    nxt = cfg.master_of(places[order[k + 1]][0]) if k + 1 < len(order) else master
                    if paired and held and nxt != master:  # the next row's beat on the second writer, beside
                        held -= 1
                        skip = True
                        t1, t2 = self._room(master, c), self._room(nxt, c)
                        last = max(last, self._respond(master, t1), self._respond(nxt, t2))
                        c = max(t1, t2) + 1
                        break
                elif dealt:
                    half_left = half - k if k < half else ins.rows - k
                    got = min(half_left, (word - src % word + 1) // 2)
                    held = got - 1
                    c += 3 + span_words(src, 2 * got - 1, word)
                else:
                    nbytes = min(ins.rows - r, word - src % word) if column else per * nb
                    held = nbytes - 1 if column else 0
                    c += 3 + span_words(src, nbytes, word)  # BEAT, the read (a word a cycle, two more), then WRITE
                c = self._room(master, c)
                last = max(last, self._respond(master, c))
                c += 1  # the beat's WRITE cycle; BEAT again
                src, dst, left = src + per * nb, dst + nb, left - nb
        older = self.ends[-(ST_IN_FLIGHT - 1)] if len(self.ends) >= ST_IN_FLIGHT - 1 else -1
        handoff = max(c + 1, older)  # HANDOFF from the cycle after the BEAT that finds every row sent
        done = max(handoff + 1, last + 1)
        self.ends = [*self.ends, done][-(ST_IN_FLIGHT - 1):]
        return handoff + 1, done


def store_cycles(cfg: HardwareConfig, ins: Instruction) -> int:
    """An ST's cycles from its start to done, alone (:class:`StoreModel`)."""
    return StoreModel(cfg).instruction(ins, 0)[1]


# ----------------------------------------------------------------------------------- SFU
def _chunks(count: int, lanes: int) -> tuple[np.ndarray, np.ndarray]:
    """(first element, elements) of each chunk the SFU's lanes take of ``count`` elements."""
    starts = np.arange(0, max(count, 0), lanes)
    return starts, np.minimum(lanes, count - starts)


def _element_pass(reads: list[list[int]], writes: list[int] | None, drain: int,
                  params: list[list[int]] | None = None, earliest: int = 0) -> int:
    """Cycles of one SFU pass over a row other than RoPE's, from its first cycle in OP through PASS_END.

    ``reads``: per chunk, the words of each operand the reader asks for in turn; ``params``: per chunk, those of
    the operands it asks for beside them on the parameter port (a norm's gains and biases), the chunk's first
    reads on both engines starting together once both are free; ``writes``: per chunk, the words of its results
    (None: a statistics pass, which writes nothing). A read of w words that starts at cycle t (the SFU's read
    engine is eager) has its last word at t + w (when the next read may start) and its done at t + w + 1. The lanes
    (hw/sfu_lanes.py) take a chunk the cycle after its last operand's done once the result queue has room for it
    (SFU_RESULT_QUEUE chunks taken and not yet written; a place frees the cycle after its write starts); the reader
    starts a chunk's first read once the one before is asked for and either the lanes took the one before, or they
    wait for one at most SFU_READ_AHEAD chunks before it with room for the results of every chunk up to it.
    A chunk's results enter the queue ``drain`` cycles after its take (sfu_result_latency) and leave it the cycle
    after, or once the write engine is free (a write of v words has its last word asked for v cycles after its start,
    when the next may start, and is done the cycle after). PASS_END waits ``drain`` cycles after the last take (a
    statistics pass: sfu_stat_drain) and for the last write to be done. The lanes
    take nothing before the pass's cycle ``earliest`` (softmax's last pass, beside its division: recip_wait_cycles).
    """
    if not reads:
        return 2  # OP finds the row empty, then PASS_END
    free1 = free2 = 0  # the cycle each engine's last read has its last word (it may start the next)
    allowed = earliest  # the first cycle the lanes wait, with room, for this chunk
    starts: list[int] = []  # each chunk's write
    takes: list[int] = []
    write_free = 0
    for k, words in enumerate(reads):
        t = 0
        if k:  # the lanes wait (from earliest) for a chunk at most SFU_READ_AHEAD before, with room up to this one
            t = max(free1, free2, earliest)
            if k > SFU_READ_AHEAD:
                t = max(t, takes[k - 1 - SFU_READ_AHEAD] + 1)
            if writes is not None and k > SFU_RESULT_QUEUE:
                t = max(t, starts[k - 1 - SFU_RESULT_QUEUE] + 1)
        free1 = free2 = t
        for w in words:
            free1 += w
        for w in (params[k] if params else []):
            free2 += w
        takes.append(max(max(free1, free2) + 2, allowed))
        if writes is not None:
            start = max(takes[k] + drain + 1, write_free)
            write_free = start + writes[k]
            starts.append(start)
        allowed = takes[k] + 1
        if writes is not None and k + 1 >= SFU_RESULT_QUEUE:
            allowed = max(allowed, starts[k + 1 - SFU_RESULT_QUEUE] + 1)
    return max(takes[-1] + drain + 1, write_free + (writes is not None)) + 1


def _sfu_row(cfg: HardwareConfig, ins: Instruction, r: int) -> int:
    """One row of a MISC operation: its passes over the row's chunks of ``sfu_lanes`` elements and the statistics
    between them. Each operand of a chunk is one read of its bytes, its results one write."""
    op, cols, w, G = MiscOp(ins.op), ins.cols, cfg.buffer_port_bytes, cfg.sfu_lanes
    src_row, dst_row = ins.src_addr + r * ins.src_stride, ins.dst_addr + r * ins.dst_stride
    if op is MiscOp.ROPE:
        return _rope_row(w, G, ins.imm, cols, src_row, dst_row, ins.prm_addr + r * ROPE.row_bytes(ins.imm))
    src2_row = ins.src2_addr + r * ins.src_stride
    given = op is MiscOp.SOFTMAX and bool(ins.max_given)
    part = SoftmaxPart(ins.part) if op is MiscOp.SOFTMAX else SoftmaxPart.WHOLE
    stats = (ins.stats_addr + r * SOFTMAX_STATS.size) % w
    return _row_cycles(cfg, op, cols, src_row % w, dst_row % w, src2_row % w, ins.prm_addr % w, given, part,
                       bool(ins.first), stats)


@lru_cache(maxsize=4096)
def _row_cycles(cfg: HardwareConfig, op: MiscOp, cols: int, src: int, dst: int, src2: int, prm: int,
                given: bool = False, part: SoftmaxPart = SoftmaxPart.WHOLE, first: bool = False, stats: int = 0) -> int:
    """A row of any op but RoPE, its operands' addresses given within their buffer words (all that counts);
    ``given``: a SOFTMAX whose row maximum is read past the row (max_given), in place of its first pass; ``part``
    (``first``): a part of a blocked SOFTMAX, whose row's statistics are at ``stats``."""
    w, G = cfg.buffer_port_bytes, cfg.sfu_lanes
    c, g = _chunks(cols, G)
    src_e, dst_e = MISC_SRC_BYTES.get(op, 1), MISC_DST_BYTES.get(op, 1)
    latency = sfu_result_latency(op)  # a write pass: its results enter the queue this late
    a = span_words(src + c * src_e, g * src_e, w)
    out = span_words(dst + c * dst_e, g * dst_e, w).tolist()
    div = SFU_DIV_SETUP + div_cycles(cfg)  # a division from the state that asks for it
    sqrt = sqrt_cycles(cfg) + SFU_NORM_DEN
    # NORM_RECIP, then the reciprocal of the normalized divisor, floor(2^64 / d)
    recip = 1 + SFU_NORM_SHIFT + SFU_DIV_SETUP + div_cycles(cfg, 2 * nm.NORM_RECIP_BITS + 1)
    if op in (MiscOp.RMSNORM, MiscOp.LAYERNORM, MiscOp.SOFTMAX):
        stat = _element_pass([[n] for n in a.tolist()], None, sfu_stat_drain(op, 0, G))  # no writes
    if op in (MiscOp.RMSNORM, MiscOp.LAYERNORM):
        ge = NORM.element_bytes
        gain = span_words(prm + NORM.gain_offset(c), g * ge, w)
    if op is MiscOp.RMSNORM:  # the gains beside the elements, on the parameter port
        return stat + div + sqrt + recip + _element_pass([[n] for n in a.tolist()], out, latency,
                                                         [[n] for n in gain.tolist()])
    if op is MiscOp.LAYERNORM:
        beta = span_words(prm + NORM.bias_offset(cols, c), g * ge, w)
        return 2 * stat + 2 * div + sqrt + recip + _element_pass([[n] for n in a.tolist()], out, latency,
                                                                 np.stack([gain, beta], 1).tolist())
    if op is MiscOp.SOFTMAX and part is not SoftmaxPart.WHOLE:
        return _softmax_part_row(cfg, part, first, stats, dst, stat, [[n] for n in a.tolist()], out, latency)
    if op is MiscOp.SOFTMAX:
        first = _sfu_read(src + 4 * cols, 4, w) if given else stat  # MAX and MAX_WAIT, or the maximum's pass
        # floor(2^40 / sum): its operands set up (DIV_SETUP, DIV_GO), then the last pass as the divider starts
        wait = recip_wait_cycles(div_cycles(cfg, nm.SOFTMAX_RECIP_BITS + 1) - 1)
        sums = _element_pass([[n] for n in a.tolist()], None, sfu_stat_drain(op, 1, G))
        return first + sums + SFU_DIV_SETUP - 1 + _element_pass([[n] for n in a.tolist()], out, latency, earliest=wait)
    if op is MiscOp.EMUL:
        b = span_words(src2 + c, g, w)
        return _element_pass(np.stack([a, b], 1).tolist(), out, latency)
    if op in (MiscOp.DEQ, MiscOp.REQ):
        return _element_pass([[n] for n in a.tolist()], out, latency)
    if op is MiscOp.DEQ_ADD:
        b = span_words(dst + 4 * c, 4 * g, w)
        return _element_pass(np.stack([a, b], 1).tolist(), out, latency)
    raise ValueError(f"no timing for MISC op {op}")


def _softmax_part_row(cfg: HardwareConfig, part: SoftmaxPart, first: bool, stats: int, dst: int, max_pass: int,
                      reads: list[list[int]], out: list[int], latency: int) -> int:
    """A row of a part of a blocked softmax: its statistics read (MAX, MAX_WAIT; not a first MAX part's), then
    MAX's or SUM's pass and the statistic it made written at dst (queued as a result the cycle after the pass ends,
    PASS_END waiting for its write), or NORM's division of the sum (STATS_DIV, then as a whole softmax's) beside
    the probabilities' pass."""
    w = cfg.buffer_port_bytes
    read = 0 if part is SoftmaxPart.MAX and first else _sfu_read(stats, SOFTMAX_STATS.size, w)
    if part is SoftmaxPart.NORM:
        wait = recip_wait_cycles(div_cycles(cfg, nm.SOFTMAX_RECIP_BITS + 1) - 1)
        return read + 1 + SFU_DIV_SETUP - 1 + _element_pass(reads, out, latency, earliest=wait)
    written = SFU_STAT_QUEUE + write_cycles(dst, 4, w)
    if part is SoftmaxPart.MAX:
        return read + max_pass + written
    return read + _element_pass(reads, None, sfu_stat_drain(MiscOp.SOFTMAX, 1, cfg.sfu_lanes)) + written


def _sfu_read(addr, nbytes: int, w: int):
    """A read the SFU's FSM asks for (on its eager engine, from a registered command: SFU_FSM_READ) from the state
    that asks for it to the one that sees it done."""
    return read_cycles(addr, nbytes, w) - 1 + SFU_FSM_READ


def _rope_row(w: int, G: int, head: int, cols: int, src_row: int, dst_row: int, tab: int) -> int:
    """A RoPE row: per chunk of a head's first half, four reads (the elements, their partners, cos, sin), the
    products' pipeline (ROPE_OP) and two writes, one after another."""
    end = 2  # the A state that finds the row over, and PASS_END
    if head < 2:
        return end
    half = head // 2
    j, gj = _chunks(half, G)
    e = ROPE.entry_bytes
    table = int((_sfu_read(tab + ROPE.cos_offset(j), gj * e, w) + _sfu_read(tab + ROPE.sin_offset(head, j),
                                                                            gj * e, w)).sum())
    total = end
    for h in range(0, cols - cols % head, head):  # a head's pairs: x[h + j] with x[h + j + half]
        lo, hi = h + j, h + j + half
        total += table + int((_sfu_read(src_row + lo, gj, w) + _sfu_read(src_row + hi, gj, w) + SFU_ROPE_LATENCY
                              + write_cycles(dst_row + lo, gj, w) + write_cycles(dst_row + hi, gj, w)).sum())
    return total


def misc_cycles(cfg: HardwareConfig, ins: Instruction) -> int:
    op = MiscOp(ins.op)
    w = cfg.buffer_port_bytes
    head = (_sfu_read(ins.prm_addr + NORM.eps.offset, NORM.eps.nbytes, w)
            if op in (MiscOp.RMSNORM, MiscOp.LAYERNORM) else 1)  # EPS: the norms' epsilon
    return head + sum(1 + _sfu_row(cfg, ins, r) + 1 for r in range(ins.rows)) + 1


# ----------------------------------------------------------------------------------- all units
@dataclass(frozen=True)
class Work:
    """What one instruction asks of its unit and of memory."""

    cycles: int  # busy cycles of its unit, uncontended
    hbm_bytes: int = 0  # bytes moved over the memory channels
    channel: int = -1  # the (first) channel
    shares: tuple[tuple[int, int], ...] = ()  # (channel, bytes) of each channel it moves bytes on

    def __post_init__(self) -> None:
        if self.hbm_bytes and not self.shares:
            object.__setattr__(self, "shares", ((self.channel, self.hbm_bytes),))


def instruction_work(cfg: HardwareConfig, ins: Instruction) -> Work:
    op = ins.opcode
    if streamed(ins):
        spans = stream_spans(cfg, ins)
        return Work(mpe_cycles(cfg, ins), sum(n for _, _, n in spans), ins.w_channel,
                    tuple((ch, n) for ch, _, n in spans))
    if op in (Opcode.MM, Opcode.MV):
        return Work(mpe_cycles(cfg, ins))
    if op is Opcode.LD:
        if striped(ins):
            return Work(load_cycles(cfg, ins), ins.row_bytes, ins.channel,
                        tuple((ch, n) for ch, _, n in stripe_spans(ins)))
        if ins.gather and ins.stripe > 1:  # rows from the table's blocks: spread evenly, the ids unknown here
            n = ins.rows * ins.row_bytes
            return Work(load_cycles(cfg, ins), n, ins.channel,
                        tuple((ins.channel + k, n // ins.stripe + (k < n % ins.stripe)) for k in range(ins.stripe)))
        return Work(load_cycles(cfg, ins), ins.rows * ins.row_bytes, ins.channel)
    if op is Opcode.ST:
        if ins.img and ins.img_col:  # a byte a row, each on its image row's channel
            per: dict[int, int] = {}
            for ch, _ in store_rows(cfg, ins):
                per[ch] = per.get(ch, 0) + 1
            first = next(iter(per), ins.channel)
            return Work(store_cycles(cfg, ins), ins.rows, first, tuple(per.items()))
        return Work(store_cycles(cfg, ins), ins.rows * ins.row_bytes, store_target(cfg, ins)[0])
    if op is Opcode.MISC:
        return Work(misc_cycles(cfg, ins))
    if op is Opcode.SYS:
        return Work(1)  # NOP and END finish the cycle after they start; a barrier waits on the other cores
    raise ValueError(f"no timing for opcode {op}")
