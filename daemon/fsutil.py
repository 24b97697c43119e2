"""File-system helpers for folders that sync tools watch and for the state folder: whole files
only (temporary name, fsync, rename, fsync of the folder), moves that never leave zero copies,
and names that fit the file system's limit.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import pwd
import secrets
import stat
from collections.abc import Iterable, Iterator
from contextvars import ContextVar
from pathlib import Path, PurePath
from typing import Any, BinaryIO, TypeVar

from pydantic import BaseModel

from daemon import safefs

TMP_PREFIX = ".stylefold-"
TMP_SUFFIX = ".tmp"
NAME_MAX = 255  # bytes per path component on every file system the daemon targets
_COPY_CHUNK = 1 << 20
# Our JSON files (manifests, reports, progress, marks) are a few KB; a bigger one is not ours.
JSON_BYTES = 16 << 20


def is_temporary(name: str) -> bool:
    """Our own in-flight files, which the intake side and sweeps must never take for results."""
    return name.startswith(TMP_PREFIX) and name.endswith(TMP_SUFFIX)


def _write_chunks(
    path: Path,
    chunks: Iterable[bytes],
    durable: bool = True,
    stat_of: os.stat_result | None = None,
    under: Path | None = None,
) -> None:
    """Write `chunks` under a temporary name beside `path`, then rename over `path`. Without
    `durable` (progress and status files, rewritten every second and worthless after a crash)
    the fsyncs are skipped: readers still never see half a file. With `stat_of`, a file's
    times and mode are given to it where the file system takes them: FAT and exFAT refuse a
    chmod, and a copy whose data was in place blocked its job for good (a user's trial with
    the outbox on a USB stick). With `under` (the outbox, which a two-way sync lets other
    people write to), the folders from there to `path` are made and opened without following
    a link (`safefs.UnsafePath` where one is a link): an attacker's trial linked an outbox
    folder to one of the server's, and the daemon wrote its answers there. The rename replaces
    a link at `path` itself, never what it points to."""
    if under is None:
        under = path.parent
        under.mkdir(parents=True, exist_ok=True)
    tmp = f"{TMP_PREFIX}{secrets.token_hex(8)}{TMP_SUFFIX}"
    with _named(path.parent), _open_folder(path.parent, under, make=True) as folder:
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        try:
            with os.fdopen(os.open(tmp, flags, 0o666, dir_fd=folder), "wb") as handle:
                for chunk in chunks:
                    handle.write(chunk)
                handle.flush()
                if stat_of is not None:
                    _copy_stat(stat_of, handle.fileno())
                if durable:
                    os.fsync(handle.fileno())
            os.replace(tmp, path.name, src_dir_fd=folder, dst_dir_fd=folder)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp, dir_fd=folder)
            raise
        if durable:
            os.fsync(folder)


# The folder `one_folder` holds open: (its path, its descriptor); None outside one.
_held: ContextVar[tuple[Path, int] | None] = ContextVar("held_folder", default=None)


def _open_folder(folder: Path, under: Path, make: bool) -> contextlib.AbstractContextManager[int]:
    """A descriptor of `folder`: the one `one_folder` holds, else opened from `under` without
    following a link."""
    held = _held.get()
    if held is not None and held[0] == folder:
        return contextlib.nullcontext(held[1])
    return safefs.folder(under, folder.relative_to(under), make)


@contextlib.contextmanager
def one_folder(folder: Path, under: Path) -> Iterator[None]:
    """Within, the atomic writes into `folder` (reached from `under` as `_write_chunks` does)
    go to the folder opened here, once: files written together land together though another
    writer swaps the folder's path for a link between them (an attacker's trial: an answer's
    image landed, its log and manifest were refused, and for the 30 s until the next try the
    outbox held a result without its manifest)."""
    with _named(folder), safefs.folder(under, folder.relative_to(under), True) as fd:
        token = _held.set((folder, fd))
        try:
            yield
        finally:
            _held.reset(token)


@contextlib.contextmanager
def _named(folder: Path) -> Iterator[None]:
    """Errors of operations on names relative to an open `folder` name whole paths, as those on
    paths did: what is blocked says which folder to fix (`publisher._refused_by`, `_clash`)."""
    try:
        yield
    except OSError as exc:
        if exc.filename is None and isinstance(exc, safefs.UnsafePath):
            exc.filename = str(folder)
        for attribute in ("filename", "filename2"):
            name = getattr(exc, attribute)
            if isinstance(name, str) and not os.path.isabs(name):
                setattr(exc, attribute, str(folder / name))
        raise


def _copy_stat(result: os.stat_result, fd: int) -> None:
    """A file's mode and times onto the open file `fd`, where the file system takes them."""
    with contextlib.suppress(OSError):
        os.chmod(fd, stat.S_IMODE(result.st_mode))
    with contextlib.suppress(OSError):
        os.utime(fd, ns=(result.st_atime_ns, result.st_mtime_ns))


def atomic_write(path: Path, data: bytes, durable: bool = True, under: Path | None = None) -> None:
    """Readers see either no file or all of `data`, also after a crash (if `durable`)."""
    _write_chunks(path, (data,), durable, under=under)


