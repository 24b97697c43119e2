"""Everything the daemon knows, as one typed report: what `stylefold status` prints, what the
daemon publishes in `state/status.json` while it runs, and what the web page and metrics read.

While the daemon runs it writes the whole report on every change (files settling and waiting
for their pair exist only in its memory); when it does not, `stylefold status` builds the same
report from the state database (`daemon.jobs.store`), without the in-memory sections.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class InboxItem(_Model):
    """A file in the inbox that is not a job yet."""

    path: str  # relative to the inbox
    state: Literal["settling", "arriving", "waiting"]
    since: float  # epoch seconds: last change (settling) or since it waits for its partner
    note: str  # for people: what it waits for
    gives_up_in: float | None = None  # seconds until pair_timeout reports it


class JobItem(_Model):
    """A claimed job, in any state before its end."""

    job_id: str
    input: str  # relative to the inbox
    state: str  # a daemon.jobs.states.State value
    since: float  # epoch seconds of the last transition
    styles: list[str] = []
    device: str | None = None
    worker: int | None = None
    node: str | None = None
    percent: float | None = None
    iteration: int | None = None
    total: int | None = None
    eta_seconds: float | None = None
    preview: str | None = None  # the preview image in the outbox, relative to the outbox
    reason: str | None = None  # blocked: why; queued after a retry: what went wrong
    retry_at: float | None = None  # blocked: epoch seconds of the next try
    starts: int = 0


class Finished(_Model):
    """A recent end: a result, a failure report or a rejection."""

    job_id: str
    input: str
    outcome: Literal["done", "failed", "rejected", "skipped"]
    at: float
    output: str | None = None  # relative to the outbox
    report: str | None = None  # the error report, relative to the outbox
    reason: str | None = None


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


class DaemonInfo(_Model):
    running: bool
    pid: int | None = None
    version: str
    updated_at: float | None = None  # when the daemon last wrote this report
    watch_mode: str | None = None
    paused: str | None = None  # why the inbox is not being watched (unmounted share...)
    backend: str | None = None
    workers: list[WorkerItem] = []
    devices: list[str] = []


class Counts(_Model):
    done: int = 0
    failed: int = 0
    rejected: int = 0
    skipped: int = 0  # re-sent inputs answered by an earlier result


class StatusReport(_Model):
    daemon: DaemonInfo
    inbox: list[InboxItem] = Field(default_factory=list)
    jobs: list[JobItem] = Field(default_factory=list)
    recent: list[Finished] = Field(default_factory=list)
    attention: list[Attention] = Field(default_factory=list)
    counts: Counts = Field(default_factory=Counts)

    def in_state(self, *states: str) -> list[JobItem]:
        return [job for job in self.jobs if job.state in states]
