"""Every decision about a job, as named steps over the states of `daemon.jobs.states`:

    claim (arrival)  -> submit -> started -> progress ... -> done    -> publish -> release
    reject / problem ----------------------------------------------> publish (a report)
    any failure ---------------------------> fail -----------------> publish (the report)
    an unwritable outbox while publishing -> block -> (retry) -----> publish

`fail` is the one failure path (worker failures, interruptions, internal errors) and `publish`
the one way an answer reaches the outbox; both record their state first, so `recover` at
start-up continues each job from its recorded state.
"""

from __future__ import annotations

import contextlib
import time
from collections import deque
from pathlib import Path

import structlog

from daemon.config import Settings
from daemon.fsutil import atomic_write
from daemon.intake.pairing import Arrival, Problem
from daemon.intake.resolve import Rejected, resolve
from daemon.intake.styles import StyleLibrary
from daemon.jobs import answers
from daemon.jobs.answers import FailureDetail, ReportDetail, ResultDetail, ReuseDetail
from daemon.jobs.live import Running, live_items
from daemon.jobs.progress import ProgressFile, percent_done
from daemon.jobs.publisher import Publisher
from daemon.jobs.record import Job, new_job_id
from daemon.jobs.recovery import recover
from daemon.jobs.spool import Spool
from daemon.jobs.states import State
from daemon.jobs.store import Answer, Store
from daemon.logs import job_context
from daemon.metrics import Metrics
from daemon.pool import StyleRef, Task, WorkerPool
from daemon.pool.batching import batch_key
from daemon.pool.events import (
    Cancelled,
    Done,
    Failed,
    PoolEvent,
    Progress,
    Requeued,
    Retrying,
    Started,
)
from daemon.status import JobItem

log = structlog.get_logger("stylefold.jobs")

CLAIM_RETRY = 10.0  # seconds before claiming again after the state folder failed a claim


