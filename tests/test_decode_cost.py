"""Photos whose structure makes reading them cost minutes or gigabytes (a JPEG of very many
progressive scans, a GIF of very many metadata blocks, a TIFF listing millions of strips, a PNG
of thousands of chunks) are refused before a decoder opens them; ordinary ones are read."""

import io
import struct
import zlib
from pathlib import Path

import pytest
from PIL import Image, PngImagePlugin

from service.decode_cost import metadata_problem, problem, profile_problem
from service.decode_cost.bmp import bmp_problem
from service.decode_cost.gif import MAX_GIF_BLOCKS, MAX_GIF_JUNK, gif_problem
from service.decode_cost.heif import MAX_HEIF_IMAGES, heif_problem
from service.decode_cost.jpeg import MAX_SCANS, MAX_SEGMENTS, MAX_STRAY, jpeg_problem
from service.decode_cost.png import MAX_PNG_CHUNKS, MAX_PNG_METADATA, png_problem
from service.decode_cost.profile import MAX_PROFILE_ELEMENTS
from service.decode_cost.tiff import FEW_TIFF_PARTS, MAX_FRACTIONS, MAX_TIFF_TAGS, tiff_problem
from service.decode_cost.webp import MAX_WEBP_CHUNKS
from service.errors import ImageInputError
from service.imageio import HEADER_BYTES, header_look, open_image


def _told(what: str, usual: str, fix: str) -> str:
    return f"{what} ({usual}), which would take very long to read; save it again as {fix}"


SCANS = _told(
    f"a JPEG of more than {MAX_SCANS} progressive scans",
    "cameras and editors write a few dozen",
    "an ordinary JPEG",
)
SEGMENTS = _told(
    f"a JPEG of more than {MAX_SEGMENTS:,} marker segments",
    "cameras and editors write a few dozen",
    "an ordinary JPEG",
)
STRAY = _told(
    f"a JPEG of more than {MAX_STRAY:,} stray bytes between its segments",
    "cameras and editors write none",
    "an ordinary JPEG",
)


# -- JPEG ---------------------------------------------------------------------------------


