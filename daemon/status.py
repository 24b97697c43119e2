"""Everything the daemon knows, as one typed report (`daemon.status_model`): what `stylefold
status` prints, what the daemon publishes in `state/status.json` while it runs, and what the web
page and metrics read.

While the daemon runs it writes the report on every change (files settling and waiting for
their pair exist only in its memory), listing the first LISTED queued jobs and inbox files and
counting the rest; when it does not, `stylefold status` builds the same report from the state
database (`daemon.jobs.store`), without the in-memory sections, listed the same way.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import time
from collections import Counter
from pathlib import Path, PurePosixPath
from typing import Literal

from pydantic import ValidationError

from daemon.fsutil import model_from_json, user_name
from daemon.job_id import created_at
from daemon.jobs import answers
from daemon.jobs.layout import set_aside
from daemon.jobs.states import ENDS_WITH_RESULT, State
from daemon.jobs.store import (
    DB_FILE,
    NEWER_FIX,
    End,
    NewerStateError,
    Store,
    as_damage,
    damage_fix,
)
from daemon.lock import holder
from daemon.status_model import (
    Attention,
    Counts,
    DaemonInfo,
    Finished,
    JobItem,
    StatusReport,
    Unlisted,
)
from daemon.versions import stylefold_version

RESTART_FIX = (
    "restart the daemon (`systemctl restart stylefold` for the service; a `stylefold run` "
    "stopped and started again), or put the old values back and reload"
)


STATUS_FILE = "status.json"
RECENT = 50
RESULTS = 24  # the newest results, listed however many failures (or photos sent again) came after
# Queued jobs and inbox files a running daemon's report lists: a camera roll of 3,000 photos
# made status.json 1.2 MB, written every 2 s while the queue drained (a bulk import's trial).
LISTED = 200
INTERRUPTED = f"{answers.STOPPED_WHILE_RUNNING}; it runs again when the daemon starts"
BLOCKED_UNTIL_START = "tried again when the daemon starts"
_OUTCOMES: dict[State, Literal["done", "failed", "rejected", "skipped"]] = {
    State.DONE: "done",
    State.FAILED: "failed",
    State.REJECTED: "rejected",
    State.SKIPPED: "skipped",
}


def _subject(input: str) -> str:
    """The folder and stem a job's answer is named after: a lone sidecar's report and the
    later result of its photo share them, as do reports on a photo and on its sidecar."""
    path = PurePosixPath(input)
    if path.suffix.lower() == ".json":
        path = path.with_suffix("")
    return str(path.with_suffix("") if path.suffix else path)


# Per subject and whether the job was about a lone sidecar, the newest job id so far.
Later = dict[tuple[str, bool], str]


def _about_sidecar(input: str) -> bool:
    return PurePosixPath(input).suffix.lower() == ".json"


def _created(later: Later, input: str, job_id: str) -> None:
    """Note a job of `input`'s subject; job ids sort by the time they were created."""
    key = (_subject(input), _about_sidecar(input))
    later[key] = max(later.get(key, ""), job_id)


def _answered_again(later: Later, end: End) -> str | None:
    """The newest job of the failure's subject created after it ended, if any: one claimed
    while it waited is another photo of that name (an attacker's trial: its result hid the
    failure of a broken photo queued before it). A lone sidecar's report does not answer a
    photo's failure (an attacker's trial: beside both.jpg and both.jpg.json, the report on an
    unused both.json hid both.jpg's own)."""
    subject = _subject(end.input)
    kinds = (False, True) if _about_sidecar(end.input) else (False,)
    newest = max((later.get((subject, kind), "") for kind in kinds), default="")
    created = created_at(newest)
    after = newest > end.id if created is None else created > end.since
    return newest if after else None


def from_store(store: Store, daemon: DaemonInfo, live: list[JobItem] | None = None) -> StatusReport:
    """The durable part of the report: unfinished jobs as recorded (or the running daemon's
    `live` view of them, which saves reading every queued job's record at each publish),
    recent ends, jobs moved aside. The running daemon adds the inbox."""
    jobs = live if live is not None else _recorded(store)
    if not daemon.running:  # recorded RUNNING by a daemon that was killed: nothing runs it now
        jobs = [_stopped(job) for job in jobs]
    recent: list[Finished] = []
    latest = store.ends(RECENT)
    listed_ends = {end.id for end in latest}
    waiting = [end for end in store.ends_answered_in_place(RECENT) if end.id not in listed_ends]
    results = [end for end in store.latest_results(RESULTS) if end.id not in listed_ends]
    latest = sorted(latest + waiting + results, key=lambda end: end.since, reverse=True)
    attention = _broken(store, {end.id for end in latest})
    # Per subject, its newest job (by id: when it was created) of those not ended yet or ended
    # after the one at hand: a failure is answered again only by a job created after it (an
    # attacker's trial: a link's report, put where a kept photo was while that photo's job
    # waited, was hidden once that job was done).
    later: Later = {}
    for job in jobs:
        _created(later, job.input, job.job_id)
    for end in latest:  # newest first
        if end.state in _OUTCOMES:
            result = end.state in ENDS_WITH_RESULT
            recent.append(
                Finished(
                    job_id=end.id,
                    input=end.input,
                    outcome=_OUTCOMES[end.state],
                    at=end.since,
                    output=end.answer if result else None,
                    report=None if result else end.answer,
                    reason=end.reason,
                    answered_again_by=None if result else _answered_again(later, end),
                    withdrawn=end.withdrawn,
                )
            )
            _created(later, end.input, end.id)
    counts = store.counts()
    return StatusReport(
        daemon=daemon,
        jobs=jobs,
        recent=recent,
        attention=attention,
        counts=Counts(
            done=counts.get("done", 0),
            failed=counts.get("failed", 0),
            rejected=counts.get("rejected", 0),
            skipped=counts.get("skipped", 0),
        ),
    )


