"""Whether an image file is whole, judged from its own structure before anything decodes it.

Copy tools write a photo under its final name and let it grow in bursts (rsync --inplace writes
256 KiB at a time, rclone 1.60 32 KiB), and at a low bandwidth the gaps between bursts outlast
`settle_seconds`: a file that stopped growing for a while is not necessarily finished. Each
format says where it ends, so a file that is a valid beginning of an image but stops before its
end is *truncated* (still arriving, or cut off). A file whose structure breaks before its end is
corrupt, not truncated: the decoder reports it as before. Formats not known here cannot be
judged and count as whole.

    JPEG       the end-of-image marker, found by walking the segments (data after it, such as
               the video of a Motion Photo, is allowed; an EXIF thumbnail's marker is skipped)
    PNG        the IEND chunk, walking the chunks
    GIF        the trailer byte, walking the blocks
    WebP       the RIFF size in the header
    HEIC/AVIF  the sizes of the top-level ISO-BMFF boxes
    TIFF       the image file directories and the strips or tiles they point to

A file whose first bytes are all zeros is not an image yet: Windows and SMB copies and some
phone apps set a file's full size first and write its content after (a sync trial: such a
photo was reported "not an image format" three seconds in, then answered again once written).
Nor is one whose last bytes are zeros, part way through such a copy (`ZERO_TAIL`), whatever
the file is (a sidecar too), unless its format's end marker comes before them (a JPEG a camera
padded with zeros is whole).

`missing_end(read, size)` is pure over a reader (tests pass bytes); `truncation(root, relative)`
opens the file. Work is bounded per file: every read, and every strip or tile pointer a TIFF
lists, spends a step of one budget (MAX_STEPS), so a hostile file that needs more is not judged,
however its structure nests (an attacker's trial: a GIF of extension blocks of 199,000 one-byte
sub-blocks each, the limit then counted per chain, held the daemon's loop 30 s per 250 MB).
"""

from __future__ import annotations

import os
import re
import struct
from collections.abc import Callable
from enum import Enum
from pathlib import Path, PurePath
from typing import Literal

from daemon import safefs

Read = Callable[[int, int], bytes]  # (offset, length) -> at most `length` bytes

MAX_STEPS = 200_000  # reads (and TIFF data pointers) of one file before giving up (not judged)
WINDOW = 1 << 16
ZEROS_SEEN = 512  # leading zero bytes that no image format starts with
# What a file ending in zeros is told. Unlike a truncation it is taken once unchanged for
# arriving_timeout, not reported: an uncompressed image may end in black.
ZERO_TAIL = "its last bytes are still zeros, as a copy that sets the size first leaves them"
# Trailing zero bytes that no compressed image ends with (a TIFF's last directory, at the end
# of its file, may end in 11: a count of 1, a value of 0, no next directory).
ZERO_TAIL_SEEN = 32
# Inside JPEG entropy-coded data 0xFF is followed by 0x00 (stuffing) or a restart marker; any
# other byte after it starts a marker (a fill byte 0xFF included).
_JPEG_MARKER = re.compile(rb"\xff[^\x00\xd0-\xd7]")


def truncation(root: Path, relative: PurePath) -> str | None:
    """What is missing from the end of the image file `root/relative` ("a JPEG without its end
    marker"), or None when it is whole, corrupt, unreadable or of a format not judged here.
    Reached like every inbox file (`daemon.safefs`): a folder on the way swapped for a link is
    not followed (an attacker's trial: opened by its whole path, files outside the inbox were
    read, and their ends told)."""
    try:
        with safefs.folder(root, relative.parent) as folder:
            fd = safefs.open_file(folder, relative.name)
    except (OSError, safefs.Changed):
        return None
    try:
        result = os.fstat(fd)
        window = _Window(fd)
        return missing_end(window.read, result.st_size)
    except OSError:
        return None
    finally:
        os.close(fd)


class _Window:
    """Reads through a cached 64 KiB window: the walks below make many small, mostly forward
    reads (GIF sub-blocks are at most 256 bytes)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.start = 0
        self.data = b""

    def read(self, offset: int, length: int) -> bytes:
        end = offset + length
        if not (self.start <= offset and end <= self.start + len(self.data)):
            self.start = offset
            self.data = os.pread(self.fd, max(length, WINDOW), offset)
        return self.data[offset - self.start : end - self.start]


class _GaveUp(Exception):
    """The walk needed more than MAX_STEPS steps: the file is not judged."""


class _Steps:
    """A reader that spends a step a read from the file's one budget: each walk below reads at
    least once a step, so none outlasts the budget, however the file nests its structures."""

    def __init__(self, read: Read) -> None:
        self._read = read
        self.spent = 0

    def __call__(self, offset: int, length: int) -> bytes:
        self.spend(1)
        return self._read(offset, length)

    def spend(self, count: int) -> None:
        self.spent += count
        if self.spent > MAX_STEPS:
            raise _GaveUp


def missing_end(read: Read, size: int) -> str | None:
    """The format's own description of what is missing, or None (see `truncation`)."""
    try:
        return _missing_end(_Steps(read), size)
    except _GaveUp:
        return None


