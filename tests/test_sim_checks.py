"""The functional simulator refuses broken programs instead of computing something."""
import numpy as np
import pytest

from conftest import PROMPT
from flightc.errors import ProgramError
from flightc.isa.codec import decode_program, encode_program, make
from flightc.isa.table import Opcode, SysOp, Unit
from flightc.sim.functional import Machine


def _machine(c):
    m = Machine.from_bundle(c.bundle)
    ids = c.bundle.region("io.ids")
    m.write_hbm(ids["channel"], ids["addr"], np.asarray(PROMPT, "<i4").tobytes())
    return m


def _prefill(c):
    return decode_program(c.bundle.program("prefill", len(PROMPT))[0])


def test_the_compiled_program_passes(tiny_w8):
    counters = _machine(tiny_w8).run(encode_program(_prefill(tiny_w8)))
    assert counters.instructions["MM"] > 0 and counters.macs > 0


def test_a_missing_token_is_caught_as_a_race(tiny_w8):
    prog = _prefill(tiny_w8)
    # the first streamed MV waits for the LD of its requantization records; drop that wait and the matching release
    i = next(k for k, ins in enumerate(prog) if ins.opcode is Opcode.MV and ins.w_stream and ins.wait >> Unit.LD & 1)
    j = max(k for k in range(i) if prog[k].opcode is Opcode.LD and prog[k].release >> Unit.MPE & 1)
    prog[i] = prog[i].replace(wait=prog[i].wait & ~(1 << Unit.LD))
    prog[j] = prog[j].replace(release=prog[j].release & ~(1 << Unit.MPE))
    with pytest.raises(ProgramError, match="before the write by core0.LD has been released"):
        _machine(tiny_w8).run(encode_program(prog))


def test_a_wait_nobody_releases_deadlocks(tiny_w8):
    prog = _prefill(tiny_w8)
    prog.insert(0, make(Opcode.MISC, wait=1 << Unit.ST, op=0, rows=0, cols=0))
    with pytest.raises(ProgramError, match="deadlock: .*SFU at instruction 0 .* waits for tokens from \\['ST'\\]"):
        _machine(tiny_w8).run(encode_program(prog))


def test_a_release_nobody_waits_for_is_unbalanced(tiny_w8):
    prog = _prefill(tiny_w8)
    prog[-1] = make(Opcode.SYS, op=SysOp.END, release=1 << Unit.LD)
    with pytest.raises(ProgramError, match="unbalanced tokens.*SYS->LD"):
        _machine(tiny_w8).run(encode_program(prog))


def test_out_of_buffer_access_and_missing_end(tiny_w8):
    m = _machine(tiny_w8)
    bad = make(Opcode.LD, buf=0, buf_addr=(1 << 24) - 4, channel=0, hbm_addr=0, rows=1, row_bytes=64, hbm_stride=64,
               buf_stride=64)
    with pytest.raises(ProgramError, match="beyond the buffer"):
        m.run(encode_program([bad, make(Opcode.SYS, op=SysOp.END)]))
    with pytest.raises(ProgramError, match="does not end with SYS END"):
        m.run(encode_program([make(Opcode.SYS, op=SysOp.NOP)]))


def _alone(cfg, *instrs):
    m = Machine(cfg, {0: 4096})
    m.run(encode_program(list(instrs) + [make("SYS", op=SysOp.END)]))


def test_a_result_partly_overlapping_an_operand_is_refused():
    from flightc.config import Buffer, PRESETS
    from flightc.isa.table import MiscOp

    cfg = PRESETS["tiny"]
    deq = dict(op=MiscOp.DEQ, rows=1, cols=8, src_buf=Buffer.ACT, src_addr=0, src_stride=8, dst_buf=Buffer.ACT,
               dst_stride=32, imm=1, shift=0)
    _alone(cfg, make("MISC", dst_addr=64, **deq))  # apart: fine
    with pytest.raises(ProgramError, match="overlaps an operand"):
        _alone(cfg, make("MISC", dst_addr=4, **deq))  # INT32 results over the INT8 source
    emul = dict(op=MiscOp.EMUL, rows=2, cols=8, src_buf=Buffer.ACT, src_addr=0, src2_addr=64, src_stride=16,
                dst_buf=Buffer.ACT, imm=1, shift=0)
    _alone(cfg, make("MISC", dst_addr=0, dst_stride=16, **emul))  # exactly in place: fine


def test_sparse_positions_must_ascend_within_a_block():
    from flightc.compress.formats import WeightFormat
    from flightc.config import Buffer, PRESETS

    cfg = PRESETS["tiny"]
    fmt = WeightFormat(8, 2, 16)
    m = Machine(cfg, {0: 4096})
    row = bytearray(fmt.row_bytes(16))
    row[2] = 0x35  # positions 5 then 3: not ascending
    m.buf = m.cores[0]
    m.cores[0][Buffer.WGT][:len(row)] = np.frombuffer(bytes(row), np.uint8)
    mv = make("MV", n=1, k=16, w_buf=Buffer.WGT, w_stride=len(row), w_bits=fmt.bits_code, sparsity=fmt.sparsity,
              out_addr=0)
    with pytest.raises(ProgramError, match="distinct and ascending"):
        m.run(encode_program([mv, make("SYS", op=SysOp.END)]))



