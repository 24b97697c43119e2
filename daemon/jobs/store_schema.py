"""The state database's tables, and the upgrade of a database written by an older version.

Kept apart from `daemon.jobs.store`, which reads and writes rows: what the tables are, and how
a database from an earlier release is brought up to them, change together and only here. An
upgrade only ever adds (tables, indexes, columns with defaults), so a read-only reader of a
database not yet upgraded still works (`added_columns`).
"""

from __future__ import annotations

import sqlite3

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    state TEXT NOT NULL,
    since REAL NOT NULL,
    input TEXT NOT NULL,          -- the photo, relative to the inbox
    record TEXT,                  -- the Job (JSON), once claimed
    outcome TEXT,                 -- publishing/blocked: result | reuse | failure | report
    detail TEXT,                  -- what publishing needs (JSON; see daemon.jobs.lifecycle)
    reason TEXT,                  -- blocked, failed, rejected, broken: in words
    retry_at REAL,                -- blocked: epoch seconds of the next try
    starts INTEGER NOT NULL DEFAULT 0,
    lost INTEGER NOT NULL DEFAULT 0  -- times its worker went with its Ray cluster (ADDED_COLUMNS)
);
CREATE INDEX IF NOT EXISTS jobs_state ON jobs(state);
CREATE INDEX IF NOT EXISTS jobs_since ON jobs(since);  -- the latest ends (Store.finished, .ends)
CREATE TABLE IF NOT EXISTS transitions (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id TEXT NOT NULL,
    at REAL NOT NULL,
    from_state TEXT,
    to_state TEXT NOT NULL,
    note TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS transitions_job ON transitions(job_id);
CREATE TABLE IF NOT EXISTS answered (
    key TEXT PRIMARY KEY,         -- photo bytes + styles + params + output options
    job_id TEXT NOT NULL,
    output TEXT NOT NULL,         -- absolute path of the published image (file system bytes)
    sha256 TEXT NOT NULL,
    manifest TEXT NOT NULL,
    at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS answered_inputs (
    input BLOB NOT NULL,          -- the photo, relative to the inbox (file-system bytes)
    key TEXT NOT NULL,            -- Job.sent_key (rows of earlier versions: the job key)
    job_id TEXT NOT NULL,
    output BLOB NOT NULL,         -- absolute path of the image that answered this input
    sha256 TEXT NOT NULL,
    manifest TEXT NOT NULL,
    at REAL NOT NULL,
    PRIMARY KEY (input, key)
);
CREATE TABLE IF NOT EXISTS seen (
    path BLOB PRIMARY KEY,        -- relative to the inbox, as the file system's bytes
    signatures TEXT NOT NULL,     -- [[size, mtime_ns] | null, ...] of photo and sidecar
    job_id TEXT NOT NULL
);
"""

_COLUMNS = "id, state, since, input, record, outcome, detail, reason, retry_at, starts"
# Columns added since the first release of the database, with their definitions: opening a
# database for writing adds what it lacks (SQLite adds a column in place, without a copy).
ADDED_COLUMNS: dict[str, str] = {
    "lost": "INTEGER NOT NULL DEFAULT 0",
    "stopped": "INTEGER NOT NULL DEFAULT 0",
    "rendered_again": "INTEGER NOT NULL DEFAULT 0",  # its result vanished: see MAX_RESULTS_LOST
    "withdrawn": "INTEGER NOT NULL DEFAULT 0",  # its report went with its input (InboxReports)
}
# Before `rendered_again`, those renders were counted from the journal's notes; an upgrade
# counts them so once, into the column.
_RENDERED_AGAIN_NOTE = "rendered again"


# The database's format (PRAGMA user_version): raised with any change an older version would
# misread (a job record field it does not know). An operator's trial: rolled back one day, a
# version set every unfinished job aside as broken, "copied: Extra inputs are not permitted".
# Versions from this one on refuse a newer format instead (`NewerFormat`). 2: a result's
# `notes` (ResultInfo) and a returning job's `changed` (ClaimIntent), unknown to format 1.
STATE_FORMAT = 2


class NewerFormat(Exception):
    """The database was written by a newer version; `found` is its format."""

    def __init__(self, found: int) -> None:
        super().__init__(found)
        self.found = found


def check_format(db: sqlite3.Connection) -> int:
    """The database's format; raises NewerFormat for one this version cannot read."""
    found = int(db.execute("PRAGMA user_version").fetchone()[0])
    if found > STATE_FORMAT:
        raise NewerFormat(found)
    return found


def create_or_upgrade(db: sqlite3.Connection, found: int) -> None:
    """Create what a new database lacks, and add what an older one (of format `found`, from
    `check_format`) lacks."""
    db.executescript(SCHEMA)
    have = _column_names(db)
    for name, definition in ADDED_COLUMNS.items():
        if name not in have:
            db.execute(f"ALTER TABLE jobs ADD COLUMN {name} {definition}")
    if "rendered_again" not in have:
        db.execute(
            "UPDATE jobs SET rendered_again = (SELECT count(*) FROM transitions "
            "WHERE job_id = jobs.id AND note = ?)",
            (_RENDERED_AGAIN_NOTE,),
        )
    if found < STATE_FORMAT:
        db.execute(f"PRAGMA user_version = {STATE_FORMAT}")


def added_columns(db: sqlite3.Connection) -> dict[str, str]:
    """Each added column as a query reads it. A read-only reader (`stylefold status` upgraded
    while the previous daemon still runs) may find a database without them: it reads them as
    their defaults rather than failing."""
    have = _column_names(db)
    return {name: name if name in have else f"0 AS {name}" for name in ADDED_COLUMNS}


def job_columns(added: dict[str, str]) -> str:
    """What a job row is read with, the added columns as `added_columns` reads them."""
    return ", ".join([_COLUMNS, *added.values()])


def _column_names(db: sqlite3.Connection) -> set[str]:
    return {str(row[1]) for row in db.execute("PRAGMA table_info(jobs)")}
