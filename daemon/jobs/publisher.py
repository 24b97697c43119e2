"""The one way an answer reaches the outbox: PUBLISHING is recorded with what will be written
(so a restart writes it again), the answer is written, then the originals leave the spool
(RELEASING -> DONE or FAILED). An outbox that cannot be written blocks the job (BLOCKED) and
publishing is retried; a report about inbox files that never became a job ends REJECTED. A photo
sent again (`daemon.jobs.resend`) writes nothing: the earlier answer stands (SKIPPED). A rendered
result that is gone from the spool before it was written out sends the job back to be rendered
again (QUEUED): retrying could never write it; `Lifecycle.render_again` fails it when that keeps
happening."""

from __future__ import annotations

import contextlib
import errno
import os
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import structlog
from pydantic import BaseModel

from daemon.config import Settings
from daemon.fsutil import model_from_json
from daemon.jobs import answers
from daemon.jobs.answers import (
    FailureDetail,
    ReportDetail,
    ResultDetail,
    ResultLost,
    ReuseDetail,
)
from daemon.jobs.live import Blocked, Running
from daemon.jobs.outbox import OutboxRefused, OutputNames, drop_stale_report
from daemon.jobs.record import Job
from daemon.jobs.resend import archived_twins
from daemon.jobs.spool import Spool
from daemon.jobs.states import ANSWERING, END_OF, ENDS_WITH_RESULT, Outcome, State
from daemon.jobs.store import ORIGINALS_NOTE, Answer, Store, StoreError
from daemon.logs import job_context
from daemon.metrics import Metrics
from daemon.pool import result_file
from daemon.status_model import BlockedOn
from service.params import STOPPED

log = structlog.get_logger("stylefold.jobs")


class Written(NamedTuple):
    """What publishing wrote: the file people open (relative to the outbox), and the SHA-256
    of the image published (results and reuses; None for failures, reports and skips)."""

    shown: str
    digest: str | None


