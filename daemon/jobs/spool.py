"""The durable side of a job: claiming a pair out of the inbox, everything needed to finish it,
and the records that make a restart finish each job exactly once.

Layout under the state directory:

    spool/<job-id>/job.json      the job, written once at claim (immutable afterwards)
    spool/<job-id>/input.<ext>   the original photo, moved here from the inbox
    spool/<job-id>/sidecar.json  the original sidecar (if any), moved here too
    spool/<job-id>/companion-N   macOS `._photo.jpg` AppleDouble files, which go with the photo
    spool/<job-id>/style-N.<ext> hard links into style-store/, so a library edit cannot change it
    spool/<job-id>/started.json  how often the job was started (a crash-loop guard)
    spool/<job-id>/job.log       the job's log, published with the result
    spool/<job-id>/result.*      written by the worker before it reports (see worker.py)
    spool/.claim-<id>/           a claim in progress; rolled back at start-up
    spool/.done-<id>/            a finished job being deleted
    style-store/<sha256>.<ext>   each style image used by a waiting job, stored once
    index/<key>.json             successful results by job key (image bytes + styles + params)
    index/seen/<hash>.json       originals the daemon put back in the inbox, so they are not
                                 taken again until the photo or its sidecar changes
    journal.jsonl                one line per finished job (for `stylefold status`)

A claim moves the photo and its sidecar with a rename (or, across file systems, a verified copy
before the inbox file goes), so from then on the spool owns the only copy until the result is
in the outbox. The outbox's commit file (manifest or error report) carries the job id; a job
whose commit file exists is never rendered again.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
import shutil
import stat
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog
from pydantic import BaseModel, ConfigDict, ValidationError

from daemon.config import Settings
from daemon.fsutil import (
    atomic_copy,
    atomic_write_json,
    file_sha256,
    fit_name,
    fsync_dir,
    move_file,
    read_json,
    text_bytes,
)
from daemon.intake.pairing import Arrival
from daemon.intake.sidecar import (
    Sidecar,
    SidecarError,
    load_json,
    merge_params,
    parse_sidecar,
    read_limited,
)
from daemon.intake.styles import StyleError, StyleLibrary, blend_defaults
from daemon.jobs.outbox import OutputNames, choose_names

log = structlog.get_logger(__name__)

JOB_FILE = "job.json"
STARTED_FILE = "started.json"
LOG_FILE = "job.log"
INTENT_FILE = "intent.json"
SIDECAR_FILE = "sidecar.json"
CLAIM_PREFIX = ".claim-"
DONE_PREFIX = ".done-"
BROKEN_PREFIX = ".broken-"
JOURNAL = "journal.jsonl"
STYLE_STORE = "style-store"
JOURNAL_MAX_BYTES = 4 << 20


class Rejected(Exception):
    """The pair cannot become a job (bad sidecar, unknown style, limits); nothing was moved.
    The message says what is wrong and how to fix it."""


class JobStyle(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    file: str  # inside the job folder
    weight: float
    sha256: str


class Job(BaseModel):
    """Everything needed to finish a job after any restart."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str
    claimed_at: float
    rel_dir: str  # the photo's folder relative to the inbox ("" at the top)
    image_name: str
    sidecar_name: str | None
    sidecar: dict[str, Any] | None
    input_file: str
    input_sha256: str
    styles: list[JobStyle]
    params: dict[str, Any]
    output_format: str
    output_quality: int
    names: dict[str, Any]  # OutputNames.to_json(), reserved at claim
    key: str  # what identical resubmissions share
    companions: list[list[str]] = []  # [name in the inbox, file in the job folder]: `._` files

    @property
    def source(self) -> str:
        """The photo's path relative to the inbox, for people and logs."""
        return str(Path(self.rel_dir) / self.image_name)


def log_line(text: str) -> str:
    return f"{time.strftime('%Y-%m-%dT%H:%M:%S', time.localtime())} {text}\n"


def new_job_id() -> str:
    """Sortable by claim time, so the spool replays in first-in first-out order."""
    now = time.time()
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime(now))
    return f"{stamp}-{int(now % 1 * 1e6):06d}-{secrets.token_hex(3)}"