def _jpeg(progressive: bool, mode: str = "RGB", **options: int) -> bytes:
    out = io.BytesIO()
    Image.new(mode, (48, 40), (90, 140, 30) if mode == "RGB" else 90).save(
        out, "JPEG", progressive=progressive, quality=80, **options
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


def test_restart_markers_padded_with_fill_bytes_are_part_of_their_scan() -> None:
    """A review: fill bytes before a restart marker inside a scan (which the standard allows
    before any marker) ended the scan there, and its coded data after it counted as stray
    bytes: a camera padding its restarts would have had its photos refused."""
    out = io.BytesIO()
    Image.effect_noise((400, 300), 60).convert("RGB").save(
        out, "JPEG", quality=95, restart_marker_blocks=1
    )
    data = out.getvalue()
    restarts = sum(data.count(bytes([0xFF, 0xD0 + n])) for n in range(8))
    assert restarts > 100
    for n in range(8):
        data = data.replace(bytes([0xFF, 0xD0 + n]), bytes([0xFF, 0xFF, 0xFF, 0xD0 + n]))
    assert jpeg_problem(data) is None
    assert open_image(data).image.size == (400, 300)


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
    assert header_look(path)[0] == f"{path} is {SCANS}"
    with pytest.raises(ImageInputError) as refused:
        open_image(path)
    assert str(refused.value) == f"{path} is {SCANS}"


def test_a_flood_of_segments_is_refused_before_the_walk_is_slow() -> None:
    """Four-byte comments by the million would make the walk itself take seconds."""
    flood = b"\xff\xfe\x00\x02" * (MAX_SEGMENTS + 1)
    assert jpeg_problem(_with_scans(0, before_scans=flood)) == SEGMENTS
    assert jpeg_problem(_with_scans(0, before_scans=flood[: 4 * 100])) is None


@pytest.mark.parametrize(
    "early",
    [b"\xff\xd9", b"\xff\xd8", b"\xff\xc8\x7f\xff", b"\xff\xf0\x7f\xff", b"\xff\xd0", b"\xff\x01"],
)
def test_markers_pillow_reads_without_a_length_are_counted(early: bytes) -> None:
    """A review: before the first scan Pillow reads SOI, EOI, JPG and JPGn without a length and
    goes on, so an early EOI ended the walk (and a JPGn's "length" covered 64 KB of comments)
    while Pillow spent seconds on the comments after it; restarts and TEM counted nothing."""
    flood = b"\xff\xfe\x00\x02" * (MAX_SEGMENTS + 1)
    assert jpeg_problem(_with_scans(0, before_scans=early + flood)) == SEGMENTS
    assert jpeg_problem(b"\xff\xd8" + early * (MAX_SEGMENTS + 1)) == SEGMENTS


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
        assert jpeg_problem(many[:cut] + junk + many[cut:]) == SCANS


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
    assert jpeg_problem(data[:2] + stray + data[2:]) == STRAY
    assert jpeg_problem(data[:2] + stray[: MAX_STRAY // 4] + data[2:]) is None


# -- GIF ----------------------------------------------------------------------------------


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
    xmp = _blocks(0xFF, 70_000)  # Photoshop's XMP reads as a block per ~60 bytes: a few MB
    few = _gif(_blocks(0xFE, 1000) + xmp + b"\x07" * 100)
    assert gif_problem(few) is None and open_image(few).image.size == (1, 1)


@pytest.mark.parametrize(
    ("metadata", "what"),
    [
        (_blocks(0xFE, MAX_GIF_BLOCKS), f"{MAX_GIF_BLOCKS:,} metadata blocks"),
        (_blocks(0xFE, 600_000) + _blocks(0xFF, 600_000), f"{MAX_GIF_BLOCKS:,} metadata blocks"),
        (b"!\xfe\x00" * (MAX_GIF_BLOCKS + 1), f"{MAX_GIF_BLOCKS:,} metadata blocks"),
        (b"\x07" * (MAX_GIF_JUNK + 1), f"{MAX_GIF_JUNK:,} stray bytes"),
    ],
)
def test_a_gif_of_too_many_blocks_before_its_picture_is_refused(
    tmp_path: Path, metadata: bytes, what: str
) -> None:
    """An attacker's re-test: a 64 MB GIF of one-byte comment blocks cost a worker 3 GB and 7 s
    (Pillow keeps each block as an object), and the page's thumbnail the same at each view.
    Empty extensions are steps of Pillow's loop too (a review)."""
    path = tmp_path / "comments.gif"
    path.write_bytes(_gif(metadata))
    usual = "editors write none" if "stray" in what else "editors write far fewer"
    told = _told(
        f"a GIF of more than {what} before its picture", usual, "an ordinary GIF or as a PNG"
    )
    # The daemon's header check reads the first MiB: a longer flood is its worker's to refuse.
    within = path.stat().st_size <= HEADER_BYTES
    assert header_look(path)[0] == (f"{path} is {told}" if within else None)
    with pytest.raises(ImageInputError) as refused:
        open_image(path)
    assert str(refused.value) == f"{path} is {told}"
    # Judged before Pillow opens the file, which reads the metadata (the cost) as it opens it:
    # without its picture, Pillow would have said so.
    with pytest.raises(ImageInputError, match="before its picture"):
        open_image(path.read_bytes()[:-12])


# -- TIFF ---------------------------------------------------------------------------------


def _tiff(strips: int, tags: int = 0, header: bytes = b"II*\0", twice: bool = False) -> bytes:
    """An 8x8 grey TIFF in one strip of 64 bytes, its StripOffsets listing that strip
    `strips` times (how an attacker's 40 MB file listed 5,000,000), with `tags` extra ones;
    `twice`: StripOffsets is given again after, with one strip (which Pillow does not take)."""
    pixels = bytes(range(64))
    entries = [
        (256, 3, 1, 8), (257, 3, 1, 8), (258, 3, 1, 8), (259, 3, 1, 1), (262, 3, 1, 1),
        (273, 4, strips, 0), (277, 3, 1, 1), (278, 3, 1, 8), (279, 4, strips, 0),
    ] + [(50000 + i, 3, 1, 0) for i in range(tags)]  # fmt: skip
    if twice:
        entries.append((273, 4, 1, 8))
    order = "<" if header[:2] == b"II" else ">"  # as Pillow reads it, whatever the magic
    ifd_at = 8 + len(pixels)
    arrays_at = ifd_at + 2 + 12 * len(entries) + 4
    offsets = struct.pack(f"{order}{strips}I", *[8] * strips)
    counts = struct.pack(f"{order}{strips}I", *[64] * strips)
    packed = []
    for tag, kind, count, value in entries:
        if tag == 273 and count == strips:
            value = 8 if strips == 1 else arrays_at
        elif tag == 279:
            value = 64 if strips == 1 else arrays_at + len(offsets)
        if kind == 3 and count == 1 and order == ">":  # a SHORT sits in the value's first bytes
            value <<= 16
        packed.append(struct.pack(f"{order}HHII", tag, kind, count, value))
    ifd = struct.pack(f"{order}H", len(entries)) + b"".join(packed) + b"\0\0\0\0"
    tail = b"" if strips == 1 else offsets + counts
    return header + struct.pack(f"{order}I", ifd_at) + pixels + ifd + tail


STRIPS = _told(
    f"a TIFF listing {FEW_TIFF_PARTS + 1:,} strips where its size needs 1",
    f"stylefold reads at most {FEW_TIFF_PARTS:,}",
    "an ordinary TIFF, or as a PNG",
)


def test_a_tiff_listing_far_more_strips_than_its_size_needs_is_refused() -> None:
    """An attacker's re-test: an 8x8 TIFF listing 5,000,000 strips (all the same 8 bytes)
    cost a worker 23 s and 1.35 GB."""
    assert open_image(_tiff(1)).image.size == (8, 8)
    assert tiff_problem(_tiff(FEW_TIFF_PARTS)) is None  # damage libtiff trims, cheap
    assert tiff_problem(_tiff(FEW_TIFF_PARTS + 1)) == STRIPS
    with pytest.raises(ImageInputError, match="listing 10,001 strips"):
        open_image(_tiff(FEW_TIFF_PARTS + 1))
    many_tags = f"more than {MAX_TIFF_TAGS:,} tags"
    assert many_tags in (tiff_problem(_tiff(1, tags=MAX_TIFF_TAGS - 8)) or "")
    assert tiff_problem(_tiff(1, tags=MAX_TIFF_TAGS - 9)) is None


@pytest.mark.parametrize("header", [b"II*\x00", b"MM\x00*", b"II\x00*", b"MM*\x00"])
def test_every_header_pillow_takes_is_walked(header: bytes) -> None:
    """A review: Pillow opens TIFFs under six headers (byte order from the first two bytes),
    and two were never walked."""
    assert open_image(_tiff(1, header=header)).image.size == (8, 8)
    assert problem(_tiff(FEW_TIFF_PARTS + 1, header=header)) == STRIPS


def test_a_tag_given_twice_hides_nothing() -> None:
    """A review: a second StripOffsets of one strip, after the first's flood, hid it (Pillow
    takes the first)."""
    assert problem(_tiff(FEW_TIFF_PARTS + 1, twice=True)) == STRIPS


def test_ordinary_tiffs_are_read() -> None:
    for mode, size in (("RGB", (300, 900)), ("L", (64, 48)), ("CMYK", (40, 30))):
        out = io.BytesIO()
        Image.new(mode, size).save(out, "TIFF", compression="tiff_lzw")
        assert tiff_problem(out.getvalue()) is None, mode
        assert open_image(out.getvalue()).image.size == size


# -- PNG ----------------------------------------------------------------------------------


def _chunk(kind: bytes, data: bytes = b"") -> bytes:
    body = kind + data
    return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))


def _png(extra: bytes) -> bytes:
    """A PNG whose chunks after IHDR begin with `extra`."""
    out = io.BytesIO()
    Image.new("RGB", (16, 12), (1, 2, 3)).save(out, "PNG")
    data = out.getvalue()
    after_ihdr = 8 + 25
    return data[:after_ihdr] + extra + data[after_ihdr:]


@pytest.mark.parametrize(
    ("extra", "what", "usual"),
    [
        (
            _chunk(b"iCCP", b"a\0\0" + zlib.compress(b"x")) * (MAX_PNG_METADATA + 1),
            f"more than {MAX_PNG_METADATA:,} metadata chunks",
            "editors write a few",
        ),
        (
            _chunk(b"tEXt", b"k\0v") * (MAX_PNG_METADATA + 1),
            f"more than {MAX_PNG_METADATA:,} metadata chunks",
            "editors write a few",
        ),
        (
            _chunk(b"IDAT") * MAX_PNG_CHUNKS,
            f"more than {MAX_PNG_CHUNKS:,} chunks",
            "editors write a few hundred at most",
        ),
    ],
)
def test_a_png_of_very_many_chunks_is_refused(extra: bytes, what: str, usual: str) -> None:
    """An attacker's re-test: 40 MB of copies of one colour profile, each inflating to 1 MiB,
    took a worker 23 s; 40 MB of empty chunks 7 s and 470 MB."""
    with pytest.raises(ImageInputError) as refused:
        open_image(_png(extra))
    assert (
        str(refused.value) == f"the image is {_told(f'a PNG of {what}', usual, 'an ordinary PNG')}"
    )


def test_ordinary_pngs_are_read() -> None:
    out = io.BytesIO()
    info = PngImagePlugin.PngInfo()
    for index in range(50):
        info.add_text(f"k{index}", "v" * 100, zip=index % 2 == 0)
    Image.new("RGB", (20, 10)).save(out, "PNG", pnginfo=info, icc_profile=b"\0" * 500)
    assert png_problem(out.getvalue()) is None
    assert png_problem(_png(_chunk(b"tEXt", b"k\0v") * MAX_PNG_METADATA)) is None
    two_profiles = _png(_chunk(b"iCCP", b"a\0\0" + zlib.compress(b"x")) * 2)  # libpng warns
    assert png_problem(two_profiles) is None
    assert open_image(out.getvalue()).image.size == (20, 10)
    frames = [Image.new("RGB", (30, 20), (40 * index, 0, 0)) for index in range(6)]
    animated = io.BytesIO()  # an APNG: its frames' fcTL and fdAT chunks are pixels
    frames[0].save(animated, "PNG", save_all=True, append_images=frames[1:])
    assert png_problem(animated.getvalue()) is None
    assert open_image(animated.getvalue()).image.size == (30, 20)


def test_the_daemons_other_header_looks_do_not_open_a_costly_file() -> None:
    """A review: the daemon's own thread also opens a photo's first MiB to size its batch and
    to tell its own answers; those opens are judged first too, and come to nothing."""
    from daemon.pool.batching import upright_size
    from service.imageio import opened_header, written_by_stylefold

    flood = _with_scans(0, before_scans=b"\xff\xfe\x00\x02" * (MAX_SEGMENTS + 1))
    assert upright_size(_jpeg(progressive=False)) == (48, 40)
    assert upright_size(flood) is None
    assert not written_by_stylefold(io.BytesIO(flood))
    with pytest.raises(ImageInputError, match="marker segments"), opened_header(flood):
        pass


# -- metadata: TIFF directories, and the EXIF a PNG or WebP carries --------------------------


def _exif(fractions: int, tag: int = 0x0112) -> bytes:
    """An EXIF block whose one entry (the orientation, which Pillow reads to turn a photo
    upright) is a list of `fractions` RATIONALs."""
    values = struct.pack("<II", 7, 3) * fractions
    entry = struct.pack("<HHII", tag, 5, fractions, 26)
    return b"II*\x00" + struct.pack("<I", 8) + struct.pack("<H", 1) + entry + b"\0" * 4 + values


def _picture(fmt: str, exif: bytes) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (8, 8), (5, 6, 7)).save(out, fmt, exif=exif)
    return out.getvalue()


