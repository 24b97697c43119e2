"""Writing into folders that sync tools watch: whole files only, never overwriting an earlier one.

Every file is written under a hidden temporary name (`.stylefold-*.tmp`, which Syncthing,
Nextcloud and rclone can be told to ignore), flushed with fsync, renamed into place, and the
folder itself is fsynced so the rename survives a power cut. Folders are reached from the outbox
root without following a link, and our own files are read back only as regular files: a two-way
sync lets the outbox's readers write into it too (docs/SECURITY.md, 5). A job's files share one
set of names (`OutputNames`) chosen so that no other job's answer in the outbox is replaced; the
manifest (or the error report) is renamed last and so marks the job as published. The one thing
an answer does replace is a stale error report about the same photo: fixing a rejected sidecar
gives `photo.stylised.jpg`, not `photo.stylised-2.jpg` beside an outdated `photo.error.json`
(unless that report says where originals kept in the state folder are: that one stays). So does
the manifest and log of an earlier answer about the same photo whose image was deleted: the
photo sent again is answered under its own names, not numbered beside a record of nothing.

Names are compared as the receiving end sees them: a phone, a Mac or a Windows share folds case
and Unicode normalisation, so `Photo.stylised.jpg` beside `photo.stylised.jpg` (or `Trip/`
beside `trip/`) would be one file there, and the sync tool would drop or rename one answer.
"""

from __future__ import annotations

import contextlib
import glob
import itertools
import os
import re
import stat
import time
import unicodedata
from collections.abc import Callable, Collection, Iterable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass, replace
from functools import cache, cached_property
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from pydantic import BaseModel, ValidationError

from daemon import safefs
from daemon.fsutil import (
    atomic_copy,
    atomic_write,
    atomic_write_json,
    fit_name,
    fit_stem,
    one_folder,
    read_json,
    remove,
    remove_empty_folders,
    text_bytes,
)
from daemon.intake.ignore import without_trailing
from daemon.jobs.error_report import ErrorReport, as_report
from daemon.jobs.manifest import Manifest
from daemon.jobs.record import AnswerNames
from daemon.visible import visible


def _numbered(name_tail: str, number: int) -> str:
    """'.stylised.jpg' -> '.stylised-2.jpg'; '.log' -> '-2.log'. The number sits before the last
    extension so every file of the job keeps its type and the set sorts together."""
    if number == 1:
        return name_tail
    head, dot, ext = name_tail.rpartition(".")
    return f"{head}-{number}{dot}{ext}"


def local_time(seconds: float) -> str:
    """How the outbox's files (manifests, reports, progress) write a time: local, with its
    offset, as the person reading them lives it."""
    return time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(seconds))


def log_line(text: str) -> str:
    """One line of a job's log, which people read in the outbox: a name from the inbox in it
    has its escape sequences shown, not run by the terminal that prints the log (an attacker's
    trial: `cat photo.log` cleared the screen)."""
    return f"{local_time(time.time())} {visible(text)}\n"


MANIFEST, LOG, ERROR, PROGRESS, PREVIEW = (
    ".manifest.json",
    ".log",
    ".error.json",
    ".progress.json",
    ".preview.jpg",
)
TAILS = (MANIFEST, LOG, ERROR, PROGRESS, PREVIEW)  # and the image's, by its type


