"""Start-up: every unfinished job continues from its recorded state (never from a guess based
on which files exist). A claim cut short is rolled back; a job that was running is queued again
(or given up after MAX_STARTS starts, which protects against a photo that kills its worker);
an answer being published is written again; originals being released are released."""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

import structlog
from pydantic import ValidationError

from daemon.fsutil import model_from_json
from daemon.jobs import answers
from daemon.jobs.answers import FailureDetail, ReportDetail, ResultDetail
from daemon.jobs.migrate import migrate
from daemon.jobs.publisher import outcome_detail
from daemon.jobs.record import Job
from daemon.jobs.spool import ClaimIntent
from daemon.jobs.states import Outcome, State
from daemon.logs import job_context
from daemon.pool.events import ResultInfo

if TYPE_CHECKING:
    from daemon.jobs.lifecycle import Lifecycle

log = structlog.get_logger("stylefold.jobs")

MAX_STARTS = 5  # a job interrupted this often (daemon or worker killed) is given up


def recover(lc: Lifecycle) -> None:
    """Continue every unfinished job from its recorded state. A state folder that records
    nothing (full) must not keep the daemon from starting: every write here is best effort or
    blocks its job, which stays as recorded and is tried again from the loop."""
    try:
        migrate(lc.store, lc.spool, lc.settings.state)
    except OSError as exc:  # repeated at the next start; its old files are kept until then
        log.error("state.migration_deferred", error=str(exc), fix=answers.STATE_FIX)
    for row in lc.store.active():
        with job_context(row.id):
            log.info("job.recovered", input=row.input, state=str(row.state))
            try:
                _recover(lc, row.id, row.state, row.job, row.outcome, row.detail, row.starts)
            except (ValidationError, ValueError) as exc:
                _broken(lc, row.id, f"its record cannot be read ({exc})")
    lc.spool.collect_styles()
    try:
        lc.spool.forget_vanished()
    except OSError as exc:  # only housekeeping: the records are dropped at the next start
        log.warning("spool.not_forgotten", error=str(exc))


def _recover(
    lc: Lifecycle,
    job_id: str,
    state: State,
    job: Job | None,
    outcome: Outcome | None,
    detail: str | None,
    starts: int,
) -> None:
    if state is State.CLAIMING:
        intent = model_from_json(ClaimIntent, detail or "{}")
        lc.spool.roll_back(job_id, intent, note="claim interrupted by a restart")
        return
    if state in (State.PUBLISHING, State.BLOCKED) and outcome == "report":
        lc.publisher.publish(job_id, None, "report", model_from_json(ReportDetail, detail or ""))
        return
    if job is None:
        raise ValueError(f"no job record in state {state}")
    lc.jobs[job.id] = job
    lc.spool.reserve(job)
    if state in (State.PUBLISHING, State.BLOCKED, State.RELEASING):
        # RELEASING too: publish only releases it, and a full state folder blocks, not raises
        lc.publisher.publish(
            job.id, job, outcome or "failure", outcome_detail(outcome, detail or "")
        )
    elif (lc.spool.job_dir(job) / "result.json").exists():
        info = model_from_json(ResultInfo, (lc.spool.job_dir(job) / "result.json").read_bytes())
        lc.publisher.publish(job.id, job, "result", ResultDetail(info=info))
    elif starts >= MAX_STARTS:
        reason = answers.INTERRUPTED.format(starts=starts)
        lc.publisher.fail(job, FailureDetail(kind="interrupted", reason=reason))
    else:
        lc.queued_again(job, note="the daemon restarted")  # best effort, as RUNNING is requeued
        lc.backlog.append(job)


def _broken(lc: Lifecycle, job_id: str, reason: str) -> None:
    moved = lc.spool.move_aside(job_id)
    log.error("job.broken", reason=reason, moved_to=str(moved))
    with contextlib.suppress(OSError):
        lc.store.move(job_id, State.BROKEN, reason=f"{reason}; its files are in {moved}")


# -- intake -----------------------------------------------------------------------------
