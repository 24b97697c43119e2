"""The worker pool: processes per device, a bounded first-in first-out queue, and the rules for
jobs that go wrong (timeout, crash, out-of-memory) and for workers that die.

Everything here runs in the daemon's main thread, driven by `poll()`; the workers are separate
processes (spawned, so no CUDA state is ever forked). The pool does not know about files: a job
arrives as a `Task` and leaves as a `PoolEvent`, and the daemon keeps the durable record.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import structlog

from daemon.pool.worker import CANCEL, Message, Task, WorkerSpec, worker_main

if TYPE_CHECKING:
    from daemon.config import Settings

log = structlog.get_logger(__name__)

OomFallback = Literal["smaller", "cpu", "fail"]
OOM_SHRINK = 0.7  # each out-of-memory retry renders at 70 % of the previous long side
MIN_SIZE = 16
CANCEL_WAIT = 10.0  # seconds a worker gets to stop after `cancel` before it is killed
RESPAWN_BACKOFF_MAX = 60.0
# batch_max 0 ("auto"): batches of up to this many on a GPU, where one job leaves most of the
# device idle. None on a CPU: on 2 cores a batch of 4 gave 8 % (256 px) and 19 % (512 px) fewer
# jobs per hour than one job at a time (bench/throughput.py, docs/BENCH.md); the convolutions
# already fill the cores.
AUTO_GPU_BATCH = 8


class PoolError(Exception):
    """No worker could start (e.g. the weights are missing); the message says why."""


@dataclass
class PoolEvent:
    """What happened to a job: started | progress | done | failed | retry | cancelled."""

    kind: str
    job_id: str
    task: Task
    data: dict[str, Any] = field(default_factory=dict)


@dataclass
class _Worker:
    spec: WorkerSpec
    process: BaseProcess
    conn: Connection
    state: Literal["starting", "idle", "busy", "gone"] = "starting"
    tasks: list[Task] = field(default_factory=list)  # the batch it is rendering, unfinished
    task_started: float = 0.0
    cancel_sent: float | None = None
    loaded_at: float | None = None


def visible_devices() -> list[str]:
    """What 'auto' means: every visible CUDA GPU, else MPS, else the CPU. Asked of a short-lived
    child process, so the daemon itself never imports torch (and stays small)."""
    if sys.platform.startswith("linux") and not Path("/proc/driver/nvidia/gpus").exists():
        return ["cpu"]
    probe = (
        "import torch\n"
        "n = torch.cuda.device_count() if torch.cuda.is_available() else 0\n"
        "mps = getattr(torch.backends, 'mps', None)\n"
        "print(' '.join(f'cuda:{i}' for i in range(n)) or "
        "('mps' if mps and mps.is_available() else 'cpu'))\n"
    )
    try:
        out = subprocess.run(
            [sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=True
        ).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        log.warning("pool.device_probe_failed", error=str(exc))
        return ["cpu"]
    return out.split() or ["cpu"]


def expand_devices(devices: list[str]) -> list[str]:
    return visible_devices() if devices == ["auto"] else list(devices)


def cpu_threads(cpu_workers: int) -> int:
    """Split the cores between CPU workers, so two workers do not fight over every core."""
    return max(1, (os.cpu_count() or 1) // max(1, cpu_workers))


class Pool:
    """Worker processes and the job queue."""

    MEMBER = "worker"  # what runs jobs, in messages

    def __init__(
        self,
        devices: list[str],
        workers_per_device: int = 1,
        *,
        job_timeout: float = 3600.0,
        retries: int = 1,
        oom_fallback: OomFallback = "smaller",
        queue_max: int = 10_000,
        batch_max: int = 0,
        progress_every: int = 10,
        warm_params: dict[str, Any] | None = None,
        weights: dict[str, Any] | None = None,
        compile: bool = False,
    ) -> None:
        self.devices = expand_devices(devices)
        self.workers_per_device = workers_per_device
        self.job_timeout = job_timeout
        self.retries = retries
        self.oom_fallback = oom_fallback
        self.queue_max = queue_max
        self.batch_max = batch_max
        self.progress_every = progress_every
        self.warm_params = warm_params or {}
        self.weights = weights or {}
        self.compile = compile
        self._context = multiprocessing.get_context("spawn")
        self._queue: deque[Task] = deque()
        self._workers: dict[int, _Worker] = {}
        self._next_id = 0
        self._load_errors: list[str] = []
        self._pending_respawn: list[tuple[float, str]] = []  # (when, device) of replacements
        self._respawn_failures: dict[str, int] = {}  # device -> consecutive failed starts
        self._stopping = False

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        for device in self.devices:
            for _ in range(self.workers_per_device):
                self._spawn(device)

    def _spec(self, device: str) -> WorkerSpec:
        cpu_workers = sum(1 for d in self.devices if d == "cpu") * self.workers_per_device
        threads = cpu_threads(cpu_workers) if device == "cpu" else None
        spec = WorkerSpec(
            worker_id=self._next_id,
            device=device,
            threads=threads,
            progress_every=self.progress_every,
            warm_params=self.warm_params,
            weights=self.weights,
            compile=self.compile,
        )
        self._next_id += 1
        return spec

    def _spawn(self, device: str) -> _Worker:
        spec = self._spec(device)
        ours, theirs = self._context.Pipe(duplex=True)
        process = self._context.Process(
            target=worker_main, args=(spec, theirs), name=f"stylefold-worker-{spec.worker_id}"
        )
        process.daemon = True
        process.start()
        theirs.close()
        worker = _Worker(spec=spec, process=process, conn=ours)
        self._workers[spec.worker_id] = worker
        log.info("pool.worker_started", worker=spec.worker_id, device=device, pid=process.pid)
        return worker

    def wait_ready(self, timeout: float, tick: Callable[[], bool] = lambda: False) -> None:
        """Block until every worker has loaded its network. Raises PoolError when none could,
        or when the time runs out before any did. `tick` runs every turn (heartbeats) and
        ends the wait early by returning True (a stop signal)."""
        deadline = time.monotonic() + timeout
        while "starting" in self._states():
            if time.monotonic() > deadline or tick():
                break
            self.poll(0.2)
        if not self.ready_workers():
            reasons = "; ".join(dict.fromkeys(self._load_errors)) or (
                f"no {self.MEMBER} loaded its network within {timeout:.0f} s"
            )
            raise PoolError(f"no worker could start: {reasons}")

    def _states(self) -> list[str]:
        return [worker.state for worker in self._workers.values()]

    def stop(self, timeout: float = 10.0) -> None:
        """Ask idle workers to exit, then kill whatever is left after `timeout`."""
        self._stopping = True
        for worker in self._workers.values():
            with contextlib.suppress(OSError, BrokenPipeError):
                worker.conn.send(None)
        deadline = time.monotonic() + timeout
        for worker in self._workers.values():
            worker.process.join(max(0.0, deadline - time.monotonic()))
            if worker.process.is_alive():
                worker.process.kill()
                worker.process.join(5)
            worker.conn.close()
        self._workers.clear()

    # -- queue -------------------------------------------------------------------------------

    @property
    def queued(self) -> list[str]:
        return [task.job_id for task in self._queue]

    @property
    def running(self) -> dict[str, tuple[int, str, float]]:
        """job id -> (worker id, device, monotonic start)."""
        return {
            task.job_id: (w.spec.worker_id, w.spec.device, w.task_started)
            for w in self._workers.values()
            if w.state == "busy"
            for task in w.tasks
        }

    def ready_workers(self) -> int:
        return sum(1 for state in self._states() if state in ("idle", "busy"))

    def has_room(self) -> bool:
        return len(self._queue) < self.queue_max

    def submit(self, task: Task) -> bool:
        """Queue a task (first in, first out); False when the queue is full."""
        if not self.has_room():
            return False
        self._queue.append(task)
        return True

    def cancel_running(self) -> None:
        """Ask every busy worker to stop its job (the job then reports `cancelled`)."""
        now = time.monotonic()
        for worker in self._workers.values():
            if worker.state == "busy" and worker.cancel_sent is None:
                with contextlib.suppress(OSError, BrokenPipeError):
                    worker.conn.send(CANCEL)
                worker.cancel_sent = now

    def drop_queued(self) -> list[Task]:
        """Empty the queue (at shutdown: those jobs stay in the spool for the next start)."""
        tasks = list(self._queue)
        self._queue.clear()
        return tasks

    def drain(self) -> None:
        """Shutting down: start nothing new, and hand back (as `cancelled`) what would be
        retried, so it runs again at the next start instead of failing now."""
        self._stopping = True
        self.drop_queued()

    # -- the loop ----------------------------------------------------------------------------

    def poll(self, timeout: float) -> list[PoolEvent]:
        """Dispatch, wait up to `timeout` for worker messages, and police timeouts and deaths."""
        events: list[PoolEvent] = []
        self._dispatch(events)
        live = list(self._workers.values())
        conns: dict[object, _Worker] = {w.conn: w for w in live}
        sentinels: dict[object, _Worker] = {w.process.sentinel: w for w in live}
        waitables = [w.conn for w in live] + [w.process.sentinel for w in live]
        ready: list[object] = list(wait(waitables, timeout)) if live else []
        if not live:
            time.sleep(timeout)
        for item in ready:
            if item in conns:
                self._drain(conns[item], events)
        for item in ready:
            worker = sentinels.get(item)
            if worker is not None and worker.state != "gone":
                self._drain(worker, events)
                worker.process.join(1)
                self._lost(worker, events, self._exit_reason(worker), "crash")
        self._police(events)
        self._respawn_due()
        self._dispatch(events)
        return events

    def _dispatch(self, events: list[PoolEvent]) -> None:
        if self._stopping:
            return
        for worker in sorted(self._workers.values(), key=lambda w: w.spec.worker_id):
            if worker.state != "idle" or not self._queue:
                continue
            task = self._take_for(worker.spec.device)
            if task is None:
                continue
            batch = [task, *self._batch_mates(task, worker.spec.device)]
            try:
                worker.conn.send(batch)
            except (OSError, BrokenPipeError):
                self._queue.extendleft(reversed(batch))
                continue
            worker.state = "busy"
            worker.tasks = batch
            worker.task_started = time.monotonic()
            worker.cancel_sent = None

    def _take_for(self, device: str) -> Task | None:
        """The oldest task this device may run (an out-of-memory fallback may require the CPU)."""
        for index, task in enumerate(self._queue):
            if task.device is None or task.device == device:
                del self._queue[index]
                return task
        return None

    def _batch_size(self, device: str) -> int:
        return self.batch_max or (1 if device == "cpu" else AUTO_GPU_BATCH)

    def may_batch(self) -> bool:
        """Whether any worker may get a batch of several jobs (else batch keys are moot)."""
        return any(self._batch_size(device) > 1 for device in self.devices)

    def _batch_mates(self, first: Task, device: str) -> list[Task]:
        """Queued tasks that can share `first`'s forward and backward passes (same batch key:
        styles, parameters and output size), oldest first, up to the batch size in all."""
        size = self._batch_size(device)
        if first.batch_key is None or size <= 1:
            return []
        mates = [
            task
            for task in self._queue
            if task.batch_key == first.batch_key and task.device in (None, device)
        ][: size - 1]
        for task in mates:
            self._queue.remove(task)
        return mates

    def _drain(self, worker: _Worker, events: list[PoolEvent]) -> None:
        try:
            while worker.conn.poll():
                self._handle(worker, worker.conn.recv(), events)
        except (EOFError, OSError):
            pass

    def _handle(self, worker: _Worker, message: Message, events: list[PoolEvent]) -> None:
        if message.kind == "ready":
            worker.state = "idle"
            worker.loaded_at = time.monotonic()
            self._respawn_failures.pop(worker.spec.device, None)
            log.info("pool.worker_ready", worker=worker.spec.worker_id, **message.data)
            return
        if message.kind == "load_failed":
            self._load_errors.append(f"{worker.spec.device}: {message.data.get('error')}")
            log.error("pool.worker_load_failed", worker=worker.spec.worker_id, **message.data)
            return
        task = next((t for t in worker.tasks if t.job_id == message.job_id), None)
        if task is None:
            return  # a late message about a job this worker no longer holds
        if message.kind == "started":
            events.append(PoolEvent("started", task.job_id, task, {
                "worker": worker.spec.worker_id, "device": worker.spec.device, **message.data,
            }))  # fmt: skip
        elif message.kind == "progress":
            events.append(PoolEvent("progress", task.job_id, task, message.data))
        elif message.kind == "done":
            self._release(worker, task)
            events.append(PoolEvent("done", task.job_id, task, message.data))
        elif message.kind == "failed":
            self._release(worker, task)
            self._job_failed(task, str(message.data.get("kind")), message.data, events)

    def _release(self, worker: _Worker, task: Task) -> None:
        """One job of the worker's batch has ended; the worker is free when all have."""
        worker.tasks.remove(task)
        if not worker.tasks:
            worker.state = "idle"
            worker.cancel_sent = None

    @staticmethod
    def _exit_reason(worker: _Worker) -> str:
        code = worker.process.exitcode
        if code is not None and code < 0:
            with contextlib.suppress(ValueError):
                return f"the worker process was killed by {signal.Signals(-code).name}"
        return f"the worker process exited with code {code}"

    def _lost(self, worker: _Worker, events: list[PoolEvent], reason: str, kind: str) -> None:
        """A worker died or was killed: its jobs are cancelled, retried or failed as `kind`; the
        worker is replaced (with a growing delay when it keeps dying before it is ready)."""
        tasks, was_cancelled = worker.tasks, worker.cancel_sent is not None
        worker.state = "gone"
        worker.tasks = []
        worker.process.join(1)
        worker.conn.close()
        del self._workers[worker.spec.worker_id]
        delay = 0.0
        if worker.loaded_at is None:
            self._load_errors.append(f"{worker.spec.device}: {reason} while loading")
            failures = self._respawn_failures.get(worker.spec.device, 0) + 1
            self._respawn_failures[worker.spec.device] = failures
            delay = min(RESPAWN_BACKOFF_MAX, 2.0**failures)
        log.warning("pool.worker_lost", worker=worker.spec.worker_id, reason=reason,
                    job_ids=[task.job_id for task in tasks])  # fmt: skip
        if not self._stopping:
            self._pending_respawn.append((time.monotonic() + delay, worker.spec.device))
        for task in tasks:
            if was_cancelled:
                events.append(PoolEvent("cancelled", task.job_id, task, {"reason": reason}))
            else:
                self._job_failed(task, kind, {"error": reason}, events)

    def _respawn_due(self) -> None:
        now = time.monotonic()
        due = [entry for entry in self._pending_respawn if entry[0] <= now]
        for entry in due:
            self._pending_respawn.remove(entry)
            self._spawn(entry[1])

    def _police(self, events: list[PoolEvent]) -> None:
        now = time.monotonic()
        for worker in list(self._workers.values()):
            if worker.state != "busy" or not worker.tasks:
                continue
            # A batch of n jobs may take up to n jobs' time (on a CPU it does).
            limit = self.job_timeout * len(worker.tasks)
            if worker.cancel_sent is not None and now - worker.cancel_sent > CANCEL_WAIT:
                reason, kind = "the worker did not stop when asked", "cancelled"
            elif now - worker.task_started > limit:
                reason, kind = f"the job ran past job_timeout ({self.job_timeout:g} s)", "timeout"
            else:
                continue
            worker.process.kill()
            worker.process.join(5)
            self._lost(worker, events, reason, kind)

    # -- retry rules -------------------------------------------------------------------------

    def _job_failed(
        self, task: Task, kind: str, data: dict[str, Any], events: list[PoolEvent]
    ) -> None:
        if kind == "cancelled":
            events.append(PoolEvent("cancelled", task.job_id, task, data))
            return
        retry = self._retry_of(task, kind, batched=int(data.get("batch_size") or 1) > 1)
        if retry is not None and self._stopping:
            events.append(PoolEvent("cancelled", task.job_id, task, {**data, "kind": kind}))
            return
        if retry is not None:
            self._queue.appendleft(retry)  # it was first in line already
            events.append(PoolEvent("retry", task.job_id, retry, {
                **data, "kind": kind, "attempt": retry.attempt, "size": retry.params.get("size"),
                "device": retry.device,
            }))  # fmt: skip
            return
        events.append(PoolEvent("failed", task.job_id, task, {
            **data, "kind": kind, "reason": self.explain(task, kind, data),
        }))  # fmt: skip

    def _retry_of(self, task: Task, kind: str, batched: bool = False) -> Task | None:
        """The next attempt, or None. A retry runs alone (batch_key None): whatever went
        wrong in a batch (`batched`: the job failed in a batch of several) should not take
        its companions down a second time."""
        attempt = task.attempt + 1
        if kind == "oom" and batched:
            # The batch did not fit, not the job: the same size again, alone, whatever the
            # retry settings (the batch was stylefold's choice, not the user's).
            return replace(task, attempt=attempt, batch_key=None)
        if task.attempt > self.retries:
            return None
        task = replace(task, batch_key=None)
        if kind in ("crash", "timeout", "internal"):
            return replace(task, attempt=attempt)
        if kind != "oom" or self.oom_fallback == "fail":
            return None
        if self.oom_fallback == "cpu":
            if task.device == "cpu":
                return None
            if "cpu" not in self.devices:
                self.devices.append("cpu")
                self._spawn("cpu")
            return replace(task, attempt=attempt, device="cpu")
        size = int(task.params.get("size", 512))
        smaller = max(MIN_SIZE, int(size * OOM_SHRINK))
        if smaller >= size:
            return None
        return replace(task, attempt=attempt, params={**task.params, "size": smaller})

    def explain(self, task: Task, kind: str, data: dict[str, Any]) -> str:
        """The failure in words, with what to change."""
        size = task.params.get("size")
        tries = f"{task.attempt} attempt{'s' if task.attempt > 1 else ''}"
        if kind == "timeout":
            return (
                f"the job took longer than job_timeout ({self.job_timeout:g} s) after {tries}; "
                f"lower params.size (now {size}) or params.iterations, or raise job_timeout"
            )
        if kind == "crash":
            return (
                f"{data.get('error')} while rendering ({tries}); this usually means the machine "
                f"ran out of memory: lower params.size (now {size}) or the image's resolution"
            )
        if kind == "oom":
            return (
                f"out of memory on {task.device or 'the device'} at size {size} ({tries}); "
                "lower params.size, or set oom_fallback to 'smaller' or 'cpu'"
            )
        if kind == "internal":
            return f"internal error: {data.get('error')}; please report it with the job's log"
        return str(data.get("error"))


def make_pool(settings: Settings) -> Pool:
    """The pool the settings ask for: local worker processes, or actors on a Ray cluster."""
    common: dict[str, Any] = {
        "job_timeout": settings.job_timeout,
        "retries": settings.retries,
        "oom_fallback": settings.oom_fallback,
        "queue_max": settings.queue_max,
        "warm_params": settings.defaults.model_dump(mode="json"),
        "weights": settings.weights.model_dump(mode="json"),
        "compile": settings.compile,
    }
    if settings.backend == "ray":
        from daemon.pool.ray_backend import RayPool

        return RayPool(settings.ray_address, settings.ray_cpu_actors, **common)
    return Pool(
        settings.devices, settings.workers_per_device, batch_max=settings.batch_max, **common
    )
