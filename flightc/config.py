"""The hardware configuration: one frozen dataclass of independent parameters.

Everything the compiler, the simulators, the RTL generator, the performance model and the
design-space exploration need is either a field here or a property derived from the fields.
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from flightc.errors import ConfigError
from flightc.hw.axi_rules import AXI_BOUNDARY
from flightc.hw.axi_rules import AXI_MAX_BEATS as AXI_MAX_BURST_BEATS
from flightc.parts import PARTS, MemoryKind  # noqa: F401  (MemoryKind is part of this module's API)

SFU_STAT_BITS = 72  # the SFU's row statistics and divider as built and checked bit-exact against flightc.numerics
SFU_SQRT_BITS = 64  # its square root's input (an int64 mean square shifted by the norm's fraction bits)
MEM_LATENCY_MIN = 2  # a read burst is queued for a cycle before its first beat
MEM_LATENCY_MAX = 4095  # longest read latency the performance model and the bench memory are checked at
AXI_OUTSTANDING_MAX = 64  # deepest queue of read bursts in flight a master keeps
LANE_FIFO_MAX = 1 << 16  # deepest streamed-MV reader FIFO (beats) the generator builds
PAIR_BYTES = 8  # a lane group's result pair as raw sums: two INT32 (OutMode.ACC32)
LANE_SLOTS_STEP = 64  # a chunk of 64 columns is whole bytes in every format the ISA names (2:16 W3: 3 bytes a row)


class Buffer(int, Enum):
    """On-chip buffers of one core. Each is byte-addressed; its size comes from the config."""

    ACT = 0  # INT8 activations, probabilities, Q/K/V of the current tokens
    WGT = 1  # packed weight tiles with sparse indices and group scales
    ACC = 2  # INT32 residual stream, raw accumulators, attention scores
    PRM = 3  # per-layer parameters: requantization multipliers, norm gains, LUTs, RoPE rows
    KV = 4  # K and V rows of the cache streamed in for attention


class SparseEncoding(int, Enum):
    """How an N:M weight stores which positions of each block of M it keeps (ISA 1.10, the MPE's ``sparse_enc``)."""

    POSITIONS = 0  # each kept weight's position in its block, log2(M) bits (FlightLLM's)
    BITMASK = 1  # one bit per position of the block, the kept values in order
    RANK = 2  # the kept set's rank among the C(M, N) sets of N positions, ceil(log2 C(M, N)) bits per block


# fields that are tuples of enum members, written to JSON as their names: (the enum, what a member is called)
_NAMED = {"banked_buffers": (Buffer, "buffer"), "sparse_encodings": (SparseEncoding, "encoding")}


@dataclass(frozen=True)
class HardwareConfig:
    """Independent parameters of one FlightLLM-style accelerator build."""

    name: str
    clock_mhz: float
    # --- compute ---
    num_cores: int
    mpe_chains: int  # configurable sparse DSP chains per core's matrix processing engine
    chain_length: int  # DSP48 slices in one chain
    dsp_group: int  # DSP48 slices per group: the cascade is fixed inside a group
    macs_per_dsp: int  # INT8 MACs packed into one DSP48 (two activations share a weight)
    sfu_lanes: int  # elements per cycle of the special-function unit
    lane_slots: int  # DSP48E2 slots of a lane group (one per memory master): a streamed MV's columns per cycle
    lane_act_kib: int  # each lane group's copy of the activation vector: a streamed MV's longest K, in KiB
    # --- numerics the datapath supports ---
    sparse_m: int  # N:M block size along K
    sparse_n: tuple[int, ...]  # supported N for blocks of sparse_m (N == sparse_m is dense)
    supports_2_4: bool  # the 2:4 pattern with 2-bit indices
    sparse_encodings: tuple[SparseEncoding, ...]  # how a sparse weight's kept positions may be stored: those the
    # dequantizers decode (the compiler picks the fewest bytes among them per layer)
    weight_bits: tuple[int, ...]  # widths the dequantizer turns into INT8 operands
    sparse_bits: tuple[int, ...]  # the widths among them stored N:M (the others dense, an N:M plan pruned and stored
    # with zeros): a lane group's zero insertion is as wide as the widest (hw/lane_group.py)
    acc_bits: int  # accumulator width of a DSP chain
    # --- off-chip memory ---
    mem_kind: MemoryKind
    mem_channels: int
    mem_channel_gbps: float  # peak bandwidth of one channel, GB/s
    mem_channel_mib: int  # capacity of one channel
    # --- on-chip buffers, per core ---
    act_buffer_kib: int
    wgt_buffer_kib: int
    acc_buffer_kib: int
    prm_buffer_kib: int
    kv_buffer_kib: int
    buffer_port_bytes: int  # width of one buffer port (bytes per cycle)
    banked_buffers: tuple[Buffer, ...]  # cut in a bank per memory master, so every master's LD lane writes its share
    # of a striped row at once (footprint.own_banks); the others are one memory each, which LD lane 0 fills alone
    token_fifo_depth: int  # capacity of each wait/release token counter between two units (tokens of a step)
    # --- microarchitecture: what the generated RTL is built with and the performance model times
    unit_queue_depth: int  # instructions each unit's queue holds; a full queue stalls the fetcher
    axi_data_bytes: int  # data width of a memory master (bytes per AXI beat)
    axi_masters: int  # the kernel's AXI memory masters; the memory channels are split among them in equal groups,
    # and the masters among the cores in runs (:attr:`HardwareConfig.master_runs`): each core has its own
    axi_burst_beats: int  # longest burst the DMA units and the instruction fetcher issue (AXI4 INCR: <= 256)
    axi_outstanding: int  # read bursts a master keeps in flight (its readers share them)
    axi_write_outstanding: int  # ST's write bursts (a beat each) a master keeps awaiting their responses
    mem_latency_cycles: int  # cycles from a read burst's acceptance to its first beat (bench memory, perf model)
    # beats each streamed-MV reader's FIFO holds (hw/stream.py): at least every burst its master may have in flight,
    # twice over, so a burst is asked for while the ones before drain; more lets a weight tile be read further ahead
    # while the MPE waits for its activation (MV.w_early)
    lane_fifo_beats: int
    sfu_div_bits: int  # width of the SFU's restoring divider and of its row statistics
    sfu_div_step_bits: int  # quotient bits the divider settles per cycle (restoring steps chained in one cycle)
    sfu_sqrt_bits: int  # width of the SFU's bit-serial square root (two input bits a cycle)

    def __post_init__(self) -> None:
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(HardwareConfig)}
        positive = [n for n, v in values.items() if isinstance(v, (int, float)) and not isinstance(v, bool) and v <= 0]
        if positive:
            raise ConfigError(f"config {self.name!r}: fields must be positive: {', '.join(positive)}")
        if self.chain_length % self.dsp_group:
            raise ConfigError(f"config {self.name!r}: chain_length {self.chain_length} is not a multiple of "
                              f"dsp_group {self.dsp_group}")
        bad_n = [n for n in self.sparse_n if n <= 0 or n > self.sparse_m or self.sparse_m % n]
        if bad_n or self.sparse_m not in self.sparse_n:
            raise ConfigError(f"config {self.name!r}: sparse_n {self.sparse_n} must divide sparse_m "
                              f"{self.sparse_m} and include it (dense)")
        if (not self.sparse_encodings or len(set(self.sparse_encodings)) != len(self.sparse_encodings)
                or not all(isinstance(e, SparseEncoding) for e in self.sparse_encodings)):
            named = [getattr(e, "name", e) for e in self.sparse_encodings]
            raise ConfigError(f"config {self.name!r}: sparse_encodings {named} "
                              f"must name one or more distinct encodings of {list(SparseEncoding.__members__)}")
        bad_bits = [b for b in self.weight_bits if b not in (2, 3, 4, 8)]
        if bad_bits or 8 not in self.weight_bits:
            raise ConfigError(f"config {self.name!r}: weight_bits {self.weight_bits} must be drawn from "
                              f"(2, 3, 4, 8) and include 8")
        if not self.sparse_bits or not set(self.sparse_bits) <= {2, 3, 4, 8}:
            raise ConfigError(f"config {self.name!r}: sparse_bits {self.sparse_bits} must name one or more widths "
                              f"of (2, 3, 4, 8)")
        if self.lane_slots % LANE_SLOTS_STEP:
            raise ConfigError(f"config {self.name!r}: lane_slots {self.lane_slots} must be a multiple of "
                              f"{LANE_SLOTS_STEP} (whole bytes of every weight format's chunk)")
        if len(set(self.banked_buffers)) != len(self.banked_buffers) or not all(isinstance(b, Buffer)
                                                                                for b in self.banked_buffers):
            named = [getattr(b, "name", b) for b in self.banked_buffers]
            raise ConfigError(f"config {self.name!r}: banked_buffers {named} must name distinct buffers of "
                              f"{[b.name for b in Buffer]}")
        if self.acc_bits < 24 or self.acc_bits > 48:
            raise ConfigError(f"config {self.name!r}: acc_bits {self.acc_bits} outside 24..48 (DSP48E2)")
        self._check_microarchitecture()

    def _check_microarchitecture(self) -> None:
        w = self.axi_data_bytes
        problems = []
        if w & (w - 1) or not 4 <= w <= 128:
            problems.append(f"axi_data_bytes {w} must be a power of two from 4 to 128 (AXI4: 32 to 1024 bits)")
        if self.axi_burst_beats > AXI_MAX_BURST_BEATS:
            problems.append(f"axi_burst_beats {self.axi_burst_beats} exceeds AXI4's {AXI_MAX_BURST_BEATS}")
        if self.mem_channels % self.kernel_masters:
            problems.append(f"axi_masters {self.kernel_masters} does not divide mem_channels {self.mem_channels} into "
                            f"equal groups")
        if self.kernel_masters < self.num_cores:
            problems.append(f"num_cores {self.num_cores} exceeds axi_masters {self.kernel_masters}: every core has "
                            f"memory masters of its own (set axi_masters to at least {self.num_cores})")
        if not MEM_LATENCY_MIN <= self.mem_latency_cycles <= MEM_LATENCY_MAX:
            problems.append(f"mem_latency_cycles {self.mem_latency_cycles} outside {MEM_LATENCY_MIN}..{MEM_LATENCY_MAX}"
                            f" (a burst is queued a cycle, then answered)")
        for name in ("axi_outstanding", "axi_write_outstanding"):
            if getattr(self, name) > AXI_OUTSTANDING_MAX:
                problems.append(f"{name} {getattr(self, name)} exceeds {AXI_OUTSTANDING_MAX}")
        least = 2 * self.axi_outstanding * (self.stripe_bytes // w)
        if not least <= self.lane_fifo_beats <= LANE_FIFO_MAX:
            problems.append(f"lane_fifo_beats {self.lane_fifo_beats} must hold every burst a master keeps in flight "
                            f"twice over ({least} beats: axi_outstanding {self.axi_outstanding} x "
                            f"{self.stripe_bytes // w}-beat bursts x 2) and at most {LANE_FIFO_MAX}")
        if self.sfu_div_bits % self.sfu_div_step_bits or self.sfu_div_step_bits > 8:
            problems.append(f"sfu_div_step_bits {self.sfu_div_step_bits} must divide sfu_div_bits "
                            f"{self.sfu_div_bits} and be at most 8")
        if self.sfu_div_bits < SFU_STAT_BITS or self.sfu_sqrt_bits < SFU_SQRT_BITS or self.sfu_sqrt_bits % 2:
            problems.append(f"sfu_div_bits {self.sfu_div_bits} / sfu_sqrt_bits {self.sfu_sqrt_bits}: the SFU's "
                            f"exact statistics need at least {SFU_STAT_BITS} / {SFU_SQRT_BITS} (an even width)")
        if problems:
            raise ConfigError(f"config {self.name!r}: " + "; ".join(problems))

    # --- derived quantities ---
    @property
    def dsp_per_core(self) -> int:
        """The MACs' DSP48 slices of one core (of a core's view: :meth:`core`): its MPE's chains and a lane group on
        every memory master of its own."""
        return self.mpe_chains * self.chain_length + self.axi_masters * self.lane_slots

    @property
    def dsp_count(self) -> int:
        """The MACs' DSP48 slices in all cores: every core's MPE, a lane group on every master of the kernel (the
        SFU and control add more: flightc.dse.resources)."""
        return self.num_cores * self.mpe_chains * self.chain_length + self.kernel_masters * self.lane_slots

    @property
    def peak_macs_per_cycle(self) -> int:
        return self.dsp_count * self.macs_per_dsp

    @property
    def mem_bandwidth_gbps(self) -> float:
        return self.mem_channels * self.mem_channel_gbps

    @property
    def mem_bytes_per_s(self) -> float:
        """Nominal off-chip bandwidth: mem_channels x mem_channel_gbps, in bytes per second (the roofline's roof)."""
        return self.mem_bandwidth_gbps * 1e9

    @property
    def peak_macs_per_s(self) -> float:
        return self.peak_macs_per_cycle * self.clock_mhz * 1e6

    @property
    def mem_channel_bytes(self) -> int:
        return self.mem_channel_mib << 20

    def buffer_bytes(self, buf: Buffer) -> int:
        kib = {Buffer.ACT: self.act_buffer_kib, Buffer.WGT: self.wgt_buffer_kib, Buffer.ACC: self.acc_buffer_kib,
               Buffer.PRM: self.prm_buffer_kib, Buffer.KV: self.kv_buffer_kib}[buf]
        return kib << 10

    def banks(self, buf: Buffer) -> int:
        """Memories ``buf`` is cut in: a bank per master where it is banked, else one."""
        return self.axi_masters if buf in self.banked_buffers else 1

    @property
    def on_chip_bytes(self) -> int:
        return self.num_cores * sum(self.buffer_bytes(b) for b in Buffer)

    @property
    def kernel_masters(self) -> int:
        """The kernel's memory masters, every core's together (a core's view: :meth:`core`, counts its own in
        ``axi_masters``)."""
        return self.axi_masters

    @property
    def first_master(self) -> int:
        """The kernel's index of a core's first master (0 but in a core's view)."""
        return 0

    @property
    def channels_per_master(self) -> int:
        """Memory channels each AXI master serves (master g: channels g x this .. (g + 1) x this - 1)."""
        return self.mem_channels // self.kernel_masters

    @property
    def master_runs(self) -> tuple[tuple[int, int], ...]:
        """Each core's masters (first, count): contiguous runs, a power of two each where the masters allow (a core
        streams a layer from its channels only as such a run, flightc.compiler.memory.stream_plan), the first cores
        taking the larger ones (32 masters over three cores: 16, 8 and 8; u280's 24: 8 each); near-even runs
        otherwise."""
        P, A = self.num_cores, self.kernel_masters
        counts = [1 << (A // P).bit_length() - 1] * P
        for c in range(P):
            if sum(counts) + counts[c] <= A:
                counts[c] *= 2
        if sum(counts) != A:  # masters left over: near-even runs, not every one a power of two
            counts = [A * (c + 1) // P - A * c // P for c in range(P)]
        firsts = [sum(counts[:c]) for c in range(P)]
        return tuple(zip(firsts, counts))

    def core(self, c: int) -> "CoreView":
        """Core c as its generator and the timing models see it: its own run of masters (``axi_masters`` the run's
        count, from ``first_master``), every memory channel still in reach."""
        return _core_view(self, c)

    def master_of(self, channel: int) -> int:
        """Which of this core's masters (an index into its own run) reaches ``channel``: the channel's own master
        where the channel is the core's, else the one whose index the channel's master has modulo the run (over
        the memory's switch: the HBM's crossbar on the cards, the bench memory in simulation)."""
        return (channel // self.channels_per_master - self.first_master) % self.axi_masters

    @property
    def core_channels(self) -> range:
        """The channels a core's own masters serve (a one-core config's: all of them)."""
        per = self.channels_per_master
        return range(self.first_master * per, (self.first_master + self.axi_masters) * per)

    @property
    def stripe_bytes(self) -> int:
        """Bytes a striped matrix puts on one channel before the next: the longest power-of-two burst, within
        AXI's 4 KiB boundary (so each is one burst of its channel's master)."""
        burst = min(self.axi_burst_beats * self.axi_data_bytes, AXI_BOUNDARY)
        return 1 << (burst.bit_length() - 1)

    @property
    def bank_bytes(self) -> int:
        """Bytes a buffer bank holds before the next bank's (a bank per master): a stripe unit on each of a master's
        channels, so a striped row laid from the right address writes each master's units into its own bank
        (:func:`flightc.isa.footprint.own_banks`)."""
        return self.stripe_bytes * self.channels_per_master

    @property
    def stream_out_pairs(self) -> int:
        """Row pairs of raw INT32 sums a streamed MV's output stage takes in a cycle (hw/stream_out.py): a buffer
        word's worth, one from each of that many lane groups' queues."""
        return max(1, min(self.axi_masters, self.buffer_port_bytes // PAIR_BYTES))

    @property
    def lane_k_max(self) -> int:
        """Longest reduction a streamed MV takes: the activations a lane group's copy holds."""
        return self.lane_act_kib << 10

    @property
    def chain_span_max(self) -> int:
        """Widest activation window one chain step can reach: chain_length stored weights of the sparsest
        pattern (at least two per weight, the RTL's window register)."""
        sparsest = min(self.sparse_n + ((2,) if self.supports_2_4 else ()))
        return max(self.chain_length * self.sparse_m // sparsest, self.chain_length * 2)

    @property
    def max_reduction_length(self) -> int:
        """Longest dot product of INT8 x INT8 terms that cannot overflow the accumulator."""
        return (1 << (self.acc_bits - 1)) // (128 * 128) - 1

    # --- serialization ---
    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["mem_kind"] = self.mem_kind.value
        d["sparse_n"] = list(self.sparse_n)
        d["weight_bits"] = list(self.weight_bits)
        d["sparse_bits"] = list(self.sparse_bits)
        for name in _NAMED:
            d[name] = [e.name for e in getattr(self, name)]
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict) -> "HardwareConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names
        missing = names - set(d)
        if unknown or missing:
            raise ConfigError(f"hardware config: unknown fields {sorted(unknown)}, missing fields {sorted(missing)}")
        d = dict(d)
        try:
            d["mem_kind"] = MemoryKind(d["mem_kind"])
        except ValueError:
            raise ConfigError(f"hardware config: mem_kind {d['mem_kind']!r} is none of "
                              f"{[k.value for k in MemoryKind]}") from None
        for f in dataclasses.fields(cls):
            want = {"int": int, "float": (int, float), "bool": bool, "str": str}.get(str(f.type))
            v = d[f.name]
            if f.name in ("sparse_n", "weight_bits", "sparse_bits"):
                if not isinstance(v, (list, tuple)) or not all(isinstance(x, int) and not isinstance(x, bool)
                                                               for x in v):
                    raise ConfigError(f"hardware config: {f.name} = {v!r} must be a list of integers")
                d[f.name] = tuple(v)
            elif f.name in _NAMED:
                enum, what = _NAMED[f.name]
                if not isinstance(v, (list, tuple)) or not all(isinstance(x, str) and x in enum.__members__
                                                               for x in v):
                    raise ConfigError(f"hardware config: {f.name} = {v!r} must be a list of {what} names from "
                                      f"{list(enum.__members__)}")
                d[f.name] = tuple(enum[x] for x in v)
            elif want is not None and (not isinstance(v, want) or (want is not bool and isinstance(v, bool))):
                raise ConfigError(f"hardware config: {f.name} = {v!r} must be {str(f.type)}")
            elif str(f.type) == "float":
                d[f.name] = float(v)  # 200 and 200.0 are one config (and one hash)
        return cls(**d)

    @property
    def hash(self) -> str:
        """Stable hash of the hardware parameters (the name is a label and is left out)."""
        d = self.to_dict()
        d.pop("name")
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]

    def replace(self, **changes) -> "HardwareConfig":
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class CoreView(HardwareConfig):
    """One core of a kernel (:meth:`HardwareConfig.core`): ``axi_masters`` is the core's own run of the kernel's
    ``kernel_masters``, from ``first_master``, and ``num_cores`` 1; everything else is the kernel's config."""

    first_master: int = 0  # type: ignore[assignment]  (a field here, a property of the kernel's config)
    kernel_masters: int = 0  # type: ignore[assignment]


@functools.lru_cache(maxsize=256)
def _core_view(cfg: HardwareConfig, c: int) -> CoreView:
    if isinstance(cfg, CoreView):
        raise ValueError("a core's view has no cores of its own")
    if not 0 <= c < cfg.num_cores:
        raise ValueError(f"core {c} of a {cfg.num_cores}-core config")
    first, count = cfg.master_runs[c]
    fields = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(HardwareConfig)}
    return CoreView(**{**fields, "num_cores": 1, "axi_masters": count}, first_master=first,
                    kernel_masters=cfg.axi_masters)


# the divider's chained steps: two a cycle at 200-225 MHz; the 100 MHz tiny preset settles four.
# Memory: bursts of 16 beats (1 KiB at 64 bytes: the 64 B - 1 KiB transactions a 512-bit master reads a U280
# pseudo-channel at 91% with), 8 in flight, so 8 x 16 beats cover the 64-cycle read latency plus a burst
# (an assumed latency: Shuhai measured about 107 ns, 24 cycles at 225 MHz, at the HBM controller's own
# port; the AXI switch network and the width and clock converters in front of it are charged the rest). A
# streamed MV's reader FIFO of 512 beats fills the block RAMs (512 x 72 bits each) that the 256 beats of every
# burst in flight twice over take anyway, and lets a weight tile be read that much further ahead (MV.w_early).
# ST writes a beat a burst, at most every other cycle a master: on the HBM configs 32 writes awaiting their
# responses a master (8 held an exchange's store of a 7B residual to 8 bytes a cycle over the 64-cycle latency;
# 32 let ST send at its own pace), 8 elsewhere; each costs ST a counter step and the bench memory a response slot.
_COMMON = dict(macs_per_dsp=2, dsp_group=2, lane_slots=64, lane_act_kib=32, sparse_m=16, sparse_n=(2, 4, 8, 16), supports_2_4=True,
               sparse_encodings=(SparseEncoding.POSITIONS,),
               weight_bits=(2, 3, 4, 8), sparse_bits=(2, 3, 4, 8), acc_bits=32, token_fifo_depth=4095,
               unit_queue_depth=4, axi_burst_beats=16, axi_outstanding=8, axi_write_outstanding=8,
               mem_latency_cycles=64, lane_fifo_beats=512,
               sfu_div_bits=72, sfu_sqrt_bits=64, banked_buffers=(Buffer.WGT, Buffer.PRM, Buffer.KV))
# one 512-bit master per HBM pseudo-channel (Vitis link: master c on HBM[c]), each reading its share of every
# striped matrix linearly; one master on the single-channel and simulation presets
# The 7B models' steps fill only PRM (each streamed MV's records) with striped rows at line rate: their weights, keys
# and values stream to the lane groups, their activations are one embedding row a token. So the cards bank PRM
# alone, and every other buffer is one memory, read without a multiplexer over 32 banks.
_HBM = {**_COMMON, "axi_masters": 32, "banked_buffers": (Buffer.PRM,), "axi_write_outstanding": 32}
_ONE = {**_COMMON, "axi_masters": 1}
# tiny: a short read latency with four bursts in flight (calibrated against the RTL in make test)
_TINY = {**_ONE, "axi_outstanding": 4, "axi_write_outstanding": 4, "mem_latency_cycles": 16, "lane_act_kib": 4,
         "lane_fifo_beats": 128}

PRESETS: dict[str, HardwareConfig] = {
    # Alveo U280, three cores, a core an SLR (FlightLLM's layout; bitstreams/vitis.py core_slrs places them), each
    # with 8 masters on 8 of the HBM's pseudo-channels: 24 of the 32 (FlightLLM's U280 demo writes its decode
    # outputs on 25, docs/deploy.md), since SLR0, where the HBM and every master's platform converters attach, has
    # no room for a core of 16 masters beside them (docs/dse.md: 117% of SLR0's LUTs with the 32 channels'
    # converters), nor SLR0-SLR1's super long lines for many more masters in the other cores (598 wires each). A
    # lane group of 64 DSP48E2 on each master for the streamed MVs that carry decode and prompts (linear layers and
    # attention), and a small MPE of 2 x 16 DSP48E2 a core for the MVs and MMs through a buffer (the 7B models'
    # programs use none). Dense weights only: with 4-bit positions 8:16 INT4 streams the bytes of dense INT4, so on
    # this bandwidth-bound card its zero insertion (a multiplexer a lane group's slot) buys no time and costs LUTs
    # the part does not have (docs/deploy.md); an 8:16 plan is pruned 8:16 and stored dense, zeros where pruned
    # (WeightFormat.stored_for). Bitmasks, which do save bytes, wait on a cheaper zero insertion
    # (docs/compression.md). 8 SFU lanes a core, which the SFU streams a chunk a cycle (docs/performance.md: 16
    # decode 1.3% faster for 84K LUT more, over 70% of the dynamic region), with a divider of two quotient bits a
    # cycle (a step of four is past 225 MHz's logic levels, tests/test_timing.py). Memory from the parts table
    # (flightc/parts.py): HBM2 pseudo-channels of 14.375 GB/s, 24 x 14.375 = 345 GB/s, a 64-byte master per
    # pseudo-channel.
    "u280": HardwareConfig(name="u280", clock_mhz=225.0, num_cores=3, mpe_chains=2, chain_length=16, sfu_lanes=8,
                           **{**PARTS["u280"].memory_fields(), "mem_channels": 24}, act_buffer_kib=256,
                           wgt_buffer_kib=1024, acc_buffer_kib=512, prm_buffer_kib=768, kv_buffer_kib=1024,
                           buffer_port_bytes=64, axi_data_bytes=64, sfu_div_step_bits=2,
                           **{**_HBM, "axi_masters": 24, "sparse_n": (16,), "supports_2_4": False}),
    # Versal VHK158, one core (as u280 was before it took its three SLRs' cores): 32 HBM2e channels x 25.6 GB/s =
    # 819 GB/s, 32 GB. A channel carries more than a 64-byte master at 225 MHz (14.4 GB/s), so each has a 128-byte
    # master (28.8 GB/s) and a lane group of 128 slots that takes a 128-byte beat of W4 a cycle; its fabric is
    # unchecked (no resource figures available here).
    "vhk158": HardwareConfig(name="vhk158", clock_mhz=225.0, num_cores=1, mpe_chains=32, chain_length=64,
                             sfu_lanes=64, **PARTS["vhk158"].memory_fields(), act_buffer_kib=256,
                             wgt_buffer_kib=1024, acc_buffer_kib=512, prm_buffer_kib=768, kv_buffer_kib=1024,
                             buffer_port_bytes=64, sfu_div_step_bits=2, **{**_HBM, "lane_slots": 128},
                             axi_data_bytes=128),
    # Kria KV260 (PYNQ-class): one 64-bit DDR4-2400 interface, 19.2 GB/s, 4 GB, reached through the PS's 128-bit
    # S_AXI_HP0 port (a 16-byte master); 1,248 DSP48E2 on the part.
    "kv260": HardwareConfig(name="kv260", clock_mhz=200.0, num_cores=1, mpe_chains=16, chain_length=64, sfu_lanes=16,
                            **PARTS["kv260"].memory_fields(), act_buffer_kib=64, wgt_buffer_kib=256,
                            acc_buffer_kib=128, prm_buffer_kib=64, kv_buffer_kib=256,
                            buffer_port_bytes=PARTS["kv260"].port_bytes, axi_data_bytes=PARTS["kv260"].port_bytes,
                            sfu_div_step_bits=2, **_ONE),
    # The memory calibration preset: the u280's memory system scaled down to four HBM2 pseudo-channels, a 512-bit
    # master each, at its clock, burst length, bursts in flight and latency; tiny's compute, with three SFU lanes
    # (chunks that are not a power of two) and a divider wider than the statistics, so the RTL tests cover them
    # too (docs/rtl.md lists each field that differs from u280).
    "hbm4": HardwareConfig(name="hbm4", clock_mhz=225.0, num_cores=1, mpe_chains=4, chain_length=8, sfu_lanes=3,
                           mem_kind=MemoryKind.HBM2, mem_channels=4, mem_channel_gbps=14.375, mem_channel_mib=16,
                           act_buffer_kib=32, wgt_buffer_kib=64, acc_buffer_kib=32, prm_buffer_kib=16,
                           kv_buffer_kib=16, buffer_port_bytes=64, axi_data_bytes=64, sfu_div_step_bits=2,
                           **{**_COMMON, "axi_masters": 4, "axi_write_outstanding": 32, "sfu_div_bits": 76,
                              "lane_act_kib": 4,
                              "sparse_encodings": (SparseEncoding.POSITIONS, SparseEncoding.BITMASK)}),
    # Small enough to simulate as RTL in seconds.
    "tiny": HardwareConfig(name="tiny", clock_mhz=100.0, num_cores=1, mpe_chains=4, chain_length=8, sfu_lanes=4,
                           mem_kind=MemoryKind.HBM2, mem_channels=4, mem_channel_gbps=1.6, mem_channel_mib=16,
                           act_buffer_kib=32, wgt_buffer_kib=32, acc_buffer_kib=32, prm_buffer_kib=16,
                           kv_buffer_kib=16, buffer_port_bytes=8, axi_data_bytes=8, sfu_div_step_bits=4,
                           **_TINY),
}


def load_config(spec: str | Path | HardwareConfig) -> HardwareConfig:
    """A preset name, a JSON file written by :meth:`HardwareConfig.to_json`, or a config itself."""
    if isinstance(spec, HardwareConfig):
        return spec
    if str(spec) in PRESETS:
        return PRESETS[str(spec)]
    path = Path(spec)
    if path.suffix == ".json" and path.exists():
        try:
            d = json.loads(path.read_text())
        except (ValueError, UnicodeDecodeError) as e:
            raise ConfigError(f"{path}: not valid JSON ({e}); write it with `flightc config NAME -o FILE`") from None
        if not isinstance(d, dict):
            raise ConfigError(f"{path}: a hardware config is a JSON object of fields, not a {type(d).__name__}")
        try:
            return HardwareConfig.from_dict(d)
        except ConfigError as e:
            raise ConfigError(f"{path}: {e}") from None
    raise ConfigError(f"unknown hardware config {str(spec)!r}: use a preset ({', '.join(PRESETS)}) "
                      f"or a JSON file")
