"""Photos whose structure makes decoding them cost minutes or gigabytes (a JPEG of very many
progressive scans, a GIF of very many metadata blocks) are refused before they are decoded."""

import io
import struct
from pathlib import Path

import pytest
from PIL import Image

from service.decode_cost import (
    MAX_GIF_BLOCKS,
    MAX_GIF_JUNK,
    MAX_SCANS,
    MAX_SEGMENTS,
    MAX_STRAY,
    gif_problem,
    jpeg_problem,
)
from service.errors import ImageInputError
from service.imageio import header_problem, open_image

SCANS = (
    f"a JPEG of more than {MAX_SCANS} progressive scans (cameras and editors write far fewer), "
    "which would take very long to decode; save it again as an ordinary JPEG"
)


def _jpeg(progressive: bool, mode: str = "RGB") -> bytes:
    out = io.BytesIO()
    Image.new(mode, (48, 40), (90, 140, 30) if mode == "RGB" else 90).save(
        out, "JPEG", progressive=progressive, quality=80
    )
    return out.getvalue()


def _segments(data: bytes) -> list[tuple[int, bytes]]:
    """(marker, the segment's bytes, a scan's coded data included) up to EOI: the test's own
    walk, written the plain way the attacker's script did."""
    found, at = [], 2
    while data[at + 1] != 0xD9:
        marker = data[at + 1]
        end = at + 2 + int.from_bytes(data[at + 2 : at + 4], "big")
        if marker == 0xDA:
            while not (
                data[end] == 0xFF and data[end + 1] != 0 and not 0xD0 <= data[end + 1] <= 0xD7
            ):
                end += 1
        found.append((marker, data[at:end]))
        at = end
    return found


def _with_scans(extra: int, before_scans: bytes = b"") -> bytes:
    """A progressive JPEG whose last scan is repeated `extra` more times (each repeat costs a
    decode of the whole picture and a few dozen bytes), `before_scans` put after SOI."""
    segments = _segments(_jpeg(progressive=True))
    last = [body for marker, body in segments if marker == 0xDA][-1]
    body = b"".join(body for _, body in segments)
    return b"\xff\xd8" + before_scans + body + last * extra + b"\xff\xd9"


def _scans(data: bytes) -> int:
    return sum(marker == 0xDA for marker, _ in _segments(data))


def test_ordinary_jpegs_are_read() -> None:
    for data in (_jpeg(progressive=False), _jpeg(progressive=False, mode="L")):
        assert jpeg_problem(data) is None and _scans(data) == 1
    progressive = _jpeg(progressive=True)
    assert 2 < _scans(progressive) <= 12  # libjpeg's progression: 10 for colour
    assert jpeg_problem(progressive) is None
    assert open_image(progressive).image.size == (48, 40)


def test_marker_bytes_inside_metadata_are_not_scans() -> None:
    """An APP segment full of FF DA (as an EXIF thumbnail, a JPEG of its own, holds) is walked
    over by its length."""
    noise = b"\xff\xda\x00\x0c" * (MAX_SCANS + 50)
    app = b"\xff\xef" + (len(noise) + 2).to_bytes(2, "big") + noise
    data = _with_scans(0, before_scans=app)
    assert jpeg_problem(data) is None
    assert open_image(data).image.size == (48, 40)


def test_a_jpeg_of_too_many_scans_is_refused_by_its_header_and_its_decode(tmp_path: Path) -> None:
    """An attacker's trial: 1,500 copies of one scan at 40 megapixels, 250 KB, took a worker
    37 s to decode (60 MB of them: hours). Here at 48x40 the limit itself is checked: one scan
    more than MAX_SCANS is refused, MAX_SCANS is read."""
    base = _scans(_jpeg(progressive=True))
    at_limit = _with_scans(MAX_SCANS - base)
    assert _scans(at_limit) == MAX_SCANS and jpeg_problem(at_limit) is None
    assert open_image(at_limit).image.size == (48, 40)
    over = _with_scans(MAX_SCANS - base + 1)
    assert jpeg_problem(over) == SCANS
    path = tmp_path / "bomb.jpg"
    path.write_bytes(over)
    told = (
        f"{path} is a JPEG of more than {MAX_SCANS} progressive scans (cameras and editors "
        "write far fewer), which would take very long to decode; save it again as an "
        "ordinary JPEG"
    )
    assert header_problem(path) == told
    with pytest.raises(ImageInputError) as refused:
        open_image(path)
    assert str(refused.value) == told


def test_a_flood_of_segments_is_refused_before_the_walk_is_slow() -> None:
    """Four-byte comments by the million would make the walk itself take seconds."""
    flood = b"\xff\xfe\x00\x02" * (MAX_SEGMENTS + 1)
    assert jpeg_problem(_with_scans(0, before_scans=flood)).startswith(  # type: ignore[union-attr]
        f"a JPEG of more than {MAX_SEGMENTS:,} marker segments (cameras"
    )
    assert jpeg_problem(_with_scans(0, before_scans=flood[: 4 * 100])) is None


def test_only_the_first_picture_of_the_file_is_judged() -> None:
    """An MPO (a phone's portrait photo) holds a second JPEG after the first one's EOI."""
    assert jpeg_problem(_jpeg(progressive=True) + _with_scans(500)) is None