@dataclass(frozen=True)
class OutputNames:
    """The files one job may create in its outbox folder: `<stem>.stylised.<ext>` and company,
    numbered from 2 on when an earlier job already holds the plain names."""

    folder: Path
    stem: str
    image_ext: str
    number: int = 1
    # The outbox `folder` is in: no folder below it is trusted (another writer of a two-way
    # synced outbox may make one a link); None: `folder` is the outbox.
    root: Path | None = None

    @property
    def outbox(self) -> Path:
        return self.folder if self.root is None else self.root

    @cached_property
    def _fitted(self) -> str:
        """The stem, shortened once for the whole set (`fit_stem`)."""
        tails = (f".stylised.{self.image_ext}", *TAILS)
        return fit_stem(self.stem, (_numbered(each, self.number) for each in tails))

    def _path(self, tail: str) -> Path:
        return self.folder / f"{self._fitted}{_numbered(tail, self.number)}"

    @property
    def image(self) -> Path:
        return self._path(f".stylised.{self.image_ext}")

    @property
    def manifest(self) -> Path:
        return self._path(MANIFEST)

    @property
    def log(self) -> Path:
        return self._path(LOG)

    @property
    def error(self) -> Path:
        return self._path(ERROR)

    @property
    def progress(self) -> Path:
        return self._path(PROGRESS)

    @property
    def preview(self) -> Path:
        """The running job's latest preview (preview_every), removed when the answer lands."""
        return self._path(PREVIEW)

    def all(self) -> tuple[Path, ...]:
        return (self.image, self.manifest, self.log, self.error, self.progress, self.preview)

    def for_record(self) -> AnswerNames:
        """What a job's record keeps of them."""
        return AnswerNames(stem=self.stem, image_ext=self.image_ext, number=self.number)

    @classmethod
    def of(cls, root: Path, folder: str, names: AnswerNames) -> OutputNames:
        """The names of an answer in the outbox folder `folder` (relative to the outbox `root`)."""
        return cls(root / folder, names.stem, names.image_ext, names.number, root)


def folded(name: str) -> str:
    """A name as a case- and normalisation-insensitive file system (APFS, NTFS, exFAT) sees it."""
    return unicodedata.normalize("NFC", name).casefold()


def _entries(folder: Path) -> list[os.DirEntry[str]]:
    try:
        with os.scandir(folder) as entries:
            return list(entries)
    except OSError:
        return []


def _alike_folders(root: Path, folder: Path) -> list[Path]:
    """`folder` and every folder under `root` whose path differs from it only in case or in
    normalisation: one folder on a receiver that folds names."""
    found = [root]
    for part in folder.relative_to(root).parts:
        want = folded(part)
        found = [
            parent / entry.name
            for parent in found
            for entry in _entries(parent)
            if folded(entry.name) == want and entry.is_dir(follow_symlinks=False)
        ]
    return found


class OutboxRefused(OSError):
    """An answer the outbox must not take now (a folder that would take another answer's name,
    `folder_clash`; an outbox whose file system is gone); its message says why and what to
    do."""


def folder_clash(root: Path, rel_dir: str, reserved: Iterable[Path]) -> str | None:
    """Why the outbox folder `rel_dir` (relative to `root`) must not be made, or None. A part of
    it would take a name `reserved` by another job's answer still in progress (an attacker's
    trial: a report in an inbox folder `victim.stylised.jpg/` made that folder in the outbox
    mid-render, and the victim's result could never be written), or would differ only in case
    or normalisation from a file beside it (one name on a folding receiver; a file of exactly
    its name fails the folder's making, `publisher._clash`). A folder already there is no
    one's to refuse. `answer_folder` chooses folders this passes; this is asked again when the
    answer is written, in case another writer of the outbox came between."""
    taken = _taken(reserved)
    folder = root
    for part in Path(rel_dir).parts:
        if (refused := _refused(folder, part, taken)) is not None:
            return refused
        folder = folder / part
    return None


# A numbered answer folder (`answer_folder`) holds this file, naming the inbox folder it
# answers: an inbox folder of that very name (`photo.log-2/`, there before or made later) then
# gets a folder of its own rather than another folder's answers (a re-test's finding).
FOLDER_MARK = ".stylefold-folder.json"


class _FolderMark(BaseModel):
    inbox_folder: str  # relative to the inbox