def listed(report: StatusReport, limit: int = LISTED) -> StatusReport:
    """`report` with its first `limit` queued jobs and inbox files, the rest counted (every job
    at work or held is listed)."""
    queued = [job for job in report.jobs if job.state is State.QUEUED]
    if len(queued) <= limit and len(report.inbox) <= limit:
        return report
    dropped = {job.job_id for job in queued[limit:]}
    inbox = Counter(item.state for item in report.inbox[limit:])
    return report.model_copy(
        update={
            "jobs": [job for job in report.jobs if job.job_id not in dropped],
            "inbox": report.inbox[:limit],
            "unlisted": Unlisted(queued=len(dropped), inbox=dict(inbox)),
        }
    )


def _recorded(store: Store) -> list[JobItem]:
    return [
        JobItem(
            job_id=row.id,
            input=row.input,
            state=row.state,
            since=row.since,
            styles=[s.name for s in row.job.styles] if row.job else [],
            reason=row.reason,
            retry_at=row.retry_at,
            starts=row.starts,
        )
        for row in store.active()
    ]


def _broken(store: Store, recent: set[str]) -> list[Attention]:
    """Jobs set aside for a person: listed while their folder is kept (however many jobs
    ended since), and while they are among the recent ends (all that a job set aside without
    a folder, a report, gets)."""
    state = store.path.parent
    return [
        Attention(
            what=f"job {row.id} ({row.input}) is broken",
            where=row.reason,
            since=row.since,
            fix="look at the files, put the photo back in the inbox, then delete the folder",
        )
        for row in store.in_state(State.BROKEN)
        if set_aside(state, row.id).exists() or row.id in recent
    ]


def duration(seconds: float) -> str:
    """A span as people read it in a status line: seconds, minutes, then hours."""
    seconds = max(0.0, seconds)
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def waited(job: JobItem, now: float) -> str:
    """A job that waits for a worker, as status and the web page show it: for how long, when
    it is expected to start, its earlier starts and what went wrong at the last."""
    text = duration(now - job.since)
    if job.starts_in_seconds is not None:
        text += f"; starts in about {duration(job.starts_in_seconds)}"
    if job.starts:
        text += f"; started {job.starts} time(s) before"
    return text + (f"; last try: {job.reason}" if job.reason else "")


def _stopped(job: JobItem) -> JobItem:
    """A job as it stands with no daemon running: not running, nor tried again in a few
    seconds (an operator's trial: "next try in 17 s" after the daemon had stopped)."""
    if job.state == State.RUNNING:
        return job.model_copy(update={"state": State.QUEUED, "reason": INTERRUPTED})
    if job.state == State.BLOCKED and job.retry_at is not None:
        reason = f"{job.reason or 'blocked'}; {BLOCKED_UNTIL_START}"
        return job.model_copy(update={"retry_at": None, "reason": reason})
    return job


def blocked_why(job: JobItem, now: float) -> str:
    """A blocked job's reason, after what refused it where that is known (the running daemon
    knows; a report built from the database does not, and must not guess the outbox), and
    when it is tried again."""
    why = job.reason or "blocked"
    if job.blocked_on is not None:
        why = f"{answers.BLOCKED_ON[job.blocked_on]}: {why}"
    return why if job.retry_at is None else f"{why}; next try in {duration(job.retry_at - now)}"


def time_left(job: JobItem, daemon: DaemonInfo, now: float) -> str | None:
    """What is left of a running job: its estimate, or, during a stop whose grace period ends
    first, when the stop cuts it (an administrator's trial: "about 2 min left" showed while
    the stop would put the job back in the queue within seconds)."""
    cut, eta = daemon.cuts_running_at, job.eta_seconds
    if daemon.stopping and cut is not None and (eta is None or now + eta > cut):
        when = f"in {duration(cut - now)}" if cut > now else "now"
        return f"the stop cuts it {when}; it runs again at the next start"
    return None if eta is None else f"about {duration(eta)} left"


