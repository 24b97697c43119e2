"""Inbox files answered where they lie: reported or rejected files, photos kept beside their
sidecar (archive = "keep"), brought-along styles left in the inbox, and originals given back.
Each is remembered in the database as answered, with its size and mtime (or, where it was read
or copied, its whole `safefs.version`), so it is neither taken nor reported again, also across
restarts, until it changes."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import structlog

from daemon import safefs
from daemon.jobs.states import ENDS_WITH_REPORT
from daemon.jobs.store import Store

log = structlog.get_logger(__name__)

_SAME_FILE = 3  # [size, mtime_ns, inode]: another file, or this one written over, if they differ
_STAT_KEY = 4  # the whole `safefs.stat_key`, with the inode change time


class AnsweredInPlace:
    """The database's record of inbox files answered without being moved (`Store.seen`)."""

    def __init__(self, inbox: Path, store: Store) -> None:
        self.inbox = inbox
        self.store = store

    def relative(self, path: Path) -> str:
        return path.relative_to(self.inbox).as_posix()

    def _signature(self, path: Path, length: int = 2) -> list[int] | None:
        """An inbox file's size and mtime (and, up to `length`, the rest of its
        `safefs.stat_key`), looked at without following any link."""
        try:
            relative = path.relative_to(self.inbox)
            result = safefs.lstat_under(self.inbox, relative)
        except (OSError, ValueError):
            return None
        return safefs.stat_key(result)[:length]

    def _still(self, key: str, recorded: list[list[int] | None], paths: list[Path | None]) -> bool:
        """Whether the files at `paths` are those of `key`'s record (`recorded`, one entry for
        each, in order; a missing one for a missing one). A record brought up to date (an inode
        change time moved alone) is written back: a file is read again once after a chmod,
        not at each start (an operator's trial: a kept photo without its sidecar was read at
        every start)."""
        current: list[list[int] | None] = []
        for was, path in zip(recorded[: len(paths)], paths, strict=True):
            now = self._current(was, path)
            if now is None and not (was is None and path is None):
                return False
            current.append(now)
        current += recorded[len(paths) :]
        if current != recorded and (answer := self.store.seen_by(key)) is not None:
            self.store.remember(key, current, answer[0])
        return True

    def _current(self, recorded: list[int] | None, path: Path | None) -> list[int] | None:
        """`recorded`, brought up to date, while the file at `path` is the one it records, else
        None. [size, mtime_ns] (and the inode, in records of earlier versions) compare as
        they are; a record of a file as it was read (`safefs.version`) by inode and inode
        change time too, and where that time alone moved, by the file's content."""
        if recorded is None or path is None:
            return None
        length = min(len(recorded), _STAT_KEY)
        now = self._signature(path, length)
        if now is None or now[:_SAME_FILE] != recorded[:_SAME_FILE]:
            return None
        if now == recorded[:length]:
            return recorded
        if len(recorded) <= _STAT_KEY:
            return None
        return self._read_again(path, recorded)  # a chmod, a link made: the same photo?

    def _read_again(self, path: Path, recorded: list[int]) -> list[int] | None:
        """`recorded` with the inode change time the file at `path` has now, if it is still
        that file with that content, read through (a second name made for it is no new
        request, an attacker's trial: it was refused for its links beside its own result)."""
        relative = path.relative_to(self.inbox)
        try:
            with safefs.folder(self.inbox, relative.parent) as folder:
                fd = safefs.open_file(folder, relative.name, linked=True)
            try:
                before = safefs.stat_key(os.fstat(fd))
                content = safefs.content_key(fd, recorded[0])
                after = safefs.stat_key(os.fstat(fd))
            finally:
                os.close(fd)
        except (OSError, safefs.Changed):
            return None
        same = before == after and after[:_SAME_FILE] == recorded[:_SAME_FILE]
        return [*after, content] if same and content == recorded[-1] else None

    def remember(self, paths: list[Path | None], job_id: str) -> None:
        """Inbox files that were answered (rejected, reported) without being moved: not to be
        taken or reported again until one of them changes, also across restarts."""
        first = paths[0]
        if first is not None:
            signatures = [None if p is None else self._signature(p) for p in paths]
            self.store.remember(self.relative(first), signatures, job_id)

    def remember_read(self, path: Path, versions: list[list[int] | None], job_id: str) -> None:
        """`path` and its partners (a photo and its sidecar, or None), answered as they were
        read or copied (their `safefs.version`s), not as they may be by now: one changed since
        is a new file, not answered. The inode and its change time tell apart another file of
        the same size put in its place with its mtime (attackers' trials: a photo swapped in
        so, or written over in place and given back its mtime, got no answer at all; sync
        tools keep mtimes, and small photos of one size are common)."""
        self.store.remember(self.relative(path), versions, job_id)

    def remember_style(self, path: Path, job_id: str) -> None:
        """A brought-along style left in the inbox, not to be answered as a lone photo after a
        restart. A record the file already has as it is now (a photo answered in place with
        its sidecar) stays: replaced by this one, that photo was taken again after a restart
        (an attacker's trial, archive = "keep")."""
        if not self.answered_as_is(path):
            self.remember([path], job_id)

    def already_handled(self, paths: list[Path | None]) -> bool:
        """True when exactly these files (photo and sidecar, or one reported file) were put
        back or answered by us and have not changed since."""
        first = paths[0]
        if first is None:
            return False
        relative = self.relative(first)
        recorded = self.store.seen(relative)
        return (
            recorded is not None
            and len(recorded) == len(paths)
            and self._still(relative, recorded, paths)
        )

    def answered_as_is(self, path: Path) -> bool:
        """Whether the inbox file `path`, as it is now, was answered in place (reported, or a
        photo answered and kept beside its sidecar), whatever became of its partners since: a
        kept photo whose sidecar or style image then went is no new problem (a sync user's
        trial: a second, false report after pair_timeout)."""
        relative = self.relative(path)
        recorded = self.store.seen(relative)
        return (
            recorded is not None and len(recorded) > 0 and self._still(relative, recorded, [path])
        )

    def reported_with_sidecar(self, path: Path) -> bool:
        """Whether the inbox file `path`, as it is now, was answered in place with a report
        about it and a sidecar (refused, or failed and given back): a report that says
        nothing of the photo alone, once that sidecar has gone."""
        relative = self.relative(path)
        recorded = self.store.seen(relative)
        return (
            recorded is not None
            and len(recorded) == 2
            and recorded[1] is not None
            and self._still(relative, recorded, [path])
            and (answer := self.store.seen_by(relative)) is not None
            and answer[1] in ENDS_WITH_REPORT
        )

    def answered_alone(self, path: Path) -> bool:
        """Whether the inbox file `path`, a photo with no sidecar now, was answered as it is:
        a photo kept beside the sidecar it was rendered with was (its sidecar going is no new
        request), one refused with its sidecar was not (a new user's trial: a bad sidecar
        deleted left its photo silent for ever, under a report about that file)."""
        return self.answered_as_is(path) and not self.reported_with_sidecar(path)

    def told_as_is(self, path: Path, reason: str) -> bool:
        """Whether the inbox file `path`, as it is now, was answered in place with `reason`."""
        return self.answered_as_is(path) and self.store.seen_reason(self.relative(path)) == reason

    def brought_along(self, path: Path) -> bool:
        """Whether the inbox file `path`, as it is now, is a style image another photo's job
        brought along (`remember_style`): never a photo of its own, whatever the settings."""
        return self.store.seen_for_another(self.relative(path)) and self.answered_as_is(path)

    def answered_with(self, photo: Path, sidecar: str) -> bool:
        """Whether the inbox file `sidecar`, beside the (gone) `photo`, is unchanged since the
        photo was answered with it in place (archive = "keep")."""
        recorded = self.store.seen(self.relative(photo))
        if recorded is None or len(recorded) != 2 or recorded[1] is None:
            return False
        return self._current(recorded[1], photo.parent / sidecar) is not None

    def forget_vanished(self, gone_by: Callable[[str], None] = lambda path: None) -> None:
        """Drop records of answered inbox files that are gone (deleted, replaced, moved), unless
        every one is gone: the inbox is then perhaps a share not mounted yet, or not synced back
        yet (an operator's trial lost every record of a kept inbox at a start on its empty mount
        point, and thousands of answered photos were taken again once the share came back; a
        marker file or Syncthing's .stfolder may be there before the photos). Those records
        stay until a start finds one of them. A record of a file really gone is harmless: a
        new file there differs and is taken. Only an empty inbox is worth a warning: a user
        who had deleted a rejected photo was warned at every start of a share not mounted.
        `gone_by` is told of each file gone (relative to the inbox) before its record goes."""
        remembered = self.store.seen_paths()
        gone = [path for path in remembered if self._signature(self.inbox / path) is None]
        if gone and len(gone) == len(remembered):
            empty = self._empty()
            (log.warning if empty else log.info)(
                "spool.records_kept",
                reason=f"none of the {len(gone)} files answered in place is in the inbox"
                + (", which is empty" if empty else ""),
                hint="if they were deleted, nothing is wrong; if the inbox is a share, check "
                "that it is mounted and synced: they are kept so that its answered photos are "
                "not taken again, until a start finds one of them",
            )
        elif gone:
            for path in gone:
                gone_by(path)
            self.store.forget_seen(gone)

    def _empty(self) -> bool:
        try:
            with os.scandir(self.inbox) as entries:
                return next(entries, None) is None
        except OSError:
            return True  # unreadable: no sign that the share is there
