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
`MAX_GIF_JUNK` stray bytes before it are refused.
"""

from __future__ import annotations

import re

MAX_SCANS = 100
MAX_SEGMENTS = 10_000
MAX_STRAY = 65_536
MAX_GIF_BLOCKS = 65_536
MAX_GIF_JUNK = 65_536

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


def problem(data: bytes) -> str | None:
    """What in `data` would make decoding it costly, judged before any decoder opens it: Pillow
    reads a GIF's metadata as it opens the file, so by then the cost is paid."""
    if data.startswith(b"\xff\xd8\xff"):  # JPEG, and MPO, a JPEG followed by others
        return jpeg_problem(data)
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return gif_problem(data)
    return None