def remove(path: Path, under: Path) -> None:
    """Remove the entry `path` (a link itself, not what it points to) if it is there, reached
    from `under` without following a link (`safefs.UnsafePath` where a folder on the way is
    one); a missing folder has nothing to remove."""
    try:
        with _open_folder(path.parent, under, make=False) as folder:
            os.unlink(path.name, dir_fd=folder)
    except FileNotFoundError:
        pass
    except safefs.UnsafePath as exc:
        if exc.errno != errno.ENOENT:
            raise


def remove_empty_folders(folder: Path, under: Path) -> None:
    """`folder` and the folders above it, up to `under` (kept), while each is empty: what a
    removal left behind (an operator's finding: an outbox subfolder stayed, empty, once its
    reports were withdrawn)."""
    while folder != under and folder.is_relative_to(under):
        try:
            with _open_folder(folder.parent, under, make=False) as parent:
                os.rmdir(folder.name, dir_fd=parent)
        except OSError:  # not empty, gone, or not reachable without a link: left as it is
            return
        folder = folder.parent


def text_bytes(text: str) -> bytes:
    """UTF-8, with file names that are not valid UTF-8 (lone surrogates from the file system)
    kept as backslash escapes instead of failing the write."""
    return text.encode("utf-8", "backslashreplace")


def atomic_write_json(
    path: Path, value: Any, durable: bool = True, under: Path | None = None
) -> None:
    data = text_bytes(json.dumps(value, indent=2, ensure_ascii=False) + "\n")
    atomic_write(path, data, durable, under)


def _read_chunks(handle: BinaryIO, size: int, name: Path) -> Iterator[bytes]:
    """The `size` bytes of an open file, NotTheSame when it ends before or goes on after them
    (written to while it was copied: another writer of the outbox may keep an answer open)."""
    try:
        yield from safefs.exact_chunks(handle.fileno(), size)
    except safefs.Changed as exc:
        raise NotTheSame(errno.EAGAIN, str(exc), str(name)) from None


class NotTheSame(OSError):
    """A copy's bytes are not the ones expected of it: the source was changed meanwhile."""


def _checked(
    chunks: Iterable[bytes], digest: hashlib._Hash, sha256: str | None, source: Path
) -> Iterator[bytes]:
    """`chunks`, each added to `digest`, and NotTheSame after the last when they do not hash
    to `sha256`."""
    for chunk in chunks:
        digest.update(chunk)
        yield chunk
    if sha256 is not None and digest.hexdigest() != sha256:
        raise NotTheSame(errno.EIO, "changed since it was published", str(source))


def atomic_copy(
    source: Path,
    target: Path,
    under: Path | None = None,
    sha256: str | None = None,
    opened: BinaryIO | None = None,
) -> str:
    """Copy a file as atomically as `atomic_write`, without holding it in memory, exactly as
    long as it was when the copy began; `opened`: `source` already open (an earlier answer,
    `open_answer`). With `sha256`, the copy is put in place only if its bytes hash to it
    (NotTheSame otherwise): what is copied is then the answer that was published, whatever was
    swapped in since it was checked (an attacker's trial). Returns the SHA-256 of the bytes
    copied: reading the copy back would read whatever took its place meanwhile."""
    digest = hashlib.sha256()
    with contextlib.ExitStack() as stack:
        handle = opened if opened is not None else stack.enter_context(source.open("rb"))
        found = os.fstat(handle.fileno())
        chunks = _checked(_read_chunks(handle, found.st_size, source), digest, sha256, source)
        _write_chunks(target, chunks, stat_of=found, under=under)
    return digest.hexdigest()


# Our own files are read without following a link, or waiting on a FIFO at the open.
_OURS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


def _ours(fd: int, path: Path, max_bytes: int | None) -> BinaryIO:
    """The open `fd` if it is a regular file of at most `max_bytes` (closed, OSError if not)."""
    handle = os.fdopen(fd, "rb")
    found = os.fstat(fd)
    too_big = max_bytes is not None and found.st_size > max_bytes
    if not stat.S_ISREG(found.st_mode) or too_big:
        handle.close()
        what = "not a regular file" if not stat.S_ISREG(found.st_mode) else "larger than ours"
        raise OSError(errno.EINVAL, f"{what} ({found.st_size:,} bytes)", str(path))
    return handle


def open_below(root: Path, relative: PurePath, max_bytes: int | None = None) -> BinaryIO:
    """The file at `root/relative`, opened from `root` down without following a link below it
    (`root` itself, a configured folder, may be one), and taken only as a regular file (of at
    most `max_bytes`); OSError otherwise. For folders other people write to: the outbox here,
    and every folder the web page shows files of."""
    with safefs.folder(root, relative.parent) as folder:
        fd = os.open(relative.name, _OURS, dir_fd=folder)
    return _ours(fd, root / relative, max_bytes)


