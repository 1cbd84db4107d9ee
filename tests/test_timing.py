"""The timing estimate (hw/timing.py): logic levels on a mapped netlist, counted by hand on small netlists (LUT
chains, carry chains, a DSP48E2's stages cut by its registers), and on yosys' mapping of the SFU's divider and of
the u280's lane group and feed, sparse DSP chain, LD lanes, MPE output stage, MPE, SFU, buffers, control and
ST, and of a weight-stationary prefill array."""
from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from flightc.dse.clock import RECORD
from flightc.hw.timing import cell_kind, deepest_path, deepest_paths, max_levels, paths_over

# yosys' mappings of the units below, each with a hash of the Verilog, the script and yosys' release it maps, and
# of the generator's sources it was made from (hw/synth.py ``mapped``): a unit whose sources are unchanged since the
# record was written is not generated again (tens of seconds at the u280's widths), one whose Verilog is unchanged
# not synthesized again (minutes); one that changed is, and its entry replaced — commit the record with the
# change. ``test_a_radix4_step...`` checks the record against a fresh synthesis; the search's clocks come from it
# (flightc/dse/clock.py).


def levels_of(mapping: dict) -> dict[str, float]:
    return {kind: p["levels"] for kind, p in mapping["paths"].items()}


def unit_levels(folder, name: str, cfg, make, blackbox: str | None = None) -> dict:
    """yosys' mapping of one generated unit alone, ``make()`` -> (the unit, ports past its signature's) at ``cfg``
    (``blackbox``: modules left out): each module kind's deepest path in levels. The record's entry is read back
    without generating the Verilog while the generator's sources, ``cfg`` and this file are those it was made from
    (hw/synth.py ``source_key``)."""
    from flightc.hw.hierarchy import component_ports, to_verilog
    from flightc.hw.synth import mapped

    def verilog() -> str:
        unit, extra_ports = make()
        return to_verilog(unit, name, ports=[*(s for s, _ in component_ports(unit)), *extra_ports])

    source = f"{name} {cfg.hash} {hashlib.sha256(Path(__file__).read_bytes()).hexdigest()}"
    return levels_of(mapped(folder, name, verilog, RECORD, blackbox=blackbox, source=source))


class Netlist:
    """A flattened ``write_json`` module built cell by cell; nets are integers."""

    def __init__(self):
        self.cells, self.next = {}, 10

    def net(self) -> int:
        self.next += 1
        return self.next

    def cell(self, name: str, kind: str, ins: dict, outs: dict, **params) -> None:
        conns = {p: ([b] if isinstance(b, int) else b) for p, b in {**ins, **outs}.items()}
        self.cells[name] = {"type": kind, "parameters": {k: format(v, "032b") if isinstance(v, int) else v
                                                          for k, v in params.items()},
                            "port_directions": {**{p: "input" for p in ins}, **{p: "output" for p in outs}},
                            "connections": conns}

    def ff(self, name: str, d: int | None = None) -> int:
        q = self.net()
        self.cell(name, "FDRE", {"D": d if d is not None else self.net()}, {"Q": q})
        return q

    def lut(self, name: str, *ins: int) -> int:
        o = self.net()
        self.cell(name, f"LUT{len(ins)}", {f"I{i}": b for i, b in enumerate(ins)}, {"O": o})
        return o

    def module(self) -> dict:
        return {"cells": self.cells, "ports": {}}


def test_levels_count_luts_carries_and_multiplexers():
    n = Netlist()
    a, b = n.ff("core.sfu.a"), n.ff("core.sfu.b")
    x = n.lut("core.sfu.l0", a, b)
    y = n.lut("core.sfu.l1", x)
    ci = y
    for k in range(4):  # a 16-bit carry chain: entered from a LUT, then carry to carry
        co = n.net()
        n.cell(f"core.sfu.c{k}", "CARRY4", {"CI": ci, "S": [n.lut(f"core.sfu.s{k}", a)]}, {"CO": co})
        ci = co
    m = n.net()
    n.cell("core.sfu.mux", "MUXF7", {"I0": ci, "I1": a, "S": b}, {"O": m})
    n.ff("core.sfu.out", n.lut("core.sfu.l2", m))
    n.ff("core.st.out", n.lut("core.st.l", a))
    p = deepest_path(n.module())
    # LUT, LUT, the first CARRY4 from CI, three more, the MUXF7, a LUT
    assert p.levels == pytest.approx(1 + 1 + 4 * 0.05 + 0.25 + 1) and p.luts == 3
    assert p.cells[0] in ("core.sfu.a", "core.sfu.b") and p.cells[-1] == "core.sfu.out"
    kinds = deepest_paths(n.module())
    assert kinds["core.sfu"].levels == pytest.approx(p.levels) and kinds["core.st"].levels == 1