class Publisher:
    def __init__(
        self,
        settings: Settings,
        store: Store,
        spool: Spool,
        metrics: Metrics,
        publish_retry: float,
        jobs: dict[str, Job],
        running: dict[str, Running],
        stop_running: Callable[[Job], None],
        render_again: Callable[[Job, str], None],
    ) -> None:
        self.settings = settings
        self.store = store
        self.spool = spool
        self.metrics = metrics
        self.publish_retry = publish_retry
        self.jobs = jobs
        self.running = running
        self.stop_running = stop_running
        self.render_again = render_again
        self.blocked: dict[str, Blocked] = {}
        # Blocked reports' job ids by their input, for `outdate_report` (a report, or a claim,
        # looks there: a scan of every blocked answer made a flood into a full outbox cost the
        # square of its size); checked against `blocked`, so one answered since is passed over.
        self._waiting_reports: dict[str, str] = {}
        # Answers this process wrote whole, by job id, until the job ends: a try after one
        # that wrote its answer and then could not record it (a full state folder) neither
        # writes it again (a manifest whose times change at every try) nor moves it to a
        # numbered folder (whoever writes the outbox may have swapped its folder meanwhile:
        # a second answer beside the first).
        # The digest kept is the image's (None for a failure's report).
        self.written: dict[str, tuple[Outcome, str | None]] = {}
        # A job's last attempt, from its start to its end, for the duration metric: taken
        # when the job leaves its worker, before `running` forgets when it started.
        self.attempt_seconds: dict[str, float] = {}

    @property
    def roots(self) -> dict[Path, str]:
        """The daemon's folders, by the names reports give them instead of server paths."""
        settings = self.settings
        return {
            settings.inbox: "inbox",
            settings.outbox: "outbox",
            settings.styles: "styles",
            settings.state: "state",
            settings.archive_path: "archive",
        }

    def fail(self, job: Job, detail: FailureDetail) -> None:
        """The one failure path: every job that cannot succeed gets its report this way."""
        self.publish(job.id, job, "failure", detail)

    def publish(self, job_id: str, job: Job | None, outcome: Outcome, detail: BaseModel) -> None:
        """PUBLISHING: record what will be written, write it, then let the originals go. Any
        step that cannot write (the outbox, or the state database on a full disk: StoreError
        is an OSError) blocks the job and is tried again; none of them fails it."""
        try:
            row = self.store.get(job_id)
            if job is not None and row is not None and row.state is State.RELEASING:
                self.release(job, outcome)  # the answer is out: only the originals are left
            else:
                again = row is not None and row.state in ANSWERING
                self._enter_publishing(job_id, job, outcome, detail)
                if again and job is not None and outcome == "result" and job_id not in self.written:
                    self._indexed_before(job)  # at a later try only, not on every job's way
                if job is not None and outcome != "skip" and job_id not in self.written:
                    job = self._answer_place(job)
                try:
                    written = self._write(job_id, job, outcome, detail)
                except ResultLost as lost:
                    assert job is not None
                    self.blocked.pop(job_id, None)  # before: failing it may block it anew
                    self.written.pop(job_id, None)
                    self.attempt_seconds.pop(job_id, None)  # it runs again
                    self.render_again(job, lost.reason)
                    return
                if job is None:
                    assert isinstance(detail, ReportDetail)
                    self._reported(job_id, detail, written.shown)
                else:
                    self._answered(job, outcome, detail, written)
        except OSError as exc:  # render_again's record too: blocked, the next try finds it gone
            self._block(job_id, job, outcome, detail, exc)
            return
        if self.blocked.pop(job_id, None) is not None and isinstance(detail, ReportDetail):
            self._waiting_reports.pop(detail.input, None)  # written: waits no more

    def _stop(self, job: Job) -> None:
        if (running := self.running.get(job.id)) is not None:
            self.attempt_seconds[job.id] = time.time() - running.started
        self.stop_running(job)

    def _indexed_before(self, job: Job) -> None:
        """A result a killed process wrote and indexed (the index is ours; the outbox is not)
        counts as written (`written`): after a restart it is neither written again nor moved,
        as its folder may have been swapped for a link meanwhile."""
        answer = self.store.answer_for(job.reuse_key)
        if answer is None or answer.job_id != job.id:
            return
        if answer.output == self.spool.names(job).image:
            self.written[job.id] = ("result", answer.sha256)

    def _answer_place(self, job: Job) -> Job:
        """The job, with its answer moved to a numbered folder where a file took its folder's
        name meanwhile (see `Spool.move_answer_if_taken`)."""
        moved = self.spool.move_answer_if_taken(job)
        if moved is None:
            return job
        log.warning("job.answer_folder_moved", input=job.source, folder=moved.outbox_dir)
        if job.id in self.jobs:
            self.jobs[job.id] = moved
        return moved

    def _enter_publishing(
        self, job_id: str, job: Job | None, outcome: Outcome, detail: BaseModel
    ) -> None:
        row = self.store.get(job_id)
        if row is None:
            self.store.create(
                job_id, State.PUBLISHING, _input(job, detail), outcome=outcome, detail=detail
            )
        elif row.state is not State.PUBLISHING:
            if job is not None:
                self._stop(job)
            self.store.move(job_id, State.PUBLISHING, outcome=outcome, detail=detail)

    def _write(self, job_id: str, job: Job | None, outcome: Outcome, detail: BaseModel) -> Written:
        """Write the answer (a skip's is the earlier one's), unless this process wrote it
        at an earlier try (`written`)."""
        if job is None:
            assert isinstance(detail, ReportDetail)
            folder = self.spool.places.folder_for(detail.rel_dir)
            self._may_make_folder(folder, job_id)
            self.spool.places.mark(folder, detail.rel_dir)
            names = answers.publish_report(
                job_id,
                detail,
                self.settings.outbox / folder,
                self.settings.outbox,
                self.settings.output_format,
                self.roots,
                reserved=self.spool.places.reserved(),
            )
            return Written(names.error.relative_to(self.settings.outbox).as_posix(), None)
        if outcome == "skip":
            assert isinstance(detail, ReuseDetail)
            # Nothing is written.
            return Written(_relative(Path(detail.output), self.settings.outbox), None)
        self._may_make_folder(job.outbox_dir, job_id)
        self.spool.places.mark(job.outbox_dir, job.rel_dir)
        names = self.spool.names(job)
        relative = {"failure": names.error}.get(outcome, names.image)
        shown = relative.relative_to(self.settings.outbox).as_posix()
        earlier = self.written.get(job.id)
        if earlier is not None and earlier[0] == outcome:
            written = Written(shown, earlier[1])
        else:
            # Written whatever its names hold: what the outbox holds is never taken as written
            # (a manifest with the job's id, read from its progress file, planted at its name
            # had a job blocked for good), so a restart writes it again.
            written = Written(shown, self._write_answer(job, detail, names))
            self.written[job.id] = (outcome, written.digest)
        if isinstance(detail, ResultDetail):
            # Indexed at every try (the state folder may have been full at the one before): an
            # identical photo is then answered from it instead of rendered again.
            assert written.digest is not None
            self.store.record_answer(
                Answer(job.reuse_key, job.id, names.image, written.digest, names.manifest)
            )
        return written

    def _may_make_folder(self, folder: str, job_id: str) -> None:
        """Raises OutboxRefused (which blocks the job, saying what to do) where the outbox is
        gone, or the answer's folder (relative to the outbox) would take another answer's
        name."""
        if (refused := self.spool.places.refusal(folder, job_id)) is not None:
            raise OutboxRefused(refused)

    def _write_answer(self, job: Job, detail: BaseModel, names: OutputNames) -> str | None:
        """Returns the SHA-256 of the image written (None for a failure's report), as written:
        read back, the folder could be another by then (an attacker's swap), and a job blocked
        by that would answer again in a numbered folder."""
        if isinstance(detail, ResultDetail):
            info = detail.info
            last = (
                f"done: {info.iterations} iterations ({STOPPED[info.stop_reason]}), "
                f"wrote {names.image.name}"
            ) + "".join(f"; note: {note}" for note in info.notes)
            result = result_file(self.spool.job_dir(job), job.output_format)
            if not result.is_file():  # gone after this check: blocked, then found gone here
                raise ResultLost(answers.RESULT_LOST)
            log_text = self.spool.read_log(job, last)
            return answers.publish_result(job, detail, result, names, log_text, self.roots)
        elif isinstance(detail, ReuseDetail):
            last = f"identical to job {detail.job_id}; reused {detail.output}"
            log_text = self.spool.read_log(job, last)
            return answers.publish_reuse(job, detail, names, log_text, self.settings, self.roots)
        else:
            assert isinstance(detail, FailureDetail)
            last = f"failed: {detail.reason}" + (
                " (the traceback is in the daemon's log)" if detail.traceback else ""
            )
            report = answers.failure_report(job, detail)
            answers.publish_failure(names, report, self.spool.read_log(job, last), self.roots)
            return None

    def _block(
        self, job_id: str, job: Job | None, outcome: Outcome, detail: BaseModel, exc: OSError
    ) -> None:
        row = None
        with contextlib.suppress(OSError):  # the state database may be what failed
            row = self.store.get(job_id)
        on = self._refused_by(exc, row is not None and row.state is State.RELEASING)
        told = str(exc) if isinstance(exc, OutboxRefused) else _clash(exc)
        reason = answers.public(told or str(exc), self.roots)
        if on == "outbox":
            self.metrics.outbox_write_failed()
        before = self.blocked.get(job_id)
        if before is None or not _same_refusal(before, on, exc.errno, reason):
            log.error(
                f"job.{on}_unwritable",
                job_id=job_id,
                # the photo, for the journal's reader (an operator's trial: a job id alone)
                input=row.input if row is not None else job.source if job is not None else None,
                error=reason,
                retry_in=self.publish_retry,
                # A refusal's own message says what to do ("...is missing: mount it").
                fix=None if isinstance(exc, OutboxRefused) else answers.BLOCKED_FIX[on],
            )
        else:  # once per job and reason at error: with the outbox unmounted an operator's
            # trial logged 353 lines in 100 s for 154 blocked jobs (`status` lists them)
            log.debug("job.still_blocked", job_id=job_id, on=on, retry_in=self.publish_retry)
        if job is not None:
            self._stop(job)
        retry_at = time.monotonic() + self.publish_retry
        blocked = Blocked(job_id, job, outcome, detail, reason, retry_at, on, errno=exc.errno)
        if before is not None:  # blocked since its first try
            blocked.since = before.since
        self.blocked[job_id] = blocked
        if outcome == "report" and isinstance(detail, ReportDetail):
            self._waiting_reports[detail.input] = job_id
        if row is not None and row.state is State.PUBLISHING:
            with contextlib.suppress(OSError):
                self.store.move(
                    job_id, State.BLOCKED, reason=reason, retry_at=time.time() + self.publish_retry
                )

    def outdate_report(self, input: str, keep: str | None = None) -> bool:
        """A report on the inbox file `input` that waits for the outbox, outdated by a newer
        verdict on it or by its claim, ends ROLLED_BACK, never written; one whose reason is
        `keep` (the same verdict again: a restart's) stays. Whether one stays (a re-test: the
        held-back report on a mended pair was written beside its result, and the pair's
        new fault was never told)."""
        job_id = self._waiting_reports.pop(input, None)
        blocked = None if job_id is None else self.blocked.get(job_id)
        if job_id is None or blocked is None:
            return False  # none, or one written (or set aside) since it was blocked
        assert isinstance(blocked.detail, ReportDetail)
        if blocked.detail.reason == keep:
            self._waiting_reports[input] = job_id
            return True
        try:
            self.store.move(job_id, State.ROLLED_BACK, note="outdated before it was written")
        except OSError:  # written when there is room, as before
            self._waiting_reports[input] = job_id
            return False
        self.blocked.pop(job_id)
        log.info("job.report_outdated", job_id=job_id, input=input)
        return False

    def _refused_by(self, exc: OSError, released: bool) -> BlockedOn:
        """Which folder an error while publishing is about, for status to name what to free or
        fix: the state database (StoreError) is the state folder's; once the answer is out
        (`released`: RELEASING), or for a file in the archive (by default inside the state
        folder) or the inbox, the originals'; any other file in the state folder (the spool) is
        the state folder's; anything else the outbox's. (A rename between folder descriptors
        names the file alone: a non-root trial's unwritable archive was told as the outbox.)"""
        name = Path(exc.filename) if isinstance(exc.filename, str) else None
        if isinstance(exc, StoreError):
            return "state"
        if released:
            return "originals"
        if name and any(
            name.is_relative_to(f) for f in (self.settings.archive_path, self.settings.inbox)
        ):
            return "originals"
        if name and name.is_relative_to(self.settings.state):
            return "state"
        return "outbox"

    def retry_blocked(self) -> None:
        now = time.monotonic()
        for blocked in [b for b in self.blocked.values() if b.retry_at <= now]:
            with job_context(blocked.job_id):
                try:
                    self.publish(blocked.job_id, blocked.job, blocked.outcome, blocked.detail)
                except Exception as exc:  # one bad job must never stop the daemon
                    self.crashed(blocked.job_id, blocked.job, exc, "publishing its answer")

    def crashed(self, job_id: str, job: Job | None, exc: Exception, doing: str) -> None:
        """A job whose handling raised something no path expects (a bug, bad data in its
        record or in an earlier answer it reuses): logged with the traceback, it ends through
        the one failure path, its originals returned with a report. Should that raise too (the
        same bad data), it is set aside as BROKEN with its originals kept in the spool and
        listed by `status`; either way the loop forgets it and carries on."""
        trace = _trace(exc)
        log.error("job.crashed", doing=doing, error=repr(exc), traceback=trace)
        failing = job_id in self.blocked and self.blocked[job_id].outcome == "failure"
        if job is not None and not failing:
            reason = answers.INTERNAL.format(error=f"{doing}: {exc!r}")
            try:
                self.fail(job, FailureDetail(kind="internal", reason=reason, traceback=trace))
                return
            except Exception as again:  # the failure path meets the same bad data
                log.error("job.fail_crashed", error=repr(again), traceback=_trace(again))
        self.set_aside(job_id, f"{doing} crashed ({exc!r}); the traceback is in the log")

    def set_aside(self, job_id: str, reason: str) -> None:
        """The last resort for a job that cannot be finished: its spool folder (originals and
        all) is moved aside for a person, BROKEN is recorded (best effort) and the loop
        forgets it. A report's files were never moved: they stay in the inbox."""
        moved: Path | None = self.spool.move_aside(job_id)
        if moved is not None and not moved.exists():
            moved = None  # no spool folder: a report, or a job whose folder is gone
        where = f"; its files are in {moved}" if moved is not None else ""
        log.error("job.broken", reason=reason, moved_to=None if moved is None else str(moved))
        try:
            self.store.move(job_id, State.BROKEN, reason=f"{reason}{where}")
        except Exception as exc:  # recorded or not, the job is set aside
            log.warning("job.not_recorded", state=str(State.BROKEN), error=repr(exc))
        self.blocked.pop(job_id, None)
        self.written.pop(job_id, None)
        self.jobs.pop(job_id, None)
        self.running.pop(job_id, None)
        self.attempt_seconds.pop(job_id, None)

    def _reported(self, job_id: str, detail: ReportDetail, report: str) -> None:
        inbox = self.settings.inbox
        self.spool.in_place.remember(
            [None if p is None else inbox / p for p in detail.paths], job_id
        )
        self.store.move(job_id, State.REJECTED, reason=detail.reason, note=report)
        self.metrics.job_finished("rejected", None)
        log.warning("job.rejected", input=detail.input, reason=detail.reason, report=report)

    def _answered(self, job: Job, outcome: Outcome, detail: BaseModel, written: Written) -> None:
        if outcome in ("result", "reuse"):
            names = self.spool.names(job)
            assert written.digest is not None
            answer = Answer(job.sent_key, job.id, names.image, written.digest, names.manifest)
            with contextlib.suppress(OSError):  # then a re-send is answered again, no worse
                self.store.record_input_answer(job.source, answer)
                later = self.store.reported_since(job.inputs, job.claimed_at)
                drop_stale_report(names, job.inputs, self.spool.settings.inbox, later)
        reason = detail.reason if isinstance(detail, FailureDetail) else None
        shown = written.shown
        self.store.move(job.id, State.RELEASING, note=shown, reason=reason)
        if isinstance(detail, FailureDetail):
            log.warning(
                "job.failed",
                input=job.source,
                kind=detail.kind,
                reason=detail.reason,
                report=shown,
                traceback=detail.traceback,
            )
        elif outcome == "skip":
            assert isinstance(detail, ReuseDetail)
            log.info("job.skipped", input=job.source, answered_by=shown, earlier_job=detail.job_id)
        else:
            log.info("job.done", input=job.source, output=shown, reused=outcome == "reuse")
        self.metrics.job_finished(_metric(outcome, detail), self.attempt_seconds.pop(job.id, None))
        if isinstance(detail, ResultDetail) and detail.info.device.startswith("cuda"):
            self.metrics.set_gpu_memory(detail.info.peak_memory_bytes)
        self.release(job, outcome)

    def release(self, job: Job, outcome: Outcome | None) -> None:
        """After the outbox holds the answer: move the originals on and forget the job."""
        self.stop_running(job)
        end = END_OF[outcome or "failure"]
        success = end in ENDS_WITH_RESULT
        archive = success and self.settings.archive == "move"
        twins = self.settings.archive_path / job.rel_dir
        # An OSError here blocks the job (`publish`): the answer is safe, the originals wait
        # in the spool (RELEASING) and the release is tried again, after a restart too.
        if archive and archived_twins(job, self.spool, twins):
            note = f"{ORIGINALS_NOTE}removed, identical copies are in {twins}"
        else:
            placed = self.spool.release(job, archive=archive, answered=success)
            note = ORIGINALS_NOTE + ", ".join(str(path) for path in placed)
        if not success and placed:  # none: moved by an earlier try, its report amended then
            settings = self.settings
            text = answers.original_text(placed, settings.inbox, settings.state)
            with contextlib.suppress(OSError):  # the report keeps the planned place
                answers.amend_original(self.spool.names(job), job.id, text)
        self.store.move(job.id, end, note=note)  # raises on a full state folder: tried again
        self.spool.remove(job)
        self.jobs.pop(job.id, None)
        self.written.pop(job.id, None)


