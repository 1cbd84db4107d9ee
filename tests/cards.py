"""Card configurations the tests share beside the presets."""
from __future__ import annotations

from flightc.config import PRESETS

# The u280's three cores on all 32 of its HBM pseudo-channels, 16 / 8 / 8 masters and 16 SFU lanes a core: the
# preset until the evening of 2026-12-07, when SLR0's LUTs took it to 24 channels (docs/dse.md). The tests of the
# memory system and of uneven core splits worked out by hand for 32 channels run on it (`flightc config u280 --set
# mem_channels=32 --set axi_masters=32 --set sfu_lanes=16` writes it).
U280_32 = PRESETS["u280"].replace(mem_channels=32, axi_masters=32, sfu_lanes=16)
