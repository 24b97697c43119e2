"""Whether a photo's structure would make reading it take very long or much memory, judged from
its blocks before any decoder opens it: what the pixel and byte limits do not see.

- A progressive JPEG is decoded by applying each of its scans to the whole picture, so decoding
  costs pixels times scans, and a scan can be a few dozen bytes: a 250 KB file of 1,500 copies
  of one scan at 40 megapixels took a worker 37 s, and 60 MB of them would take hours (an
  attacker's trial). Encoders write 10 scans (libjpeg's progressive mode) to a few dozen
  (mozjpeg's optimised ones), in a few dozen segments.
- Pillow reads the markers before a JPEG's first scan, the blocks before a GIF's first picture
  and a PNG's chunks one at a time in Python, keeping an object for many of them: a 64 MB GIF
  of one-byte comment blocks cost a worker 3 GB and 7 s, 40 MB of copies of one PNG colour
  profile 23 s.
- Pillow makes a piece of work of every strip or tile a TIFF lists: an 8x8 picture listing
  5,000,000 strips (all the same 8 bytes) cost 23 s and 1.35 GB; and an object of every
  fraction in a TIFF-structured directory (a TIFF's own, or an EXIF block's): 8 MB of them,
  30 s (`metadata_problem`; an EXIF block so costly is metadata, which `service.imageio`
  drops rather than refuse the photo).

Each walk takes time linear in the file's size and stops at its limit: the daemon's own thread
runs them on a photo's first MiB (`service.imageio.HEADER_BYTES`), a worker on the whole file.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterator
from typing import Literal

MAX_SCANS = 100
MAX_SEGMENTS = 10_000
MAX_STRAY = 65_536
MAX_GIF_BLOCKS = 1_000_000  # Photoshop's XMP in a GIF reads as one block per ~60 bytes
MAX_GIF_JUNK = 65_536
MAX_TIFF_PARTS = 200_000
FEW_TIFF_PARTS = 10_000  # more than the size needs, but few: damage libtiff trims, cheap
MAX_TIFF_TAGS = 4_096
MAX_FRACTIONS = 4_096
MAX_PNG_METADATA = 1_000
MAX_PNG_CHUNKS = 200_000
MAX_WEBP_CHUNKS = 100_000
MAX_PROFILE_TAGS = 1_000
MAX_PROFILE_ELEMENTS = 64
MAX_RLE_PIXELS = 4_000_000
MAX_BOXES = 10_000
MAX_HEIF_IMAGES = 64
MAX_HEIF_COPIES = 64 << 20

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

_TIFF_HEADERS = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+", b"II\x00*", b"MM*\x00")
_TIFF_PARTS = {273: "strips", 279: "strips", 324: "tiles", 325: "tiles"}  # offsets, sizes
_TIFF_SIZES = (256, 257, 277, 278, 284, 322, 323)  # sizes, samples, rows, planar, tile sizes
_TIFF_INTS = {3: 2, 4: 4, 16: 8}  # SHORT, LONG, LONG8: their sizes in bytes
_FRACTIONS = frozenset({5, 10})  # RATIONAL, SRATIONAL
_SUB_DIRECTORIES = frozenset({34665, 34853, 40965})  # EXIF, GPS, interoperability

_PNG_PIXELS = frozenset({b"IHDR", b"PLTE", b"IDAT", b"IEND", b"fcTL", b"fdAT", b"acTL"})

_HEIF_IMAGES = frozenset(
    {b"hvc1", b"av01", b"grid", b"iovl", b"iden", b"jpeg", b"avc1", b"unci", b"j2k1", b"vvc1"}
)
_HEIF_METADATA = frozenset({b"Exif", b"mime", b"uri "})


def problem(data: bytes) -> str | None:
    """What in `data` would make reading it costly ("a JPEG of more than 100 progressive scans
    (...), which would take very long to read; save it again ..."), or None. Judged before a
    decoder opens the file: Pillow reads a GIF's or a PNG's metadata as it opens it."""
    if data.startswith(b"\xff\xd8\xff"):  # JPEG, and MPO, a JPEG followed by others
        return jpeg_problem(data)
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return gif_problem(data)
    if data[:4] in _TIFF_HEADERS:  # Pillow's, each of them
        return tiff_problem(data)
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return png_problem(data)
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return webp_problem(data)
    if data[:2] == b"BM":
        return bmp_problem(data)
    if data[4:8] == b"ftyp":  # HEIF, AVIF: ISO base media
        return heif_problem(data)
    return None


def _refused(what: str, usual: str, fix: str) -> str:
    return f"{what} ({usual}), which would take very long to read; save it again as {fix}"


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
            return _refused(
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
            return _refused(
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
                return _refused(
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


def gif_problem(data: bytes) -> str | None:
    """The blocks before a GIF's first picture, read as Pillow reads them: a stray byte skipped,
    each extension and each of its sub-blocks up to an empty one."""
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
                return _refused(
                    f"a GIF of more than {MAX_GIF_JUNK:,} stray bytes before its picture",
                    "editors write none",
                    "an ordinary GIF or as a PNG",
                )
            continue
        at += 1  # the extension's label
        blocks += 1  # an extension, even an empty one, is a step of Pillow's loop
        while at < len(data) and (size := data[at]) and blocks <= MAX_GIF_BLOCKS:
            at += 1 + size
            blocks += 1
        if blocks > MAX_GIF_BLOCKS:
            return _refused(
                f"a GIF of more than {MAX_GIF_BLOCKS:,} metadata blocks before its picture",
                "editors write far fewer",
                "an ordinary GIF or as a PNG",
            )
        at += 1
    return None


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
            return _refused(
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
    if data[:4] not in _TIFF_HEADERS:
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
            return _refused(
                f"{kind} whose metadata lists more than {MAX_TIFF_TAGS:,} tags in one directory",
                "cameras and scanners write a few dozen",
                fix,
            )
        for tag, kind_of_value, count, value in entries:
            fractions = kind_of_value in _FRACTIONS and count > MAX_FRACTIONS
            if fractions and _present(data, order, big, value, 8 * count):
                return _refused(
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


def png_problem(data: bytes) -> str | None:
    """A PNG's chunks, up to IEND. Its pixels may be split into many IDAT chunks (and an APNG's
    frames into fdAT ones), counted apart from the few metadata chunks a writer adds."""
    at, metadata, chunks = 8, 0, 0
    while at + 8 <= len(data):
        length = int.from_bytes(data[at : at + 4], "big")
        kind = data[at + 4 : at + 8]
        at += 12 + length
        chunks += 1
        metadata += kind not in _PNG_PIXELS
        if kind == b"IEND":
            break
        if metadata > MAX_PNG_METADATA:
            return _refused(
                f"a PNG of more than {MAX_PNG_METADATA:,} metadata chunks",
                "editors write a few",
                "an ordinary PNG",
            )
        if chunks > MAX_PNG_CHUNKS:
            return _refused(
                f"a PNG of more than {MAX_PNG_CHUNKS:,} chunks",
                "editors write a few hundred at most",
                "an ordinary PNG",
            )
    return None


def webp_problem(data: bytes) -> str | None:
    """A WebP's chunks, which libwebp reads in C: more than `MAX_WEBP_CHUNKS` (an animation's
    frames are chunks: a few thousand at most) would make a walk of them take long."""
    at = 12
    for _ in range(MAX_WEBP_CHUNKS):
        if at + 8 > len(data):
            return None
        length = int.from_bytes(data[at + 4 : at + 8], "little")
        at += 8 + length + (length & 1)
    return _refused(
        f"a WebP of more than {MAX_WEBP_CHUNKS:,} chunks",
        "editors write far fewer",
        "an ordinary WebP",
    )


def profile_problem(icc: bytes) -> str | None:
    """What makes the ICC colour profile `icc` costly for LittleCMS to build a transform from,
    or None. A multi-process-element tag (`mpet`, which the float D2Bx tags hold) whose
    elements all point at one 60-byte matrix costs 8 bytes an element in the file and time
    quadratic in their count: 20,000 of them, a 640-byte PNG, held a worker 14 s, and a JPEG
    can carry a profile of 2,000,000 (an attacker's fourth round). Profiles carry a few dozen
    tags, and such a tag a few elements. A profile is metadata: `service.imageio` takes the
    pixels as sRGB without it, as it does an unreadable one."""
    if len(icc) < 132:
        return None
    tags = int.from_bytes(icc[128:132], "big")
    if tags > MAX_PROFILE_TAGS:
        return f"{tags:,} tags, where profiles carry a few dozen"
    for index in range(min(tags, (len(icc) - 132) // 12)):
        entry = 132 + 12 * index
        at = int.from_bytes(icc[entry + 4 : entry + 8], "big")
        if icc[at : at + 4] == b"mpet":
            elements = int.from_bytes(icc[at + 12 : at + 16], "big")
            if elements > MAX_PROFILE_ELEMENTS:
                return f"{elements:,} processing elements, where profiles use a few"
    return None


def bmp_problem(data: bytes) -> str | None:
    """A BMP compressed with run lengths (RLE8, RLE4), which Pillow decodes in Python a step per
    pixel: a 5 KB file of 40 megapixels whose every row ends at once took 3.9 s (an attacker's
    fourth round). Such files are small drawings and icons; a larger picture is refused."""
    if len(data) < 34 or int.from_bytes(data[14:18], "little") < 40:  # no compression field
        return None
    width, height = (
        abs(int.from_bytes(data[at : at + 4], "little", signed=True)) for at in (18, 22)
    )
    if int.from_bytes(data[30:34], "little") in (1, 2) and width * height > MAX_RLE_PIXELS:
        return _refused(
            f"a BMP of {width * height:,} pixels compressed with run lengths",
            f"read a pixel at a time; stylefold reads up to {MAX_RLE_PIXELS:,}",
            "a PNG",
        )
    return None


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
        return _refused(
            f"a HEIF of {images:,} images", "phones write one or two", "an ordinary HEIC or JPEG"
        )
    spans = _heif_extents(data, _child(data, start, end, b"iloc"))
    for item, extents in spans.items():
        extents.sort()
        if any(a + length > b for (a, length), (b, _) in itertools.pairwise(extents)):
            return _refused(
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
        return _refused(
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
