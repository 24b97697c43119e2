"""File operations inside folders that other people write to (the inbox), where any name may
become a symbolic link, a FIFO, a folder or a hard link to a file elsewhere at any moment.

No path below such a folder is trusted twice. Folders are opened one name at a time from the
trusted root with O_NOFOLLOW | O_DIRECTORY, and every operation on a file is made relative to
an open folder descriptor: stat without following, open with O_NOFOLLOW, rename between two
descriptors without replacing anything. What a caller checked about a file (its `Identity`) is
checked again on the entry actually opened or moved (`Changed` when it differs). Only the root
itself is taken as configured: the administrator chose it, and the people writing inside it
cannot replace it.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import hashlib
import os
import secrets
import stat
from collections.abc import Iterator
from pathlib import Path, PurePath
from typing import NamedTuple

FOLDER_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# O_NONBLOCK: opening a FIFO for reading must not wait for a writer.
FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_CHUNK = 1 << 20
_RENAME_NOREPLACE = 1
_TEMPORARY = ".stylefold-{}.tmp"  # the inbox ignores `.stylefold-*` names


class UnsafePath(OSError):
    """A folder on the way is a symbolic link, is not a folder, or is gone: the path cannot be
    used now (it may be usable again once whoever swapped it puts a real folder back)."""


class Changed(Exception):
    """A file is not the one that was checked (replaced, swapped for a link, or rewritten) since
    it settled: it must settle again before anyone takes it."""


class Identity(NamedTuple):
    """What must stay the same between settling and claiming a file."""

    dev: int
    ino: int
    size: int
    mtime_ns: int

    @classmethod
    def of(cls, result: os.stat_result) -> Identity:
        return cls(result.st_dev, result.st_ino, result.st_size, result.st_mtime_ns)


def stat_key(result: os.stat_result) -> list[int]:
    """[size, mtime_ns, inode, ctime_ns]: the inode change time moves with every write, also
    one that puts the mtime back."""
    return [result.st_size, result.st_mtime_ns, result.st_ino, result.st_ctime_ns]


def version(result: os.stat_result, sha256: str) -> list[int]:
    """What a file answered where it lies was when it was read (`stat_key`, then the first 60
    bits of its SHA-256): tells it from one put in its place or written over since, its mtime
    put back (an attacker's trial: such a photo, kept in the inbox, was never answered), and
    from itself with only its inode change time moved (a chmod, a link made and removed: not
    a new request, a re-test's finding)."""
    return [*stat_key(result), int(sha256[:15], 16)]


def content_key(fd: int, size: int) -> int:
    """`version`'s last item for the open file `fd`, read from its start (`digest_open`)."""
    os.lseek(fd, 0, os.SEEK_SET)
    return int(digest_open(fd, size)[:15], 16)


def open_folder(
    root: os.PathLike[str] | str, relative: PurePath | str = "", make: bool = False
) -> int:
    """A descriptor of `root/relative`, opened name by name without following any symbolic
    link below `root`; with `make`, a missing folder on the way is made (a link in its place
    still raises UnsafePath). The caller closes it (or uses `folder`)."""
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    here = Path(root)
    try:
        for part in PurePath(relative).parts:
            if part in ("..", "/"):
                raise UnsafePath(errno.EINVAL, f"{relative}: not a path inside the folder")
            here /= part
            try:
                if make:
                    with contextlib.suppress(FileExistsError):
                        os.mkdir(part, dir_fd=fd)
                inner = os.open(part, FOLDER_FLAGS, dir_fd=fd)
            except OSError as exc:
                if exc.errno in (errno.ELOOP, errno.ENOTDIR, errno.ENOENT):
                    raise UnsafePath(
                        exc.errno, f"{PurePath(relative).as_posix()}: {part} is not a folder now"
                    ) from None
                # named whole, not by the one part (an operator's trial on a read-only outbox
                # was told of "outbox/ro/ro": the part put under the folder it was made in)
                exc.filename = str(here)
                raise
            os.close(fd)
            fd = inner
    except BaseException:
        os.close(fd)
        raise
    return fd


@contextlib.contextmanager
def folder(
    root: os.PathLike[str] | str, relative: PurePath | str = "", make: bool = False
) -> Iterator[int]:
    fd = open_folder(root, relative, make)
    try:
        yield fd
    finally:
        os.close(fd)


def lstat_at(dir_fd: int, name: str) -> os.stat_result:
    """The entry `name` itself (a link is not followed)."""
    return os.stat(name, dir_fd=dir_fd, follow_symlinks=False)


def lstat_under(root: os.PathLike[str] | str, relative: PurePath) -> os.stat_result:
    """The entry at `root/relative` without following a link anywhere below `root`: a file
    reached through a symlinked folder raises UnsafePath, as if it were not there."""
    with folder(root, relative.parent) as fd:
        return lstat_at(fd, relative.name)


def exists_at(dir_fd: int, name: str) -> bool:
    try:
        lstat_at(dir_fd, name)
    except FileNotFoundError:
        return False
    return True


def unusable(result: os.stat_result) -> str | None:
    """Why an entry cannot be taken as a user's file (None when it can): only regular files with
    a single name are taken; another name may lie outside the inbox."""
    mode = result.st_mode
    if stat.S_ISLNK(mode):
        return "is a symbolic link; copy the file itself into the inbox instead of linking to it"
    if stat.S_ISDIR(mode):
        return "is a folder, not a file; rename the folder (or put the file inside it)"
    if not stat.S_ISREG(mode):
        return (
            "is a special file (FIFO, socket or device), not a regular file; remove it and copy "
            "the file itself into the inbox"
        )
    if result.st_nlink != 1:
        return (
            f"has {result.st_nlink} hard links (another name for the same file exists, maybe "
            "outside the inbox); copy the file into the inbox instead of linking it, or remove "
            "its other names: it is then taken by itself within rescan_interval"
        )
    return None


class NotUsable(OSError):
    """An entry that is not a regular file with one link; `reason` says what to do."""

    def __init__(self, name: str, reason: str) -> None:
        super().__init__(errno.EPERM, f"{name} {reason}")
        self.reason = reason

    def __str__(self) -> str:
        return str(self.strerror)


def check(name: str, result: os.stat_result, expect: Identity | None, linked: bool = False) -> None:
    """Changed when the entry is not the file `expect` describes (checked first: a file
    swapped since it settled must settle again); NotUsable when it cannot be taken at all
    (`linked`: a regular file with other names can be read, never taken)."""
    if expect is not None and Identity.of(result) != expect:
        raise Changed(f"{name} changed since it settled")
    reason = unusable(result)
    if reason is not None and not (linked and stat.S_ISREG(result.st_mode)):
        raise NotUsable(name, reason)


def open_file(
    dir_fd: int, name: str, expect: Identity | None = None, *, linked: bool = False
) -> int:
    """Open `name` for reading without following a link; raises NotUsable for anything but a
    regular file with one link (or, `linked`, with several), Changed if it is not the file
    `expect` describes."""
    seen = lstat_at(dir_fd, name)  # first: opening a device may do something by itself
    check(name, seen, expect, linked)
    fd = os.open(name, FILE_FLAGS, dir_fd=dir_fd)
    try:
        result = os.fstat(fd)
        if (result.st_dev, result.st_ino) != (seen.st_dev, seen.st_ino):
            raise Changed(f"{name} was replaced while it was being opened")
        check(name, result, expect, linked)
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


_libc: ctypes.CDLL | None = None


def _renameat2(src_fd: int, src: str, dst_fd: int, dst: str) -> None:
    """rename(2) that fails with EEXIST instead of replacing `dst` (Linux renameat2)."""
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    function = getattr(_libc, "renameat2", None)
    if function is None:
        raise OSError(errno.ENOSYS, "renameat2 is not available")
    result = function(src_fd, os.fsencode(src), dst_fd, os.fsencode(dst), _RENAME_NOREPLACE)
    if result != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code), dst)


