"""Decoding what users drop in, refusing what they should not, encoding with metadata."""

import io
import os
import re
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import iso_media
from icc_profiles import DISPLAY_P3_D50, grey_profile, rgb_profile
from PIL import Image, ImageCms, ImageOps, PngImagePlugin

from daemon.pool.batching import upright_size
from service.errors import ImageInputError
from service.imageio import (
    DEFAULT_MAX_PIXELS,
    EXIF_COLOR_SPACE,
    EXIF_ORIENTATION,
    FIRST_FRAME,
    HEADER_BYTES,
    PROFILE_NAME,
    carries_location,
    encode_image,
    encode_result,
    header_look,
    open_image,
    srgb_profile,
    written_by_stylefold,
)


def _save(image: Image.Image, path: Path, **options: Any) -> Path:
    image.save(path, **options)
    return path


def _gradient(w: int = 24, h: int = 16) -> Image.Image:
    x = np.linspace(0, 255, w, dtype=np.uint8)[None, :].repeat(h, 0)
    y = np.linspace(0, 255, h, dtype=np.uint8)[:, None].repeat(w, 1)
    return Image.fromarray(np.stack([x, y, 255 - x], axis=2), "RGB")


def test_exif_orientation_is_applied_and_kept_in_exif(tmp_path: Path) -> None:
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = 6  # rotate 90 degrees clockwise to display
    path = _save(_gradient(24, 16), tmp_path / "rotated.jpg", exif=exif.tobytes(), quality=95)
    loaded = open_image(path)
    assert loaded.image.mode == "RGB"
    assert loaded.image.size == (16, 24)  # upright
    assert loaded.format == "JPEG"
    assert loaded.exif is not None
    # Written back, the orientation says "upright" so viewers do not rotate twice.
    out = Image.open(io.BytesIO(encode_image(loaded.image, "jpg", exif=loaded.exif)))
    assert out.getexif()[EXIF_ORIENTATION] == 1
    assert out.size == (16, 24)


def test_cmyk_16bit_palette_grey_alpha_all_become_rgb(tmp_path: Path) -> None:
    rgb = _gradient()
    cases = {
        "cmyk.jpg": rgb.convert("CMYK"),
        "grey16.png": Image.fromarray(
            (np.asarray(rgb.convert("L"), dtype=np.uint16) * 257).astype(np.uint16)
        ),
        "palette.png": rgb.convert("P"),
        "grey.png": rgb.convert("L"),
        "grey_alpha.png": rgb.convert("LA"),
        "rgba.png": rgb.convert("RGBA"),
    }
    for name, image in cases.items():
        loaded = open_image(_save(image, tmp_path / name))
        assert loaded.image.mode == "RGB", name
        assert loaded.image.size == rgb.size, name
    # 16-bit grey is scaled, not clipped: mid-grey stays mid-grey.
    grey16 = open_image(tmp_path / "grey16.png").image
    assert abs(np.asarray(grey16)[:, :, 0].mean() - np.asarray(rgb.convert("L")).mean()) < 2


def _half_transparent(mode: str) -> tuple[Image.Image, dict[str, Any]]:
    """An 8x8 picture whose left half is opaque blue and right half transparent, in `mode`."""
    image = Image.new("RGBA", (8, 8), (255, 0, 0, 0))
    image.paste((0, 0, 255, 255), (0, 0, 4, 8))
    if mode == "P":  # a palette with a transparent index
        palette = image.convert("P")
        return palette, {"transparency": palette.getpixel((6, 4))}
    if mode == "RGB":  # one colour named transparent (PNG's tRNS)
        return image.convert("RGB"), {"transparency": (255, 0, 0)}
    return image.convert(mode), {}


def test_transparency_is_composited_over_white(tmp_path: Path) -> None:
    image, _ = _half_transparent("RGBA")
    loaded = open_image(_save(image, tmp_path / "alpha.png")).image
    assert loaded.getpixel((6, 4)) == (255, 255, 255)  # transparent -> white
    assert loaded.getpixel((1, 4)) == (0, 0, 255)
    palette, options = _half_transparent("P")
    loaded = open_image(_save(palette, tmp_path / "p.png", **options)).image
    assert loaded.mode == "RGB" and loaded.getpixel((6, 4)) == (255, 255, 255)


@pytest.mark.parametrize("mode", ["RGBA", "LA", "P", "RGB"])
@pytest.mark.parametrize("kind", ["png", "webp", "tiff", "jpg"])
def test_a_photo_s_transparency_is_kept_where_the_result_s_format_can_hold_it(
    tmp_path: Path, mode: str, kind: str
) -> None:
    """A cut-out or a sticker: the network sees it over white, and its result had white where
    the photo was transparent, whatever the format, without a word."""
    image, options = _half_transparent(mode)
    loaded = open_image(_save(image, tmp_path / "cutout.png", **options))
    assert loaded.image.mode == "RGB" and loaded.alpha is not None
    assert loaded.image.getpixel((6, 4)) == (255, 255, 255), "the network sees it over white"
    result = loaded.image.resize((16, 16))  # a result is larger or smaller than its photo
    data, notes = encode_result(result, loaded, kind, 92, location=True)
    written = Image.open(io.BytesIO(data))
    if kind == "jpg":
        assert written.mode == "RGB"
        [note] = notes
        assert "a jpg result cannot be" in note, note
        assert "output format png, webp or tiff keeps them" in note
    else:
        assert notes == ()
        assert written.mode == "RGBA", kind
        alpha = written.getchannel("A")
        assert alpha.getpixel((2, 8)) == 255 and alpha.getpixel((13, 8)) == 0, kind


