"""JPEG: scans, marker segments and stray bytes, counted as libjpeg and Pillow read them."""

from __future__ import annotations

import re

from service.decode_cost.refusal import refused

MAX_SCANS = 100
MAX_SEGMENTS = 10_000
MAX_STRAY = 65_536

_SOS, _EOI = 0xDA, 0xD9
# Markers with no length: restarts (RSTn) and TEM; before the first scan also those Pillow
# reads without one (SOI, EOI, JPG, JPGn), each one more step of its Python loop.
_NO_LENGTH = frozenset({0x01, *range(0xD0, 0xD8)})
_NO_LENGTH_BEFORE_SCANS = frozenset({0x01, 0xC8, *range(0xD0, 0xDA), *range(0xF0, 0xFE)})
# The first byte after a run of 0xFF: a marker's code. Searched for in a step of its own, as a
# pattern of a 0xFF run and a code took time quadratic in the run (40 KB of 0xFF: 7 s, in the
# daemon's own thread, an attacker's re-test).
_NOT_FILL = re.compile(rb"[^\xff]")
# Where a scan's coded data ends: a run of 0xFF (from its start: the look-behind keeps the
# search linear) ending in a code that is neither a stuffed 0x00 nor a restart, before either
# of which fill bytes may come too (a loop over `FF FF 00` took a Python step per 3 bytes:
# 40 MB in 5.5 s, an attacker's third round).
_AFTER_SCAN = re.compile(rb"(?<!\xff)\xff+[^\x00\xd0-\xd7\xff]")


def jpeg_problem(data: bytes) -> str | None:
    """Markers are found as libjpeg finds them (`next_marker`): bytes that are not 0xFF are
    skipped, then fill bytes 0xFF, and a code of 0 is junk too (one junk byte before the scans
    hid 10,000 of them from a walk that stopped there, an attacker's re-test); libjpeg only
    warns of such stray bytes, and Pillow walks them one at a time. Segments are skipped by
    their length, a length below 2 skipping nothing (libjpeg's `skip_variable`: a comment of
    length 0 hid 30,000 scans), so bytes that look like markers inside metadata (an EXIF
    thumbnail is a JPEG of its own) are not counted, nor, after the scans, is what follows the
    first EOI (an MPO's second picture). A cut stream is judged by what it holds."""
    scans = segments = stray = 0
    at, end = 2, len(data)
    while at < end:
        fill = data.find(b"\xff", at)
        code = _NOT_FILL.search(data, fill) if fill >= 0 else None
        code_at = end if code is None else code.start()
        marker = data[code_at] if code_at < end else None
        stray += code_at - at - 1 + (2 if marker == 0 else 0)  # before the 0xFF, fill, junk
        if stray > MAX_STRAY:
            return refused(
                f"a JPEG of more than {MAX_STRAY:,} stray bytes between its segments",
                "cameras and editors write none",
                "an ordinary JPEG",
            )
        if marker is None:
            break
        at = code_at + 1
        if marker == 0:
            continue
        segments += 1
        if segments > MAX_SEGMENTS:
            return refused(
                f"a JPEG of more than {MAX_SEGMENTS:,} marker segments",
                "cameras and editors write a few dozen",
                "an ordinary JPEG",
            )
        if marker in (_NO_LENGTH if scans else _NO_LENGTH_BEFORE_SCANS):
            continue
        if marker == _EOI or at + 2 > end:
            break
        at += max(int.from_bytes(data[at : at + 2], "big"), 2)
        if marker == _SOS:
            scans += 1
            if scans > MAX_SCANS:
                return refused(
                    f"a JPEG of more than {MAX_SCANS} progressive scans",
                    "cameras and editors write a few dozen",
                    "an ordinary JPEG",
                )
            at = _scan_end(data, at)
    return None


def _scan_end(data: bytes, at: int) -> int:
    """Where the marker after a scan's coded data begins (its fill bytes first)."""
    found = _AFTER_SCAN.search(data, at)
    return len(data) if found is None else found.start()
