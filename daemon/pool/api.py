"""The pool as the daemon sees it, whatever runs the jobs (local worker processes or Ray
actors): the `WorkerPool` interface, its live-reloadable policy and what it says about its
members."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, Protocol

from daemon.pool.events import PoolEvent
from daemon.pool.task import Task

if TYPE_CHECKING:
    from daemon.config import Settings

OomFallback = Literal["smaller", "cpu", "fail"]
MemberState = Literal["starting", "idle", "busy"]


class PoolError(Exception):
    """No worker could start (e.g. the weights are missing); the message says why."""


class SetupError(PoolError):
    """No worker could start because of the settings alone (a device this machine does not
    have, weights that do not load): a restart cannot mend it (the daemon exits with
    EX_CONFIG)."""


class ClusterUnavailable(PoolError):
    """The Ray cluster cannot be reached, or lacks what the settings ask for: worth a restart
    later (the daemon exits with EX_TEMPFAIL), unlike a broken setup."""


@dataclass(frozen=True)
class LoadTrouble:
    """Members that failed to load the engine lately (a node with another stylefold version,
    a missing weights file, a crash while loading): how often, the latest reason, and since
    when (epoch seconds)."""

    failures: int
    reason: str
    since: float


@dataclass(frozen=True)
class Outage:
    """The cluster the members live on does not answer: where, why, and since when (epoch
    seconds, the first loss of a run of failed tries)."""

    address: str
    reason: str
    since: float


@dataclass(frozen=True)
class PoolPolicy:
    """The settings a running pool follows and a reload (SIGHUP) may change."""

    job_timeout: float = 3600.0  # seconds per job; a batch of n gets n times as long
    retries: int = 1  # of a crashed, timed-out or out-of-memory job
    oom_fallback: OomFallback = "smaller"
    queue_max: int = 10_000
    batch_max: int = 0  # 0: auto (daemon.pool.queue.batch_size)

    @classmethod
    def from_settings(cls, settings: Settings) -> PoolPolicy:
        return cls(
            job_timeout=settings.job_timeout,
            retries=settings.retries,
            oom_fallback=settings.oom_fallback,
            queue_max=settings.queue_max,
            batch_max=settings.batch_max,
        )


@dataclass(frozen=True)
class WorkerState:
    """One member, for the status report (daemon.status_model.WorkerItem has the same fields)."""

    worker: int
    device: str
    state: MemberState
    pid: int | None = None
    node: str | None = None  # the Ray node
    started_at: float | None = None  # epoch seconds: a member "starting" since then


class WorkerPool(Protocol):
    """Tasks in, `PoolEvent`s out. Everything runs in the caller's thread, driven by `poll`."""

    @property
    def devices(self) -> list[str]:
        """What the members run on ("cpu", "cuda:0"; on Ray one "cuda" or "cpu" per actor)."""
        ...

    @property
    def queued(self) -> list[str]:
        """Job ids waiting for a member, oldest first."""
        ...

    def start(self, tick: Callable[[], bool] = ...) -> None:
        """Start the members (they load their networks in the background). `tick` runs while
        it waits (for a cluster); True ends the wait, and no member starts."""
        ...

    def wait_ready(self, timeout: float, tick: Callable[[], bool] = ...) -> None:
        """Until no member is still loading; PoolError when none could load (ClusterUnavailable
        when its cluster went away). `tick` runs every turn and ends the wait early by returning
        True, without an error."""
        ...

    def ready_workers(self) -> int: ...

    @property
    def outage(self) -> Outage | None:
        """Set while the members' cluster cannot be reached (the pool connects again itself)."""
        ...

    def load_trouble(self) -> LoadTrouble | None:
        """Set while members keep failing to load (none for `LOAD_TROUBLE_WINDOW` seconds
        clears it); the pool keeps starting replacements meanwhile."""
        ...

    def workers(self) -> list[WorkerState]: ...

    def has_room(self) -> bool:
        """Whether the queue takes another task (queue_max)."""
        ...

    def submit(self, task: Task) -> bool:
        """Queue a task, first in first out; False when the queue is full."""
        ...

    def may_batch(self) -> bool:
        """Whether a member may get several jobs at once (else batch keys are not needed)."""
        ...

    def poll(self, timeout: float) -> list[PoolEvent]:
        """Hand out tasks, wait up to `timeout` for news, enforce timeouts, replace dead members."""
        ...

    def cancel_running(self) -> None:
        """Ask every busy member to stop; its jobs come back as `Cancelled`."""
        ...

    def drain(self) -> None:
        """Shutting down: start nothing more, forget the queue (those jobs stay in the spool),
        and report as `Cancelled` what would be retried."""
        ...

    def stop(self, timeout: float = 10.0) -> None:
        """End every member (killed after `timeout`)."""
        ...

    def configure(self, policy: PoolPolicy) -> None:
        """Follow a new policy from now on (running jobs keep their timeout start)."""
        ...
