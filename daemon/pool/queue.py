"""The pool's task queue: bounded, first in first out within each top inbox folder and taking
turns between them, and the rule for which queued tasks a member gets together. Pure
bookkeeping, the same for every backend.

Turns: a camera roll of 3,000 photos synced into `DCIM/` held a photo sent on purpose for days,
and one person's 200-iteration photos held another's (a bulk import's and a family's trials).
The next task is the oldest of the folder served least recently, so a photo waits at most one
job per other busy folder.
"""

from __future__ import annotations

import heapq
import itertools
from collections import deque
from collections.abc import Mapping, Sequence
from typing import TypeVar

from daemon.pool.task import Task

# batch_max 0 ("auto"): batches of up to this many on a GPU, where one job leaves most of the
# device idle. None on a CPU: on 2 cores a batch of 4 gave 8 % (256 px) and 19 % (512 px) fewer
# jobs per hour than one job at a time (bench/throughput.py, docs/BENCH.md); the convolutions
# already fill the cores.
AUTO_GPU_BATCH = 8

T = TypeVar("T")


def batch_size(device: str, batch_max: int) -> int:
    """The most jobs a member on `device` renders together."""
    return batch_max or (1 if device == "cpu" else AUTO_GPU_BATCH)


def in_turns(shares: Mapping[str, Sequence[T]], served: Mapping[str, int]) -> list[T]:
    """Items of every folder in the order folders taking turns hand them out: each next from
    the folder `served` least recently (-1 or absent: not since it last had nothing waiting),
    the folder listed first among equals; `shares` oldest first within each folder."""
    turns = [(served.get(share, -1), index, share) for index, share in enumerate(shares)]
    heapq.heapify(turns)
    later = max(served.values(), default=0) + 1
    taken = dict.fromkeys(shares, 0)
    order = []
    while turns:
        _, index, share = heapq.heappop(turns)
        order.append(shares[share][taken[share]])
        taken[share] += 1
        if taken[share] < len(shares[share]):
            heapq.heappush(turns, (later, index, share))
            later += 1
    return order


def _runs_on(task: Task, device: str) -> bool:
    return task.device is None or task.device == device


class TaskQueue:
    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._tasks: deque[Task] = deque()
        self._turns = itertools.count()
        self._served: dict[str, int] = {}  # top inbox folder -> its last turn

    def __len__(self) -> int:
        return len(self._tasks)

    @property
    def job_ids(self) -> list[str]:
        """In the order `take` would hand them out, one at a time (devices and batches aside):
        what `status` lists first (a re-test's finding: the next to run were listed after the
        whole camera roll, or not at all)."""
        shares: dict[str, list[Task]] = {}
        for task in self._tasks:
            shares.setdefault(task.share, []).append(task)
        return [task.job_id for task in in_turns(shares, self._served)]

    def _turn(self, share: str) -> int:
        """When `share` was last served (-1: not since it last had nothing queued); the lowest
        goes next, the oldest folder in the queue among equals."""
        return self._served.get(share, -1)

    def has_room(self) -> bool:
        return len(self._tasks) < self.limit

    def submit(self, task: Task) -> bool:
        """At the back; False when the queue is full."""
        if not self.has_room():
            return False
        self._tasks.append(task)
        return True

    def put_back(self, tasks: list[Task]) -> None:
        """At the front, in order: tasks that were first in line already (a retry, or a batch
        its member could not take). Not bounded, since they were counted before. Their folders'
        turns are given back, so they are taken first again."""
        self._tasks.extendleft(reversed(tasks))
        for task in tasks:
            self._served.pop(task.share, None)

    def take(self, device: str, size: int) -> list[Task]:
        """For a member on `device`: the oldest task it may run (an out-of-memory fallback may
        require the CPU) of the folder whose turn it is, and, up to `size` in all, the queued
        tasks that can share its forward and backward passes (same batch key and preview
        cadence), oldest first."""
        oldest: dict[str, Task] = {}
        for task in self._tasks:
            if _runs_on(task, device):
                oldest.setdefault(task.share, task)
        if not oldest:
            return []
        first = min(oldest.values(), key=lambda task: self._turn(task.share))
        # A folder with nothing queued (that this member may run) is forgotten: its next photo
        # is served first.
        self._served = {share: turn for share, turn in self._served.items() if share in oldest}
        self._served[first.share] = next(self._turns)
        batch = [first]
        if first.batch_key is not None:
            batch += [
                task
                for task in self._tasks
                if task is not first
                and task.batch_key == first.batch_key
                and task.preview_every == first.preview_every
                and _runs_on(task, device)
            ][: size - 1]
        for task in batch:
            self._tasks.remove(task)
        return batch

    def clear(self) -> None:
        self._tasks.clear()
        self._served.clear()
