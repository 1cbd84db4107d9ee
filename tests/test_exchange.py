"""Several cores: how a model is split across them, and how they exchange the tensors each holds a slice of."""
import numpy as np

from conftest import MAX_LEN, PROMPT, compiled
from flightc.compiler.memory import channel_shares, head_shares, stream_plan
from flightc.compress.formats import WeightFormat
from flightc.config import PRESETS, Buffer
from flightc.isa.codec import iter_program
from flightc.isa.table import MiscOp, Opcode, SysOp
from flightc.reference.integer import IntegerModel, greedy
from flightc.runtime.session import Session

# hbm4 (a master per channel) as three cores: 2, 1 and 1 masters
HBM4_3CORE = PRESETS["hbm4"].replace(name="hbm4-3core", num_cores=3)


def test_u280_as_three_cores_streams_from_runs_of_16_8_and_8_masters():
    """32 masters do not split in three equal powers of two: the first core takes 16, the others 8 each, and the
    KV heads and the linear layers' rows follow the channels, so every core streams every layer at line rate."""
    cfg = PRESETS["u280"].replace(num_cores=3)
    assert channel_shares(cfg) == [(0, 16), (16, 24), (24, 32)]
    assert head_shares(cfg, 32) == [(0, 16), (16, 24), (24, 32)]
    fmt = WeightFormat.parse("w4g128s8:16")
    plans = [stream_plan(cfg, core, fmt, 4096)[0] for core in range(3)]
    assert [(p.channel, p.stripe, p.groups) for p in plans] == [(0, 16, 16), (16, 8, 8), (24, 8, 8)]
    # masters that are not a power of two per core: near-even shares, and the stream plan says why it cannot
    odd = PRESETS["hbm4"].replace(num_cores=3, mem_channels=6, axi_masters=6)
    assert channel_shares(odd) == [(0, 2), (2, 4), (4, 6)]
    five = PRESETS["hbm4"].replace(num_cores=2, mem_channels=5, axi_masters=5)
    assert channel_shares(five) == [(0, 2), (2, 5)]
    plan, why = stream_plan(five, 1, fmt, 4096)
    assert plan is None and "power of two of whole masters" in why


def _exchanges(prog, slots):
    """Per barrier: the ST into an exchange slot just before it (if any) and the LDs from one just after it."""

    def into_slot(i) -> bool:
        return any(i.channel == ch and a <= i.hbm_addr < a + n for ch, a, n in slots)

    out = []
    for k, ins in enumerate(prog):
        if ins.opcode is Opcode.SYS and ins.op == SysOp.BARRIER:
            before = [i for i in prog[k - 1:k] if i.opcode is Opcode.ST and into_slot(i)]
            after = []
            for i in prog[k + 1:]:
                if i.opcode is not Opcode.LD or not into_slot(i):
                    break
                after.append(i)
            out.append((k, before, after))
    return out


def test_an_exchange_loads_only_the_other_cores_slices_and_the_loads_it_holds_up_go_first():
    """Each core stores its slice of an exchanged tensor, meets the others and loads back only their slices (its
    own is in place); the loads the next op needs that do not depend on the exchange (a linear layer's records, a
    norm's parameters) are in the program before the barrier, so LD (in order) brings them while the cores meet.
    Decode on three cores stays exact."""
    c = compiled("tiny-llama-gqa", "w4g32", (), hw=HBM4_3CORE)
    regions = {r["name"]: r for r in c.bundle.manifest.memory_map["regions"]}
    xchg = [regions[f"xchg.{s}"] for s in range(2)]
    progs = [list(iter_program(p)) for p in c.bundle.program("decode", len(PROMPT) + 1)]
    assert len(progs) == 3
    seen = 0
    for core, prog in enumerate(progs):
        for k, before, after in _exchanges(prog, [(r["channel"], r["addr"], r["nbytes"]) for r in xchg]):
            seen += 1
            # one row (decode): this core's columns stored, the columns before and after them loaded, no more
            own = [(i.hbm_addr, i.hbm_addr + i.row_bytes) for i in before]
            loaded = sorted((i.hbm_addr, i.hbm_addr + i.row_bytes) for i in after)
            assert after and all(i.rows == 1 for i in after)
            spans = sorted(own + loaded)
            assert all(a1 == b0 for (_, a1), (b0, _) in zip(spans, spans[1:])), "slices do not tile the row"
            assert not any(a0 < o1 and o0 < a1 for a0, a1 in loaded for o0, o1 in own)
            # what the first op after the exchange reads from PRM (a linear's records, a norm's parameters) was
            # loaded before the barrier
            j, op = next((j, i) for j, i in enumerate(prog) if j > k and (i.opcode is Opcode.MV or (
                i.opcode is Opcode.MISC and i.op in (MiscOp.RMSNORM, MiscOp.LAYERNORM))))
            addr = op.scale_addr if op.opcode is Opcode.MV else op.prm_addr
            loads = [n for n, i in enumerate(prog[:j]) if i.opcode is Opcode.LD and i.buf == Buffer.PRM
                     and i.buf_addr == addr]
            assert loads and loads[-1] < k, f"core {core}: {op.opcode.name} at {j} waits for a load after the barrier"
    assert seen >= 3 * 4 * c.integer.spec.num_layers  # four exchanges a layer on every core
    # every core loads its own copy of each norm's parameters, striped over its own channels
    norms = [n for n in regions if ".params.c" in n]
    assert {n.rsplit(".c", 1)[1] for n in norms} == {"0", "1", "2"}
    shares = channel_shares(HBM4_3CORE)
    for n in norms:
        lo, hi = shares[int(n.rsplit(".c", 1)[1])]
        r = regions[n]
        assert lo <= r["channel"] and r["channel"] + max(1, r["stripe"]) <= hi
    ref_tokens, ref_logits = greedy(IntegerModel(c.integer, MAX_LEN), PROMPT, 6)
    got = list(Session(c.bundle).generate(PROMPT, 6))
    assert [t for t, _ in got] == ref_tokens
    assert all(np.array_equal(a, b) for (_, a), b in zip(got, ref_logits))