def test_paths_over_a_budget_name_each_register_too_deep_deepest_first():
    """Every register whose deepest path is over the budget, each with that path, not only the worst one."""
    n = Netlist()
    a = n.ff("a")
    x = a
    for k in range(9):  # nine LUTs into "deep", three into "mid", one into "shallow"
        x = n.lut(f"d{k}", x)
        if k == 2:
            n.ff("mid", x)
    n.ff("deep", x)
    n.ff("shallow", n.lut("s", a))
    over = paths_over(n.module(), 2)
    assert [(p.cells[-1], p.levels, p.luts) for p in over] == [("deep", 9, 9), ("mid", 3, 3)]
    assert over[0].cells[0] == "a" and paths_over(n.module(), 9) == []
    assert deepest_path(n.module()).levels == 9


def test_a_dsp48e2_adds_the_stages_its_registers_leave_open():
    def through(**regs) -> float:
        n = Netlist()
        a, pcin = n.ff("a"), n.ff("pcin")
        p = n.net()
        n.cell("dsp", "DSP48E2", {"A": [a], "PCIN": [pcin]}, {"P": [p]}, **regs)
        n.ff("out", n.lut("l", p))
        return deepest_path(n.module()).levels

    open_all = dict(AREG=0, BREG=0, DREG=0, ADREG=0, MREG=0, PREG=0)
    assert through(**open_all) == pytest.approx(1.5 + 4 + 2 + 1)  # pre-adder, multiplier, ALU, then the LUT
    assert through(**{**open_all, "MREG": 1}) == pytest.approx(1.5 + 4)  # A ends at the M register
    assert through(**{**open_all, "PREG": 1}) == pytest.approx(1.5 + 4 + 2)  # A to the P register
    assert through(**{**open_all, "AREG": 1, "PREG": 1}) == pytest.approx(2)  # PCIN through the ALU
    assert through() == pytest.approx(2)  # the defaults, every register on: PCIN through the ALU to P


def test_budget_and_kinds():
    assert (max_levels(225), max_levels(300), max_levels(200)) == (7, 5, 8)
    assert cell_kind("core.mpe.stream.group12.cas0_dsp3") == "core.mpe.stream.group"
    assert cell_kind("core.sfu.div.$abc$1$lut$aiger.o1") == "core.sfu.div" and cell_kind("$auto$ff.cc:1") == "top"
    assert cell_kind("$flatten\\core.sfu.div.$abc$1") == "core.sfu.div"  # yosys' name for a flattened cell


def test_a_recorded_mapping_is_read_back_by_its_generators_sources_or_its_verilog(tmp_path):
    """hw/synth.py ``mapped``: an entry made from the same generator sources is read back without generating the
    Verilog; one whose sources differ but whose Verilog is the same is read back once the Verilog is generated, and
    its entry takes the new sources' key (one whose Verilog differs is synthesized: the tests below)."""
    import json

    from flightc.hw.synth import mapped, mapping_key, source_key

    record, text = tmp_path / "record.json", "module div(input a, output b); assign b = a; endmodule\n"
    entry = {"cells": {"LUT": 1}, "paths": {"top": {"levels": 1.0}}}
    record.write_text(json.dumps({"div": {"key": mapping_key("div", text), "source": source_key("div", "v1"),
                                          **entry}}))

    def never() -> str:
        raise AssertionError("the Verilog was generated although its sources are those recorded")

    assert mapped(tmp_path, "div", never, record, source="v1") == entry
    made = []
    assert mapped(tmp_path, "div", lambda: made.append(1) or text, record, source="v2") == entry and made == [1]
    assert json.loads(record.read_text())["div"]["source"] == source_key("div", "v2")
    assert mapped(tmp_path, "div", never, record, source="v2") == entry
    assert source_key("div", "v2") != source_key("div", "v2", blackbox="x*")


