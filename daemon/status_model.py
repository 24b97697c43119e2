"""The status report's types: what `stylefold status`, `state/status.json`, the web page and
STATUS= share. Plain models that depend only on the job states (`daemon.jobs.states`, a leaf),
so that the parts that add to the report (the watcher, the intake, the limits) need not import
the job store that `daemon.status` reads it from.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from daemon.jobs.states import State


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class InboxItem(_Model):
    """A file in the inbox that is not a job yet."""

    path: str  # relative to the inbox
    state: Literal["settling", "arriving", "waiting", "ready"]  # ready: not claimed yet
    since: float  # epoch seconds: last change (settling) or since it waits for its partner
    note: str  # for people: what it waits for
    gives_up_in: float | None = None  # seconds until pair_timeout reports it


# The folder that refused a blocked job's next step: its answer (outbox), its record (state),
# or, with the answer out, its originals' move to the archive or back to the inbox.
BlockedOn = Literal["outbox", "state", "originals"]


class JobItem(_Model):
    """A claimed job, in any state before its end."""

    job_id: str
    input: str  # relative to the inbox
    state: State
    since: float  # epoch seconds of the last transition
    styles: list[str] = []
    device: str | None = None
    worker: int | None = None
    node: str | None = None
    percent: float | None = None
    iteration: int | None = None
    total: int | None = None
    eta_seconds: float | None = None
    # queued: seconds until a worker takes it, estimated (`daemon.jobs.estimate`); None unknown
    starts_in_seconds: float | None = None
    preview: str | None = None  # the preview image in the outbox, relative to the outbox
    reason: str | None = None  # blocked: why; queued after a retry: what went wrong
    retry_at: float | None = None  # blocked: epoch seconds of the next try
    blocked_on: BlockedOn | None = None  # blocked: the folder that refused
    starts: int = 0

    @property
    def waits_for(self) -> BlockedOn:
        """The folder a blocked job waits for: the outbox when `blocked_on` is not given (a
        status file written before it was)."""
        return self.blocked_on or "outbox"


class Finished(_Model):
    """A recent end: a result, a failure report or a rejection."""

    job_id: str
    input: str
    outcome: Literal["done", "failed", "rejected", "skipped"]
    at: float
    output: str | None = None  # relative to the outbox
    report: str | None = None  # the error report, relative to the outbox
    reason: str | None = None
    answered_again_by: str | None = None  # a failure: the later job of the same input, if any
    withdrawn: bool = False  # a failure whose report went when its input left the inbox


def open_failures(recent: list[Finished]) -> list[Finished]:
    """Failures and rejections not answered again since (by a fixed sidecar, a resend) nor
    withdrawn with their input: the ones a person still has to act on."""
    return [
        end
        for end in recent
        if end.outcome in ("failed", "rejected")
        and end.answered_again_by is None
        and not end.withdrawn
    ]


class Attention(_Model):
    """Something an admin must act on: a broken job moved aside, a limit reached, a skipped
    folder, a style that cannot be used."""

    what: str
    where: str | None = None
    fix: str
    since: float | None = None


class WorkerItem(_Model):
    worker: int
    device: str
    state: str  # starting | idle | busy
    pid: int | None = None
    node: str | None = None
    started_at: float | None = None  # epoch seconds: a member "starting" since then


class ReloadInfo(_Model):
    """The last SIGHUP's outcome; `stylefold reload` waits for the one that answers its own."""

    monotonic_usec: int  # CLOCK_MONOTONIC when it began (RELOADING=1's MONOTONIC_USEC)
    at: float  # epoch seconds
    error: str | None = None  # the new configuration is broken: the previous one still runs
    needs_restart: list[str] = []  # changed settings that keep their running values until then
    waiting_since: float | None = None  # epoch seconds: the reload since which some have waited
    config: str | None = None  # the file it read again (the one it was started with), if any


class DaemonInfo(_Model):
    running: bool
    pid: int | None = None
    version: str
    updated_at: float | None = None  # when the daemon last wrote this report
    watch_mode: str | None = None
    watch_reason: str | None = None  # why that mode (a network file system, a limit...)
    paused: str | None = None  # why the inbox is not being watched (unmounted share...)
    backend: str | None = None
    workers: list[WorkerItem] = []
    devices: list[str] = []
    gpu_fallback: str | None = None  # a GPU host on the CPU: why CUDA cannot be used
    reload: ReloadInfo | None = None
    stopping: bool = False  # asked to stop: finishing the running jobs, taking no new ones
    # stopping: epoch seconds when the grace period ends and the jobs still running are put
    # back in the queue, to run again at the next start
    cuts_running_at: float | None = None
    # Before the daemon is ready: what it waits for (the network loading, the Ray cluster);
    # the queue shown meanwhile is the state database's.
    starting: str | None = None


class Counts(_Model):
    done: int = 0
    failed: int = 0
    rejected: int = 0
    skipped: int = 0  # photos sent again: their earlier answer stands (daemon.jobs.resend)

    def described(self) -> str:
        """The outcomes that happened, for status's and the page's "finished" line."""
        said = [f"{count} {what}" for what, count in self.model_dump().items() if count]
        return ", ".join(said) or "nothing yet"


class Unlisted(_Model):
    """What a long queue's report counts but does not list (`daemon.status.listed`)."""

    queued: int = 0  # queued jobs after the first listed
    inbox: dict[str, int] = Field(default_factory=dict)  # inbox files by state


class StatusReport(_Model):
    daemon: DaemonInfo
    inbox: list[InboxItem] = Field(default_factory=list)
    jobs: list[JobItem] = Field(default_factory=list)
    recent: list[Finished] = Field(default_factory=list)
    attention: list[Attention] = Field(default_factory=list)
    counts: Counts = Field(default_factory=Counts)
    unlisted: Unlisted = Field(default_factory=Unlisted)

    def in_state(self, *states: State) -> list[JobItem]:
        return [job for job in self.jobs if job.state in states]

    def unlisted_jobs(self, state: State) -> int:
        return self.unlisted.queued if state is State.QUEUED else 0

    @property
    def unlisted_total(self) -> int:
        return self.unlisted.queued + sum(self.unlisted.inbox.values())
