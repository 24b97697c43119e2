"""Where the state folder keeps job folders: written by `daemon.jobs.spool`, read by `status`
(also when no daemon runs), so the names live here, apart from both."""

from pathlib import Path

BROKEN_PREFIX = ".broken-"


def spool_root(state: Path) -> Path:
    """One folder per unfinished job (see `daemon.jobs.spool`)."""
    return state / "spool"


def set_aside(state: Path, job_id: str) -> Path:
    """Where a BROKEN job's folder is kept for a person until they delete it."""
    return spool_root(state) / f"{BROKEN_PREFIX}{job_id}"


def header_marks(state: Path) -> Path:
    """Marks of inbox files whose header the daemon is reading (see `daemon.header_guard`):
    empty but for reads that never ended."""
    return state / "header-reads"
