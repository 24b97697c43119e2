"""The files of claimed jobs: originals moved out of the inbox, the style images they use, and
where the originals go once the job's answer is in the outbox.

    spool/<job-id>/input.<ext>   the original photo, moved here from the inbox
    spool/<job-id>/sidecar.json  the original sidecar (if any), moved here too
    spool/<job-id>/companion-N   macOS `._photo.jpg` AppleDouble files, which go with the photo
    spool/<job-id>/style-N.<ext> hard links into style-store/, so a library edit cannot change it
    spool/<job-id>/job.log       the job's log, published with the answer
    spool/<job-id>/result.*      the render and its `result.json`, written by the worker
    spool/.broken-<job-id>/      a job whose record was unreadable, kept for a person
    style-store/<sha256>.<ext>   each style image used by a waiting job, stored once

A claim moves the photo and its sidecar with a rename (or, across file systems, a verified copy
before the inbox file goes), so from then on the spool owns the only copy until the answer is
in the outbox. What was moved is recorded (state CLAIMING) before the first move, so a claim
cut short by a crash is rolled back from the record. The job's state lives in the database
(`daemon.jobs.store`); this module only moves files.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import stat
import time
from pathlib import Path

import structlog
from pydantic import BaseModel

from daemon.config import Settings
from daemon.fsutil import atomic_copy, file_sha256, fit_name, fsync_dir, move_file
from daemon.intake.arrival import ChangedAfterSettling
from daemon.intake.pairing import Arrival
from daemon.intake.resolve import Rejected, Resolved
from daemon.intake.sidecar import load_json
from daemon.jobs.outbox import OutputNames, choose_names
from daemon.jobs.record import Job, JobStyle, inbox_paths, job_key, log_line, new_job_id
from daemon.jobs.states import State
from daemon.jobs.store import Answer, Store

log = structlog.get_logger(__name__)

LOG_FILE = "job.log"
SIDECAR_FILE = "sidecar.json"
BROKEN_PREFIX = ".broken-"
STYLE_STORE = "style-store"


class ClaimIntent(BaseModel):
    """What a claim moves, recorded before the first move (the roll-back plan)."""

    rel_dir: str
    moves: list[tuple[str, str]]  # (name in the inbox folder, name in the job folder)


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
    """Job folders under `state/spool/` (see the module docstring for the layout)."""

    def __init__(self, settings: Settings, store: Store) -> None:
        self.settings = settings
        self.store = store
        self.root = settings.state / "spool"
        self.style_store = settings.state / STYLE_STORE
        for folder in (self.root, self.style_store):
            folder.mkdir(parents=True, exist_ok=True)
        self._reserved: dict[str, tuple[Path, ...]] = {}  # job id -> its output names
        self._style_digests: dict[tuple[str, int, int], str] = {}  # (path, size, mtime) -> sha

    # -- paths ----------------------------------------------------------------------------

    def job_dir(self, job: Job | str) -> Path:
        return self.root / (job if isinstance(job, str) else job.id)

    def input_path(self, job: Job) -> Path:
        return self.job_dir(job) / job.input_file

    def names(self, job: Job) -> OutputNames:
        return OutputNames.from_json(self.settings.outbox / job.rel_dir, job.names)

    def reserve(self, job: Job) -> None:
        """Keep a recovered job's output names from being chosen by a new job."""
        self._reserved[job.id] = self.names(job).all()

    # -- claim ----------------------------------------------------------------------------

    def claim(self, arrival: Arrival, resolved: Resolved) -> Job:
        """Move the pair into a new job folder and record the job (CLAIMING, then QUEUED). On
        failure nothing is lost: whatever was moved goes back to the inbox."""
        job_id = new_job_id()
        rel_dir = arrival.rel_dir.as_posix() if str(arrival.rel_dir) != "." else ""
        source_dir = self.settings.inbox / rel_dir
        moves = [(arrival.image.name, f"input{_suffix(arrival.image.name)}")]
        if arrival.sidecar is not None:
            moves.append((arrival.sidecar.name, SIDECAR_FILE))
        companions = [
            (name, f"companion-{index}")
            for index, name in enumerate(self._companions(source_dir, [m[0] for m in moves]))
        ]
        intent = ClaimIntent(rel_dir=rel_dir, moves=moves + companions)
        source = (Path(rel_dir) / arrival.image.name).as_posix()
        self.store.create(job_id, State.CLAIMING, source, detail=intent)
        folder = self.job_dir(job_id)
        try:
            folder.mkdir()
            for name, target in intent.moves:
                move_file(source_dir / name, folder / target, sync=False)
            fsync_dir(source_dir)
            fsync_dir(folder)
            job = self._record(job_id, folder, arrival, rel_dir, resolved, companions)
            self.store.move(job_id, State.QUEUED, job=job, detail=None, note="claimed")
        except BaseException as exc:
            self.roll_back(job_id, intent, note=f"claim failed: {exc}")
            raise
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
        folder: Path,
        arrival: Arrival,
        rel_dir: str,
        resolved: Resolved,
        companions: list[tuple[str, str]],
    ) -> Job:
        sidecar_raw = resolved.sidecar_raw
        if sidecar_raw is not None and (folder / SIDECAR_FILE).read_bytes() != sidecar_raw:
            raise Rejected(f"{arrival.sidecar}: changed while it was being claimed")
        input_file = f"input{_suffix(arrival.image.name)}"
        settled = arrival.signature
        if settled and _signature(folder / input_file) != [settled.size, settled.mtime_ns]:
            raise ChangedAfterSettling(f"{arrival.image} changed after it had settled")
        styles = []
        for index, (name, path, weight) in enumerate(resolved.styles):
            stored = self._stored_style(path)
            file = f"style-{index}{stored.suffix}"
            try:
                os.link(stored, folder / file)
            except OSError:
                atomic_copy(stored, folder / file)
            styles.append(JobStyle(name=name, file=file, weight=weight, sha256=stored.stem))
        input_sha = file_sha256(folder / input_file)
        output = {"format": resolved.output_format, "quality": resolved.output_quality}
        arrival_sidecar = [arrival.sidecar.name] if arrival.sidecar is not None else []
        names = choose_names(
            self.settings.outbox / rel_dir,
            Path(arrival.image.name).stem,
            resolved.output_format,
            reserved=[path for paths in self._reserved.values() for path in paths],
            inputs=inbox_paths(rel_dir, arrival.image.name, *arrival_sidecar),
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
            companions=[list(pair) for pair in companions],
        )
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

    def collect_styles(self) -> None:
        """Drop stored styles no job links to any more (start-up, before any claim)."""
        for entry in self.style_store.iterdir():
            with contextlib.suppress(OSError):
                if entry.name.startswith(".incoming-") or entry.stat().st_nlink <= 1:
                    entry.unlink()

    def roll_back(self, job_id: str, intent: ClaimIntent, note: str) -> None:
        """Undo a claim that did not complete: every moved file goes back to the inbox (or, if
        its name was taken meanwhile, beside it under a free name)."""
        folder = self.job_dir(job_id)
        inbox = self.settings.inbox / intent.rel_dir
        for name, target in intent.moves:
            moved = folder / target
            if moved.exists():
                try:
                    self._put_back(moved, inbox / name)
                except OSError as exc:
                    log.error("spool.rollback_failed", file=str(moved), error=str(exc))
                    return  # keep the folder and the CLAIMING record: it holds an original
        shutil.rmtree(folder, ignore_errors=True)
        row = self.store.get(job_id)
        if row is not None and row.state is State.CLAIMING:
            with contextlib.suppress(OSError):
                self.store.move(job_id, State.ROLLED_BACK, note=note)

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

    def move_aside(self, job_id: str) -> Path:
        """A job that cannot be finished (unreadable record): its folder is kept for a person."""
        folder = self.job_dir(job_id)
        broken = folder.with_name(f"{BROKEN_PREFIX}{job_id}")
        with contextlib.suppress(OSError):
            os.rename(folder, broken)
        return broken

    # -- the job's log --------------------------------------------------------------------

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

    def release(self, job: Job, *, archive: bool) -> list[Path]:
        """The originals leave the spool: to <archive>/<rel_dir>/ (success with archive =
        "move"), or back where they were in the inbox, remembered so they are not taken again
        while unchanged."""
        if archive:
            return self._release_files(job, self.settings.archive_path / job.rel_dir, False)
        return self._release_files(job, self.settings.inbox / job.rel_dir, True)

    def _release_files(self, job: Job, folder: Path, into_inbox: bool) -> list[Path]:
        image_name, sidecar_name = self._free_pair_names(job, folder)
        pairs = [(self.input_path(job), image_name)]
        if sidecar_name is not None:
            pairs.append((self.job_dir(job) / SIDECAR_FILE, sidecar_name))
        renamed = {job.image_name: image_name, job.sidecar_name: sidecar_name}
        if into_inbox:
            # Written first (a rename keeps size and mtime): a crash between the record and the
            # move leaves a harmless record, never a photo that is taken again.
            signatures = [_signature(source) for source, _ in pairs]
            if signatures[0] is not None:
                rel = (Path(job.rel_dir) / image_name).as_posix()
                self.store.remember(rel, signatures, job.id)
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

    def remove(self, job: Job) -> None:
        """Delete the job folder (its originals have already left it)."""
        shutil.rmtree(self.job_dir(job), ignore_errors=True)
        self._reserved.pop(job.id, None)

    # -- inbox files answered in place ----------------------------------------------------

    def _relative(self, path: Path) -> str:
        return path.relative_to(self.settings.inbox).as_posix()

    def remember(self, paths: list[Path | None], job_id: str) -> None:
        """Inbox files that were answered (rejected, reported) without being moved: not to be
        taken or reported again until one of them changes, also across restarts."""
        first = paths[0]
        if first is not None:
            signatures = [None if p is None else _signature(p) for p in paths]
            self.store.remember(self._relative(first), signatures, job_id)

    def already_handled(self, paths: list[Path | None]) -> bool:
        """True when exactly these files (photo and sidecar, or one reported file) were put
        back or answered by us and have not changed since."""
        first = paths[0]
        if first is None:
            return False
        recorded = self.store.seen(self._relative(first))
        return recorded == [None if p is None else _signature(p) for p in paths]

    def forget_vanished(self) -> None:
        """Drop records of answered inbox files that are gone (deleted, replaced, moved)."""
        gone = [
            path
            for path in self.store.seen_paths()
            if not os.path.lexists(self.settings.inbox / path)
        ]
        if gone:
            self.store.forget_seen(gone)

    # -- earlier results ------------------------------------------------------------------

    def earlier_answer(self, job: Job) -> Answer | None:
        """An earlier identical job's output, if it is still there unchanged."""
        answer = self.store.answer_for(job.key)
        if answer is None or answer.job_id == job.id:
            return None
        try:
            if file_sha256(answer.output) != answer.sha256:
                return None
        except OSError:
            return None
        return answer