def read_status(state: Path) -> StatusReport:
    """What `stylefold status` shows: the running daemon's own report, or (when none runs, or
    its report could not be written) the same report built from the state database; either
    way a full state folder is named, as the daemon cannot write that into its report."""
    report = _read_report(state)
    if not any(STATE_FOLDER in item.what for item in report.attention):
        report.attention += _state_full(state)
    report.attention += _stale(report, state, time.time())
    return report


# A running daemon rewrites its report every few seconds (daemon.status_reporter); by this age its
# main loop would have missed systemd's watchdog (WatchdogSec=60).
STALE_AFTER = 60.0


def _stale(report: StatusReport, state: Path, now: float) -> list[Attention]:
    """A running daemon's report that has stopped being rewritten: an operator's trial made
    the state folder immutable, the daemon could take no photo, and `status` showed its last
    report, 38 s old and growing, as if all were well."""
    written = report.daemon.updated_at
    if not report.daemon.running or written is None or now - written < STALE_AFTER:
        return []
    return [
        Attention(
            what=f"the running daemon has not rewritten this report for {now - written:.0f} s: "
            "what it shows may be out of date",
            where=str(state / STATUS_FILE),
            fix="check that the state folder is writable and has room (stylefold doctor), and "
            "the daemon's log for errors; a main loop that hangs is restarted by systemd's "
            "watchdog",
        )
    ]


def _read_report(state: Path) -> StatusReport:
    pid = holder(state)
    daemon = DaemonInfo(running=pid is not None, pid=pid, version=stylefold_version())
    if pid is not None:
        with contextlib.suppress(OSError, ValidationError):
            report = model_from_json(StatusReport, (state / STATUS_FILE).read_bytes())
            if report.daemon.pid == pid and report.daemon.starting is None:
                return report
            if report.daemon.pid == pid:  # not ready yet: its own words, the stored queue
                daemon = report.daemon
    store_file = state / DB_FILE
    if not store_file.exists():
        return StatusReport(daemon=daemon)
    try:
        store = Store(state, readonly=True)
        try:
            return listed(from_store(store, daemon))  # as a running daemon's report lists
        finally:
            store.close()
    except (OSError, sqlite3.Error, ValidationError) as exc:
        # Whoever asks (status, the web page) still gets an answer that says what is wrong.
        if (damage := as_damage(exc, store_file)) is not None:
            # told as a permission or space problem when the file opened (an operator's trial)
            what, fix = f"the state database is damaged ({damage.found})", damage_fix(store_file)
        elif isinstance(exc, NewerStateError):
            what, fix = exc.what, NEWER_FIX
        else:
            what = f"the state database cannot be read ({exc})"
            fix = (
                "check the state folder's permissions and free space (stylefold doctor); a "
                "running daemon reports its own status meanwhile"
            )
        unreadable = Attention(what=what, where=str(store_file), fix=fix)
        return StatusReport(daemon=daemon, attention=[unreadable])


def shut_out(exc: PermissionError) -> str:
    """What to tell someone who reads the daemon's state as another user (`status`, the web
    page's own unit): a non-root trial got a traceback from one, an error page from the other.
    A file another user left in a folder this one owns is named as such (an operator's trial:
    the daemon's user, shut out of a lock that `once` run as root had left, was told to run as
    the daemon's user)."""
    where = exc.filename if exc.filename is not None else "a file it needs"
    if (left := _left_by_another(exc.filename)) is not None:
        return f"{where}: {exc.strerror}: {left}"
    return (
        f"{where}: {exc.strerror}; run this as the user the daemon runs as (for example "
        "`sudo -u stylefold stylefold ...`), or as one in that folder's group"
    )


def _left_by_another(filename: object) -> str | None:
    if not isinstance(filename, str):
        return None
    path = Path(filename)
    try:
        owner, folder = path.lstat().st_uid, path.parent.stat().st_uid
    except OSError:
        return None
    me = os.geteuid()
    if owner == me or folder != me:
        return None
    return (
        f"it belongs to {user_name(owner)}, not to this user ({user_name(me)}), who owns the "
        f"folder it is in: a command run as {user_name(owner)} left it; give the folder's "
        f"contents back: chown -R {user_name(me)}: {path.parent}"
    )


STATE_FOLDER = "the state folder"  # how attention items about it begin their `what`
NEARLY_FULL = 1 << 20  # bytes free below which the state database may record nothing


def _state_full(state: Path) -> list[Attention]:
    try:
        result = os.statvfs(state)
    except OSError:
        return []
    if result.f_bavail * result.f_frsize >= NEARLY_FULL:
        return []
    return [
        Attention(
            what=f"{STATE_FOLDER} is full: jobs cannot be recorded and new photos wait in the "
            "inbox",
            where=str(state),
            fix="free space where the state folder is; the daemon carries on by itself",
        )
    ]
