"""The layouts of the records in the on-chip buffers (PRM's parameters, ACC's softmax statistics), declared once.

The compiler writes them (flightc.compiler.memory), the functional simulator and the numerics read them,
the footprints size them, the RTL views them (hw/records.py derives an ``amaranth.lib.data`` layout from
these declarations) and the performance model times their reads. Pure numpy: nothing here imports Amaranth.

- :data:`REQUANT`: one per output row of an MPE instruction: INT32 multiplier, UINT8 shift, INT32 bias.
- :data:`NORM`: one per norm: INT64 epsilon, then an INT32 gain per column, then (LayerNorm) an INT32 bias
  per column.
- :data:`SOFTMAX_STATS`: one per row of a blocked softmax, in ACC: INT32 running maximum, UINT32 running sum.
- :data:`ROPE`: one row per position: head_dim INT16 Q1.14 values, the cosines of the head_dim/2 rotary
  angles, then their sines.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np


@dataclass(frozen=True)
class Field:
    """A little-endian integer at a byte offset of a record."""

    name: str
    offset: int
    dtype: str  # numpy dtype: "<i4", "u1", "<i8", "<i2"

    @property
    def nbytes(self) -> int:
        return np.dtype(self.dtype).itemsize

    @property
    def signed(self) -> bool:
        return np.dtype(self.dtype).kind == "i"

    @property
    def bits(self) -> tuple[int, int]:
        """[lo, hi) bit range within the record, bit 0 the lowest bit of byte 0."""
        return 8 * self.offset, 8 * (self.offset + self.nbytes)


@dataclass(frozen=True)
class Record:
    """A fixed-size record; the bytes no field covers are zero."""

    name: str
    size: int
    fields: tuple[Field, ...]

    def __post_init__(self) -> None:
        used = [0] * self.size
        for f in self.fields:
            if f.offset < 0 or f.offset + f.nbytes > self.size:
                raise AssertionError(f"record {self.name}: field {f.name} runs past its {self.size} bytes")
            for b in range(f.offset, f.offset + f.nbytes):
                used[b] += 1
        if max(used) > 1:
            raise AssertionError(f"record {self.name}: fields overlap")

    def field(self, name: str) -> Field:
        return next(f for f in self.fields if f.name == name)

    def pack(self, rows: int, **values) -> bytes:
        """``rows`` records, each field from an array (or scalar) of values; fields not given are zero."""
        unknown = set(values) - {f.name for f in self.fields}
        if unknown:
            raise KeyError(f"record {self.name}: no field {sorted(unknown)}")
        out = np.zeros((rows, self.size), np.uint8)
        for f in self.fields:
            if f.name in values:
                v = np.broadcast_to(np.asarray(values[f.name]), (rows,)).astype(f.dtype)
                out[:, f.offset:f.offset + f.nbytes] = v.view(np.uint8).reshape(rows, f.nbytes)
        return out.tobytes()

    @cached_property
    def dtype(self) -> np.dtype:
        """The record as a numpy structured type (its gaps unnamed)."""
        return np.dtype({"names": [f.name for f in self.fields], "formats": [f.dtype for f in self.fields],
                         "offsets": [f.offset for f in self.fields], "itemsize": self.size})

    def unpack(self, data: bytes | np.ndarray, rows: int) -> dict[str, np.ndarray]:
        """Each field of ``rows`` records, as int64 arrays."""
        if isinstance(data, np.ndarray):
            data = np.ascontiguousarray(data).reshape(-1).view(np.uint8)
        if len(data) < rows * self.size:
            raise ValueError(f"record {self.name}: {rows} records need {rows * self.size} bytes, not {len(data)}")
        rec = np.frombuffer(data, self.dtype, rows)
        return {f.name: rec[f.name].astype(np.int64) for f in self.fields}


REQUANT = Record("requantization record", 12, (Field("mult", 0, "<i4"), Field("shift", 4, "u1"),
                                               Field("bias", 8, "<i4")))
# a softmax row's statistics between the parts of a blocked softmax (MISC SOFTMAX.part, ISA 1.11), in ACC: the
# row's running maximum (INT32; INT32's least while no column was seen), then the running sum of its powers
SOFTMAX_STATS = Record("softmax row statistics", 8, (Field("max", 0, "<i4"), Field("sum", 4, "<u4")))


@dataclass(frozen=True)
class NormParams:
    """The PRM image of one norm: epsilon, then per-column gains, then (LayerNorm) per-column biases."""

    eps: Field = Field("eps", 0, "<i8")
    element: str = "<i4"  # gains and biases

    @property
    def element_bytes(self) -> int:
        return np.dtype(self.element).itemsize

    def nbytes(self, layernorm: bool, cols: int) -> int:
        return self.eps.nbytes + (2 if layernorm else 1) * self.element_bytes * cols

    def gain_offset(self, c):
        """Byte offset of column ``c``'s gain (an int, or an Amaranth value: the RTL computes addresses with it)."""
        return self.eps.nbytes + c * self.element_bytes

    def bias_offset(self, cols, c):
        return self.eps.nbytes + (cols + c) * self.element_bytes

    def pack(self, eps: int, gain: np.ndarray, bias: np.ndarray | None = None) -> bytes:
        data = np.asarray(eps, self.eps.dtype).tobytes() + np.asarray(gain).astype(self.element).tobytes()
        return data + (np.asarray(bias).astype(self.element).tobytes() if bias is not None else b"")

    def unpack(self, data: bytes | np.ndarray, cols: int, layernorm: bool) -> tuple[int, np.ndarray, np.ndarray | None]:
        """(epsilon, gains, biases or None) as int64."""
        raw = np.frombuffer(bytes(data), np.uint8)
        eps = int(raw[:self.eps.nbytes].view(self.eps.dtype)[0])
        lo, e = self.eps.nbytes, self.element_bytes
        gain = raw[lo:lo + e * cols].view(self.element).astype(np.int64)
        bias = raw[lo + e * cols:lo + 2 * e * cols].view(self.element).astype(np.int64) if layernorm else None
        return eps, gain, bias


@dataclass(frozen=True)
class RopeRows:
    """One row per position of a RoPE table: head_dim / 2 cosines, then head_dim / 2 sines."""

    entry: str = "<i2"  # Q1.14 (flightc.numerics.ROPE_FRAC_BITS)

    @property
    def entry_bytes(self) -> int:
        return np.dtype(self.entry).itemsize

    def row_bytes(self, head_dim):
        return head_dim * self.entry_bytes

    def cos_offset(self, j):
        """Byte offset in a row of angle ``j``'s cosine (an int, or an Amaranth value)."""
        return j * self.entry_bytes

    def sin_offset(self, head_dim, j):
        return ((head_dim >> 1) + j) * self.entry_bytes

    def pack(self, cos: np.ndarray, sin: np.ndarray) -> bytes:
        return np.concatenate([cos, sin], axis=1).astype(self.entry).tobytes()

    def unpack(self, data: bytes | np.ndarray, rows: int, head_dim: int) -> tuple[np.ndarray, np.ndarray]:
        tab = np.frombuffer(bytes(data), np.uint8)[: rows * self.row_bytes(head_dim)].view(self.entry)
        tab = tab.reshape(rows, head_dim)
        return tab[:, : head_dim // 2], tab[:, head_dim // 2:]


NORM = NormParams()
ROPE = RopeRows()