def job_key(
    input_sha256: str, styles: list[JobStyle], params: dict[str, Any], output: dict[str, Any]
) -> str:
    material = {
        "input": input_sha256,
        "styles": [[style.sha256, style.weight] for style in styles],
        "params": params,
        "output": output,
    }
    return hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()


@dataclass(frozen=True)
class Resolved:
    """A sidecar turned into what the engine will be asked for (nothing moved yet)."""

    sidecar: Sidecar | None
    sidecar_raw: bytes | None
    styles: list[tuple[str, Path, float]]  # (name, image file, weight)
    params: dict[str, Any]
    output_format: str
    output_quality: int


def resolve(arrival: Arrival, settings: Settings, library: StyleLibrary) -> Resolved:
    """Read the sidecar and resolve styles and parameters; raises Rejected."""
    sidecar: Sidecar | None = None
    raw: bytes | None = None
    try:
        if arrival.sidecar is not None:
            raw = read_limited(arrival.sidecar, settings.max_sidecar_bytes, "sidecar")
            sidecar = parse_sidecar(raw)
        styles = library.resolve(
            sidecar.style if sidecar is not None else None,
            beside=arrival.image.parent,
            default=settings.default_style,
        )
        params = merge_params(
            settings.defaults,
            blend_defaults(styles),
            sidecar.overrides() if sidecar is not None else {},
            max_size=settings.max_output_size,
            max_iterations=settings.max_iterations,
        )
    except (SidecarError, StyleError) as exc:
        where = arrival.sidecar.name if arrival.sidecar is not None else arrival.image.name
        raise Rejected(f"{where}: {exc}") from None
    output = sidecar.output if sidecar is not None else None
    return Resolved(
        sidecar=sidecar,
        sidecar_raw=raw,
        styles=[(style.name, style.path, style.weight) for style in styles],
        params=params.model_dump(mode="json"),
        output_format=(output.format if output and output.format else settings.output_format),
        output_quality=(output.quality if output and output.quality else settings.output_quality),
    )


def _suffix(name: str) -> str:
    ext = Path(name).suffix.lower()
    return ext if ext[1:].isalnum() else ""


def _signature(path: Path) -> list[int] | None:
    try:
        result = os.stat(path)
    except OSError:
        return None
    return [result.st_size, result.st_mtime_ns]


