"""Truncation checks (daemon.intake.complete) over real encoder output and every cut of it."""

from __future__ import annotations

import io
import os
import struct
from collections.abc import Callable
from pathlib import Path, PurePath

import numpy as np
import pytest
from PIL import Image

from daemon.intake.complete import MAX_STEPS, ZERO_TAIL, ZERO_TAIL_SEEN, missing_end, truncation

FORMATS = {
    "jpeg": ("JPEG", {}),
    "progressive": ("JPEG", {"progressive": True}),
    "png": ("PNG", {}),
    "gif": ("GIF", {}),
    "webp": ("WEBP", {}),
    "tiff": ("TIFF", {}),
    "tiff-lzw": ("TIFF", {"compression": "tiff_lzw"}),
    "heic": ("HEIF", {}),
}


def _encoded(fmt: str, options: dict[str, object], size: tuple[int, int] = (96, 64)) -> bytes:
    if fmt == "HEIF":
        import pillow_heif

        pillow_heif.register_heif_opener()
    pixels = np.random.default_rng(7).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format=fmt, **options)
    return buffer.getvalue()


def _judge(data: bytes) -> str | None:
    return missing_end(lambda offset, length: data[offset : offset + length], len(data))


def _box_ends(data: bytes) -> set[int]:
    """Where the top-level ISO-BMFF boxes end: a cut exactly there cannot be seen."""
    ends, pos = set(), 0
    while pos + 8 <= len(data):
        pos += int.from_bytes(data[pos : pos + 4], "big")
        ends.add(pos)
    return ends


