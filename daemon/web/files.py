"""Opening files the page shows without ever following the request, or a link, out of a folder.

The outbox, inbox and archive are shared with sync peers: any of them can replace `photo.log`
with a symlink to a secret, or a folder with a link elsewhere. So a file is opened one path
component at a time below its root (`fsutil.open_below`: `O_NOFOLLOW` at every step), and only a
regular file is returned; a race between a check and the open cannot exist because there is no
separate check.
"""

from __future__ import annotations

import contextlib
import functools
import os
from pathlib import Path, PurePosixPath
from typing import BinaryIO

import structlog

from daemon.fsutil import open_below

log = structlog.get_logger("stylefold.web")


def open_inside(
    root: Path, relative: str | PurePosixPath, one_name: bool = False
) -> BinaryIO | None:
    """The regular file at `root/relative`, opened for reading, or None when it is missing,
    not a regular file, or reached through a symlink below `root` (the root itself, a folder
    from the configuration, may be a link). `one_name`: also None when the file has other
    names (hard links), which is how a writer of the outbox would put a file from elsewhere
    under a job's name (an attacker's trial served a root-only file as a job's log)."""
    path = PurePosixPath(relative)
    if not path.parts or any(part in ("", ".", "..", "/") for part in path.parts):
        return None
    try:
        handle = open_below(root, path)
    except OSError:
        return None
    if one_name and os.fstat(handle.fileno()).st_nlink != 1:
        handle.close()
        _said_hard_link(root / path)
        return None
    return handle


@functools.lru_cache(maxsize=1024)
def _said_hard_link(path: Path) -> None:
    """Once a file, so that a page emptied by an outbox of hard-link snapshots says why."""
    log.warning(
        "web.hard_link_not_served",
        path=str(path),
        why="it has other names (hard links): a writer of the outbox could slip a file in so",
    )


def relative_to(path: Path, root: Path) -> PurePosixPath | None:
    """`path` below `root`, compared as written (no file system access), or None."""
    with contextlib.suppress(ValueError):
        return PurePosixPath(path.relative_to(root).as_posix())
    return None


def read_inside(
    root: Path, relative: str | PurePosixPath, limit: int, one_name: bool = False
) -> bytes | None:
    """The first `limit` bytes of a file opened with `open_inside`."""
    handle = open_inside(root, relative, one_name)
    if handle is None:
        return None
    with handle:
        return handle.read(limit)
