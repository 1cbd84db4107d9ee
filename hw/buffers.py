"""On-chip buffers, the word ports that let every unit reach every buffer, and the word engine.

Each buffer (flightc.config.Buffer) is one simple dual-port memory of ``buffer_port_bytes``-wide
words with byte enables (a bank per memory master). Every unit owns one word port; per memory, one
round-robin arbiter grants one read and another one write per cycle, so a unit filling a buffer never
slows one reading it (the LD lanes write through one path a bank: :class:`BufferBank`).
Read data (the whole word) returns one cycle after the grant. :class:`WordEngine` turns a port
into a command ("read or write ``count`` bytes from ``addr`` with ``stride``") that moves every
byte a buffer word holds in one cycle, so a contiguous transfer of ``n`` bytes at ``addr`` takes
as many cycles as it touches words (:func:`flightc.sim.perf.timing.span_words`).
"""
from __future__ import annotations

from typing import NamedTuple

from amaranth.hdl import Cat, Const, Module, Mux, Signal, Value
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from flightc.config import Buffer, HardwareConfig
from flightc.hw.buffer_map import PortRole, buffer_rows, direct_writer
from flightc.hw.decode import BUF_SEL_BITS
from flightc.hw.hierarchy import ram
from flightc.hw.lut6 import any_of, lut, mux4, shift
from flightc.isa.table import BUF_ADDR_BITS


def word_port_signature(word_bytes: int) -> wiring.Signature:
    """A unit's port, from the unit's side: a request (read, or a masked write of whole-word data) granted
    combinationally; a granted read's word arrives on ``rdata`` with ``rvalid`` the next cycle."""
    return wiring.Signature({
        "req": Out(1), "buf": Out(BUF_SEL_BITS), "addr": Out(BUF_ADDR_BITS), "we": Out(1),
        "wdata": Out(8 * word_bytes), "wmask": Out(word_bytes),
        "gnt": In(1), "rvalid": In(1), "rdata": In(8 * word_bytes),
    })


def lane_bits(word_bytes: int) -> int:
    if word_bytes & (word_bytes - 1):
        raise ValueError(f"buffer_port_bytes {word_bytes} must be a power of two")
    return word_bytes.bit_length() - 1


class _Writer(NamedTuple):
    """One candidate of a memory's write arbiter: its request, row, data and byte mask, and whose grant it is."""

    want: Value
    row: Value
    data: Value
    mask: Value
    key: int | str  # what its grant goes to: a port's index, or the name of a bank's shared path