@pytest.mark.parametrize("cut", [3, 10, 200, -40])
def test_junk_anywhere_hides_no_scan(cut: int) -> None:
    """An attacker's re-test: one 0x00 before the first scan stopped the walk, and the 10,000
    scans after it, which libjpeg finds by skipping the junk (Pillow passes on no warning),
    took a worker 25 s. Junk, and 0xFF 0x00 outside a scan, are skipped as libjpeg skips them."""
    for junk in (b"\x00", b"\x00" * 50, b"\xff\x00\x12\xff\x00"):
        data = _with_scans(3)
        assert jpeg_problem(data[:cut] + junk + data[cut:]) is None
        many = _with_scans(MAX_SCANS)
        expected = SCANS
        assert jpeg_problem(many[:cut] + junk + many[cut:]) == expected


def test_a_cut_stream_is_judged_by_what_it_holds() -> None:
    data = _with_scans(MAX_SCANS)
    assert jpeg_problem(data[:3]) is None and jpeg_problem(data[:200]) is None
    assert jpeg_problem(data[:-40]) == SCANS


def test_the_re_testers_file_decodes_and_so_is_refused() -> None:
    """One junk byte right before the first scan: the decoder reads the picture (so its scans
    cost), and the walk counts them."""
    data = _with_scans(3)
    first = data.index(b"\xff\xda")
    assert open_image(data[:first] + b"\x00" + data[first:]).image.size == (48, 40)
    many = _with_scans(MAX_SCANS)
    first = many.index(b"\xff\xda")
    with pytest.raises(ImageInputError, match="more than 100 progressive scans"):
        open_image(many[:first] + b"\x00" + many[first:])


def _gif(metadata: bytes) -> bytes:
    """A 1x1 GIF with `metadata` (extensions, junk) between its header and its picture."""
    header = b"GIF89a" + struct.pack("<HHBBB", 1, 1, 0x80, 0, 0) + b"\x00\x00\x00\xff\xff\xff"
    picture = b"," + struct.pack("<HHHHB", 0, 0, 1, 1, 0) + b"\x02\x02\x44\x01\x00;"
    return header + metadata + picture


def _blocks(label: int, count: int) -> bytes:
    return b"!" + bytes([label]) + b"\x01A" * count + b"\x00"


def test_a_gif_of_ordinary_metadata_is_read() -> None:
    out = io.BytesIO()
    Image.new("P", (20, 10), 3).save(out, "GIF", comment=b"made by hand" * 100, loop=0)
    assert gif_problem(out.getvalue()) is None
    assert open_image(out.getvalue()).image.size == (20, 10)
    few = _gif(_blocks(0xFE, 1000) + _blocks(0x99, 1000) + b"\x07" * 100)
    assert gif_problem(few) is None and open_image(few).image.size == (1, 1)


@pytest.mark.parametrize(
    ("metadata", "what"),
    [
        (_blocks(0xFE, MAX_GIF_BLOCKS + 1), f"{MAX_GIF_BLOCKS:,} metadata blocks"),
        (_blocks(0xFE, 40_000) + _blocks(0xFF, 30_000), f"{MAX_GIF_BLOCKS:,} metadata blocks"),
        (b"\x07" * (MAX_GIF_JUNK + 1), f"{MAX_GIF_JUNK:,} stray bytes"),
    ],
)
def test_a_gif_of_too_many_blocks_before_its_picture_is_refused(
    tmp_path: Path, metadata: bytes, what: str
) -> None:
    """An attacker's re-test: a 64 MB GIF of one-byte comment blocks cost a worker 3 GB and 7 s
    (Pillow keeps each block as an object), and the page's thumbnail the same at each view."""
    path = tmp_path / "comments.gif"
    path.write_bytes(_gif(metadata))
    told = (
        f"{path} is a GIF of more than {what} before its picture (editors write a few hundred "
        "at most), which would take very long to read; save it again as an ordinary GIF or as "
        "a PNG"
    )
    assert header_problem(path) == told
    with pytest.raises(ImageInputError) as refused:
        open_image(path)
    assert str(refused.value) == told
    # Judged before Pillow opens the file, which reads the metadata (the cost) as it opens it:
    # without its picture, Pillow would have said so.
    cut = path.read_bytes()[:-12]
    with pytest.raises(ImageInputError, match="before its picture"):
        open_image(cut)


def test_a_segment_length_below_two_hides_no_scan() -> None:
    """An attacker's re-test: a comment of length 0 right after SOI stopped the walk, and
    30,000 scans after it took a worker 17 s; libjpeg skips such a segment's two length bytes
    and reads on."""
    many = _with_scans(MAX_SCANS)
    for segment in (b"\xff\xfe\x00\x00", b"\xff\xfe\x00\x01", b"\xff\xe0\x00\x00"):
        assert jpeg_problem(many[:2] + segment + many[2:]) == SCANS
        few = _with_scans(3)
        assert open_image(few[:2] + segment + few[2:]).image.size == (48, 40)


@pytest.mark.parametrize(
    "stray",
    [
        b"\xff" * (1 << 20),  # fill bytes: a pattern of a run and a code took quadratic time
        b"\xff" * (1 << 20) + b"\x00",
        b"\x00" * (MAX_STRAY + 10),
        b"\xff\x00" * (MAX_STRAY // 2 + 10),
    ],
)
def test_stray_bytes_between_segments_are_refused_at_once(stray: bytes) -> None:
    """An attacker's re-test: 1 MiB of 0xFF after SOI held the daemon's own thread for what
    would have been an hour (SIGTERM unheard); Pillow walks stray bytes one at a time, 40 MB
    of fill in 27 s."""
    data = _jpeg(progressive=False)
    assert jpeg_problem(data[:2] + stray + data[2:]) == (
        f"a JPEG of more than {MAX_STRAY:,} stray bytes between its segments (cameras and "
        "editors write far fewer), which would take very long to decode; save it again as an "
        "ordinary JPEG"
    )
    assert jpeg_problem(data[:2] + stray[: MAX_STRAY // 4] + data[2:]) is None
