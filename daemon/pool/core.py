"""The pool: one queue, one set of retry rules and one account of its members, whatever the
members are. A backend (`Members`: local worker processes, Ray actors) only starts them, hands
them work and passes on what they say; everything that decides lives here.

It runs in the daemon's main thread, driven by `poll()`, and knows nothing of files: a job
arrives as a `Task` and leaves as `PoolEvent`s; the daemon keeps the durable record.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Protocol

import structlog

from daemon.pool import retry
from daemon.pool.api import (
    ClusterUnavailable,
    LoadTrouble,
    MemberState,
    Outage,
    PoolError,
    PoolPolicy,
    SetupError,
    WorkerState,
)
from daemon.pool.events import (
    Cancelled,
    Done,
    Failed,
    FailureKind,
    PoolEvent,
    Requeued,
    Retrying,
    Started,
)
from daemon.pool.messages import (
    JobDone,
    JobFailed,
    JobProgress,
    JobStarted,
    MemberLost,
    Report,
    WorkerLoadFailed,
    WorkerReady,
)
from daemon.pool.queue import TaskQueue, batch_size
from daemon.pool.task import Task

log = structlog.get_logger(__name__)

CANCEL_WAIT = 10.0  # seconds a member gets to stop after a cancel before it is killed
RESPAWN_BACKOFF_MAX = 60.0
# Load failures older than this no longer count as trouble: over two of the longest waits
# between replacements, so a failure that repeats keeps it set.
LOAD_TROUBLE_WINDOW = 2.5 * RESPAWN_BACKOFF_MAX
# Load failures the settings decide: a device the machine lacks, weights that do not load.
SETUP_KINDS: frozenset[FailureKind] = frozenset({"device", "weights"})
LOAD_ERRORS_KEPT = 20  # the latest reasons members could not load, for wait_ready's error


class Members(Protocol):
    """What a backend does for the pool. Members are named by the pool's worker ids."""

    kind: str  # what runs jobs, in messages: "worker", "Ray actor"
    batches: bool  # whether a member renders several jobs at once
    devices: list[str]  # what members run on; `spawn` adds a device it has not seen
    outage: Outage | None  # set while their cluster cannot be reached

    def open(self, tick: Callable[[], bool]) -> list[str]:
        """Get ready (e.g. join the cluster); the device of each member to start. `tick` runs
        while it waits; when it returns True, give up and start nothing."""
        ...

    def spawn(self, worker_id: int, device: str) -> int | None:
        """Start a member that loads its network and then reports `WorkerReady` (or
        `WorkerLoadFailed`); its process id when known now."""
        ...

    def send(self, worker_id: int, tasks: list[Task]) -> bool:
        """Hand a batch to an idle member; False when it cannot be reached (it is dying, and
        will be reported lost)."""
        ...

    def cancel(self, worker_id: int, tasks: list[Task]) -> None: ...

    def remove(self, worker_id: int) -> None:
        """Kill the member if it still runs, and forget it (no more reports about it)."""
        ...

    def receive(self, timeout: float) -> list[Report]:
        """What the members said, waiting up to `timeout` for the first word; a job's progress
        comes before its end."""
        ...

    def close(self, timeout: float) -> None:
        """End every member: ask, then kill what is left after `timeout`."""
        ...


@dataclass
class _Member:
    worker_id: int
    device: str
    pid: int | None = None
    node: str | None = None
    state: MemberState = "starting"
    loaded: bool = False
    load_failed: bool = False  # it said why (WorkerLoadFailed) before it went
    tasks: list[Task] = field(default_factory=list)  # the batch it renders, unfinished
    task_started: float = 0.0
    cancel_sent: float | None = None
    started_at: float = field(default_factory=time.time)  # epoch, for status

    def holding(self, job_id: str, attempt: int) -> Task | None:
        return next((t for t in self.tasks if t.job_id == job_id and t.attempt == attempt), None)


