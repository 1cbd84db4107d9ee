"""Weight formats the dequantizer accepts: bit width, N:M sparsity (and how its kept positions are stored) and group
size along K."""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Callable, Collection

from flightc.config import HardwareConfig, SparseEncoding
from flightc.errors import UnsupportedError
from flightc.isa.table import SPARSITY_NM, WEIGHT_BITS, Sparsity, WeightBits, group_scale_max

__all__ = ["GROUP_MAX", "GROUP_MIN", "SparseEncoding", "WeightFormat", "group_scale_max", "q_range"]

GROUP_MIN, GROUP_MAX = 16, 4096  # quantization groups along K: powers of two in this range


def q_range(bits: int) -> tuple[int, int]:
    """Range of the stored b-bit value (8-bit is symmetric, so that -q never overflows)."""
    return (-127, 127) if bits == 8 else (-(1 << (bits - 1)), (1 << (bits - 1)) - 1)


def pattern_supported(cfg: HardwareConfig, n: int, m: int, bits: int | None = None) -> bool:
    """Whether ``cfg`` runs N:M sparse (or, with n == m, dense) weights (of ``bits``, if given: N:M is stored at the
    widths of ``cfg.sparse_bits`` alone): what its compiler accepts and its lane groups build."""
    if n != m and bits is not None and bits not in cfg.sparse_bits:
        return False
    return cfg.supports_2_4 if (n, m) == (2, 4) else m == cfg.sparse_m and n in cfg.sparse_n


# the grammar's letter after N:M for each encoding (none: POSITIONS in a compiled format, the compiler's choice in a
# compression plan); the order is the decoders' simplicity, which breaks ties between encodings of equal bytes
ENCODING_LETTERS = {SparseEncoding.POSITIONS: "p", SparseEncoding.BITMASK: "m", SparseEncoding.RANK: "r"}


