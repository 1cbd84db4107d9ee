"""What a memory channel sustains, as a fraction of its nominal peak (measured figures only, cited), and who
holds each channel when.

The performance model charges every load and store its bytes at the channel's sustained rate,
``channel peak x sustained fraction``, in the first stretch of that channel's calendar free at or
after the instruction starts (:class:`ChannelCalendar`), so LD, ST and every core share a channel's
bandwidth, and the instruction ends no earlier than its bytes are through (besides the DMA unit's
own timing, :mod:`.load`). HBM2e takes the U280's HBM2 fraction (applied, not measured); a technology
without either is taken at its nominal peak, and the docs say so.
"""
from __future__ import annotations

import bisect

from flightc.config import HardwareConfig, MemoryKind

RATE_FRAC_BITS = 16  # fraction bits of the bytes per cycle the RTL's bench memory throttles a channel to

# Shuhai (Wang, Huang, Zhang, Alonso, FCCM 2020, doi:10.1109/FCCM48280.2020.00024) measured 425 GB/s of the
# Alveo U280's nominal 460 GB/s HBM2 with long sequential bursts on every pseudo-channel.
# HBM2e (VHK158) has no published sustained figure here: the U280's fraction is applied to it, and the docs say so.
SUSTAINED_FRACTION: dict[MemoryKind, float] = {MemoryKind.HBM2: 425 / 460, MemoryKind.HBM2E: 425 / 460}


def channel_bytes_per_cycle(cfg: HardwareConfig) -> float:
    """Bytes one memory channel delivers per accelerator clock cycle, sustained."""
    return cfg.mem_channel_gbps * 1e3 / cfg.clock_mhz * SUSTAINED_FRACTION.get(cfg.mem_kind, 1.0)


def channel_rate_q(cfg: HardwareConfig) -> int:
    """:func:`channel_bytes_per_cycle` in the fixed point the RTL's bench memory throttles with (2^-16 bytes)."""
    return int(channel_bytes_per_cycle(cfg) * (1 << RATE_FRAC_BITS))


def throttled(cfg: HardwareConfig) -> bool:
    """Whether a channel sustains less than a beat a cycle of its master (the bench memory then throttles)."""
    return channel_rate_q(cfg) < cfg.axi_data_bytes << RATE_FRAC_BITS


class ChannelCalendar:
    """Per memory channel, the stretches of cycles its bandwidth is charged to a transfer: disjoint, each as long
    as its bytes take at the sustained rate, so no window of cycles carries more than the channel sustains."""

    def __init__(self, cfg: HardwareConfig):
        self.rate = channel_bytes_per_cycle(cfg)
        self.busy: dict[int, list[tuple[int, int]]] = {}  # channel -> sorted [start, end) stretches

    def cycles(self, nbytes: int) -> int:
        return int(-(-nbytes // self.rate))

    def reserve(self, channel: int, earliest: int, nbytes: int) -> tuple[int, int]:
        """Charge ``nbytes`` to ``channel`` in its first free stretch from ``earliest`` on; its [start, end)."""
        need = self.cycles(nbytes)
        taken = self.busy.setdefault(channel, [])
        i = bisect.bisect_right(taken, (earliest, float("inf")))
        start = earliest
        if i and taken[i - 1][1] > start:
            start = taken[i - 1][1]
        while i < len(taken) and taken[i][0] < start + need:
            start = max(start, taken[i][1])
            i += 1
        taken.insert(i, (start, start + need))
        return start, start + need