class BufferBank(wiring.Component):
    """The five buffers of a core behind per-buffer round-robin arbiters; one word port per unit (one per LD lane).

    With several memory masters each buffer of the config's ``banked_buffers`` is cut in ``axi_masters`` banks,
    interleaved every ``bank_bytes``: the LD lanes of a striped row write one unit each into different banks in the
    same cycle, each into its own master's bank (:func:`flightc.isa.footprint.own_banks`; every other row is lane
    0's). Every other buffer is one memory, which LD lane 0 alone writes of the LD lanes: its readers pick their word
    from it without a multiplexer over the banks. Each memory is simple
    dual-port with its own read and write arbiters. Each port's :class:`PortRole` (all buffers both ways by
    default) says which memories it reaches: a port that never reads takes no part in the read arbiters and gets no
    read data (on a wide core the read multiplexers of 32 LD lanes would outweigh the buffers), and a memory only
    LD writes has no write multiplexer. The LD lanes (``shared``) write a bank through one path, one of them a cycle
    whichever buffer it writes, which each memory's write arbiter weighs as one more writer: a multiplexer a word
    wide over 32 LD lanes per bank instead of per memory (five times fewer), while an LD lane and another unit
    still write one bank's buffers in one cycle.
    """

    def __init__(self, cfg: HardwareConfig, roles: dict[str, PortRole] | list[str]):
        self.cfg = cfg
        self.roles = roles if isinstance(roles, dict) else {n: PortRole() for n in roles}
        self.names = list(self.roles)
        w = cfg.buffer_port_bytes
        self.lane_bits = lane_bits(w)
        self.banks = cfg.axi_masters
        self.granule_bits = lane_bits(cfg.bank_bytes // w) if self.banks > 1 else 0
        super().__init__({f"port_{n}": In(word_port_signature(w)) for n in self.names})
        self.depth = {b: buffer_rows(cfg, b) for b in Buffer}

    def reaches(self, i: int, b: Buffer) -> bool:
        """Port ``i`` reads buffer ``b``."""
        return b in self.roles[self.names[i]].reads

    def ports(self) -> list:
        return [getattr(self, f"port_{n}") for n in self.names]

    def elaborate(self, platform):
        m = Module()
        lb, gb, nb = self.lane_bits, self.granule_bits, self.banks
        bb = (nb - 1).bit_length()
        ports = self.ports()
        roles = [self.roles[n] for n in self.names]
        banked = [b for b in Buffer if self.cfg.banks(b) > 1]
        bank_of = [Signal(max(1, bb), name=f"{n}_bank") for n in self.names]
        row_of = [Signal(BUF_ADDR_BITS - lb, name=f"{n}_row") for n in self.names]  # in a bank of a banked buffer
        word_of = [p.addr[lb:] for p in ports]  # in a buffer of one memory
        to_banked = [Cat(*[p.buf == int(b) for b in banked]).any() if banked else Const(0) for p in ports]
        for p, bank, row, word in zip(ports, bank_of, row_of, word_of):
            m.d.comb += [bank.eq(word[gb:gb + bb] if nb > 1 else 0),
                         row.eq(Cat(word[:gb], word[gb + bb:]) if nb > 1 else word)]
        reading: dict[tuple[int, Buffer], Signal] = {}

        def read_want(i: int, b: Buffer, k: int | None) -> Value:
            """Port ``i`` asks for a read of buffer ``b`` (of its bank ``k``) this cycle: a LUT6 decodes the
            request's buffer, another its bank (two levels, where abc mapped the same compare three deep)."""
            p = ports[i]
            if (i, b) not in reading:
                reading[i, b] = lut(m, f"{self.names[i]}_reads_{b.name.lower()}", [p.req, p.we, *p.buf],
                                    lambda req, we, *sel: req and not we and _number(sel) == int(b))
            if k is None:
                return reading[i, b]
            if bb > 5:
                return reading[i, b] & (bank_of[i] == k)
            return lut(m, f"{self.names[i]}_reads_{b.name.lower()}{k}", [reading[i, b], *bank_of[i]],
                       lambda wants, *bank: wants and _number(bank) == k)

        read_data = {}
        grants: dict[int | str, list[Value]] = {i: [] for i in range(len(ports))}  # one of them a cycle at most
        read_grants: list[list[Value]] = [[] for _ in ports]
        shared = [i for i, r in enumerate(roles) if r.shared]
        w = self.cfg.buffer_port_bytes
        shared_paths = {}
        won: dict[str, Signal] = {}  # each bank's shared path: its write went in
        for k in range(nb if banked else 0):
            # the shared writers (the LD lanes) take one path a bank of the banked buffers, whichever of them they
            # write: one of them a cycle, multiplexed once for the bank's memories rather than once for each
            here_k = [i for i in shared if roles[i].bank in (None, k)]
            if not here_k or not any(b in roles[i].writes for i in here_k for b in banked):
                continue
            s_any, s_grant = _arbiter(m, f"sh{k}",
                                      [ports[i].req & ports[i].we & to_banked[i] & (bank_of[i] == k) for i in here_k])
            s_won = Signal(name=f"sh_won{k}")  # the shared path's write went in
            s_row = Signal(BUF_ADDR_BITS - lb, name=f"sh_row{k}")
            s_data, s_mask = Signal(8 * w, name=f"sh_data{k}"), Signal(w, name=f"sh_mask{k}")
            s_buf = Signal(BUF_SEL_BITS, name=f"sh_buf{k}")
            m.d.comb += [s_row.eq(one_hot_select(s_grant, [row_of[i] for i in here_k])),
                         s_data.eq(one_hot_select(s_grant, [ports[i].wdata for i in here_k])),
                         s_mask.eq(one_hot_select(s_grant, [ports[i].wmask for i in here_k])),
                         s_buf.eq(one_hot_select(s_grant, [ports[i].buf for i in here_k]))]
            for j, i in enumerate(here_k):
                grants[i].append(s_won & s_grant[j])
            grants[f"sh{k}"] = []
            won[f"sh{k}"] = s_won
            shared_paths[k] = (_Writer(s_any, s_row, s_data, s_mask, f"sh{k}"), s_buf, here_k)
        for b in Buffer:
            cut = b in banked
            for k in range(nb if cut else 1):
                tag = b.name.lower() + (str(k) if cut else "")
                mem = ram(m, f"mem_{tag}", 8 * w, self.depth[b])
                read_data[b, k] = mem.rdata
                here = [(p.buf == int(b)) & ((bank_of[i] == k) if cut else 1) for i, p in enumerate(ports)]
                rows = row_of if cut else word_of
                mine = [i for i in range(len(ports)) if self.reaches(i, b)]
                # a simple dual-port memory: one read and one write per cycle, each with its own round robin (the
                # shared path first among the writers)
                _, r_grant = _arbiter(m, f"rd_{tag}", [read_want(i, b, k if cut else None) for i in mine])
                writers = []
                if cut and k in shared_paths:
                    s_writer, s_buf, here_k = shared_paths[k]
                    if any(b in roles[i].writes for i in here_k):
                        # the shared path writes a banked buffer: with one, this one (no compare after its arbiter)
                        mine_too = s_writer.want if len(banked) == 1 else s_writer.want & (s_buf == int(b))
                        writers.append(s_writer._replace(want=mine_too))
                # a buffer of one memory: the LD lane that writes every bank (lane 0) writes it straight
                writers += [_Writer(ports[i].req & here[i] & ports[i].we, rows[i], ports[i].wdata, ports[i].wmask,
                                    i) for i, r in enumerate(roles) if direct_writer(r, b, cut)]
                if mine:
                    m.d.comb += mem.raddr.eq(one_hot_select(r_grant, [rows[i] for i in mine]))
                for j, i in enumerate(mine):
                    grants[i].append(r_grant[j])
                    read_grants[i].append(r_grant[j])
                if not writers:
                    continue
                if len(writers) == 1:  # LD alone: straight in
                    x = writers[0]
                    m.d.comb += [mem.waddr.eq(x.row), mem.wdata.eq(x.data), mem.wen.eq(Mux(x.want, x.mask, 0))]
                    grants[x.key].append(x.want)
                    continue
                _, w_grant = _arbiter(m, f"wr_{tag}", [x.want for x in writers])
                m.d.comb += [mem.waddr.eq(one_hot_select(w_grant, [x.row for x in writers])),
                             mem.wdata.eq(one_hot_select(w_grant, [x.data for x in writers])),
                             mem.wen.eq(one_hot_select(w_grant, [x.mask for x in writers]))]
                for j, x in enumerate(writers):
                    grants[x.key].append(w_grant[j])
        for key, granted in grants.items():
            name = self.names[key] if isinstance(key, int) else key
            m.d.comb += (ports[key].gnt if isinstance(key, int) else won[key]).eq(any_of(m, f"{name}_gnt", granted))
        for i, p in enumerate(ports):
            if not roles[i].reads:
                continue
            rvalid_next = Signal(name=f"{self.names[i]}_rv")
            buf_q = Signal(BUF_SEL_BITS, name=f"{self.names[i]}_bufq")
            bank_q = Signal(max(1, bb), name=f"{self.names[i]}_bankq")
            m.d.sync += [rvalid_next.eq(any_of(m, f"{self.names[i]}_read", read_grants[i])), buf_q.eq(p.buf),
                         bank_q.eq(bank_of[i])]
            with m.Switch(buf_q):
                for b in Buffer:
                    if not self.reaches(i, b):
                        continue
                    with m.Case(int(b)):
                        if b not in banked:
                            m.d.comb += p.rdata.eq(read_data[b, 0])
                            continue
                        with m.Switch(bank_q):
                            for k in range(nb):
                                with m.Case(k):
                                    m.d.comb += p.rdata.eq(read_data[b, k])
            m.d.comb += p.rvalid.eq(rvalid_next)
        return m


PAIRWISE_MOST = 4  # an arbiter of this many requesters or fewer decides its grants pairwise


def _arbiter(m: Module, name: str, wants: list) -> tuple[Value, Signal]:
    """Round robin among ``wants``: (any request, the grant one-hot), the first requester after the last grant.

    Up to :data:`PAIRWISE_MOST` requesters (every memory's arbiters on the u280), which of each two goes first in the
    order after the last grant is a register, so a requester's grant is its request and no earlier one's: a LUT6 up
    to three requesters, two at four (:func:`flightc.hw.lut6.lut`).
    More: the requests past the last grant (a register of their positions) ahead of all of them, the lowest of the
    two isolated as ``x & -x`` on one carry chain and folded. Either way no index is encoded and compared: the
    grant selects its requester's row and data by an AND-OR (:func:`one_hot_select`)."""
    n = len(wants)
    want = Signal(n, name=f"want_{name}")
    m.d.comb += want.eq(Cat(*wants))
    grant = Signal(n, name=f"grant_{name}")
    if n <= PAIRWISE_MOST:
        def ahead(j: int, i: int, last: int) -> bool:  # j before i in the order after a grant to ``last``
            return (j - last - 1) % n < (i - last - 1) % n

        pairs = [(j, i) for i in range(n) for j in range(n) if j != i]
        first = {(j, i): Signal(name=f"first_{name}_{j}_{i}", init=ahead(j, i, 0)) for j, i in pairs}

        def nobody_first(*bits: bool) -> bool:  # of (request, goes first) pairs: none requests ahead
            return not any(bits[k] and bits[k + 1] for k in range(0, len(bits), 2))

        grants = []
        for i in range(n):
            others = [x for j in range(n) if j != i for x in (want[j], first[j, i])]
            if len(others) < 6:
                grants.append(lut(m, f"grant_{name}_{i}", [want[i], *others],
                                  lambda mine, *bits: mine and nobody_first(*bits)))
            else:
                free = lut(m, f"free_{name}_{i}", others, nobody_first)
                grants.append(lut(m, f"grant_{name}_{i}", [want[i], free], lambda mine, free: mine and free))
        m.d.comb += grant.eq(Cat(*grants))
        for (j, i), bit in first.items():
            with m.If(want.any()):
                m.d.sync += bit.eq(Cat(*[grant[g] for g in range(n) if ahead(j, i, g)]).any())
        return want.any(), grant
    above = Signal(n, name=f"above_{name}", init=(1 << n) - 2)  # the last grant 0 at reset
    both = Signal(2 * n, name=f"both_{name}")
    m.d.comb += both.eq(Cat(want & above, want))
    lowest = Signal(2 * n, name=f"lowest_{name}")
    m.d.comb += lowest.eq(both & (~both + 1)[:2 * n])
    m.d.comb += grant.eq(lowest[:n] | lowest[n:])
    upto = Signal(n + 1, name=f"upto_{name}")  # the grant and every requester before it
    m.d.comb += upto.eq((Cat(Const(0, 1), grant) - 1)[:n + 1])
    with m.If(want.any()):
        m.d.sync += above.eq(~upto[:n])
    return want.any(), grant


def one_hot_select(grant: Value, values: list) -> Value:
    """The value of ``values`` whose bit of ``grant`` is set (none set: 0), as an AND-OR of their bits."""
    width = max(len(Value.cast(v)) for v in values)
    out = Const(0, width)
    for i, v in enumerate(values):
        out = out | Mux(grant[i], v, 0)
    return out


def _number(bits: tuple[bool, ...]) -> int:
    """The unsigned number of ``bits``, the lowest first."""
    return sum(int(bit) << j for j, bit in enumerate(bits))


def words_touched(addr, count, word_bytes: int) -> Value:
    """The buffer words ``count`` bytes from ``addr`` lie in (what a ``counted`` :class:`WordEngine` is told)."""
    lb = (word_bytes - 1).bit_length()
    return (Value.cast(addr)[:lb] + count + (word_bytes - 1)) >> lb


def first_lanes(count, word_bytes: int):
    """A byte mask of the lowest ``count`` lanes of a word (``count`` up to ``word_bytes``)."""
    return ((Const(1, word_bytes + 1) << Value.cast(count).as_unsigned()) - 1)[:word_bytes]


def shift_bytes(m: Module, value, amount, out_bytes: int, left: bool = False) -> Signal:
    """``value`` shifted right (or left) by ``amount`` bytes, its lowest ``out_bytes`` bytes: a 2:1 multiplexer
    stage per bit of ``amount``, each stage a signal of its own. A shift by a signal as one operator makes every
    output bit depend on every input bit, which Amaranth's combinational-cycle check walks bit by bit (minutes
    for a 64-byte word), and an expression used twice is built twice, so unnamed stages would double per bit."""
    x = Value.cast(value)
    amount = Value.cast(amount)
    width = 8 * out_bytes
    for s in reversed(range(len(amount))):  # the largest step first: what later steps need shrinks with them
        step = 8 << s
        if left:
            moved = Cat(Const(0, step), x)[:width] if step < width else Const(0, width)
            stage, keep = Signal(width), x[:width]
        else:
            keep_bits = width + step - 8  # bits the smaller steps still need
            moved = x[step:step + keep_bits] if step < len(x) else Const(0, 1)
            keep = x[:keep_bits]
            stage = Signal(len(keep))
        m.d.comb += stage.eq(Mux(amount[s], moved, keep))
        x = stage
    out = Signal(width)
    m.d.comb += out.eq(x)
    return out


def rotate_bytes(m: Module, value, amount, word_bytes: int, name: str = "rotation") -> Signal:
    """A word rotated left by ``amount`` bytes (byte i moves to lane i + amount, mod the word), a signal per
    stage as in :func:`shift_bytes`; each stage takes two bits of ``amount``, a 4:1 multiplexer a bit (a LUT6:
    hw/lut6.py; ``name`` names them, one per rotation in a module)."""
    x = Value.cast(value)[:8 * word_bytes]
    amount = Value.cast(amount)
    bits = min(len(amount), lane_bits(word_bytes))

    def rotated(v, step: int):
        step %= 8 * word_bytes
        return Cat(v[-step:], v[:-step]) if step else v

    for s in range(0, bits, 2):
        step = 8 << s
        if s + 1 < bits:
            stage = mux4(m, f"{name}{s // 2}", amount[s:s + 2], tuple(rotated(x, k * step) for k in range(4)))
        else:
            stage = Signal(8 * word_bytes)
            m.d.comb += stage.eq(Mux(amount[s], rotated(x, step), x))
        x = stage
    return x


def merge_bytes(dest: Signal, data, at, count, word_bytes: int):
    """``dest`` with its bytes ``at`` .. ``at + count - 1`` replaced by the first ``count`` bytes of ``data``
    (a word, byte i at bits 8i): how the word engine gathers what it read. Each byte of ``dest`` picks its
    source byte with a ``word_bytes``-way multiplexer (no shifter as wide as ``dest``)."""
    size = len(dest) // 8
    at = Value.cast(at)[:max(1, (size - 1).bit_length())]  # a placement lies inside dest
    lb = max(1, (word_bytes - 1).bit_length())
    out = []
    for i in range(size):
        rel = Const(i, at.shape().width + 1) - at
        take = (at <= i) & (rel < count)
        out.append(Mux(take, data.word_select(rel[:lb], 8), dest.word_select(i, 8)))
    return Cat(*out)


class OperandRegister:
    """An operand a unit fetches a buffer word per cycle: the words as they arrived (``raw``) and the lane of the
    first one where the operand starts; :meth:`view` is the operand itself, ``nbytes`` from byte 0. Keeping whole
    words and shifting once (log2 of the word's bytes in 2:1 stages) costs far less than placing each arriving
    byte at a variable position."""

    def __init__(self, name: str, nbytes: int, word_bytes: int):
        self.nbytes, self.word_bytes = nbytes, word_bytes
        self.words = self.most_words(nbytes, word_bytes)
        self.raw = Signal(8 * word_bytes * self.words, name=f"{name}_raw")
        self.lane = Signal(lane_bits(word_bytes), name=f"{name}_lane")

    @staticmethod
    def most_words(nbytes: int, word_bytes: int) -> int:
        """Words ``nbytes`` contiguous bytes touch at the most (starting at the last lane of a word)."""
        return -(-(nbytes + word_bytes - 1) // word_bytes)

    def word(self, index):
        return self.raw.word_select(Value.cast(index)[:max(1, (self.words - 1).bit_length())], 8 * self.word_bytes)

    def byte(self, index):
        n = self.words * self.word_bytes
        return self.raw.word_select(Value.cast(index)[:max(1, (n - 1).bit_length())], 8)

    def view(self, m: Module) -> Signal:
        """The operand as a signal of its own: every reader shares one shifter (an expression used twice is
        built twice, which made the window's shifter dominate a wide core's netlist)."""
        out = Signal(8 * self.nbytes, name=f"{self.raw.name[:-4]}_view")
        m.d.comb += out.eq(shift(m, f"{self.raw.name[:-4]}_shift", self.raw, self.lane, 8 * self.nbytes, step=8,
                                      left=False))
        return out


class WordEngine(wiring.Component):
    """Moves up to ``max_bytes`` bytes between a unit and one buffer per command, a buffer word per cycle.

    Pulse ``start`` with ``write``, ``buf``, ``addr``, ``stride``, ``count`` (and ``wdata``, byte i
    at bits 8i); ``done`` pulses the cycle after the last word is written or has arrived, and
    ``rdata`` then holds what was read (byte i at bits 8i). With ``stride`` 1 a request covers the
    rest of the word ``addr`` falls in; any other stride moves one byte per request. ``ready`` says a
    command may start this cycle: the engine is idle, or a read's last word arrives (its ``done``
    still pulses in the next cycle, with ``rdata`` whole, while the next command's words are asked);
    ``last`` marks that cycle. An ``eager`` engine asks for a read's first word in the cycle that starts it
    (the unit's address then reaches the buffer's arbiter combinationally), so reads started back to back on
    ``ready`` move a word every cycle; its writes start as usual. A ``contiguous`` engine moves stride 1 only and
    counts words, not bytes (an eager one's reads are never empty): it keeps a read's words as they arrive and
    shifts them once (``rdata`` holds the read's bytes from byte 0 while ``done`` pulses, what lies past ``count``
    undefined), where placing every word's bytes at a variable offset costs a ``word_bytes``-way multiplexer per
    byte of ``rdata`` (most of a 64-lane SFU's operand engines), and places a write's bytes at its first lane once;
    if it is not eager, it is ``ready`` in the cycle a write's last word is granted too, so that writes started on
    ``ready`` move a word every cycle; a ``counted`` one takes the words a command touches from its unit (``words``)
    instead of adding them up as the command starts; a ``nonempty`` one's unit never gives it a command of no bytes (it is busy from every start,
    with no test of ``count`` on the way).
    """

    def __init__(self, word_bytes: int, max_bytes: int, eager: bool = False, contiguous: bool = False,
                 counted: bool = False, nonempty: bool = False):
        self.word_bytes, self.max_bytes, self.eager, self.contiguous = word_bytes, max_bytes, eager, contiguous
        self.counted, self.nonempty = counted, nonempty
        if nonempty and not contiguous:
            raise ValueError("only a contiguous word engine is told its commands are never empty")
        if counted and not contiguous:
            raise ValueError("only a contiguous word engine takes a command's words from its unit")
        super().__init__({"port": Out(word_port_signature(word_bytes))})
        self.start = Signal()
        self.write = Signal()
        self.buf = Signal(BUF_SEL_BITS)
        self.addr = Signal(BUF_ADDR_BITS)
        self.stride = Signal(BUF_ADDR_BITS)
        self.count = Signal(range(max_bytes + 1))
        self.wdata = Signal(8 * max_bytes)
        self.done = Signal()
        self.busy = Signal()
        self.ready = Signal()
        self.last = Signal()
        self.rdata = Signal(8 * max_bytes)
        # a ``counted`` engine's command also gives the buffer words it touches (worked out by the unit ahead of
        # the command, so that no request waits on that sum)
        self.words = Signal(range(OperandRegister.most_words(max_bytes, word_bytes) + 1))

    def read(self, m: Module, buf, addr, count, stride=1) -> None:
        """Issue a read command this cycle (a unit's FSM calls it in the state that starts the transfer)."""
        m.d.comb += [self.start.eq(1), self.write.eq(0), self.buf.eq(buf), self.addr.eq(addr),
                     self.stride.eq(stride), self.count.eq(count)]

    def write_bytes(self, m: Module, buf, addr, count, data) -> None:
        """Issue a write command of ``count`` bytes of ``data`` (byte i at bits 8i) to consecutive addresses."""
        m.d.comb += [self.start.eq(1), self.write.eq(1), self.buf.eq(buf), self.addr.eq(addr), self.stride.eq(1),
                     self.count.eq(count), self.wdata.eq(data)]

    def elaborate(self, platform):
        if self.contiguous:
            return self._contiguous()
        m = Module()
        p, w = self.port, self.word_bytes
        lb = lane_bits(w)
        issued = Signal(range(self.max_bytes + 1))
        count = Signal.like(self.count)
        write = Signal()
        stride = Signal.like(self.stride)
        cur = Signal(BUF_ADDR_BITS)
        wdata = Signal.like(self.wdata)
        buf_q = Signal(BUF_SEL_BITS)
        last_sent = Signal()
        # what the request in flight covers: lane in the word, where its bytes go, how many
        tag_lane = Signal(lb)
        tag_at = Signal.like(issued)
        tag_n = Signal(range(w + 1))
        # an eager read's first request comes straight from the command; later ones from the registers
        now = (self.start & ~self.write & (self.count != 0)) if self.eager else Const(0)
        cur_e, issued_e, count_e = Mux(now, self.addr, cur), Mux(now, 0, issued), Mux(now, self.count, count)
        lane = cur_e[:lb]
        left = count_e - issued_e
        stride_e = Mux(now, self.stride, stride)
        contiguous = stride_e == 1
        n = Signal(range(w + 1))
        m.d.comb += n.eq(Mux(contiguous, Mux(left < (w - lane), left, w - lane), 1))
        m.d.comb += p.buf.eq(Mux(now, self.buf, buf_q))
        with m.If(self.start):
            m.d.sync += [self.busy.eq(self.count != 0), issued.eq(0), count.eq(self.count), last_sent.eq(0),
                         write.eq(self.write), stride.eq(self.stride), cur.eq(self.addr), wdata.eq(self.wdata),
                         buf_q.eq(self.buf)]
        m.d.sync += self.done.eq(self.start & (self.count == 0))
        m.d.comb += [p.req.eq(now | (self.busy & ~last_sent)), p.addr.eq(cur_e), p.we.eq(write & ~now),
                     p.wdata.eq(shift_bytes(m, shift_bytes(m, wdata, issued, w), lane, w, left=True)), p.wmask.eq(first_lanes(n, w) << lane)]
        with m.If(p.req & p.gnt):
            m.d.sync += [issued.eq(issued_e + n), cur.eq(Mux(contiguous, cur_e + n, cur_e + stride_e)),
                         tag_lane.eq(lane), tag_at.eq(issued_e), tag_n.eq(n)]
            with m.If(issued_e + n == count_e):
                m.d.sync += last_sent.eq(1)
                with m.If(write):
                    m.d.sync += [self.busy.eq(0), self.done.eq(1)]
        finishing = Signal()  # a read's last word arrives
        m.d.comb += [finishing.eq(p.rvalid & self.busy & ~write & last_sent & (tag_at + tag_n == count)),
                     self.ready.eq(~self.busy | finishing), self.last.eq(finishing)]
        with m.If(p.rvalid & self.busy & ~write):
            m.d.sync += self.rdata.eq(merge_bytes(self.rdata, shift_bytes(m, p.rdata, tag_lane, w), tag_at,
                                                  tag_n, w))
            with m.If(finishing):
                m.d.sync += self.done.eq(1)
                with m.If(~self.start):  # a command starting as this one finishes keeps the engine busy
                    m.d.sync += self.busy.eq(0)
        return m

    def _contiguous(self) -> Module:
        """A stride-1 engine that counts words rather than bytes, so that no request waits on a byte count's
        arithmetic: a command's words are worked out as it starts, a read keeps its words as they arrive and
        shifts them once, and a write places its bytes at the first word's lane once (each request takes its
        word of them). Its cycles are the general engine's."""
        m = Module()
        p, w = self.port, self.word_bytes
        lb = lane_bits(w)
        most = OperandRegister.most_words(self.max_bytes, w)
        left = Signal(range(most + 1))  # words not yet asked for
        sent = Signal(range(most + 1))  # words asked for
        write, last_sent = Signal(), Signal()
        cur = Signal(BUF_ADDR_BITS)  # the next word's address (its lane 0, past the first)
        buf_q = Signal(BUF_SEL_BITS)
        lane0, end_lane = Signal(lb), Signal(lb)  # the command's first byte's lane, and its last byte's + 1
        wdata = Signal.like(self.wdata)
        if self.counted:
            words = self.words
        else:
            words = Signal(range(most + 1))
            m.d.comb += words.eq((self.addr[:lb] + self.count + (w - 1)) >> lb)
        now = (self.start & ~self.write) if self.eager else Const(0)  # (an eager read is never empty)
        m.d.comb += [p.buf.eq(Mux(now, self.buf, buf_q)), p.addr.eq(Mux(now, self.addr, cur)),
                     p.req.eq(now | (self.busy & ~last_sent)), p.we.eq(write & ~now)]
        empty = Const(0) if self.nonempty else self.count == 0
        m.d.sync += self.done.eq(self.start & empty)
        # a command's word granted (but an eager read's first, the command's own); a command that starts in the same
        # cycle (a write's on its predecessor's last word: ``ready``) takes the registers after it
        final_word = Signal()  # a lazy engine's write asks for its last word, a register (``ready``)
        with m.If(p.req & p.gnt & ~now):
            m.d.sync += [left.eq(left - 1), sent.eq(sent + 1), cur.eq(Cat(Const(0, lb), cur[lb:] + 1))]
            if not self.eager:
                m.d.sync += final_word.eq(write & (left == 2))
            with m.If(left == 1):
                m.d.sync += last_sent.eq(1)
                with m.If(write):
                    m.d.sync += [self.busy.eq(0), self.done.eq(1)]
        with m.If(self.start):
            m.d.sync += [self.busy.eq(~empty), left.eq(words), sent.eq(0), last_sent.eq(0),
                         write.eq(self.write), cur.eq(self.addr), buf_q.eq(self.buf), lane0.eq(self.addr[:lb]),
                         end_lane.eq(self.addr[:lb] + self.count), wdata.eq(self.wdata)]
            if not self.eager:
                m.d.sync += final_word.eq(self.write & (words == 1))
            with m.If(now & p.gnt):  # an eager read's first word asked for as it starts
                m.d.sync += [left.eq(words - 1), sent.eq(1), last_sent.eq(words == 1),
                             cur.eq(Cat(Const(0, lb), self.addr[lb:] + 1))]
        # a write's word: its bytes placed at the first word's lane, the request's word of them, its lanes
        placed = Signal(8 * w * most)
        m.d.comb += placed.eq(shift_bytes(m, wdata, lane0, w * most, left=True))
        index = sent[:max(1, (most - 1).bit_length())]
        first_mask = ~first_lanes(lane0, w)[:w]
        last_mask = Mux(end_lane == 0, (1 << w) - 1, first_lanes(end_lane, w))
        m.d.comb += [p.wdata.eq(placed.word_select(index, 8 * w)),
                     p.wmask.eq(Mux(sent == 0, first_mask, (1 << w) - 1) & Mux(left == 1, last_mask, (1 << w) - 1))]
        # a read: the words as they arrive, shifted once when the last is in (a granted read's word arrives the
        # next cycle, so a read whose last word was asked for has it arriving: ``ready`` from registers alone)
        # a write may start the next command as its last word is granted (a non-eager engine's: an eager one's read
        # would ask for its first word in that very cycle), so that writes of a word each go out a cycle apart
        finishing = Signal()
        m.d.comb += [finishing.eq(self.busy & ~write & last_sent),
                     self.ready.eq(~self.busy | finishing | (final_word & p.gnt)), self.last.eq(finishing)]
        raw = Signal(8 * w * most)
        got = Signal(range(most + 1))  # words of the read arrived
        first_lane, out_lane = Signal(lb), Signal(lb)  # the lane of the read's first byte; that of the read done
        m.d.comb += self.rdata.eq(shift(m, "read_shift", raw, out_lane, 8 * self.max_bytes, step=8, left=False))
        with m.If(p.rvalid & self.busy & ~write):
            m.d.sync += [raw.word_select(got[:max(1, (most - 1).bit_length())], 8 * w).eq(p.rdata), got.eq(got + 1)]
            with m.If(finishing):
                m.d.sync += [self.done.eq(1), out_lane.eq(first_lane), got.eq(0)]
                with m.If(~self.start):  # a command starting as this one finishes keeps the engine busy
                    m.d.sync += self.busy.eq(0)
        with m.If(self.start):
            m.d.sync += [got.eq(0), first_lane.eq(self.addr[:lb])]
        return m
