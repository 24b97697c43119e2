"""The state database (`state/stylefold.db`, SQLite in WAL mode): job records and their
transitions, the index of answered inputs, and the inbox files already answered in place.

Originals stay files (in `state/spool/<job-id>/`); this holds everything about them. Each state
change is one transaction that checks the transition against `daemon.jobs.states` and appends it
to `transitions` (the journal that `stylefold status` and a person read). `synchronous=FULL`:
a transition that returned survives a power cut, so a restart resumes from it. The tables
themselves, and the upgrade of a database from an older version, are `daemon.jobs.store_schema`.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import pwd
import sqlite3
import stat
import time
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from pydantic import BaseModel, ValidationError

from daemon.fsutil import model_from_json, model_to_json
from daemon.jobs.record import Job
from daemon.jobs.states import (
    ACTIVE,
    ANSWERED_INTO,
    ENDS_WITH_REPORT,
    TERMINAL,
    Outcome,
    State,
    check,
)
from daemon.jobs.store_schema import (
    STATE_FORMAT,
    NewerFormat,
    added_columns,
    check_format,
    create_or_upgrade,
    job_columns,
)

DB_FILE = "stylefold.db"
KEEP_FINISHED = 10_000  # finished jobs kept for `status` and the journal; older ones pruned
# Answers kept for dedupe and for recognising a photo sent again (about 0.7 KB each with their
# inputs' rows): a photo older than this is rendered again, nothing is lost.
KEEP_ANSWERS = 200_000


class StoreError(OSError):
    """The database could not be written (disk full, permissions, corruption); an OSError, so
    every path that copes with an unwritable state folder copes with this too. `damaged`: the
    file itself is broken, which no restart, permission or free space mends."""

    damaged = False

    def __str__(self) -> str:  # the message alone: "[Errno 5]" told an operator nothing
        return self.strerror or super().__str__()


class DamagedStateError(StoreError):
    """The database file is broken inside (SQLite's quick check, or a read, says so): no
    restart mends it, so the daemon stops with the fix (an operator's trial: it started on
    a file with two pages overwritten, then crashed with a traceback in its first query,
    and systemd restarted it five times)."""

    damaged = True

    def __init__(self, path: Path, found: str) -> None:
        self.found = found
        super().__init__(
            errno.EIO, f"the state database {path} is damaged ({found}); {damage_fix(path)}"
        )


NEWER_FIX = (
    "run the newer version, or roll back as deploy/README.md section 6 says (let the queue "
    "drain, stop it, then move the state folder aside)"
)


class NewerStateError(StoreError):
    """The database is of a newer version's format: no restart of this version mends it."""

    def __init__(self, what: str) -> None:
        super().__init__(errno.EPROTO, f"{what}: {NEWER_FIX}")
        self.what = what


class ReadOnlyStateError(StoreError):
    """The database opens but this user may not write it (a file left owned by root): every
    claim would fail, so the daemon does not start on it (a non-root trial: it started
    "ready", and every photo waited)."""

    def __init__(self, path: Path) -> None:
        super().__init__(errno.EACCES, f"the state database file {path} {read_only_fix(path)}")


def unwritable_file(path: Path) -> Path | None:
    """The first of the database and its -wal and -shm files that exists and this user may
    not read and write, if any."""
    files = [path, path.with_name(f"{path.name}-wal"), path.with_name(f"{path.name}-shm")]
    return next((f for f in files if f.exists() and not os.access(f, os.R_OK | os.W_OK)), None)


def read_only_fix(path: Path) -> str:
    """What to do about a state database file this user may not write: run as its owner or
    give it back to the daemon's user; where it is this user's, its write permission back;
    else its file system (read-only, or the file immutable)."""
    try:
        seen = path.stat()
        owner = pwd.getpwuid(seen.st_uid).pw_name if seen.st_uid != os.geteuid() else None
    except (OSError, KeyError):
        seen, owner = None, "another user"
    if owner is not None:
        return (
            f"cannot be written by this user (it belongs to {owner}): run this as {owner} if "
            "that is the daemon's user, or give it, and its -wal and -shm files, back to the "
            "daemon's user (chown), as the rest of the state folder"
        )
    if seen is not None and not seen.st_mode & stat.S_IWUSR:  # a re-test: told to chown it
        return (
            f"cannot be written by this user (its mode, {stat.filemode(seen.st_mode)}, lets no "
            "one write it); chmod u+w it, and its -wal and -shm files"
        )
    return (
        "cannot be written by this user though its mode allows it: its file system is "
        "mounted read-only, or the file is immutable (lsattr)"
    )


def is_damage(exc: BaseException | None) -> bool:
    """SQLITE_NOTADB and SQLITE_CORRUPT; locks, permissions and I/O are OperationalError."""
    return isinstance(exc, sqlite3.DatabaseError) and not isinstance(exc, sqlite3.OperationalError)


def as_damage(exc: BaseException, path: Path) -> DamagedStateError | None:
    """`exc` as the damage to the database at `path` it tells of, if any: a query's own error,
    or a write's (a StoreError caused by one)."""
    if isinstance(exc, DamagedStateError):
        return exc
    cause = exc.__cause__ if isinstance(exc, StoreError) else exc
    return DamagedStateError(path, str(cause)) if is_damage(cause) else None


def damage_fix(path: Path) -> str:
    """What to do about a damaged database, which holds the unfinished jobs' records."""
    return (
        f"stop the daemon, then restore {path.name} from a backup, or move {path.name}, "
        f"{path.name}-wal and {path.name}-shm aside to start with an empty history (the photos "
        f"of unfinished jobs, in {path.parent / 'spool'}, then go back to the inbox by "
        "themselves and are rendered again)"
    )


@dataclass(frozen=True)
class JobRow:
    id: str
    state: State
    since: float
    input: str
    job: Job | None
    outcome: Outcome | None
    detail: str | None
    reason: str | None
    retry_at: float | None
    starts: int
    lost: int  # times its worker went with its Ray cluster (see daemon.pool.retry.MAX_REQUEUES)
    stopped: int  # starts that ended by an orderly stop (requeued), not a crash
    rendered_again: int  # times its rendered result vanished before it was written out
    withdrawn: int  # 1 once its report went with its input (a failure no one need act on)
    record_error: str | None = None  # why `job` is None although a record is stored


# An end as status lists it (`End`): the note of the move that answered it names its answer;
# `withdrawn` as `added_columns` reads it.
def _ends_select(withdrawn: str) -> str:
    return (
        f"SELECT id, state, since, input, reason, {withdrawn}, (SELECT note FROM transitions "
        f"WHERE job_id = jobs.id AND to_state IN ({','.join('?' * len(ANSWERED_INTO))}) "
        "ORDER BY seq DESC LIMIT 1) "
    )


# The latest ends, `limit` of them (parameters: TERMINAL's states, then the limit), for
# `Store.finished` and `Store.ends`.
_LATEST_ENDS = (
    f"FROM jobs WHERE +state IN ({','.join('?' * len(TERMINAL))}) ORDER BY since DESC LIMIT ?"
)


@dataclass(frozen=True)
class End:
    """A finished job as status lists it, read without its record."""

    id: str
    state: State
    since: float
    input: str
    reason: str | None
    withdrawn: bool  # its report went with its input (`Store.withdrawn`)
    answer: str | None  # the note of its last move to RELEASING or REJECTED: the answer's name


@dataclass(frozen=True)
class Answer:
    """An earlier result for the same input, styles and parameters."""

    key: str
    job_id: str
    output: Path
    sha256: str
    manifest: Path


@dataclass(frozen=True)
class Pruned:
    jobs: int
    answers: int  # rows of the two answer tables


# How the transition that lets a job's originals go notes where they went (`Publisher.release`).
ORIGINALS_NOTE = "originals: "


@dataclass(frozen=True)
class TransitionRow:
    job_id: str
    at: float
    old: str | None
    new: str
    note: str

    @property
    def originals(self) -> tuple[Path, ...]:
        """Where the job's originals went, when this transition let them go."""
        if self.new not in TERMINAL or not self.note.startswith(ORIGINALS_NOTE):
            return ()
        places = self.note.removeprefix(ORIGINALS_NOTE).split(", ")
        return tuple(Path(place) for place in places if place.startswith("/"))


_UNSET: Any = object()


def _writable(db: sqlite3.Connection) -> bool:
    """Whether this connection may write: SQLite opens a file it may not write read-only, and
    says so only at the first write. One is made and undone."""
    db.execute("BEGIN IMMEDIATE")
    try:
        version = int(db.execute("PRAGMA user_version").fetchone()[0])
        db.execute(f"PRAGMA user_version = {version}")
    except sqlite3.OperationalError as exc:
        if exc.sqlite_errorcode & 0xFF != sqlite3.SQLITE_READONLY:  # any of its variants
            raise
        return False
    finally:
        db.execute("ROLLBACK")
    return True


class Store:
    """One connection, used from the daemon's main thread (or a CLI command, read-only)."""

    def __init__(self, state_dir: Path, *, readonly: bool = False) -> None:
        self.path = state_dir / DB_FILE
        try:
            if readonly:
                self._db = self._open_readonly()
                check_format(self._db)
            else:
                # Before SQLite opens it: opened read-only, it makes a -shm file of the same mode,
                # which then stopped the next start too (a re-test).
                if (shut := unwritable_file(self.path)) is not None:
                    raise ReadOnlyStateError(shut)
                self._db = sqlite3.connect(self.path, isolation_level=None, timeout=30)
                found = check_format(self._db)  # before anything is written to it
                self._db.execute("PRAGMA journal_mode=WAL")
                self._db.execute("PRAGMA synchronous=FULL")
                create_or_upgrade(self._db, found)
                if not _writable(self._db):
                    self._db.close()
                    raise ReadOnlyStateError(self.path)
                if (damage := self.damage()) is not None:  # a file broken inside opens
                    self._db.close()
                    raise DamagedStateError(self.path, damage)
            added = added_columns(self._db)  # one look at the table for both
            self._columns = job_columns(added)
            self._ends_select = _ends_select(added["withdrawn"])
        except NewerFormat as exc:
            self._db.close()
            raise NewerStateError(
                f"the state database {self.path} was written by a newer stylefold (state "
                f"format {exc.found}; this version reads up to {STATE_FORMAT})"
            ) from None
        except sqlite3.Error as exc:
            if is_damage(exc):
                raise DamagedStateError(self.path, str(exc)) from exc
            raise StoreError(
                errno.EIO, f"cannot open the state database {self.path}: {exc}"
            ) from exc

    def _open_readonly(self) -> sqlite3.Connection:
        """A reader that writes nothing. In WAL mode a reader needs the `-shm` index, which
        SQLite creates when it is missing; in a read-only view of the state (the web page's
        unit) it cannot. When no daemon has the database open there is no `-wal` either
        (SQLite folds it into the database and removes both as the last connection closes),
        so the database file holds every transaction and is read as immutable."""
        uri = f"file:{quote(str(self.path))}?mode=ro"  # a '?', '#' or '%' in a folder name
        db = sqlite3.connect(uri, uri=True, isolation_level=None, timeout=5)
        try:
            db.execute("SELECT count(*) FROM sqlite_master").fetchone()
            return db
        except sqlite3.OperationalError:
            db.close()
            if not self.path.is_file() or self.path.with_name(f"{DB_FILE}-wal").exists():
                raise
        db = sqlite3.connect(f"{uri}&immutable=1", uri=True, isolation_level=None, timeout=5)
        try:
            db.execute("SELECT count(*) FROM sqlite_master").fetchone()
        except sqlite3.Error:
            db.close()
            raise
        return db

    def close(self) -> None:
        self._db.close()

    def damage(self) -> str | None:
        """What SQLite's quick check finds wrong with the file (`stylefold doctor`), or None."""
        try:
            rows = self._db.execute("PRAGMA quick_check").fetchall()
        except sqlite3.DatabaseError as exc:
            return str(exc)
        found = [line for row in rows for line in str(row[0]).splitlines()]
        if found == ["ok"]:
            return None
        # one row may hold a line per broken page (an operator's trial: 100 lines in the log)
        found = [line for line in found if not line.startswith("*** in database")] or found
        more = f" and {len(found) - 3} more" if len(found) > 3 else ""
        return "; ".join(found[:3]) + more

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        try:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
        except sqlite3.Error as exc:
            full = "full" in str(exc)
            code = errno.ENOSPC if full else errno.EIO
            what = "no space left for the state database" if full else "state database error"
            raise StoreError(code, f"{what} ({self.path}): {exc}") from exc

    # -- jobs -----------------------------------------------------------------------------

    def create(
        self,
        job_id: str,
        state: State,
        input: str,
        *,
        outcome: Outcome | None = None,
        detail: BaseModel | None = None,
        note: str = "",
    ) -> None:
        check(None, state)
        now = time.time()
        with self._transaction() as db:
            db.execute(
                "INSERT INTO jobs (id, state, since, input, outcome, detail) VALUES (?,?,?,?,?,?)",
                (job_id, state, now, _text(input), outcome, _dump(detail)),
            )
            db.execute(
                _JOURNAL,
                (job_id, now, None, state, _text(note)),
            )

    def move(
        self,
        job_id: str,
        new: State,
        *,
        note: str = "",
        job: Job | None = None,
        outcome: Outcome | None = _UNSET,
        detail: BaseModel | None = _UNSET,
        reason: str | None = _UNSET,
        retry_at: float | None = _UNSET,
        started: bool = False,
        lost: bool = False,
        stopped: bool = False,
        rendered_again: bool = False,
    ) -> None:
        """One transition, checked and journalled; the keyword fields are updated with it
        (left as they are when not given). `started`, `lost`, `stopped` and `rendered_again`
        count a start, a loss of the job's worker with its cluster, an orderly end of a start
        and a render again for a vanished result in the same transaction."""
        now = time.time()
        with self._transaction() as db:
            row = db.execute("SELECT state FROM jobs WHERE id = ?", (job_id,)).fetchone()
            old = State(row[0]) if row else None
            if old is None:
                raise KeyError(f"no job {job_id} in the state database")
            check(old, new)
            fields: dict[str, Any] = {"state": new, "since": now}
            if job is not None:
                fields["record"] = model_to_json(job)
            if outcome is not _UNSET:
                fields["outcome"] = outcome
            if detail is not _UNSET:
                fields["detail"] = _dump(detail)
            if reason is not _UNSET:
                fields["reason"] = None if reason is None else _text(reason)
            if retry_at is not _UNSET:
                fields["retry_at"] = retry_at
            assignments = ", ".join(f"{name} = ?" for name in fields)
            counted = {
                "starts": started,
                "lost": lost,
                "stopped": stopped,
                "rendered_again": rendered_again,
            }
            increment = "".join(f", {name} = {name} + 1" for name, on in counted.items() if on)
            db.execute(
                f"UPDATE jobs SET {assignments}{increment} WHERE id = ?",
                (*fields.values(), job_id),
            )
            db.execute(
                _JOURNAL,
                (job_id, now, old, new, _text(note)),
            )

    def rewrite(self, job: Job) -> None:
        """Replace an active job's record with no change of state, which `move` alone makes:
        only the place of its answer, chosen again (`Spool.move_answer_if_taken`)."""
        active = ", ".join(f"'{state}'" for state in sorted(ACTIVE))
        with self._transaction() as db:
            db.execute(
                f"UPDATE jobs SET record = ? WHERE id = ? AND state IN ({active})",
                (model_to_json(job), job.id),
            )

    def get(self, job_id: str) -> JobRow | None:
        row = self._db.execute(
            f"SELECT {self._columns} FROM jobs WHERE id = ?", (job_id,)
        ).fetchone()
        return None if row is None else _row(row)

    def active(self) -> list[JobRow]:
        """Unfinished jobs in claim order (job ids sort by claim time)."""
        return [_row(row) for row in self._unfinished(self._columns, "ORDER BY id")]

    def starts(self) -> dict[str, int]:
        """How often each unfinished job that has started was started: for the running
        daemon's status, whose jobs in memory do not count their starts (after a restart it
        said 0 where the database said 1). Two columns, not the records."""
        return dict(self._unfinished("id, starts", "AND starts > 0"))

    def under_way(self, input: str) -> bool:
        """Whether a job of the inbox file `input` is unfinished: one column of the unfinished
        jobs, not their records."""
        return _text(input) in {row[0] for row in self._unfinished("input", "")}

    def _unfinished(self, columns: str, more: str) -> list[Any]:
        """Unfinished jobs' `columns`, through the state index (named, so statistics from an
        ANALYZE cannot turn it into a scan of the table), which finds the few unfinished rows
        among a long history."""
        marks = ",".join("?" * len(ACTIVE))
        return self._db.execute(
            f"SELECT {columns} FROM jobs INDEXED BY jobs_state WHERE state IN ({marks}) {more}",
            tuple(ACTIVE),
        ).fetchall()

    def in_state(self, state: State) -> list[JobRow]:
        """The jobs now in `state`, in claim order."""
        rows = self._db.execute(
            f"SELECT {self._columns} FROM jobs WHERE state = ? ORDER BY id", (state,)
        ).fetchall()
        return [_row(row) for row in rows]

    def finished(self, limit: int) -> list[JobRow]:
        """The most recent ends, newest first. `+state` keeps SQLite from the state index,
        which would fetch and sort every finished job: it walks `since` from the newest and
        stops at `limit` (status asks for this at every change of a job's state)."""
        rows = self._db.execute(
            f"SELECT {self._columns} {_LATEST_ENDS}", (*TERMINAL, limit)
        ).fetchall()
        return [_row(row) for row in rows]

    def ends(self, limit: int) -> list[End]:
        """The most recent ends, newest first, as `finished` finds them, each with the name of
        its answer, in one query and without parsing records: status reads them at every
        change of a job's state."""
        return self._ends(_LATEST_ENDS, (*TERMINAL, limit))

    def latest_results(self, limit: int) -> list[End]:
        """The newest ends that made a result (DONE: a skipped photo sent again wrote none),
        as `ends` gives them: listed beyond the last `ends`, which a burst of failures pushes
        out (a web page trial: 500 lone photos emptied its gallery of everyone's results)."""
        where = "FROM jobs WHERE +state = ? ORDER BY since DESC LIMIT ?"
        return self._ends(where, (State.DONE, limit))

    def _ends(self, where: str, params: tuple[object, ...]) -> list[End]:
        rows = self._db.execute(self._ends_select + where, (*ANSWERED_INTO, *params))
        return [
            End(row[0], State(row[1]), row[2], row[3], row[4], bool(row[5]), row[6]) for row in rows
        ]

    def ends_answered_in_place(self, limit: int) -> list[End]:
        """The newest failures and rejections whose photo or sidecar is remembered as still
        in the inbox (`seen`), waiting for the fix their report asks for, as `ends` gives them:
        listed beyond the last `ends`, which other jobs push out (an operator's trial: after
        50 good jobs, the failures waiting in the inbox were gone from status and the web
        page)."""
        where = (
            f"FROM jobs WHERE state IN ({','.join('?' * len(ENDS_WITH_REPORT))}) "
            "AND id IN (SELECT job_id FROM seen) "
            "ORDER BY since DESC LIMIT ?"
        )
        return self._ends(where, (*ENDS_WITH_REPORT, limit))

    def reported_since(self, inputs: Collection[str], since: float) -> set[str]:
        """The jobs about one of `inputs` that ended with a report after `since`: reports a
        job claimed before them does not outdate."""
        marks, ends = ",".join("?" * len(inputs)), ",".join("?" * len(ENDS_WITH_REPORT))
        rows = self._db.execute(
            f"SELECT id FROM jobs WHERE since > ? AND input IN ({marks}) AND state IN ({ends})",
            (since, *map(_text, inputs), *ENDS_WITH_REPORT),
        )
        return {row[0] for row in rows}

    def counts(self) -> dict[str, int]:
        rows = self._db.execute("SELECT state, COUNT(*) FROM jobs GROUP BY state").fetchall()
        return {str(state): int(count) for state, count in rows}

    def transitions(self, job_id: str) -> list[TransitionRow]:
        rows = self._db.execute(
            "SELECT job_id, at, from_state, to_state, note FROM transitions WHERE job_id = ? "
            "ORDER BY seq",
            (job_id,),
        ).fetchall()
        return [TransitionRow(*row) for row in rows]

    def prune(self, keep: int = KEEP_FINISHED, keep_answers: int = KEEP_ANSWERS) -> Pruned:
        """Forget the oldest finished jobs beyond `keep` (and their transitions), and the
        oldest answers beyond `keep_answers` (in each of the two answer tables). Broken jobs
        are kept: status lists them while their folder waits for a person."""
        ended = TERMINAL - {State.BROKEN}
        marks = ",".join("?" * len(ended))
        with self._transaction() as db:
            old = [
                row[0]
                for row in db.execute(
                    f"SELECT id FROM jobs WHERE +state IN ({marks}) ORDER BY since DESC "
                    "LIMIT -1 OFFSET ?",
                    (*ended, keep),
                )
            ]
            db.executemany("DELETE FROM jobs WHERE id = ?", [(i,) for i in old])
            db.executemany("DELETE FROM transitions WHERE job_id = ?", [(i,) for i in old])
            answers = 0
            for table in ("answered", "answered_inputs"):
                answers += db.execute(
                    f"DELETE FROM {table} WHERE rowid IN (SELECT rowid FROM {table} "
                    "ORDER BY at DESC LIMIT -1 OFFSET ?)",
                    (keep_answers,),
                ).rowcount
        return Pruned(jobs=len(old), answers=answers)

    # -- answered inputs ------------------------------------------------------------------

    def record_answer(self, answer: Answer) -> None:
        with self._transaction() as db:
            db.execute(
                "INSERT OR REPLACE INTO answered (key, job_id, output, sha256, manifest, at) "
                "VALUES (?,?,?,?,?,?)",
                (answer.key, answer.job_id, os.fsencode(answer.output), answer.sha256,
                 os.fsencode(answer.manifest), time.time()),
            )  # fmt: skip

    def answer_for(self, key: str) -> Answer | None:
        row = self._db.execute(
            "SELECT key, job_id, output, sha256, manifest FROM answered WHERE key = ?", (key,)
        ).fetchone()
        return None if row is None else _answer(row)

    def record_input_answer(self, input: str, answer: Answer) -> None:
        """The answer published for one inbox path (a result or a reused one): what a photo sent
        again under that path is recognised by (daemon.jobs.resend)."""
        with self._transaction() as db:
            db.execute(
                "INSERT OR REPLACE INTO answered_inputs "
                "(input, key, job_id, output, sha256, manifest, at) VALUES (?,?,?,?,?,?,?)",
                (os.fsencode(input), answer.key, answer.job_id, os.fsencode(answer.output),
                 answer.sha256, os.fsencode(answer.manifest), time.time()),
            )  # fmt: skip

    def input_answer(self, input: str, key: str) -> Answer | None:
        row = self._db.execute(
            "SELECT key, job_id, output, sha256, manifest FROM answered_inputs "
            "WHERE input = ? AND key = ?",
            (os.fsencode(input), key),
        ).fetchone()
        return None if row is None else _answer(row)

    def input_answers(self, input: str) -> list[Answer]:
        """Every answer recorded for the inbox path `input`, whatever pair it was sent with,
        newest first."""
        rows = self._db.execute(
            "SELECT key, job_id, output, sha256, manifest FROM answered_inputs WHERE input = ? "
            "ORDER BY at DESC",
            (os.fsencode(input),),
        ).fetchall()
        return [_answer(row) for row in rows]

    # -- inbox files answered in place ----------------------------------------------------

    def remember(self, path: str, signatures: list[list[int] | None], job_id: str) -> None:
        with self._transaction() as db:
            db.execute(
                "INSERT OR REPLACE INTO seen (path, signatures, job_id) VALUES (?,?,?)",
                (os.fsencode(path), json.dumps(signatures), job_id),
            )

    def seen(self, path: str) -> list[list[int] | None] | None:
        row = self._db.execute(
            "SELECT signatures FROM seen WHERE path = ?", (os.fsencode(path),)
        ).fetchone()
        return None if row is None else json.loads(row[0])

    def seen_reason(self, path: str) -> str | None:
        """The reason recorded with the answer that the inbox file `path` is remembered by."""
        row = self._seen_job(path, "jobs.reason")
        return None if row is None else row[0]

    def seen_by(self, path: str) -> tuple[str, State] | None:
        """The job (id, state) whose answer the inbox file `path` is remembered by, while that
        job is kept."""
        row = self._seen_job(path, "jobs.id, jobs.state")
        return None if row is None else (row[0], State(row[1]))

    def seen_for_another(self, path: str) -> bool:
        """Whether the inbox file `path` was answered in place by a job of another input (a
        style image it brought along); False without a record, or once that job was pruned."""
        row = self._seen_job(path, "jobs.input")
        return row is not None and row[0] != _text(path)

    def _seen_job(self, path: str, columns: str) -> Any:
        """`columns` of the kept job whose answer the inbox file `path` is remembered by."""
        return self._db.execute(
            f"SELECT {columns} FROM seen JOIN jobs ON jobs.id = seen.job_id WHERE seen.path = ?",
            (os.fsencode(path),),
        ).fetchone()

    def seen_paths(self) -> list[str]:
        return [os.fsdecode(row[0]) for row in self._db.execute("SELECT path FROM seen")]

    def withdrawn(self, job_id: str) -> None:
        """A failure or rejection whose report went with its input: no one need act on it."""
        with self._transaction() as db:
            db.execute("UPDATE jobs SET withdrawn = 1 WHERE id = ?", (job_id,))

    def forget_seen(self, paths: list[str]) -> None:
        with self._transaction() as db:
            db.executemany("DELETE FROM seen WHERE path = ?", [(os.fsencode(p),) for p in paths])

    def seen_answers(
        self, states: frozenset[State], path: str | None = None
    ) -> list[tuple[str, JobRow]]:
        """Inbox files (or the one at `path`) answered in place, each with the job (in one of
        `states`) that answered it, while that job is kept; for retrying once the fix a report
        asked for is done."""
        marks = ",".join("?" * len(states))
        one = "" if path is None else " AND seen.path = ?"
        rows = self._db.execute(
            f"SELECT seen.path, {self._columns} FROM seen JOIN jobs ON jobs.id = seen.job_id "
            f"WHERE jobs.state IN ({marks}){one} ORDER BY jobs.id",
            (*states, *([] if path is None else [os.fsencode(path)])),
        ).fetchall()
        return [(os.fsdecode(row[0]), _row(row[1:])) for row in rows]


_JOURNAL = "INSERT INTO transitions (job_id, at, from_state, to_state, note) VALUES (?,?,?,?,?)"


def _answer(row: tuple[Any, ...]) -> Answer:
    """(key, job_id, output, sha256, manifest) of either answer table. Paths as the file
    system's bytes (a name need not be UTF-8); older rows hold text."""
    return Answer(row[0], row[1], Path(os.fsdecode(row[2])), row[3], Path(os.fsdecode(row[4])))


def _row(row: tuple[Any, ...]) -> JobRow:
    """A job row. A record that no longer reads as a Job (damaged, or from a version whose
    Job differs) leaves `job` None with the reason, instead of raising out of every listing:
    one bad record must not stop recovery, status or the daemon's loop."""
    record, error = None, None
    if row[4]:
        try:
            record = model_from_json(Job, row[4])
        except ValueError as exc:  # pydantic's ValidationError is one
            error = f"its job record does not read as a job: {_one_line(exc)}"
    return JobRow(
        row[0], State(row[1]), row[2], row[3], record, row[5], row[6], row[7], row[8], row[9],
        row[10], row[11], row[12], row[13], record_error=error,
    )  # fmt: skip


def _one_line(exc: ValueError) -> str:
    """A record's problems on one line, for status and reports (a pydantic error spans many,
    which status showed as literal \\n): each field and what is wrong with it."""
    if isinstance(exc, ValidationError):
        return "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
    return " ".join(str(exc).split())


def _dump(model: BaseModel | None) -> str | None:
    return None if model is None else model_to_json(model)


def _text(value: str) -> str:
    """Text for people (paths in notes and reasons): a name that is not valid UTF-8 is kept
    as backslash escapes, which SQLite's UTF-8 text can hold."""
    return value.encode("utf-8", "backslashreplace").decode("utf-8")
