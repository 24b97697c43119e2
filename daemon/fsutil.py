"""File-system helpers for folders that sync tools watch and for the state folder: whole files
only (temporary name, fsync, rename, fsync of the folder), moves that never leave zero copies,
and names that fit the file system's limit.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
import shutil
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, BinaryIO, TypeVar

from pydantic import BaseModel

TMP_PREFIX = ".stylefold-"
TMP_SUFFIX = ".tmp"
NAME_MAX = 255  # bytes per path component on every file system the daemon targets
_COPY_CHUNK = 1 << 20


def is_temporary(name: str) -> bool:
    """Our own in-flight files, which the intake side and sweeps must never take for results."""
    return name.startswith(TMP_PREFIX) and name.endswith(TMP_SUFFIX)


def fsync_dir(folder: Path) -> None:
    """Make a rename or unlink inside `folder` durable."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _temporary_path(folder: Path) -> Path:
    return folder / f"{TMP_PREFIX}{secrets.token_hex(8)}{TMP_SUFFIX}"


def _write_chunks(
    path: Path, chunks: Iterable[bytes], durable: bool = True, stat_of: Path | None = None
) -> None:
    """Write `chunks` under a temporary name beside `path`, then rename over `path`. Without
    `durable` (progress and status files, rewritten every second and worthless after a crash)
    the fsyncs are skipped: readers still never see half a file. With `stat_of`, that file's
    times and mode are given to it where the file system takes them: FAT and exFAT refuse a
    chmod, and a copy whose data was in place blocked its job for good (a user's trial with
    the outbox on a USB stick)."""
    folder = path.parent
    folder.mkdir(parents=True, exist_ok=True)
    tmp = _temporary_path(folder)
    try:
        with tmp.open("xb") as handle:
            for chunk in chunks:
                handle.write(chunk)
            handle.flush()
            if stat_of is not None:
                with contextlib.suppress(OSError):
                    shutil.copystat(stat_of, tmp, follow_symlinks=False)
            if durable:
                os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if durable:
        fsync_dir(folder)


def atomic_write(path: Path, data: bytes, durable: bool = True) -> None:
    """Readers see either no file or all of `data`, also after a crash (if `durable`)."""
    _write_chunks(path, (data,), durable)


def text_bytes(text: str) -> bytes:
    """UTF-8, with file names that are not valid UTF-8 (lone surrogates from the file system)
    kept as backslash escapes instead of failing the write."""
    return text.encode("utf-8", "backslashreplace")


def atomic_write_json(path: Path, value: Any, durable: bool = True) -> None:
    data = text_bytes(json.dumps(value, indent=2, ensure_ascii=False) + "\n")
    atomic_write(path, data, durable)


def _read_chunks(path: Path) -> Iterator[bytes]:
    with path.open("rb") as handle:
        while chunk := handle.read(_COPY_CHUNK):
            yield chunk


def atomic_copy(source: Path, target: Path) -> None:
    """Copy a file as atomically as `atomic_write`, without holding it in memory."""
    _write_chunks(target, _read_chunks(source), stat_of=source)


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
    """A JSON file written by `atomic_write_json`, or None when absent or unreadable."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def remove_temporaries(folder: Path) -> int:
    """Delete our temporary files left by a crash anywhere below `folder`; returns the count."""
    removed = 0
    for root, _dirs, files in os.walk(folder):
        for name in files:
            if is_temporary(name):
                try:
                    os.unlink(os.path.join(root, name))
                    removed += 1
                except FileNotFoundError:
                    pass
    return removed


def plain_suffix(name: str) -> str:
    """`name`'s extension in lower case, for our own copies of a file (`input.jpg`), or "" when
    it is not plain letters and digits: nothing from an inbox name reaches our names but that."""
    ext = Path(name).suffix.lower()
    return ext if ext[1:].isalnum() else ""


def fit_name(stem: str, suffix: str) -> str:
    """`stem + suffix`, with the stem shortened (on a character boundary) to fit NAME_MAX bytes,
    so a very long input name still gets an output and an error report."""
    room = NAME_MAX - len(os.fsencode(suffix))
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


ModelT = TypeVar("ModelT", bound=BaseModel)


def model_to_json(model: BaseModel, indent: int | None = None) -> str:
    """A model as ASCII JSON: file names that are not valid UTF-8 (lone surrogates) survive as
    `\\udcXX` escapes, where pydantic's own encoder refuses them."""
    return json.dumps(model.model_dump(mode="json"), indent=indent)


def model_from_json(model: type[ModelT], text: str | bytes) -> ModelT:
    """The inverse of `model_to_json` (pydantic's parser refuses lone surrogate escapes)."""
    return model.model_validate(json.loads(text))
