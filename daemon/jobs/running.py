"""The jobs at a worker now, as the pool's Started and Progress events tell: what `status`
shows of each (`daemon.jobs.live.Running`), its progress file and preview in the outbox, and the
lines its log gets. Kept apart from `daemon.jobs.lifecycle`, which decides what happens to a job:
here the pool's word is only recorded (QUEUED -> RUNNING, its starts), nothing about the job is
decided, and a full disk costs a progress file, a preview or a log line, never the render. The
progress files and previews of stopped jobs that could not be removed at once are removed later
(`sweep`).
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from pathlib import Path

import structlog

from daemon.fsutil import atomic_write, remove
from daemon.jobs import starts
from daemon.jobs.live import Running
from daemon.jobs.progress import ProgressFile, percent_done
from daemon.jobs.record import Job
from daemon.jobs.spool import Spool
from daemon.jobs.states import State
from daemon.jobs.store import Store
from daemon.pool.events import Progress, Started

log = structlog.get_logger("stylefold.jobs")
UNRECORDED_REQUEUE = "back in the queue before this start (not recorded then: state full)"
LEFTOVER_RETRY = 5.0  # seconds between tries to remove a stopped job's progress file
MAX_LEFTOVERS = 1000  # the oldest are forgotten beyond this


@dataclass(frozen=True)
class Leftover:
    """A stopped job's progress file or preview that is still to be removed (`sweep`)."""

    job_id: str
    outbox: Path
    retry_at: float  # time.monotonic()


class RunningJobs:
    """Keeps `running` (job id -> Running, shared with the lifecycle and the publisher)."""

    def __init__(self, store: Store, spool: Spool, running: dict[str, Running]) -> None:
        self.store = store
        self.spool = spool
        self.running = running
        self.leftovers: dict[Path, Leftover] = {}

    def started(self, job: Job, event: Started) -> None:
        """Record RUNNING and count the start (recovery gives up after MAX_STARTS)."""
        folder = self.spool.job_dir(job)
        try:
            row = self.store.get(job.id)
            if row is not None and row.state is State.RUNNING:
                # Its way back to the queue went unrecorded (`Lifecycle.queued_again` with the
                # state folder full): recorded now, so that this start is one (a newcomer's
                # reading: RUNNING -> RUNNING was refused, and the job ran without progress).
                self.store.move(job.id, State.QUEUED, note=UNRECORDED_REQUEUE)
            self.store.move(
                job.id,
                State.RUNNING,
                started=True,
                reason=None,
                note=f"on {event.device} (worker {event.worker})",
            )
        except OSError as exc:  # a full state folder: the job runs all the same, recorded QUEUED
            log.warning("job.not_recorded", state=str(State.RUNNING), error=str(exc))
            starts.count_unrecorded(folder)  # so MAX_STARTS still counts this start
        # Running again, it writes and removes its own progress file: not a leftover now.
        for path in [path for path, left in self.leftovers.items() if left.job_id == job.id]:
            del self.leftovers[path]
        names = self.spool.names(job)
        progress = ProgressFile(names.progress, names.outbox, job.id, job.source)
        running = Running(job, time.time(), event.device, event.worker, event.node, progress)
        self.running[job.id] = running
        with contextlib.suppress(OSError):
            if self._may_write(job):
                progress.started(job.params.iterations, event.device)
        row = self.store.get(job.id)
        start = (row.starts if row else 0) + starts.unrecorded(folder)
        together = f", in a batch of {event.batch_size}" if event.batch_size > 1 else ""
        where = f" on node {event.node}" if event.node else ""
        self.spool.append_log(
            job,
            f"started on {event.device} (worker {event.worker}{where}, start {start}{together})",
        )
        log.info(
            "job.started",
            input=job.source,
            device=event.device,
            worker=event.worker,
            node=event.node,
            start=start,
        )

    def progress(self, job: Job, event: Progress) -> None:
        """What `status` and the progress file show; the preview is written on request."""
        running = self.running.get(job.id)
        if running is None:
            return
        running.last = event
        names = self.spool.names(job)
        with contextlib.suppress(OSError):  # a full outbox must not stop the render
            if self._may_write(job):
                running.progress.update(event)
                if event.preview is not None:
                    atomic_write(names.preview, event.preview, False, names.outbox)
                    running.preview = True
        losses = " ".join(f"{k}={v:.4g}" for k, v in event.losses.items())
        percent = percent_done(event.done)
        self.spool.append_log(
            job,
            f"iteration {event.iteration}/{event.total} ({percent}%) "
            f"scale {event.scale + 1}/{event.scales} {losses}",
        )

    def _may_write(self, job: Job) -> bool:
        """Progress is not worth writing into an outbox that is gone, or a folder that would
        take another answer's name (the answer itself blocks on them:
        `Publisher._may_make_folder`)."""
        return self.spool.places.refusal(job.outbox_dir, job.id) is None

    def stopped(self, job: Job) -> None:
        """The job left its worker (done, failed, held, requeued): its progress file and
        preview leave the outbox, where only answers stay."""
        self.running.pop(job.id, None)
        names = self.spool.names(job)
        for path in (names.progress, names.preview):
            self._remove(path, job.id, names.outbox)

    def _remove(self, path: Path, job_id: str, outbox: Path) -> None:
        try:
            remove(path, outbox)
        except OSError:
            self._leftovers(path, job_id, outbox)

    def _leftovers(self, path: Path, job_id: str, outbox: Path) -> None:
        """A file `stopped` could not remove (its folder swapped for a link at that moment, or
        not writable), tried again by `sweep`: an attacker's trial toggling an outbox folder
        and a link left `"state": "running"` progress files for good beside answers that had
        gone to a numbered folder."""
        self.leftovers.pop(path, None)
        self.leftovers[path] = Leftover(job_id, outbox, time.monotonic() + LEFTOVER_RETRY)
        while len(self.leftovers) > MAX_LEFTOVERS:
            del self.leftovers[next(iter(self.leftovers))]

    def sweep(self) -> None:
        """Remove the progress files and previews of stopped jobs that `stopped` could not,
        unless another job holds the name since (a job that runs again drops its own
        leftovers: `started`)."""
        now = time.monotonic()
        due = [(path, left) for path, left in self.leftovers.items() if left.retry_at <= now]
        holders = self.spool.places.holders() if due else {}
        for path, left in due:
            del self.leftovers[path]
            if holders.get(path, left.job_id) == left.job_id:  # else another job's now
                self._remove(path, left.job_id, left.outbox)