def test_a_tiff_of_a_million_fractions_is_refused() -> None:
    """An attacker's third round: Pillow makes an object of every fraction (RATIONAL) in a
    TIFF's directories as it opens it: four directories of a million each, 8 MB, took 30 s."""
    data = _tiff_with_fractions(MAX_FRACTIONS + 1)
    assert problem(data) == _told(
        f"a TIFF whose metadata holds a list of {MAX_FRACTIONS + 1:,} fractions",
        "cameras write a few",
        "an ordinary TIFF",
    )
    with pytest.raises(ImageInputError, match="fractions"):
        open_image(data)


@pytest.mark.parametrize("fmt", ["PNG", "WEBP"])
def test_an_exif_block_costly_to_read_costs_the_photo_its_metadata_only(fmt: str) -> None:
    """The same round: a 16 MB PNG or WebP whose EXIF orientation was a list of two million
    fractions took 4.4 s and 413 MB. An EXIF block is metadata: the photo is read without it,
    as it is without a damaged one."""
    costly = _exif(MAX_FRACTIONS + 1)
    assert metadata_problem(costly) is not None and metadata_problem(_exif(1)) is None
    data = _picture(fmt, costly)
    assert problem(data) is None
    loaded = open_image(data)
    assert loaded.image.size == (8, 8) and loaded.exif is None
    assert open_image(_picture(fmt, _exif(1))).exif is not None


