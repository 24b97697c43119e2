"""Originals crossing the trust boundary: taken from the inbox into a job folder, and given back.

The inbox is written by others at any moment, so nothing here uses an inbox path twice. The
inbox folder is opened name by name without following links (`daemon.safefs`), each file is
checked on that descriptor against what settled, moved by a rename between two descriptors that
never replaces anything, and checked again on the entry that actually arrived: whatever was
swapped in between is caught there (`Changed`) and the claim is rolled back. Giving back writes
only into the inbox folder reached the same way; when that folder is gone or is no longer a real
folder, the originals are kept in `state/returned/<job-id>/` instead and the caller says so.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import unicodedata
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from daemon.fsutil import NAME_MAX, fit_name, fit_stem
from daemon.intake import reasons
from daemon.intake.partners import key
from daemon.safefs import (
    Changed,
    Identity,
    NotUsable,
    UnsafePath,
    check,
    copy_open,
    exists_at,
    folder,
    lstat_at,
    move,
    open_file,
    rename_noreplace,
    stat_key,
    version,
)

MAX_COMPANION_BYTES = 1 << 20  # AppleDouble files hold Finder's few KB of metadata
RETURNED = "returned"  # state/returned/<job-id>/: originals whose inbox folder was gone or swapped

# A test seam at the instants an attacker would aim for: after a claim's checks, before its
# moves ("claim"), before originals go back into the inbox ("return"), and before late `._`
# companions follow them to the archive ("follow"). The reliability tests
# set it to swap a file or folder for a link at exactly that moment; None in production.
race_hook: Callable[[str, Path], None] | None = None


def _race(moment: str, where: Path) -> None:
    if race_hook is not None:
        race_hook(moment, where)


@dataclass(frozen=True)
class Planned:
    """One file of a claim: its name in the inbox folder, its name in the job folder, and what
    it must still be (the identity it settled with, or the one just checked)."""

    name: str
    target: str
    expect: Identity


def check_files(
    inbox: Path, rel_dir: str, files: list[tuple[str, str, Identity | None]]
) -> list[Planned]:
    """Check each file in its inbox folder (reached without following links): a regular file
    with one link, unchanged since it settled. Raises Changed (settle again), NotUsable (a
    report), or UnsafePath turned into Changed (a folder on the way was swapped)."""
    try:
        with folder(inbox, rel_dir) as source:
            planned = []
            for name, target, settled in files:
                result = lstat_at(source, name)
                check(name, result, settled)
                _readable(source, name)
                planned.append(Planned(name, target, Identity.of(result)))
            return planned
    except UnsafePath as exc:
        raise Changed(str(exc)) from None


def _readable(source: int, name: str) -> None:
    """A file the daemon may not read is told so before anything moves (a non-root trial: it
    was moved, failed, rolled back and claimed again every 10 s, and every photo after it
    waited)."""
    if (why := reasons.unreadable_at(source, name)) is not None:
        raise NotUsable(name, why)


def companions(inbox: Path, rel_dir: str, names: list[str]) -> list[tuple[str, Identity]]:
    """macOS AppleDouble files (`._photo.jpg`) of these names that are regular files with one
    link and no larger than one can be: they travel with the photo instead of being left
    behind. A larger one stays where it is (an attacker's trial: a sparse 300 MB `._` file,
    unchecked, became 300 MB of real bytes when the state folder is on another file system)."""
    found = []
    with contextlib.suppress(OSError), folder(inbox, rel_dir) as source:
        for name in names:
            with contextlib.suppress(OSError):
                result = lstat_at(source, f"._{name}")
                check(f"._{name}", result, None)
                if result.st_size <= MAX_COMPANION_BYTES:
                    found.append((f"._{name}", Identity.of(result)))
    return found


def take(inbox: Path, rel_dir: str, job_dir: Path, planned: list[Planned]) -> None:
    """Move the planned files into the job folder and check what arrived. On any exception some
    files may already be in the job folder: the caller rolls the claim back from its record."""
    _race("claim", inbox / rel_dir)
    try:
        with folder(inbox, rel_dir) as source, folder(job_dir) as target:
            for item in planned:
                try:
                    renamed = move(source, item.name, target, item.target, item.expect)
                except PermissionError as exc:  # the job folder is ours: the inbox refused
                    where = f"the inbox folder {rel_dir}" if rel_dir else "the inbox"
                    raise NotUsable(item.name, reasons.not_movable(where, exc.strerror)) from None
                # A rename moved whatever had the name at that instant: check what arrived.
                arrived = lstat_at(target, item.target)
                check(item.name, arrived, item.expect if renamed else None)
            os.fsync(source)
            os.fsync(target)
    except UnsafePath as exc:
        raise Changed(str(exc)) from None


def copy_in(inbox: Path, rel_dir: str, job_dir: Path, planned: list[Planned]) -> list[list[int]]:
    """Copy the planned files into the job folder and leave them where they are: with archive
    = "keep" an original never leaves the inbox, where a two-way sync tool (Nextcloud) would
    have taken a move for a deletion and deleted it everywhere until the job ended (a sync
    user's trial). Each copy is of the file checked, unchanged from start to end (written over
    with its mtime put back, too: its inode change time moves). Their `safefs.version`s, as
    copied."""
    _race("claim", inbox / rel_dir)
    versions = []
    try:
        with folder(inbox, rel_dir) as source, folder(job_dir) as target:
            for item in planned:
                fd = open_file(source, item.name, item.expect)
                try:
                    before = stat_key(os.fstat(fd))
                    sha256 = copy_open(fd, target, item.target)
                    after = os.fstat(fd)
                    if Identity.of(after) != item.expect or stat_key(after) != before:
                        raise Changed(f"{item.name} changed while it was copied")
                finally:
                    os.close(fd)
                versions.append(version(after, sha256))
            os.fsync(target)
    except UnsafePath as exc:
        raise Changed(str(exc)) from None
    return versions


@dataclass(frozen=True)
class GivenBack:
    """Where originals went: `names` maps each wanted name to the one it got; `rescue` is None
    when they are in the folder asked for, else the rescue folder in state/ (that folder was
    gone or swapped)."""

    names: dict[str, str]
    rescue: Path | None


def give_back(
    inbox: Path,
    rel_dir: str,
    job_dir: Path,
    files: list[tuple[str, str]],
    rescue: Path,
    before: Callable[[dict[str, str]], None] = lambda names: None,
    *,
    pairs: bool = True,
) -> GivenBack:
    """Move (file in the job folder, wanted name) pairs into the inbox folder, under the wanted
    names or free `.returned-N` ones (never over anything), or into `rescue` when the inbox
    folder cannot be reached safely. `before` runs with the chosen names just before the moves
    (to record them first). Where files `pairs` up (the inbox), a name is taken as pairing
    compares them, without case or Unicode form (a re-test: photo.jpg given back beside
    Photo.jpg on a case-keeping share, and neither pair was taken again); elsewhere (the
    archive, which grows for months) by its spelling, without listing the folder."""
    present = [(file, name) for file, name in files if os.path.lexists(job_dir / file)]
    if not present:
        return GivenBack({}, None)
    _race("return", inbox / rel_dir)
    try:
        with folder(inbox, rel_dir) as destination:
            names = _move_all(destination, job_dir, present, before, pairs)
            return GivenBack(names, None)
    except (UnsafePath, FileNotFoundError, NotADirectoryError):
        pass  # the folder is gone, or is a link now: never write through it
    rescue.mkdir(parents=True, exist_ok=True)
    with folder(rescue) as destination:
        moved = _move_all(destination, job_dir, present, lambda names: None, pairs=False)
        return GivenBack(moved, rescue)


def _move_all(
    destination: int,
    job_dir: Path,
    files: list[tuple[str, str]],
    before: Callable[[dict[str, str]], None],
    pairs: bool,
) -> dict[str, str]:
    wanted = [name for _, name in files]
    if pairs:
        keys = {key(name) for name in os.listdir(destination)}
        chosen = free_names(lambda name: key(name) in keys, wanted)
    else:
        chosen = free_names(lambda name: exists_at(destination, name), wanted)
    names = dict(zip(wanted, chosen, strict=True))
    before(names)
    with folder(job_dir) as source:
        for file, name in files:
            move(source, file, destination, names[name], Identity.of(lstat_at(source, file)))
        os.fsync(destination)
        os.fsync(source)
    return names


def free_names(taken: Callable[[str], bool], wanted: list[str]) -> list[str]:
    """Names for files that must keep pairing up (photo, sidecar, `._` companions): the wanted
    ones if all are free, else all renamed `photo.returned-N.jpg`, `photo.returned-N.json`,
    `._photo.returned-N.jpg` with the first N that frees every one (the photo's stem shortened
    alike in all of them when the longest would pass the file system's name limit)."""
    if not wanted:
        return []
    return next(names for names in numbered(wanted) if not any(taken(name) for name in names))


def numbered(wanted: list[str]) -> Iterator[list[str]]:
    """The wanted names, then their `.returned-2`, `.returned-3`, ... renamings, for ever."""
    stem = wanted[0].rpartition(".")[0] or wanted[0]
    yield wanted
    for number in itertools.count(2):
        yield _renamed(wanted, stem, number)


def _renamed(wanted: list[str], stem: str, number: int) -> list[str]:
    """photo.jpg -> photo.returned-2.jpg, photo.json -> photo.returned-2.json, photo.jpg.json ->
    photo.returned-2.jpg.json, ._photo.jpg -> ._photo.returned-2.jpg; `PHOTO.json` (paired
    without case) -> photo.returned-2.json. A name not led by the stem keeps a tail of at most
    half the name limit, so the stem always keeps room (an attacker's trial: a 240-character
    pair's sidecar in capitals made a 257-byte name, and the originals stuck in the spool)."""
    parts = []
    stem = unicodedata.normalize("NFC", stem)  # a sidecar may spell the stem decomposed
    for name in wanted:
        prefix = "._" if name.startswith("._") else ""
        bare = unicodedata.normalize("NFC", name[len(prefix) :])
        if (after := _after_stem(bare, stem)) is not None:
            rest = after
        else:
            head, dot, ext = bare.rpartition(".")
            rest = "-" + (fit_name(head, dot + ext, NAME_MAX // 2) if dot else bare[:64])
        parts.append((prefix, f".returned-{number}{rest}"))
    kept = fit_stem(stem, (prefix + tail for prefix, tail in parts))
    return [prefix + kept + tail for prefix, tail in parts]


def _after_stem(name: str, stem: str) -> str | None:
    """What follows `stem` in `name` compared as pairing does (`partners.key`), or None when
    `name` does not begin with it; by trying each length, as lower case may have another
    (a re-test: `İstanbul.jpg`'s sidecar `i̇stanbul.json` is a character longer there)."""
    wanted = key(stem)
    return next((name[end:] for end in range(len(name) + 1) if key(name[:end]) == wanted), None)


def _keep_only_the_checked(
    source: int, name: str, target: int, moved: str, expect: Identity
) -> None:
    """A rename moves whatever has the name at that instant: anything but the file checked
    (swapped in between, such as a link to /etc/passwd, as an attacker's trial planted in the
    archive) goes back where it came from."""
    try:
        check(moved, lstat_at(target, moved), expect)
    except (Changed, NotUsable):
        rename_noreplace(target, moved, source, name)


def follow(inbox: Path, rel_dir: str, renamed: dict[str, str], to: Path) -> None:
    """`._` files of the photo and its sidecar that were written after the claim follow them
    to `to` (the archive folder), beside their new names; any that cannot stay where they are.
    One whose file a newer version has taken meanwhile stays with it."""
    found = companions(inbox, rel_dir, list(renamed))
    if not found:
        return
    _race("follow", inbox / rel_dir)
    with contextlib.suppress(OSError), folder(inbox, rel_dir) as source, folder(to) as target:
        for name, identity in found:
            if exists_at(source, name[2:]):
                continue  # a newer file holds the name: the companion is the newer one's
            new = renamed.get(name[2:]) or name[2:]
            [free] = free_names(lambda candidate: exists_at(target, candidate), [f"._{new}"])
            with contextlib.suppress(OSError, Changed):
                if move(source, name, target, free, identity):
                    _keep_only_the_checked(source, name, target, free, identity)
