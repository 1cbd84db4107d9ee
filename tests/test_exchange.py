"""Several cores: how a model is split across them, and how they exchange the tensors each holds a slice of."""
import numpy as np

from cards import U280_32
from conftest import MAX_LEN, PROMPT
from flightc.compiler.memory import channel_shares, head_shares, region_spans, stream_plan
from flightc.compress.formats import WeightFormat
from flightc.config import PRESETS, Buffer
from flightc.isa.codec import iter_program
from flightc.isa.footprint import buf, footprint
from flightc.isa.table import MiscOp, Opcode, SysOp
from flightc.reference.integer import IntegerModel, greedy
from flightc.runtime.session import Session


def test_32_masters_as_three_cores_stream_from_runs_of_16_8_and_8():
    """32 masters (the u280's every channel) do not split in three equal powers of two: the first core takes 16, the
    others 8 each, and the KV heads and the linear layers' rows follow the channels, so every core streams every
    layer at line rate. The u280 preset's 24 split 8 / 8 / 8, the 32 KV heads 10 / 11 / 11."""
    u280 = PRESETS["u280"]
    assert channel_shares(u280) == [(0, 8), (8, 16), (16, 24)]
    assert head_shares(u280, 32) == [(0, 10), (10, 21), (21, 32)]
    fmt = WeightFormat.parse("w4g128s8:16")
    plans = [stream_plan(u280, core, fmt, 4096)[0] for core in range(3)]
    assert [(p.channel, p.stripe, p.groups) for p in plans] == [(0, 8, 8), (8, 8, 8), (16, 8, 8)]
    cfg = U280_32
    assert channel_shares(cfg) == [(0, 16), (16, 24), (24, 32)]
    assert head_shares(cfg, 32) == [(0, 16), (16, 24), (24, 32)]
    plans = [stream_plan(cfg, core, fmt, 4096)[0] for core in range(3)]
    assert [(p.channel, p.stripe, p.groups) for p in plans] == [(0, 16, 16), (16, 8, 8), (24, 8, 8)]
    # six masters: two a core; five over two cores: near-even shares, and the stream plan says why the second
    # core's three cannot stream
    six = PRESETS["hbm4"].replace(num_cores=3, mem_channels=6, axi_masters=6)
    assert channel_shares(six) == [(0, 2), (2, 4), (4, 6)]
    five = PRESETS["hbm4"].replace(num_cores=2, mem_channels=5, axi_masters=5)
    assert channel_shares(five) == [(0, 2), (2, 5)]
    plan, why = stream_plan(five, 1, fmt, 4096)
    assert plan is None and "power of two of whole masters" in why


def _exchanges(prog, slots):
    """Per barrier: the slot its exchange uses (that of the LDs just after it), the STs into that slot since the
    barrier before, and those LDs."""

    def slot_of(i):
        return next((n for n, spans in slots.items() for ch, a, size in spans
                     if i.channel == ch and a <= i.hbm_addr < a + size), None)

    out, last = [], -1
    for k, ins in enumerate(prog):
        if ins.opcode is Opcode.SYS and ins.op == SysOp.BARRIER:
            after = []
            for i in prog[k + 1:]:
                if i.opcode is not Opcode.LD or slot_of(i) is None:
                    break
                after.append(i)
            slot = slot_of(after[0]) if after else None
            before = [(j, i) for j, i in enumerate(prog[last + 1:k], last + 1)
                      if i.opcode is Opcode.ST and slot_of(i) == slot]
            out.append((k, slot, before, after))
            last = k
    return out