def _tiff_with_fractions(count: int) -> bytes:
    """An 8x8 TIFF whose XResolution (282) is a list of `count` fractions."""
    base = _tiff(1)
    values = struct.pack("<II", 300, 1) * count
    ifd_at = struct.unpack("<I", base[4:8])[0]
    entries = struct.unpack("<H", base[ifd_at : ifd_at + 2])[0]
    extra = struct.pack("<HHII", 282, 5, count, len(base) + 12)
    ifd = base[ifd_at + 2 : ifd_at + 2 + 12 * entries]
    moved = struct.pack("<H", entries + 1) + ifd + extra + b"\0\0\0\0"
    return base[:4] + struct.pack("<I", len(base)) + base[8:] + moved + values


def test_ordinary_metadata_is_read() -> None:
    camera = Image.Exif()
    camera[0x0112] = 6
    camera[0x010F] = "a camera"
    for fmt in ("PNG", "WEBP", "TIFF"):
        data = _picture(fmt, camera.tobytes())
        assert problem(data) is None, fmt
        assert open_image(data).image.size == (8, 8)  # turned upright: 8x8 either way
    assert problem(_tiff_with_fractions(1)) is None
    assert open_image(_tiff_with_fractions(1)).image.size == (8, 8)


def test_a_webp_of_a_flood_of_chunks_is_refused_before_the_walk_is_slow() -> None:
    data = _picture("WEBP", b"")
    flood = b"JUNK\x00\x00\x00\x00" * (MAX_WEBP_CHUNKS + 1)
    assert "more than 100,000 chunks" in (problem(data[:12] + flood + data[12:]) or "")
    assert problem(data[:12] + flood[:800] + data[12:]) is None


