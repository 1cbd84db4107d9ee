"""Weight formats the dequantizer accepts: bit width, N:M sparsity and group size along K."""
from __future__ import annotations

import math
from dataclasses import dataclass

from flightc.config import HardwareConfig
from flightc.errors import UnsupportedError
from flightc.isa.table import SPARSITY_NM, WEIGHT_BITS, Sparsity, WeightBits, group_scale_max

__all__ = ["GROUP_MAX", "GROUP_MIN", "WeightFormat", "group_scale_max", "q_range"]

GROUP_MIN, GROUP_MAX = 16, 4096  # quantization groups along K: powers of two in this range


def q_range(bits: int) -> tuple[int, int]:
    """Range of the stored b-bit value (8-bit is symmetric, so that -q never overflows)."""
    return (-127, 127) if bits == 8 else (-(1 << (bits - 1)), (1 << (bits - 1)) - 1)


def pattern_supported(cfg: HardwareConfig, n: int, m: int) -> bool:
    """Whether ``cfg`` runs N:M sparse (or, with n == m, dense) weights: what its compiler accepts and its lane
    groups build."""
    return cfg.supports_2_4 if (n, m) == (2, 4) else m == cfg.sparse_m and n in cfg.sparse_n


@dataclass(frozen=True)
class WeightFormat:
    """How one linear layer's weights are stored: ``bits`` wide, ``n`` of every ``m`` kept, groups of ``group``."""

    bits: int = 8
    n: int = 16
    m: int = 16
    group: int = 0  # 0: one scale per output row only

    @property
    def sparse(self) -> bool:
        return self.n != self.m

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
        return 0 if not self.sparse else (self.m - 1).bit_length()

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
        return (nnz * self.bits + 7) // 8, (nnz * self.index_bits + 7) // 8, k // self.group if self.group else 0

    def row_bytes(self, k: int) -> int:
        return sum(self.row_parts(k))

    def label(self) -> str:
        s = f"W{self.bits}"
        if self.group:
            s += f" g{self.group}"
        if self.sparse:
            s += f" {self.n}:{self.m}"
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
        if self.group and (self.group & (self.group - 1) or self.group < GROUP_MIN or self.group > GROUP_MAX):
            raise UnsupportedError(f"layer {layer}: group size {self.group} must be a power of two in "
                                   f"{GROUP_MIN}..{GROUP_MAX}")
        if self.group and self.bits == 8:
            raise UnsupportedError(f"layer {layer}: 8-bit weights take no group scales (use group 0)")
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
    def parse(cls, text: str) -> "WeightFormat":
        """'w4g128s8:16', 'w8', 'w3g64s2:4' -> WeightFormat (the CLI's spelling)."""
        import re

        m = re.fullmatch(r"w(\d)(?:g(\d+))?(?:s(\d+):(\d+))?", text.strip().lower())
        if not m:
            raise UnsupportedError(f"weight format {text!r}: expected e.g. w8, w4g128, w4g128s8:16, w2g64s2:4")
        bits, group, n, mm = m.groups()
        return cls(bits=int(bits), group=int(group or 0), n=int(n or 16), m=int(mm or 16))