def answer_folder(
    root: Path,
    rel_dir: str,
    reserved: Iterable[Path],
    inbox: Path,
    claimed: Iterable[tuple[str, str]] = (),
) -> str:
    """Where (relative to `root`) the answers to a photo of the inbox folder `rel_dir` go: its
    mirror, with each part that `folder_clash` refuses, or whose name a file holds (the log
    `photo.log` of an earlier answer, for an inbox folder `photo.log/`), or that is a folder the
    daemon may not write into, or another inbox folder's numbered one, numbered as
    `photo.log-2/` (skipping the names of folders of `inbox`, and of folders `claimed` (answer
    folder, inbox folder) by jobs in progress). The same inbox folder gets the same one while
    the outbox stays so; `mark_folders` makes the numbered parts. (An attacker's trial: such a
    job was blocked, told to rename the inbox folder, which cannot help once its photo is
    claimed, so it waited forever, and `stylefold once` with it.)"""
    taken, held = _taken(reserved), _levels(claimed)
    parts = Path(rel_dir).parts
    folder, chosen = root, list[str]()
    for level, part in enumerate(parts):
        answers = Path(*parts[: level + 1]).as_posix()
        # One listing of each side for every number tried (the inbox folder's only once a
        # numbered name is).
        beside = _names_in(inbox.joinpath(*parts[:level]))
        name, number, entries = part, 1, _entries(folder)
        while not _answers_in(folder / name, entries, answers, taken, number > 1) or _held(
            Path(*chosen, name).as_posix(), answers, held, beside, number > 1
        ):
            number += 1
            name = fit_name(part, f"-{number}")
        chosen.append(name)
        folder = folder / name
    return Path(*chosen).as_posix() if chosen else ""


def _answers_in(
    path: Path, entries: list[os.DirEntry[str]], answers: str, taken: set[str], numbered: bool
) -> bool:
    """Whether, by what the outbox holds (`entries`: those beside `path`), the answers of the
    inbox folder `answers` may go in the outbox folder `path`. Folders alike in case or Unicode
    form are one on a folding receiver: alike mirrors of alike inbox folders may share it
    (their files are numbered apart), a numbered folder and another folder's may not (a
    re-test's finding: `C.LOG-2/` was made beside `c.log-2/`, `c.log/`'s numbered one)."""
    if _refused(path.parent, path.name, taken, entries) is not None:
        return False
    if _file_at(path) or shut(path):
        return False
    wanted = folded(path.name)
    alike = [
        e.name for e in entries if folded(e.name) == wanted and e.is_dir(follow_symlinks=False)
    ]
    marks = {_mark_of(path.parent / name) for name in alike}
    if numbered:
        return not alike or marks == {answers}
    return marks <= {None, answers}  # its mirror, unless another folder's numbered one


def _held(
    rel: str,
    answers: str,
    held: list[tuple[str, str]],
    beside: Callable[[], set[str]],
    numbered: bool,
) -> bool:
    """Whether the answer folder `rel` would be another inbox folder's: a job in progress
    answers another one there (its folder may not be made yet, or was removed meanwhile), or,
    numbered, the inbox has a folder of that name (`beside`: the folded names in the inbox
    folder it would be in)."""
    wanted = folded(rel)
    for folder, inbox_folder in held:
        mirrors = not numbered and folder == inbox_folder  # alike mirrors may share one
        if folded(folder) == wanted and inbox_folder != answers and not mirrors:
            return True
    return numbered and folded(Path(rel).name) in beside()


def _names_in(folder: Path) -> Callable[[], set[str]]:
    """The folded names in `folder`, listed at the first call."""
    return cache(lambda: {folded(entry.name) for entry in _entries(folder)})