def rename_noreplace(src_fd: int, src: str, dst_fd: int, dst: str) -> None:
    """Rename between two folders, never over an existing entry (FileExistsError). Where the
    file system cannot refuse atomically (some network shares), the check comes just before."""
    try:
        _renameat2(src_fd, src, dst_fd, dst)
        return
    except OSError as exc:
        if exc.errno == errno.EEXIST:
            raise FileExistsError(errno.EEXIST, "already exists", dst) from None
        if exc.errno not in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP):
            raise
    if exists_at(dst_fd, dst):
        raise FileExistsError(errno.EEXIST, "already exists", dst)
    os.rename(src, dst, src_dir_fd=src_fd, dst_dir_fd=dst_fd)


def copy_open(source: int, dst_fd: int, dst: str) -> str:
    """Copy an open file into a new file `dst` (a temporary name, then a no-replace rename),
    fsynced, with the source's mtime; returns the SHA-256 of the bytes copied. Exactly the
    size it had when the copy began: Changed if it grows or shrinks meanwhile (an attacker's
    trial: a style image extended during the copy filled the state folder with 2 GB). Runs of
    zeros stay holes: a sparse file of a few real bytes (`truncate -s 200M`, which costs its
    writer nothing) does not become 200 MB of real bytes in the state folder (an attacker's
    trial: 800 MB from four such style images)."""
    temporary = _TEMPORARY.format(secrets.token_hex(8))
    digest = hashlib.sha256()
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    out = os.open(temporary, flags, 0o644, dir_fd=dst_fd)
    try:
        os.lseek(source, 0, os.SEEK_SET)
        size = os.fstat(source).st_size
        for chunk in exact_chunks(source, size):
            digest.update(chunk)
            if chunk.count(0) == len(chunk):
                os.lseek(out, len(chunk), os.SEEK_CUR)  # a hole: a sparse file stays sparse
            else:
                view = memoryview(chunk)
                while view:
                    view = view[os.write(out, view) :]
        os.ftruncate(out, size)  # the size, also where the file ends in a hole
        os.fsync(out)
        result = os.fstat(source)
        os.utime(out, ns=(result.st_atime_ns, result.st_mtime_ns))
        os.close(out)
        out = -1
        rename_noreplace(dst_fd, temporary, dst_fd, dst)
    except BaseException:
        if out >= 0:
            os.close(out)
        with contextlib.suppress(OSError):
            os.unlink(temporary, dir_fd=dst_fd)
        raise
    return digest.hexdigest()


