"""The pool's task queue: bounded, first in first out, and the rule for which queued tasks a
member gets together. Pure bookkeeping, the same for every backend."""

from __future__ import annotations

from collections import deque

from daemon.pool.task import Task

# batch_max 0 ("auto"): batches of up to this many on a GPU, where one job leaves most of the
# device idle. None on a CPU: on 2 cores a batch of 4 gave 8 % (256 px) and 19 % (512 px) fewer
# jobs per hour than one job at a time (bench/throughput.py, docs/BENCH.md); the convolutions
# already fill the cores.
AUTO_GPU_BATCH = 8


def batch_size(device: str, batch_max: int) -> int:
    """The most jobs a member on `device` renders together."""
    return batch_max or (1 if device == "cpu" else AUTO_GPU_BATCH)


def _runs_on(task: Task, device: str) -> bool:
    return task.device is None or task.device == device


class TaskQueue:
    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._tasks: deque[Task] = deque()

    def __len__(self) -> int:
        return len(self._tasks)

    @property
    def job_ids(self) -> list[str]:
        return [task.job_id for task in self._tasks]

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
        its member could not take). Not bounded, since they were counted before."""
        self._tasks.extendleft(reversed(tasks))

    def take(self, device: str, size: int) -> list[Task]:
        """For a member on `device`: the oldest task it may run (an out-of-memory fallback may
        require the CPU) and, up to `size` in all, the queued tasks that can share its forward
        and backward passes (same batch key and preview cadence), oldest first."""
        first = next((task for task in self._tasks if _runs_on(task, device)), None)
        if first is None:
            return []
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