def open_answer(path: Path, outbox: Path, max_bytes: int) -> BinaryIO:
    """One of our files in the outbox (an earlier answer's image or manifest), opened from the
    outbox root down without following a link anywhere, and taken only as a regular file of
    at most `max_bytes`. Another writer of a two-way synced outbox may since have made it, or
    a folder above it, a link to a server's file, a FIFO, or a sparse file of any size (an
    attacker's trials: a 100 GB one held the daemon's loop for minutes while it was hashed,
    and a manifest was read through a folder link)."""
    try:
        relative = path.relative_to(outbox)
    except ValueError:
        raise OSError(errno.EXDEV, "not in the outbox", str(path)) from None
    return open_below(outbox, relative, max_bytes)


def answer_sha256(path: Path, outbox: Path, max_bytes: int) -> str:
    """The SHA-256 of one of our files in the outbox (`open_answer`), read exactly as long as it
    was when opened."""
    with open_answer(path, outbox, max_bytes) as handle:
        size = os.fstat(handle.fileno()).st_size
        try:
            return safefs.digest_open(handle.fileno(), size)
        except safefs.Changed as exc:  # written to while it was read
            raise OSError(errno.EAGAIN, str(exc), str(path)) from None


def file_sha256(path: Path) -> str:
    with path.open("rb") as handle:
        return stream_sha256(handle)


def stream_sha256(handle: BinaryIO) -> str:
    """The SHA-256 of what is left to read in `handle`, without holding it in memory."""
    digest = hashlib.sha256()
    while chunk := handle.read(_COPY_CHUNK):
        digest.update(chunk)
    return digest.hexdigest()


def read_json(path: Path) -> Any:
    """A JSON file written by `atomic_write_json`, or None when absent or unreadable. A link, a
    FIFO, a folder or a file over `JSON_BYTES` is none of ours: in the outbox other people may
    have put it there (a FIFO held the daemon at its open, an attacker's trial)."""
    try:
        with _ours(os.open(path, _OURS), path, JSON_BYTES) as handle:
            return parse_ours(handle.read(JSON_BYTES + 1))
    except OSError:
        return None


def parse_ours(data: bytes) -> Any:
    """The JSON of one of our files as read back from a folder others write too, or None when
    it is not JSON, or nested deeper than the parser's recursion allows, which ours never are
    (an attacker's trial: 200,000 `[` planted at a photo's `.error.json` crashed every claim of
    that photo and its report, silently, and a manifest so made took the web page down)."""
    try:
        return json.loads(data.decode("utf-8"))
    except (ValueError, RecursionError):
        return None


def remove_temporaries(folder: Path) -> int:
    """Delete our temporary files left by a crash anywhere below `folder`; returns the count.
    Folders are entered by descriptor without following a link (`os.fwalk`): `os.walk` opens
    each by its path, and an outbox folder swapped for a link meanwhile had files of ours
    deleted in the folder it pointed to (an attacker's trial)."""
    removed = 0
    for _root, _dirs, files, fd in os.fwalk(folder, follow_symlinks=False):
        for name in files:
            if is_temporary(name):
                try:
                    os.unlink(name, dir_fd=fd)
                    removed += 1
                except FileNotFoundError:
                    pass
    return removed


def plain_suffix(name: str) -> str:
    """`name`'s extension in lower case, for our own copies of a file (`input.jpg`), or "" when
    it is not plain letters and digits: nothing from an inbox name reaches our names but that."""
    ext = Path(name).suffix.lower()
    return ext if ext[1:].isalnum() else ""


def fit_name(stem: str, suffix: str, limit: int = NAME_MAX) -> str:
    """`stem + suffix`, with the stem shortened (on a character boundary) to fit `limit` bytes,
    so a very long input name still gets an output and an error report."""
    room = limit - len(os.fsencode(suffix))
    if len(os.fsencode(stem)) <= room:
        return stem + suffix
    kept, used = [], 0
    for char in stem:
        size = len(os.fsencode(char))
        if used + size > room:
            break
        kept.append(char)
        used += size
    return "".join(kept) + suffix


def user_name(uid: int) -> str:
    """A user's name for a message, or `uid N` where the system knows none."""
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"


def fit_stem(stem: str, suffixes: Iterable[str]) -> str:
    """`stem` shortened to fit NAME_MAX bytes with the longest of `suffixes`, so that one
    set of names keeps one stem (an attacker's trial: a 250-byte photo's manifest, image and
    log were cut to three different stems)."""
    longest = max(suffixes, key=lambda suffix: len(os.fsencode(suffix)))
    fitted = fit_name(stem, longest)
    return fitted[: len(fitted) - len(longest)]


ModelT = TypeVar("ModelT", bound=BaseModel)


def model_to_json(model: BaseModel, indent: int | None = None) -> str:
    """A model as ASCII JSON: file names that are not valid UTF-8 (lone surrogates) survive as
    `\\udcXX` escapes, where pydantic's own encoder refuses them."""
    return json.dumps(model.model_dump(mode="json"), indent=indent)


def model_from_json(model: type[ModelT], text: str | bytes) -> ModelT:
    """The inverse of `model_to_json` (pydantic's parser refuses lone surrogate escapes)."""
    return model.model_validate(json.loads(text))