def exact_chunks(fd: int, size: int) -> Iterator[bytes]:
    """The `size` bytes of an open file from where it stands; Changed when it ends before them
    or goes on after them."""
    left = size
    while left > 0:
        chunk = os.read(fd, min(_CHUNK, left))
        if not chunk:
            raise Changed(f"the file shrank below {size:,} bytes while it was read")
        left -= len(chunk)
        yield chunk
    if os.read(fd, 1):
        raise Changed(f"the file grew past {size:,} bytes while it was read")


def digest_unchanged(path: Path, expect: Identity) -> str:
    """The SHA-256 of `path`, which must still have the size and mtime of `expect` (a file
    moved across file systems keeps both, not its inode): Changed otherwise, having read no
    more than that size. A writer holding the file open can go on changing it after a claim
    moved it (an attacker's trial: extended to 3 GiB just after the move, it was hashed,
    rendered and archived at that size)."""
    fd = os.open(path, FILE_FLAGS)
    try:
        digest = digest_open(fd, expect.size)
        result = os.fstat(fd)
    finally:
        os.close(fd)
    if (result.st_size, result.st_mtime_ns) != (expect.size, expect.mtime_ns):
        raise Changed(f"{path.name} changed after it was claimed")
    return digest


def digest_open(fd: int, size: int) -> str:
    """The SHA-256 of the open file `fd` from where it stands, which must hold exactly `size`
    bytes (Changed otherwise, having read no more): a writer appending to it cannot keep the
    reader busy."""
    digest = hashlib.sha256()
    for chunk in exact_chunks(fd, size):
        digest.update(chunk)
    return digest.hexdigest()


def _digest_at(dir_fd: int, name: str) -> str:
    digest = hashlib.sha256()
    fd = os.open(name, FILE_FLAGS, dir_fd=dir_fd)
    try:
        while chunk := os.read(fd, _CHUNK):
            digest.update(chunk)
    finally:
        os.close(fd)
    return digest.hexdigest()


def move(src_fd: int, src: str, dst_fd: int, dst: str, expect: Identity | None = None) -> bool:
    """Move the regular file `src` to `dst` (never over anything), so that there are never zero
    copies: a rename where possible; across file systems a verified copy first, and the source
    is unlinked only while it is still the very file that was copied. With `expect`, the file
    copied must be that file (Changed otherwise). Returns True for a rename, whose result is
    for the caller to check: what moved is whatever had the name at that instant."""
    try:
        rename_noreplace(src_fd, src, dst_fd, dst)
        return True
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
    source = open_file(src_fd, src, expect)
    try:
        before = os.fstat(source)
        copied = copy_open(source, dst_fd, dst)
        after = os.fstat(source)
        current = lstat_at(src_fd, src)
        same = Identity.of(before) == Identity.of(after)
        if not same or (current.st_dev, current.st_ino) != (before.st_dev, before.st_ino):
            os.unlink(dst, dir_fd=dst_fd)
            raise Changed(f"{src} changed while it was copied")
        if _digest_at(dst_fd, dst) != copied:
            os.unlink(dst, dir_fd=dst_fd)
            raise OSError(errno.EIO, f"the copy of {src} does not match it; nothing was moved")
        os.unlink(src, dir_fd=src_fd)
    finally:
        os.close(source)
    return False
