"""Whether a photo's structure would make its decoding take very long or much memory, read from
its blocks without decoding it: what the pixel and byte limits do not see.

A progressive JPEG is decoded by applying each of its scans to the whole picture, so decoding
costs pixels times scans, and a scan can be a few dozen bytes: a 250 KB file of 1,500 copies of
one scan at 40 megapixels took a worker 37 s to decode, and 60 MB of them would take hours (an
attacker's trial). Encoders write 10 scans (libjpeg's progressive mode) to a few dozen
(mozjpeg's optimised ones) in a few dozen segments, so a file of more than `MAX_SCANS` scans, or
`MAX_SEGMENTS` segments (which would make this walk itself slow), is refused.

Pillow keeps each sub-block of a GIF's comments as an object of its own, and skips its other
extensions and any junk a byte or a block at a time: a 64 MB GIF of one-byte comment blocks cost
a worker 3 GB and 7 s (another trial). A GIF's first picture comes after at most a few hundred
blocks of metadata (XMP, a colour profile, a loop count), so more than `MAX_GIF_BLOCKS` blocks or
`MAX_GIF_JUNK` stray bytes before it are refused. TIFF strips and PNG chunks: `tiff_problem`,
`png_problem`. Every walk here takes time linear in the file's size (the daemon's own thread
runs them on a photo's first MiB).
"""

from __future__ import annotations

import re
from typing import Literal

MAX_SCANS = 100
MAX_SEGMENTS = 10_000
MAX_STRAY = 65_536
MAX_GIF_BLOCKS = 65_536
MAX_GIF_JUNK = 65_536
MAX_TIFF_PARTS = 200_000
FEW_TIFF_PARTS = 10_000
MAX_TIFF_TAGS = 4_096
MAX_PNG_METADATA = 1_000
MAX_PNG_CHUNKS = 200_000

_SOS, _EOI = 0xDA, 0xD9
_JPEG_FIX = (
    " (cameras and editors write far fewer), which would take very long to decode; save it "
    "again as an ordinary JPEG"
)
_GIF_FIX = (
    " (editors write a few hundred at most), which would take very long to read; save it again "
    "as an ordinary GIF or as a PNG"
)
# The first byte after a run of 0xFF: a marker's code. Searched for in a separate step, as a
# pattern of a 0xFF run and a code took time quadratic in the run (40 KB of 0xFF: 7 s, in the
# daemon's own thread, an attacker's re-test).
_NOT_FILL = re.compile(rb"[^\xff]")
# The end of a scan's coded data: a 0xFF that is neither a stuffed 0xFF 0x00 nor a restart.
_AFTER_SCAN = re.compile(rb"\xff[^\x00\xd0-\xd7]")


def jpeg_problem(data: bytes) -> str | None:
    """What makes the JPEG `data` too slow to decode ("a JPEG of more than 100 progressive
    scans ..."), or None. Markers are found as libjpeg finds them (`next_marker`): bytes that
    are not 0xFF are skipped, then fill bytes 0xFF, and a code of 0 is junk too (one junk byte
    before the scans hid 10,000 of them from a walk that stopped there, an attacker's re-test);
    libjpeg warns of such stray bytes, Pillow passes on no warning, and walks them one at a
    time, so more than `MAX_STRAY` of them are refused. Segments are walked by their length up
    to the first EOI, a length below 2 skipping nothing (as libjpeg's `skip_variable`), so
    bytes that look like a marker inside metadata (an EXIF thumbnail is a JPEG of its own) are
    not counted, nor is the second picture of an MPO; a cut stream is judged by what it holds,
    its decoder saying what is wrong."""
    scans = segments = stray = 0
    at, end = 2, len(data)
    while at < end:
        fill = data.find(b"\xff", at)
        code = _NOT_FILL.search(data, fill) if fill >= 0 else None
        code_at = end if code is None else code.start()
        marker = data[code_at] if code_at < end else None
        stray += code_at - at - 1 + (2 if marker == 0 else 0)  # before the 0xFF, fill, junk
        if stray > MAX_STRAY:
            return f"a JPEG of more than {MAX_STRAY:,} stray bytes between its segments{_JPEG_FIX}"
        if marker is None:
            break
        at = code_at + 1
        if marker == 0 or 0xD0 <= marker <= 0xD7 or marker == 0x01:  # junk; RSTn, TEM
            continue
        if marker == _EOI or at + 2 > end:
            break
        segments += 1
        if segments > MAX_SEGMENTS:
            return f"a JPEG of more than {MAX_SEGMENTS:,} marker segments{_JPEG_FIX}"
        at += max(int.from_bytes(data[at : at + 2], "big"), 2)
        if marker == _SOS:
            scans += 1
            if scans > MAX_SCANS:
                return f"a JPEG of more than {MAX_SCANS} progressive scans{_JPEG_FIX}"
            coded_end = _AFTER_SCAN.search(data, at)
            at = end if coded_end is None else coded_end.start()
    return None


