"""A job's files, found by its id alone: the state database says which job it is and what its
answer was named; the folders come from the configuration. A request never names a path.

Everything read from a shared folder is checked before it is shown: a manifest or report must
carry the job's id, an original must have the photo's SHA-256 from the manifest.
"""

from __future__ import annotations

import re
import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO, Literal, TypeVar

from pydantic import ValidationError

from daemon.config import Settings
from daemon.fsutil import parse_ours
from daemon.job_id import JOB_ID
from daemon.jobs.error_report import ErrorReport, as_report
from daemon.jobs.manifest import Manifest
from daemon.jobs.outbox import OutputNames, owner_in
from daemon.jobs.record import Job
from daemon.jobs.states import ANSWERED_INTO, TERMINAL, State
from daemon.jobs.store import DB_FILE, Store, StoreError
from daemon.web.files import open_inside, read_inside, relative_to

JSON_LIMIT = 1024 * 1024
_ERROR_NAME = re.compile(r"(.*)\.error(-\d+)?\.json")

CACHED = 1000  # per cache; a web page left open for months must not grow without bound

OutboxFile = Literal["result", "log", "report", "preview"]


@dataclass(frozen=True)
class JobRecord:
    """What the state database knows about one job."""

    id: str
    state: State
    job: Job | None  # None for a report about inbox files that never became a job
    answer: str | None  # the answer's file, relative to the outbox, as recorded when written
    originals: tuple[Path, ...]  # where the originals went, as recorded


def find_job(store: Store, job_id: str) -> JobRecord | None:
    """The job with this id, or None (a malformed id never reaches the database)."""
    if not JOB_ID.fullmatch(job_id):
        return None
    row = store.get(job_id)
    if row is None:
        return None
    answer: str | None = None
    originals: tuple[Path, ...] = ()
    for step in store.transitions(job_id):
        if step.new in ANSWERED_INTO:
            answer = step.note or None
        originals = step.originals or originals
    return JobRecord(row.id, row.state, row.job, answer, originals)


class Outputs:
    """Opens a job's files in the outbox, archive or inbox, and reads its manifest and report
    (each cached once verified: both are written once and never changed)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._manifests: dict[str, Manifest] = {}
        self._reports: dict[str, ErrorReport] = {}
        self._finished: dict[str, JobRecord] = {}
        self._lock = threading.Lock()

    def records(self, job_ids: list[str]) -> dict[str, JobRecord]:
        """The jobs with these ids that the state database knows (one read-only connection;
        finished jobs are cached, as they no longer change)."""
        with self._lock:
            found = {i: self._finished[i] for i in job_ids if i in self._finished}
        wanted = [i for i in job_ids if i not in found]
        if not wanted or not (self.settings.state / DB_FILE).is_file():
            return found
        try:
            store = Store(self.settings.state, readonly=True)
        except StoreError:
            return found
        try:
            for job_id in wanted:
                record = find_job(store, job_id)
                if record is not None:
                    found[job_id] = record
        except sqlite3.Error:
            pass  # the page shows what it found; the next poll tries again
        finally:
            store.close()
        with self._lock:
            _remember(self._finished, {i: r for i, r in found.items() if r.state in TERMINAL})
        return found

    def record(self, job_id: str) -> JobRecord | None:
        return self.records([job_id]).get(job_id)

    def _names(self, record: JobRecord) -> OutputNames | None:
        if record.job is None:
            return None
        return OutputNames.of(self.settings.outbox, record.job.outbox_dir, record.job.names)

    def path(self, record: JobRecord, kind: OutboxFile | Literal["manifest"]) -> str | None:
        """The file's path relative to the outbox (None: the job has no such file)."""
        names = self._names(record)
        if names is None:  # a report alone: its log lies beside it, numbered alike
            match = _ERROR_NAME.fullmatch(record.answer or "")
            if match is None:
                return None
            return {"report": record.answer, "log": f"{match[1]}{match[2] or ''}.log"}.get(kind)
        if kind == "result" and record.state is not State.DONE:
            return None
        path = {
            "result": names.image,
            "log": names.log,
            "report": names.error,
            "preview": names.preview,
            "manifest": names.manifest,
        }[kind]
        relative = relative_to(path, self.settings.outbox)
        return None if relative is None else relative.as_posix()

    def open(self, record: JobRecord, kind: OutboxFile) -> BinaryIO | None:
        relative = self.path(record, kind) if self._still_owns(record, kind) else None
        if relative is None:
            return None
        return open_inside(self.settings.outbox, relative, one_name=True)

    def _still_owns(self, record: JobRecord, kind: OutboxFile) -> bool:
        """Whether the job's names in the outbox still hold its own answer, read afresh: a later
        answer about the same photo may take them over (a report replaced by a newer one, a
        result whose image was deleted and its photo sent again), and the page served that
        one's report and log under the old job's address (an attacker's trial)."""
        if kind == "preview":  # a newer job's preview may lie at the same names
            return record.state is State.RUNNING
        answers = _ANSWERED_BY[kind]
        return any(owner_in(self._json(record, answer)) == record.id for answer in answers)

    def manifest(self, record: JobRecord) -> Manifest | None:
        """The job's manifest, if it is there and is this job's."""
        with self._lock:
            if record.id in self._manifests:
                return self._manifests[record.id]
        value = self._json(record, "manifest")
        try:
            manifest = Manifest.model_validate(value) if value is not None else None
        except ValidationError:
            return None
        if manifest is None or manifest.job_id != record.id:
            return None
        with self._lock:
            _remember(self._manifests, {record.id: manifest})
        return manifest

    def report(self, record: JobRecord) -> ErrorReport | None:
        """The job's error report, if it is there and is this job's."""
        with self._lock:
            if record.id in self._reports:
                return self._reports[record.id]
        value = as_report(self._json(record, "report"))
        if value is None or value.job_id != record.id:
            return None
        with self._lock:
            _remember(self._reports, {record.id: value})
        return value

    def _json(self, record: JobRecord, kind: Literal["manifest", "report"]) -> Any:
        relative = self.path(record, kind)
        outbox = self.settings.outbox
        data = (
            None if relative is None else read_inside(outbox, relative, JSON_LIMIT, one_name=True)
        )
        return None if data is None else parse_ours(data)

    def original_places(self, record: JobRecord) -> list[tuple[Path, PurePosixPath]]:
        """Where the job's original photo may be, best guess first: where the journal says it
        went, then the archive and the inbox under its own name (archive = "keep"). The caller
        opens each with `open_inside` and checks its content against the manifest's SHA-256."""
        job = record.job
        if job is None:
            return []
        roots = (self.settings.archive_path, self.settings.inbox)
        places: list[tuple[Path, PurePosixPath]] = []
        for path in record.originals:
            for root in roots:
                relative = relative_to(path, root)
                if relative is not None:
                    places.append((root, relative))
        own = PurePosixPath(job.rel_dir) / job.image_name
        places += [(root, own) for root in roots]
        return list(dict.fromkeys(places))


# Which of a job's JSON files in the outbox must be its own for the page to serve a file.
_ANSWERED_BY: dict[OutboxFile, tuple[Literal["manifest", "report"], ...]] = {
    "result": ("manifest",),
    "report": ("report",),
    "log": ("manifest", "report"),
}


Value = TypeVar("Value")


def _remember(cache: dict[str, Value], new: dict[str, Value]) -> None:
    if len(cache) + len(new) > CACHED:
        cache.clear()
    cache.update(new)