def test_an_exchange_loads_only_the_other_cores_slices_and_the_loads_it_holds_up_go_first():
    """Each core stores its slice of an exchanged tensor, meets the others and loads back only their slices (its
    own is in place); a layer adding into the residual stores its slice a tile at a time, each under the next
    tile's stream, into slots of their own; the loads the next op needs that do not depend on the exchange (a
    linear layer's records, a norm's parameters) are in the program before the barrier, so LD (in order) brings
    them while the cores meet. Decode on three cores stays exact."""
    from flightc.compiler.pipeline import compile_model
    from flightc.compress.plan import CompressionPlan
    from flightc.models.seeded import random_model

    # the u280's 32 channels as three cores, 1,024 rows: the first core's 512 of o_proj and down_proj in two
    # tiles, the others' 256 in one
    model = random_model("llama", 3, num_hidden_layers=2, hidden_size=1024, intermediate_size=1024,
                         num_attention_heads=8, num_key_value_heads=4)
    c = compile_model(model, U280_32, CompressionPlan.parse("w4g32"), max_len=MAX_LEN,
                      max_prefill=len(PROMPT), prefill_lengths=[len(PROMPT)])
    regions = {r["name"]: r for r in c.bundle.manifest.memory_map["regions"]}
    xchg = {f"xchg.{s}": regions[f"xchg.{s}"] for s in range(4)}
    adding = [n for n in c.fused.linears() if c.fused.node(n)["out_mode"].name == "REQ_ADD"]
    assert [[len(t.weights) for t in c.memory.linears[n]] for n in adding] == [[2, 1, 1]] * len(adding)
    progs = [list(iter_program(p)) for p in c.bundle.program("decode", len(PROMPT) + 1)]
    assert len(progs) == 3
    seen = stored = 0
    kinds: dict[str, list[int]] = {"MV": [], "REQ": [], "EMUL": []}
    for core, prog in enumerate(progs):
        for k, slot, before, after in _exchanges(prog, {n: region_spans(r) for n, r in xchg.items()}):
            seen += 1
            # one row (decode): this core's columns stored, the other cores' loaded, no more (by where they lie in
            # the buffer); its own stored into its own channels, the others' loaded from theirs
            own = [(i.buf_addr, i.buf_addr + i.row_bytes) for _, i in before]
            loaded = sorted((i.buf_addr, i.buf_addr + i.row_bytes) for i in after)
            assert after and all(i.rows == 1 for i in after)
            spans = sorted(own + loaded)
            assert all(a1 == b0 for (_, a1), (b0, _) in zip(spans, spans[1:])), "slices do not tile the row"
            assert not any(a0 < o1 and o0 < a1 for a0, a1 in loaded for o0, o1 in own)
            mine = range(*channel_shares(c.config)[core])
            assert all(i.channel in mine for _, i in before)
            assert all(i.channel not in mine for i in after)
            if slot in ("xchg.2", "xchg.3"):
                # stored a part at a time, each right after the instruction that made its bytes, so all but the
                # last under the next part's work: a residual-adding layer's tiles (MVs; the first core's 512
                # rows in two), an attention's heads (the SFU's REQ of each head's P.V; four query heads on the
                # first core, two on the others), a gated MLP's product (an EMUL a tile of the up projection; the
                # first core's 512 rows in two, 256 and 256, the others' 256 in one)
                stored += 1
                makers = []
                for j, st in before:
                    p = max(n for n in range(j) if prog[n].opcode in (Opcode.MV, Opcode.MISC))
                    assert all(prog[n].opcode is Opcode.ST for n in range(p + 1, j))
                    (made,) = [a for a in footprint(prog[p], c.config)[1] if a.space == buf(st.buf)]
                    assert made.lo <= st.buf_addr and st.buf_addr + st.row_bytes <= made.hi
                    makers.append(MiscOp(prog[p].op).name if prog[p].opcode is Opcode.MISC else "MV")
                kinds[makers[0]] = sorted([*kinds[makers[0]], len(makers) if core == 0 else -len(makers)])
                assert len(set(makers)) == 1
            else:
                assert len(before) <= 1 and (not before or before[0][0] == k - 1)
            # what the first op after the exchange reads from PRM (a linear's records, a norm's parameters) was
            # loaded before the barrier
            j, op = next((j, i) for j, i in enumerate(prog) if j > k and (i.opcode is Opcode.MV or (
                i.opcode is Opcode.MISC and i.op in (MiscOp.RMSNORM, MiscOp.LAYERNORM))))
            addr = op.scale_addr if op.opcode is Opcode.MV else op.prm_addr
            loads = [n for n, i in enumerate(prog[:j]) if i.opcode is Opcode.LD and i.buf == Buffer.PRM
                     and i.buf_addr == addr]
            assert loads and loads[-1] < k, f"core {core}: {op.opcode.name} at {j} waits for a load after the barrier"
    assert seen >= 3 * 4 * c.integer.spec.num_layers  # four exchanges a layer on every core
    assert stored == 3 * 4 * c.integer.spec.num_layers  # every exchange but the first norm's
    # parts on the first core (positive) and the others' (negative), per exchange
    layers = c.integer.spec.num_layers
    assert kinds == {"MV": sorted([2, -1, -1] * 2 * layers), "REQ": sorted([4, -2, -2] * layers),
                     "EMUL": sorted([2, -1, -1] * layers)}
    # every core loads its own copy of each norm's parameters, striped over its own channels
    norms = [n for n in regions if ".params.c" in n]
    assert {n.rsplit(".c", 1)[1] for n in norms} == {"0", "1", "2"}
    shares = channel_shares(c.config)
    for n in norms:
        lo, hi = shares[int(n.rsplit(".c", 1)[1])]
        r = regions[n]
        assert lo <= r["channel"] and r["channel"] + max(1, r["stripe"]) <= hi
    ref_tokens, ref_logits = greedy(IntegerModel(c.integer, MAX_LEN), PROMPT, 6)
    got = list(Session(c.bundle).generate(PROMPT, 6))
    assert [t for t, _ in got] == ref_tokens
    assert all(np.array_equal(a, b) for (_, a), b in zip(got, ref_logits))


