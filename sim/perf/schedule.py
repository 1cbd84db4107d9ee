"""Event-driven schedule of one step's programs (one per core) on the generated cores.

Each core fetches its instruction stream in order, dispatches every instruction into its unit's
queue (``unit_queue_depth`` deep: a full queue stalls the fetcher, as in ``hw/control.py``), and a unit
starts its head instruction once it is idle, every token it waits for has been released, and every
token FIFO it releases into has room (``token_fifo_depth``). A barrier ends when every core's SYS
unit has reached it (with several cores, ``BARRIER_LATENCY`` later: hw/kernel.py). Unit busy times come from :mod:`.timing`; a load or store also lasts at least
as long as its memory channel needs for its bytes (:mod:`.memory`: sustained, measured bandwidth).

The result lists every instruction's start and end cycle, which is all the reports and the
timeline trace need.
"""
from __future__ import annotations

import heapq
from dataclasses import dataclass, field

import numpy as np

from flightc.config import HardwareConfig
from flightc.errors import ProgramError
from flightc.isa.codec import Instruction
from flightc.isa.table import WORD_BITS, Opcode, SysOp, Unit
from flightc.hw.axi_rules import LD_IN_FLIGHT
from flightc.hw.latency_rules import BARRIER_LATENCY, READ_CROSSING_LATENCY, TILE_PLAN_STAGES, crossed
from flightc.isa.footprint import streamed
from flightc.sim.perf.load import LoadModel, beat_gap
from flightc.sim.perf.streamed import Ahead, fits
from flightc.sim.perf.streamed_pairs import streamed_mv_time
from flightc.sim.perf.memory import ChannelCalendar
from flightc.sim.perf.timing import StoreModel, instruction_work

# Control-path latencies of hw/control.py, in cycles, counted from its registers (the calibration tests
# check them with the rest: programs of a few instructions are exact or within a few cycles).


def run_start(cfg: HardwareConfig) -> int:
    """ap_start to the first instruction word: AR, the memory's latency to the first beat, beat FIFO, beat register."""
    return 3 + cfg.mem_latency_cycles


def core_views(cfg: HardwareConfig) -> list[HardwareConfig]:
    """Each core as the model times it: its own run of masters (:meth:`HardwareConfig.core`) and, for a core that
    crosses an SLR to its masters' ports (hw/kernel.py ``crossed``), its memory ``READ_CROSSING_LATENCY`` further
    away (its reads and writes go through register slices)."""
    return [cfg.core(c).replace(mem_latency_cycles=cfg.mem_latency_cycles + READ_CROSSING_LATENCY)
            if crossed(cfg.core(c)) else cfg.core(c) for c in range(cfg.num_cores)]


QUEUE_LATENCY = 2  # a dispatched instruction reaches the head of SyncFIFOBuffered two cycles later
RUN_END = 2  # the last unit's done to the end of the run (idle and empty seen, then done)


@dataclass
class CoreTimeline:
    """Per instruction of one core's program: unit, start and end cycle (end = the cycle it reports done)."""

    units: np.ndarray
    opcodes: np.ndarray
    start: np.ndarray
    end: np.ndarray
    hbm_bytes: np.ndarray
    channels: np.ndarray
    mem_start: np.ndarray  # from the first to the last cycle its channels' calendars charge a load or store's bytes
    mem_end: np.ndarray  # (-1: none)


@dataclass
class Schedule:
    cfg: HardwareConfig
    cores: list[CoreTimeline]
    cycles: int
    instructions: list[list[Instruction]] = field(repr=False, default_factory=list)
    transfers: list[tuple[int, int, int, int]] = field(repr=False, default_factory=list)  # (channel, bytes, start, end)

    def busy_per_class(self) -> dict[str, int]:
        """Busy cycles per instruction class, summed over cores (what the RTL's busy_<class> counters count: the
        cycles with one in flight, so two LDs in flight at once count once)."""
        out: dict[str, int] = {}
        for c in self.cores:
            for op in np.unique(c.opcodes):
                sel = c.opcodes == op
                out[Opcode(int(op)).name] = out.get(Opcode(int(op)).name, 0) + covered(c.start[sel], c.end[sel])
        return out


def covered(start: np.ndarray, end: np.ndarray) -> int:
    """Cycles in the union of the spans (start, end] (one unit's instructions, in the order they started)."""
    total, reach = 0, None
    for a, b in zip(start.tolist(), end.tolist()):
        lo = a if reach is None else max(a, reach)
        total += max(0, b - lo)
        reach = b if reach is None else max(reach, b)
    return total


