"""When a queued job may start: the workers' pace, learned from this daemon's own renders, laid
over the queue in the order the pool takes it.

A render's cost grows with its pixels times its iterations at every scale (`planned_work`), on
top of a fixed part, so one pace fitted to the last `KEPT` renders serves photos of every size.
Each render's time is divided by the jobs its batch rendered at once, so a GPU that batches
eight photos is paced at what each costs it. Before this daemon has finished a render
it has no pace, and no estimate is shown: a guess from another machine would be worse than
none. Workers on different devices share one pace: the estimate is "about".
"""

from __future__ import annotations

import heapq
import itertools
import statistics
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from daemon.jobs.live import Running
from daemon.jobs.record import Job
from daemon.pool.api import WorkerState
from daemon.pool.events import ResultInfo
from service import schedule
from service.params import RenderParams

KEPT = 20


def planned_work(params: RenderParams) -> float:
    """Iterations times the long side squared over every pass the job may run: what the
    engine's own time estimate counts (`service.progress`), with every cap in full."""
    return float(sum(stage.iterations * stage.long_side**2 for stage in schedule.plan(params)))


@dataclass
class Pace:
    """A worker's seconds for a job of a given `planned_work`, from the renders this daemon
    finished: a fixed part (decoding, the style's statistics, encoding) plus a part that grows
    with the work, fitted robustly (Theil-Sen: the median of the slopes between every two
    renders), so a slow outlier or a tiny test render does not set the pace. Where the kept
    renders all had the same work, their median, in proportion."""

    samples: deque[tuple[float, float]] = field(default_factory=lambda: deque(maxlen=KEPT))
    _fit: tuple[float, float] | None = None  # (fixed seconds, seconds per unit), once asked

    def record(self, info: ResultInfo) -> None:
        seconds = info.timings.worker_total_seconds
        work = planned_work(info.params)
        if seconds > 0 and work > 0:
            self.samples.append((work, seconds / max(1, info.batch_size)))
            self._fit = None

    def seconds(self, params: RenderParams) -> float | None:
        """How long a job of `params` takes a worker, or None before any render finished."""
        if not self.samples:
            return None
        if self._fit is None:
            self._fit = self._fitted()
        fixed, slope = self._fit
        return fixed + slope * planned_work(params)

    def _fitted(self) -> tuple[float, float]:
        slopes = [
            (s2 - s1) / (w2 - w1)
            for (w1, s1), (w2, s2) in itertools.combinations(self.samples, 2)
            if w1 != w2
        ]
        if not slopes:
            return 0.0, statistics.median(s / w for w, s in self.samples)
        slope = max(0.0, statistics.median(slopes))
        return max(0.0, statistics.median(s - slope * w for w, s in self.samples)), slope


def start_in(busy_for: Sequence[float | None], durations: Sequence[float | None]) -> list[float]:
    """Seconds until each queued job starts, in queue order, given how long each worker is
    still busy (0: idle) and how long each job takes; each job goes to the worker free first.
    Cut after a job whose time is unknown: what follows it is unknown too."""
    if any(busy is None for busy in busy_for) or not busy_for:
        return []
    free = [float(busy) for busy in busy_for if busy is not None]
    heapq.heapify(free)
    starts = []
    for duration in durations:
        start = heapq.heappop(free)
        starts.append(start)
        if duration is None:
            break
        heapq.heappush(free, start + duration)
    return starts


def queue_starts(
    queued: Sequence[Job],
    running: Iterable[Running],
    workers: Sequence[WorkerState],
    pace: Pace,
    now: float,
) -> dict[str, float]:
    """Seconds until each of `queued` (in the pool's order) starts, for those that can be
    estimated. A worker is busy for what its slowest running job has left: the engine's own
    estimate once it reported progress, else the pace's less what has run; none is estimated
    while no member is up."""
    # Only members that can take a job: one still starting (a Ray cluster down, or without
    # room) is no free worker, which said "starts in about 0 s" for minutes (an operator's trial).
    left: dict[int, float | None] = {w.worker: 0.0 for w in workers if w.state != "starting"}
    for job in running:
        if job.last is not None:
            remaining: float | None = job.last.eta
        else:
            whole = pace.seconds(job.job.params)
            remaining = None if whole is None else max(0.0, whole - (now - job.started))
        before = left.get(job.worker, 0.0)
        left[job.worker] = None if remaining is None or before is None else max(before, remaining)
    starts = start_in(list(left.values()), [pace.seconds(job.params) for job in queued])
    return {job.id: start for job, start in zip(queued, starts, strict=False)}
