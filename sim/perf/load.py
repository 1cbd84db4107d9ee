"""LD's timing contract: bursts asked for ahead of their data, answered after the memory's latency.

``hw/dma.py``'s LD has an *issuer* that asks for each row's bursts (a cycle each, at most
``axi_outstanding`` in flight: a burst's slot frees the cycle after its last beat) and a *receiver*
that takes the beats in order and writes each to the buffer (a cycle, two when its bytes straddle
two buffer words). ``hw/sim_memory.py`` answers a burst accepted in cycle t from cycle
t + ``mem_latency_cycles`` on, back to back with the one before, and, where the channel sustains
less than a beat a cycle, no faster than its sustained rate. That is a max-plus recurrence over
bursts, computed here burst by burst; a run of identical bursts that has settled into a period is
jumped over, so a megabyte row costs a few dozen steps.

Conventions as in :mod:`.timing`: busy runs from the cycle after the instruction is accepted to the
cycle LD reports done.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from flightc.config import HardwareConfig
from flightc.hw.axi_rules import AXI_BOUNDARY
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


@dataclass
class LoadPipeline:
    """The issuer's next free cycle, the receiver's, and the last beat of each burst still holding a slot."""

    cfg: HardwareConfig
    t: float
    x_free: float = float("-inf")
    slots: list[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        cfg = self.cfg
        self.latency, self.depth = cfg.mem_latency_cycles, cfg.axi_outstanding
        # cycles per beat the channel allows (a beat a cycle at most)
        self.gap = cfg.axi_data_bytes / channel_bytes_per_cycle(cfg) if throttled(cfg) else 1.0

    def _state(self) -> tuple[float, ...]:
        return (self.t, self.x_free, *self.slots)

    def burst(self, s: Burst) -> float:
        """Ask for one burst and take its beats; the cycle its last beat goes."""
        issue = self.t if len(self.slots) < self.depth else max(self.t, self.slots[-self.depth] + 1)
        self.t = issue + 1
        first = max(issue + self.latency, self.x_free)
        last = first + max(s.inner, (s.beats - 1) * self.gap)
        self.x_free = last + max(s.last, self.gap)
        self.slots = (self.slots + [last])[-self.depth:]
        return last

    def run(self, s: Burst, count: int) -> None:
        """``count`` identical bursts; once two in a row moved every part of the state by one period, the rest
        are jumped over."""
        prev = None
        for k in range(count):
            self.burst(s)
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


def load_cycles(cfg: HardwareConfig, ins) -> int:
    """LD's busy cycles: per row its ROW state, its bursts (a gathered row first asks for its id and waits for it)
    and the AR state that finds the row done; then DRAIN until the last beat is written."""
    w = cfg.axi_data_bytes
    p = LoadPipeline(cfg, t=1.0)  # the instruction is accepted in cycle 0; ROW of row 0 is cycle 1
    id_burst = Burst(1, 0, 1)
    for r in range(ins.rows):
        p.t += 1  # ROW
        src = ins.hbm_addr + r * ins.hbm_stride
        if ins.gather:
            x_id = p.burst(id_burst)
            p.t = max(p.t, x_id + 2)  # the id is seen the cycle after its beat, the row asked for the next
            src = ins.hbm_addr
        for s, count in row_bursts(src, ins.buf_addr + r * ins.buf_stride, ins.row_bytes, w, cfg.axi_burst_beats):
            p.run(s, count)
        p.t += 1  # AR finds the row done
    done = max(p.t + 1, p.x_free + 1)  # DRAIN, from the cycle after ROW finds the rows done
    return int(-(-done // 1))