class Spool:
    """The state directory's job records (see the module docstring for the layout)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.root = settings.state / "spool"
        self.index_dir = settings.state / "index"
        self.seen_dir = self.index_dir / "seen"
        self.style_store = settings.state / STYLE_STORE
        self.journal_path = settings.state / JOURNAL
        for folder in (self.root, self.index_dir, self.seen_dir, self.style_store):
            folder.mkdir(parents=True, exist_ok=True)
        self._reserved: dict[str, tuple[Path, ...]] = {}  # job id -> its output names
        self._style_digests: dict[tuple[str, int, int], str] = {}  # (path, size, mtime) -> sha

    # -- paths ----------------------------------------------------------------------------

    def job_dir(self, job: Job | str) -> Path:
        return self.root / (job if isinstance(job, str) else job.id)

    def input_path(self, job: Job) -> Path:
        return self.job_dir(job) / job.input_file

    def sidecar_path(self, job: Job) -> Path:
        return self.job_dir(job) / SIDECAR_FILE

    def names(self, job: Job) -> OutputNames:
        return OutputNames.from_json(self.settings.outbox / job.rel_dir, job.names)

    def inbox_path(self, job: Job, name: str) -> Path:
        return self.settings.inbox / job.rel_dir / name

    # -- claim ----------------------------------------------------------------------------

    def claim(self, arrival: Arrival, resolved: Resolved) -> Job:
        """Move the pair into a new job folder and record the job. On failure nothing is lost:
        whatever was moved goes back to the inbox."""
        job_id = new_job_id()
        claim_dir = self.root / f"{CLAIM_PREFIX}{job_id}"
        claim_dir.mkdir()
        rel_dir = arrival.rel_dir.as_posix() if str(arrival.rel_dir) != "." else ""
        source_dir = self.settings.inbox / rel_dir
        moves = [[arrival.image.name, f"input{_suffix(arrival.image.name)}"]]
        if arrival.sidecar is not None:
            moves.append([arrival.sidecar.name, SIDECAR_FILE])
        companions = [
            [name, f"companion-{index}"]
            for index, name in enumerate(self._companions(source_dir, [m[0] for m in moves]))
        ]
        moves += companions
        intent = {"rel_dir": rel_dir, "moves": moves}
        atomic_write_json(claim_dir / INTENT_FILE, intent)
        try:
            for source, target in moves:
                move_file(source_dir / source, claim_dir / target, sync=False)
            fsync_dir(source_dir)
            # job.json's own fsync of claim_dir also makes the moves into it durable.
            job = self._record(job_id, claim_dir, arrival, rel_dir, resolved, companions)
        except BaseException:
            self._roll_back(claim_dir)
            raise
        (claim_dir / INTENT_FILE).unlink()
        final = self.job_dir(job_id)
        os.rename(claim_dir, final)
        fsync_dir(self.root)
        return job

    @staticmethod
    def _companions(folder: Path, names: list[str]) -> list[str]:
        """macOS AppleDouble files (`._photo.jpg`) that belong to the files of a job: they
        travel with the photo instead of being left behind in the inbox."""
        found = []
        for name in names:
            companion = f"._{name}"
            with contextlib.suppress(OSError):
                if stat.S_ISREG(os.lstat(folder / companion).st_mode):
                    found.append(companion)
        return found

    def _record(
        self,
        job_id: str,
        claim_dir: Path,
        arrival: Arrival,
        rel_dir: str,
        resolved: Resolved,
        companions: list[list[str]],
    ) -> Job:
        sidecar_raw = resolved.sidecar_raw
        if sidecar_raw is not None and (claim_dir / SIDECAR_FILE).read_bytes() != sidecar_raw:
            raise Rejected(f"{arrival.sidecar}: changed while it was being claimed")
        styles = []
        for index, (name, path, weight) in enumerate(resolved.styles):
            stored = self._stored_style(path)
            file = f"style-{index}{stored.suffix}"
            try:
                os.link(stored, claim_dir / file)
            except OSError:
                atomic_copy(stored, claim_dir / file)
            styles.append(JobStyle(name=name, file=file, weight=weight, sha256=stored.stem))
        input_file = f"input{_suffix(arrival.image.name)}"
        input_sha = file_sha256(claim_dir / input_file)
        output = {"format": resolved.output_format, "quality": resolved.output_quality}
        names = choose_names(
            self.settings.outbox / rel_dir,
            Path(arrival.image.name).stem,
            resolved.output_format,
            reserved=[path for paths in self._reserved.values() for path in paths],
        )
        job = Job(
            id=job_id,
            claimed_at=time.time(),
            rel_dir=rel_dir,
            image_name=arrival.image.name,
            sidecar_name=arrival.sidecar.name if arrival.sidecar is not None else None,
            sidecar=load_json(sidecar_raw) if sidecar_raw is not None else None,
            input_file=input_file,
            input_sha256=input_sha,
            styles=styles,
            params=resolved.params,
            output_format=resolved.output_format,
            output_quality=resolved.output_quality,
            names=names.to_json(),
            key=job_key(input_sha, styles, resolved.params, output),
            companions=companions,
        )
        atomic_write_json(claim_dir / JOB_FILE, job.model_dump(mode="json"))
        self._reserved[job_id] = names.all()
        return job

    def _stored_style(self, path: Path) -> Path:
        """The style image's copy in the content-addressed store. Jobs hold hard links to it:
        a thousand jobs with one style share one copy, and editing the library cannot change
        a job already claimed."""
        result = os.stat(path)
        key = (str(path), result.st_size, result.st_mtime_ns)
        ext = _suffix(path.name)
        digest = self._style_digests.get(key)
        if digest is not None and (self.style_store / f"{digest}{ext}").exists():
            return self.style_store / f"{digest}{ext}"
        incoming = self.style_store / f".incoming-{secrets.token_hex(6)}{ext}"
        atomic_copy(path, incoming)
        digest = file_sha256(incoming)  # of the copy: what the job will actually use
        stored = self.style_store / f"{digest}{ext}"
        os.replace(incoming, stored)
        self._style_digests[key] = digest
        return stored

    def _collect_styles(self) -> None:
        """Drop stored styles no job links to any more (start-up, before any claim)."""
        for entry in self.style_store.iterdir():
            with contextlib.suppress(OSError):
                if entry.name.startswith(".incoming-") or entry.stat().st_nlink <= 1:
                    entry.unlink()

    def _roll_back(self, claim_dir: Path) -> None:
        """Undo a claim that did not complete: every moved file goes back to the inbox (or, if
        its name was taken meanwhile, beside it under a free name)."""
        intent = read_json(claim_dir / INTENT_FILE)
        if not isinstance(intent, dict):
            shutil.rmtree(claim_dir, ignore_errors=True)  # the crash came before any move
            return
        folder = self.settings.inbox / str(intent.get("rel_dir", ""))
        for source, target in intent.get("moves", []):
            moved = claim_dir / target
            if moved.exists():
                try:
                    self._put_back(moved, folder / source)
                except OSError as exc:
                    log.error("spool.rollback_failed", file=str(moved), error=str(exc))
                    return  # keep the folder: it holds an original
        shutil.rmtree(claim_dir, ignore_errors=True)

    @staticmethod
    def _claimed_in_full(claim_dir: Path) -> bool:
        return not (claim_dir / INTENT_FILE).exists() and (claim_dir / JOB_FILE).exists()

    def _put_back(self, source: Path, target: Path) -> Path:
        """Move a file to `target`, or beside it under a free name: never over anything."""
        candidate = target
        number = 1
        while os.path.lexists(candidate):
            number += 1
            name = fit_name(target.stem, f".returned-{number}{target.suffix}")
            candidate = target.with_name(name)
        move_file(source, candidate)
        return candidate

    # -- recovery -------------------------------------------------------------------------

    def recover(self) -> list[Job]:
        """At start-up: roll back unfinished claims, delete finished leftovers, and return the
        claimed jobs in claim order."""
        jobs = []
        for entry in sorted(self.root.iterdir()):
            if entry.name.startswith(CLAIM_PREFIX) and self._claimed_in_full(entry):
                # Killed between dropping the intent and the final rename: the job is whole
                # (job.json is written last); rolling it back would delete its originals.
                final = self.job_dir(entry.name.removeprefix(CLAIM_PREFIX))
                os.rename(entry, final)
                fsync_dir(self.root)
                log.warning("spool.claim_completed", folder=entry.name)
                entry = final
            if entry.name.startswith(CLAIM_PREFIX):
                log.warning("spool.claim_rolled_back", folder=entry.name)
                self._roll_back(entry)
            elif entry.name.startswith(DONE_PREFIX):
                shutil.rmtree(entry, ignore_errors=True)
            elif entry.name.startswith("."):
                continue
            elif entry.is_dir():
                job = self.load(entry)
                if job is not None:
                    jobs.append(job)
        for job in jobs:
            self._reserved[job.id] = self.names(job).all()
        self._collect_styles()
        self._forget_vanished()
        return jobs

    def _forget_vanished(self) -> None:
        """Drop `seen` records of inbox files that are gone (deleted, replaced, moved away)."""
        for entry in self.seen_dir.iterdir():
            record = read_json(entry)
            path = record.get("path") if isinstance(record, dict) else None
            if not isinstance(path, str) or not os.path.lexists(self.settings.inbox / path):
                entry.unlink(missing_ok=True)

    def load(self, folder: Path) -> Job | None:
        try:
            return Job.model_validate_json((folder / JOB_FILE).read_bytes())
        except (OSError, ValidationError) as exc:
            # Cannot happen with atomic writes short of disk corruption; keep the files.
            broken = folder.with_name(f"{BROKEN_PREFIX}{folder.name}")
            log.error(
                "spool.job_unreadable", folder=str(folder), moved_to=str(broken), error=str(exc)
            )
            with contextlib.suppress(OSError):
                os.rename(folder, broken)
            return None

    def pending(self) -> list[Job]:
        """Every claimed job (for `status`), read-only."""
        jobs = []
        for entry in sorted(self.root.iterdir()) if self.root.exists() else []:
            if not entry.name.startswith(".") and (entry / JOB_FILE).exists():
                with contextlib.suppress(OSError, ValidationError):
                    jobs.append(Job.model_validate_json((entry / JOB_FILE).read_bytes()))
        return jobs

    # -- per-job records ------------------------------------------------------------------

    def starts(self, job: Job) -> int:
        value = read_json(self.job_dir(job) / STARTED_FILE)
        return int(value.get("starts", 0)) if isinstance(value, dict) else 0

    def record_start(self, job: Job, info: dict[str, Any]) -> int:
        starts = self.starts(job) + 1
        atomic_write_json(
            self.job_dir(job) / STARTED_FILE, {"starts": starts, "at": time.time(), **info}
        )
        return starts

    def clear_running(self, job: Job) -> None:
        """The job went back to the queue: `status` must no longer show it as running."""
        path = self.job_dir(job) / STARTED_FILE
        value = read_json(path)
        if isinstance(value, dict) and "worker" in value:
            atomic_write_json(path, {"starts": value.get("starts", 0)})

    def running_info(self, job: Job) -> dict[str, Any] | None:
        value = read_json(self.job_dir(job) / STARTED_FILE)
        return value if isinstance(value, dict) and "worker" in value else None

    def append_log(self, job: Job, line: str) -> None:
        path = self.job_dir(job) / LOG_FILE
        with path.open("a", encoding="utf-8", errors="backslashreplace") as handle:
            handle.write(log_line(line))

    def read_log(self, job: Job, last: str | None = None) -> str:
        """The job's log so far, plus `last` (a line not yet appended: the outcome, which is
        only recorded once it is published)."""
        try:
            text = (self.job_dir(job) / LOG_FILE).read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            text = ""
        return text + (log_line(last) if last is not None else "")

    # -- after the outbox is written ------------------------------------------------------

    def archive_originals(self, job: Job) -> list[Path]:
        """Success with archive="move": the originals go to <archive>/<rel_dir>/."""
        folder = self.settings.archive_path / job.rel_dir
        return self._release_files(job, folder, into_inbox=False)

    def return_originals(self, job: Job) -> list[Path]:
        """Failure, or success with archive="keep": the originals go back where they were in
        the inbox, and are remembered so they are not taken again while unchanged."""
        return self._release_files(job, self.settings.inbox / job.rel_dir, into_inbox=True)

    def _release_files(self, job: Job, folder: Path, *, into_inbox: bool) -> list[Path]:
        image_name, sidecar_name = self._free_pair_names(job, folder)
        pairs = [(self.input_path(job), image_name)]
        if sidecar_name is not None:
            pairs.append((self.sidecar_path(job), sidecar_name))
        renamed = {job.image_name: image_name, job.sidecar_name: sidecar_name}
        if into_inbox:
            # Written first (a rename keeps size and mtime): a crash between the record and the
            # move leaves a harmless record, never a photo that is taken again.
            signatures = [_signature(source) for source, _ in pairs]
            if signatures[0] is not None:
                rel = (Path(job.rel_dir) / image_name).as_posix()
                self._remember(rel, signatures, job.id)
        placed = []
        for source, name in pairs:
            if source.exists():
                placed.append(self._put_back(source, folder / name))
        for name, file in job.companions:
            if (self.job_dir(job) / file).exists():
                target = f"._{renamed.get(name[2:]) or name[2:]}"
                self._put_back(self.job_dir(job) / file, folder / target)
        if not into_inbox:  # companions written after the claim follow the photo too
            inbox = self.settings.inbox / job.rel_dir
            names = [job.image_name] + ([job.sidecar_name] if job.sidecar_name else [])
            for late in self._companions(inbox, names):
                with contextlib.suppress(OSError):
                    self._put_back(inbox / late, folder / f"._{renamed.get(late[2:]) or late[2:]}")
        return placed

    @staticmethod
    def _free_pair_names(job: Job, folder: Path) -> tuple[str, str | None]:
        """Names for the photo and its sidecar in `folder` that are both free and still pair
        up: the originals', else `photo.returned-N.jpg` with `photo.returned-N.json`."""
        number = 1
        while True:
            if number == 1:
                image = job.image_name
            else:
                stem, suffix = Path(job.image_name).stem, Path(job.image_name).suffix
                image = fit_name(stem, f".returned-{number}{suffix}")
            sidecar = None
            if job.sidecar_name is not None:
                specific = job.sidecar_name == f"{job.image_name}.json"
                sidecar = f"{image}.json" if specific else f"{Path(image).stem}.json"
                if number == 1:
                    sidecar = job.sidecar_name
            names = [image] + ([sidecar] if sidecar else [])
            if not any(os.path.lexists(folder / name) for name in names):
                return image, sidecar
            number += 1

    def _seen_path(self, rel: str) -> Path:
        return self.seen_dir / (hashlib.sha256(os.fsencode(rel)).hexdigest()[:32] + ".json")

    def _relative(self, path: Path) -> str:
        return path.relative_to(self.settings.inbox).as_posix()

    def _remember(self, rel: str, signatures: list[list[int] | None], job_id: str) -> None:
        atomic_write_json(
            self._seen_path(rel), {"path": rel, "signatures": signatures, "job_id": job_id}
        )

    def remember(self, paths: list[Path | None], job_id: str) -> None:
        """Inbox files that were answered (rejected, reported) without being moved: not to be
        taken or reported again until one of them changes, also across restarts."""
        first = paths[0]
        if first is not None:
            signatures = [None if p is None else _signature(p) for p in paths]
            self._remember(self._relative(first), signatures, job_id)

    def already_handled(self, paths: list[Path | None]) -> bool:
        """True when exactly these files (photo and sidecar, or one reported file) were put
        back or answered by us and have not changed since."""
        first = paths[0]
        if first is None:
            return False
        rel = self._relative(first)
        record = read_json(self._seen_path(rel))
        if not isinstance(record, dict) or record.get("path") != rel:
            return False
        return record.get("signatures") == [None if p is None else _signature(p) for p in paths]

    def finish(self, job: Job) -> None:
        """Delete the job folder (its originals have already left it)."""
        folder = self.job_dir(job)
        done = self.root / f"{DONE_PREFIX}{job.id}"
        with contextlib.suppress(FileNotFoundError):
            os.rename(folder, done)
            fsync_dir(self.root)
        shutil.rmtree(done, ignore_errors=True)
        self._reserved.pop(job.id, None)

    # -- result index ---------------------------------------------------------------------

    def _index_path(self, key: str) -> Path:
        return self.index_dir / f"{key}.json"

    def record_result(self, job: Job, image: Path, image_sha256: str, manifest: Path) -> None:
        atomic_write_json(
            self._index_path(job.key),
            {"key": job.key, "job_id": job.id, "output": str(image), "sha256": image_sha256,
             "manifest": str(manifest), "finished_at": time.time()},
        )  # fmt: skip

    def earlier_result(self, job: Job) -> dict[str, Any] | None:
        """An earlier identical job's output, if it is still there unchanged."""
        record = read_json(self._index_path(job.key))
        if not isinstance(record, dict) or record.get("job_id") == job.id:
            return None
        output = Path(str(record.get("output", "")))
        try:
            if file_sha256(output) != record.get("sha256"):
                return None
        except OSError:
            return None
        return record

    # -- journal --------------------------------------------------------------------------

    def journal(self, entry: dict[str, Any]) -> None:
        """Append one finished job; the file is rotated once it reaches JOURNAL_MAX_BYTES."""
        with contextlib.suppress(FileNotFoundError):
            if self.journal_path.stat().st_size > JOURNAL_MAX_BYTES:
                os.replace(self.journal_path, self.journal_path.with_suffix(".jsonl.1"))
        line = json.dumps({"at": time.time(), **entry}, ensure_ascii=False) + "\n"
        fd = os.open(self.journal_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, text_bytes(line))
            os.fsync(fd)
        finally:
            os.close(fd)


def read_journal(state: Path, limit: int = 200) -> Iterator[dict[str, Any]]:
    """The most recent journal entries, newest last; a torn last line is skipped."""
    path = state / JOURNAL
    try:
        with path.open("rb") as handle:
            handle.seek(max(0, path.stat().st_size - 256 * limit))
            lines = handle.read().splitlines()[-limit:]
    except FileNotFoundError:
        return
    for raw in lines:
        with contextlib.suppress(ValueError):
            value = json.loads(raw)
            if isinstance(value, dict):
                yield value