@pytest.mark.synth
def test_a_radix4_step_a_cycle_fits_the_budget_and_two_chained_do_not(tmp_path):
    """yosys' mapping of the SFU's divider (16 bits): a restoring step a cycle and a radix-4 step a cycle (two
    quotient bits: the remainder against d, 2d and 3d at once; the u280's ``sfu_div_step_bits``) fit 225 MHz's
    budget; two radix-4 steps chained into the cycle do not (measured 2026-12-05: 4.5, 5.55 and 8.35 levels)."""
    from amaranth.back import verilog

    from flightc.hw.arith import Divider
    from flightc.hw.synth import cell_counts, mapped, path_depths, run_yosys

    levels = {}
    for step in (1, 2, 4):
        d = Divider(16, step)
        text = verilog.convert(d, name="div", ports=[d.start, d.numerator, d.denominator, d.bits, d.quotient, d.done],
                               emit_src=False)  # (no source paths: the same Verilog in every checkout)
        stat = run_yosys(tmp_path / str(step), "div", text, netlist=True)  # always synthesized: seconds
        paths = path_depths(tmp_path / str(step), "div")
        levels[step] = max(p["levels"] for p in paths.values())
        # the record of yosys' mappings the other tests read is what yosys maps: written by ``mapped`` on a
        # change, read back when nothing changed
        fresh = {"cells": cell_counts(stat), "paths": paths}
        assert mapped(tmp_path / f"again{step}", "div", text, RECORD, f"div-{step}") == fresh
    assert levels[1] <= max_levels(225) and levels[2] <= max_levels(225), levels
    assert levels[4] > max_levels(225) and levels[4] >= levels[2] + 1.5, levels


@pytest.mark.synth
def test_the_u280s_lane_group_feed_and_chain_are_within_225_mhzs_depth(tmp_path):
    """yosys' mapping of the u280 preset's lane group, lane feed (its slots, beat, activation copy and weight
    formats) and sparse DSP chain, and of the lane group of a u280 storing W4 8:16 as bitmasks (`sparse_bits` [4],
    docs/compression.md: 6.5 levels measured 2026-12-07): every path between registers within the levels 225 MHz
    allows (hw/latency_rules.py places the group's and the chain's pipeline registers; the feed decodes its beat's
    last chunk from the format instead of multiplying)."""
    from flightc.compress.stream import SEGMENT
    from flightc.config import PRESETS, SparseEncoding
    from flightc.hw.hierarchy import component_ports, to_verilog
    from flightc.hw.lane_feed import LaneFeed
    from flightc.hw.lane_group import LaneGroup, config_kinds
    from flightc.hw.synth import CHAIN_TOP, chain_verilog, mapped

    cfg = PRESETS["u280"]
    assert cfg.clock_mhz == 225
    words = cfg.lane_k_max // cfg.lane_slots
    masked = cfg.replace(sparse_n=(8, 16), sparse_encodings=(SparseEncoding.BITMASK,), sparse_bits=(4,))
    units = {"lane_group": LaneGroup(cfg.lane_slots, words, cfg.acc_bits, config_kinds(cfg)),
             "lane_feed": LaneFeed(cfg.lane_slots, cfg.axi_data_bytes, words, 1 << 15, config_kinds(cfg)),
             "lane_group_w4_bitmask": LaneGroup(cfg.lane_slots, words, cfg.acc_bits, config_kinds(masked))}
    for name, unit in units.items():
        m = mapped(tmp_path / name, name, to_verilog(unit, name, ports=[s for s, _ in component_ports(unit)]), RECORD)
        assert max(levels_of(m).values()) <= max_levels(cfg.clock_mhz), (name, levels_of(m))
        if name.startswith("lane_group"):  # the cascades and segment multipliers: a DSP48E2 a slot, two a segment
            assert m["cells"]["DSP48E2"] == cfg.lane_slots + 2 * cfg.lane_slots // SEGMENT
    m = mapped(tmp_path / "chain", CHAIN_TOP, chain_verilog(cfg), RECORD)
    assert max(levels_of(m).values()) <= max_levels(cfg.clock_mhz), ("chain", levels_of(m))
    assert m["cells"]["DSP48E2"] == cfg.chain_length  # a lane's product, two tokens packed


@pytest.mark.synth
def test_the_prefill_arrays_chains_take_a_few_luts_a_dsp_within_225_mhzs_depth(tmp_path):
    """yosys' mapping of a weight-stationary prefill array (hw/prefill_array.py) of 8 chains of 32 DSP48E2s and 256
    token pairs: every path within the levels 225 MHz allows, a DSP48E2 a column and two a chain (its multipliers),
    a block RAM a chain (its partial sums), and at most 6 LUTs a column's DSP (measured 2026-12-07: 1,195 LUTs, 4.7
    a DSP; a lane group takes 39 a slot, docs/performance.md)."""
    from flightc.config import PRESETS
    from flightc.hw.hierarchy import component_ports, to_verilog
    from flightc.hw.prefill_array import WeightArray
    from flightc.hw.synth import mapped

    cfg = PRESETS["u280"]
    chains, length = 8, 32
    unit = WeightArray(chains, length, 256)
    m = mapped(tmp_path / "prefill_array", "prefill_array",
               to_verilog(unit, "prefill_array", ports=[s for s, _ in component_ports(unit)]), RECORD)
    assert max(levels_of(m).values()) <= max_levels(cfg.clock_mhz), levels_of(m)
    assert m["cells"]["DSP48E2"] == chains * (length + 2)
    assert m["cells"]["BRAM36"] == chains
    assert m["cells"]["LUT"] <= 6 * chains * length, m["cells"]