def test_an_opaque_photo_with_an_alpha_channel_has_nothing_to_keep(tmp_path: Path) -> None:
    image = Image.new("RGBA", (8, 8), (10, 20, 30, 255))
    loaded = open_image(_save(image, tmp_path / "opaque.png"))
    assert loaded.alpha is None
    data, notes = encode_result(loaded.image, loaded, "jpg", 92, location=True)
    assert notes == () and Image.open(io.BytesIO(data)).mode == "RGB"
    data, notes = encode_result(loaded.image, loaded, "png", 92, location=True)
    assert notes == () and Image.open(io.BytesIO(data)).mode == "RGB"


def test_a_turned_photo_s_transparency_turns_with_it(tmp_path: Path) -> None:
    """EXIF orientation 6 (a phone held upright): the transparent half follows the pixels."""
    image, _ = _half_transparent("RGBA")  # left half opaque, as stored
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = 6  # shown turned 90 degrees clockwise: the stored left is on top
    loaded = open_image(_save(image, tmp_path / "turned.webp", exif=exif, lossless=True))
    data, _ = encode_result(loaded.image, loaded, "png", 92, location=True)
    alpha = Image.open(io.BytesIO(data)).getchannel("A")
    assert alpha.getpixel((4, 1)) == 255 and alpha.getpixel((4, 6)) == 0


@pytest.mark.parametrize("kind", ["gif", "png", "webp", "tiff"])
def test_animation_gives_its_first_frame_and_says_so(tmp_path: Path, kind: str) -> None:
    """An animated GIF, PNG or WebP, or a multi-page TIFF: the first frame is painted, and the
    result's notes say the others were left out (an attacker's trial: not a word)."""
    frames = [Image.new("RGB", (8, 8), colour) for colour in ((255, 0, 0), (0, 255, 0))]
    path = tmp_path / f"anim.{kind}"
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=100, loop=0)
    loaded = open_image(path)
    r, g, _ = loaded.image.getpixel((4, 4))  # type: ignore[misc]
    assert r > 200 and g < 50
    _, notes = encode_result(loaded.image, loaded, "jpg", 92, location=True)
    assert notes == (FIRST_FRAME,)
    frames[0].save(path)  # one frame: nothing left out
    assert encode_result(loaded.image, open_image(path), "jpg", 92, location=True)[1] == ()


def test_heic_is_read(tmp_path: Path) -> None:
    path = _save(_gradient(32, 32), tmp_path / "photo.heic", quality=90)
    loaded = open_image(path)
    assert loaded.image.mode == "RGB" and loaded.image.size == (32, 32)
    assert loaded.format == "HEIF"


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG that claims `width` x `height` but holds a few bytes of pixel data: opening it
    works (PIL reads headers only), decoding it fails as truncated."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))


def test_decompression_bomb_is_refused_before_decoding(tmp_path: Path) -> None:
    path = tmp_path / "bomb.png"
    path.write_bytes(_png_header_only(9000, 9000))
    with pytest.raises(ImageInputError, match="9000x9000 = 81,000,000 pixels, over the limit"):
        open_image(path, max_pixels=50_000_000)
    # Under a higher limit the same file does get decoded, and fails as truncated: so the
    # refusal above happened before any decoding.
    with pytest.raises(ImageInputError, match="truncated or corrupt"):
        open_image(path, max_pixels=100_000_000)


def test_pils_own_bomb_guard_says_what_our_limit_says(tmp_path: Path) -> None:
    """Pillow refuses 30000x30000 before our check can run; the report still names our limit
    (an attacker's trial found Pillow's own limit and no fix in it), or, above a limit raised
    past Pillow's, that the file is refused unread."""
    path = tmp_path / "huge.png"
    path.write_bytes(_png_header_only(30000, 30000))
    limit = "is 900,000,000 pixels, over the limit of 40,000,000; downscale it or raise the limit"
    with pytest.raises(ImageInputError, match=re.escape(limit)):
        open_image(path, max_pixels=40_000_000)
    with pytest.raises(ImageInputError, match=r"decompression bomb .* not decoded; downscale it"):
        open_image(path, max_pixels=10**12)