def _tiny_machine():
    from flightc.config import PRESETS

    return Machine(PRESETS["tiny"], {0: 1 << 16, 1: 1 << 16})


def _ld(addr: int, wait: int = 0, release: int = 0, channel: int = 0, buf_addr: int = 0):
    from flightc.config import Buffer

    return make(Opcode.LD, buf=Buffer.ACT, buf_addr=buf_addr, channel=channel, hbm_addr=addr, rows=1, row_bytes=64,
                hbm_stride=64, buf_stride=64, wait=wait, release=release)


def _st(addr: int, wait: int = 0, release: int = 0, channel: int = 0):
    from flightc.config import Buffer

    return make(Opcode.ST, buf=Buffer.ACT, buf_addr=0, channel=channel, hbm_addr=addr, rows=1, row_bytes=64,
                hbm_stride=64, buf_stride=64, wait=wait, release=release)


# a SYS instruction that does nothing but hand the LD unit a token: the LD after it runs once the ST has, in the
# simulator's order, without any token chain from the ST
NUDGE = make(Opcode.SYS, op=SysOp.NOP, release=1 << Unit.LD)
END = make(Opcode.SYS, op=SysOp.END)


def test_memory_accesses_racing_without_a_token_are_refused():
    # LD fills ACT; ST stores it (ordered by a token); a second LD reads the stored bytes back
    ordered = [_ld(0, release=1 << Unit.ST), _st(4096, wait=1 << Unit.LD, release=1 << Unit.LD),
               _ld(4096, wait=1 << Unit.ST, buf_addr=64), END]
    _tiny_machine().run(encode_program(ordered))
    racing = [_ld(0, release=1 << Unit.ST), _st(4096, wait=1 << Unit.LD), NUDGE,
              _ld(4096, wait=1 << Unit.SYS, buf_addr=64), END]
    with pytest.raises(ProgramError, match="reads channel 0 bytes \\[4096, 4160\\) racing an unordered access by "
                                           "core0.ST"):
        _tiny_machine().run(encode_program(racing))
    elsewhere = [_ld(0, release=1 << Unit.ST), _st(4096, wait=1 << Unit.LD), NUDGE,
                 _ld(4096, wait=1 << Unit.SYS, buf_addr=64, channel=1), END]
    _tiny_machine().run(encode_program(elsewhere))  # the same addresses on another channel: no conflict


def test_overwriting_bytes_another_unit_may_still_read_is_refused():
    # ST reads ACT[0:64] after the LD that wrote it; a second LD overwrites ACT[0:64] with no token from the ST
    prog = [_ld(0, release=1 << Unit.ST), _st(4096, wait=1 << Unit.LD), NUDGE, _ld(128, wait=1 << Unit.SYS), END]
    with pytest.raises(ProgramError, match="overwrites ACT \\[0, 64\\) while core0.ST may still read it"):
        _tiny_machine().run(encode_program(prog))


def test_many_ordered_accesses_pass_and_a_race_after_them_is_found():
    prog = []
    for i in range(100):  # LD and ST take turns, each ordered after the other
        prog += [_ld(64 * i, wait=(1 << Unit.ST) if i else 0, release=1 << Unit.ST),
                 _st(8192 + 64 * i, wait=1 << Unit.LD, release=(1 << Unit.LD) if i < 99 else 0)]
    _tiny_machine().run(encode_program(prog + [END]))
    racing = prog + [NUDGE, _ld(8192 + 64 * 99, wait=1 << Unit.SYS, buf_addr=64), END]
    with pytest.raises(ProgramError, match="racing an unordered access"):
        _tiny_machine().run(encode_program(racing))


def test_the_checker_forgets_only_what_every_unit_has_seen():
    """Memory accesses are forgotten now and then, once every agent's clock has passed them; one that some agent
    has not seen is still there to catch that agent's conflicting access, however many came after it."""
    from flightc.config import PRESETS
    from flightc.isa.footprint import Access
    from flightc.sim.hazards import HazardChecker

    def at(addr):
        return Access(("hbm", 0), addr, 1, 64, 64)

    for seen in (False, True):
        hz = HazardChecker(PRESETS["tiny"])
        hz.access(Unit.MPE, "stream", [at(0)], [])  # a streamed read the ST unit never hears of
        for i in range(1, 300):  # loads every unit is told of at once
            hz.access(Unit.LD, f"load {i}", [at(4096 + 64 * i)], [])
            for u in Unit:
                hz.merge(u, hz.snapshot(Unit.LD))
        assert len(hz.hbm_reads[0]) < 100  # most loads forgotten
        if seen:
            hz.merge(Unit.ST, hz.snapshot(Unit.MPE))
            hz.access(Unit.ST, "last", [], [at(0)])
        else:
            with pytest.raises(ProgramError, match="last: writes channel 0 bytes \\[0, 64\\) racing an unordered "
                                                   "access by core0.MPE"):
                hz.access(Unit.ST, "last", [], [at(0)])


