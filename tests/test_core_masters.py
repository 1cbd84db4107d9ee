"""Every core has memory masters of its own: a run of the kernel's (HardwareConfig.master_runs), its view of the
config (HardwareConfig.core), its own LD lanes and buffer banks, and the other cores' channels through its own."""
import pytest

from flightc.config import PRESETS, Buffer, CoreView
from flightc.errors import ConfigError
from flightc.hw.core import check_rtl_config, master_reach
from flightc.hw.kernel import Kernel
from flightc.isa.footprint import own_bank_place, own_banks
from flightc.sim.perf.load import load_cycles
from cards import U280_32
from test_memory_model import striped_load


def test_the_u280_preset_is_three_cores_of_8_masters_on_24_channels():
    u = PRESETS["u280"]
    assert u.master_runs == ((0, 8), (8, 8), (16, 8))
    views = [u.core(c) for c in range(3)]
    assert [v.core_channels for v in views] == [range(0, 8), range(8, 16), range(16, 24)]
    assert all(v.channels_per_master == 1 and v.mem_channels == 24 for v in views)  # every channel in reach
    assert Kernel.ports(u).members["axi"].dimensions == (24,)
    # core 1's master 3 (kernel port 11) carries its own PC 11 and the others' 3 and 19
    assert master_reach(u, 11) == [3, 11, 19]
    check_rtl_config(u)


def test_the_cards_32_masters_over_three_cores_run_16_8_and_8():
    assert U280_32.master_runs == ((0, 16), (16, 8), (24, 8))
    views = [U280_32.core(c) for c in range(3)]
    assert all(isinstance(v, CoreView) and v.num_cores == 1 for v in views)
    assert [(v.first_master, v.axi_masters, v.kernel_masters) for v in views] == [(0, 16, 32), (16, 8, 32),
                                                                                  (24, 8, 32)]
    assert [v.core_channels for v in views] == [range(0, 16), range(16, 24), range(24, 32)]
    assert all(v.channels_per_master == 1 and v.mem_channels == 32 for v in views)  # every channel in reach
    # a core's own channel through its own master; another core's through the master of its index modulo the run
    assert views[1].master_of(19) == 3 and views[1].master_of(3) == 3 and views[1].master_of(12) == 4
    assert views[0].master_of(20) == 4 and views[2].master_of(24) == 0
    assert Kernel.ports(U280_32).members["axi"].dimensions == (32,)  # a port per HBM pseudo-channel
    # core 1's master 3 (kernel port 19) carries its own PC 19 and the others' 3, 11 and 27
    assert master_reach(U280_32, 19) == [3, 11, 19, 27]
    # the cores' views differ, so each is generated apart (cached by its hash); one core's view is the config
    assert len({v.hash for v in views}) == 3
    one = U280_32.replace(num_cores=1).core(0)
    assert (one.axi_masters, one.first_master, one.core_channels) == (32, 0, range(32))


def test_a_core_needs_masters_of_its_own_and_the_rtl_runs_a_power_of_two_each():
    with pytest.raises(ConfigError, match="num_cores 3 exceeds axi_masters 2: every core has memory masters of its "
                                          r"own \(set axi_masters to at least 3\)"):
        PRESETS["hbm4"].replace(num_cores=3, mem_channels=2, axi_masters=2)
    five = PRESETS["hbm4"].replace(num_cores=2, mem_channels=5, axi_masters=5)
    assert five.master_runs == ((0, 2), (2, 3))  # near-even where powers of two do not add up
    assert [five.core(1).master_of(ch) for ch in range(5)] == [1, 2, 0, 1, 2]
    with pytest.raises(ConfigError, match="core 1's 3 masters from master 2: a core's masters must be a power of two"):
        check_rtl_config(five)
    check_rtl_config(U280_32)


def test_a_cores_striped_row_fills_its_own_banks_a_lane_a_master():
    """Core 1 of the u280's 32 channels as three cores: its banked PRM is a bank per master of its own eight, so a row
    striped over its channels lands a stripe unit per bank however many rounds it takes (each of its LD lanes moves
    its share, several times as fast as lane 0 alone); a stripe over another core's channels is lane 0's."""
    core = U280_32.core(1)
    sb = core.stripe_bytes
    period, offset = own_bank_place(core, 16)
    assert (period, offset) == (8 * sb, 0)
    row = 66048  # a 7B layer's requantization records on a core of eight masters: eight rounds and more

    def prm(buf_addr, channel):
        return striped_load(core, row, buf_addr, channel=channel, stripe=8).replace(buf=Buffer.PRM)  # (PRM banked)

    mine = prm(2 * period, 16)
    assert own_banks(core, mine)
    assert not own_banks(core, prm(2 * period, 0))  # core 0's channels
    assert not own_banks(U280_32.core(0), mine)  # not core 0's
    lane0 = load_cycles(core, prm(2 * period + sb, 16))  # a unit off
    assert 4 < lane0 / load_cycles(core, mine) <= 8
