"""Whether a JPEG's structure would make its decoding take very long, read from its markers
without decoding it.

A progressive JPEG is decoded by applying each of its scans to the whole picture, so decoding
costs pixels times scans, and a scan can be a few dozen bytes: a 250 KB file of 1,500 copies of
one scan at 40 megapixels took a worker 37 s to decode, and 60 MB of them would take hours (an
attacker's trial), all inside the pixel and byte limits. Encoders write 10 scans (libjpeg's
progressive mode) to a few dozen (mozjpeg's optimised ones) in a few dozen segments, so a file
of more than `MAX_SCANS` scans, or `MAX_SEGMENTS` segments (which would make this walk itself
slow), is refused before it is decoded.
"""

from __future__ import annotations

import re

MAX_SCANS = 100
MAX_SEGMENTS = 10_000

_SOS, _EOI = 0xDA, 0xD9
# A marker, found as libjpeg finds it (`next_marker`): whatever is not 0xFF is skipped (with a
# warning Pillow does not pass on: one junk byte before the scans hid 10,000 of them from a
# walk that stopped there, an attacker's re-test), then fill bytes 0xFF, then a code that is
# not 0 (0xFF 0x00 outside a scan is junk too).
_MARKER = re.compile(rb"\xff+([^\xff\x00])")
# The end of a scan's coded data: a 0xFF that is neither a stuffed 0xFF 0x00 nor a restart.
_AFTER_SCAN = re.compile(rb"\xff[^\x00\xd0-\xd7]")


def too_complex(data: bytes) -> str | None:
    """What makes the JPEG `data` too slow to decode ("more than 100 progressive scans"), or
    None. Markers are walked segment by segment up to the first EOI, so bytes that look like a
    marker inside metadata (an EXIF thumbnail is a JPEG of its own) are not counted, nor is the
    second picture of an MPO; junk between segments is skipped as the decoder skips it, and a
    cut or damaged stream is judged by the markers found, its decoder saying what is wrong."""
    scans, segments, at = 0, 0, 2
    while (found := _MARKER.search(data, at)) is not None:
        marker, at = found[1][0], found.end()
        if 0xD0 <= marker <= 0xD7 or marker == 0x01:  # RSTn, TEM: no length follows
            continue
        if marker == _EOI or at + 2 > len(data):
            break
        length = int.from_bytes(data[at : at + 2], "big")
        if length < 2:
            break
        segments += 1
        if segments > MAX_SEGMENTS:
            return f"more than {MAX_SEGMENTS:,} marker segments"
        at += length
        if marker == _SOS:
            scans += 1
            if scans > MAX_SCANS:
                return f"more than {MAX_SCANS} progressive scans"
            coded_end = _AFTER_SCAN.search(data, at)
            at = len(data) if coded_end is None else coded_end.start()
    return None
