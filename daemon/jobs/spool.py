"""The files of claimed jobs: originals moved out of the inbox, the style images they use, and
where the originals go once the job's answer is in the outbox.

    spool/<job-id>/claim.json    what the claim moved (ClaimIntent): a copy of the database's
                                 record, so a folder the database lost is given back
    spool/<job-id>/input.<ext>   the original photo, moved here from the inbox
    spool/<job-id>/sidecar.json  the original sidecar (if any), moved here too
    spool/<job-id>/companion-N   macOS `._photo.jpg` AppleDouble files, which go with the photo
    spool/<job-id>/style-N.<ext> hard links into style-store/ (`daemon.jobs.style_store`)
    spool/<job-id>/job.log       the job's log, published with the answer
    spool/<job-id>/result.*      the render and its `result.json`, written by the worker
    spool/.broken-<job-id>/      a job whose record was unreadable, kept for a person
    style-store/<sha256>.<ext>   each style image used by a waiting job, stored once

    returned/<job-id>/           originals whose inbox folder was gone or swapped on return

A claim moves the photo and its sidecar with a rename (or, across file systems, a verified copy
before the inbox file goes), so from then on the spool owns the only copy until the answer is
in the outbox. With archive = "keep" the claim copies them instead (`handover.copy_in`): the
originals never leave the inbox, where a two-way sync tool would take a move for a deletion,
and the inbox files are remembered as answered from the claim on (`daemon.jobs.in_place`). What
was moved is recorded (state CLAIMING) before the first move, so a claim cut short by a crash
is rolled back from the record. Every move between the inbox and the spool goes through folder
descriptors and is checked on both sides (`daemon.jobs.handover`).
The job's state lives in the database (`daemon.jobs.store`); this module records only the
claim's own steps there (CLAIMING, then QUEUED or ROLLED_BACK) and decides nothing else.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import structlog
from pydantic import BaseModel

from daemon import safefs
from daemon.config import Settings
from daemon.fsutil import (
    answer_sha256,
    atomic_copy,
    atomic_write,
    file_sha256,
    model_to_json,
    plain_suffix,
)
from daemon.intake.jsonload import load_json
from daemon.intake.pairing import Arrival, Signature
from daemon.intake.resolve import Rejected, Resolved
from daemon.job_id import new_job_id
from daemon.jobs import handover
from daemon.jobs.answer_places import AnswerPlaces
from daemon.jobs.answers import answered_elsewhere
from daemon.jobs.in_place import AnsweredInPlace
from daemon.jobs.layout import set_aside, spool_root
from daemon.jobs.outbox import OutputNames, choose_names, is_folder, log_line, shut
from daemon.jobs.record import Companion, Job, JobStyle, inbox_paths, job_key
from daemon.jobs.states import MOVING_ORIGINALS, State
from daemon.jobs.store import Answer, Store
from daemon.jobs.style_store import StyleStore
from daemon.safefs import Changed, Identity, NotUsable
from daemon.status_model import Attention

log = structlog.get_logger(__name__)

LOG_FILE = "job.log"
SIDECAR_FILE = "sidecar.json"
CLAIM_FILE = "claim.json"


class ClaimIntent(BaseModel):
    """What a claim moves, recorded before the first move (the roll-back plan)."""

    rel_dir: str
    moves: list[tuple[str, str]]  # (name in the inbox folder, name in the job folder)
    copied: bool = False  # copies were made (archive = "keep"); the originals stay in the inbox
    changed: str | None = None  # RETURNING: the original that changed under the job

    @classmethod
    def of(cls, job: Job) -> ClaimIntent:
        """What a claimed job moved: to move it back (`Spool.roll_back`)."""
        moves = [(job.image_name, job.input_file)]
        if job.sidecar_name is not None:
            moves.append((job.sidecar_name, SIDECAR_FILE))
        moves += [(name, target) for name, target in job.companions]
        return cls(rel_dir=job.rel_dir, moves=moves, copied=job.copied)

    def inbox_pair(self, inbox: Path) -> tuple[Path, Path | None]:
        """The photo and its sidecar (None without one) in the inbox."""
        folder = inbox / self.rel_dir
        return self.pair_among([folder / name for name, _ in self.moves])

    def pair_among(self, paths: list[Path]) -> tuple[Path, Path | None]:
        """The photo and its sidecar (None without one) among `paths`, listed in the order of
        the moves (where `Spool.roll_back` put them; the sidecar moves second, `of`)."""
        targets = [target for _, target in self.moves]
        sidecar = targets.index(SIDECAR_FILE) if SIDECAR_FILE in targets else None
        return paths[0], None if sidecar is None else paths[sidecar]


@dataclass(frozen=True)
class RolledBack:
    """Where a rolled-back claim's originals went: `inbox`, to settle again, or `kept` in
    state/returned/<job-id>/ (their inbox folder was gone or swapped), for a person."""

    inbox: list[Path]
    kept: list[Path]


def _stat_signature(path: Path) -> list[int] | None:
    """What a remembered file must still be: size and mtime (the spool side: our own files)."""
    try:
        result = os.lstat(path)
    except OSError:
        return None
    return [result.st_size, result.st_mtime_ns]


def _identity(settled: Signature | None) -> Identity | None:
    return None if settled is None else settled.identity()


class Spool:
    """Job folders under `state/spool/` (see the module docstring for the layout)."""

    def __init__(self, settings: Settings, store: Store) -> None:
        self.settings = settings
        self.store = store
        self.root = spool_root(settings.state)
        self.root.mkdir(parents=True, exist_ok=True)
        self.styles = StyleStore(settings)
        self.in_place = AnsweredInPlace(settings.inbox, store)
        self.places = AnswerPlaces(settings.outbox, settings.inbox)
        # Told of originals given back into state/returned/ (their inbox folder gone), by
        # every roll-back: the lifecycle reports them in the outbox, where their sender looks.
        self.on_kept: Callable[[ClaimIntent, list[Path]], None] | None = None

    # -- paths ----------------------------------------------------------------------------

    def job_dir(self, job: Job | str) -> Path:
        return self.root / (job if isinstance(job, str) else job.id)

    def input_path(self, job: Job) -> Path:
        return self.job_dir(job) / job.input_file

    def names(self, job: Job) -> OutputNames:
        return OutputNames.of(self.settings.outbox, job.outbox_dir, job.names)

    def reserve(self, job: Job) -> None:
        """Keep a claimed or recovered job's output names and answer folder from being chosen
        by a new job until it is released."""
        self.places.hold(job.id, self.names(job).all(), job.outbox_dir, job.rel_dir)

    def move_answer_if_taken(self, job: Job) -> Job | None:
        """The job with the answer folder and names that new photos of its inbox folder get,
        where a file now holds a part of the folder it was given (a job claimed by a version
        before answer folders were numbered, for an inbox folder `photo.log/`: blocked for ever
        once upgraded, an administrator's trial) or the daemon may no longer write into that
        folder (shut while the job ran: a non-root trial); None where its folder is free. The
        new place is recorded, marked and held as at a claim."""
        folder = job.outbox_dir
        if not folder or self.places.outbox_gone():
            return None
        if is_folder(self.settings.outbox, folder) and not shut(self.settings.outbox / folder):
            return None
        reserved = self.places.reserved(but=job.id)
        answer_dir = self.places.folder_for(job.rel_dir, reserved)
        if answer_dir == folder:
            return None
        names = self._names_in(
            answer_dir, job.rel_dir, job.image_name, job.output_format, job.inputs, reserved
        )
        moved = job.model_copy(
            update={
                "answer_dir": None if answer_dir == job.rel_dir else answer_dir,
                "names": names.for_record(),
            }
        )
        self.store.rewrite(moved)
        self.reserve(moved)
        self.append_log(moved, answered_elsewhere(answer_dir, job.rel_dir))
        return moved

    def _names_in(
        self,
        answer_dir: str,
        rel_dir: str,
        photo: str,
        output_format: str,
        inputs: list[str],
        reserved: list[Path],
    ) -> OutputNames:
        """The names of the answer to `photo` of the inbox folder `rel_dir` in `answer_dir`
        (`AnswerPlaces.folder_for`: relative to the outbox; its numbered parts are marked
        here), clear of the `reserved` names."""
        self.places.mark(answer_dir, rel_dir)
        return choose_names(
            self.settings.outbox / answer_dir,
            Path(photo).stem,
            output_format,
            reserved=reserved,
            inputs=inputs,
            root=self.settings.outbox,
        )

    # -- claim ----------------------------------------------------------------------------

    def claim(self, arrival: Arrival, resolved: Resolved) -> Job:
        """Move the pair into a new job folder and record the job (CLAIMING, then QUEUED). On
        failure nothing is lost: whatever was moved goes back to the inbox. Raises Changed when
        a file is not what settled (it must settle again) and Rejected when one may not be
        taken at all (a link, a special file, several hard links)."""
        job_id = new_job_id()
        rel_dir = arrival.rel_dir.as_posix() if str(arrival.rel_dir) != "." else ""
        seen = arrival.seen or {}
        wanted = [(arrival.image, f"input{plain_suffix(arrival.image.name)}")]
        if arrival.sidecar is not None:
            wanted.append((arrival.sidecar, SIDECAR_FILE))
        inbox = self.settings.inbox
        # Styles first: a brought-along style may be one of the files this claim moves.
        styles = [
            self.styles.store(path, _identity(seen.get(path))) for _, path, _ in resolved.styles
        ]
        try:
            planned = handover.check_files(
                inbox, rel_dir, [(p.name, t, _identity(seen.get(p))) for p, t in wanted]
            )
        except NotUsable as exc:
            raise Rejected(str(exc)) from None
        # Copied, the originals stay in the inbox, and their `._` companions beside them.
        copied = self.settings.archive == "keep" or arrival.borrowed
        names = [p.name for p, _ in wanted]
        extra = [] if copied else handover.companions(inbox, rel_dir, names)
        companions = [(name, f"companion-{index}") for index, (name, _) in enumerate(extra)]
        planned += [
            handover.Planned(name, target, identity)
            for (name, target), (_, identity) in zip(companions, extra, strict=True)
        ]
        moves = [(p.name, p.target) for p in planned]
        intent = ClaimIntent(rel_dir=rel_dir, moves=moves, copied=copied)
        source = (Path(rel_dir) / arrival.image.name).as_posix()
        self.store.create(job_id, State.CLAIMING, source, detail=intent)
        folder = self.job_dir(job_id)
        try:
            folder.mkdir()
            atomic_write(folder / CLAIM_FILE, model_to_json(intent).encode())  # ASCII JSON
            versions = None  # copied: the originals as they were copied, left in the inbox
            if copied:
                versions = handover.copy_in(inbox, rel_dir, folder, planned)
            else:
                handover.take(inbox, rel_dir, folder, planned)
            job = self._record(
                job_id, folder, arrival, rel_dir, resolved, styles, companions, planned[0]
            )
            if versions is not None:
                job = self._left_in_place(job, [p.expect for p in planned], versions)
            self.store.move(job_id, State.QUEUED, job=job, detail=None, note="claimed")
        except BaseException as exc:
            self.roll_back(job_id, intent, note=f"claim failed: {exc}")
            if isinstance(exc, NotUsable):
                raise Rejected(str(exc)) from None
            raise
        return job

    def _left_in_place(self, job: Job, claimed: list[Identity], versions: list[list[int]]) -> Job:
        """A copied claim's originals stay in the inbox: remembered as answered from now on
        (until a roll-back forgets them), as they were copied, to tell later whether the inbox
        holds them still, a newer version, or one written over in place."""
        photo = self.settings.inbox / job.rel_dir / job.image_name
        self.in_place.remember_read(photo, [*versions, None][:2], job.id)
        return job.model_copy(update={"copied": True, "origin": claimed})

    def _record(
        self,
        job_id: str,
        folder: Path,
        arrival: Arrival,
        rel_dir: str,
        resolved: Resolved,
        stored: list[Path],
        companions: list[tuple[str, str]],
        photo: handover.Planned,
    ) -> Job:
        sidecar_raw = resolved.sidecar_raw
        if sidecar_raw is not None and (folder / SIDECAR_FILE).read_bytes() != sidecar_raw:
            raise Changed(f"{arrival.sidecar}: changed while it was being claimed")
        styles = []
        for index, ((name, _, weight), style) in enumerate(
            zip(resolved.styles, stored, strict=True)
        ):
            file = f"style-{index}{style.suffix}"
            try:
                os.link(style, folder / file)
            except OSError:
                atomic_copy(style, folder / file)
            styles.append(JobStyle(name=name, file=file, weight=weight, sha256=style.stem))
        input_file = photo.target
        # What settled: a writer may still hold the photo open.
        input_sha = safefs.digest_unchanged(folder / input_file, photo.expect)
        output = {"format": resolved.output_format, "quality": resolved.output_quality}
        arrival_sidecar = [arrival.sidecar.name] if arrival.sidecar is not None else []
        inputs = inbox_paths(rel_dir, arrival.image.name, *arrival_sidecar)
        reserved = self.places.reserved()
        answer_dir = self.places.folder_for(rel_dir, reserved)
        names = self._names_in(
            answer_dir, rel_dir, arrival.image.name, resolved.output_format, inputs, reserved
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
            names=names.for_record(),
            answer_dir=None if answer_dir == rel_dir else answer_dir,
            key=job_key(input_sha, styles, resolved.params, output),
            companions=[Companion(*pair) for pair in companions],
        )
        self.reserve(job)
        return job

    def roll_back(self, job_id: str, intent: ClaimIntent, note: str) -> RolledBack:
        """Undo a claim that did not complete, or one whose originals changed under the job
        (RETURNING): every moved file goes back to the inbox, not remembered, to settle again
        (beside its old name if that was taken meanwhile; into state/returned/ if its folder
        is gone). Copies (archive = "keep") are only dropped: their originals never left, and
        settle again, no longer remembered."""
        try:
            return self.give_back(job_id, intent, note)
        except OSError as exc:
            log.error("spool.rollback_failed", folder=str(self.job_dir(job_id)), error=str(exc))
            # The folder and the record (CLAIMING, RETURNING) stay: they hold the originals.
            return RolledBack(inbox=[], kept=[])

    def give_back(self, job_id: str, intent: ClaimIntent, note: str) -> RolledBack:
        """`roll_back`, raising the OSError of a way back that is refused (the folder and the
        record stay, with the originals)."""
        folder = self.job_dir(job_id)
        if intent.copied:
            return self._drop_copies(job_id, intent, note)
        files = [(target, name) for name, target in intent.moves]
        back = handover.give_back(
            self.settings.inbox, intent.rel_dir, folder, files, self._rescue(job_id)
        )
        if back.rescue is None:
            self._rolled_back(job_id, note)
            folder = self.settings.inbox / intent.rel_dir
            return RolledBack(inbox=[folder / got for got in back.names.values()], kept=[])
        kept = [back.rescue / got for got in back.names.values()]
        self._rolled_back(job_id, f"originals kept in {back.rescue}: their inbox folder was gone")
        if kept:
            log.warning("spool.originals_kept", folder=str(back.rescue), job_id=job_id)
            if self.on_kept is not None:
                self.on_kept(intent, kept)
        return RolledBack(inbox=[], kept=kept)

    def changed_original(self, job: Job) -> str | None:
        """The name of an original that is no longer what was claimed, if any: a copy tool
        that writes in place (`rsync --inplace`) goes on writing through the file it had open
        after the claim moved it here, so the render may have read half of each version. A
        copied job's originals stayed in the inbox: one written on in place there means the
        copy was of a transfer still under way (one replaced by a new file is a new version,
        answered in its turn)."""
        if job.copied:
            return self._written_in_place(job)
        folder = self.job_dir(job)
        try:  # a file gone from the spool is not a change: the ordinary paths handle it
            if file_sha256(folder / job.input_file) != job.input_sha256:
                return job.image_name
            if job.sidecar_name is None:
                return None
            raw = (folder / SIDECAR_FILE).read_bytes()
        except OSError:
            return None
        try:
            same = load_json(raw) == job.sidecar
        except ValueError:  # valid when claimed (SidecarError is a ValueError)
            same = False
        return None if same else job.sidecar_name

    def _written_in_place(self, job: Job) -> str | None:
        for name, claimed, now in self._origins(job):
            if now is not None and now[:2] == claimed[:2] and now != claimed:  # same dev, inode
                return name
        return None

    def _origins(self, job: Job) -> list[tuple[str, Identity, Identity | None]]:
        """A copied job's originals: name, identity as claimed and as in the inbox now (None:
        gone, or no regular file: a link or a pipe put in its place is a new file even on the
        freed inode, which an attacker's trial saw a file system give a symbolic link, and the
        claimed copy's result was thrown away as written on in place)."""
        found = []
        for name, claimed in zip(job.pair, job.origin, strict=False):
            now: Identity | None = None
            with contextlib.suppress(OSError):
                result = safefs.lstat_under(self.settings.inbox, Path(job.rel_dir) / name)
                if stat.S_ISREG(result.st_mode):
                    now = Identity.of(result)
            found.append((name, claimed, now))
        return found

    def _rescue(self, job_id: str) -> Path:
        return self.settings.state / handover.RETURNED / job_id

    def kept(self) -> list[Attention]:
        """Originals kept in state/returned/ (their inbox folder was gone or swapped): until a
        person hands them back, `status` lists them."""
        try:
            folders = sorted((self.settings.state / handover.RETURNED).iterdir())
        except OSError:
            return []
        return [
            Attention(
                what=f"originals of job {folder.name} are kept in the state folder: the folder "
                "they were going to (in the inbox, or the archive) was gone or was no longer a "
                "real folder",
                where=str(folder),
                fix="give them back to their owner (or put them back in the inbox), then "
                "delete the folder",
            )
            for folder in folders
        ]

    def move_aside(self, job_id: str) -> Path:
        """A job that cannot be finished (unreadable record): its folder is kept for a person."""
        broken = set_aside(self.settings.state, job_id)
        with contextlib.suppress(OSError):
            os.rename(self.job_dir(job_id), broken)
        return broken

    # -- the job's log --------------------------------------------------------------------

    def append_log(self, job: Job, line: str) -> None:
        """Best effort: the job's log must never stop the job (a full state folder)."""
        path = self.job_dir(job) / LOG_FILE
        try:
            with path.open("a", encoding="utf-8", errors="backslashreplace") as handle:
                handle.write(log_line(line))
        except OSError as exc:
            log.warning("job.log_not_written", job_id=job.id, error=str(exc))

    def read_log(self, job: Job, last: str | None = None) -> str:
        """The job's log so far, plus `last` (a line not yet appended: the outcome, which is
        only recorded once it is published)."""
        try:
            text = (self.job_dir(job) / LOG_FILE).read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            text = ""
        return text + (log_line(last) if last is not None else "")

    # -- after the outbox is written ------------------------------------------------------

    def release(self, job: Job, *, archive: bool, answered: bool = False) -> list[Path]:
        """The originals leave the spool: to <archive>/<rel_dir>/ (success with archive =
        "move"), or back where they were in the inbox, remembered so they are not taken again
        while unchanged (into state/returned/<job-id>/ if that folder is gone or swapped). An
        `answered` original whose inbox name a newer file has taken meanwhile (a sync tool
        that updated the photo or its sidecar while the job ran) goes to the archive instead:
        the newer file keeps its name and its partner, and is answered in its turn, and the
        inbox, which such a tool mirrors, gets no `.returned-N` copy. A copied job's originals
        never left the inbox: only copies of versions no longer there go on. Returns where the
        photo and its sidecar went (or are)."""
        intent = ClaimIntent.of(job)
        placed: dict[str, Path] = {}
        files = [(target, name) for name, target in intent.moves]
        if intent.copied:
            # A copy whose original is still as claimed just goes; one whose original changed
            # or went is that version's only copy: archived when answered, else given back.
            folder = self.settings.inbox / job.rel_dir
            kept = {name for name, claimed, now in self._origins(job) if now == claimed}
            placed |= {name: folder / name for name in kept}
            files = [(target, name) for target, name in files if name not in kept]
            archive = answered
        pair = job.pair
        if archive:
            gone = {name for _, name in files}
        else:
            gone = self._replaced(job) if answered else set()
        if gone:
            archived = [f for f in files if f[1] in gone]
            placed |= self._archive(job, archived, [name for name in pair if name in gone])
        if home := [f for f in files if f[1] not in gone]:
            back = handover.give_back(
                self.settings.inbox,
                job.rel_dir,
                self.job_dir(job),
                home,
                self._rescue(job.id),
                before=lambda names: self._remember_returned(job, names),
            )
            placed |= self._placed(back, self.settings.inbox / job.rel_dir)
        return [placed[name] for name in pair if name in placed]

    def _drop_copies(self, job_id: str, intent: ClaimIntent, note: str) -> RolledBack:
        pair = [path for path in intent.inbox_pair(self.settings.inbox) if path is not None]
        self.store.forget_seen([self.in_place.relative(pair[0])])
        self._rolled_back(job_id, note)
        return RolledBack(inbox=pair, kept=[])

    def _rolled_back(self, job_id: str, note: str) -> None:
        """The job folder goes, and a claim in progress ends ROLLED_BACK."""
        shutil.rmtree(self.job_dir(job_id), ignore_errors=True)
        self.places.let_go(job_id)
        row = self.store.get(job_id)
        if row is not None and row.state in MOVING_ORIGINALS:
            with contextlib.suppress(OSError):
                self.store.move(job_id, State.ROLLED_BACK, note=note)

    def _replaced(self, job: Job) -> set[str]:
        """The job's inbox names that a newer file holds now (its photo's take its `._`
        companions along)."""
        try:
            with safefs.folder(self.settings.inbox, job.rel_dir) as fd:
                taken = {name for name in job.pair if safefs.exists_at(fd, name)}
        except OSError:
            return set()  # the folder is gone: give_back rescues them all
        if job.image_name in taken:
            taken |= {name for name, _ in job.companions}
        return taken

    def _archive(self, job: Job, files: list[tuple[str, str]], pair: list[str]) -> dict[str, Path]:
        root = self.settings.archive_path
        with contextlib.suppress(FileExistsError, NotADirectoryError):
            # A file holds the folder's name (an inbox folder once named like an archived
            # photo): `give_back` keeps the originals in state/returned/ rather than wait for
            # a person, as for an inbox folder that is gone.
            (root / job.rel_dir).mkdir(parents=True, exist_ok=True)
        back = handover.give_back(
            root, job.rel_dir, self.job_dir(job), files, self._rescue(job.id), pairs=False
        )
        if not job.copied:  # a copied job's `._` files belong to the inbox's newer version
            late = {name: back.names.get(name, name) for name in pair}
            handover.follow(self.settings.inbox, job.rel_dir, late, root / job.rel_dir)
        return self._placed(back, root / job.rel_dir)

    @staticmethod
    def _placed(back: handover.GivenBack, where: Path) -> dict[str, Path]:
        if back.rescue is not None:
            log.warning("spool.originals_kept", folder=str(back.rescue), reason="folder gone")
            where = back.rescue
        return {name: where / got for name, got in back.names.items()}

    def _remember_returned(self, job: Job, names: dict[str, str]) -> None:
        """Recorded before the move (a rename keeps size and mtime): a crash between the record
        and the move leaves a harmless record, never a photo that is taken again."""
        folder = self.job_dir(job)
        image = _stat_signature(folder / job.input_file)
        if image is None:
            return
        sidecar = _stat_signature(folder / SIDECAR_FILE) if job.sidecar_name else None
        rel = (Path(job.rel_dir) / names.get(job.image_name, job.image_name)).as_posix()
        self.store.remember(rel, [image, sidecar], job.id)

    def remove(self, job: Job | str) -> None:
        """Delete the job folder (its originals have already left it), and the stored styles
        it was the last to use: a daemon restarted only every few months would otherwise keep
        every brought-along style until then."""
        shutil.rmtree(self.job_dir(job), ignore_errors=True)
        self.places.let_go(job if isinstance(job, str) else job.id)
        self.styles.collect()

    # -- earlier results ------------------------------------------------------------------

    def earlier_answer(self, job: Job) -> Answer | None:
        """An earlier identical job's output in the same inbox folder (`Job.reuse_key`), if it
        is still there unchanged."""
        return still_published(self.store.answer_for(job.reuse_key), job, self.settings)


def still_published(answer: Answer | None, job: Job, settings: Settings) -> Answer | None:
    """`answer` if it is another job's and its output is still in the outbox unchanged (a
    result someone deleted or edited answers nothing)."""
    if answer is None or answer.job_id == job.id or not unchanged(answer, settings):
        return None
    return answer


def unchanged(answer: Answer, settings: Settings) -> bool:
    """Whether `answer`'s output is still in the outbox as it was published (`open_answer`: a
    file larger than `Settings.max_answer_bytes`, or reached through a link, is not)."""
    try:
        found = answer_sha256(answer.output, settings.outbox, settings.max_answer_bytes)
    except OSError:
        return False
    return found == answer.sha256