def test_a_50_megapixel_phone_photo_is_within_the_daemon_s_default_limit(tmp_path: Path) -> None:
    """A phone user's trial: an 8160x6120 photo (a 50 MP mode; 48 MP ones are 8064x6048) was
    refused by the daemon's default max_pixels, 40,000,000."""
    from daemon.config import Settings

    path = tmp_path / "IMG_0001.png"
    path.write_bytes(_png_header_only(8160, 6120))
    assert header_look(path, Settings.model_fields["max_pixels"].default)[0] is None
    assert "over the limit of 40,000,000" in str(header_look(path, 40_000_000)[0])


def test_max_pixels_limit_applies(tmp_path: Path) -> None:
    path = _save(_gradient(40, 30), tmp_path / "big.png")
    with pytest.raises(ImageInputError, match="40x30 = 1,200 pixels, over the limit of 1,000"):
        open_image(path, max_pixels=1000)
    assert open_image(path, max_pixels=1200).image.size == (40, 30)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "is empty"),
        (b"GIF89a this is not really an image" * 3, "begins as a GIF file but its header"),
        (b"hello, I am a text file\n" * 20, "not an image format"),
    ],
)
def test_bad_files_say_what_is_wrong(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "photo.jpg"
    path.write_bytes(content)
    with pytest.raises(ImageInputError, match=message):
        open_image(path)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (iso_media(b"qt  "), "is a video (its ftyp brand is 'qt'), not a photo"),  # an iPhone's
        (iso_media(b"isom", b"isom", b"iso2", b"avc1", b"mp41"), "brand is 'isom'"),  # Android's
        (iso_media(b"mp42", b"mp42", b"isom"), "brand is 'mp42'"),
        (iso_media(b"3gp4", b"3gp4", b"isom"), "brand is '3gp4'"),
        (iso_media(b"crx ", b"crx ", b"isom"), "is a Canon CR3 raw file, not a photo"),
        (b"\x1a\x45\xdf\xa3\x9f\x42\x86\x81\x01" + bytes(64), "is a video (Matroska, WebM"),
        (b"RIFF\x00\x10\x00\x00AVI LIST" + bytes(64), "is a video (Matroska, WebM or AVI)"),
        (b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj" + bytes(64), "is a PDF document, not a photo"),
        (b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg"/>', "is an SVG drawing"),
        (b'\xef\xbb\xbf  <!-- logo -->\n<SVG width="9"/>', "is an SVG drawing"),
        (iso_media(b"isom", b"isom", b"mif1", b"iso2"), "is a video (its ftyp brand is 'isom')"),
    ],
)
def test_files_mistaken_for_photos_are_told_what_they_are(
    tmp_path: Path, content: bytes, message: str
) -> None:
    """Not "truncated or corrupt; copy it again", which no copy cures (a camera roll's trial:
    a QuickTime clip named .HEIC), nor only "not an image format"."""
    path = tmp_path / "IMG_0001.HEIC"
    path.write_bytes(content)
    with pytest.raises(ImageInputError, match=re.escape(message)) as caught:
        open_image(path)
    assert "copy it again" not in str(caught.value)
    assert re.search(r"; (send a still photo|export it)", str(caught.value)), caught.value


@pytest.mark.parametrize("fmt", ["jpg", "png", "gif", "webp", "heic"])
def test_a_file_whose_header_is_damaged_is_told_so(tmp_path: Path, fmt: str) -> None:
    """Its first bytes say what it is; past them, garbage that no decoder identifies."""
    whole = _save(_gradient(64, 48), tmp_path / f"whole.{fmt}").read_bytes()
    path = tmp_path / f"damaged.{fmt}"
    path.write_bytes(whole[:12] + bytes(range(256)) * 4)
    kind = {"jpg": "a JPEG", "png": "a PNG", "gif": "a GIF", "webp": "a WebP", "heic": "a HEIF"}
    with pytest.raises(ImageInputError, match=f"begins as {kind[fmt]} file but its header cannot"):
        open_image(path)


def test_what_the_header_tells_is_what_decoding_would_say(tmp_path: Path) -> None:
    """`header_look` answers a job before its turn (the daemon checks every photo as it is
    queued), so it must say exactly what decoding would, and nothing about a photo that only
    decoding can judge."""
    import tifffile

    whole = _save(_gradient(64, 48), tmp_path / "whole.jpg").read_bytes()
    refused = {
        "empty.jpg": b"",
        "text.jpg": b"hello, I am a text file\n" * 20,
        "random.jpg": np.random.default_rng(3).bytes(5000),
        "clip.heic": iso_media(b"qt  "),
        "document.jpg": b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj" + bytes(64),
        "drawing.png": b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg"/>',
        "damaged.jpg": whole[:12] + bytes(range(256)) * 4,
    }
    for name, content in refused.items():
        (tmp_path / name).write_bytes(content)
    colour = np.random.default_rng(0).random((24, 32, 3), dtype=np.float32)
    tifffile.imwrite(tmp_path / "float.tif", colour, photometric="rgb")
    # Longer than the header read, of bytes no decoder takes (a re-test: a phone's 20 MB clip
    # named .jpg waited for the queue): judged all the same.
    (tmp_path / "long-clip.jpg").write_bytes(iso_media(b"isom") + bytes(HEADER_BYTES))
    (tmp_path / "long-junk.jpg").write_bytes(os.urandom(HEADER_BYTES + 1))
    big = _save(_gradient(40, 30), tmp_path / "big.png")
    longer = ["float.tif", "long-clip.jpg", "long-junk.jpg"]
    cases = [(tmp_path / name, DEFAULT_MAX_PIXELS) for name in [*refused, *longer]]
    cases.append((big, 1000))
    for path, limit in cases:
        with pytest.raises(ImageInputError) as caught:
            open_image(path, max_pixels=limit)
        assert header_look(path, limit)[0] == str(caught.value), path.name

    # Whole photos, a cut one (only decoding finds its end missing), and a file longer than
    # the header read that a decoder takes by its first bytes (a TIFF may keep its directory
    # at its end) are not judged here.
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(whole[: len(whole) // 2])
    long = tmp_path / "long.tif"
    long.write_bytes(b"II*\x00" + (HEADER_BYTES + 8).to_bytes(4, "little") + bytes(HEADER_BYTES))
    photos = [_save(_gradient(64, 48), tmp_path / f"photo.{ext}") for ext in ("png", "webp")]
    # a PNG whose text chunks (a generator's workflow) outgrow the header read: decoded whole
    workflow = PngImagePlugin.PngInfo()
    for n in range(3):
        workflow.add_text(f"step{n}", "x" * (HEADER_BYTES // 2))
    wordy = _save(_gradient(64, 48), tmp_path / "wordy.png", pnginfo=workflow)
    assert wordy.stat().st_size > HEADER_BYTES and open_image(wordy).image.size == (64, 48)
    for path in [tmp_path / "whole.jpg", cut, long, big, wordy, *photos]:
        assert header_look(path)[0] is None, path.name


def test_svg_in_a_note_or_in_a_photos_metadata_is_not_an_svg(tmp_path: Path) -> None:
    """A re-tester's finding: "<svg" anywhere in the first kilobyte made a text note, and a
    truncated JPEG whose comment mentioned it, "an SVG drawing"."""
    note = tmp_path / "note.jpg"
    note.write_bytes(b"Notes: remember to export the <svg> logo\n" * 4)
    with pytest.raises(ImageInputError, match="is not an image format stylefold can read"):
        open_image(note)
    buffer = io.BytesIO()
    _gradient(64, 48).save(buffer, "JPEG", comment=b"logo <svg> version")
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 3])
    with pytest.raises(ImageInputError, match="truncated or corrupt"):
        open_image(cut)


@pytest.mark.parametrize(
    "head",
    [
        b"<!---->" * 146 + b"<!--",
        b"<!--" * 256,
        b"<?xml" * 200,
        b" " * 1023 + b"<",
        b"<!-- -->" * 128,
    ],
)
def test_a_hostile_prologue_is_judged_in_one_pass(tmp_path: Path, head: bytes) -> None:
    """My first SVG test, a regular expression, took minutes on the first of these."""
    path = tmp_path / "p.jpg"
    path.write_bytes(head)
    started = time.perf_counter()
    with pytest.raises(ImageInputError, match="not an image format"):
        open_image(path)
    assert time.perf_counter() - started < 1.0


def test_a_cut_heic_is_still_truncated_not_a_video(tmp_path: Path) -> None:
    data = _save(_gradient(64, 64), tmp_path / "whole.heic", quality=90).read_bytes()
    path = tmp_path / "cut.heic"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageInputError, match="truncated or corrupt"):
        open_image(path)


def test_truncated_jpeg_is_reported(tmp_path: Path) -> None:
    data = encode_image(_gradient(64, 64), "jpg")
    path = tmp_path / "cut.jpg"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageInputError, match="truncated or corrupt"):
        open_image(path)


def test_missing_and_folder(tmp_path: Path) -> None:
    with pytest.raises(ImageInputError, match="does not exist"):
        open_image(tmp_path / "nope.jpg")
    with pytest.raises(ImageInputError, match="is a folder"):
        open_image(tmp_path)


@pytest.mark.parametrize(
    ("fmt", "pil"), [("jpg", "JPEG"), ("png", "PNG"), ("webp", "WEBP"), ("tiff", "TIFF")]
)
def test_encode_carries_exif_and_icc(fmt: str, pil: str) -> None:
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = 8
    exif[0x010F] = "TestCam"  # Make
    # A phone's EXIF has sub-IFDs: with them a TIFF result failed the job (a photographer's
    # trial: "Error setting from dictionary" from libtiff).
    exif.get_ifd(0x8769)[0x9003] = "2026:12:05 10:00:00"  # DateTimeOriginal, Exif IFD
    exif.get_ifd(0x8825)[1] = "N"  # GPSLatitudeRef, GPS IFD
    data = encode_image(_gradient(), fmt, exif=exif.tobytes(), icc=icc)
    back = open_image(data)
    assert back.format == pil
    # the photo's profile, sRGB, is carried as stylefold's own sRGB profile (made once per
    # process: a fresh one differs in its creation time, a flake once another test made it)
    assert back.icc == srgb_profile() and back.profile is not None
    assert back.image.size == (24, 16)  # orientation 1: not rotated on reading
    assert back.exif is not None
    read = Image.Exif()
    read.load(back.exif)
    assert read[EXIF_ORIENTATION] == 1 and read[0x010F] == "TestCam"
    assert read.get_ifd(0x8769)[0x9003] == "2026:12:05 10:00:00"
    assert read.get_ifd(0x8825)[1] == "N"


def test_a_large_tiff_result_is_known_as_ours_from_its_first_bytes() -> None:
    """libtiff wrote a TIFF's tags after its pixels: a 30 MB result synced back into the inbox
    was not recognised as stylefold's own (the check reads the first HEADER_BYTES) and was
    rendered again (a photographer's trial)."""
    noise = np.random.default_rng(0).integers(0, 256, (2400, 2400, 3), dtype=np.uint8)
    data = encode_image(Image.fromarray(noise), "tiff")
    assert len(data) > HEADER_BYTES
    assert written_by_stylefold(io.BytesIO(data))


def test_encode_rejects_unknown_format() -> None:
    with pytest.raises(ImageInputError, match="cannot write 'bmp'"):
        encode_image(_gradient(), "bmp")


def test_png_round_trip_is_lossless() -> None:
    image = _gradient()
    assert open_image(encode_image(image, "png")).image.tobytes() == image.tobytes()


def test_exif_too_long_for_a_jpeg_loses_its_bulk_not_the_result() -> None:
    """An attacker's trial: a PNG carrying 70 KB of EXIF failed as an internal error ("EXIF
    data is too long") after rendering twice; a JPEG holds 64 KiB of it."""
    image = Image.new("RGB", (32, 32), "red")
    notes = Image.Exif()
    notes[0x0132] = "2024:01:01 00:00:00"  # DateTime
    details = notes.get_ifd(0x8769)
    details[0x927C] = b"maker" * 14_000  # MakerNote
    details[0x9003] = "2024:01:01 10:00:00"  # DateTimeOriginal
    kept = Image.open(io.BytesIO(encode_image(image, "jpg", exif=notes.tobytes()))).getexif()
    assert kept[0x0132] == "2024:01:01 00:00:00" and kept[0x0131] == "stylefold"
    assert kept.get_ifd(0x8769).get(0x9003) == "2024:01:01 10:00:00"
    assert 0x927C not in kept.get_ifd(0x8769)
    described = Image.Exif()
    described[0x010E] = "x" * 70_000  # ImageDescription: nothing but the signature fits
    data = encode_image(image, "jpg", exif=described.tobytes())
    assert dict(Image.open(io.BytesIO(data)).getexif()) == {0x0131: "stylefold"}
    png = encode_image(image, "png", exif=described.tobytes())  # no such limit: all kept
    assert Image.open(io.BytesIO(png)).getexif()[0x010E] == "x" * 70_000


def test_the_results_exif_gives_its_own_pixel_size() -> None:
    """A camera's PixelXDimension/PixelYDimension (6000x4000) stayed on a small result (a
    photographer's trial); viewers that trust them show the wrong size."""
    exif = Image.Exif()
    exif.get_ifd(0x8769).update({0xA002: 6000, 0xA003: 4000, 0x9003: "2026:01:01 10:00:00"})
    result = Image.new("RGB", (96, 64), "white")
    data = encode_image(result, "jpg", exif=exif.tobytes())
    with Image.open(io.BytesIO(data)) as read:
        details = read.getexif().get_ifd(0x8769)
    assert (details[0xA002], details[0xA003]) == (96, 64)
    assert details[0x9003] == "2026:01:01 10:00:00"  # the rest is the photo's, as it was


def test_the_location_is_kept_unless_asked_to_leave_it_out() -> None:
    """A photographer's trial: the result carried the camera's GPS block into an outbox that
    syncs to other people; `strip_location` leaves it out and keeps the rest."""
    exif = Image.Exif()
    exif[0x013B] = "A. Photographer"  # Artist
    exif.get_ifd(0x8825).update({1: "N", 2: (48.0, 31.0, 0.0), 3: "E", 4: (9.0, 3.0, 0.0)})
    result = Image.new("RGB", (32, 24), "white")
    for location, gps in ((True, {1: "N", 3: "E"}), (False, {})):
        data = encode_image(result, "jpg", exif=exif.tobytes(), location=location)
        with Image.open(io.BytesIO(data)) as read:
            found = read.getexif()
            kept = {tag: found.get_ifd(0x8825).get(tag) for tag in (1, 3)}
            assert {k: v for k, v in kept.items() if v is not None} == gps
            assert (0x8825 in found) is location
            assert found[0x013B] == "A. Photographer"


def _srgb_encoded(linear: np.ndarray) -> np.ndarray:
    linear = np.clip(linear, 0.0, 1.0)
    curve = np.where(linear <= 0.0031308, 12.92 * linear, 1.055 * linear ** (1 / 2.4) - 0.055)
    return np.asarray(curve * 255)


def test_a_display_p3_photo_is_read_as_srgb_and_its_result_says_srgb(tmp_path: Path) -> None:
    """An iPhone's photos are Display P3: kept as P3 numbers and tagged P3, the result's
    painted (sRGB) colours were shown oversaturated. The expected colours here are worked out
    from the profile's own matrix and the sRGB standard, not by ImageCms."""
    colours = [(200, 100, 50), (30, 160, 220), (128, 128, 128), (250, 240, 10)]
    photo = Image.new("RGB", (len(colours), 1))
    photo.putdata(colours)
    exif = Image.Exif()
    exif[0x8769] = {EXIF_COLOR_SPACE: 0xFFFF}  # "uncalibrated": what a P3 camera writes
    path = _save(
        photo, tmp_path / "p3.png", icc_profile=rgb_profile("Display P3 (test)"), exif=exif
    )

    loaded = open_image(path)

    p3_to_xyz = np.array(DISPLAY_P3_D50).T
    srgb_to_xyz = np.array(  # sRGB's primaries adapted to D50 (Bradford), IEC 61966-2-1
        [[0.4360747, 0.3850649, 0.1430804], [0.2225045, 0.7168786, 0.0606169],
         [0.0139322, 0.0971045, 0.7141733]]
    )  # fmt: skip
    linear = (np.array(colours) / 255) ** (563 / 256)  # the profile's gamma, as stored
    expected = _srgb_encoded(linear @ p3_to_xyz.T @ np.linalg.inv(srgb_to_xyz).T)
    got = np.asarray(loaded.image, dtype=float)[0]
    assert np.abs(got - expected).max() <= 2, (got, expected)
    assert np.abs(got - np.array(colours)).max() >= 15  # converted, not passed through
    assert loaded.profile == "Display P3 (test)"
    assert loaded.icc == srgb_profile()

    result = Image.open(
        io.BytesIO(encode_image(loaded.image, "jpg", exif=loaded.exif, icc=loaded.icc))
    )
    described = ImageCms.getProfileDescription(
        ImageCms.ImageCmsProfile(io.BytesIO(result.info["icc_profile"]))
    )
    assert "sRGB" in described
    assert result.getexif().get_ifd(0x8769)[EXIF_COLOR_SPACE] == 1


def test_a_grey_photo_s_profile_is_applied_to_its_grey(tmp_path: Path) -> None:
    """A linear grey (gamma 1) value of 128 is half the light: sRGB writes that as 188."""
    for mode in ("L", "LA"):
        photo = Image.new(mode, (4, 4), 128 if mode == "L" else (128, 255))
        path = _save(photo, tmp_path / f"{mode}.png", icc_profile=grey_profile("linear", 1.0))
        loaded = open_image(path)
        pixels = np.asarray(loaded.image).reshape(-1, 3)
        assert (pixels == pixels[:, :1]).all() and 186 <= pixels.min() <= pixels.max() <= 190
        assert loaded.profile == "linear"


def test_a_profile_that_cannot_be_used_is_named_and_the_pixels_kept(tmp_path: Path) -> None:
    colour = (200, 100, 50)
    cases = {
        "garbage.png": (Image.new("RGB", (4, 4), colour), b"not a profile at all", "unreadable"),
        "grey_on_rgb.png": (
            Image.new("RGB", (4, 4), colour),
            grey_profile("linear", 1.0),
            "linear, a GRAY profile on RGB pixels, taken as sRGB",
        ),
        "rgb_on_grey.png": (
            Image.new("L", (4, 4), 200),
            rgb_profile("wide"),
            "wide, a RGB profile on GRAY pixels, taken as sRGB",
        ),
    }
    for name, (image, icc, told) in cases.items():
        loaded = open_image(_save(image, tmp_path / name, icc_profile=icc))
        assert loaded.image.tobytes() == image.convert("RGB").tobytes(), name
        assert loaded.profile is not None and loaded.profile.startswith(told), name
        assert loaded.icc == srgb_profile(), name  # its numbers are read as sRGB


def test_a_profile_s_name_is_kept_to_one_short_line(tmp_path: Path) -> None:
    """The description is the sender's text and goes into the manifest."""
    icc = rgb_profile("wide\n" + "x" * 5000)
    loaded = open_image(_save(Image.new("RGB", (4, 4)), tmp_path / "long.png", icc_profile=icc))
    assert loaded.profile == ("wide " + "x" * 5000)[:PROFILE_NAME]


def test_a_tiff_of_float_colour_says_what_to_save_it_as(tmp_path: Path) -> None:
    """Found by a re-tester: a 32-bit float RGB TIFF (Pillow has no such mode) was told it is
    "not an image format stylefold can read", of a file that plainly is a TIFF."""
    import tifffile

    path = tmp_path / "scan.tif"
    colour = np.random.default_rng(0).random((24, 32, 3), dtype=np.float32)
    tifffile.imwrite(path, colour, photometric="rgb")
    with pytest.raises(ImageInputError, match=r"is a TIFF whose pixels .* 8- or 16-bit TIFF"):
        open_image(path)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_each_exif_orientation_turns_the_pixels_as_pillow_does(orientation: int) -> None:
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = orientation
    buffer = io.BytesIO()
    _gradient(24, 16).save(buffer, "PNG", exif=exif.tobytes())
    with Image.open(io.BytesIO(buffer.getvalue())) as opened:
        expected = np.asarray(ImageOps.exif_transpose(opened).convert("RGB"))
    assert np.array_equal(np.asarray(open_image(buffer.getvalue()).image), expected)


def _damaged_exifs(count: int) -> list[bytes]:
    """A photo's EXIF (orientation 6, GPS, a date) with a few bytes changed or cut short."""
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = 6
    exif[0x0131] = "camera"
    exif.get_ifd(0x8825).update({1: "N", 2: (1.0, 2.0, 3.0)})
    exif.get_ifd(0x8769)[0x9003] = "2020:01:01 00:00:00"
    whole = exif.tobytes()
    rng = np.random.default_rng(11)
    damaged = []
    for _ in range(count):
        data = bytearray(whole)
        for at in rng.integers(0, len(data), rng.integers(1, 5)):
            data[at] = rng.integers(0, 256)
        damaged.append(bytes(data[: rng.integers(4, len(data))] if rng.random() < 0.2 else data))
    return damaged


@pytest.mark.filterwarnings("ignore::UserWarning")  # Pillow on the damaged blocks
@pytest.mark.parametrize("fmt", ["WEBP", "JPEG", "PNG"])
def test_a_damaged_exif_costs_its_metadata_never_the_photo(fmt: str, tmp_path: Path) -> None:
    """A fuzzer's trial: Pillow raises SyntaxError, TypeError or struct.error on a damaged EXIF
    block; a WebP whose pixels were whole was refused as "truncated or corrupt", or failed its
    batch as an internal error (`upright_size`). Each is decoded, turned as far as its EXIF can
    be read, sized alike for batching, and written out with its EXIF or without it, never
    with a location asked to be left out."""
    from daemon.pool.batching import upright_size
    from service.imageio import EXIF_GPS_IFD, carries_location

    for index, damaged in enumerate(_damaged_exifs(80)):
        buffer = io.BytesIO()
        _gradient(24, 16).save(buffer, fmt, exif=damaged)
        path = tmp_path / f"{index}.{fmt.lower()}"
        path.write_bytes(buffer.getvalue())
        loaded = open_image(path)
        assert upright_size(path) == loaded.image.size
        carries_location(path)
        for out in ("jpg", "png", "webp"):
            written = Image.open(
                io.BytesIO(encode_image(loaded.image, out, exif=loaded.exif, location=False))
            )
            assert not written.getexif().get_ifd(EXIF_GPS_IFD)


EPS = (
    b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 100 100\n"
    b"(/etc/passwd) (r) file 100 string readstring pop print\nshowpage\n"
)


def test_a_photo_of_postscript_never_reaches_ghostscript(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An attacker's trial: photo.jpg holding PostScript was decoded by Pillow's EPS plugin,
    which runs `gs` (Ghostscript's interpreter, a long history of -dSAFER escapes) on it, and a
    failing `gs` was reported as an internal error and retried. Only photo formats are read."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    ran = tmp_path / "gs-ran"
    fake_gs = bin_dir / "gs"
    fake_gs.write_text(f'#!/bin/sh\necho "$@" >> {ran}\nexit 1\n')
    fake_gs.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    photo = tmp_path / "photo.jpg"
    photo.write_bytes(EPS)
    with pytest.raises(ImageInputError, match="not an image format stylefold can read"):
        open_image(photo)
    with photo.open("rb") as file:
        assert not written_by_stylefold(file)
    assert upright_size(photo) is None and not carries_location(photo)
    assert not ran.exists()


def test_the_photo_formats_phones_and_scanners_write_are_read(tmp_path: Path) -> None:
    """Restricting the decoders must not cost a real photo: an MPO (the JPEG many phones write,
    with a second picture), a BMP, a TIFF and a WebP."""
    first = Image.fromarray(np.full((30, 40, 3), 200, np.uint8))
    second = Image.fromarray(np.full((30, 40, 3), 50, np.uint8))
    buffer = io.BytesIO()
    first.save(buffer, format="MPO", save_all=True, append_images=[second])
    for fmt, data in (
        ("MPO", buffer.getvalue()),
        *((f, _encoded(first, f)) for f in ("BMP", "TIFF", "WEBP")),
    ):
        loaded = open_image(data)
        assert loaded.format == fmt and loaded.image.size == (40, 30)


def _encoded(image: Image.Image, fmt: str) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


def _png_with(chunks: list[tuple[bytes, bytes]]) -> bytes:
    """A 2x2 PNG with extra chunks before its pixels."""
    buffer = io.BytesIO()
    Image.new("RGB", (2, 2)).save(buffer, format="PNG")
    png = buffer.getvalue()
    extra = b"".join(
        struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        for kind, body in chunks
    )
    return png[:33] + extra + png[33:]  # after the signature and IHDR


@pytest.mark.parametrize(
    "chunks",
    [
        [(b"iCCP", b"x\0\0" + zlib.compress(b"\0" * 50_000_000, 9))],
        [(b"zTXt", b"k\0\0" + zlib.compress(b"A" * 50_000_000, 9))],
    ],
    ids=["profile", "text"],
)
def test_a_png_whose_metadata_unpacks_too_large_is_told_to_drop_it(
    chunks: list[tuple[bytes, bytes]],
) -> None:
    """It was "truncated or corrupt; copy it again", which copying never mends."""
    with pytest.raises(ImageInputError, match=r"carries metadata .* save it again without") as err:
        open_image(_png_with(chunks))
    assert "copy it again" not in str(err.value)


def test_a_header_check_reads_no_more_than_the_header_of_a_file_with_a_huge_tag(
    tmp_path: Path,
) -> None:
    """An attacker's trial: a 40x30 TIFF carrying 200 MB of XMP took the daemon's own process
    from 125 to 644 MB in its header checks (the batch key's size, the own-answer check), which
    read every tag. Measured in a fresh process: it grows far less than the tag."""
    photo = tmp_path / "xmp.tif"
    Image.new("RGB", (40, 30)).save(photo, tiffinfo={700: b"<x:xmpmeta>" + b" " * 60_000_000})
    probe = f"""
import re, warnings
warnings.simplefilter("ignore")
from pathlib import Path
from daemon.pool.batching import upright_size
from service.imageio import written_by_stylefold
def peak():  # this process's own (ru_maxrss carries the parent's over exec)
    status = Path("/proc/self/status").read_text()
    return int(re.search(r"VmHWM:\\s*(\\d+) kB", status)[1]) // 1024
before = peak()
size = upright_size(Path({str(photo)!r}))
with open({str(photo)!r}, "rb") as file:
    ours = written_by_stylefold(file)
print(size, ours, peak() - before)
"""
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=True
    )
    size, ours, grown = done.stdout.split(")")[0] + ")", *done.stdout.split(")")[1].split()
    assert (size, ours) == ("(40, 30)", "False")
    assert int(grown) < 40, f"grew {grown} MB reading the header of a file with a 60 MB tag"


def test_a_large_webp_result_is_known_as_ours_by_its_exif_after_the_pixels() -> None:
    """Pillow writes a WebP's EXIF after its pixels: past HEADER_BYTES (a 4096 px result at
    quality 100 measured 17.8 MB), the own-answer check missed it. Here a small result with a
    chunk of padding before its EXIF stands for a large one."""
    data = encode_image(_gradient(), "webp")
    at = data.index(b"EXIF")
    padding = b"JUNK" + HEADER_BYTES.to_bytes(4, "little") + bytes(HEADER_BYTES)
    large = bytearray(data[:at] + padding + data[at:])
    large[4:8] = (len(large) - 8).to_bytes(4, "little")
    assert written_by_stylefold(io.BytesIO(bytes(large)))
    foreign = bytes(large).replace(b"stylefold", b"otherapp!")
    assert not written_by_stylefold(io.BytesIO(foreign))


def test_a_tiffs_profile_and_other_blocks_are_not_carried_as_exif() -> None:
    """An attacker's fourth round: a TIFF's colour profile (tag 34675) came back as 160 KB of
    the result's "EXIF", a profile its sRGB pixels no longer are in."""
    from PIL import ImageCms

    exif = Image.Exif()
    exif[0x010F] = "a scanner"
    profile = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    out = io.BytesIO()
    Image.new("RGB", (8, 8)).save(out, "TIFF", exif=exif, icc_profile=profile)
    assert 34675 in Image.open(io.BytesIO(out.getvalue())).getexif()
    carried = Image.Exif()
    carried.load(open_image(out.getvalue()).exif)
    assert carried.get(0x010F) == "a scanner" and 34675 not in carried


def test_bytes_that_are_no_image_under_a_photos_name_are_told_so(tmp_path: Path) -> None:
    """A new user's trial: random bytes named garbage.heic were told only "not an image format
    stylefold can read (JPEG, PNG, WebP, TIFF, HEIC, ...)", which reads as if HEIC might be one
    it cannot take."""
    for name in ("garbage.heic", "garbage.JPG"):
        (tmp_path / name).write_bytes(bytes(range(7, 256)) * 12)
        ext = name.rpartition(".")[2].lower()
        with pytest.raises(ImageInputError, match=rf"named \.{ext} but does not begin as such"):
            open_image(tmp_path / name)
    (tmp_path / "garbage.xyz").write_bytes(bytes(range(7, 256)) * 12)
    with pytest.raises(ImageInputError, match=r"can read \(JPEG, PNG, WebP, TIFF, HEIC, \.\.\.\)$"):
        open_image(tmp_path / "garbage.xyz")