@pytest.mark.parametrize("name", FORMATS)
def test_whole_files_are_whole_and_every_cut_is_truncated(name: str) -> None:
    data = _encoded(*FORMATS[name])
    assert _judge(data) is None
    blind = _box_ends(data) if name == "heic" else set()
    cuts = [cut for cut in range(16, len(data)) if cut not in blind]
    assert [cut for cut in cuts if _judge(data[:cut]) is None] == []
    reason = _judge(data[: len(data) // 2])
    assert reason is not None and reason.startswith("a ")


@pytest.mark.parametrize("name", FORMATS)
def test_a_photo_whose_size_was_set_first_is_not_whole_until_its_end_is_written(
    name: str,
) -> None:
    """A sync trial: Windows and SMB copies set a file's size, then write it in chunks, and
    WebP, HEIC and TIFF photos (their headers, boxes and strips all within the size set) were
    rendered from their first 256 KiB and zeros. A PNG's zeros read as a corrupt chunk."""
    data = _encoded(*FORMATS[name], size=(256, 192))
    # Down to ZERO_TAIL_SEEN bytes left to write (a re-test: 200 were not seen at 512).
    for left in (len(data) - 16, 3 * len(data) // 4, len(data) // 2, 1024, 200, ZERO_TAIL_SEEN):
        assert _judge(data[:-left] + bytes(left)) is not None, left
    assert _judge(data) is None


@pytest.mark.parametrize("name", ["jpeg", "png", "gif"])
def test_zeros_after_an_end_marker_are_not_the_image_s(name: str) -> None:
    """Some cameras pad a JPEG with zeros after its end marker: its end is written, so it is
    whole, not a copy still filling in a size set first (which would wait arriving_timeout)."""
    assert _judge(_encoded(*FORMATS[name]) + bytes(4096)) is None


def test_an_image_ending_in_black_is_told_as_ending_in_zeros() -> None:
    """Uncompressed, the last rows of a dark photo are zeros: a file still being written, as
    far as its bytes tell (the intake takes it once unchanged for arriving_timeout)."""
    pixels = np.random.default_rng(7).integers(1, 256, (64, 96, 3), dtype=np.uint8)
    pixels[-8:] = 0
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="TIFF")
    assert _judge(buffer.getvalue()) == ZERO_TAIL
    # A sidecar too, and small files: a quarter of them.
    assert _judge(b'{"style": "mosa' + bytes(16)) == ZERO_TAIL
    assert _judge(b'{"style": "mosaic"}') is None


def test_data_after_the_jpeg_end_is_allowed_like_a_motion_photo_s_video() -> None:
    video = b"\x00\x00\x00\x18ftypmp42" + os.urandom(5000)
    assert _judge(_encoded("JPEG", {}) + video) is None


def test_an_exif_thumbnail_s_end_marker_does_not_end_the_photo() -> None:
    thumbnail = _encoded("JPEG", {}, size=(16, 16))
    payload = b"Exif\x00\x00" + thumbnail
    app1 = b"\xff\xe1" + (len(payload) + 2).to_bytes(2, "big") + payload
    photo = _encoded("JPEG", {})
    data = photo[:2] + app1 + photo[2:]
    assert _judge(data) is None
    # Cut right after the thumbnail's end marker: still inside APP1, so still truncated.
    cut = 2 + 4 + len(payload)
    assert data[cut - 2 : cut] == b"\xff\xd9"
    assert _judge(data[:cut]) == "a JPEG without its end marker"
    assert _judge(data[: cut + 10]) == "a JPEG without its end marker"


@pytest.mark.parametrize(
    "data",
    [
        b"\xff\xd8 image bytes",  # SOI, then no marker: corrupt, the decoder says so
        _encoded("JPEG", {})[:20] + b"\x12" * 3000,
        b"\x89PNG\r\n\x1a\n\x00\x00\x00\x0d\x00\x00\x00\x00" + bytes(50) + b"\x01",  # no chunk type
        b"GIF89a" + bytes(7) + b"\x99 not a block",
        b"hello, this is not a photo\n" * 50,  # not a known format: not judged
        bytes(511) + b"x" + bytes(5000) + b"x",  # not zeros at its start or end: not judged
        b"",
    ],
)
def test_corrupt_or_unknown_files_are_not_called_truncated(data: bytes) -> None:
    assert _judge(data) is None


def test_truncation_reads_the_file_and_skips_what_is_not_a_regular_file(tmp_path: Path) -> None:
    data = _encoded("PNG", {})
    whole = tmp_path / "whole.png"
    whole.write_bytes(data)
    cut = tmp_path / "cut.png"
    cut.write_bytes(data[:-5])
    assert truncation(tmp_path, PurePath("whole.png")) is None
    assert truncation(tmp_path, PurePath("cut.png")) == "a PNG without its IEND chunk"
    os.symlink(cut, tmp_path / "link.png")
    os.mkfifo(tmp_path / "fifo.png")
    assert truncation(tmp_path, PurePath("link.png")) is None  # never followed
    assert truncation(tmp_path, PurePath("fifo.png")) is None  # never blocks
    assert truncation(tmp_path, PurePath("missing.png")) is None
    # A folder on the way swapped for a link to one outside: not followed either, so what
    # lies outside is never read, nor its end told (an attacker's trial).
    os.symlink(tmp_path, tmp_path / "sub")
    assert truncation(tmp_path, PurePath("sub/cut.png")) is None


def test_a_big_jpeg_is_judged_quickly(tmp_path: Path) -> None:
    import time

    path = tmp_path / "big.jpg"
    path.write_bytes(_encoded("JPEG", {"quality": 95}, size=(2000, 1500)))
    started = time.perf_counter()
    assert truncation(path.parent, PurePath(path.name)) is None
    assert time.perf_counter() - started < 0.5


def _sparse_tiff(size: int, directories: int) -> bytes:
    """The head of a TIFF whose directories each claim (size - 64 KiB) / 4 strips: what a
    sparse file of 4 KiB on disk can say (an attacker's trial)."""
    data = 1 << 16
    strips = (size - data) // 4
    head = b"II*\x00" + struct.pack("<I", 8)
    offset = 8
    for index in range(directories):
        following = offset + 2 + 24 + 4 if index < directories - 1 else 0
        head += struct.pack("<H", 2)
        head += struct.pack("<HHII", 273, 3, strips, data)
        head += struct.pack("<HHII", 279, 3, strips, data + 2 * strips)
        head += struct.pack("<I", following)
        offset = following
    return head


def test_a_tiff_claiming_millions_of_strips_is_not_judged_and_costs_little(
    tmp_path: Path,
) -> None:
    """A 256 MiB sparse TIFF whose 64 directories each claim 67 million strips held the daemon's
    loop 32 s per directory and 1.2 GB of memory; its strips are steps now (MAX_STEPS), and
    the file is left to the decoder."""
    size = 256 << 20
    head = _sparse_tiff(size, 64)
    asked: list[int] = []

    def read(offset: int, length: int) -> bytes:
        asked.append(length)
        return (head + bytes(1 << 20))[offset : offset + length] if offset < 1 << 20 else b""

    assert missing_end(read, size) is None
    assert sum(asked) <= 4 * MAX_STEPS  # not the 128 MiB of strip pointers it claims
    path = tmp_path / "sparse.tif"
    with path.open("wb") as handle:
        handle.write(head)
        handle.truncate(size)
    assert truncation(tmp_path, PurePath("sparse.tif")) is None


def _endless(head: bytes, unit: bytes, size: int) -> tuple[list[int], Callable[[int, int], bytes]]:
    """A reader of `head` then `unit` over and over up to `size` bytes, without holding them,
    and the list of the lengths asked of it."""
    asked: list[int] = []

    def read(offset: int, length: int) -> bytes:
        asked.append(length)
        out = bytearray()
        while length > 0 and offset < size:
            if offset < len(head):
                piece = head[offset : offset + length]
            else:
                at = (offset - len(head)) % len(unit)
                piece = unit[at : at + length]
            piece = piece[: size - offset]
            out += piece
            offset += len(piece)
            length -= len(piece)
        return bytes(out)

    return asked, read


GIF_HEAD = b"GIF89a" + (1).to_bytes(2, "little") * 2 + b"\0\0\0"


@pytest.mark.parametrize(
    ("head", "unit"),
    [
        # comment extensions of 199,000 one-byte sub-blocks each, and no trailer (an
        # attacker's trial: the limit was counted per chain of sub-blocks, and a 250 MB file
        # held the daemon's loop 30 s)
        (GIF_HEAD, b"\x21\xfe" + b"\x01\x00" * 199_000 + b"\x00"),
        (b"\xff\xd8", b"\xff\xfe\x00\x02"),  # empty JPEG comments, no end marker
        (b"\x89PNG\r\n\x1a\n", b"\x00\x00\x00\x00tEXt\x00\x00\x00\x00"),  # empty chunks
        (b"\x00\x00\x00\x10ftypheic\x00\x00\x00\x00", b"\x00\x00\x00\x08free"),  # empty boxes
    ],
    ids=["gif", "jpeg", "png", "heic"],
)
def test_a_file_of_endless_tiny_structures_is_not_judged_and_costs_one_budget(
    head: bytes, unit: bytes
) -> None:
    """Whatever the format and however its structures nest, one file costs at most MAX_STEPS
    reads: the daemon's loop judges every arriving photo."""
    asked, read = _endless(head, unit, 250 << 20)
    assert missing_end(read, 250 << 20) is None
    assert len(asked) <= MAX_STEPS + 1
