"""Pass ``place``: lay out weights, parameters, KV cache and I/O across memory channels.

A linear layer's weights stream into the lane groups (MV.w_stream) where its core's channels are a power of two
of whole masters: each row tile is held as its *stream image* (``flightc.compress.stream``) striped over those
channels. Otherwise (a core sharing a master with another) a tile's packed rows are striped over all of its
core's channels, a stripe unit (``stripe_bytes``) at a time, so one LD brings it into the WGT buffer with every
channel streaming an equal, linear share. The other regions go to the least-filled of the core's channels. Every static byte
(weights, records, tables) goes into per-channel images, dynamic regions (KV cache, token ids,
logits) are reserved after them.
"""
from __future__ import annotations

from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from enum import Enum
from typing import Callable, Iterable, Iterator

import numpy as np

from flightc import numerics as nm
from flightc.compiler.spool import ImageSpool, append_at
from flightc.compress.formats import WeightFormat, cheapest_encoding
from flightc.compress.packing import pack_weight
from flightc.compress.stream import ImageRows, StreamShape, image_cols, image_rows, record_columns, stream_image
from flightc.config import Buffer, HardwareConfig, SparseEncoding
from flightc.errors import UnsupportedError
from flightc.hw.axi_rules import LD_IN_FLIGHT
from flightc.ir.graph import GraphIR, OpKind
from flightc.isa.footprint import stripe_layout
from flightc.isa.table import BY_NAME, OutMode
from flightc.parts import PARTS
from flightc.records import NORM, ROPE
from flightc.rope import RopeScaling

ALIGN = 64


class RegionKind(str, Enum):
    WEIGHT = "weight"
    PARAM = "param"
    TABLE = "table"
    KV = "kv"
    IO = "io"


@dataclass(frozen=True)
class Region:
    """Bytes in memory: on one channel, or striped over ``stripe`` channels from ``channel``, ``unit`` bytes at a
    time, at the same address on each (:func:`flightc.isa.footprint.stripe_layout`)."""

    name: str
    kind: RegionKind
    channel: int
    addr: int
    nbytes: int
    stripe: int = 1
    unit: int = 0

    def spans(self) -> list[tuple[int, int, int]]:
        """(channel, address, bytes) of each channel's share."""
        if self.stripe > 1:
            return stripe_layout(self.channel, self.addr, self.nbytes, self.stripe, self.unit)
        return [(self.channel, self.addr, self.nbytes)]

    def to_dict(self) -> dict:
        d = asdict(self)
        d["kind"] = self.kind.value
        return d


def region_spans(region: dict) -> list[tuple[int, int, int]]:
    """:meth:`Region.spans` of a region as a bundle's memory map lists it (:meth:`Region.to_dict`)."""
    return Region(**{**region, "kind": RegionKind(region["kind"])}).spans()


@dataclass(frozen=True)
class LinearTiles:
    """Where each row tile of a linear layer lives: packed rows and their requantization records."""

    row0: int  # first output row of this core's share
    rows: int
    k: int
    row_bytes: int
    tile_rows: int  # the most rows a tile has
    weights: tuple[Region, ...]  # packed rows (buffered), or stream images (streamed)
    records: tuple[Region, ...]
    stream: "StreamPlan | None" = None  # None: the tiles go through the WGT buffer
    firsts: tuple[int, ...] = ()  # each tile's first row, from row0


@dataclass(frozen=True)
class StreamPlan:
    """The masters a core's streamed MVs read: channels ``channel .. channel + stripe - 1`` (MV.w_channel,
    MV.w_stripe), a lane group per master."""

    channel: int
    stripe: int
    groups: int

    def shape(self, cfg: HardwareConfig, fmt: WeightFormat, rows: int, k: int) -> StreamShape:
        return StreamShape(fmt, rows, k, self.groups, cfg.lane_slots, cfg.axi_data_bytes, cfg.stripe_bytes,
                           self.stripe)


@dataclass(frozen=True)
class KeyImage:
    """A KV head's keys kept a second time as a stream image (region ``region``): decode's Q.K^T streams them into
    the lane groups (MV.w_stream) and every step writes its positions into it a row at a time (ST.img)."""

    region: str
    fmt: WeightFormat
    rows: ImageRows


@dataclass(frozen=True)
class ValueImages:
    """A KV head's values (INT8, kept transposed: a row per head dimension) kept a second time as a stream image,
    whole row pairs for every lane group: decode's P.V streams it into the lane groups over the first ``window``
    columns (one MV.w_stream for all the head's dimensions), and every step writes its position into it a column at
    a time (one ST.img_col)."""

    region: str
    fmt: WeightFormat
    cols: ImageRows


# a lane group takes its row pairs one after another over the window: with more than this, P.V streamed takes longer
# than through the KV buffer
MAX_VALUE_PAIRS = 8

