"""Every picture the page shows is decoded and encoded again by Pillow, never sent as it lies
on disk: a file in a shared folder may be HTML or SVG under a .jpg name, and a browser must
never get the chance to run it. Small versions are cached in `state/thumbnails/`.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import stat
import threading
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import BinaryIO, ParamSpec

import structlog
from PIL import Image

from daemon.fsutil import atomic_write, stream_sha256
from service.errors import ImageInputError
from service.imageio import open_image

log = structlog.get_logger("stylefold.web")

THUMB_SIDE = 480  # long side of gallery, queue and style thumbnails (sharp on a phone)
FULL_SIDE = 4096  # "full size" is re-encoded too, and bounded like max_output_size
MAX_FILE_BYTES = 256 * 1024 * 1024  # a larger file is not decoded for the page
CACHE_FILES = 2000  # the cache keeps the newest this many thumbnails
# Part of every cache key: raised when thumbnails of the same file change (2: photos with a
# colour profile are converted to sRGB; cached ones showed a Display P3 photo washed out).
RENDITION = 2
REFUSALS = 1000  # versions of files found unshowable, remembered in memory
FULL_KEPT = 6  # full-size versions kept in memory (a few MB each), the latest asked for
# Pictures waiting for the decoder thread, or on it; more are refused at once (`Busy`, which
# the page asks again for later): each waiting request holds one of the server's 40 threads,
# and a re-tester's 60 requests, abandoned within a second, kept the whole page from answering
# for 22 s. 32 leave the page and its polls 8; at 12, three people opening a gallery of
# pictures not made yet were refused 108 of 153 (a regression trial; a browser asks six at a
# time).
MAX_WAITING = 32
QUALITY = 88
P = ParamSpec("P")


class Busy(Exception):
    """The decoder has MAX_WAITING pictures to make: asked again in a moment."""


class Pictures:
    """JPEG versions of images, bounded in size; thumbnails cached by source and version."""

    def __init__(self, cache: Path, max_pixels: int) -> None:
        self.cache = cache  # created on first use, inside the state folder the daemon made
        self.max_pixels = max_pixels
        self._warned = False
        self._foreign = _foreign(cache)
        # An unshowable file (a replaced original) would otherwise be read and hashed again at
        # every request: hundreds of megabytes per page view.
        self._refused: OrderedDict[str, None] = OrderedDict()
        # One picture decoded at a time, always on the same thread: a 50 MP one takes about
        # 360 MB to decode and shrink, a dozen requests at once for a result took 4 GB (an
        # attacker's trial, who also found the full size decoded again at every request), and
        # decodes on the server's many threads, even one at a time, each kept their memory
        # (the C library's allocator keeps an arena per thread).
        self._decoder = ThreadPoolExecutor(max_workers=1, thread_name_prefix="stylefold-decode")
        # Changed on the decoder thread only; looked up anywhere (one call, under the GIL).
        self._full: OrderedDict[str, bytes] = OrderedDict()
        self._waiting = threading.BoundedSemaphore(MAX_WAITING)

    def thumbnail(
        self, handle: BinaryIO, key: str, sha256: str | None = None, pixels: int | None = None
    ) -> bytes | None:
        """A JPEG of at most THUMB_SIDE px for the open file `handle`; `key` names what it is
        (job and role, or style), so one cache entry never serves another file. With `sha256`,
        only a file with exactly those bytes is shown (checked before it is cached); with
        `pixels`, only one of at most that many (a result: its manifest's size), else
        max_pixels."""
        name = _version(handle, key)
        cached = self.cache / f"{name[:40]}.jpg"
        if self._foreign is None:
            with contextlib.suppress(OSError):
                return cached.read_bytes()
        if name in self._refused:
            return None
        data = self.encode(handle, THUMB_SIDE, sha256, pixels)
        if data is not None:
            if self._foreign is None:
                self._store(cached, data)
            else:
                self._uncached("web.thumbnail_cache_off", why=self._foreign)
            return data
        self._refuse(name)
        return None

    def full(
        self, handle: BinaryIO, key: str, sha256: str | None = None, pixels: int | None = None
    ) -> bytes | None:
        """A JPEG of at most FULL_SIDE px, kept in memory (not on disk: a few MB each) for the
        latest FULL_KEPT files asked for, so that a result looked at again is not decoded
        again. `sha256` and `pixels` as in `thumbnail`."""
        name = _version(handle, key)
        if (kept := self._full.get(name)) is not None or name in self._refused:
            return kept
        if not _has(handle, sha256):
            self._refuse(name)
            return None
        return self._decode(self._full_size, handle, name, pixels)

    def _decode(
        self, make: Callable[P, bytes | None], *args: P.args, **kw: P.kwargs
    ) -> bytes | None:
        """`make(...)` on the decoder thread, once fewer than MAX_WAITING wait for it."""
        if not self._waiting.acquire(blocking=False):
            raise Busy
        try:
            return self._decoder.submit(make, *args, **kw).result()
        finally:
            self._waiting.release()

    def _full_size(self, handle: BinaryIO, name: str, pixels: int | None) -> bytes | None:
        if (kept := self._full.get(name)) is not None:  # made while this one waited
            self._full.move_to_end(name)
            return kept
        data = self._encode(handle, FULL_SIDE, pixels)
        if data is None:
            self._refuse(name)
            return None
        self._full[name] = data
        if len(self._full) > FULL_KEPT:
            self._full.popitem(last=False)
        return data

    def _refuse(self, name: str) -> None:
        self._refused[name] = None
        if len(self._refused) > REFUSALS:
            self._refused.popitem(last=False)

    def encode(
        self,
        handle: BinaryIO,
        side: int = FULL_SIDE,
        sha256: str | None = None,
        pixels: int | None = None,
    ) -> bytes | None:
        """The picture in `handle` as a JPEG with a long side of at most `side`; None when it
        is not an image Pillow reads within the pixel limit (or not the expected bytes). The
        hash is checked on the caller's thread (streamed, in little memory), so the decoder
        thread only decodes."""
        if not _has(handle, sha256):
            return None
        return self._decode(self._encode, handle, side, pixels)

    def _encode(self, handle: BinaryIO, side: int, pixels: int | None = None) -> bytes | None:
        """`encode`, on the decoder thread."""
        if os.fstat(handle.fileno()).st_size > MAX_FILE_BYTES:
            return None
        with contextlib.suppress(OSError):  # a pipe cannot seek
            handle.seek(0)  # whole, whoever read it before
        data = handle.read(MAX_FILE_BYTES + 1)
        if len(data) > MAX_FILE_BYTES:
            return None
        try:
            image = open_image(data, pixels or self.max_pixels).image
        except ImageInputError:
            return None
        if max(image.size) > side:
            image.thumbnail((side, side), Image.Resampling.LANCZOS)
        # The pixels alone: a GIF's comment of more than 64 KB went along into the JPEG, whose
        # encoder refused it, and every view of the page decoded the file again for a 500 (an
        # attacker's trial).
        image.info = {}
        out = io.BytesIO()
        try:
            image.save(out, format="JPEG", quality=QUALITY, optimize=True)
        except (OSError, ValueError):
            return None
        return out.getvalue()

    def _uncached(self, event: str, why: str | None) -> None:
        """Said once: every thumbnail is made again for each request from now on."""
        if not self._warned:
            self._warned = True
            log.warning(
                event,
                folder=str(self.cache),
                why=why,
                effect="thumbnails are made again for every request",
            )

    def _store(self, path: Path, data: bytes) -> None:
        """Cache `data`, then drop the oldest entries beyond CACHE_FILES; a cache that cannot
        be written (a state folder of another user) only costs time."""
        try:
            path.parent.mkdir(exist_ok=True)
            atomic_write(path, data, durable=False)
        except OSError as exc:
            self._uncached("web.thumbnail_cache_unwritable", why=exc.strerror)
            return
        _prune(path.parent)


def _prune(cache: Path) -> None:
    """Drop the oldest files beyond CACHE_FILES. Another request's temporary file may go
    between the listing and its look (a regression trial: warned at once, wrongly, that the
    cache could not be written)."""
    ages = []
    with contextlib.suppress(OSError), os.scandir(cache) as entries:
        for entry in entries:
            with contextlib.suppress(OSError):
                ages.append((entry.stat().st_mtime_ns, entry.path))
    for _, old in sorted(ages)[: max(0, len(ages) - CACHE_FILES)]:
        Path(old).unlink(missing_ok=True)


def _has(handle: BinaryIO, sha256: str | None) -> bool:
    """Whether the file has exactly the bytes of `sha256` (any, without one). Size first, then
    the hash, streamed: an original in the inbox may since have been replaced by anyone, with
    hundreds of megabytes, and a file over MAX_FILE_BYTES is never read."""
    if sha256 is None:
        return True
    if os.fstat(handle.fileno()).st_size > MAX_FILE_BYTES:
        return False
    handle.seek(0)
    return stream_sha256(handle) == sha256


def _version(handle: BinaryIO, key: str) -> str:
    """What names one version of one file in the caches: `key`, its size, mtime, inode and
    change time (which no one can set: a re-tester put another result in place under the
    same size and mtime, as rsync -t or Syncthing would, and was shown the old one)."""
    info = os.fstat(handle.fileno())
    seen = "\0".join(
        map(str, (key, info.st_size, info.st_mtime_ns, info.st_ino, info.st_ctime_ns, RENDITION))
    )
    return hashlib.sha256(seen.encode()).hexdigest()


def _foreign(cache: Path) -> str | None:
    """Why the page must not use its cache: run by root (`sudo stylefold web` for a look) over
    a state folder, or a cache, another user owns, where that user may have made `thumbnails`
    (or a cached file) a link, and root would read, write, and delete the oldest files,
    wherever it leads (a re-tester's trial deleted root's files so); None when the cache may
    be used."""
    if os.geteuid() != 0:
        return None
    with contextlib.suppress(OSError):
        owner = os.stat(cache.parent).st_uid  # the state folder
        if owner != 0:
            return (
                f"run by root over a state folder of uid {owner}: root writes nothing there; "
                "run the page as the daemon's user"
            )
    try:
        found = os.lstat(cache)
    except FileNotFoundError:
        return None
    except OSError as exc:
        return f"its thumbnail cache cannot be looked at ({exc.strerror})"
    if stat.S_ISLNK(found.st_mode) or found.st_uid != 0:  # another's to point elsewhere
        return "run by root over a thumbnail cache root does not own; run it as its owner"
    return None
