"""TIFF, and the TIFF-structured metadata of an EXIF block: strips, tiles, tags, fractions."""

from __future__ import annotations

from typing import Literal

from service.decode_cost.refusal import refused

MAX_TIFF_PARTS = 200_000
FEW_TIFF_PARTS = 10_000  # more than the size needs, but few: damage libtiff trims, cheap
MAX_TIFF_TAGS = 4_096
MAX_FRACTIONS = 4_096

TIFF_HEADERS = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+", b"II\x00*", b"MM*\x00")
_TIFF_PARTS = {273: "strips", 279: "strips", 324: "tiles", 325: "tiles"}  # offsets, sizes
_TIFF_SIZES = (256, 257, 277, 278, 284, 322, 323)  # sizes, samples, rows, planar, tile sizes
_TIFF_INTS = {3: 2, 4: 4, 16: 8}  # SHORT, LONG, LONG8: their sizes in bytes
_FRACTIONS = frozenset({5, 10})  # RATIONAL, SRATIONAL
_SUB_DIRECTORIES = frozenset({34665, 34853, 40965})  # EXIF, GPS, interoperability


def tiff_problem(data: bytes) -> str | None:
    """The strips or tiles a TIFF's first directory lists, against what its size needs, and its
    metadata (`metadata_problem`). The header is read as Pillow reads it (BigTIFF when its
    third byte is 43), and a tag given twice is judged by its costliest value. A directory past
    the bytes given is left to the decoder."""
    if (told := metadata_problem(data, "a TIFF", "an ordinary TIFF")) is not None:
        return told
    order, big = _tiff_layout(data)
    entries = _directory(data, order, big, _first_directory(data, order, big))
    sizes: dict[int, int] = {}
    parts: dict[int, int] = {}
    for tag, kind, count, value in entries:
        if tag in _TIFF_PARTS:
            parts[tag] = max(parts.get(tag, 0), count)
        elif tag in _TIFF_SIZES and kind in _TIFF_INTS and count == 1:
            found = int.from_bytes(data[value : value + _TIFF_INTS[kind]], order)
            sizes[tag] = min(sizes.get(tag, found), found)
    for tag, listed in parts.items():
        needed = _tiff_parts_needed(tag, sizes)
        limit = min(max(needed, FEW_TIFF_PARTS), MAX_TIFF_PARTS)
        if listed > limit:
            return refused(
                f"a TIFF listing {listed:,} {_TIFF_PARTS[tag]} where its size needs {needed:,}",
                f"stylefold reads at most {limit:,}",
                "an ordinary TIFF, or as a PNG",
            )
    return None


def metadata_problem(
    data: bytes, kind: str = "an EXIF block", fix: str = "a photo without it"
) -> str | None:
    """What makes the TIFF-structured `data` (a TIFF, or the EXIF block a JPEG, PNG or WebP
    carries) costly to read: its first directory and the EXIF, GPS and interoperability ones
    it points to, which Pillow reads whole to find a photo's orientation and copies into the
    result. A fraction (RATIONAL) costs Pillow an object of a hundred bytes and microseconds, an
    entry some twenty microseconds: a TIFF of four directories of a million fractions each,
    8 MB, cost a worker 30 s and 638 MB, a 16 MB PNG whose EXIF orientation was a list of them
    4.4 s (an attacker's third round). An EXIF block is metadata: `service.imageio` reads a
    photo without it (a damaged EXIF block costs its metadata, never the photo)."""
    if data[:6] == b"Exif\x00\x00":
        data = data[6:]
    if data[:4] not in TIFF_HEADERS:
        return None
    order, big = _tiff_layout(data)
    pending, seen = [_first_directory(data, order, big)], set[int]()
    while pending and len(seen) < 8:
        at = pending.pop()
        if at in seen:
            continue
        seen.add(at)
        entries = _directory(data, order, big, at)
        if len(entries) > MAX_TIFF_TAGS:
            return refused(
                f"{kind} whose metadata lists more than {MAX_TIFF_TAGS:,} tags in one directory",
                "cameras and scanners write a few dozen",
                fix,
            )
        for tag, kind_of_value, count, value in entries:
            fractions = kind_of_value in _FRACTIONS and count > MAX_FRACTIONS
            if fractions and _present(data, order, big, value, 8 * count):
                return refused(
                    f"{kind} whose metadata holds a list of {count:,} fractions",
                    "cameras write a few",
                    fix,
                )
            if tag in _SUB_DIRECTORIES and count == 1:
                pending.append(int.from_bytes(data[value : value + (8 if big else 4)], order))
    return None


def _tiff_layout(data: bytes) -> tuple[Literal["little", "big"], bool]:
    return ("little" if data[:2] == b"II" else "big"), data[2] == 0x2B


def _first_directory(data: bytes, order: Literal["little", "big"], big: bool) -> int:
    return int.from_bytes(data[8:16] if big else data[4:8], order)


def _directory(
    data: bytes, order: Literal["little", "big"], big: bool, at: int
) -> list[tuple[int, int, int, int]]:
    """A directory's entries that lie within `data`, as Pillow reads them until it runs out
    (a damaged count costs nothing more: a damaged EXIF must cost its metadata, never the
    photo), up to one more than MAX_TIFF_TAGS: (tag, type, count, where its value, or its
    value's offset, lies)."""
    word, count_size, entry_size = (8, 8, 20) if big else (4, 2, 12)
    if at + count_size > len(data):
        return []
    claimed = int.from_bytes(data[at : at + count_size], order)
    present = (len(data) - at - count_size) // entry_size
    entries = []
    for index in range(min(claimed, present, MAX_TIFF_TAGS + 1)):
        entry = at + count_size + index * entry_size
        tag, kind = (int.from_bytes(data[entry + i : entry + i + 2], order) for i in (0, 2))
        count = int.from_bytes(data[entry + 4 : entry + 4 + word], order)
        entries.append((tag, kind, count, entry + 4 + word))
    return entries


def _present(data: bytes, order: Literal["little", "big"], big: bool, at: int, size: int) -> bool:
    """Whether a value of `size` bytes, in or pointed to from the field at `at`, lies within
    `data` (Pillow reads no value past the end: that costs nothing)."""
    word = 8 if big else 4
    if size <= word:
        return True
    return int.from_bytes(data[at : at + word], order) + size <= len(data)


def _tiff_parts_needed(tag: int, sizes: dict[int, int]) -> int:
    width, height = sizes.get(256, 1), sizes.get(257, 1)
    planes = sizes.get(277, 1) if sizes.get(284, 1) == 2 else 1
    if tag in (273, 279):  # StripOffsets, StripByteCounts
        rows = max(1, min(sizes.get(278, height), height))
        return -(-height // rows) * planes
    across, down = max(1, sizes.get(322, width)), max(1, sizes.get(323, height))
    return -(-width // across) * -(-height // down) * planes