@dataclass
class MemoryMap:
    regions: dict[str, Region] = field(default_factory=dict)
    images: dict[int, bytearray | ImageSpool] = field(default_factory=dict)  # static bytes per channel
    extent: dict[int, int] = field(default_factory=dict)  # bytes used per channel, dynamic regions included
    linears: dict[str, list[LinearTiles | None]] = field(default_factory=dict)  # per core; None: no rows
    kv_owner: dict[int, int] = field(default_factory=dict)  # kv head -> core
    row_split: dict[str, list[tuple[int, int]]] = field(default_factory=dict)  # per linear: rows of each core
    buffered: dict[str, str] = field(default_factory=dict)  # linear -> why its weights go through the WGT buffer
    key_images: dict[str, KeyImage] = field(default_factory=dict)  # "<attention>.k<head>" -> its stream image
    keys_loaded: dict[str, str] = field(default_factory=dict)  # attention -> why decode loads its keys instead
    value_images: dict[str, ValueImages] = field(default_factory=dict)  # "<attention>.v<head>" -> its images
    values_loaded: dict[str, str] = field(default_factory=dict)  # attention -> why decode loads its values instead
    gated: set[str] = field(default_factory=set)  # a gated MLP's second projections: their product a tile at a time

    def to_dict(self) -> dict:
        return {"regions": [r.to_dict() for r in self.regions.values()], "buffered": dict(self.buffered),
                "keys_loaded": dict(self.keys_loaded), "values_loaded": dict(self.values_loaded),
                "extent": {str(c): n for c, n in sorted(self.extent.items())}}

    def __getitem__(self, name: str) -> Region:
        return self.regions[name]


def channel_shares(cfg: HardwareConfig) -> list[tuple[int, int]]:
    """Each core's channels (first, past the last): those of its own run of masters
    (:attr:`flightc.config.HardwareConfig.master_runs`; 32 masters over three cores: 16, 8 and 8)."""
    per = cfg.channels_per_master
    return [(first * per, (first + count) * per) for first, count in cfg.master_runs]


def core_channels(cfg: HardwareConfig, core: int) -> list[int]:
    """Channels whose data a core owns: those its own masters serve (:func:`channel_shares`)."""
    return list(range(*channel_shares(cfg)[core]))