def _levels(claimed: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    """Each (answer folder, inbox folder) with the pairs of its parents: a job in progress in
    `c.log-2/sub/` for `c.log/sub/` holds `c.log-2/` for `c.log/` too."""
    pairs = []
    for answer_dir, rel_dir in claimed:
        outside, inside = Path(answer_dir).parts, Path(rel_dir).parts
        for depth in range(1, len(inside) + 1):
            pairs.append((Path(*outside[:depth]).as_posix(), Path(*inside[:depth]).as_posix()))
    return pairs


def _mark_of(path: Path) -> str | None:
    try:
        return _FolderMark.model_validate(read_json(path / FOLDER_MARK)).inbox_folder
    except ValidationError:
        return None


def mark_folders(root: Path, folder: str, rel_dir: str) -> None:
    """Make the numbered parts of the answer folder `folder` (`answer_folder`), each with the
    mark that names the inbox folder it answers."""
    made, parts = root, Path(rel_dir).parts
    for level, (name, part) in enumerate(zip(Path(folder).parts, parts, strict=True)):
        made = made / name
        if name != part and _mark_of(made) is None:
            mark = _FolderMark(inbox_folder=Path(*parts[: level + 1]).as_posix())
            atomic_write_json(made / FOLDER_MARK, mark.model_dump(), under=root)


def _taken(reserved: Iterable[Path], *, folders: bool = False) -> set[str]:
    """The reserved answers' names, as a folding receiver sees them; with `folders`, the
    folders they go in too: no name for a file (an inbox folder `k.log/` claimed before the
    photo `k.jpg`, whose log was then given that name, and whichever came second was blocked)."""
    return {
        folded(str(place))
        for path in reserved
        for place in ((path, *path.parents) if folders else (path,))
    }


def _file_at(path: Path) -> bool:
    """Whether something other than a folder holds the name: a file, or a link, which answers
    never go through."""
    try:
        return not stat.S_ISDIR(path.lstat().st_mode)
    except OSError:
        return False


def shut(path: Path) -> bool:
    """Whether `path` is a folder the daemon may not write into: one another user of a shared
    outbox made before the answers came (a non-root trial: it held them blocked for as long as
    it stayed)."""
    return path.is_dir() and not path.is_symlink() and not os.access(path, os.W_OK | os.X_OK)


def is_folder(root: Path, folder: str) -> bool:
    """Whether `root/folder` is there as folders all the way, not through a link."""
    try:
        with safefs.folder(root, folder):
            return True
    except OSError:
        return False


def _refused(
    folder: Path, part: str, taken: set[str], entries: list[os.DirEntry[str]] | None = None
) -> str | None:
    """Why `folder / part` may not be made as a folder (see `folder_clash`), or None;
    `entries`: `folder`'s, when already listed."""
    path = folder / part
    if path.is_dir() and not path.is_symlink():
        return None
    if folded(str(path)) in taken:
        return (
            f"{path} would be a folder where another photo's answer, still in progress, gets "
            "that name"
        )
    for entry in _entries(folder) if entries is None else entries:
        alike = entry.name != part and folded(entry.name) == folded(part)
        if alike and not entry.is_dir(follow_symlinks=False):  # a link is no folder to share
            return (
                f"{path} would be a folder beside the file {entry.name}, one name where case is "
                f"folded (a phone, a Mac, Windows); move the file {entry.name} away"
            )
    return None


def choose_names(
    folder: Path,
    stem: str,
    image_ext: str,
    reserved: Iterable[Path] = (),
    inputs: Collection[str] = (),
    root: Path | None = None,
) -> OutputNames:
    """The first numbering whose files neither exist nor are `reserved` by a running job, so a
    second photo.jpg never replaces the first one's result, and no file of it differs from
    one in the outbox (`root`, of which `folder` is a part) only in case or normalisation. An
    error report about one of `inputs` (the job's photo and sidecar, relative to the inbox)
    does not hold its numbering: the new answer replaces it and its log."""
    taken = _taken(reserved, folders=True)
    outbox = folder if root is None else root
    present = _present(outbox, folder)
    number = 1
    while True:
        names = OutputNames(folder, stem, image_ext, number, outbox)
        stale = _outdated(names, inputs)
        files = [path for path in names.all() if path not in stale]
        if not any(
            folded(str(path)) in taken or folded(path.name) in present or os.path.lexists(path)
            for path in files
        ):
            present.update(folded(path.name) for path in files)  # in a batch: taken now
            return names
        number += 1


# The folded names of each answer folder (and the folders alike), listed once for the answers
# `one_listing` chooses together; None outside one.
_listings: ContextVar[dict[tuple[Path, Path], set[str]] | None] = ContextVar(
    "listings", default=None
)


@contextlib.contextmanager
def one_listing() -> Iterator[None]:
    """Answers named together (the reports of one turn of the daemon's loop) list each folder
    once, and see each other's names: listing a folder for every answer made a flood of 50,000
    empty photos cost the daemon half an hour of CPU, growing with the square of their number
    (a volume trial). A name someone else makes meanwhile is seen at the next turn; the exact
    name is still checked on disk (`os.path.lexists`), and the rename never replaces one."""
    token = _listings.set({})
    try:
        yield
    finally:
        _listings.reset(token)


def _present(outbox: Path, folder: Path) -> set[str]:
    """Folded names in `folder` and the folders alike: listed now, or once per `one_listing`."""
    listings = _listings.get()
    if listings is not None and (outbox, folder) in listings:
        return listings[(outbox, folder)]
    present = {
        folded(entry.name) for alike in _alike_folders(outbox, folder) for entry in _entries(alike)
    }
    if listings is not None:
        listings[(outbox, folder)] = present
    return present


# How a failure report's `original` begins when the originals could not go back to the inbox
# (their folder was gone or swapped) and were kept in state/returned/ (answers.KEPT).
KEPT_PREFIX = "kept by the daemon in its state folder"
RETURNED_PREFIX = "returned to the inbox as "


def reports_on(names: OutputNames, inputs: Collection[str]) -> bool:
    """Whether `names.error` is a stale error report about one of `inputs`: one a new answer
    for the same photo may replace. A report saying the originals were kept in the state
    folder, or went back to the inbox under other names (a newer photo had taken theirs), is
    never stale: it is its owner's only pointer to them, so it keeps its names and the new
    answer is numbered beside it (an attacker's trial: the newer photo's answer deleted the
    report, and `photo.returned-2.jpg` sat in the inbox unexplained)."""
    report = as_report(read_json(names.error)) if inputs else None
    if report is None or report.input not in inputs:
        return False
    if (back_as := _returned_as(report, report.input)) is not None:
        return back_as
    return not report.original.startswith(KEPT_PREFIX)


def _returned_as(report: ErrorReport, path: str) -> bool | None:
    """Whether a report's photo went back to the inbox as `path` (its `original` names the
    photo first, then its sidecar); None when it did not go back to the inbox."""
    if not report.original.startswith(RETURNED_PREFIX):
        return None
    return report.original.removeprefix(RETURNED_PREFIX).startswith((f"{path};", f"{path},"))


class _Input(BaseModel):
    path: str


class _Output(BaseModel):
    file: str


class _Answering(BaseModel):
    """Which photo one of our manifests answers, and with which image; any other key is the
    file's own business."""

    input: _Input
    output: _Output


def image_gone(names: OutputNames, inputs: Collection[str]) -> bool:
    """Whether `names.manifest` is an earlier answer about one of `inputs` (the job's photo and
    sidecar, relative to the inbox) whose image is no longer in the outbox: deleted by its
    owner, so a new answer for the same photo may replace the manifest and its log. The image
    is the one the manifest names, whatever the new answer's format (a user's trial: a JPEG
    asked for after a PNG answer took the PNG's manifest and log, as if its image were gone)."""
    if not inputs or not _file_at(names.manifest):
        return False
    try:
        answer = _Answering.model_validate(read_json(names.manifest))
    except ValidationError:
        return False
    image = answer.output.file
    if image in ("", ".", "..") or "/" in image or "\0" in image:
        return False  # not a name beside the manifest: not ours to judge
    return answer.input.path in inputs and not os.path.lexists(names.folder / image)


def _outdated(names: OutputNames, inputs: Collection[str]) -> tuple[Path, ...]:
    """The files at `names` that an answer about `inputs` replaces instead of numbering
    beside them."""
    stale: tuple[Path, ...] = ()
    if reports_on(names, inputs):
        stale += (names.error, names.log)
    if image_gone(names, inputs):
        stale += (names.manifest, names.log)
    return stale


def drop_stale_report(
    names: OutputNames, inputs: Collection[str], inbox: Path, later: Collection[str] = ()
) -> None:
    """A new job of the same photo outdates its earlier error report, and the report's log
    beside it unless an answer's manifest holds that name too (a result replaces it). So does
    a job of a photo given back as `photo.returned-2.jpg` outdate the report saying so, and
    one of a photo renamed from `photo.jpg.` (in `inbox`) the report on that name. The reports
    of `later` jobs, which ended after this one was claimed, are not outdated by it (an
    attacker's trial: a broken photo's report went when another photo, sent under its name
    while it was queued, was answered, and the broken one, given back, sat unanswered)."""
    own = [names] if reports_on(names, inputs) else []
    found = [*_numbered_reports(names, inputs), *_reports_of_returned(names, inputs)]
    stale = [*own, *found, *_reports_of_misnamed(names, inputs, inbox)]
    _drop([each for each in stale if _reported_by(each) not in later])


def _reported_by(names: OutputNames) -> str | None:
    report = as_report(read_json(names.error))
    return None if report is None else report.job_id


_REPORT_NAME = re.compile(r"(?P<stem>.+)\.error(?:-(?P<number>\d+))?\.json", re.DOTALL)


def withdraw_report(outbox: Path, shown: str, job_id: str, path: str) -> bool:
    """Remove the report `shown` (relative to the outbox), and its log unless a result's
    manifest holds that name too, while it is still the one job `job_id` wrote about the
    inbox file `path`: whatever else is there now is left alone. Whether it was removed."""
    error = outbox / shown
    named = _REPORT_NAME.fullmatch(error.name)
    report = as_report(read_json(error)) if named else None
    if named is None or report is None or (report.job_id, report.input) != (job_id, path):
        return False
    number = int(named["number"] or 1)
    names = [error.with_name(named["stem"] + _numbered(tail, number)) for tail in (LOG, MANIFEST)]
    remove(error, outbox)
    if not os.path.lexists(names[1]):
        remove(names[0], outbox)
    remove_empty_folders(error.parent, outbox)
    return True


def drop_other_reports(names: OutputNames, inputs: Collection[str]) -> None:
    """A new report on `inputs` (at `names`) outdates their reports under the stem's other
    numbers (a re-test: pic.json's "is not used" stayed beside its photo's later report on the
    pair, once the sidecar pic.jpg.json that had shadowed it was removed)."""
    _drop(_numbered_reports(names, inputs))


def _drop(stale: list[OutputNames]) -> None:
    for names in stale:
        remove(names.error, names.outbox)
        if not os.path.lexists(names.manifest):
            remove(names.log, names.outbox)


def _numbered_reports(
    names: OutputNames,
    inputs: Collection[str],
    about: Callable[[OutputNames, Collection[str]], bool] = reports_on,
) -> list[OutputNames]:
    """Reports on one of `inputs` (as `about` tells) under the stem's other numbers (a phone
    user's trial: the report on an unused pic.json, numbered beside its photo's, stayed beside
    the result once the photo was rendered with it). Numbers are taken in turn, so the first
    number with none of a job's files ends the search."""
    found = []
    for number in itertools.count(1):
        if number == names.number:
            continue
        other = replace(names, number=number)
        if not any(os.path.lexists(path) for path in other.all()):
            if number > 1:
                break
            continue
        if about(other, inputs):
            found.append(other)
    return found


def _reports_of_misnamed(
    names: OutputNames, inputs: Collection[str], inbox: Path
) -> list[OutputNames]:
    """Reports on the photo as it was named before, with a space or dot after its extension:
    `pic.jpg.` is told in `pic.jpg.error.json`, under its whole name (the intake's `_stem`);
    once it is taken as pic.jpg they are outdated (a re-test: they stayed beside its result),
    unless a file of that name is still in the inbox: another photo, whose one answer it is
    (an attacker's trial: taking pic.jpg deleted the report of a different pic.jpg.)."""
    photo = next(iter(inputs), "")
    if not photo:
        return []

    def misnamed(other: OutputNames, inputs: Collection[str]) -> bool:
        report = as_report(read_json(other.error))
        if report is None or not report.input != photo == without_trailing(report.input):
            return False
        try:
            safefs.lstat_under(inbox, Path(report.input))
        except FileNotFoundError:
            return True  # gone: renamed, as it was told
        except (OSError, safefs.UnsafePath):
            pass  # not known to be gone
        return False

    whole = OutputNames(names.folder, PurePosixPath(photo).name, names.image_ext, 0, names.root)
    return _numbered_reports(whole, inputs, misnamed)


_RETURNED_NAME = re.compile(r"(?P<stem>.+?)\.returned-\d+(?:\..*)?")


def _reports_of_returned(names: OutputNames, inputs: Collection[str]) -> list[OutputNames]:
    """The names of failure reports in `names.folder` that say their photo went back to the inbox as
    the job's photo (`inputs`' first: its own name taken by a newer photo meanwhile): once
    that photo is taken again, they are outdated (a re-test: the report stayed beside the
    photo's new answer). Each report's names follow from the photo it is about, so a stem
    shortened to fit the name limit, in the report's names or the returned photo's, is found."""
    photo = next(iter(inputs), "")
    if (returned := _RETURNED_NAME.fullmatch(PurePosixPath(photo).name)) is None:
        return []
    found, folder = [], names.folder
    for entry in _entries(folder):
        named = _REPORT_NAME.fullmatch(entry.name)
        if named is None or not _same_start(named["stem"], returned["stem"]):
            continue
        report = as_report(read_json(Path(entry.path)))
        if report is None or not _returned_as(report, photo):
            continue
        stem, number = PurePosixPath(report.input).stem, int(named["number"] or 1)
        theirs = OutputNames(folder, stem, "jpg", number, names.root)
        if theirs.error.name == entry.name:
            found.append(theirs)
    return found


def _same_start(one: str, other: str) -> bool:
    """Whether two stems are one photo's, as far as both names kept it: shortened to fit the
    name limit in bytes, in composed or decomposed form (a Mac's é is two characters), they
    agree up to the shorter one's last character, which either cut may have split."""
    one, other = (unicodedata.normalize("NFC", stem) for stem in (one, other))
    kept = max(0, min(len(one), len(other)) - 1)
    return one[:kept] == other[:kept]


def publish_result(
    names: OutputNames,
    image: Path,
    manifest: Manifest,
    log: str,
    sha256: str | None = None,
    opened: BinaryIO | None = None,
) -> str:
    """Image first, manifest last: a manifest in the outbox means its image is complete. All
    three into the folder as opened once (`one_folder`). With `sha256` the image copied must
    have it, `opened` it (`fsutil.atomic_copy`). Returns the SHA-256 of the image written."""
    with one_folder(names.folder, names.outbox):
        digest = atomic_copy(image, names.image, names.outbox, sha256, opened)
        atomic_write(names.log, text_bytes(log), under=names.outbox)
        atomic_write_json(names.manifest, manifest.model_dump(mode="json"), under=names.outbox)
    return digest


def publish_error(names: OutputNames, report: ErrorReport, log: str) -> None:
    """The job's log, then `<stem>.error.json`, whose `error` says what was wrong and the fix;
    then an earlier answer's manifest for the same photo whose image is gone goes, since the
    log beside it is now the report's."""
    with one_folder(names.folder, names.outbox):
        atomic_write(names.log, text_bytes(log), under=names.outbox)
        atomic_write_json(names.error, report.model_dump(mode="json"), under=names.outbox)
        if image_gone(names, [report.input]):
            remove(names.manifest, names.outbox)


class _Owned(BaseModel):
    """Whose one of our JSON files in the outbox is (manifest, report or progress file); any
    other key is the file's own business."""

    job_id: str


def owner(path: Path) -> str | None:
    """The job id inside `path`, or None when it is not one of our JSON files."""
    return owner_in(read_json(path))


def owner_in(value: object) -> str | None:
    """The job id in one of our JSON files as read (`owner`, for one read otherwise: the web
    page opens outbox files without following links)."""
    try:
        return _Owned.model_validate(value).job_id
    except ValidationError:
        return None


def answer_of(folder: Path, stem: str, job_id: str) -> Path | None:
    """The manifest or error report job `job_id` published for a photo named `stem` in the
    outbox `folder`, if any (for a job whose names the state database has lost)."""
    prefix = glob.escape(stem[:40])  # long stems are shortened to fit, never at the front
    for pattern in (f"{prefix}*.manifest*.json", f"{prefix}*.error*.json"):
        for path in folder.glob(pattern) if folder.is_dir() else []:
            if owner(path) == job_id:
                return path
    return None


def running_files_of(folder: Path, job_id: str) -> list[Path]:
    """The progress files (and their previews) that job `job_id` left in the outbox `folder`,
    found by the job id inside (for a job whose names the state database has lost)."""
    found = []
    for progress in folder.glob("*.progress*.json") if folder.is_dir() else []:
        if owner(progress) == job_id:
            preview = progress.name.replace(".progress", ".preview").removesuffix(".json")
            found += [progress, progress.with_name(f"{preview}.jpg")]
    return found
