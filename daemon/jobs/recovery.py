"""Start-up: every unfinished job continues from its recorded state (never from a guess based
on which files exist). A claim cut short, or a changed original on its way back, is rolled
back; a job that was running is queued again (or given up after MAX_STARTS starts, which
protects against a photo that kills its worker); an answer being published is written again;
originals being released are released. A spool folder the database does not know is given
back to the inbox from its own `claim.json`."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import TYPE_CHECKING

import structlog

from daemon.fsutil import model_from_json, remove
from daemon.jobs import answers, outbox, starts
from daemon.jobs.answers import FailureDetail, ReportDetail, ResultDetail
from daemon.jobs.migrate import migrate
from daemon.jobs.publisher import outcome_detail
from daemon.jobs.spool import CLAIM_FILE, ClaimIntent
from daemon.jobs.states import ANSWERING, MOVING_ORIGINALS, TRANSITIONS, State
from daemon.jobs.store import JobRow
from daemon.logs import job_context
from daemon.pool import RESULT_INFO
from daemon.pool.events import ResultInfo

if TYPE_CHECKING:
    from daemon.jobs.lifecycle import Lifecycle

log = structlog.get_logger("stylefold.jobs")

NOT_RECORDED = "its spool folder was not in the state database"
UNKNOWN_INPUT = "unknown photo"
# Ends reached only through RELEASING, so only after the originals left the spool folder.
RELEASED = TRANSITIONS[State.RELEASING]
# A job interrupted this often (the daemon killed under it, or its Ray node lost) is given up;
# an orderly stop (SIGTERM, a restart for an upgrade) and the pool's own retries (bounded by
# `retries`) requeue it and do not count.
MAX_STARTS = 5


def recover(lc: Lifecycle) -> int:
    """Continue every unfinished job from its recorded state; returns how many there were
    (each logged `job.recovered`). A state folder that records nothing (full) must not keep
    the daemon from starting: every write here is best effort or blocks its job, which stays
    as recorded and is tried again from the loop."""
    try:
        migrate(lc.store, lc.spool, lc.settings.state)
    except OSError as exc:  # repeated at the next start; its old files are kept until then
        log.error("state.migration_deferred", error=str(exc), fix=answers.STATE_FIX)
    _settle_spool(lc)
    rows = lc.store.active()
    for row in rows:
        with job_context(row.id):
            log.info("job.recovered", input=row.input, state=str(row.state))
            try:
                _recover(lc, row)
            except Exception as exc:  # one bad job must never keep the daemon from starting
                if row.job is None and isinstance(exc, ValueError):  # pydantic's errors too
                    lc.publisher.set_aside(row.id, f"its record cannot be read ({exc})")
                else:  # the failure path: its originals go back with a report
                    lc.publisher.crashed(row.id, row.job, exc, "recovering it")
    lc.spool.styles.collect()
    try:
        lc.spool.in_place.forget_vanished(lc.reports.withdraw)  # their reports too
    except OSError as exc:  # only housekeeping: the records are dropped at the next start
        log.warning("spool.not_forgotten", error=str(exc))
    return len(rows)


def _settle_spool(lc: Lifecycle) -> None:
    """Spool folders the database has no record of (it was lost, damaged and moved aside, or
    rolled back to an older copy): their originals go back to the inbox, as a claim cut short
    would, from the folder's own `claim.json`, and are taken again as new arrivals. A folder
    without one (or with one that cannot be read) is set aside, BROKEN, for a person, so that
    status lists it; no original is left where nobody looks. The folder of a job whose end is
    recorded is a leftover, removed."""
    for folder in sorted(lc.spool.root.iterdir()):
        job_id = folder.name
        if job_id.startswith(".") or not folder.is_dir():
            continue
        row = lc.store.get(job_id)
        if row is not None:
            if row.state in RELEASED:
                _remove_leftover(lc, row)
            continue
        with job_context(job_id):
            try:
                _give_back_folder(lc, folder)
            except Exception as exc:  # never keeps the daemon from starting; tried again then
                log.error("job.unrecorded_not_returned", folder=str(folder), error=repr(exc))


def _remove_leftover(lc: Lifecycle, row: JobRow) -> None:
    """A job's end is recorded before its folder goes, so a stop in between leaves the folder
    with the result and log (both in the outbox by then) and without the originals (moved on
    by then). Kept, and said, should an original be there after all."""
    folder = lc.spool.job_dir(row.id)
    job = row.job
    # A copied job's files are copies: its originals never left the inbox.
    originals = [] if job is None or job.copied else [t for _, t in ClaimIntent.of(job).moves]
    if any((folder / name).exists() for name in originals):
        log.warning("spool.leftover_kept", folder=str(folder), state=str(row.state))
        return
    log.info("spool.leftover_removed", folder=str(folder), state=str(row.state))
    lc.spool.remove(row.id)


def _give_back_folder(lc: Lifecycle, folder: Path) -> None:
    job_id = folder.name
    try:
        intent = model_from_json(ClaimIntent, (folder / CLAIM_FILE).read_bytes())
        if not intent.moves:
            raise ValueError(f"{CLAIM_FILE} lists no files")
    except (OSError, ValueError) as exc:
        if isinstance(exc, FileNotFoundError):
            why = f"it has no {CLAIM_FILE} (claimed by an older version?)"
        else:
            why = f"its {CLAIM_FILE} cannot be used ({exc})"
        lc.store.create(job_id, State.CLAIMING, UNKNOWN_INPUT, note=NOT_RECORDED)
        lc.publisher.set_aside(job_id, f"{NOT_RECORDED}, and {why}")
        return
    photo = intent.moves[0][0]
    source = (Path(intent.rel_dir) / photo).as_posix()
    lc.store.create(job_id, State.CLAIMING, source, detail=intent, note=NOT_RECORDED)
    # Lost between its answer and the release of its originals, it was answered a second
    # time as `photo.stylised-2.jpg`: the originals go back remembered as answered.
    # Where its answers went: the mirror of its folder, or the numbered one a file made it take.
    answers_in = lc.settings.outbox / lc.spool.places.folder_for(intent.rel_dir)
    answer = outbox.answer_of(answers_in, Path(photo).stem, job_id)
    shown = None if answer is None else answer.relative_to(lc.settings.outbox).as_posix()
    log.warning("job.unrecorded", input=source, folder=str(folder), answer=shown)
    note = f"{NOT_RECORDED}: given back to the inbox"
    if shown is not None:
        note += f", answered by {shown} (not to be taken again while unchanged)"
    placed = lc.spool.roll_back(job_id, intent, note=note).inbox
    if shown is not None and placed:
        lc.spool.in_place.remember(list(intent.pair_among(placed)), job_id)
    for path in outbox.running_files_of(answers_in, job_id):
        # A killed job's progress file, its names forgotten; one that cannot go (its folder
        # swapped for a link meanwhile) is no reason to stop the recovery of the others.
        with contextlib.suppress(OSError):
            remove(path, lc.settings.outbox)


def _recover(lc: Lifecycle, row: JobRow) -> None:
    job_id, state, job, outcome, detail = row.id, row.state, row.job, row.outcome, row.detail
    if state in MOVING_ORIGINALS:
        intent = model_from_json(ClaimIntent, detail or "{}")
        lc.spool.roll_back(job_id, intent, note=f"{state} interrupted by a restart")
        return
    if state in ANSWERING and outcome == "report":
        lc.publisher.publish(job_id, None, "report", model_from_json(ReportDetail, detail or ""))
        return
    if job is None:
        raise ValueError(row.record_error or f"no job record in state {state}")
    lc.jobs[job.id] = job
    lc.spool.reserve(job)
    if state in ANSWERING | {State.RELEASING}:
        # RELEASING too: publish only releases it, and a full state folder blocks, not raises
        lc.publisher.publish(
            job.id, job, outcome or "failure", outcome_detail(outcome, detail or "")
        )
    elif (described := lc.spool.job_dir(job) / RESULT_INFO).exists():
        info = model_from_json(ResultInfo, described.read_bytes())
        lc.publisher.publish(job.id, job, "result", ResultDetail(info=info))
    elif (
        started := row.starts - row.stopped + starts.unrecorded(lc.spool.job_dir(job))
    ) >= MAX_STARTS:
        reason = answers.INTERRUPTED.format(starts=started)
        lc.publisher.fail(job, FailureDetail(kind="interrupted", reason=reason))
    else:
        if state is State.RUNNING:  # a crash or kill -9 cut it (an orderly stop requeues its
            # jobs and logs why; a sync user's trial: "start 1", then "start 2", and nothing
            # of why in between)
            lc.spool.append_log(job, f"{answers.STOPPED_WHILE_RUNNING}; it runs again")
        lc.queued_again(job, note="the daemon restarted")  # best effort, as RUNNING is requeued
        lc.for_pool.append(job)