class FetchModel:
    """When each instruction of a core's program is whole in the fetcher (hw/control.py's Fetcher).

    The program's beats come in bursts of ``axi_burst_beats`` (the program starts on a burst boundary) on master
    0's read channel, two bursts asked for at once (two cycles apart: the fetcher sizes a burst the cycle before it
    asks) and the next once a burst's worth has left the beat FIFO; the memory answers them in order, a beat a cycle,
    the first ``mem_latency_cycles`` after the request. The head of the fetcher's beat ring takes the next beat as
    the one in it is used up (or as it arrives); the fetcher takes an instruction's
    words one cycle per beat they lie in, from the cycle the instruction before leaves for its unit's queue.
    ``bursts`` lists (request, first beat, last beat) of every burst asked for so far: LD's bursts on master 0
    answered after them wait for them (:class:`~flightc.sim.perf.load.LoadPipeline`), but the fetch's own bursts
    are taken as answered without waiting for LD's before them (modeled, not exact: random programs of a few
    instructions a load come out up to 4% under the RTL; tests/rtl/test_perf_calibration.py bounds it)."""

    def __init__(self, cfg: HardwareConfig, program: list[Instruction]):
        self.per_beat = max(1, cfg.axi_data_bytes * 8 // WORD_BITS)
        self.burst = cfg.axi_burst_beats
        self.latency = cfg.mem_latency_cycles
        self.to_register = run_start(cfg) - 2 - cfg.mem_latency_cycles  # a beat's answer to the beat register
        words = np.array([i.cls.words for i in program], np.int64)
        self.last_word = np.cumsum(words) - 1
        self.first_word = self.last_word - words + 1
        self.beats = int(self.last_word[-1]) // self.per_beat + 1 if len(program) else 0
        self.loaded = np.full(self.beats, -1, np.int64)  # the cycle each beat went into the beat register
        self.bursts: list[tuple[int, int, int]] = []
        self.used_up = -1  # the cycle the beat in the register was used up (its last word taken)
        self.taken = -1  # the last cycle words were taken
        for _ in range(min(2, -(-self.beats // self.burst))):
            self._ask(1 + len(self.bursts))

    def _ask(self, t: int) -> None:
        k = len(self.bursts)
        t = max(t, self.bursts[-1][0] + 2) if self.bursts else t  # (never two in a row)
        n = min(self.burst, self.beats - k * self.burst)
        first = max(t + self.latency, self.bursts[-1][2] + 1 if self.bursts else 0)
        self.bursts.append((t, first, first + n - 1))

    def whole(self, i: int, allowed: int) -> int:
        """The cycle instruction ``i`` has its last word taken, its words taken from cycle ``allowed`` on."""
        t = allowed - 1
        first, last = int(self.first_word[i]) // self.per_beat, int(self.last_word[i]) // self.per_beat
        for b in range(first, last + 1):
            if self.loaded[b] < 0:
                k, j = divmod(b, self.burst)
                self.loaded[b] = max(self.bursts[k][1] + j + self.to_register, self.used_up)
                if j == self.burst - 1 and len(self.bursts) * self.burst < self.beats:
                    self._ask(int(self.loaded[b]) + 1)  # a burst's worth has left the FIFO
            t = max(t + 1, int(self.loaded[b]) + 1, self.taken + 1)
            self.taken = t
            if b < last or (int(self.last_word[i]) + 1) % self.per_beat == 0:
                self.used_up = t
        return t


def fetch_cycles(cfg: HardwareConfig, program: list[Instruction]) -> np.ndarray:
    """Cycles the fetcher spends assembling each instruction of a program: one per memory beat its words lie in
    (what is left of a beat goes into the instruction register in one cycle, and the next beat replaces a used-up
    one in the same cycle)."""
    per_beat = max(1, cfg.axi_data_bytes * 8 // WORD_BITS)
    words = np.array([i.cls.words for i in program], np.int64)
    first = np.cumsum(words) - words  # each instruction's first word in the program
    return (first % per_beat + words - 1) // per_beat + 1


def schedule(cfg: HardwareConfig, programs: list[list[Instruction]]) -> Schedule:
    """Start and end cycle of every instruction of one step (``programs``: one decoded stream per core)."""
    if len(programs) != cfg.num_cores:
        raise ProgramError(f"{len(programs)} instruction streams for a {cfg.num_cores}-core config")
    depth = cfg.token_fifo_depth
    calendar = ChannelCalendar(cfg)
    views = core_views(cfg)
    fetchers = [FetchModel(v, p) for v, p in zip(views, programs)]
    loads = [LoadModel(v, f.bursts) for v, f in zip(views, fetchers)]  # LD keeps its bursts in flight from one
    # instruction to the next
    stores = [StoreModel(v) for v in views]  # and ST its writes
    ld_ends: list[list[int]] = [[] for _ in programs]
    transfers: list[tuple[int, int, int, int]] = []  # (channel, bytes, start, end) of every charge to a channel
    P = len(programs)
    N = [len(p) for p in programs]
    unit = [np.array([int(i.unit) for i in p], np.int64) for p in programs]
    work = [[instruction_work(v, i) for i in p] for v, p in zip(views, programs)]
    busy = [np.array([w.cycles for w in ws], np.int64) for ws in work]
    start = [np.full(n, -1, np.int64) for n in N]
    end = [np.full(n, -1, np.int64) for n in N]
    dispatch = [np.full(n, -1, np.int64) for n in N]
    mem_start = [np.full(n, -1, np.int64) for n in N]
    mem_end = [np.full(n, -1, np.int64) for n in N]

    # token bookkeeping: the producer each wait pops, and the wait whose pop makes room for each release
    waits_on: list[list[list[int]]] = []  # [core][i] -> producer indices
    room_after: list[list[list[int]]] = []  # [core][i] -> consumer indices that must have started
    queue_prev: list[np.ndarray] = []  # [core][i] -> the same unit's instruction a queue's depth earlier, or -1
    qdepth = cfg.unit_queue_depth
    barrier_no: list[dict[int, int]] = []
    for c, prog in enumerate(programs):
        releases: dict[tuple[int, int], list[int]] = {}
        waits: dict[tuple[int, int], list[int]] = {}
        w_on = [[] for _ in prog]
        for i, ins in enumerate(prog):
            u = int(ins.unit)
            for v in Unit:
                if v == u:
                    continue
                if ins.wait >> int(v) & 1:
                    q = waits.setdefault((int(v), u), [])
                    rel = releases.get((int(v), u), [])
                    if len(q) >= len(rel):
                        raise ProgramError(f"core {c}: instruction {i} ({ins.cls.name}) waits for a token from "
                                           f"{v.name} that no earlier instruction releases")
                    w_on[i].append(rel[len(q)])
                    q.append(i)
                if ins.release >> int(v) & 1:
                    releases.setdefault((u, int(v)), []).append(i)
        r_after = [[] for _ in prog]
        for (u, v), rel in releases.items():
            cons = waits.get((u, v), [])
            for r, i in enumerate(rel):
                if r >= depth:
                    if r - depth >= len(cons):
                        raise ProgramError(f"core {c}: {Unit(u).name} releases more than {depth} tokens to "
                                           f"{Unit(v).name} that are never waited for")
                    r_after[i].append(cons[r - depth])
        qp = np.full(len(prog), -1, np.int64)
        per_unit: dict[int, list[int]] = {}
        bars: dict[int, int] = {}
        for i, ins in enumerate(prog):
            lst = per_unit.setdefault(int(ins.unit), [])
            if len(lst) >= qdepth:
                qp[i] = lst[-qdepth]
            lst.append(i)
            if ins.opcode is Opcode.SYS and ins.op == SysOp.BARRIER:
                bars[i] = len(bars)
        waits_on.append(w_on)
        room_after.append(r_after)
        queue_prev.append(qp)
        barrier_no.append(bars)
    order = [{u: [i for i in range(N[c]) if unit[c][i] == u] for u in range(len(Unit))} for c in range(P)]
    ptr = [{u: 0 for u in range(len(Unit))} for _ in range(P)]
    free_at = [{u: 0 for u in range(len(Unit))} for _ in range(P)]
    next_dispatch = [0] * P
    last_dispatch = [0] * P  # an instruction's words are taken from the cycle the one before leaves
    arrivals: dict[int, dict[int, int]] = {}  # barrier ordinal -> core -> arrival cycle

    remaining = sum(N)
    # Units start in time order (a heap of the heads whose start is known), so the channel calendar is asked in
    # the order the transfers begin: first come, first served, whatever order the cores are visited in.
    heads: list[tuple[int, int, int, int]] = []  # (start, core, unit, instruction)
    queued = [[False] * len(Unit) for _ in range(P)]

    streaming: list[tuple[int, set[int]] | None] = [None] * P  # per core: the streamed MV last started, its masters
    reports: list[tuple[int, Ahead] | None] = [None] * P  # per core: that MV and what its readers did (Ahead)
    gap = beat_gap(cfg)

    def held_up(c: int, i: int, s: int) -> None:
        """An LD or ST that starts while a streamed MV reads its masters: the master's bus carries its beats between
        the reader's, so the stream ends that much later (the group on the busiest master finishes last)."""
        if streaming[c] is None:
            return
        mv, masters = streaming[c]
        if end[c][mv] <= s:
            return
        per_master: dict[int, int] = {}
        for ch, nbytes in work[c][i].shares:
            g = views[c].master_of(ch)
            if g in masters:
                per_master[g] = per_master.get(g, 0) + -(-nbytes // cfg.axi_data_bytes)
        if per_master:
            delay = min(int(max(per_master.values()) * gap), int(end[c][mv]) - s)
            end[c][mv] += delay
            free_at[c][Unit.MPE] = max(free_at[c][Unit.MPE], end[c][mv] + 1)

    def dispatch_all() -> None:
        for c in range(P):  # in program order while the target queue has room
            while next_dispatch[c] < N[c]:
                i = next_dispatch[c]
                qp = queue_prev[c][i]
                if qp >= 0 and start[c][qp] < 0:
                    break
                t = fetchers[c].whole(i, last_dispatch[c]) + 1
                if qp >= 0:
                    t = max(t, start[c][qp] + 1)
                dispatch[c][i] = t
                last_dispatch[c] = t
                next_dispatch[c] += 1

    def tokens_in(c: int, i: int) -> int:
        """The cycle the unit's head has its tokens (and room for those it releases): the control's head_ok."""
        s = dispatch[c][i] + QUEUE_LATENCY
        for j in waits_on[c][i]:
            s = max(s, end[c][j] + 1)
        for j in room_after[c][i]:
            s = max(s, start[c][j] + 1)
        return int(s)

    def earliest(c: int, u: int, i: int) -> int:
        """The cycle the unit's head may start, from what is known now."""
        s = max(tokens_in(c, i), free_at[c][u])
        if u == Unit.LD and len(ld_ends[c]) >= LD_IN_FLIGHT:  # at most LD_IN_FLIGHT LDs in flight
            s = max(s, ld_ends[c][-LD_IN_FLIGHT] + 1)
        return int(s)

    def offer(c: int, u: int) -> None:
        """Queue the unit's head once its start is known; a barrier commits once every core has reached it (its
        start and end are then known, and nothing before it in time is still to come)."""
        nonlocal remaining
        lst = order[c][u]
        if queued[c][u] or ptr[c][u] >= len(lst):
            return
        i = lst[ptr[c][u]]
        deps = waits_on[c][i]
        if dispatch[c][i] < 0 or any(end[c][j] < 0 for j in deps) or any(start[c][j] < 0 for j in room_after[c][i]):
            return
        s = earliest(c, u, i)
        queued[c][u] = True
        if i not in barrier_no[c]:
            heapq.heappush(heads, (s, c, u, i))
            return
        k = barrier_no[c][i]
        arrivals.setdefault(k, {})[c] = s
        if len(arrivals[k]) < P:
            return
        go = max(arrivals[k].values()) + (BARRIER_LATENCY if P > 1 else 0)  # the requests' and go's crossings
        for cc in range(P):
            ii = next(x for x, kk in barrier_no[cc].items() if kk == k)
            start[cc][ii] = arrivals[k][cc]
            end[cc][ii] = go + busy[cc][ii]
            free_at[cc][u] = end[cc][ii] + 1
            ptr[cc][u] += 1
            queued[cc][u] = False
            remaining -= 1

    while remaining:
        while True:  # offer every head; a barrier that completes may free more
            dispatch_all()
            before = remaining
            for c in range(P):
                for u in range(len(Unit)):
                    offer(c, u)
            if heads or remaining in (0, before):
                break
        if not remaining:
            break
        if not heads:
            def why(c: int, i: int) -> str:
                if dispatch[c][i] < 0:
                    return "not dispatched"
                need = [f"end of #{j}" for j in waits_on[c][i] if end[c][j] < 0]
                need += [f"start of #{j}" for j in room_after[c][i] if start[c][j] < 0]
                return ", ".join(need) or "the other cores at the barrier"

            stuck = [f"core {c} {Unit(u).name} at #{order[c][u][ptr[c][u]]} waits for "
                     f"{why(c, order[c][u][ptr[c][u]])}" for c in range(P) for u in range(len(Unit))
                     if ptr[c][u] < len(order[c][u])]
            raise ProgramError(f"the program deadlocks: nothing can start ({', '.join(stuck)})")
        s, c, u, i = heapq.heappop(heads)
        if i not in barrier_no[c] and earliest(c, u, i) > s:  # a stream it follows was held up since it was queued
            heapq.heappush(heads, (earliest(c, u, i), c, u, i))
            continue
        start[c][i] = s
        end[c][i] = s + busy[c][i]
        ready = end[c][i] + 1
        reserve_from = s  # the first cycle its memory traffic may take (a tile read ahead: before its start)
        if u == Unit.LD:
            ready, end[c][i] = loads[c].instruction(programs[c][i], s)
            held_up(c, i, s)
        elif u == Unit.ST:
            ready, end[c][i] = stores[c].instruction(programs[c][i], s)
        elif streamed(programs[c][i]):  # its readers share the masters with LD: behind LD's bursts in flight
            ins = programs[c][i]
            first = views[c].master_of(ins.w_channel)
            masters = range(first, first + ins.w_stripe // cfg.channels_per_master)  # the core's masters it reads
            ahead = Ahead()
            prev = order[c][u][ptr[c][u] - 1] if ptr[c][u] else -1
            # the cycle the MPE's queue head is this MV (hw/control.py: head_in), and with its tokens (head_ok); a
            # tile no instruction writes (w_early) is read ahead on the first; its tile's plan is done
            # TILE_PLAN_STAGES cycles after it is the head (hw/tile_plan.py), and nothing is read ahead before
            head_in = max(dispatch[c][i] + QUEUE_LATENCY, int(start[c][prev]) + 2 if prev >= 0 else 0)
            planned = head_in + TILE_PLAN_STAGES
            head = head_in if ins.w_early else tokens_in(c, i)
            if reports[c] is not None:
                j, before = reports[c]
                ahead.tail = before.beats_end  # its beats come after the MV before's
                if j == prev and before.fits and fits(views[c], ins):  # read ahead while that one drains (hw/mpe.py)
                    pf = max(before.asked, head, before.began + 2, planned)
                    if pf <= end[c][j]:
                        ahead.ask_from = pf - s
            if ins.w_early and ahead.ask_from == 1:  # read ahead while the MPE is idle before it (hw/mpe.py)
                pf = max(head_in, int(end[c][prev]) + 1 if prev >= 0 else 0, planned)
                if pf < s:
                    ahead.ask_from = pf - s
            # started before its plan was done, it waits in T for its own (from its fields, a cycle more to take it)
            s_run = s if s >= planned else s + TILE_PLAN_STAGES + 1
            ahead.began = s_run
            for g in masters:
                loads[c].pipe(g, s_run - 1)
            end[c][i] = s_run + streamed_mv_time(views[c], ins, loads[c].pipes, s_run, ahead)
            reserve_from = s_run + min(0, ahead.ask_from)
            reports[c] = (i, ahead)
            for p in loads[c].pipes.values():
                loads[c].settle(p)
            streaming[c] = (i, set(masters))
        # an ST's beats on masters a running stream reads go between the stream's, which ends that much later
        # (held_up): the calendar still charges them, after the stream's, but the ST does not wait for that
        beside = set()
        if u == Unit.ST and streaming[c] is not None and end[c][streaming[c][0]] > s:
            held_up(c, i, s)
            beside = streaming[c][1]
        for ch, nbytes in work[c][i].shares:  # its bytes through each channel at the sustained rate, shared
            ms, me = calendar.reserve(ch, reserve_from, nbytes)
            transfers.append((ch, nbytes, ms, me))
            if views[c].master_of(ch) in beside:
                continue
            mem_start[c][i] = ms if mem_start[c][i] < 0 else min(mem_start[c][i], ms)
            mem_end[c][i] = max(mem_end[c][i], me)
            end[c][i] = max(end[c][i], me)
        free_at[c][u] = ready if u in (Unit.LD, Unit.ST) else end[c][i] + 1
        if u == Unit.ST:
            stores[c].ends[-1] = int(end[c][i])  # the memory's calendar may have held it up
        if u == Unit.LD:
            ld_ends[c].append(int(end[c][i]))
        ptr[c][u] += 1
        queued[c][u] = False
        remaining -= 1
    cores = []
    for c, prog in enumerate(programs):
        cores.append(CoreTimeline(unit[c], np.array([int(i.opcode) for i in prog], np.int64), start[c], end[c],
                                  np.array([w.hbm_bytes for w in work[c]], np.int64),
                                  np.array([w.channel for w in work[c]], np.int64), mem_start[c], mem_end[c]))
    cycles = max(int(e.max()) for e in end) + RUN_END if remaining == 0 and any(N) else 0
    return Schedule(cfg, cores, cycles, programs, transfers)