def _missing_end(read: _Steps, size: int) -> str | None:
    start = read(0, min(size, ZEROS_SEEN))
    if start and not start.strip(b"\x00"):
        return "its first bytes are still zeros, as a copy that sets the size first leaves them"
    found = _format_end(read, size, start[:12])
    if found is _Walk.ENDED:  # at its end marker: whatever follows (zeros too) is not the image's
        return None
    if found is None or found is _Walk.CORRUPT:  # within its size, or broken where zeros may be
        return _zero_tail(read, size)
    return found


class _Walk(Enum):
    """What a walk below finds besides a truncation (None: the structure fits the file's size,
    as WebP's, HEIC's and TIFF's do, which a copy's zeros can too)."""

    ENDED = "its end marker (JPEG, PNG, GIF)"
    CORRUPT = "a broken structure: the decoder reports it, unless a copy's zeros broke it"


def _format_end(read: _Steps, size: int, head: bytes) -> str | _Walk | None:
    if head.startswith(b"\xff\xd8"):
        return _jpeg(read, size)
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return _png(read, size)
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return _gif(read, size)
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "a WebP shorter than its header says" if _u32le(head, 4) + 8 > size else None
    if head[4:8] == b"ftyp":
        return _bmff(read, size)
    if head[:4] in (b"II*\x00", b"MM\x00*"):
        return _tiff(read, size, "little" if head[:2] == b"II" else "big")
    return None


