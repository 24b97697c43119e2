"""A job's id, made and recognised in one place: the spool, the outbox's answers (which the
intake must tell from photos) and the web page's links all carry it."""

from __future__ import annotations

import calendar
import re
import secrets
import time

# UTC date and time, microseconds, 6 random hex digits: 20260101-120000-123456-abcdef.
JOB_ID = re.compile(r"\d{8}-\d{6}-\d{6}-[0-9a-f]{6}")


def new_job_id() -> str:
    """Sortable by claim time, so the spool replays in first-in first-out order."""
    now = time.time()
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime(now))
    return f"{stamp}-{int(now % 1 * 1e6):06d}-{secrets.token_hex(3)}"


def created_at(job_id: str) -> float | None:
    """When `new_job_id` made `job_id` (epoch seconds); None for an id of another form."""
    if JOB_ID.fullmatch(job_id) is None:
        return None
    stamp = calendar.timegm(time.strptime(job_id[:15], "%Y%m%d-%H%M%S"))
    return stamp + int(job_id[16:22]) / 1e6
