"""LD's timing contract: bursts asked for ahead of their data, answered after the memory's latency.

``hw/load.py``'s LD lane has an *issuer* that asks for each row's bursts (each sized in the cycle before it is asked
for, at most ``axi_outstanding`` in flight: a burst's slot frees the cycle after its last beat) and a *receiver*
that takes the beats in order and writes each to the buffer (a cycle, two when its bytes straddle
two buffer words). ``hw/sim_memory.py`` answers a burst accepted in cycle t from cycle
t + ``mem_latency_cycles`` on, back to back with the one before, and, where the channel sustains
less than a beat a cycle, no faster than its sustained rate. That is a max-plus recurrence over
bursts, computed here burst by burst; a run of identical bursts that has settled into a period is
jumped over, so a megabyte row costs a few dozen steps. The state carries over from one LD to the
next (:class:`LoadModel`): the next one's bursts follow the last one's, and with several memory
masters each LD lane (``hw/load.py``) has its own pipeline: lane g takes a striped row's units on
master g's channels when they land in its buffer bank, lane 0 every plain and gathered row and every striped row
that does not.

Conventions as in :mod:`.timing`: busy runs from the cycle after the instruction is accepted to the
cycle LD reports done.
"""
from __future__ import annotations

import math
from bisect import bisect_left
from dataclasses import dataclass, field

from flightc.config import HardwareConfig
from flightc.hw.axi_rules import AXI_BOUNDARY
from flightc.hw.latency_rules import (LD_BURST_SETUP, LD_GATHER_ADDRESS, LD_HEAD_LATENCY, LD_ID_SEEN, LD_PREP,
                                      LD_ROW_END, LD_UNIT)
from flightc.isa.footprint import own_banks, striped
from flightc.sim.perf.memory import channel_bytes_per_cycle, throttled
from flightc.sim.perf.words import span_words


@dataclass(frozen=True)
class Burst:
    """A burst's shape: its beats, the receiver's cycles for all but its last beat, and for its last."""

    beats: int
    inner: int
    last: int