@pytest.mark.synth
def test_the_u280s_ld_lanes_are_within_225_mhzs_depth(tmp_path):
    """yosys' mapping of the u280 preset's LD lanes, the first (every kind of row, through every master: the beat's
    master selected and rotated onto the buffer's lanes) and one past it: every path between registers within 7
    levels (hw/latency_rules.py LD_*: the issuer's steps, each burst sized the cycle before it is asked for; the
    receiver's descriptor at a register)."""
    from amaranth.hdl import Signal

    from flightc.config import PRESETS
    from flightc.hw.axi import AXI_ADDR_BITS
    from flightc.hw.load import LoadLane

    cfg = PRESETS["u280"]
    for lane in (0, 1):
        def make(lane=lane):
            bases = [Signal(AXI_ADDR_BITS, name=f"base{c}") for c in range(cfg.mem_channels)]  # kernel arguments
            return LoadLane(cfg, bases, lane), bases

        name = f"ld_lane{lane}"
        levels = unit_levels(tmp_path / name, name, cfg, make)
        assert max(levels.values()) <= max_levels(cfg.clock_mhz), (name, levels)


@pytest.mark.synth
def test_the_u280s_mpe_output_stage_is_within_225_mhzs_depth(tmp_path):
    """yosys' mapping of the u280 preset's MPE output stage (hw/stream_out.py: the requantization's biased sum and
    residual sum registered, its queues' counts selected by LUT6s from outcomes worked out beside the cycle's
    decisions): every path between registers within 7 levels (measured 2026-12-05: 7.0, 36.9 before its pipeline)."""
    from flightc.config import PRESETS
    from flightc.hw.stream_out import StreamOut

    cfg = PRESETS["u280"]
    levels = unit_levels(tmp_path, "stream_out", cfg, lambda: (StreamOut(cfg), ()))
    assert max(levels.values()) <= max_levels(cfg.clock_mhz), levels


@pytest.mark.synth
def test_the_u280s_sfu_is_within_225_mhzs_depth(tmp_path):
    """yosys' mapping of the u280 preset's SFU at 4 lanes (its other fields the preset's; a lane's pipeline, the
    trees' stages, the readers and the FSM are the same at 48): every path between registers within 7 levels
    (hw/sfu.py: the reader's decisions and the FSM's reads from registers, the divider started from registers, the
    FSM one-hot; hw/sfu_lanes.py: a register a tree level; measured 2026-12-05: 7.0 levels, 52.5 before)."""
    from flightc.config import PRESETS
    from flightc.hw.sfu import Sfu

    cfg = PRESETS["u280"].replace(sfu_lanes=4)
    levels = unit_levels(tmp_path, "sfu", cfg, lambda: (Sfu(cfg), ()))
    assert max(levels.values()) <= max_levels(cfg.clock_mhz), levels


@pytest.mark.synth
def test_the_u280s_buffers_are_within_225_mhzs_depth(tmp_path):
    """yosys' mapping of the u280 preset's buffer bank (hw/buffers.py: each port's read decoded by LUT6s, buffer
    then bank; the round robins decided pairwise from registers, a LUT6 a grant; the grants' ORs LUT6 trees), at four
    masters of the card's 32 channels and small buffers (the same arbiters, decodes and trees, a fifth of the synthesis: the
    whole bank measured 6.0 levels, 9.5 before, with ``bench/synth_unit.py flightc.hw.core:buffer_bank``): every path
    between registers within 7 levels."""
    from flightc.config import PRESETS
    from flightc.hw.core import buffer_bank

    cfg = PRESETS["u280"].replace(num_cores=1, axi_masters=4, mem_channels=32, act_buffer_kib=16, wgt_buffer_kib=16,
                                  acc_buffer_kib=16, prm_buffer_kib=64, kv_buffer_kib=16)
    levels = unit_levels(tmp_path, "buffer_bank", cfg, lambda: (buffer_bank(cfg), ()))
    assert max(levels.values()) <= max_levels(cfg.clock_mhz), levels


