"""Starts of a job that the state database could not record (its file system full): counted in
the job's spool folder by the name of an empty file, `.unrecorded-starts-N`, which needs no
data block to create or rename. Without it a daemon that dies while rendering such a job (the
case MAX_STARTS guards against) would start it again uncounted at every restart, for as long
as the state folder stays full: a crash loop the guard never sees. Recovery adds N to the
recorded count."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import structlog

log = structlog.get_logger("stylefold.jobs")

MARK = ".unrecorded-starts-"


def unrecorded(folder: Path) -> int:
    """How many starts of the job in `folder` the database is missing."""
    with contextlib.suppress(OSError):
        for entry in os.listdir(folder):
            if entry.startswith(MARK) and entry[len(MARK) :].isdigit():
                return int(entry[len(MARK) :])
    return 0


def count_unrecorded(folder: Path) -> int:
    """One more start the database could not record; returns the new count (best effort:
    a folder that takes not even an empty file leaves the count as it was)."""
    count = unrecorded(folder)
    new = folder / f"{MARK}{count + 1}"
    try:
        if count:
            os.rename(folder / f"{MARK}{count}", new)
        else:
            new.touch()
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as exc:
        log.warning("job.start_not_counted", folder=str(folder), error=str(exc))
        return count
    return count + 1
