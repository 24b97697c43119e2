"""HEIF and AVIF (ISO base media): images, and the metadata pillow-heif copies into each."""

from __future__ import annotations

import itertools
from collections.abc import Iterator

from service.decode_cost.refusal import refused

MAX_BOXES = 10_000
MAX_HEIF_IMAGES = 64
MAX_HEIF_COPIES = 64 << 20

_HEIF_IMAGES = frozenset(
    {b"hvc1", b"av01", b"grid", b"iovl", b"iden", b"jpeg", b"avc1", b"unci", b"j2k1", b"vvc1"}
)
_HEIF_METADATA = frozenset({b"Exif", b"mime", b"uri "})


def _boxes(data: bytes, start: int, end: int) -> Iterator[tuple[bytes, int, int]]:
    """The ISO base media boxes between `start` and `end`: (type, where its content begins,
    where it ends), at most MAX_BOXES of them."""
    at = start
    for _ in range(MAX_BOXES):
        if at + 8 > end:
            return
        size, kind, header = int.from_bytes(data[at : at + 4], "big"), data[at + 4 : at + 8], 8
        if size == 1:
            size, header = int.from_bytes(data[at + 8 : at + 16], "big"), 16
        elif size == 0:
            size = end - at
        if size < header:
            return
        yield kind, at + header, min(at + size, end)
        at += size


def _child(data: bytes, start: int, end: int, kind: bytes) -> tuple[int, int] | None:
    return next(((a, b) for found, a, b in _boxes(data, start, end) if found == kind), None)


def heif_problem(data: bytes) -> str | None:
    """What makes a HEIF or AVIF costly to open: pillow-heif copies every metadata item (EXIF,
    XMP) and colour profile of the file into each of its top-level images as it opens it, so
    999 images sharing one 0.95 MB EXIF item cost 1 GB in the daemon's own header look, and an
    item listing the same bytes 32 times multiplies that by 32 (an attacker's fourth round).
    Phones write one image (its tiles hidden) and a thumbnail, and each item once."""
    meta = _child(data, 0, len(data), b"meta")
    if meta is None:
        return None
    start, end = meta[0] + 4, meta[1]  # a full box: version and flags first
    images, metadata_items = _heif_items(data, _child(data, start, end, b"iinf"))
    if images > MAX_HEIF_IMAGES:
        return refused(
            f"a HEIF of {images:,} images", "phones write one or two", "an ordinary HEIC or JPEG"
        )
    spans = _heif_extents(data, _child(data, start, end, b"iloc"))
    for item, extents in spans.items():
        extents.sort()
        if any(a + length > b for (a, length), (b, _) in itertools.pairwise(extents)):
            return refused(
                f"a HEIF whose item {item} lists the same bytes more than once",
                "writers list each once",
                "an ordinary HEIC or JPEG",
            )
    described = _heif_described(data, _child(data, start, end, b"iref"))
    copied = sum(
        length * described.get(item, 0)
        for item in metadata_items
        for _, length in spans.get(item, [])
    )
    properties = _child(data, start, end, b"iprp")
    ipco = None if properties is None else _child(data, *properties, b"ipco")
    if ipco is not None:  # each image's colour profile, taken to be all of them, at most 64
        copied += images * sum(b - a for kind, a, b in _boxes(data, *ipco) if kind == b"colr")
    if copied > MAX_HEIF_COPIES:
        return refused(
            f"a HEIF whose images would take {copied:,} bytes of copies of its metadata",
            "phones write a few thousand",
            "an ordinary HEIC or JPEG",
        )
    return None


def _heif_described(data: bytes, iref: tuple[int, int] | None) -> dict[int, int]:
    """How many items each item describes (`cdsc` references: an EXIF or XMP item names the
    images it belongs to, and each of them takes a copy)."""
    if iref is None:
        return {}
    wide = data[iref[0]] != 0
    size = 4 if wide else 2
    found: dict[int, int] = {}
    for kind, a, _ in _boxes(data, iref[0] + 4, iref[1]):
        if kind == b"cdsc":
            item = int.from_bytes(data[a : a + size], "big")
            count = int.from_bytes(data[a + size : a + size + 2], "big")
            found[item] = found.get(item, 0) + count
    return found


def _heif_items(data: bytes, iinf: tuple[int, int] | None) -> tuple[int, set[int]]:
    """The count of image items that are not hidden (a tiled photo hides its tiles), and the
    ids of the metadata items (EXIF, XMP)."""
    if iinf is None:
        return 0, set()
    version, at = data[iinf[0]], iinf[0] + 4
    at += 2 if version == 0 else 4  # the entry count: the boxes themselves are counted
    images, metadata = 0, set()
    for kind, a, _ in _boxes(data, at, iinf[1]):
        if kind != b"infe" or data[a] < 2:
            continue
        hidden, wide = data[a + 3] & 1, data[a] >= 3
        item = int.from_bytes(data[a + 4 : a + (8 if wide else 6)], "big")
        item_type = data[a + (10 if wide else 8) : a + (14 if wide else 12)]
        if item_type in _HEIF_METADATA:
            metadata.add(item)
        elif item_type in _HEIF_IMAGES and not hidden:
            images += 1
    return images, metadata


def _heif_extents(data: bytes, iloc: tuple[int, int] | None) -> dict[int, list[tuple[int, int]]]:
    """Each item's extents (offset, length) from the `iloc` box."""
    if iloc is None:
        return {}
    at, end = iloc
    version = data[at]
    sizes = data[at + 4], data[at + 5]
    offset_size, length_size = sizes[0] >> 4, sizes[0] & 15
    base_size, index_size = sizes[1] >> 4, (sizes[1] & 15) if version in (1, 2) else 0
    id_size = 4 if version == 2 else 2
    count = int.from_bytes(data[at + 6 : at + 6 + id_size], "big")
    at += 6 + id_size
    found: dict[int, list[tuple[int, int]]] = {}
    for _ in range(min(count, MAX_BOXES)):
        item = int.from_bytes(data[at : at + id_size], "big")
        at += id_size + (2 if version in (1, 2) else 0) + 2  # construction method, reference
        base = int.from_bytes(data[at : at + base_size], "big")
        extents = int.from_bytes(data[at + base_size : at + base_size + 2], "big")
        at += base_size + 2
        for _ in range(min(extents, MAX_BOXES)):
            at += index_size
            offset = int.from_bytes(data[at : at + offset_size], "big")
            length = int.from_bytes(data[at + offset_size : at + offset_size + length_size], "big")
            at += offset_size + length_size
            found.setdefault(item, []).append((base + offset, length))
        if at > end:
            break
    return found