@pytest.mark.synth
def test_the_u280s_control_is_within_225_mhzs_depth(tmp_path):
    """yosys' mapping of the u280 preset's control with its instruction fetcher (hw/control.py: the beats' class
    widths, units and ends worked out as they enter the fetcher's ring, the burst sized the cycle before it is asked
    for, the FIFO's room and the head's words left as registers, the queue's room for the instruction a LUT6 tree):
    every path between registers within 7 levels (measured 2026-12-05: 7.0; the fetcher alone 14.6 before)."""
    from flightc.config import PRESETS
    from flightc.hw.control import ControlAlone

    cfg = PRESETS["u280"]
    levels = unit_levels(tmp_path, "control", cfg, lambda: (ControlAlone(cfg), ()))
    assert max(levels.values()) <= max_levels(cfg.clock_mhz), levels


@pytest.mark.synth
def test_the_u280s_st_is_within_225_mhzs_depth(tmp_path):
    """yosys' mapping of the u280 preset's ST with its channels' bases as ports (hw/dma.py ``StoreAlone``; its rows
    placed ahead in hw/store_rows.py, each row saying whether its master is the row before's; a writer's ``finish``
    worked out for each of the two masters' room and chosen by it last): every path between registers within 7
    levels (measured 2026-12-05: 7.0, 31.1 before its rows were placed ahead)."""
    from flightc.config import PRESETS
    from flightc.hw.dma import StoreAlone

    cfg = PRESETS["u280"]
    levels = unit_levels(tmp_path, "st", cfg, lambda: (StoreAlone(cfg), ()))
    assert max(levels.values()) <= max_levels(cfg.clock_mhz), levels


@pytest.mark.synth
def test_the_u280s_mpe_is_within_225_mhzs_depth(tmp_path):
    """yosys' mapping of the u280 preset's MPE at one master of all 32 channels, the deepest reader (its sequencer,
    operand fetch, tile plans, streamed-MV control, a stream reader and result queue, and its output stages; its
    chains, lane groups and feeds left out: the tests above map them): every path between registers within 7 levels (hw/mpe.py: the fetch's addresses and
    its slots' requests from registers, a slot's end a LUT of its requests left; hw/tile_plan.py: the plan ahead of
    the MV; hw/stream.py: whether a reader's beats are left, a register; measured 2026-12-05: 38.9 levels before)."""
    from amaranth.hdl import Signal

    from flightc.config import PRESETS
    from flightc.hw.axi import AXI_ADDR_BITS
    from flightc.hw.mpe import Mpe
    from flightc.hw.synth import SEPARATED

    cfg = PRESETS["u280"].replace(num_cores=1, axi_masters=1, mem_channels=32)  # a master over the card's 32 channels

    def make():
        bases = [Signal(AXI_ADDR_BITS, name=f"base{c}") for c in range(cfg.mem_channels)]  # kernel arguments
        unit = Mpe(cfg, bases)
        return unit, [*bases, unit.head_ok, unit.head_in]

    left_out = " ".join(f"{module}*" for module, kind in SEPARATED.items() if kind.startswith("core.mpe."))
    levels = unit_levels(tmp_path, "mpe", cfg, make, left_out)
    assert max(levels.values()) <= max_levels(cfg.clock_mhz), levels


def test_luts_are_shared_among_the_registers_they_feed():
    """bench/synth_unit.py --luts: a LUT counts to the registers its output reaches through combinational cells,
    every lane's register of a name together, shared evenly among different names; an output counts to its port."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("synth_unit", Path(__file__).parents[1] / "bench" / "synth_unit.py")
    synth_unit = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(synth_unit)
    n = Netlist()
    a = n.ff("src")
    lanes = n.lut("lanes", a)  # two lanes' registers of one name
    q0, q1 = n.ff("r0", lanes), n.ff("r1", lanes)
    split = n.lut("split", a)  # two names
    p, q = n.ff("r2", split), n.ff("r3", split)
    deep = n.lut("deep", a)  # through a carry and a LUT
    carry = n.net()
    n.cell("carry", "CARRY4", {"S": deep}, {"O": carry})
    acc = n.ff("r4", n.lut("after", carry))
    out, pad = n.lut("out", a), n.net()
    n.cell("obuf", "OBUF", {"I": out}, {"O": pad})
    module = {"cells": n.cells, "ports": {"y": {"direction": "output", "bits": [pad]}}}
    names = {a: "src[0]", q0: "x0[0]", q1: "x1[0]", p: "p[0]", q: "q[0]", acc: "acc[0]"}
    assert synth_unit.luts_by_register(module, names) == {"x": 1.0, "p": 0.5, "q": 0.5, "acc": 2.0, "port y": 1.0}