def gif_problem(data: bytes) -> str | None:
    """What makes the GIF `data` costly to open ("a GIF of more than 65,536 metadata blocks
    ..."), or None, from the blocks before its first picture, read as Pillow reads them (a
    stray byte skipped, an extension's sub-blocks up to an empty one)."""
    if len(data) < 13:
        return None
    at = 13 + (3 << ((data[10] & 7) + 1) if data[10] & 0x80 else 0)  # the global colour table
    blocks = junk = 0
    while at < len(data):
        kind, at = data[at], at + 1
        if kind in (0x2C, 0x3B):  # the first picture, or the end
            return None
        if kind != 0x21:
            junk += 1
            if junk > MAX_GIF_JUNK:
                return (
                    f"a GIF of more than {MAX_GIF_JUNK:,} stray bytes before its picture{_GIF_FIX}"
                )
            continue
        at += 1  # the extension's label
        while at < len(data) and (size := data[at]):
            at += 1 + size
            blocks += 1
            if blocks > MAX_GIF_BLOCKS:
                many = f"{MAX_GIF_BLOCKS:,} metadata blocks"
                return f"a GIF of more than {many} before its picture{_GIF_FIX}"
        at += 1
    return None


_TIFF_PARTS = {273: "strips", 324: "tiles"}  # StripOffsets, TileOffsets
_TIFF_INTS = {3: 2, 4: 4, 16: 8}  # SHORT, LONG, LONG8: their sizes


def tiff_problem(data: bytes) -> str | None:
    """What makes the TIFF `data` costly to decode ("a TIFF of 5,000,000 strips where its
    size needs 1 ..."), or None: Pillow makes a piece of work of every strip or tile its first
    directory lists, and an 8x8 picture listing 5,000,000 strips (all the same 8 bytes) cost a
    worker 23 s and 1.35 GB (an attacker's re-test). A directory this walk cannot reach (past
    the bytes given) is left to the decoder."""
    big = data[2:4] in (b"+\x00", b"\x00+")  # BigTIFF
    order: Literal["little", "big"] = "little" if data[:2] == b"II" else "big"
    word = 8 if big else 4
    at = int.from_bytes(data[8:16] if big else data[4:8], order)
    count_size, entry_size = (8, 20) if big else (2, 12)
    if at + count_size > len(data):
        return None
    entries = int.from_bytes(data[at : at + count_size], order)
    if entries > MAX_TIFF_TAGS:
        return (
            f"a TIFF whose first directory lists {entries:,} tags (cameras and scanners write a "
            "few dozen), which would take very long to read; save it again as an ordinary TIFF"
        )
    tags: dict[int, int] = {}
    parts: dict[int, int] = {}
    for index in range(min(entries, (len(data) - at - count_size) // entry_size)):
        entry = at + count_size + index * entry_size
        tag, kind = (int.from_bytes(data[entry + i : entry + i + 2], order) for i in (0, 2))
        count = int.from_bytes(data[entry + 4 : entry + 4 + word], order)
        if tag in _TIFF_PARTS:
            parts[tag] = count
        elif kind in _TIFF_INTS and count == 1:
            value = entry + 4 + word
            tags[tag] = int.from_bytes(data[value : value + _TIFF_INTS[kind]], order)
    width, height = tags.get(256, 1), tags.get(257, 1)
    planes = tags.get(277, 1) if tags.get(284, 1) == 2 else 1
    for tag, listed in parts.items():
        if tag == 273:
            rows = max(1, min(tags.get(278, height), height))
            needed = -(-height // rows) * planes
        else:
            across, down = max(1, tags.get(322, width)), max(1, tags.get(323, height))
            needed = -(-width // across) * -(-height // down) * planes
        # More than the size needs is damage libtiff trims with a warning, cheap when few.
        if listed > min(max(needed, FEW_TIFF_PARTS), MAX_TIFF_PARTS):
            return (
                f"a TIFF listing {listed:,} {_TIFF_PARTS[tag]} where its size needs {needed:,} "
                f"(at most {MAX_TIFF_PARTS:,} are read), which would take very long to decode; "
                "save it again as an ordinary TIFF, or as a PNG"
            )
    return None


def png_problem(data: bytes) -> str | None:
    """What makes the PNG `data` costly to read ("a PNG of more than 1,000 metadata chunks
    ..."), or None: Pillow reads every chunk, inflating each compressed one on its own (40 MB of
    copies of one colour profile, each inflating to 1 MiB, took a worker 23 s; 40 MB of empty
    chunks 7 s and 470 MB: an attacker's re-test). A PNG holds one colour profile and a few
    metadata chunks; its pixels may be split into many IDAT chunks, counted apart."""
    at, metadata, chunks, profiles = 8, 0, 0, 0
    while at + 8 <= len(data):
        length = int.from_bytes(data[at : at + 4], "big")
        kind = data[at + 4 : at + 8]
        at += 12 + length
        chunks += 1
        profiles += kind == b"iCCP"
        metadata += kind not in _PNG_PIXELS
        if kind == b"IEND":
            break
        if metadata > MAX_PNG_METADATA or profiles > 1 or chunks > MAX_PNG_CHUNKS:
            many = (
                "more than one colour profile"
                if profiles > 1
                else f"more than {MAX_PNG_METADATA:,} metadata chunks"
                if metadata > MAX_PNG_METADATA
                else f"more than {MAX_PNG_CHUNKS:,} chunks"
            )
            return (
                f"a PNG of {many}, which would take very long to read; save it again as an "
                "ordinary PNG"
            )
    return None


_PNG_PIXELS = frozenset({b"IHDR", b"PLTE", b"IDAT", b"IEND", b"fcTL", b"fdAT", b"acTL"})


def problem(data: bytes) -> str | None:
    """What in `data` would make decoding it costly, judged before any decoder opens it: Pillow
    reads a GIF's metadata as it opens the file, so by then the cost is paid."""
    if data.startswith(b"\xff\xd8\xff"):  # JPEG, and MPO, a JPEG followed by others
        return jpeg_problem(data)
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return gif_problem(data)
    if data[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return tiff_problem(data)
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return png_problem(data)
    return None