def row_bursts(src: int, dst: int, nbytes: int, w: int, max_beats: int) -> list[tuple[Burst, int]]:
    """The bursts of one row as runs of (shape, count): split at 4 KiB pages and at ``max_beats``.

    ``w`` is both the beat and the buffer word (the generator builds them equal). A beat takes one
    receiver cycle, two when its bytes straddle two buffer words: the row's first and last beat by
    their own lanes, every beat between by the row's shift (``(dst + first beat's bytes) % w``).
    """
    if nbytes <= 0:
        return []
    b0, b1 = src // w, -(-(src + nbytes) // w)
    first_nb = min(nbytes, w - src % w)
    last_nb = nbytes - first_nb - (b1 - b0 - 2) * w if b1 - b0 > 1 else first_nb
    s_first = span_words(dst, first_nb, w)
    s_mid = 1 if (dst + first_nb) % w == 0 else 2
    s_last = span_words(dst + nbytes - last_nb, last_nb, w) if b1 - b0 > 1 else s_first
    # burst boundaries: (first beat, beats) runs
    page = AXI_BOUNDARY // w
    chunks: list[tuple[int, int, int]] = []  # (first beat, beats, count)
    b = b0
    while b < b1:
        page_end = min(b1, (b // page + 1) * page)
        n = page_end - b
        full, rest = divmod(n, max_beats)
        if full:
            chunks.append((b, max_beats, full))
        if rest:
            chunks.append((b + full * max_beats, rest, 1))
        b = page_end
        # whole pages in a row that split evenly into bursts join one run
        if b < b1 and page % max_beats == 0 and b1 - b >= page:
            pages = (b1 - b) // page
            chunks.append((b, max_beats, pages * (page // max_beats)))
            b += pages * page
    out: list[tuple[Burst, int]] = []

    def shape(first: int, beats: int) -> Burst:
        steps = [s_mid] * beats
        if first == b0:
            steps[0] = s_first
        if first + beats == b1:
            steps[-1] = s_last
        return Burst(beats, sum(steps[:-1]), steps[-1])

    for first, beats, count in chunks:
        # the row's first and last bursts have their own shapes; the bursts between share one
        for k0, k1 in ((0, 1), (1, count - 1), (count - 1, count)) if count > 2 else ((k, k + 1) for k in range(count)):
            if k1 > k0:
                s = shape(first + k0 * beats, beats)
                if out and out[-1][0] == s:
                    out[-1] = (s, out[-1][1] + k1 - k0)
                else:
                    out.append((s, k1 - k0))
    return out


def beat_gap(cfg: HardwareConfig) -> float:
    """Cycles per beat one channel allows a master (a beat a cycle at most)."""
    return cfg.axi_data_bytes / channel_bytes_per_cycle(cfg) if throttled(cfg) else 1.0


@dataclass
class LoadPipeline:
    """The issuer's next free cycle, the receiver's, and the last beat of each burst still holding a slot."""

    cfg: HardwareConfig
    t: float
    x_free: float = float("-inf")
    slots: list[float] = field(default_factory=list)
    shared_until: float = float("-inf")  # a streamed MV's reader asks for bursts on this master until then
    fetch: list = field(default_factory=list)  # master 0: the instruction fetch's bursts (schedule.FetchModel)

    def __post_init__(self) -> None:
        cfg = self.cfg
        self.latency, self.depth = cfg.mem_latency_cycles, cfg.axi_outstanding
        # cycles per beat the channel allows (a beat a cycle at most)
        self.gap = beat_gap(cfg)
        self.backlog = (self.depth - 1) * (cfg.stripe_bytes // cfg.axi_data_bytes) * self.gap  # a reader's bursts ahead

    def _state(self) -> tuple[float, ...]:
        return (self.t, self.x_free, *self.slots)

    def burst(self, s: Burst, setup: int = LD_BURST_SETUP) -> float:
        """Ask for one burst ``setup`` cycles on (its size worked out first) and take its beats; the cycle its last
        beat goes."""
        asked = self.t + setup
        issue = asked if len(self.slots) < self.depth else max(asked, self.slots[-self.depth] + 1)
        self.t = issue + 1
        first = max(issue + self.latency, self.x_free)
        k = bisect_left(self.fetch, (issue,))  # the fetch's bursts asked for before this one are answered first
        if k and self.fetch[k - 1][2] >= first:
            first = self.fetch[k - 1][2] + 1
        if issue < self.shared_until:  # a streamed MV's reader keeps every slot busy, asking again in the cycle one
            # frees: each LD burst waits for the reader's bursts in the other slots, then takes its turn with the
            # reader's next one (modeled, not exact: tests/rtl/test_perf_calibration.py bounds it per unit)
            first = max(first, min(self.shared_until, issue + self.backlog)) + s.beats * self.gap
        last = first + max(s.inner, (s.beats - 1) * self.gap)
        self.x_free = last + max(s.last, self.gap)
        self.slots = (self.slots + [last])[-self.depth:]
        return last

    def run(self, s: Burst, count: int, setup: int = LD_BURST_SETUP) -> None:
        """``count`` identical bursts; once two in a row moved every part of the state by one period, the rest
        are jumped over."""
        prev = None
        for k in range(count):
            self.burst(s, setup)
            state = self._state()
            if prev is not None and len(self.slots) == self.depth and len(state) == len(prev):
                shifts = [a - b for a, b in zip(state, prev)]
                if max(shifts) - min(shifts) < 1e-9:
                    jump = (count - 1 - k) * shifts[0]
                    self.t += jump
                    self.x_free += jump
                    self.slots = [x + jump for x in self.slots]
                    return
            prev = state

    def end(self) -> tuple[float, float]:
        """The instruction's end marker (it waits for a slot of the descriptor queue): the cycle the issuer is
        ready for the next instruction, and the cycle the receiver reaches the marker with every byte written."""
        mark = self.t if len(self.slots) < self.depth else max(self.t, self.slots[-self.depth] + 1)
        done = max(mark + LD_HEAD_LATENCY, self.x_free + 1)
        self.slots = (self.slots + [done])[-self.depth:]
        self.x_free = max(self.x_free, done + 1)
        self.t = mark + 1
        return mark + 1, done


ID_BURST = Burst(1, 0, 1)  # a gathered row's INT32 id: one beat, nothing written
FROM_IDLE_ENTRIES = 8192  # LD shapes whose timing from an idle LD is kept
_FROM_IDLE: dict = {}


class LoadModel:
    """LD across instructions: a pipeline per memory master (its issuer, its receiver, its bursts in flight), kept
    from one instruction to the next, since the next one's bursts follow the last one's without waiting for them."""

    def __init__(self, cfg: HardwareConfig, fetch: list | None = None):
        self.cfg = cfg
        self.fetch = fetch if fetch is not None else []  # the instruction fetch's bursts on master 0
        self.pipes: dict[int, LoadPipeline] = {}
        self.settled = float("-inf")  # from this cycle on, no pipeline has anything left in flight

    def _pipe(self, master: int, accept: float) -> LoadPipeline:
        """Master ``master``'s LD lane as of an LD accepted in cycle ``accept``: at its first row's ROW."""
        p = self.pipe(master, accept)
        p.t = max(p.t, accept + 1 + LD_PREP)
        return p

    def pipe(self, master: int, accept: float) -> LoadPipeline:
        """Master ``master``'s pipeline as of an instruction accepted in cycle ``accept`` (a streamed MV's readers
        use it too: hw/stream.py)."""
        p = self.pipes.setdefault(master, LoadPipeline(self.cfg, t=accept + 1, fetch=self.fetch if master == 0 else []))
        p.t = max(p.t, accept + 1)
        return p

    def settle(self, p: LoadPipeline) -> None:
        """Note that ``p`` has bursts in flight until its state's last cycle."""
        self._settles(p)

    def instruction(self, ins, accept: float) -> tuple[int, int]:
        """LD ``ins`` accepted in cycle ``accept``: (the cycle LD can take the next instruction, the cycle it is done)."""
        if not self._idle(accept) or (self.fetch and self.fetch[-1][2] >= accept):
            return self._compute(ins, accept)
        # nothing of the last LD is left in flight: the same as from a fresh start, which is worked out once per shape
        key = (self.cfg, tuple((k, v) for k, v in ins.fields.items() if k not in ("wait", "release")))
        hit = _FROM_IDLE.get(key)
        if hit is None:
            fresh = LoadModel(self.cfg)
            ready, done = fresh._compute(ins, 0)
            hit = (ready, done, {g: (p.t, p.x_free, tuple(p.slots)) for g, p in fresh.pipes.items()})
            if len(_FROM_IDLE) >= FROM_IDLE_ENTRIES:
                _FROM_IDLE.clear()
            _FROM_IDLE[key] = hit
        ready, done, after = hit
        for g, (t, x_free, slots) in after.items():
            p = self.pipes.setdefault(g, LoadPipeline(self.cfg, t=0.0, fetch=self.fetch if g == 0 else []))
            p.t, p.x_free, p.slots = t + accept, x_free + accept, [x + accept for x in slots]
            self._settles(p)
        return int(ready + accept), int(done + accept)

    def _idle(self, accept: float) -> bool:
        return accept >= self.settled

    def _settles(self, p: LoadPipeline) -> None:
        self.settled = max(self.settled, p.t - 1, p.x_free, max(p.slots, default=float("-inf")) + 1, p.shared_until)

    def _compute(self, ins, accept: float) -> tuple[int, int]:
        pipes = self._striped(ins, accept) if striped(ins) else [self._rows(ins, accept)]
        # the lanes past the first without a share: a striped row's ROW and UNIT states, a plain one's end marker
        for g in range(1, self.cfg.axi_masters):
            if not any(p is self.pipes.get(g) for p in pipes):
                p = self._pipe(g, accept)
                p.t += 1 + LD_ROW_END if own_banks(self.cfg, ins) else 0
                pipes.append(p)
        ends = [p.end() for p in pipes]
        for p in pipes:
            self._settles(p)
        return math.ceil(max(r for r, _ in ends)), math.ceil(max(d for _, d in ends))

    def _rows(self, ins, accept: float) -> LoadPipeline:
        """Per row: its ROW state and its bursts (a gathered row first asks for its id, waits for it and works out
        the row's address; an empty row's SIZE state finds nothing to ask for)."""
        cfg = self.cfg
        p = self._pipe(0, accept)  # lane 0, through whichever master holds the row
        for r in range(ins.rows):
            p.t += 1  # ROW
            src = ins.hbm_addr + r * ins.hbm_stride
            if ins.gather:
                x_id = p.burst(ID_BURST)
                p.t = max(p.t, x_id + LD_ID_SEEN) + LD_GATHER_ADDRESS
                src = ins.hbm_addr
            bursts = row_bursts(src, ins.buf_addr + r * ins.buf_stride, ins.row_bytes, cfg.axi_data_bytes,
                                cfg.axi_burst_beats)
            for s, count in bursts:
                p.run(s, count)
            if not bursts:
                p.t += 1  # SIZE finds the row empty
        return p

    def _striped(self, ins, accept: float) -> list[LoadPipeline]:
        """One row over ``stripe`` channels: each master's lane asks for the units on its channels, in the row's
        order, a unit at a time (its UNIT and UNIT2 states, then its bursts: aligned units are one burst each); the
        lanes run side by side, and lane 0 goes through the ROW and UNIT states even when none of the row is on its
        master. A row that does not land each unit in its master's buffer bank (:func:`own_banks`) is lane 0's
        alone, every unit in turn."""
        cfg = self.cfg
        w, unit, S = cfg.axi_data_bytes, 1 << ins.stripe_log2, ins.stripe
        units = -(-ins.row_bytes // unit)
        own = own_banks(cfg, ins)
        master_of = [cfg.master_of(ins.channel + k) if own else 0 for k in range(S)]
        pipes: dict[int, LoadPipeline] = {}

        def pipe(g: int) -> LoadPipeline:
            if g not in pipes:
                pipes[g] = self._pipe(g, accept)
                pipes[g].t += 1  # ROW
            return pipes[g]

        pipe(0)
        if ins.hbm_addr % unit == 0:  # every unit but the last alike (same lanes, no 4 KiB boundary inside)
            full = row_bursts(ins.hbm_addr, ins.buf_addr, unit, w, cfg.axi_burst_beats)
            count: dict[int, int] = {}
            for k in range(min(S, units)):
                count[master_of[k]] = count.get(master_of[k], 0) + len(range(k, units - 1, S))
            alike: dict[tuple, LoadPipeline] = {}  # masters that start alike end alike: worked out once
            for g, n in count.items():
                p = pipe(g)
                key = (n, p.t, p.x_free, tuple(p.slots))
                if key in alike:
                    done = alike[key]
                    p.t, p.x_free, p.slots = done.t, done.x_free, list(done.slots)
                    continue
                if full == [(full[0][0], 1)]:  # a burst a unit
                    p.run(full[0][0], n, LD_UNIT + LD_BURST_SETUP)
                else:
                    for _ in range(n):
                        p.t += LD_UNIT
                        for s, c in full:
                            p.run(s, c)
                alike[key] = p
            last = units - 1
            pipe(master_of[last % S]).t += LD_UNIT
            for s, c in row_bursts(ins.hbm_addr, ins.buf_addr + last * unit, ins.row_bytes - last * unit, w,
                                   cfg.axi_burst_beats):
                pipe(master_of[last % S]).run(s, c)
        else:
            for j in range(units):
                pipe(master_of[j % S]).t += LD_UNIT
                for s, c in row_bursts(ins.hbm_addr + (j // S) * unit, ins.buf_addr + j * unit,
                                       min(unit, ins.row_bytes - j * unit), w, cfg.axi_burst_beats):
                    pipe(master_of[j % S]).run(s, c)
        for p in pipes.values():
            p.t += LD_ROW_END  # UNIT finds the row done, then ROW finds the rows done
        return list(pipes.values())


def load_cycles(cfg: HardwareConfig, ins) -> int:
    """LD's busy cycles for one instruction on its own: accepted in cycle 0, done when the receiver reaches its end
    marker with every byte written."""
    return LoadModel(cfg).instruction(ins, 0)[1]