_METRIC = {"result": "done", "reuse": "reused", "skip": "skipped", "failure": "failed"}


def _metric(outcome: Outcome, detail: BaseModel) -> str:
    """A photo a worker refused (damaged, too costly to decode) is the sender's to mend, as a
    refused sidecar is: `rejected`, so that an alert on failures is not set off by it (a
    re-tester's trial)."""
    if isinstance(detail, FailureDetail) and detail.kind == "input":
        return "rejected"
    return _METRIC[outcome]


def _trace(exc: BaseException) -> str:
    return "".join(traceback.format_exception(exc))


def _relative(path: Path, folder: Path) -> str:
    """`path` relative to `folder` for people, or whole when it is elsewhere."""
    return path.relative_to(folder).as_posix() if path.is_relative_to(folder) else str(path)


def _input(job: Job | None, detail: BaseModel) -> str:
    if job is not None:
        return job.source
    return detail.input if isinstance(detail, ReportDetail) else ""


def outcome_detail(outcome: Outcome | None, text: str) -> BaseModel:
    models: dict[str, type[BaseModel]] = {
        "result": ResultDetail,
        "reuse": ReuseDetail,
        "skip": ReuseDetail,
        "failure": FailureDetail,
        "report": ReportDetail,
    }
    return model_from_json(models[outcome or "failure"], text)