def _zero_tail(read: _Steps, size: int) -> str | None:
    """A file whose last bytes are zeros (the last ZERO_TAIL_SEEN, or a quarter of a small
    one): a copy that set the size first has not reached its end. Its structure cannot tell:
    a WebP's header, a HEIC's boxes and a TIFF's strips all fit the size set (a sync trial:
    WebP, HEIC and TIFF photos rendered from their first 256 KiB and zeros). A copy with
    fewer bytes than that left to write is not seen (a re-test: 200 bytes were, at 512)."""
    length = min(ZERO_TAIL_SEEN, size // 4)
    tail = read(size - length, length) if length else b""
    return ZERO_TAIL if len(tail) == length > 0 and not tail.strip(b"\x00") else None


def _u32le(data: bytes, offset: int) -> int:
    return int.from_bytes(data[offset : offset + 4], "little")


# -- JPEG ---------------------------------------------------------------------------------------

_JPEG_CUT = "a JPEG without its end marker"


def _jpeg(read: _Steps, size: int) -> str | _Walk | None:
    pos = 2
    while True:
        head = read(pos, 4)
        if len(head) < 2:
            return _JPEG_CUT
        if head[0] != 0xFF:
            return _Walk.CORRUPT  # not a marker where one must be
        marker = head[1]
        if marker == 0xD9:
            return _Walk.ENDED  # end of image
        if marker == 0xFF or marker == 0x01 or 0xD0 <= marker <= 0xD7:
            pos += 1 if marker == 0xFF else 2  # a fill byte, or a marker without a length
            continue
        if len(head) < 4:
            return _JPEG_CUT
        length = int.from_bytes(head[2:4], "big")
        if length < 2:
            return _Walk.CORRUPT
        pos += 2 + length
        if pos > size:
            return _JPEG_CUT
        if marker == 0xDA:  # start of scan: entropy-coded data up to the next marker
            found = _next_marker(read, pos, size)
            if found is None:
                return _JPEG_CUT
            pos = found


def _next_marker(read: _Steps, pos: int, size: int) -> int | None:
    while pos < size:
        chunk = read(pos, WINDOW + 1)  # one byte of overlap: a 0xFF at the window's edge
        match = _JPEG_MARKER.search(chunk)
        if match is not None:
            return pos + match.start()
        if len(chunk) <= 1:
            return None
        pos += len(chunk) - 1
    return None


# -- PNG ----------------------------------------------------------------------------------------

_PNG_CUT = "a PNG without its IEND chunk"


def _png(read: _Steps, size: int) -> str | _Walk | None:
    pos = 8
    while True:
        head = read(pos, 8)
        if len(head) < 8:
            return _PNG_CUT
        length, kind = int.from_bytes(head[:4], "big"), head[4:8]
        if not kind.isalpha():
            return _Walk.CORRUPT
        pos += 12 + length  # length, type, data, CRC
        if pos > size:
            return _PNG_CUT
        if kind == b"IEND":
            return _Walk.ENDED


# -- GIF ----------------------------------------------------------------------------------------

_GIF_CUT = "a GIF without its trailer"


def _gif(read: _Steps, size: int) -> str | _Walk | None:
    screen = read(10, 1)
    if not screen:
        return _GIF_CUT
    pos = 13 + _color_table(screen[0])
    while True:
        block = read(pos, 1)
        if not block:
            return _GIF_CUT
        if block[0] == 0x3B:
            return _Walk.ENDED  # trailer
        if block[0] == 0x21:  # extension: label, then sub-blocks
            pos += 2
        elif block[0] == 0x2C:  # image: descriptor, local colour table, LZW code size
            packed = read(pos + 9, 1)
            if not packed:
                return _GIF_CUT
            pos += 10 + _color_table(packed[0]) + 1
        else:
            return _Walk.CORRUPT
        pos = _sub_blocks(read, pos)
        if pos > size:
            return _GIF_CUT


def _sub_blocks(read: _Steps, pos: int) -> int:
    """The position after a chain of sub-blocks (ended by an empty one); past the end of the
    file when the file ends inside it."""
    while True:
        length = read(pos, 1)
        if not length:
            return pos + 1
        pos += 1 + length[0]
        if length[0] == 0:
            return pos


def _color_table(packed: int) -> int:
    return 3 * 2 ** ((packed & 7) + 1) if packed & 0x80 else 0


# -- HEIC, AVIF (ISO base media file format) ----------------------------------------------------

_BMFF_CUT = "a HEIC/AVIF file shorter than its boxes say"


def _bmff(read: _Steps, size: int) -> str | _Walk | None:
    pos = 0
    while True:
        if pos == size:
            return None
        head = read(pos, 16)
        if len(head) < 8:
            return _BMFF_CUT
        length = int.from_bytes(head[:4], "big")
        if length == 0:
            return None  # the last box runs to the end of the file
        if length == 1:
            if len(head) < 16:
                return _BMFF_CUT
            length = int.from_bytes(head[8:16], "big")
        if length < 8:
            return _Walk.CORRUPT
        pos += length
        if pos > size:
            return _BMFF_CUT


# -- TIFF ---------------------------------------------------------------------------------------

_TIFF_CUT = "a TIFF shorter than its directories say"
_TYPE_SIZES = {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 6: 1, 7: 1, 8: 2, 9: 4, 10: 8, 11: 4, 12: 8, 13: 4}
_DATA_TAGS = {273: 279, 324: 325}  # strip offsets -> strip byte counts; tiles likewise
MAX_IFDS = 64


def _tiff(read: _Steps, size: int, order: Literal["little", "big"]) -> str | _Walk | None:
    """Every strip or tile pointer counts as a step too: a sparse file's header can claim
    millions of strips (an attacker's trial: a 256 MiB file of 4 KiB on disk held the daemon's
    loop 32 s and 1.2 GB of memory, and 64 directories would take half an hour)."""

    def number(data: bytes) -> int:
        return int.from_bytes(data, order)

    offset = number(read(4, 4))
    seen: set[int] = set()
    while offset and offset not in seen and len(seen) < MAX_IFDS:
        seen.add(offset)
        count_bytes = read(offset, 2)
        if len(count_bytes) < 2:
            return _TIFF_CUT
        count = number(count_bytes)
        end = offset + 2 + 12 * count + 4
        if end > size:
            return _TIFF_CUT
        arrays: dict[int, tuple[int, ...]] = {}
        for index in range(count):
            entry = read(offset + 2 + 12 * index, 12)
            tag, kind, items = number(entry[:2]), number(entry[2:4]), number(entry[4:8])
            width = _TYPE_SIZES.get(kind)
            if width is None or items * width > size:
                return _Walk.CORRUPT
            where = offset + 2 + 12 * index + 8
            if items * width > 4:
                where = number(entry[8:12])
                if where + items * width > size:
                    return _TIFF_CUT
            if kind in (3, 4) and (tag in _DATA_TAGS or tag in _DATA_TAGS.values()):
                read.spend(items)
                unit = ("<" if order == "little" else ">") + ("H" if kind == 3 else "I")
                values = struct.iter_unpack(unit, read(where, items * width))
                arrays[tag] = tuple(value for (value,) in values)
        for offsets_tag, counts_tag in _DATA_TAGS.items():
            starts, lengths = arrays.get(offsets_tag, ()), arrays.get(counts_tag, ())
            if any(start + length > size for start, length in zip(starts, lengths, strict=False)):
                return _TIFF_CUT
        offset = number(read(end - 4, 4))
        if offset >= size:
            return _TIFF_CUT
    return None
