"""The daemon's live view of its unfinished jobs: which one runs where, how far it is, which
answers wait for an unwritable outbox or state folder, and which originals wait to go back to
the inbox (what `status` and the web page show)."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import BaseModel

from daemon.jobs.answers import ReportDetail
from daemon.jobs.outbox import OutputNames
from daemon.jobs.progress import ProgressFile, percent_done
from daemon.jobs.record import Job
from daemon.jobs.spool import ClaimIntent
from daemon.jobs.states import Outcome, State
from daemon.pool.events import Progress
from daemon.status_model import BlockedOn, JobItem


@dataclass
class Running:
    job: Job
    started: float
    device: str
    worker: int
    node: str | None
    progress: ProgressFile
    last: Progress | None = None
    preview: bool = False


@dataclass
class Blocked:
    """An answer that could not be written yet; retried at `retry_at` (monotonic)."""

    job_id: str
    job: Job | None
    outcome: Outcome
    detail: BaseModel
    reason: str
    retry_at: float
    on: BlockedOn = "outbox"  # the folder that could not be written
    since: float = field(default_factory=time.time)
    # The error's number: the same refusal again names other files (temporary names).
    errno: int | None = None


@dataclass
class Returning:
    """A job whose originals changed under it (RETURNING) and whose way back to the inbox was
    refused (an inbox folder made read-only, a full disk): tried again at `retry_at`
    (monotonic), shown meanwhile."""

    job: Job
    intent: ClaimIntent
    reason: str  # why it returns (the original that changed)
    error: str  # why the way back was refused
    retry_at: float
    since: float = field(default_factory=time.time)


def live_items(
    jobs: dict[str, Job],
    active: dict[str, Running],
    waiting: dict[str, Blocked],
    returning: dict[str, Returning],
    names: Callable[[Job], OutputNames],
    outbox: Path,
    starts: Mapping[str, int],
    starts_in: Mapping[str, float],
) -> list[JobItem]:
    """The daemon's live view of every unfinished job; `starts`: how often each was started,
    as recorded (`Store.starts`); `starts_in`: when queued ones are expected to start."""
    items = [_returning_item(back) for back in returning.values()]
    for job in jobs.values():
        item = JobItem(
            job_id=job.id,
            input=job.source,
            state=State.QUEUED,
            since=job.claimed_at,
            styles=[style.name for style in job.styles],
            starts=starts.get(job.id, 0),
            starts_in_seconds=starts_in.get(job.id),
        )
        if (running := active.get(job.id)) is not None:
            preview = names(job).preview.relative_to(outbox) if running.preview else None
            item = _as_running(item, running, preview)
        elif (blocked := waiting.get(job.id)) is not None:
            item = _as_blocked(item, blocked)
        items.append(item)
    # Reports waiting for room in the outbox: jobs with no claimed photo.
    items += [
        _as_blocked(
            JobItem(
                job_id=blocked.job_id,
                input=blocked.detail.input,
                state=State.BLOCKED,
                since=blocked.since,
            ),
            blocked,
        )
        for blocked in waiting.values()
        if blocked.job is None and isinstance(blocked.detail, ReportDetail)
    ]
    return items


def _returning_item(back: Returning) -> JobItem:
    return JobItem(
        job_id=back.job.id,
        input=back.job.source,
        state=State.RETURNING,
        since=back.since,
        styles=[style.name for style in back.job.styles],
        reason=f"{back.reason}; its originals could not go back to the inbox yet ({back.error})",
        retry_at=_wall_clock(back.retry_at),
        blocked_on="originals",
    )


def _as_running(item: JobItem, running: Running, preview: Path | None) -> JobItem:
    last = running.last
    return item.model_copy(
        update={
            "state": State.RUNNING,
            "since": running.started,
            "device": running.device,
            "worker": running.worker,
            "node": running.node,
            "iteration": last.iteration if last else 0,
            "total": last.total if last else running.job.params.iterations,
            "percent": percent_done(last.done) if last else 0.0,
            "eta_seconds": round(last.eta, 1) if last else None,
            "preview": None if preview is None else preview.as_posix(),
        }
    )


def _as_blocked(item: JobItem, blocked: Blocked) -> JobItem:
    return item.model_copy(
        update={
            "state": State.BLOCKED,
            "since": blocked.since,
            "reason": blocked.reason,
            "retry_at": _wall_clock(blocked.retry_at),
            "blocked_on": blocked.on,
        }
    )


def _wall_clock(monotonic_at: float) -> float:
    """A retry's time, kept on the monotonic clock, as people and `status` read times."""
    return time.time() + max(0.0, monotonic_at - time.monotonic())
