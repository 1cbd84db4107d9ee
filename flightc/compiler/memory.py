"""Pass ``place``: lay out weights, parameters, KV cache and I/O across memory channels.

Weight tiles go round-robin over the channels so that consecutive loads hit different channels;
every static byte (weights, records, tables) goes into per-channel images, dynamic regions
(KV cache, token ids, logits) are reserved after them.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from enum import Enum

import numpy as np

from flightc import numerics as nm
from flightc.compress.packing import pack_weight
from flightc.config import Buffer, HardwareConfig
from flightc.errors import UnsupportedError
from flightc.ir.graph import GraphIR, OpKind

ALIGN = 64


class RegionKind(str, Enum):
    WEIGHT = "weight"
    PARAM = "param"
    TABLE = "table"
    KV = "kv"
    IO = "io"


@dataclass(frozen=True)
class Region:
    name: str
    kind: RegionKind
    channel: int
    addr: int
    nbytes: int

    def to_dict(self) -> dict:
        d = asdict(self)
        d["kind"] = self.kind.value
        return d


@dataclass(frozen=True)
class LinearTiles:
    """Where each row tile of a linear layer lives: packed rows and their requantization records."""

    rows: int
    k: int
    row_bytes: int
    tile_rows: int
    weights: tuple[Region, ...]
    records: tuple[Region, ...]


@dataclass
class MemoryMap:
    regions: dict[str, Region] = field(default_factory=dict)
    images: dict[int, bytearray] = field(default_factory=dict)  # static bytes per channel
    extent: dict[int, int] = field(default_factory=dict)  # bytes used per channel, dynamic regions included
    linears: dict[str, LinearTiles] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"regions": [r.to_dict() for r in self.regions.values()],
                "extent": {str(c): n for c, n in sorted(self.extent.items())}}

    def __getitem__(self, name: str) -> Region:
        return self.regions[name]


class _Allocator:
    def __init__(self, cfg: HardwareConfig):
        self.cfg = cfg
        self.map = MemoryMap(images={c: bytearray() for c in range(cfg.mem_channels)},
                             extent={c: 0 for c in range(cfg.mem_channels)})
        self.next_channel = 0

    def _place(self, name: str, kind: RegionKind, nbytes: int, channel: int | None) -> Region:
        if channel is None:
            channel = self.next_channel
            self.next_channel = (self.next_channel + 1) % self.cfg.mem_channels
        addr = -(-self.map.extent[channel] // ALIGN) * ALIGN
        if addr + nbytes > self.cfg.mem_channel_bytes:
            raise UnsupportedError(f"memory: {name} ({nbytes} bytes) does not fit channel {channel} "
                                   f"({self.cfg.mem_channel_mib} MiB) of preset {self.cfg.name!r}")
        region = Region(name, kind, channel, addr, nbytes)
        self.map.regions[name] = region
        self.map.extent[channel] = addr + nbytes
        return region

    def static(self, name: str, kind: RegionKind, data: bytes, channel: int | None = None) -> Region:
        region = self._place(name, kind, len(data), channel)
        image = self.map.images[region.channel]
        image.extend(b"\0" * (region.addr - len(image)))
        image.extend(data)
        return region

    def dynamic(self, name: str, kind: RegionKind, nbytes: int, channel: int | None = None) -> Region:
        return self._place(name, kind, nbytes, channel)


def tile_rows(cfg: HardwareConfig, layer: str, rows: int, row_bytes: int) -> int:
    """Rows per weight tile: as many as half the WGT buffer holds (double buffering), in whole chains."""
    slot = cfg.buffer_bytes(Buffer.WGT) // 2
    if row_bytes > slot:
        raise UnsupportedError(f"layer {layer}: one packed weight row ({row_bytes} bytes) exceeds half the WGT "
                               f"buffer ({slot} bytes) of preset {cfg.name!r}")
    fit = min(rows, slot // row_bytes, cfg.buffer_bytes(Buffer.PRM) // 8 // nm.REQUANT_RECORD_BYTES, 65535)
    if fit >= cfg.mpe_chains:
        fit -= fit % cfg.mpe_chains
    return fit


def norm_params(node: dict) -> bytes:
    return np.int64(node["eps_q"]).tobytes() + node["gain"].astype("<i4").tobytes()


def rope_rows(max_len: int, head_dim: int, theta: float) -> bytes:
    cos, sin = nm.rope_table(np.arange(max_len), head_dim, theta)
    return np.concatenate([cos, sin], axis=1).astype("<i2").tobytes()


def place(graph: GraphIR, cfg: HardwareConfig, max_len: int) -> MemoryMap:
    """Memory map and static images for an integerized, fused graph."""
    s = graph.spec
    if max_len > s.max_positions:
        raise UnsupportedError(f"max_len {max_len} exceeds the model's max_position_embeddings {s.max_positions}")
    a = _Allocator(cfg)
    a.dynamic("io.ids", RegionKind.IO, 4 * max_len, channel=0)
    a.dynamic("io.logits", RegionKind.IO, 4 * s.vocab_size, channel=0)
    emb = graph.node("embed")["qembed"].q
    a.static("embed", RegionKind.TABLE, emb.astype(np.int8).tobytes())
    a.static("rope", RegionKind.TABLE, rope_rows(max_len, s.head_dim, s.rope_theta))
    for name in graph.order():
        node = graph.node(name)
        op = node["op"]
        if op is OpKind.RMSNORM:
            a.static(f"{name}.params", RegionKind.PARAM, norm_params(node))
        elif op is OpKind.ATTENTION:
            mult, shift = node["pv"]
            a.static(f"{name}.pv", RegionKind.PARAM,
                     nm.pack_requant(np.full(s.head_dim, mult), np.full(s.head_dim, shift)))
            for j in range(s.num_kv_heads):
                for kv in ("k", "v"):
                    a.dynamic(f"{name}.{kv}{j}", RegionKind.KV, max_len * s.head_dim)
        elif op is OpKind.LINEAR:
            if "lut" in node:
                a.static(f"{name}.lut", RegionKind.PARAM, node["lut"].astype(np.int8).tobytes())
            packed = pack_weight(node["qweight"])
            rows, row_bytes = packed.shape
            k = node["qweight"].shape[1]
            tn = tile_rows(cfg, name, rows, row_bytes)
            records = nm.pack_requant(node["mult"], node["shift"])
            wts, recs = [], []
            for t, r0 in enumerate(range(0, rows, tn)):
                r1 = min(rows, r0 + tn)
                w = a.static(f"{name}.w{t}", RegionKind.WEIGHT, packed[r0:r1].tobytes())
                wts.append(w)
                recs.append(a.static(f"{name}.r{t}", RegionKind.PARAM,
                                     records[r0 * nm.REQUANT_RECORD_BYTES: r1 * nm.REQUANT_RECORD_BYTES],
                                     channel=w.channel))
            a.map.linears[name] = LinearTiles(rows, k, row_bytes, tn, tuple(wts), tuple(recs))
    # dynamic regions were reserved among static ones; images stop at the last static byte
    return a.map