def test_strip_sizes_are_counted_as_strips() -> None:
    """A review's idea: a sane StripOffsets beside a StripByteCounts of millions."""
    base = _tiff(FEW_TIFF_PARTS + 1)
    ifd_at = struct.unpack("<I", base[4:8])[0]
    entries = struct.unpack("<H", base[ifd_at : ifd_at + 2])[0]
    ifd = bytearray(base)
    for index in range(entries):
        at = ifd_at + 2 + 12 * index
        if struct.unpack("<H", ifd[at : at + 2])[0] == 273:  # StripOffsets: one strip
            ifd[at + 4 : at + 12] = struct.pack("<II", 1, 8)
    told = problem(bytes(ifd))
    assert told is not None and f"listing {FEW_TIFF_PARTS + 1:,} strips" in told


def test_the_daemon_walks_a_webps_chunks_for_its_exif_no_further_than_the_limit() -> None:
    """The own-answer check walks a whole WebP's chunks in the daemon's own thread for an EXIF
    chunk written after the pixels: 2,000,000 empty chunks took it 0.65 s, 256 MB would take
    ten. It walks MAX_WEBP_CHUNKS at most (an attacker's third round, in its margins)."""
    from service.imageio import encode_image, written_by_stylefold

    ours = encode_image(Image.new("RGB", (8, 8)), format="webp", quality=80)
    assert written_by_stylefold(io.BytesIO(ours))
    for junk, found in ((100, True), (MAX_WEBP_CHUNKS + 1, False)):
        padded = ours[:12] + b"JUNK\0\0\0\0" * junk + ours[12:]
        assert written_by_stylefold(io.BytesIO(padded)) is found


# -- colour profiles ------------------------------------------------------------------------


