"""What a memory channel sustains, as a fraction of its nominal peak: measured figures only, cited.

The performance model bounds a load or store by ``bytes / (channel peak x sustained fraction)``
(besides the DMA unit's own rate). A technology without a published measurement here is taken at
its nominal peak, and the docs say so.
"""
from __future__ import annotations

from flightc.config import HardwareConfig, MemoryKind

# Shuhai (Wang, Huang, Zhang, Alonso, FCCM 2020, doi:10.1109/FCCM48280.2020.00024) measured 425 GB/s of the
# Alveo U280's nominal 460 GB/s HBM2 with long sequential bursts on every pseudo-channel.
SUSTAINED_FRACTION: dict[MemoryKind, float] = {MemoryKind.HBM2: 425 / 460}


def channel_bytes_per_cycle(cfg: HardwareConfig) -> float:
    """Bytes one memory channel delivers per accelerator clock cycle, sustained."""
    return cfg.mem_channel_gbps * 1e3 / cfg.clock_mhz * SUSTAINED_FRACTION.get(cfg.mem_kind, 1.0)