class Pool:
    """The `WorkerPool` (daemon.pool.api) over any `Members`."""

    def __init__(self, members: Members, policy: PoolPolicy | None = None) -> None:
        self.members = members
        self.policy = policy or PoolPolicy()
        self._queue = TaskQueue(self.policy.queue_max)
        self._members: dict[int, _Member] = {}
        self._next_id = 0
        self._load_errors: list[str] = []
        self._load_kinds: set[FailureKind] = set()  # why members failed to load, by kind
        self._trouble: LoadTrouble | None = None  # the latest run of load failures
        self._trouble_at = -math.inf  # time.monotonic() of its latest failure
        self._pending_respawn: list[tuple[float, str]] = []  # (when, device) of replacements
        self._respawn_failures: dict[str, int] = {}  # device -> consecutive failed starts
        self._cluster_lost = False  # a member went with its whole cluster
        self._stopping = False

    # -- lifecycle ---------------------------------------------------------------------------

    @property
    def devices(self) -> list[str]:
        return self.members.devices

    def start(self, tick: Callable[[], bool] = lambda: False) -> None:
        for device in self.members.open(tick):
            self._spawn(device)

    def _spawn(self, device: str) -> None:
        worker_id, self._next_id = self._next_id, self._next_id + 1
        pid = self.members.spawn(worker_id, device)
        self._members[worker_id] = _Member(worker_id, device, pid)
        # While a cluster is away every try starts members that it loses at once: the outage
        # is logged (`pool.ray_unreachable`), its members' comings and goings only at debug
        # (a Ray operator's trial: eight lines a minute for as long as the outage lasted).
        say = log.debug if self.members.outage is not None else log.info
        say("pool.worker_started", worker=worker_id, device=device, pid=pid)

    def wait_ready(self, timeout: float, tick: Callable[[], bool] = lambda: False) -> None:
        deadline = time.monotonic() + timeout
        while any(m.state == "starting" for m in self._members.values()):
            if time.monotonic() > deadline or tick():
                break
            self.poll(0.2)
        if not self.ready_workers() and not tick():  # stopping is no error
            reasons = "; ".join(dict.fromkeys(self._load_errors)) or (
                f"no {self.members.kind} loaded its network within {timeout:.0f} s"
            )
            error = ClusterUnavailable if self._cluster_lost else PoolError
            if self._load_kinds and self._load_kinds <= SETUP_KINDS:
                error = SetupError
            raise error(f"no worker could start: {reasons}")

    def ready_workers(self) -> int:
        return sum(1 for member in self._members.values() if member.loaded)

    @property
    def outage(self) -> Outage | None:
        return self.members.outage

    def load_trouble(self) -> LoadTrouble | None:
        """A Ray operator's trial: after a reconnect to nodes upgraded meanwhile, every actor
        refused to load (another stylefold version), a job waited in the queue for good, and
        `status` said nothing; only the log did."""
        if time.monotonic() - self._trouble_at > LOAD_TROUBLE_WINDOW:
            return None
        return self._trouble

    def _load_failed(self, kind: FailureKind, why: str, with_cluster: bool = False) -> None:
        """A member could not load: its reason for `wait_ready`'s error and, but where its
        cluster went (an outage is said as one: `outage`), for `load_trouble`."""
        self._load_kinds.add(kind)
        self._load_errors.append(why)
        del self._load_errors[:-LOAD_ERRORS_KEPT]
        if with_cluster:
            return
        if (trouble := self.load_trouble()) is None:
            self._trouble = LoadTrouble(1, why, time.time())
        else:
            self._trouble = replace(trouble, failures=trouble.failures + 1, reason=why)
        self._trouble_at = time.monotonic()

    def workers(self) -> list[WorkerState]:
        return [
            WorkerState(m.worker_id, m.device, m.state, m.pid, m.node, m.started_at)
            for m in sorted(self._members.values(), key=lambda m: m.worker_id)
        ]

    def configure(self, policy: PoolPolicy) -> None:
        self.policy = policy
        self._queue.limit = policy.queue_max

    def drain(self) -> None:
        self._stopping = True
        self._queue.clear()

    def stop(self, timeout: float = 10.0) -> None:
        self._stopping = True
        self.members.close(timeout)
        self._members.clear()

    # -- queue -------------------------------------------------------------------------------

    @property
    def queued(self) -> list[str]:
        return self._queue.job_ids

    def has_room(self) -> bool:
        return self._queue.has_room()

    def submit(self, task: Task) -> bool:
        return self._queue.submit(task)

    def may_batch(self) -> bool:
        return any(self._batch_size(device) > 1 for device in self.devices)

    def _batch_size(self, device: str) -> int:
        return batch_size(device, self.policy.batch_max) if self.members.batches else 1

    def cancel_running(self) -> None:
        now = time.monotonic()
        for member in self._members.values():
            if member.state == "busy" and member.cancel_sent is None:
                self.members.cancel(member.worker_id, member.tasks)
                member.cancel_sent = now

    # -- the loop ----------------------------------------------------------------------------

    def poll(self, timeout: float) -> list[PoolEvent]:
        events: list[PoolEvent] = []
        self._dispatch()
        for report in self.members.receive(timeout):
            self._handle(report, events)
        self._police(events)
        self._respawn_due()
        self._dispatch()
        return events

    def _dispatch(self) -> None:
        if self._stopping:
            return
        for member in sorted(self._members.values(), key=lambda m: m.worker_id):
            if not self._queue:
                return
            if member.state != "idle":
                continue
            batch = self._queue.take(member.device, self._batch_size(member.device))
            if not batch:
                continue
            if not self.members.send(member.worker_id, batch):
                self._queue.put_back(batch)
                continue
            member.state, member.tasks = "busy", batch
            member.task_started, member.cancel_sent = time.monotonic(), None

    def _handle(self, report: Report, events: list[PoolEvent]) -> None:
        member = self._members.get(report.worker_id)
        if member is None:
            return  # a late word from a member already removed
        if isinstance(report, WorkerReady):
            member.state, member.loaded = "idle", True
            member.pid, member.node = report.pid, report.node
            self._respawn_failures.pop(member.device, None)
            # The device starts engines again: replacements waiting out its back-off start now
            # (a Ray operator's trial: after a two-minute outage the second actor came 26 s
            # after the first, with the delay that had grown while the cluster was away).
            now = time.monotonic()
            self._pending_respawn = [
                (min(when, now) if device == member.device else when, device)
                for when, device in self._pending_respawn
            ]
            log.info(
                "pool.worker_ready",
                worker=member.worker_id,
                device=report.device,
                seconds=round(report.seconds, 3),
                pid=report.pid,
                node=report.node,
                threads=report.threads,
            )
        elif isinstance(report, WorkerLoadFailed):
            member.load_failed = True
            self._load_failed(report.kind, f"{member.device}: {report.error}")
            log.error(
                "pool.worker_load_failed",
                worker=member.worker_id,
                kind=report.kind,
                error=report.error,
            )
        elif isinstance(report, MemberLost):
            self._cluster_lost |= report.with_cluster
            self._lost(member, report.reason, "crash", events, with_cluster=report.with_cluster)
        else:
            task = member.holding(report.job_id, report.attempt)
            if task is not None:  # else: about an attempt that has ended already
                self._job_report(member, task, report, events)

    def _job_report(
        self,
        member: _Member,
        task: Task,
        report: JobStarted | JobProgress | JobDone | JobFailed,
        events: list[PoolEvent],
    ) -> None:
        if isinstance(report, JobStarted):
            pid, node, size = report.pid or member.pid, member.node, report.batch_size
            events.append(Started(task.job_id, member.worker_id, member.device, pid, node, size))
        elif isinstance(report, JobProgress):
            events.append(report.progress)
        else:
            member.tasks.remove(task)
            if not member.tasks:
                member.state, member.cancel_sent = "idle", None
            if isinstance(report, JobDone):
                events.append(Done(task.job_id, report.info))
            else:
                self._job_failed(
                    task,
                    report.kind,
                    report.error,
                    events,
                    traceback=report.traceback,
                    batched=report.batch_size > 1,
                )

    def _lost(
        self,
        member: _Member,
        reason: str,
        kind: FailureKind,
        events: list[PoolEvent],
        *,
        with_cluster: bool = False,
    ) -> None:
        """A member died or was killed: its jobs are cancelled, retried or failed as `kind`
        (`with_cluster`: put back in the queue, as no fault of theirs); it is replaced (with a
        growing delay while its kind keeps dying before it is ready)."""
        self.members.remove(member.worker_id)
        del self._members[member.worker_id]
        delay = 0.0
        if not member.loaded:
            if not member.load_failed:
                self._load_failed(kind, f"{member.device}: {reason} while loading", with_cluster)
            failures = self._respawn_failures.get(member.device, 0) + 1
            self._respawn_failures[member.device] = failures
            delay = min(RESPAWN_BACKOFF_MAX, 2.0**failures)
        quiet = with_cluster and not member.loaded and self.members.outage is not None
        (log.debug if quiet else log.warning)(
            "pool.worker_lost",
            worker=member.worker_id,
            reason=reason,
            job_ids=[task.job_id for task in member.tasks],
        )
        if not self._stopping:
            self._pending_respawn.append((time.monotonic() + delay, member.device))
        for task in member.tasks:
            if member.cancel_sent is not None:
                events.append(Cancelled(task.job_id, reason))
            elif with_cluster and self._stopping:
                events.append(Cancelled(task.job_id, f"{reason}; it runs again at the next start"))
            elif with_cluster:
                self._lost_with_cluster(task, reason, events)
            else:
                self._job_failed(task, kind, reason, events)

    def _lost_with_cluster(self, task: Task, reason: str, events: list[PoolEvent]) -> None:
        """No fault of the job's: back in the queue without an attempt, up to
        retry.MAX_REQUEUES times; after that a failed attempt, as a crash would be."""
        lost = replace(task, lost=task.lost + 1)
        if retry.requeue_free(task):
            self._queue.put_back([lost])
            events.append(Requeued(task.job_id, reason))
        else:
            self._job_failed(lost, "lost", reason, events)

    def _respawn_due(self) -> None:
        now = time.monotonic()
        for entry in [entry for entry in self._pending_respawn if entry[0] <= now]:
            self._pending_respawn.remove(entry)
            self._spawn(entry[1])

    def _police(self, events: list[PoolEvent]) -> None:
        now = time.monotonic()
        kind: FailureKind
        for member in list(self._members.values()):
            if member.state != "busy" or not member.tasks:
                continue
            # A batch of n jobs may take up to n jobs' time (on a CPU it does).
            limit = self.policy.job_timeout * len(member.tasks)
            if member.cancel_sent is not None and now - member.cancel_sent > CANCEL_WAIT:
                reason, kind = f"the {self.members.kind} did not stop when asked", "cancelled"
            elif now - member.task_started > limit:
                timeout = self.policy.job_timeout
                reason, kind = f"the job ran past job_timeout ({timeout:g} s)", "timeout"
            else:
                continue
            self._lost(member, reason, kind, events)

    # -- retry rules -------------------------------------------------------------------------

    def _job_failed(
        self,
        task: Task,
        kind: FailureKind,
        error: str,
        events: list[PoolEvent],
        *,
        traceback: str | None = None,
        batched: bool = False,
    ) -> None:
        if kind == "cancelled":
            events.append(Cancelled(task.job_id, error))
            return
        again = retry.next_attempt(task, kind, self.policy, batched=batched)
        if again is None:
            reason = retry.explain(task, kind, error, self.policy, self.devices)
            events.append(Failed(task.job_id, kind, reason, error, traceback))
        elif self._stopping:
            events.append(Cancelled(task.job_id, f"{error}; it runs again at the next start"))
        else:
            if again.device is not None and again.device not in self.devices:
                self._spawn(again.device)  # oom_fallback "cpu" on a pool without one
            self._queue.put_back([again])  # it was first in line already
            events.append(
                Retrying(task.job_id, again.attempt, kind, error, again.params.size, again.device)
            )
