"""The hardware-configuration space a search explores, for one part and one compression plan.

Each dimension is a field of HardwareConfig (or sets one): cores, DSP chains per core, chain length,
the sparsest N:16 pattern the sparse MUX serves (it sets the chain's activation window), buffer
depths, buffer port width (and with it the AXI data width), the depth of the wait/release token
counters, the number of memory channels the cores stream from and the memory masters they stream through (a
lane group and an LD lane each), each lane group's slots, the SFU's lanes, the clock (the part's clocks that the
timing estimate supports: flightc/dse/clock.py), and microarchitecture
parameters (unit queue depth, burst length, the divider's bits per cycle; one value each unless --space widens
them: the resource model is not calibrated on them). ``weight_bits`` is the base's and is not searched: the
lane groups and feeds build only the widths a config lists (hw/lane_group.py ``config_kinds``), so a plan's widths
alone are cheaper (yosys, 2026-12-07: a u280 lane group of W4 and W8 alone 2,107 LUT against every width's 2,487;
its feed 2,255 against 3,314), which the resource model charges (the lane group within 2% on a held-out run), but
its feeds only within 13%, too coarse to search on.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from flightc.config import PRESETS, HardwareConfig, SparseEncoding
from flightc.dse.clock import search_clocks
from flightc.parts import Part
from flightc.errors import ConfigError
from flightc.isa.table import SPARSITY_NM

# Buffers stop at 1 MiB: a larger one lets the compiler plan a single load row past the ISA's 20-bit row_bytes.
# N of the N:16 patterns the ISA encodes (16: dense)
N_OF_16 = tuple(sorted(n for n, m in SPARSITY_NM.values() if m == 16))


def patterns(sparsest: int) -> dict:
    """The ``sparse_n`` / ``supports_2_4`` fields of a chain serving every N:16 from ``sparsest`` up (2:4
    comes with 2:16, whose window it shares)."""
    return {"sparse_n": tuple(n for n in N_OF_16 if n >= sparsest), "supports_2_4": sparsest == 2}


DEFAULT_CHOICES: dict[str, tuple] = {
    "mpe_chains": (2, 4, 8, 16, 32, 64),  # 2: the u280's, a core an SLR whose 7B programs stream past the MPE
    "chain_length": (8, 16, 32, 64),
    "sparsest_n": N_OF_16,
    # how a sparse point's lane groups and chains take the kept positions (the generator builds positions and
    # bitmasks); a dense point's is moot, so it keeps positions
    "sparse_encoding": ("POSITIONS", "BITMASK"),
    "buffer_port_bytes": (8, 16, 32, 64),
    "act_buffer_kib": (32, 64, 128, 256, 512),
    "wgt_buffer_kib": (64, 128, 256, 512, 1024),
    "acc_buffer_kib": (64, 128, 256, 512, 1024),
    "prm_buffer_kib": (32, 64, 128, 256, 512, 768),  # 768: u280's, where a 7B MLP's records stream as one tile
    "kv_buffer_kib": (64, 128, 256, 512, 1024),
    # a step's wait/release tokens between two units: a 7B step of small tiles passes more than 4,095
    "token_fifo_depth": (4095, 65535, 1048575),
    # microarchitecture: one value each by default (the resource model is not calibrated on them yet); widen
    # them with --space, e.g. {"axi_burst_beats": [16, 64]}
    "unit_queue_depth": (4,),
    "axi_burst_beats": (16,),
    "sfu_div_step_bits": (2,),
    # beats of each streamed-MV reader's FIFO: 512 fill the block RAMs a 256-beat FIFO of a 64-byte beat takes anyway
    # (512 x 72 bits each), and let a weight tile be read that much further ahead of its MV (MV.w_early)
    "lane_fifo_beats": (512,),
    # the SFU's elements a cycle (its timing and resources, fitted to SFU probes, follow them) and each lane group's
    # DSP48E2 slots (a streamed MV's columns a cycle per master)
    "sfu_lanes": (4, 8, 16, 32, 48, 64),
    "lane_slots": (64, 128),
}
# memory masters, a power of two up to the channels a point streams from (its lane groups, LD lanes and the buffers'
# banks follow them), or slr_channels' split; the part's channels bound them (SearchSpace.for_part)
MASTERS = (1, 2, 4, 8, 16, 32, 64)


def slr_channels(part: Part) -> int | None:
    """On a part of several SLRs whose channels a core an SLR cannot split into equal powers of two, the most
    channels they can (u280: 3 x 8 = 24, the split the preset uses, docs/dse.md); else None."""
    if part.slrs < 2 or part.mem_channels < part.slrs:
        return None
    split = part.slrs * (1 << (part.mem_channels // part.slrs).bit_length() - 1)
    return split if split != part.mem_channels else None


def _plan_formats(plan) -> tuple:
    return (plan.default, plan.head, *(fmt for _, fmt in plan.overrides))


def plan_sparse_bits(plan) -> tuple[int, ...]:
    """The widths the plan stores N:M (a sparse point stores N:M at those alone: its zero insertion is as wide as the
    widest, ``HardwareConfig.sparse_bits``); empty for a dense plan."""
    return tuple(sorted({f.bits for f in _plan_formats(plan) if f.sparse}))


def required_sparsity(plan) -> int:
    """The sparsest N:16 the plan's layers use (2 for 2:4, which the hardware serves with 2:16's window)."""
    ns = [16]
    for f in _plan_formats(plan):
        if f.sparse:
            ns.append(2 if f.m == 4 else f.n * 16 // f.m)
    return min(ns)


@dataclass(frozen=True)
class SearchSpace:
    """Choices per dimension; ``config(params)`` turns one choice of each into a HardwareConfig."""

    part: Part
    choices: dict[str, tuple] = field(default_factory=dict)
    base: HardwareConfig = PRESETS["u280"]
    sparse_bits: tuple[int, ...] = ()  # the plan's widths stored N:M (a dense point keeps the base's)

    @classmethod
    def for_part(cls, part: Part, plan, max_cores: int | None = None, overrides: dict | None = None) -> "SearchSpace":
        need_n = required_sparsity(plan)
        choices = dict(DEFAULT_CHOICES)
        # the plan's sparsest pattern or sparser hardware, or dense (16: its sparse layers pruned as planned and
        # stored dense, WeightFormat.stored_for, at the bytes 4-bit positions take at W4)
        choices["sparsest_n"] = tuple(n for n in N_OF_16 if n <= need_n or n == 16)
        cores = min(part.max_cores, max_cores or part.max_cores)
        choices["num_cores"] = tuple(range(1, cores + 1))
        channels = [c for c in (1, 2, 4, 8, 16, 32, 64) if c <= part.mem_channels and part.mem_channels % c == 0]
        per_slr = slr_channels(part)
        choices["mem_channels"] = tuple(sorted({*channels, *([per_slr] if per_slr else [])}))
        choices["axi_masters"] = tuple(sorted({*(g for g in MASTERS if g <= max(choices["mem_channels"])),
                                               *([per_slr] if per_slr else [])}))
        choices["clock_mhz"] = part.clock_mhz  # (narrowed below to what the timing estimate supports)
        asked_clocks = None
        for name, values in (overrides or {}).items():
            if name not in choices:
                raise ConfigError(f"search space: unknown dimension {name!r}; dimensions: {', '.join(choices)}")
            values = tuple(values) if isinstance(values, (list, tuple)) else (values,)
            bad = [v for v in values if v not in choices[name]] if name in ("sparsest_n", "num_cores",
                                                                             "mem_channels", "axi_masters",
                                                                             "clock_mhz", "sparse_encoding") else []
            if bad or not values:
                raise ConfigError(f"search space: {name} = {list(values)}: allowed on {part.name} for this plan: "
                                  f"{list(choices[name])}")
            choices[name] = values
            if name == "clock_mhz":
                asked_clocks = values
        if not plan_sparse_bits(plan):  # a dense plan: the encoding is moot
            choices["sparse_encoding"] = ("POSITIONS",)
        choices["clock_mhz"] = search_clocks(part.clock_mhz, asked_clocks)
        return cls(part, choices, sparse_bits=plan_sparse_bits(plan))

    @classmethod
    def load_overrides(cls, path: str | Path) -> dict:
        try:
            return json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise ConfigError(f"--space {path}: {e}") from None

    def config(self, params: dict, name: str = "dse") -> HardwareConfig:
        p = self.part
        channels = int(params["mem_channels"])
        # no more masters than channels, and a whole number of channels a master (24 masters on 32 channels: 8)
        masters = math.gcd(min(int(params["axi_masters"]), channels), channels)
        sparse = int(params["sparsest_n"]) < 16
        return self.base.replace(
            sparse_encodings=(SparseEncoding[params["sparse_encoding"]] if sparse else SparseEncoding.POSITIONS,),
            sparse_bits=self.sparse_bits if sparse and self.sparse_bits else self.base.sparse_bits,
            axi_masters=masters, lane_slots=int(params["lane_slots"]), name=name, clock_mhz=float(params["clock_mhz"]),
            num_cores=min(int(params["num_cores"]), masters),  # every core has masters of its own
            mpe_chains=int(params["mpe_chains"]), chain_length=int(params["chain_length"]),
            **patterns(int(params["sparsest_n"])), mem_kind=p.mem_kind, mem_channels=channels,
            mem_channel_gbps=p.mem_channel_gbps, mem_channel_mib=p.mem_channel_mib,
            act_buffer_kib=int(params["act_buffer_kib"]), wgt_buffer_kib=int(params["wgt_buffer_kib"]),
            acc_buffer_kib=int(params["acc_buffer_kib"]), prm_buffer_kib=int(params["prm_buffer_kib"]),
            kv_buffer_kib=int(params["kv_buffer_kib"]), buffer_port_bytes=int(params["buffer_port_bytes"]),
            axi_data_bytes=int(params["buffer_port_bytes"]),  # the generator moves an AXI beat as one buffer word
            token_fifo_depth=int(params["token_fifo_depth"]), unit_queue_depth=int(params["unit_queue_depth"]),
            axi_burst_beats=int(params["axi_burst_beats"]), sfu_div_step_bits=int(params["sfu_div_step_bits"]),
            sfu_lanes=int(params["sfu_lanes"]), lane_fifo_beats=int(params["lane_fifo_beats"]))

    def params_of(self, cfg: HardwareConfig) -> dict | None:
        """The choice of each dimension that makes ``cfg`` (its name aside), or None where the space cannot: a
        value outside its choices, or a field the space does not set that differs from its base."""
        sparsest = min(cfg.sparse_n, default=16) if not cfg.supports_2_4 else 2
        params = {name: getattr(cfg, name) for name in self.choices if hasattr(cfg, name)}
        params["sparsest_n"] = sparsest
        params["sparse_encoding"] = cfg.sparse_encodings[0].name if len(cfg.sparse_encodings) == 1 else None
        if set(params) != set(self.choices) or any(params[k] not in v for k, v in self.choices.items()):
            return None
        return params if self.config(params, name=cfg.name) == cfg else None

    def size(self) -> int:
        n = 1
        for v in self.choices.values():
            n *= len(v)
        return n