class Lifecycle:
    def __init__(
        self,
        settings: Settings,
        store: Store,
        pool: WorkerPool,
        library: StyleLibrary,
        metrics: Metrics,
        publish_retry: float,
    ) -> None:
        self.settings = settings
        self.store = store
        self.spool = Spool(settings, store)
        self.pool = pool
        self.library = library
        self.metrics = metrics
        self.publish_retry = publish_retry
        self.jobs: dict[str, Job] = {}  # claimed and not finished
        self.backlog: deque[Job] = deque()  # QUEUED, waiting for room in the pool's queue
        self.deferred: deque[Arrival] = deque()  # ready in the inbox, not claimed yet
        self.running: dict[str, Running] = {}
        self.claim_pause_until = 0.0
        self.publisher = Publisher(
            settings,
            store,
            self.spool,
            metrics,
            publish_retry,
            self.jobs,
            self.running,
            self._stopped_running,
        )

    @property
    def busy(self) -> bool:
        return bool(self.jobs or self.deferred or self.publisher.blocked)

    # -- start-up ---------------------------------------------------------------------------

    def recover(self) -> None:
        recover(self)

    def retry_blocked(self) -> None:
        self.publisher.retry_blocked()

    def items(self) -> list[JobItem]:
        return live_items(
            self.jobs,
            self.running,
            self.publisher.blocked,
            self.spool.names,
            self.settings.outbox,
        )

    def feed(self, deadline: float) -> None:
        """Claim what is ready while the pool's queue has room (the bound keeps a burst of
        thousands of photos in the inbox, visible, rather than in memory)."""
        while self.backlog and self.pool.has_room() and time.monotonic() < deadline:
            self.submit(self.backlog.popleft())
        while (
            self.deferred
            and not self.backlog
            and self.pool.has_room()
            and self.claim_pause_until <= time.monotonic() < deadline
        ):
            arrival = self.deferred.popleft()
            try:
                self.claim(arrival)
            except Exception:  # one bad pair must never stop the daemon
                log.exception("job.arrival_crashed", image=str(arrival.image))

    def claim(self, arrival: Arrival) -> None:
        if self.spool.already_handled([arrival.image, arrival.sidecar]):
            return
        try:
            resolved = resolve(arrival, self.settings, self.library)
            job = self.spool.claim(arrival, resolved)
        except Rejected as exc:
            if self.spool.already_handled([arrival.image, arrival.sidecar]):
                return
            self.reject(arrival, str(exc))
            return
        except FileNotFoundError:
            log.info("job.claim_vanished", image=str(arrival.image))
            return
        except OSError as exc:
            log.error(
                "job.claim_failed", image=str(arrival.image), error=str(exc), retry_in=CLAIM_RETRY
            )
            self.deferred.appendleft(arrival)
            self.claim_pause_until = time.monotonic() + CLAIM_RETRY
            return
        self.jobs[job.id] = job
        with job_context(job.id):
            styles = ", ".join(f"{s.name} x{s.weight:g}" for s in job.styles)
            self.spool.append_log(job, f"claimed {job.source} (style {styles})")
            self.spool.append_log(job, f"params {job.params.model_dump(mode='json')}")
            log.info("job.claimed", input=job.source, sidecar=job.sidecar_name, styles=styles)
            self.submit(job)

    def reject(self, arrival: Arrival, reason: str) -> None:
        """The pair cannot become a job; it stays in the inbox untouched, with a report."""
        rel_dir = arrival.rel_dir.as_posix() if str(arrival.rel_dir) != "." else ""
        inbox = self.settings.inbox
        detail = ReportDetail(
            input=(arrival.image.relative_to(inbox)).as_posix(),
            sidecar=arrival.sidecar.name if arrival.sidecar else None,
            reason=reason,
            original=answers.LEFT_REJECTED,
            rel_dir=rel_dir,
            stem=arrival.image.stem,
            paths=[_rel(arrival.image, inbox), _rel(arrival.sidecar, inbox)],
        )
        self.publisher.publish(new_job_id(), None, "report", detail)

    def problem(self, problem: Problem) -> None:
        """A settled file that cannot become a job (no sidecar, empty, special file...)."""
        if self.spool.already_handled([problem.path]):
            return
        rel = problem.path.relative_to(self.settings.inbox)
        name = problem.path.name
        stem = name[:-5] if name.lower().endswith(".json") else name
        stem = stem.rsplit(".", 1)[0] if "." in stem else stem
        detail = ReportDetail(
            input=rel.as_posix(),
            sidecar=None,
            reason=problem.reason,
            original=answers.LEFT_PROBLEM,
            rel_dir=rel.parent.as_posix() if str(rel.parent) != "." else "",
            stem=stem,
            paths=[rel.as_posix()],
        )
        self.publisher.publish(new_job_id(), None, "report", detail)

    def submit(self, job: Job) -> None:
        if self.settings.dedupe:
            earlier = self.spool.earlier_answer(job)
            if earlier is not None:
                self.publisher.publish(job.id, job, "reuse", _reuse(earlier))
                return
        job_dir = self.spool.job_dir(job)
        content = self.spool.input_path(job)
        styles = tuple(StyleRef(job_dir / style.file, style.weight) for style in job.styles)
        key = None
        if self.pool.may_batch():
            key = batch_key(content, [(s.sha256, s.weight) for s in job.styles], job.params)
        task = Task(
            job_id=job.id,
            job_dir=job_dir,
            content=content,
            styles=styles,
            params=job.params,
            output_format=job.output_format,
            output_quality=job.output_quality,
            max_pixels=self.settings.max_pixels,
            batch_key=key,
            preview_every=self.settings.preview_every,
        )
        if not self.pool.submit(task):
            self.backlog.appendleft(job)

    # -- what the pool says -----------------------------------------------------------------

    def handle(self, event: PoolEvent) -> None:
        job = self.jobs.get(event.job_id)
        if job is None:
            return
        with job_context(job.id):
            try:
                self._handle(job, event)
            except Exception as exc:  # a bug while finishing one job must not stop the rest
                log.exception("job.event_crashed", event=type(event).__name__)
                if isinstance(event, Done | Failed):
                    reason = answers.INTERNAL.format(error=exc)
                    self.publisher.fail(job, FailureDetail(kind="internal", reason=reason))

    def _handle(self, job: Job, event: PoolEvent) -> None:
        if isinstance(event, Started):
            self._started(job, event)
        elif isinstance(event, Progress):
            self._progress(job, event)
        elif isinstance(event, Done):
            running = self.running.get(job.id)
            detail = ResultDetail(
                info=event.info,
                started_at=running.started if running else None,
                node=running.node if running else None,
            )
            self.publisher.publish(job.id, job, "result", detail)
        elif isinstance(event, Failed):
            self.publisher.fail(
                job, FailureDetail(kind=event.kind, reason=event.reason, traceback=event.traceback)
            )
        elif isinstance(event, Retrying):
            line = f"attempt {event.attempt - 1} failed ({event.error}); retrying"
            if event.size != job.params.size:
                line += f" at size {event.size}"
            if event.device:
                line += f" on {event.device}"
            self.spool.append_log(job, line)
            log.warning("job.retry", attempt=event.attempt, kind=event.kind, error=event.error)
            self._stopped_running(job)
            self.store.move(job.id, State.QUEUED, reason=event.error, note=line)
            self.metrics.job_finished("retried", 0.0)
        elif isinstance(event, Cancelled | Requeued):
            self.requeue(job, event.reason)

    def _started(self, job: Job, event: Started) -> None:
        self.store.move(
            job.id,
            State.RUNNING,
            started=True,
            reason=None,
            note=f"on {event.device} (worker {event.worker})",
        )
        names = self.spool.names(job)
        progress = ProgressFile(names.progress, job.id, job.source)
        running = Running(job, time.time(), event.device, event.worker, event.node, progress)
        self.running[job.id] = running
        with contextlib.suppress(OSError):
            progress.write(0, job.params.iterations, event.device, force=True)
        row = self.store.get(job.id)
        starts = row.starts if row else 0
        together = f", in a batch of {event.batch_size}" if event.batch_size > 1 else ""
        where = f" on node {event.node}" if event.node else ""
        self.spool.append_log(
            job,
            f"started on {event.device} (worker {event.worker}{where}, start {starts}{together})",
        )
        log.info(
            "job.started",
            input=job.source,
            device=event.device,
            worker=event.worker,
            node=event.node,
            start=starts,
        )

    def _progress(self, job: Job, event: Progress) -> None:
        running = self.running.get(job.id)
        if running is None:
            return
        running.last = event
        names = self.spool.names(job)
        with contextlib.suppress(OSError):  # a full outbox must not stop the render
            running.progress.update(event)
            if event.preview is not None:
                atomic_write(names.preview, event.preview, durable=False)
                running.preview = True
        losses = " ".join(f"{k}={v:.4g}" for k, v in event.losses.items())
        percent = percent_done(event.iteration, event.total)
        self.spool.append_log(
            job,
            f"iteration {event.iteration}/{event.total} ({percent}%) "
            f"scale {event.scale + 1}/{event.scales} {losses}",
        )

    def _stopped_running(self, job: Job) -> None:
        self.running.pop(job.id, None)
        names = self.spool.names(job)
        for path in (names.progress, names.preview):
            with contextlib.suppress(OSError):
                path.unlink(missing_ok=True)

    def requeue(self, job: Job, reason: str) -> None:
        """The job is QUEUED again: cancelled at shutdown (it runs at the next start), or
        requeued by the pool after its Ray cluster went away (it runs when a worker is free)."""
        self._stopped_running(job)
        self.store.move(job.id, State.QUEUED, note=f"put back in the queue ({reason})")
        self.spool.append_log(job, f"put back in the queue ({reason})")
        log.info("job.requeued", input=job.source, reason=reason)

    # -- answers ----------------------------------------------------------------------------


def _rel(path: Path | None, inbox: Path) -> str | None:
    return None if path is None else path.relative_to(inbox).as_posix()


def _reuse(answer: Answer) -> ReuseDetail:
    return ReuseDetail(
        job_id=answer.job_id, output=str(answer.output), manifest=str(answer.manifest)
    )