def test_exchange_pieces_put_each_cores_slice_on_its_own_channels_a_few_bursts_each():
    """An exchange slot lies on every channel; each core's slice of a row is cut in pieces of a few bursts (enough
    for LD's two instructions in flight to keep a master's bursts in flight), piece k on the core's k-th channel,
    so a core stores into its own channels and the others load back from several at once."""
    import pytest

    from flightc.compiler.memory import (Region, RegionKind, exchange_piece_bytes, exchange_pieces,
                                         exchange_slot_bytes)
    from flightc.errors import UnsupportedError

    cfg = U280_32
    piece = exchange_piece_bytes(cfg)
    assert piece == 4096  # 1 KiB bursts, 8 in flight over LD's 2 instructions
    per_channel = exchange_slot_bytes(cfg, 4 * 11008, 2)
    assert per_channel == 2 * 2 * piece  # 11 pieces round a core's 8 channels: two deep, of two rows
    slot = Region("xchg.0", RegionKind.IO, 0, 1 << 20, per_channel * 32, 32, per_channel)
    # LLaMA2-7B's residual (4,096 INT32) split 2,048 / 1,024 / 1,024 rows
    own = [(0, 8192), (8192, 12288), (12288, 16384)]
    got = [exchange_pieces(cfg, slot, c, own[c], own[c], 1) for c in range(3)]
    assert [[(p.lo, p.hi, p.channel, p.addr) for p in ps] for ps in got] == [
        [(0, 4096, 0, 1 << 20), (4096, 8192, 1, 1 << 20)], [(8192, 12288, 16, 1 << 20)],
        [(12288, 16384, 24, 1 << 20)]]
    # a tile's part of a slice: cut where the pieces are; two rows a piece apart on its channel
    parts = exchange_pieces(cfg, slot, 0, own[0], (3000, 5000), 2)
    assert [(p.lo, p.hi, p.channel, p.addr, p.stride) for p in parts] == [
        (3000, 4096, 0, (1 << 20) + 3000, piece), (4096, 5000, 1, 1 << 20, piece)]
    # past a core's last channel, round again, a piece's rows further on
    wide = exchange_pieces(cfg, slot, 1, (0, 9 * piece), (8 * piece, 8 * piece + 10), 2)
    assert [(p.channel, p.addr) for p in wide] == [(16, (1 << 20) + 2 * piece)]
    with pytest.raises(ValueError, match="not within core 1"):
        exchange_pieces(cfg, slot, 1, own[1], (0, 10), 1)
    with pytest.raises(UnsupportedError, match="exceed"):
        exchange_pieces(cfg, slot, 1, (0, 17 * piece), (16 * piece, 17 * piece), 2)
