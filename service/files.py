"""Opening a file a person named (on the command line, in a config): a regular file only.

Opened for reading, a FIFO waits for a writer forever and a device may never end, so a command
given one hung where it should say what is wrong. The file is opened without waiting, and
anything but a regular file is refused with what it is.
"""

import errno
import os
import stat
from pathlib import Path
from typing import BinaryIO

_KINDS = {
    stat.S_IFIFO: "named pipe (FIFO)",
    stat.S_IFSOCK: "socket",
    stat.S_IFCHR: "character device",
    stat.S_IFBLK: "block device",
}


class NotAFile(OSError):
    """`path` is something other than a regular file or a folder; `kind` says what."""

    def __init__(self, path: Path, kind: str) -> None:
        super().__init__(errno.EINVAL, f"a {kind}, not a file", str(path))
        self.kind = kind


def check_regular(path: Path) -> None:
    """Raise as `open_regular` does, without opening `path` (opening a device may do something
    by itself: a tape rewinds)."""
    _check(path, os.stat(path).st_mode)


def open_regular(path: Path) -> BinaryIO:
    """`path` open for reading; IsADirectoryError for a folder, NotAFile for anything else
    that is not a regular file, any other OSError as stat(2) or open(2) gives it."""
    check_regular(path)
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    try:
        _check(path, os.fstat(fd).st_mode)  # what was opened, if it changed since
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def _check(path: Path, mode: int) -> None:
    if stat.S_ISDIR(mode):
        raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), str(path))
    if not stat.S_ISREG(mode):
        raise NotAFile(path, _KINDS.get(stat.S_IFMT(mode), "special file"))