def head_shares(cfg: HardwareConfig, heads: int) -> list[tuple[int, int]]:
    """KV heads per core, in proportion to the cores' channels (attention streams its keys and values from them)."""
    C = cfg.mem_channels
    return [(heads * c0 // C, heads * c1 // C) for c0, c1 in channel_shares(cfg)]


def split(count: int, parts: int) -> list[tuple[int, int]]:
    """Contiguous, near-even split of range(count) into parts (some may be empty)."""
    bounds = [count * i // parts for i in range(parts + 1)]
    return [(bounds[i], bounds[i + 1]) for i in range(parts)]


class _Allocator:
    def __init__(self, cfg: HardwareConfig, images: bool = True, spool: bool = False):
        self.cfg, self.images = cfg, images
        self.map = MemoryMap(images={c: ImageSpool() if spool and images else bytearray()
                                     for c in range(cfg.mem_channels)},
                             extent={c: 0 for c in range(cfg.mem_channels)})

    def channel_of(self, core: int) -> int:
        """The least-filled of the core's channels: consecutive tiles spread out, big tables are balanced."""
        return min(core_channels(self.cfg, core), key=lambda ch: (self.map.extent[ch], ch))

    def _full(self, what: str, channel: int) -> UnsupportedError:
        """Why ``what`` has no room on ``channel``, with the memory the config has and what makes more room."""
        cfg = self.cfg
        total = cfg.mem_channels * cfg.mem_channel_mib / 1024
        part = PARTS.get(cfg.name)
        unused = (f" (the {cfg.name} preset streams from {cfg.mem_channels} of the card's {part.mem_channels} "
                  f"channels: docs/dse.md)" if part is not None and part.mem_channels > cfg.mem_channels else "")
        return UnsupportedError(f"memory: {what} does not fit channel {channel} ({cfg.mem_channel_mib} MiB) of preset "
                                f"{cfg.name!r}: its {cfg.mem_channels} channels hold {total:g} GiB in all{unused}; "
                                f"fewer weight bits (--bits, --layer), a shorter --max-len or a config with more "
                                f"memory make room")

    def _place(self, name: str, kind: RegionKind, nbytes: int, channel: int | None) -> Region:
        if channel is None:
            channel = self.channel_of(0)
        addr = -(-self.map.extent[channel] // ALIGN) * ALIGN
        if addr + nbytes > self.cfg.mem_channel_bytes:
            raise self._full(f"{name} ({nbytes} bytes)", channel)
        region = Region(name, kind, channel, addr, nbytes)
        self.map.regions[name] = region
        self.map.extent[channel] = addr + nbytes
        return region

    def static(self, name: str, kind: RegionKind, data: bytes | int, channel: int | None = None) -> Region:
        """A region with its bytes in the channel image; ``data`` may be just a size when there are no images."""
        region = self._place(name, kind, data if isinstance(data, int) else len(data), channel)
        if not self.images:
            return region
        if isinstance(data, int):
            raise ValueError(f"{name}: the image needs its bytes, not just a size")
        append_at(self.map.images[region.channel], region.addr, data)
        return region

    def dynamic(self, name: str, kind: RegionKind, nbytes: int, channel: int | None = None) -> Region:
        return self._place(name, kind, nbytes, channel)

    def striped(self, name: str, kind: RegionKind, data: bytes | int, channels: list[int], unit: int | None = None,
                align: int | None = None) -> Region:
        """A static region striped over ``channels`` (contiguous), ``unit`` bytes at a time (a stripe unit, so that
        one LD reads it with every channel's master streaming its share linearly), at one address on all of them."""
        unit = unit or self.cfg.stripe_bytes
        align = align or unit
        nbytes = data if isinstance(data, int) else len(data)
        channels = channels[:max(1, -(-nbytes // unit))]
        if len(channels) < 2:
            return self.static(name, kind, data, channels[0] if channels else None)
        addr = max(-(-self.map.extent[ch] // align) * align for ch in channels)
        region = Region(name, kind, channels[0], addr, nbytes, len(channels), unit)
        spans = stripe_layout(region.channel, addr, nbytes, region.stripe, unit)
        for ch, _, n in spans:
            if addr + n > self.cfg.mem_channel_bytes:
                raise self._full(f"{name} ({nbytes} bytes striped over channels {channels[0]}..{channels[-1]})", ch)
        self.map.regions[name] = region
        units = None
        if self.images:
            if isinstance(data, int):
                raise ValueError(f"{name}: the image needs its bytes, not just a size")
            units = np.frombuffer(bytes(data) + bytes(-nbytes % unit), np.uint8).reshape(-1, unit)
        for k, (ch, _, n) in enumerate(spans):
            self.map.extent[ch] = addr + n
            if units is not None:
                append_at(self.map.images[ch], addr, units[k::len(channels)].tobytes()[:n])
        return region


    def striped_dynamic(self, name: str, kind: RegionKind, nbytes: int, channels: list[int], unit: int) -> Region:
        """A region striped like :meth:`striped` whose bytes the programs write (no image)."""
        addr = max(-(-self.map.extent[ch] // unit) * unit for ch in channels)
        region = Region(name, kind, channels[0], addr, nbytes, len(channels), unit)
        for ch, _, n in stripe_layout(region.channel, addr, nbytes, region.stripe, unit):
            if addr + n > self.cfg.mem_channel_bytes:
                raise self._full(f"{name} ({nbytes} bytes striped over channels {channels[0]}..{channels[-1]})", ch)
            self.map.extent[ch] = addr + n
        self.map.regions[name] = region
        return region

    def on_every_channel(self, name: str, kind: RegionKind, per_channel: int) -> Region:
        """A region the programs write of ``per_channel`` bytes at one address on every channel (a stripe of one
        unit a channel)."""
        channels = range(self.cfg.mem_channels)
        addr = max(-(-self.map.extent[ch] // ALIGN) * ALIGN for ch in channels)
        if addr + per_channel > self.cfg.mem_channel_bytes:
            raise UnsupportedError(f"memory: {name} ({per_channel} bytes on every channel) does not fit past "
                                   f"{addr} bytes of a channel ({self.cfg.mem_channel_mib} MiB) of preset "
                                   f"{self.cfg.name!r}")
        for ch in channels:
            self.map.extent[ch] = addr + per_channel
        region = Region(name, kind, 0, addr, per_channel * self.cfg.mem_channels, self.cfg.mem_channels, per_channel)
        self.map.regions[name] = region
        return region


def key_image(cfg: HardwareConfig, core: int, fmt: WeightFormat, head_dim: int, max_len: int,
              sliding_window: int) -> tuple[tuple[StreamPlan, ImageRows, StreamShape] | None, str]:
    """How a core keeps a KV head's keys as a stream image for decode, or (None, why not)."""
    if sliding_window and sliding_window < max_len:
        return None, (f"a sliding window ({sliding_window} positions) starts Q.K^T past row 0 of the image, which a "
                      f"streamed MV cannot")
    plan, why = stream_plan(cfg, core, fmt, head_dim)
    if plan is None:
        return None, why
    shape = plan.shape(cfg, fmt, max_len, head_dim)
    try:
        return (plan, image_rows(shape), shape), ""
    except UnsupportedError as e:
        return None, str(e)


def value_image(cfg: HardwareConfig, core: int, kv_bits: int, head_dim: int, max_len: int,
                sliding_window: int) -> tuple[tuple[StreamPlan, ImageRows, StreamShape] | None, str]:
    """How a core keeps a KV head's transposed values as a stream image for decode (plan, column fields, the image's
    shape), or (None, why not)."""
    fmt = WeightFormat(8, 16, 16)
    if kv_bits != 8:
        return None, "INT4 values are kept a position a row (k-major), not transposed"
    if sliding_window and sliding_window < max_len:
        return None, f"a sliding window ({sliding_window} positions) starts P.V past column 0 of the image"
    plan, why = stream_plan(cfg, core, fmt, cfg.lane_slots)
    if plan is None:
        return None, why
    pairs = head_dim // (2 * plan.groups)
    if head_dim % (2 * plan.groups) or pairs > MAX_VALUE_PAIRS:
        return None, (f"a head's {head_dim} dimensions are {head_dim / (2 * plan.groups):g} row pairs for each of "
                      f"{plan.groups} lane group(s); P.V streams whole pairs, at most {MAX_VALUE_PAIRS} a group")
    cols = record_columns(max_len, cfg.lane_slots)
    if cols > cfg.lane_k_max:
        return None, f"{max_len} positions exceed the {cfg.lane_k_max} activations a lane group holds"
    shape = plan.shape(cfg, fmt, head_dim, cols)
    try:
        return (plan, image_cols(shape), shape), ""
    except UnsupportedError as e:
        return None, str(e)


def tile_rows(cfg: HardwareConfig, layer: str, rows: int, row_bytes: int) -> int:
    """Rows per weight tile: as many as half the WGT buffer holds (double buffering), in whole chains."""
    slot = cfg.buffer_bytes(Buffer.WGT) // 2
    if row_bytes > slot:
        raise UnsupportedError(f"layer {layer}: one packed weight row ({row_bytes} bytes) exceeds half the WGT "
                               f"buffer ({slot} bytes) of preset {cfg.name!r}")
    fit = min(rows, slot // row_bytes, cfg.buffer_bytes(Buffer.PRM) // 8 // nm.REQUANT_RECORD_BYTES, 65535)
    if fit < 1:
        raise UnsupportedError(f"layer {layer}: the PRM buffer of preset {cfg.name!r} cannot hold one tile's "
                               f"requantization records")
    if fit >= cfg.mpe_chains:
        fit -= fit % cfg.mpe_chains
    return fit


def stream_plan(cfg: HardwareConfig, core: int, fmt: WeightFormat, k: int) -> tuple[StreamPlan | None, str]:
    """How a core streams a layer's weights into its lane groups, or (None, why not): the core's channels must be a
    power of two of whole masters, its rows cut into whole chunks, and K within a lane group's activation copy."""
    chans = core_channels(cfg, core)
    per = cfg.channels_per_master
    masters = len(chans) // per
    if chans[0] % per or len(chans) % per or masters & (masters - 1):
        return None, (f"core {core}'s channels {chans[0]}..{chans[-1]} are not a power of two of whole masters "
                      f"({per} channels each)")
    if k > cfg.lane_k_max:
        return None, f"K = {k} exceeds the {cfg.lane_k_max} activations a lane group holds (lane_act_kib)"
    plan = StreamPlan(chans[0], len(chans), masters)
    try:
        plan.shape(cfg, fmt, 1, k)
    except UnsupportedError as e:
        return None, str(e)
    return plan, ""


def row_cost(cfg: HardwareConfig, fmt: WeightFormat, k: int) -> float:
    """Bytes a row of a K-long weight in ``fmt`` takes in memory as the compiler lays it out: its share of a stream
    image where the layer streams (chunks padded to their stride, multipliers per block), its packed row where it
    goes through the WGT buffer."""
    columns = fmt.packed_columns(cfg, k)
    plan, _ = stream_plan(cfg, 0, fmt, columns)
    if plan is None:
        return fmt.row_bytes(columns)
    shape = plan.shape(cfg, fmt, 2 * plan.groups, columns)
    return shape.pair_beats * shape.beat / 2


def chosen_format(fmt: WeightFormat, cfg: HardwareConfig, k: int) -> WeightFormat:
    """A layer's format as compiled for ``cfg``: where the plan leaves the encoding of its sparse positions open,
    the encoding of ``cfg``'s that takes the fewest bytes as the layer is laid out (:func:`row_cost`), among those
    that stream where positions would (an encoding whose chunk is not whole bytes would send the layer through the
    WGT buffer)."""
    if not fmt.sparse or fmt.encoding is not None:
        return fmt
    columns = fmt.with_encoding(SparseEncoding.POSITIONS).packed_columns(cfg, k)

    def streams(f: WeightFormat) -> bool:
        return stream_plan(cfg, 0, f, columns)[0] is not None

    can = {e for e in cfg.sparse_encodings if streams(fmt.with_encoding(e))}
    return cheapest_encoding(fmt, cfg, k, cost=lambda f: row_cost(cfg, f, k), among=can or None)


def stream_tile_rows(cfg: HardwareConfig, rows: int, groups: int, least: int = 1) -> int:
    """Rows per streamed tile: as many as a quarter of the PRM buffer has records for (two slots, double
    buffered), in whole row pairs of every lane group, and at least ``least`` tiles; a tile is one MV per token."""
    fit = min(rows, cfg.buffer_bytes(Buffer.PRM) // 4 // nm.REQUANT_RECORD_BYTES, 65535, max(1, -(-rows // least)))
    if fit < 1:
        raise UnsupportedError(f"the PRM buffer of preset {cfg.name!r} cannot hold one tile's requantization "
                               f"records")
    if fit == rows:
        return rows
    step = 2 * groups  # tiles of equal size, each a whole round of row pairs where that fits
    tiles = -(-rows // fit)
    even = -(-rows // tiles)
    rounded = -(-even // step) * step
    return rounded if rounded <= fit else even


def output_tile_rows(cfg: HardwareConfig, rows: int, fit: int, plan: StreamPlan, row_bytes: int) -> list[int]:
    """Rows of each streamed tile of the layer that makes the logits, which decode stores a tile at a time as soon
    as it is made (flightc.compiler.lower): tiles of up to ``fit`` rows, shrinking toward the end so that each
    tile's store (single-beat writes, ``axi_write_outstanding`` of them over the memory's latency) goes under the next
    tile's stream (``row_bytes`` a row over the plan's channels) and the last, left at the end of the step,
    costs about a burst's latency."""
    step = 2 * plan.groups  # whole rounds of row pairs
    store_per_row = 4 * (cfg.mem_latency_cycles + 2) / (cfg.axi_write_outstanding * cfg.axi_data_bytes)
    stream_per_row = row_bytes * cfg.clock_mhz * 1e6 / (plan.stripe * cfg.mem_channel_gbps * 1e9)
    ratio = int(stream_per_row / store_per_row)
    size = -(-int(2 * cfg.mem_latency_cycles / store_per_row) // step) * step
    if ratio < 2 or size >= fit:
        return equal_tiles(rows, fit)
    tail: list[int] = []
    while size < fit and sum(tail) + 2 * size <= rows:  # what is left before it stores longer than it
        tail.insert(0, size)
        size *= ratio
    head = rows - sum(tail)
    return equal_tiles(head, fit)[::-1] + tail


def equal_tiles(rows: int, fit: int) -> list[int]:
    """Rows of each tile of ``fit`` rows (the last what is left)."""
    return [min(fit, rows - r0) for r0 in range(0, rows, fit)]


def norm_params(node: dict) -> bytes:
    """The PRM image of one norm (flightc.records.NORM)."""
    return NORM.pack(node["eps_q"], node["gain"], node["beta_q"] if node["op"] is OpKind.LAYERNORM else None)


def kv_row_bytes(attention: dict, head_dim: int) -> int:
    """Bytes of one position of one KV head in memory (INT8, or INT4 packed two per byte)."""
    return head_dim * attention.get("kv_bits", 8) // 8


def rope_rows(max_len: int, head_dim: int, theta: float, scaling: RopeScaling = RopeScaling()) -> bytes:
    cos, sin = nm.rope_table(np.arange(max_len), head_dim, theta, scaling)
    return ROPE.pack(cos, sin)


def attention_projections(graph: GraphIR) -> dict[str, str]:
    """Linear layer -> 'q', 'k' or 'v' for the projections feeding attention (through RoPE if unfused)."""
    roles = {}
    for att in graph.nodes_of(OpKind.ATTENTION):
        for role, src in zip("qkv", graph.node(att)["inputs"]):
            while graph.node(src)["op"] is OpKind.ROPE:
                (src,) = graph.node(src)["inputs"]
            roles[src] = role
    return roles


def row_shares(graph: GraphIR, cfg: HardwareConfig, name: str, rows: int) -> list[tuple[int, int]]:
    """Output rows of a linear layer per core: Q/K/V follow the KV-head split (attention stays local), the others
    each core's share of the channels (each core streams its rows from its own channels)."""
    s = graph.spec
    parts = cfg.num_cores
    role = attention_projections(graph).get(name)
    if role is not None:
        per_head = s.head_dim * (s.kv_group if role == "q" else 1)
        return [(j0 * per_head, j1 * per_head) for j0, j1 in head_shares(cfg, s.num_kv_heads)]
    if cfg.mem_channels < parts:
        return split(rows, parts)
    return [(rows * c0 // cfg.mem_channels, rows * c1 // cfg.mem_channels) for c0, c1 in channel_shares(cfg)]


# the tiles a residual-adding layer is cut in at least on several cores: all but the last one's slice is stored
# under the next tile's stream; each keeps EXCHANGE_TILE_ROWS rows at least (a smaller slice is stored in fewer
# cycles than a tile's start costs: tiny's 64-row slices in four tiles took 2% (decode) to 4% (prefill) longer
# on the RTL)
EXCHANGE_TILES = 4
EXCHANGE_TILE_ROWS = 256


# the last tile of a gated MLP's second projection: this fraction of a core's rows (at least EXCHANGE_TILE_ROWS), so
# that the product of the tiles before it and, on several cores, its store go under its stream, and only the small
# last part of each stays between the streams and the down projection (LLaMA2-7B on u280: 1,408 of 11,008 rows on
# one core, their product about 100 cycles; an extra streamed tile costs about 230 cycles, so a quarter saved less,
# a sixteenth the same on three cores)
GATED_TAIL = 8


def gated_projections(graph: GraphIR) -> set[str]:
    """The second (in the graph's order) of each pair of linear layers of one input whose outputs only their product
    reads (a gated MLP's gate and up projections): lower.py makes that product a tile of the second at a time."""
    order = {n: i for i, n in enumerate(graph.order())}
    out = set()
    for mul in graph.nodes_of(OpKind.MUL):
        ins = graph.node(mul)["inputs"]
        if len(ins) == 2 and ins[0] != ins[1] and all(
                graph.node(i)["op"] is OpKind.LINEAR and graph.consumers(i) == [mul]
                and graph.node(i)["out_mode"] is OutMode.REQ_I8 for i in ins) and \
                graph.node(ins[0])["inputs"] == graph.node(ins[1])["inputs"]:
            out.add(max(ins, key=order.__getitem__))
    return out


def gated_tiles(rows: int, fit: int, step: int) -> list[int]:
    """Rows of each tile of a gated MLP's second projection: tiles of up to ``fit`` rows, the last about
    1 / GATED_TAIL of them in whole rounds of ``step`` rows (at least EXCHANGE_TILE_ROWS), where the rows allow one."""
    tail = max(EXCHANGE_TILE_ROWS, -(-(rows // GATED_TAIL) // step) * step)
    if tail > min(fit, rows // 2):
        return equal_tiles(rows, fit)
    return equal_tiles(rows - tail, fit) + [tail]


def exchange_tiles(rows: int) -> int:
    """Tiles a core's ``rows`` of a residual-adding layer are cut in at least, on several cores."""
    return max(1, min(EXCHANGE_TILES, rows // EXCHANGE_TILE_ROWS))


def norm_region(norm: str, core: int, cores: int) -> str:
    """The region of a norm's parameters that ``core`` loads (a copy per core)."""
    return f"{norm}.params" if cores == 1 else f"{norm}.params.c{core}"


def exchange_row_bytes(graph: GraphIR, cfg: HardwareConfig) -> int:
    """The widest row any tensor crossing cores can have: a linear's output, attention's, or the residual (rounded up
    to a buffer word, as a row a linear layer reads is laid out)."""
    s = graph.spec
    widths = [4 * s.hidden_size, s.num_heads * s.head_dim]
    for n in graph.linears():
        widths.append(graph.node(n)["qweight"].shape[0] * (1 if graph.node(n)["out_mode"].name == "REQ_I8" else 4))
    return -(-max(widths) // cfg.buffer_port_bytes) * cfg.buffer_port_bytes


@dataclass(frozen=True)
class ExchangePiece:
    """Bytes ``lo`` .. ``hi`` of each row of an exchanged tensor, on one channel from ``addr``, a row every
    ``stride`` bytes (:func:`exchange_pieces`)."""

    lo: int
    hi: int
    channel: int
    addr: int
    stride: int


def exchange_piece_bytes(cfg: HardwareConfig) -> int:
    """Bytes of a row an exchange piece holds at most: as many bursts as LD's instructions in flight
    (``LD_IN_FLIGHT``) need to keep all of a master's ``axi_outstanding`` bursts in flight, a load back of pieces
    running at line rate rather than at the memory's latency."""
    return cfg.stripe_bytes * max(1, cfg.axi_outstanding // LD_IN_FLIGHT)


def exchange_slot_bytes(cfg: HardwareConfig, row_bytes: int, rows: int) -> int:
    """Bytes an exchange slot takes on each channel: the most pieces a core's slice of a ``row_bytes`` row puts on
    one of its channels, ``rows`` rows each."""
    piece = exchange_piece_bytes(cfg)
    fewest = min(len(core_channels(cfg, c)) for c in range(cfg.num_cores))
    return -(-(-(-row_bytes // piece)) // fewest) * rows * piece


def exchange_pieces(cfg: HardwareConfig, slot: Region, core: int, own: tuple[int, int], span: tuple[int, int],
                    rows: int) -> list[ExchangePiece]:
    """Where bytes ``span`` of each of ``rows`` rows lie in exchange slot ``slot``, within ``core``'s own bytes
    ``own`` of each row: its slice is cut in pieces of :func:`exchange_piece_bytes` from its first byte, piece k on
    the core's k-th channel (round its channels), so each core stores into its own channels and the others load
    from all of them at once, no channel carrying more than a piece of each slice."""
    piece = exchange_piece_bytes(cfg)
    chans = core_channels(cfg, core)
    lo, hi = span
    if not own[0] <= lo <= hi <= own[1]:
        raise ValueError(f"exchange: bytes {lo}..{hi} are not within core {core}'s {own[0]}..{own[1]}")
    out = []
    while lo < hi:
        k, at = divmod(lo - own[0], piece)
        end = min(hi, lo + piece - at)
        addr = slot.addr + (k // len(chans)) * rows * piece + at
        if addr - slot.addr + (rows - 1) * piece + end - lo > slot.unit:
            raise UnsupportedError(f"exchange: {rows} row(s) of {own[1] - own[0]} bytes on core {core} exceed the "
                                   f"{slot.unit} bytes a channel of {slot.name} holds")
        out.append(ExchangePiece(lo, end, chans[k % len(chans)], addr, piece))
        lo = end
    return out


def _ahead(fn: Callable, items: Iterable, jobs: int) -> Iterator:
    """``fn`` of each item, in order, computed up to ``jobs`` items ahead in threads (numpy's array operations
    release the GIL), so no more than that many results are held at once."""
    if jobs <= 1:
        yield from map(fn, items)
        return
    with ThreadPoolExecutor(jobs) as pool:
        pending: deque = deque()
        for item in items:
            pending.append(pool.submit(fn, item))
            if len(pending) > jobs:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


def place(graph: GraphIR, cfg: HardwareConfig, max_len: int, max_prefill: int, images: bool = True,
          jobs: int = 1, release: bool = False, spool: bool = False) -> MemoryMap:
    """Memory map and static images for an integerized, fused graph.

    With several cores, every linear layer is split by output rows and attention by KV heads; a core's
    share lives on its own channels, and exchange regions carry activations between cores.
    ``images=False`` lays out the same regions without packing any bytes (programs-only compiles); ``jobs``
    packs that many layers' weights ahead in threads; ``release`` drops each layer's values once they are packed
    (:meth:`flightc.compress.quantize.QuantWeight.release`), so a 7B model's never sit beside all of its images;
    ``spool`` grows the images in temporary files (:mod:`.spool`), not in memory.
    """
    s = graph.spec
    if s.max_positions and max_len > s.max_positions:
        raise UnsupportedError(f"max_len {max_len} exceeds the model's max_position_embeddings {s.max_positions}")
    P = cfg.num_cores
    a = _Allocator(cfg, images, spool)
    # the weight tiles first, so each core's channels hold them at the same addresses with no gaps between
    tiles: dict[str, list[tuple[int, int, int, list[tuple[int, int, str, Region]], StreamPlan | None] | None]] = {}
    linears = graph.linears()

    def packed_rows(name: str) -> np.ndarray:
        qw = graph.node(name)["qweight"]
        return pack_weight(qw, qw.fmt.packed_columns(cfg, qw.shape[1]))

    packs = _ahead(packed_rows, linears, jobs) if images else None
    gated = a.map.gated = gated_projections(graph)
    for name in linears:
        node = graph.node(name)
        fmt = node["qweight"].fmt
        rows, k = node["qweight"].shape[0], fmt.packed_columns(cfg, node["qweight"].shape[1])  # (zero columns past K)
        packed = next(packs) if packs is not None else None
        if release and packed is not None:
            node["qweight"].release()
        row_bytes = packed.shape[1] if packed is not None else fmt.row_bytes(k)
        shares = row_shares(graph, cfg, name, rows)
        a.map.row_split[name] = shares
        tiles[name] = []
        for core, (c0, c1) in enumerate(shares):
            if c1 == c0:
                tiles[name].append(None)
                continue
            plan, why = stream_plan(cfg, core, fmt, k)
            if plan is None:
                a.map.buffered[name] = why
                tn = tile_rows(cfg, name, c1 - c0, row_bytes)
            else:
                # a layer adding into the residual, which the cores then exchange: its slice is stored a tile at a
                # time under the next tile's stream (lower.py), so it is cut in EXCHANGE_TILES at least
                least = exchange_tiles(c1 - c0) if P > 1 and node["out_mode"] is OutMode.REQ_ADD else 1
                tn = stream_tile_rows(cfg, c1 - c0, plan.groups, least)
            sizes = equal_tiles(c1 - c0, tn)
            if plan is not None and name in gated:
                sizes = gated_tiles(c1 - c0, tn, 2 * plan.groups)
            if plan is not None and name == graph.output:
                sizes = output_tile_rows(cfg, c1 - c0, tn, plan, row_bytes)
            placed = []
            for j in range(len(sizes)):
                r0 = c0 + sum(sizes[:j])
                r1 = r0 + sizes[j]
                tag = f"{name}.c{core}.t{len(placed)}" if P > 1 else f"{name}.t{len(placed)}"
                if plan is None:
                    region = a.striped(f"{tag}.w", RegionKind.WEIGHT, packed[r0:r1].tobytes() if packed is not None
                                       else (r1 - r0) * row_bytes, core_channels(cfg, core))
                else:
                    shape = plan.shape(cfg, fmt, r1 - r0, k)
                    data = stream_image(packed[r0:r1], shape) if packed is not None else shape.nbytes
                    chans = list(range(plan.channel, plan.channel + plan.stripe))
                    region = a.striped(f"{tag}.w", RegionKind.WEIGHT, data, chans, unit=shape.unit)
                placed.append((r0, r1, tag, region))
            tiles[name].append((row_bytes, k, tn, placed, plan))
    a.dynamic("io.ids", RegionKind.IO, 4 * max_len, channel=0)
    a.dynamic("io.logits", RegionKind.IO, 4 * s.vocab_size, channel=0)
    if P > 1:  # two alternating slots for the tensors cores exchange, two for those stored a tile at a time, each
        # on every channel (each core's pieces on its own: exchange_pieces)
        per_channel = exchange_slot_bytes(cfg, exchange_row_bytes(graph, cfg), max_prefill)
        for slot in range(4):
            a.on_every_channel(f"xchg.{slot}", RegionKind.IO, per_channel)
    for core, (j0, j1) in enumerate(head_shares(cfg, s.num_kv_heads)):
        for j in range(j0, j1):
            a.map.kv_owner[j] = core
    emb = graph.node("embed")
    vocab, row = emb["qembed"].q.shape
    block = 1 << max(0, (-(-vocab // cfg.mem_channels) - 1).bit_length())  # rows a channel holds: a power of two
    most = 1 << BY_NAME["LD"].placed("stripe_log2").field.hi_value  # the largest block a gather's LD can name
    if block > most:
        raise UnsupportedError(
            f"embed: {vocab:,} rows over {cfg.name}'s {cfg.mem_channels} memory channels need blocks of {block:,} "
            f"rows a channel, but an embedding gather (LD.stripe_log2) reaches blocks of {most:,} rows: at most "
            f"{most * cfg.mem_channels:,} rows on {cfg.mem_channels} channels. A vocabulary of at most that "
            f"compiles for {cfg.name}; for this one, use a card with more memory channels")
    a.striped("embed", RegionKind.TABLE, emb["qembed"].q.astype(np.int8).tobytes() if images else vocab * row,
              list(range(cfg.mem_channels)), unit=block * row, align=ALIGN)
    if "qpositions" in emb:
        if max_len + s.position_offset > len(emb["qpositions"].q):
            raise UnsupportedError(f"max_len {max_len} exceeds the learned positional table "
                                   f"({len(emb['qpositions'].q) - s.position_offset} positions)")
        a.static("positions", RegionKind.TABLE,
                 emb["qpositions"].q.astype(np.int8).tobytes() if images else emb["qpositions"].q.size)
    if any(graph.node(n)["op"] is OpKind.ROPE or graph.node(n).get("rope") for n in graph.order()):
        a.static("rope", RegionKind.TABLE, rope_rows(max_len, s.head_dim, s.rope_theta, s.rope_scaling))
    for name in graph.order():
        node = graph.node(name)
        op = node["op"]
        if op in (OpKind.RMSNORM, OpKind.LAYERNORM):
            # every core normalizes whole rows: each its own copy, striped over its channels like a tile's records,
            # so that loading it (under a streamed MV, or beside an exchange) takes a share of every master
            for core in range(P):
                a.striped(norm_region(name, core, P), RegionKind.PARAM, norm_params(node), core_channels(cfg, core))
        elif op is OpKind.ATTENTION:
            mult, shift = node["pv"]
            a.static(f"{name}.pv", RegionKind.PARAM,
                     nm.pack_requant(np.full(s.head_dim, mult), np.full(s.head_dim, shift)))
            kfmt = WeightFormat(node.get("kv_bits", 8), 16, 16)
            for j in range(s.num_kv_heads):  # each KV head's keys and values: stream images, or rows
                core = a.map.kv_owner[j]
                found, why = key_image(cfg, core, kfmt, s.head_dim, max_len, s.sliding_window)
                if found is None:
                    a.map.keys_loaded[name] = why
                    a.dynamic(f"{name}.k{j}", RegionKind.KV, max_len * kv_row_bytes(node, s.head_dim),
                              channel=a.channel_of(core))
                else:
                    plan, rows, shape = found
                    region = a.striped_dynamic(f"{name}.ks{j}", RegionKind.KV, shape.nbytes,
                                               list(range(plan.channel, plan.channel + plan.stripe)), shape.unit)
                    a.map.key_images[f"{name}.k{j}"] = KeyImage(region.name, kfmt, rows)
                found, why = value_image(cfg, core, node.get("kv_bits", 8), s.head_dim, max_len, s.sliding_window)
                if found is None:
                    a.map.values_loaded[name] = why
                    a.dynamic(f"{name}.v{j}", RegionKind.KV, max_len * kv_row_bytes(node, s.head_dim),
                              channel=a.channel_of(core))
                else:
                    plan, cols, shape = found
                    chans = list(range(plan.channel, plan.channel + plan.stripe))
                    region = a.striped_dynamic(f"{name}.vs{j}", RegionKind.KV, shape.nbytes, chans, shape.unit)
                    a.map.value_images[f"{name}.v{j}"] = ValueImages(region.name, shape.fmt, cols)
        elif op is OpKind.LINEAR:
            if "lut" in node:
                a.static(f"{name}.lut", RegionKind.PARAM, node["lut"].astype(np.int8).tobytes())
            records = nm.pack_requant(node["mult"], node["shift"], node["bias_q"])
            per_core: list[LinearTiles | None] = []
            for core, share in enumerate(tiles[name]):
                if share is None:
                    per_core.append(None)
                    continue
                row_bytes, k, tn, placed, plan = share
                # a streamed tile's records striped like its weights: their LD takes a share of every master the
                # stream reads rather than holding up one master's share of the stream (one channel otherwise)
                recs = [a.striped(f"{tag}.r", RegionKind.PARAM, data, list(range(plan.channel,
                                                                                 plan.channel + plan.stripe)))
                        if plan is not None else a.static(f"{tag}.r", RegionKind.PARAM, data, channel=a.channel_of(core))
                        for r0, r1, tag, _ in placed
                        for data in [records[r0 * nm.REQUANT_RECORD_BYTES: r1 * nm.REQUANT_RECORD_BYTES]]]
                c0, c1 = a.map.row_split[name][core]
                per_core.append(LinearTiles(c0, c1 - c0, k, row_bytes, max(r1 - r0 for r0, r1, *_ in placed),
                                            tuple(w for *_, w in placed), tuple(recs), plan,
                                            tuple(r0 - c0 for r0, *_ in placed)))
            a.map.linears[name] = per_core
    # dynamic regions were reserved among static ones; images stop at the last static byte
    return a.map