@dataclass(frozen=True)
class WeightFormat:
    """How one linear layer's weights are stored: ``bits`` wide, ``n`` of every ``m`` kept (their positions stored as
    ``encoding`` says; None in a compression plan: the compiler picks per layer), groups of ``group``."""

    bits: int = 8
    n: int = 16
    m: int = 16
    group: int = 0  # 0: one scale per output row only
    encoding: SparseEncoding | None = SparseEncoding.POSITIONS

    def __post_init__(self) -> None:
        if not self.sparse and self.encoding is not SparseEncoding.POSITIONS:
            if self.encoding is not None:
                raise UnsupportedError(f"{self.label()}: dense weights store no positions (encoding "
                                       f"{self.encoding.name}); only a sparse N:M format takes one")
            object.__setattr__(self, "encoding", SparseEncoding.POSITIONS)

    @property
    def sparse(self) -> bool:
        return self.n != self.m

    @property
    def chosen(self) -> SparseEncoding:
        """The encoding, which a compiled format always has (a plan's None is resolved per layer first)."""
        if self.encoding is None:
            raise ValueError(f"{self.label()}: the encoding of its sparse positions is not chosen yet (the compiler "
                             f"picks it per layer: flightc.compiler.memory.chosen_format)")
        return self.encoding

    def with_encoding(self, encoding: SparseEncoding) -> "WeightFormat":
        return dataclasses.replace(self, encoding=encoding if self.sparse else SparseEncoding.POSITIONS)

    def stored_for(self, cfg: HardwareConfig) -> "WeightFormat":
        """The format a layer compressed to this one is stored in on ``cfg``: itself, or, where ``cfg`` decodes no
        N:M of this pattern (the ISA names it), the dense format of its width and groups, the pruned weights stored
        as zeros: the same products, so every backend's result is the same bits, at dense bytes
        (flightc.compiler.compress says so as it compiles)."""
        if (self.sparse and (self.n, self.m) in SPARSITY_NM.values()
                and not pattern_supported(cfg, self.n, self.m, self.bits)):
            return WeightFormat(self.bits, group=self.group)
        return self

    @property
    def sparsity(self) -> Sparsity:
        for code, nm in SPARSITY_NM.items():
            if nm == (self.n, self.m) or (code is Sparsity.DENSE and self.n == self.m):
                return code
        raise UnsupportedError(f"no ISA code for {self.n}:{self.m} sparsity")

    @property
    def bits_code(self) -> WeightBits:
        return {b: c for c, b in WEIGHT_BITS.items()}[self.bits]

    @property
    def group_log2(self) -> int:
        return 0 if self.group == 0 else self.group.bit_length() - 1

    @property
    def index_bits(self) -> int:
        """Bits of one position in a block of M (what POSITIONS stores per kept weight)."""
        return 0 if not self.sparse else (self.m - 1).bit_length()

    @property
    def block_meta_bits(self) -> int:
        """Bits that say which positions one block of M keeps, in this format's encoding (0 when dense)."""
        if not self.sparse:
            return 0
        return {SparseEncoding.POSITIONS: self.n * self.index_bits, SparseEncoding.BITMASK: self.m,
                SparseEncoding.RANK: (math.comb(self.m, self.n) - 1).bit_length()}[self.chosen]

    @property
    def stored_bits(self) -> float:
        """Bits stored per weight (values, positions and group multipliers) for K whole blocks and groups: what a
        weight costs in memory bandwidth."""
        return (self.n * self.bits + self.block_meta_bits) / self.m + (8 / self.group if self.group else 0)

    def nnz(self, k: int) -> int:
        return k * self.n // self.m

    @property
    def unit(self) -> int:
        """Columns of the smallest whole piece of a row: an N:M block and a group (both powers of two)."""
        return max(self.m, self.group)

    def whole(self, k: int) -> int:
        """``k`` rounded up to whole blocks and groups: the columns a row of length k is quantized over (the last
        group partial, the columns past k zero)."""
        return -(-k // self.unit) * self.unit

    def packed_columns(self, cfg: HardwareConfig, k: int) -> int:
        """Columns of a packed row of a K-long weight for ``cfg``: K rounded up to whole blocks, groups and lane-group
        chunks (``lane_slots`` columns), so any K streams. The added columns hold zero weights (and zero
        multipliers), so the padded product is the true one whatever activations the MACs meet there."""
        step = math.lcm(self.unit, cfg.lane_slots)
        return -(-k // step) * step

    def row_parts(self, k: int) -> tuple[int, int, int]:
        """Packed bytes of one weight row of length k (whole blocks and groups): (values, sparse indices, group
        multipliers), in that order."""
        nnz = self.nnz(k)
        meta = (k // self.m) * self.block_meta_bits
        return (nnz * self.bits + 7) // 8, (meta + 7) // 8, k // self.group if self.group else 0

    def row_bytes(self, k: int) -> int:
        return sum(self.row_parts(k))

    def label(self) -> str:
        s = f"W{self.bits}"
        if self.group:
            s += f" g{self.group}"
        if self.sparse:
            s += f" {self.n}:{self.m}"
            if self.encoding not in (None, SparseEncoding.POSITIONS):
                s += ENCODING_LETTERS[self.encoding]
        return s

    def check(self, cfg: HardwareConfig, layer: str, k: int) -> None:
        """Raise naming the layer if the hardware cannot run this format for reduction length k."""
        if self.bits not in cfg.weight_bits:
            raise UnsupportedError(f"layer {layer}: {self.bits}-bit weights; preset {cfg.name!r} supports "
                                   f"{list(cfg.weight_bits)}")
        if (self.n, self.m) == (2, 4):
            if not cfg.supports_2_4:
                raise UnsupportedError(f"layer {layer}: 2:4 sparsity is not supported by preset {cfg.name!r}")
        elif not pattern_supported(cfg, self.n, self.m):
            raise UnsupportedError(f"layer {layer}: {self.n}:{self.m} sparsity; preset {cfg.name!r} supports "
                                   f"N:{cfg.sparse_m} with N in {list(cfg.sparse_n)} and 2:4")
        if self.sparse and self.bits not in cfg.sparse_bits:
            raise UnsupportedError(f"layer {layer}: {self.bits}-bit weights with {self.n}:{self.m} sparsity; preset "
                                   f"{cfg.name!r} stores N:M at {list(cfg.sparse_bits)} bits (sparse_bits): plan "
                                   f"this layer dense or at one of those widths")
        if self.group and (self.group & (self.group - 1) or self.group < GROUP_MIN or self.group > GROUP_MAX):
            raise UnsupportedError(f"layer {layer}: group size {self.group} must be a power of two in "
                                   f"{GROUP_MIN}..{GROUP_MAX}")
        if self.group and self.bits == 8:
            raise UnsupportedError(f"layer {layer}: 8-bit weights take no group scales (use group 0)")
        if self.sparse and self.encoding is not None and self.encoding not in cfg.sparse_encodings:
            raise UnsupportedError(f"layer {layer}: sparse positions as {self.encoding.name}; preset {cfg.name!r} "
                                   f"decodes {[e.name for e in cfg.sparse_encodings]} (sparse_encodings)")
        if k > cfg.max_reduction_length:
            raise UnsupportedError(f"layer {layer}: K = {k} exceeds {cfg.max_reduction_length}, the longest "
                                   f"dot product the {cfg.acc_bits}-bit accumulators hold exactly")

    def byte_shares(self) -> tuple[float, float, float]:
        """Fractions of a packed row's bytes that are values, sparse positions and group multipliers (for a K that
        is a whole number of blocks and groups, as every compiled layer's is)."""
        k = 1 << 16  # a multiple of every block and group size
        parts = self.row_parts(k)
        return tuple(p / sum(parts) for p in parts)

    @classmethod
    def from_label(cls, label: str) -> "WeightFormat":
        """The inverse of :meth:`label` ('W4 g128 8:16' -> WeightFormat(4, 8, 16, 128)), as bundle manifests
        record formats."""
        words = label.lower().split()
        text = words[0] + "".join(w if w.startswith("g") else "s" + w for w in words[1:])
        return cls.parse(text)

    @classmethod
    def parse(cls, text: str, unspecified: SparseEncoding | None = SparseEncoding.POSITIONS) -> "WeightFormat":
        """'w4g128s8:16', 'w8', 'w3g64s2:4', 'w4g128s8:16m' -> WeightFormat (the CLI's spelling). A letter after
        N:M names the encoding of the kept positions (p: positions, m: bitmask, r: rank); without one it is
        ``unspecified`` (None: the compiler's choice)."""
        import re

        m = re.fullmatch(r"w(\d)(?:g(\d+))?(?:s(\d+):(\d+)([a-z])?)?", text.strip().lower())
        letters = {v: k for k, v in ENCODING_LETTERS.items()}
        if not m or (m.group(5) is not None and m.group(5) not in letters):
            raise UnsupportedError(f"weight format {text!r}: expected e.g. w8, w4g128, w4g128s8:16, w2g64s2:4, with "
                                   f"an optional encoding of the sparse positions after N:M (p: positions, m: "
                                   f"bitmask, r: rank; w4g128s8:16m)")
        bits, group, n, mm, letter = m.groups()
        encoding = letters[letter] if letter else unspecified
        fmt = cls(bits=int(bits), group=int(group or 0), n=int(n or 16), m=int(mm or 16),
                  encoding=encoding if n else SparseEncoding.POSITIONS)
        return fmt


def cheapest_encoding(fmt: WeightFormat, cfg: HardwareConfig, k: int,
                      cost: Callable[[WeightFormat], float] | None = None,
                      among: Collection[SparseEncoding] | None = None) -> WeightFormat:
    """``fmt`` with the encoding of ``cfg``'s (of those ``among``, where given) whose ``cost`` is least (default: the
    bytes of a packed row of K columns, K padded as the compiler packs it; the compiler passes what a row takes as it
    lays the layer out); a tie goes to the simpler decoder, in ENCODING_LETTERS' order. A sparse format that names
    its encoding, and a dense one, come back as they are."""
    if not fmt.sparse or fmt.encoding is not None:
        return fmt
    columns = fmt.with_encoding(SparseEncoding.POSITIONS).packed_columns(cfg, k)
    allowed = cfg.sparse_encodings if among is None else among
    options = [fmt.with_encoding(e) for e in ENCODING_LETTERS if e in cfg.sparse_encodings and e in allowed]
    return min(options, key=cost or (lambda f: f.row_bytes(columns)))
