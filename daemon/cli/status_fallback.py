"""A `StatusReport` from today's state folder: the running daemon's `status.json`, the spool's
job folders and the journal. Files settling or waiting for their pair live only in the
daemon's memory, so they are absent here.

Temporary, for as long as `daemon.status.read_status` (the state database) does not exist;
`stylefold status` uses that one as soon as it does.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

from daemon.cli.common import version
from daemon.fsutil import read_json
from daemon.jobs.spool import STARTED_FILE, Job, read_journal
from daemon.lock import holder
from daemon.status import DaemonInfo, Finished, JobItem, StatusReport


def read_status(state: Path) -> StatusReport:  # replaced by daemon.status.read_status
    pid = holder(state)
    snapshot = read_json(state / "status.json") if pid is not None else None
    snapshot = snapshot if isinstance(snapshot, dict) else {}
    progress = {
        entry["job_id"]: entry
        for entry in snapshot.get("running", [])
        if isinstance(entry, dict) and "job_id" in entry
    }
    jobs = []
    spool = state / "spool"
    for folder in sorted(spool.iterdir()) if spool.is_dir() else []:
        if folder.name.startswith(".") or not (folder / "job.json").is_file():
            continue
        try:
            job = Job.model_validate_json((folder / "job.json").read_bytes())
        except (OSError, ValueError):
            continue
        started = read_json(folder / STARTED_FILE)
        starts = started.get("starts", 0) if isinstance(started, dict) else 0
        jobs.append(_job(job, starts, progress.get(job.id)))
    daemon = DaemonInfo(
        running=pid is not None,
        pid=pid or None,
        version=version(),
        updated_at=snapshot.get("updated_at"),
        watch_mode=snapshot.get("watch_mode"),
        paused=snapshot.get("paused"),
    )
    recent = [end for end in map(_finished, read_journal(state)) if end is not None]
    return StatusReport(daemon=daemon, jobs=jobs, recent=recent)


def _job(job: Job, starts: int, running: dict[str, Any] | None) -> JobItem:
    known = {
        "job_id": job.id,
        "input": job.source,
        "styles": [style.name for style in job.styles],
        "starts": starts,
    }
    if running is None:
        return JobItem(**known, state="queued", since=job.claimed_at)
    return JobItem(
        **known,
        state="running",
        since=running.get("started_at", job.claimed_at),
        device=running.get("device"),
        percent=running.get("percent"),
        iteration=running.get("iteration"),
        total=running.get("total"),
        eta_seconds=running.get("eta_seconds"),
    )


def _finished(entry: dict[str, Any]) -> Finished | None:
    """A journal line; a re-sent input answered by an earlier result counts as skipped."""
    outcome = "skipped" if entry.get("reused") else entry.get("outcome")
    with contextlib.suppress(ValueError):
        return Finished(
            job_id=str(entry.get("job_id", "")),
            input=str(entry.get("input", "")),
            outcome=outcome,
            at=entry.get("at", 0.0),
            output=entry.get("output"),
            report=entry.get("report"),
            reason=entry.get("error"),
        )
    return None