def _mpet_profile(elements: int) -> bytes:
    """An RGB display profile (ICC v4.3) whose D2B0 tag chains `elements` processing elements,
    all pointing at one 3x3 matrix: 8 bytes each in the file."""
    matrix = (
        b"matf"
        + b"\0" * 4
        + struct.pack(">HH", 3, 3)
        + struct.pack(">12f", *[1, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0])
    )
    head = 16 + 8 * elements
    mpet = b"mpet" + b"\0" * 4 + struct.pack(">HHI", 3, 3, elements)
    mpet += struct.pack(">II", head, len(matrix)) * elements + matrix
    text = "test".encode("utf-16-be")
    desc = (
        b"mluc"
        + b"\0" * 4
        + struct.pack(">II", 1, 12)
        + b"enUS"
        + struct.pack(">II", len(text), 28)
        + text
    )
    tags = [(b"desc", desc + b"\0" * (-len(desc) % 4)), (b"D2B0", mpet)]
    at, table, body = 128 + 4 + 12 * len(tags), b"", b""
    for signature, data in tags:
        table += signature + struct.pack(">II", at + len(body), len(data))
        body += data + b"\0" * (-len(data) % 4)
    white = struct.pack(">iii", 63190, 65536, 54061)
    header = (
        struct.pack(">I", 132 + len(table) + len(body)) + b"lcms" + struct.pack(">I", 0x04300000)
        + b"mntrRGB XYZ " + b"\0" * 12 + b"acspAPPL" + b"\0" * 24 + white + b"\0" * 48
    )  # fmt: skip
    return header + struct.pack(">I", len(tags)) + table + body


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_a_colour_profile_costly_to_build_is_not_applied(fmt: str) -> None:
    """An attacker's fourth round: a profile of 20,000 processing elements pointing at one
    matrix, a 640-byte PNG, held a worker 14 s building its transform (quadratic in their
    count). The profile is metadata: the pixels are taken as sRGB, and the report says why."""
    out = io.BytesIO()
    Image.new("RGB", (8, 8), (9, 99, 199)).save(
        out, fmt, icc_profile=_mpet_profile(MAX_PROFILE_ELEMENTS + 1)
    )
    loaded = open_image(out.getvalue())
    assert loaded.profile == (
        f"not applied: building it would take very long ({MAX_PROFILE_ELEMENTS + 1:,} processing "
        "elements, where profiles use a few), taken as sRGB"
    )
    assert profile_problem(_mpet_profile(MAX_PROFILE_ELEMENTS)) is None


def test_a_damaged_colour_profile_is_told_unreadable_not_costly() -> None:
    """An attacker's trial: 140 bytes of text as a JPEG's profile were told "not applied:
    building it would take very long (1,919,050,087 tags...)", a wrong thing to fix."""
    out = io.BytesIO()
    Image.new("RGB", (8, 8), (9, 99, 199)).save(out, "JPEG", icc_profile=b"garbageprofile" * 10)
    told = open_image(out.getvalue()).profile
    assert told is not None and told.startswith("unreadable (") and "long" not in told, told
    profile = _mpet_profile(MAX_PROFILE_ELEMENTS)
    claims = profile[:128] + (5000).to_bytes(4, "big") + profile[132:]  # a table it lacks
    assert profile_problem(claims) is None


def test_ordinary_colour_profiles_are_applied() -> None:
    from PIL import ImageCms

    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    assert profile_problem(srgb) is None
    out = io.BytesIO()
    Image.new("RGB", (8, 8)).save(out, "PNG", icc_profile=srgb)
    assert (open_image(out.getvalue()).profile or "").startswith("sRGB")


# -- BMP ------------------------------------------------------------------------------------


def _rle_bmp(width: int, height: int) -> bytes:
    """An 8-bit BMP compressed with run lengths (RLE8) whose every row is one pixel and ends
    at once: 4 bytes a row, however wide."""
    rows = b"\x01\x05\x00\x00" * height + b"\x00\x01"  # then the end of the bitmap
    palette = b"\x00\x00\x00\x00" * 256
    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 8, 1, len(rows), 2835, 2835, 256, 0)
    offset = 14 + len(info) + len(palette)
    return b"BM" + struct.pack("<IHHI", offset + len(rows), 0, 0, offset) + info + palette + rows