def _clash(exc: OSError) -> str | None:
    """An outbox folder that cannot be made because a file holds its name (an inbox folder
    named like an answer, `photo.log/`, an attacker's trial), or an answer's file that a
    folder holds the name of: no space or permission will mend it, so the reason says what
    will. None for any other error."""
    if exc.errno == errno.EISDIR and isinstance(exc.filename2, str):  # rename(tmp, answer)
        return (
            f"{exc.filename2} is a folder, where the answer writes a file of that name; move "
            "that folder away"
        )
    if exc.errno not in (errno.EEXIST, errno.ENOTDIR, errno.ELOOP):
        return None
    if not isinstance(exc.filename, str):
        return None
    path = Path(exc.filename)
    for folder in (path, *path.parents):
        if folder.is_symlink():  # made by another writer of the outbox: see `outbox.is_folder`
            return (
                f"{folder} is a link, where the answer needs a folder of that name, and answers "
                "are never written through a link; if it is still one at the next try, the "
                "answer goes to a numbered folder"
            )
        if os.path.lexists(folder) and not folder.is_dir():
            return (
                f"{folder} is a file, where the answer needs a folder of that name; move that "
                "file away"
            )
    return None


def _same_refusal(before: Blocked, on: BlockedOn, number: int | None, reason: str) -> bool:
    """Whether a blocked job's new refusal is the one it had (logged once): by the folder and
    the error's number, as each try names other temporary files; by the text where there is
    no number (a refusal's own message)."""
    if before.on != on:
        return False
    return before.errno == number if number is not None else before.reason == reason