def test_a_tile_read_ahead_of_its_waits_must_not_be_written(tiny_w8):
    """MV.w_early (ISA 1.9) lets a streamed tile's readers start before the MV's waits: the compiler sets it on every
    weight tile, and fsim refuses a program that writes a byte of such a tile (here an ST ordered before the MV by a
    token, which would be enough without w_early), and one that sets it on an MV that streams nothing."""
    from flightc.config import Buffer
    from flightc.isa.footprint import stream_spans

    prog = _prefill(tiny_w8)
    streamed = [ins for ins in prog if ins.opcode is Opcode.MV and ins.w_stream]
    assert streamed and all(ins.w_early for ins in streamed)  # a layer's weights: nothing writes them
    i = next(k for k, ins in enumerate(prog) if ins.opcode is Opcode.MV and ins.w_early)
    ch, addr, _ = stream_spans(tiny_w8.config, prog[i])[0]
    store = make(Opcode.ST, buf=Buffer.ACT, buf_addr=0, channel=ch, hbm_addr=addr + 4, rows=1, row_bytes=4,
                 hbm_stride=4, buf_stride=4, release=1 << Unit.MPE)
    prog[i] = prog[i].replace(wait=prog[i].wait | (1 << Unit.ST))
    written = [store] + prog
    with pytest.raises(ProgramError, match=f"MV.w_early says nothing writes its tile, but .*ST.* writes memory channel "
                                           f"{ch} bytes {addr + 4}..{addr + 7}"):
        _machine(tiny_w8).run(encode_program(written))
    written = [ins.replace(w_early=0) if ins.opcode is Opcode.MV else ins for ins in written]  # waits alone: legal
    assert _machine(tiny_w8).run(encode_program(written)).instructions["MV"] == len(streamed)
    decode = decode_program(tiny_w8.bundle.program("decode", len(PROMPT) + 1)[0])
    j = next(k for k, ins in enumerate(decode) if ins.opcode is Opcode.MV and not ins.w_stream)
    decode[j] = decode[j].replace(w_early=1)
    with pytest.raises(ProgramError, match="MV.w_early .* needs w_stream"):
        _machine(tiny_w8).run(encode_program(decode))


def test_a_program_checked_against_another_ones_plan_keeps_its_own_early_tiles(tiny_w8):
    """fsim checks a program whose tokens match one it planned before (any machine's) against that plan. An MV that
    sets or clears MV.w_early is re-checked even where its footprint is the plan's: a store into the tile is legal
    once the MV clears it and refused once it sets it, whichever ran first."""
    from flightc.config import Buffer
    from flightc.isa.footprint import footprint, stream_spans
    from flightc.sim import functional

    prog = _prefill(tiny_w8)
    i = next(k for k, ins in enumerate(prog) if ins.opcode is Opcode.MV and ins.w_early)
    ch, addr, _ = stream_spans(tiny_w8.config, prog[i])[0]
    logits = tiny_w8.bundle.region("io.logits")

    readers = {k for k, ins in enumerate(prog) if ins.opcode is Opcode.MV and ins.w_early
               and any(a.space == ("hbm", ch) and a.lo <= addr < a.hi for a in footprint(ins, tiny_w8.config)[0])}

    def program(store_at: tuple[int, int], early: int) -> bytes:
        """A store first, then the prefill with the MVs reading the tile's first bytes (the first waits for the
        store; the MPE runs them in order) reading ahead or not."""
        store = make(Opcode.ST, buf=Buffer.ACT, buf_addr=0, channel=store_at[0], hbm_addr=store_at[1], rows=1,
                     row_bytes=4, hbm_stride=4, buf_stride=4, release=1 << Unit.MPE)
        body = [ins.replace(w_early=early) if k in readers else ins for k, ins in enumerate(prog)]
        body[i] = body[i].replace(wait=body[i].wait | (1 << Unit.ST))
        return encode_program([store] + body)

    tile, elsewhere = (ch, addr), (logits["channel"], logits["addr"])
    assert tile != elsewhere
    functional._PLANS.clear()  # the plans every machine shares: this one's first program makes the plan
    _machine(tiny_w8).run(program(elsewhere, 1))  # the plan: the tile's readers read ahead, nothing writes it
    assert _machine(tiny_w8).run(program(tile, 0)).instructions["MV"]  # the tile written, its readers wait
    functional._PLANS.clear()
    _machine(tiny_w8).run(program(tile, 0))  # the plan: the tile written, its readers wait
    with pytest.raises(ProgramError, match="MV.w_early says nothing writes its tile"):
        _machine(tiny_w8).run(program(tile, 1))  # the same bytes touched, but read ahead of the store