def test_a_large_bmp_of_run_lengths_is_refused() -> None:
    """An attacker's fourth round: a 5 KB RLE8 BMP of 40 megapixels took 3.9 s, Pillow
    decoding it a pixel at a time in Python."""
    assert open_image(_rle_bmp(100, 40)).image.size == (100, 40)
    assert bmp_problem(_rle_bmp(2000, 2000)) is None
    with pytest.raises(ImageInputError, match="compressed with run lengths"):
        open_image(_rle_bmp(4000, 1001))
    plain = io.BytesIO()
    Image.new("RGB", (3000, 1500)).save(plain, "BMP")  # uncompressed: read as one block
    assert bmp_problem(plain.getvalue()) is None


# -- HEIF -----------------------------------------------------------------------------------


def _box(kind: bytes, content: bytes, full: bool = False) -> bytes:
    content = (b"\0\0\0\0" if full else b"") + content
    return struct.pack(">I", 8 + len(content)) + kind + content


def _heif_boxes(images: int, exif: int, extents: int = 1) -> bytes:
    """The boxes of a HEIF (no pixels: the walk needs none) of `images` image items and one
    EXIF item of `exif` bytes that describes them all, listed `extents` times over."""
    exif_id = images + 1

    def infe(item: int, kind: bytes) -> bytes:  # version 2, not hidden
        return _box(b"infe", b"\x02\0\0\0" + struct.pack(">HH", item, 0) + kind + b"\0")

    infes = b"".join(infe(item, b"hvc1") for item in range(1, images + 1)) + infe(exif_id, b"Exif")
    iinf = _box(b"iinf", struct.pack(">H", images + 1) + infes, full=True)
    entries = (
        b"".join(
            struct.pack(">HHHHII", item, 0, 0, 1, 1000 + item, 10) for item in range(1, images + 1)
        )
        + struct.pack(">HHHH", exif_id, 0, 0, extents)
        + struct.pack(">II", 5000, exif) * extents
    )
    iloc = _box(b"iloc", b"\x44\x00" + struct.pack(">H", images + 1) + entries, full=True)
    iloc = iloc[:8] + b"\x01\0\0\0" + iloc[12:]  # version 1: a construction method per item
    refs = struct.pack(">HH", exif_id, images) + b"".join(
        struct.pack(">H", item) for item in range(1, images + 1)
    )
    iref = _box(b"iref", _box(b"cdsc", refs), full=True)
    meta = _box(b"meta", iinf + iloc + iref, full=True)
    return _box(b"ftyp", b"heic\0\0\0\0mif1heic") + meta


def test_a_heif_whose_images_would_each_copy_much_metadata_is_refused() -> None:
    """An attacker's fourth round: pillow-heif copies an EXIF item into every image it
    describes as it opens the file: 999 images sharing a 0.95 MB item cost 1 GB in the
    daemon's own header look, and an item listing the same bytes 32 times, 32 times that."""
    assert heif_problem(_heif_boxes(2, 60_000)) is None
    assert "would take 69,206,016 bytes of copies" in (
        heif_problem(_heif_boxes(64, 1 << 20 | 32_768)) or ""
    )
    assert "lists the same bytes more than once" in (heif_problem(_heif_boxes(2, 1000, 32)) or "")
    assert "a HEIF of 65 images" in (heif_problem(_heif_boxes(65, 10)) or "")


def test_ordinary_heifs_are_read_and_many_images_refused() -> None:
    import pillow_heif

    def heif(images: int) -> bytes:
        file = pillow_heif.from_pillow(Image.new("RGB", (16, 16), (10, 20, 30)))
        for index in range(images - 1):
            file.add_from_pillow(Image.new("RGB", (16, 16), (index, 0, 0)))
        file[0].info["exif"] = b"Exif\0\0" + _exif(1)
        out = io.BytesIO()
        file.save(out, format="HEIF", quality=30)
        return out.getvalue()

    assert problem(heif(2)) is None and open_image(heif(2)).image.size == (16, 16)
    with pytest.raises(ImageInputError, match="a HEIF of 65 images"):
        open_image(heif(MAX_HEIF_IMAGES + 1))
