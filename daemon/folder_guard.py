"""Noticing that the inbox or outbox became a read-only stand-in, which only a restart mends.

systemd's `ReadWritePaths=`/`BindPaths=` give the sandbox a writable bind mount of each shared
folder, on a file system that is read-only everywhere else (`ProtectSystem=strict`). When a
sync tool deletes and re-creates such a folder, the kernel detaches the bind mount, and the new
folder shows through the read-only rest: it exists, it can be read, and every write fails with
EROFS. The watcher would wait for the old mount forever and every answer would block. Only a
new sandbox (a restart of the unit) mounts the new folder, so the daemon exits with
`ExitCode.TEMPFAIL` and `Restart=on-failure` does the rest.

Neither is a folder that is missing (an unmounted share pauses the watcher and blocks answers
until it is back) nor the same folder remounted read-only (answers wait until it is writable
again, tests/test_reliability_disk.py). Only a different folder on a read-only mount, where a
writable one was at start, is. "Different" is another mount holding the path (the bind mount is
gone, /proc/self/mountinfo) or another st_dev/st_ino; the inode number alone cannot tell, as a
re-created folder often gets the freed one back.

The state database is watched apart: when the file at its path is gone or another file (the
state folder deleted or moved while the daemon runs), every record the daemon writes goes to
a file no one will read again, and a second daemon would no longer be locked out. That is a
restart too, on a new database.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import structlog

from daemon.intake.watcher import mount_of, read_mounts

log = structlog.get_logger("stylefold.daemon")

CHECK_EVERY = 5.0  # seconds between looks: two stat() and two statvfs() calls
FIX = (
    "the folder was deleted and re-created while the daemon ran; in "
    "the systemd sandbox the bind mount of ReadWritePaths=/BindPaths= still holds the old "
    "folder. Exiting with code 75 so systemd restarts the unit and mounts the new folder "
    "(Restart=on-failure); outside systemd, start the daemon again. To avoid it, configure the "
    "sync tool to keep the folder rather than re-create it"
)

STATE_FIX = (
    "the state folder or its database was deleted or moved while the daemon ran, so what the "
    "daemon records would be lost and its lock no longer keeps a second daemon out. Exiting "
    "with code 75 so systemd starts it again with a new database (Restart=on-failure); "
    "outside systemd, start it again. Photos of unfinished jobs were in its spool folder: if "
    "it was moved, put them back in the inbox. Stop the daemon before moving its state"
)


@dataclass(frozen=True)
class _Look:
    identity: tuple[int, int]  # (st_dev, st_ino)
    mount: str | None  # the mount point holding it (None: mountinfo unreadable)
    readonly: bool  # its mount is read-only (ST_RDONLY)

    def other_than(self, first: _Look) -> bool:
        return self.identity != first.identity or self.mount != first.mount


def _look(path: Path) -> _Look | None:
    try:
        info, fs = os.stat(path), os.statvfs(path)
    except OSError:
        return None
    mount = mount_of(path, read_mounts())
    return _Look(
        (info.st_dev, info.st_ino),
        mount.mount_point if mount else None,
        bool(fs.f_flag & os.ST_RDONLY),
    )


class FolderGuard:
    """`tripped(now)` from the main loop: True (once logged) when a folder that was writable is
    now a different folder on a read-only mount."""

    def __init__(self, folders: Mapping[str, Path], check_every: float = CHECK_EVERY) -> None:
        self.folders = dict(folders)
        self.check_every = check_every
        self.reason: str | None = None
        self._first = {name: _look(path) for name, path in self.folders.items()}
        self._database: tuple[Path, tuple[int, int]] | None = None  # (path, (st_dev, st_ino))
        self._next = 0.0

    def watch_database(self, path: Path) -> None:
        """From when the daemon has opened its state database at `path` (one already gone
        again is not watched: the first write fails loudly)."""
        with contextlib.suppress(OSError):
            info = os.stat(path)
            self._database = (path, (info.st_dev, info.st_ino))

    def tripped(self, now: float) -> bool:
        if self.reason is not None or now < self._next:
            return self.reason is not None
        self._next = now + self.check_every
        return self._database_replaced() or self._folder_replaced()

    def _database_replaced(self) -> bool:
        if self._database is None:
            return False
        path, first = self._database
        try:
            info = os.stat(path)
            if (info.st_dev, info.st_ino) == first:
                return False
        except (FileNotFoundError, NotADirectoryError):
            pass  # gone
        except OSError:
            return False  # unreadable for now (a state folder on a network share): no verdict
        self.reason = f"the state database {path} was deleted or moved"
        log.error("daemon.state_replaced", path=str(path), reason=self.reason, fix=STATE_FIX)
        return True

    def _folder_replaced(self) -> bool:
        for name, path in self.folders.items():
            seen, first = _look(path), self._first[name]
            if seen is None:
                continue  # absent (unmounted): paused or blocked until it is back
            if first is None:
                self._first[name] = seen  # it appeared after the start: compare with that
            elif seen.readonly and not first.readonly and seen.other_than(first):
                self.reason = f"the {name} {path} is now a different folder on a read-only mount"
                log.error(
                    "daemon.folder_replaced",
                    folder=name,
                    path=str(path),
                    reason=self.reason,
                    mount_before=first.mount,
                    mount_now=seen.mount,
                    identity_before=list(first.identity),
                    identity_now=list(seen.identity),
                    fix=FIX,
                )
                return True
        return False
