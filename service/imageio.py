"""Reading photos as users have them, and writing results with their metadata.

`open_image` accepts what cameras, phones and editors produce (EXIF orientation, CMYK, 16-bit,
palette, grey with alpha, transparency, animations, HEIC, colour profiles) and returns plain
sRGB. It checks the pixel count from the header before decoding, so a decompression bomb costs
nothing.
`encode_image` returns bytes; writing them safely is the caller's job.
"""

import contextlib
import io
import os
import re
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import BinaryIO

import pillow_heif
from PIL import Image, ImageCms, PngImagePlugin, UnidentifiedImageError

from service import decode_cost
from service.errors import FileUnreadableError, ImageInputError
from service.files import NotAFile, open_regular
from service.params import DEFAULT_QUALITY, output_format

pillow_heif.register_heif_opener()

DEFAULT_MAX_PIXELS = 50_000_000
# The decoders a file may reach: the photo formats of image_extensions (JPEG, whose decoder also
# reads the MPO many phones write; PNG, WebP, TIFF, GIF, HEIF/HEIC) and two an operator may add
# (AVIF, BMP). Left to itself Pillow picks any of its forty by the file's first bytes, whatever its
# name: EPS among them, which it hands to Ghostscript's PostScript interpreter (an attacker's
# trial: a photo.jpg of PostScript ran `gs`).
PHOTO_FORMATS = ("JPEG", "PNG", "WEBP", "TIFF", "GIF", "HEIF", "AVIF", "BMP")
# The most of a file a header check in the daemon's own process reads (`opened_header`,
# `header_look`): photos' headers and metadata, and all of stylefold's own results' (Pillow
# writes them first), sit far inside it; a header it cannot hold is left to the worker (a job
# runs unbatched, a photo is judged by decoding). Pillow's parsers keep a structure per chunk
# or marker: a whole TIFF whose tag held 200 MB cost three times that (an attacker's trial:
# 125 -> 644 MB), and at 16 MiB a GIF of 8 million one-byte comment blocks cost 731 MB and
# 1.8 s, 4 million empty JPEG markers 4.4 s (another's); at 1 MiB, a sixteenth of that.
HEADER_BYTES = 1 << 20
WEBP_EXIF_MAX = 1 << 20  # an EXIF chunk stylefold writes is a few KB
EXIF_ORIENTATION = 0x0112
EXIF_SOFTWARE = 0x0131
SOFTWARE = "stylefold"  # the EXIF Software of every image encoded here
EXIF_IFD = 0x8769
EXIF_GPS_IFD = 0x8825
EXIF_PIXEL_X, EXIF_PIXEL_Y = 0xA002, 0xA003  # in EXIF_IFD: the image's width and height
EXIF_COLOR_SPACE, EXIF_SRGB = 0xA001, 1  # in EXIF_IFD: 1 sRGB, 0xFFFF another (a P3 photo's)
_BULKY_TAGS = (0x927C, 0x9286)  # MakerNote, UserComment: the large, least portable parts
JPEG_EXIF_MAX = 65533  # bytes of EXIF a JPEG's APP1 segment holds
PROFILE_NAME = 120  # characters of a colour profile's description kept (LoadedImage.profile)

_PIL_FORMATS = {"jpg": "JPEG", "png": "PNG", "webp": "WEBP", "tiff": "TIFF"}
ALPHA_FORMATS = ("png", "webp", "tiff")  # the result formats that hold transparency


@dataclass(frozen=True)
class LoadedImage:
    image: Image.Image  # sRGB, orientation applied
    exif: bytes | None  # EXIF as found (orientation still set; encode_image resets it)
    icc: bytes | None  # the profile of `image` (sRGB) when the file had one, for the result
    format: str | None  # the decoder's name for the file format, e.g. "JPEG", "HEIF"
    profile: str | None = None  # the file's own colour profile, converted from; None: had none
    alpha: Image.Image | None = None  # upright, "L": the photo's transparency, where it has some
    more_frames: bool = False  # an animation or a multi-page file: its first frame is used


def _empty(name: str) -> str:
    return f"{name} is empty (0 bytes); copy the file again"


def _over_limit(name: str, shown: str, max_pixels: int) -> str:
    return f"{name} is {shown}, over the limit of {max_pixels:,}; downscale it or raise the limit"


def open_image(
    source: str | os.PathLike[str] | bytes,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_bytes: int | None = None,
) -> LoadedImage:
    """Decode a path or bytes to RGB (a file of at most `max_bytes`). Raises ImageInputError
    saying what is wrong."""
    name = "the image" if isinstance(source, bytes) else str(source)
    data = source if isinstance(source, bytes) else read_image_file(Path(source), max_bytes)
    if not data:
        raise ImageInputError(_empty(name))
    if (slow := decode_cost.problem(data)) is not None:
        raise ImageInputError(f"{name} is {slow}")
    try:
        with Image.open(io.BytesIO(data), formats=PHOTO_FORMATS) as opened:
            width, height = opened.size
            if width * height > max_pixels:
                shown = f"{width}x{height} = {width * height:,} pixels"
                raise ImageInputError(_over_limit(name, shown, max_pixels))
            fmt = opened.format
            more_frames = bool(getattr(opened, "is_animated", False))  # TIFF pages too
            opened.seek(0)  # first frame of an animation
            opened.load()
            exif = _exif_bytes(opened)
            upright = _upright(opened)
            rgb, profile = _to_srgb(upright, opened.info.get("icc_profile"))
            alpha = _transparency(upright)
    except ImageInputError:
        raise
    except Image.DecompressionBombError as exc:
        raise _bomb(name, exc, max_pixels) from exc
    except UnidentifiedImageError as exc:
        raise _unidentified(name, data) from exc
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        if any(limit in str(exc) for limit in ("MAX_TEXT_CHUNK", "MAX_TEXT_MEMORY")):
            raise ImageInputError(_too_much_metadata(name)) from exc
        # A decoder took it on its container's word (a clip in an ISO box named .HEIC).
        if error := _not_a_photo(name, data):
            raise error from exc
        raise ImageInputError(f"{name} is truncated or corrupt ({exc}); copy it again") from exc
    icc = srgb_profile() if profile else None
    return LoadedImage(rgb, exif, icc, fmt, profile, alpha, more_frames)


READABLE = "JPEG, PNG, WebP, TIFF, HEIC, ..."


@cache
def readable_extensions() -> frozenset[str]:
    """The extensions (without the dot) Pillow and its HEIF plugin register for the formats
    `open_image` decodes: the only ones worth adding to a daemon's image_extensions (a new
    user's trial: told to have `pdf` added, which would only have failed at the decode)."""
    Image.init()
    registered = Image.registered_extensions().items()
    return frozenset(ext.lstrip(".") for ext, fmt in registered if fmt in PHOTO_FORMATS)


def named_readable(name: str) -> bool:
    """Whether `name`'s extension is one of `readable_extensions` (what the inbox may be told
    to take, and what a file's bytes are held to)."""
    _, dot, ext = name.rpartition(".")
    return bool(dot) and ext.lower() in readable_extensions()


def _accepted(head: bytes) -> bool:
    """Whether any decoder that may read a photo takes a file beginning with `head`, by its
    own test of the first bytes (what Pillow tries before it reads further)."""
    Image.init()
    return any(
        fmt in Image.OPEN and (accept := Image.OPEN[fmt][1]) is not None and accept(head[:16])
        for fmt in PHOTO_FORMATS
    )


def _bomb(name: str, exc: Image.DecompressionBombError, max_pixels: int) -> ImageInputError:
    """Pillow's own guard (at twice Image.MAX_IMAGE_PIXELS) fires before the size is ours to
    read; its message carries the pixel count, which our limit usually refuses too."""
    found = re.search(r"\((\d+) pixels\)", str(exc))
    if found and int(found[1]) > max_pixels:
        return ImageInputError(_over_limit(name, f"{int(found[1]):,} pixels", max_pixels))
    return ImageInputError(
        f"{name} looks like a decompression bomb ({exc}); it was not decoded; downscale it"
    )


def _unidentified(name: str, data: bytes) -> ImageInputError:
    """What to tell of a file no decoder here identifies, by what its first bytes are."""
    if data[:4] in (b"II*\x00", b"MM\x00*"):  # Pillow reads TIFF, not every sample kind
        return ImageInputError(
            f"{name} is a TIFF whose pixels stylefold cannot read (such as 32-bit "
            "floating-point colour); save it as an 8- or 16-bit TIFF, a PNG or a JPEG"
        )
    if (kind := claimed_format(data)) is not None:
        return ImageInputError(
            f"{name} begins as {kind} file but its header cannot be read (it is damaged); "
            "copy it again, or save it anew from the original"
        )
    if found := _not_a_photo(name, data):
        return found
    if named_readable(name):  # a new user's garbage.heic was told only the formats, which
        # read as if HEIC might be one stylefold cannot take
        ext = name.rpartition(".")[2].lower()
        return ImageInputError(
            f"{name} is not an image format stylefold can read: it is named .{ext} but does "
            "not begin as such a file (damaged, or another kind of file under that name); "
            "copy it again, or save it anew as a JPEG or PNG"
        )
    return ImageInputError(f"{name} is not an image format stylefold can read ({READABLE})")


def header_look(
    path: Path, max_pixels: int = DEFAULT_MAX_PIXELS, head: bytes | None = None
) -> tuple[str | None, tuple[int, int] | None]:
    """What `open_image` would refuse in the file at `path` (whose `read_header` bytes `head`
    may be given), told from its header without decoding: a file no decoder takes, or one over
    the pixel limit (None when only decoding can tell); and the (width, height) the header
    says where it says one (the daemon's check of a photo's shape reads it at the same look).
    A file longer than the header read is judged unidentified only when no decoder takes its
    first 16 bytes (a TIFF may keep its directory at its end; a phone's video, which waited
    for the queue, is over 16 MiB)."""
    name = str(path)
    if head is None:
        try:
            head = read_header(path)
        except OSError:
            return None, None  # the decoder's own read says what is wrong
    if not head:
        return _empty(name), None
    if (slow := decode_cost.problem(head)) is not None:  # what the header read holds already
        return f"{name} is {slow}", None
    try:
        with _opened_judged(head) as opened:
            width, height = opened.size
    except Image.DecompressionBombError as exc:
        return str(_bomb(name, exc, max_pixels)), None
    except UnidentifiedImageError:
        whole = len(head) <= HEADER_BYTES
        return (str(_unidentified(name, head)) if whole or not _accepted(head) else None), None
    except Exception:  # a damaged header: Pillow raises many kinds; decoding tells which
        return None, None
    if width * height > max_pixels:
        shown = f"{width}x{height} = {width * height:,} pixels"
        return _over_limit(name, shown, max_pixels), (width, height)
    return None, (width, height)


_SEND_STILL = "send a still photo instead (a JPEG, PNG or HEIC), such as a frame saved from it"
# ISO base media files (ftyp box) whose major brand says still image: HEIF and AVIF, with their
# sequences, of which the first image is read. Any other major brand is a video or a camera's
# raw file (an MP4 may list mif1 among its other brands): a phone's clip, or a Live Photo's
# motion part, named .HEIC by a sync tool or by hand (a camera roll's trial: told "truncated or
# corrupt; copy it again", which no copy cures).
_STILL_BRANDS = frozenset(
    {b"mif1", b"msf1", b"miaf", b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"avif",
     b"avis", b"avio"}
)  # fmt: skip
_RAW_BRANDS = {b"crx ": "a Canon CR3 raw file"}
_RAW_FIX = "export it from your raw editor as a JPEG or a 16-bit TIFF"
# What may come before an SVG file's root element, each up to its end marker.
_SVG_PROLOGUE = ((b"<?xml", b"?>"), (b"<!--", b"-->"), (b"<!doctype", b">"))


def _is_svg(head: bytes) -> bool:
    """Whether `head` begins as an SVG file: its root element, after an XML declaration,
    comments or a doctype; "<svg" further in is a text note or a photo's metadata (a
    re-tester's finding). One pass: a regular expression with nested repetition took minutes
    on a kilobyte of unclosed comments."""
    text = head.removeprefix(b"\xef\xbb\xbf").lower()
    at = 0
    while True:
        while at < len(text) and text[at] in b" \t\r\n":
            at += 1
        for start, end in _SVG_PROLOGUE:
            if text.startswith(start, at):
                close = text.find(end, at + len(start))
                if close < 0:
                    return False
                at = close + len(end)
                break
        else:
            return text.startswith(b"<svg", at)


def claimed_format(data: bytes) -> str | None:
    """The image format a file's first bytes claim: for one no decoder identifies, damaged,
    not of a format unknown here (a Ray operator's trial: a JPEG scrambled after its first
    bytes was told it was not a format stylefold reads); for a sidecar, a photo given in its
    place."""
    head = data[:64]
    if head.startswith(b"\xff\xd8\xff"):
        return "a JPEG"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "a PNG"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "a GIF"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "a WebP"
    if head[4:8] == b"ftyp" and head[8:12] in _STILL_BRANDS:
        return "an AVIF" if head[8:12] in (b"avif", b"avis", b"avio") else "a HEIF"
    return None


def _not_a_photo(name: str, data: bytes) -> ImageInputError | None:
    """What a file that no decoder here reads is instead, and what to send, by its signature;
    None when it is not one of the kinds people mistake for a photo. No signature here is one
    of `claimed_format`'s, so a damaged image is never called something else."""
    head = data[:1024]
    found: tuple[str, str] | None = None
    if head[4:8] == b"ftyp":
        brand = head[8:12]  # the major brand: an MP4 may list mif1 among the others
        if brand in _RAW_BRANDS:
            found = _RAW_BRANDS[brand], _RAW_FIX
        elif brand not in _STILL_BRANDS:
            found = f"a video (its ftyp brand is {brand.decode('latin-1').strip()!r})", _SEND_STILL
    elif head.startswith(b"\x1a\x45\xdf\xa3") or (head[:4] == b"RIFF" and head[8:12] == b"AVI "):
        found = "a video (Matroska, WebM or AVI)", _SEND_STILL
    elif head.startswith(b"%PDF-"):
        found = "a PDF document", "export its page as a PNG or a JPEG"
    elif _is_svg(head):
        found = "an SVG drawing", "export it as a PNG"
    if found is None:
        return None
    return ImageInputError(f"{name} is {found[0]}, not a photo stylefold can read; {found[1]}")


# TIFF tags that describe the file's layout or carry other blocks, rather than the photo; a
# TIFF's EXIF view lists them, but copied into another file they would be wrong: its colour
# profile (34675), which the result's pixels no longer are in (an attacker's fourth round found
# a 160 KB one carried as "EXIF"), its IPTC (33723), Photoshop (34377) and layer (37724) data.
_TIFF_LAYOUT_TAGS = frozenset(
    {254, 256, 257, 258, 259, 262, 266, 273, 277, 278, 279, 284, 317, 320, 322, 323, 324, 325,
     338, 339, 700, 33723, 34377, 34675, 37724}
)  # fmt: skip


# EXIF is metadata: a damaged block must not cost the photo. Pillow raises SyntaxError,
# TypeError, struct.error and more on one (a fuzzer's trial: a WebP whose pixels are whole was
# refused as "truncated or corrupt", or failed its batch as an internal error), so what reads or
# rewrites EXIF catches every error and goes on without it.
_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


def exif_orientation(image: Image.Image) -> int | None:
    """The EXIF orientation of an opened image, read from its header (`header_exif`); None
    when it has none or its EXIF cannot be read."""
    try:
        value = header_exif(image).get(EXIF_ORIENTATION)
    except Exception:  # a damaged EXIF block: see _TRANSPOSE
        return None
    return value if isinstance(value, int) else None


def _upright(image: Image.Image) -> Image.Image:
    """The pixels as the photo is meant to be seen (its EXIF is rewritten by `encode_image`)."""
    method = _TRANSPOSE.get(exif_orientation(image) or 1)
    return image if method is None else image.transpose(method)


def _exif_bytes(image: Image.Image) -> bytes | None:
    raw = image.info.get("exif")
    if isinstance(raw, bytes) and raw:
        return raw if decode_cost.metadata_problem(raw) is None else None
    try:
        exif = image.getexif()
        if image.format == "TIFF":
            for tag in _TIFF_LAYOUT_TAGS & set(exif):
                del exif[tag]
        return exif.tobytes() if len(exif) else None
    except Exception:  # a damaged EXIF block: see _TRANSPOSE
        return None


def read_image_file(path: Path, max_bytes: int | None = None) -> bytes:
    """The file's bytes, never more than `max_bytes` of them in memory: a file can grow after
    its size was checked (an attacker's trial: extended to 3 GiB by a writer that held it
    open, it was read whole into a worker)."""
    try:
        with open_regular(path) as handle:
            data = handle.read() if max_bytes is None else handle.read(max_bytes + 1)
        if max_bytes is not None and len(data) > max_bytes:
            raise ImageInputError(
                f"{path} is more than {max_bytes:,} bytes, over the limit; send a smaller file"
            )
        return data
    except FileNotFoundError as exc:
        raise FileUnreadableError(f"{path} does not exist") from exc
    except IsADirectoryError as exc:
        raise ImageInputError(f"{path} is a folder, not an image") from exc
    except NotAFile as exc:
        raise ImageInputError(f"{path} is {exc.strerror}; give an image file") from exc
    except OSError as exc:
        raise FileUnreadableError(f"{path} cannot be read ({exc.strerror})") from exc


def _to_srgb(image: Image.Image, icc: object) -> tuple[Image.Image, str | None]:
    """RGB pixels in sRGB, and the name of the profile they were converted from. The network,
    the styles and every viewer without colour management read pixels as sRGB: a Display P3
    photo (every recent iPhone's) kept as P3 numbers had its result's painted colours shown
    oversaturated under the photo's profile. A profile that cannot be read or does not fit the
    pixels is named so, and the pixels are taken as sRGB."""
    if not isinstance(icc, bytes) or not icc:
        return _to_rgb(image), None
    if (costly := decode_cost.profile_problem(icc)) is not None:
        told = f"not applied: building it would take very long ({costly}), taken as sRGB"
        return _to_rgb(image), told
    try:
        source = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        # The sender's text, carried into the manifest: one line, of a sensible length.
        name = " ".join(ImageCms.getProfileDescription(source).split())[:PROFILE_NAME] or "unnamed"
        space = source.profile.xcolor_space.strip()
    except (ImageCms.PyCMSError, OSError, ValueError, TypeError) as exc:
        return _to_rgb(image), f"unreadable ({exc}), taken as sRGB"
    kind = "CMYK" if image.mode == "CMYK" else "GRAY" if image.mode in _GREY_MODES else "RGB"
    if space != kind:
        return _to_rgb(image), f"{name}, a {space} profile on {kind} pixels, taken as sRGB"
    # A grey photo's profile describes one channel: its tone curve, applied to the grey.
    pixels = image if kind == "CMYK" else _to_rgb(image)
    try:
        converted = ImageCms.profileToProfile(
            pixels if kind != "GRAY" else pixels.convert("L"), source, _srgb(), outputMode="RGB"
        )
    except (ImageCms.PyCMSError, OSError, ValueError) as exc:
        return _to_rgb(image), f"{name}, not applied ({exc}), taken as sRGB"
    assert converted is not None  # None only with inPlace
    return converted, name


_GREY_MODES = frozenset({"1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"})
_ALPHA_MODES = frozenset({"RGBA", "LA", "PA", "RGBa", "La"})


@cache
def _srgb() -> ImageCms.ImageCmsProfile:
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))


@cache
def srgb_profile() -> bytes:
    """The ICC profile a result carries when its photo had one: results are sRGB."""
    return _srgb().tobytes()


def _transparency(image: Image.Image) -> Image.Image | None:
    """The alpha channel of a photo that is not opaque everywhere (a cut-out, a sticker), which
    `_to_rgb` lays over white for the network and `encode_image` puts back on the result."""
    if image.mode not in _ALPHA_MODES and "transparency" not in image.info:
        return None
    # A channel of its own, without a copy of the photo (a 50 MP one's RGBA is 200 MB).
    alpha = (
        image.getchannel("A")
        if image.mode in ("RGBA", "LA")
        else image.convert("RGBA").getchannel("A")
    )
    lowest, _ = alpha.getextrema()
    return alpha if isinstance(lowest, int) and lowest < 255 else None


FIRST_FRAME = (
    "the photo has several frames or pages (an animation, or a multi-page file): only the first "
    "was painted; send each one you want as a photo of its own"
)


def _transparency_lost(alpha: Image.Image | None, format: str) -> str | None:
    if alpha is None or output_format(format.lstrip(".")) in ALPHA_FORMATS:
        return None
    return (
        f"the photo is partly transparent and a {format} result cannot be: its transparent parts "
        "were painted as white; output format png, webp or tiff keeps them"
    )


def _to_rgb(image: Image.Image) -> Image.Image:
    """Any mode to RGB, as numbers (colour profiles are `_to_srgb`'s); transparency is
    composited over white (what a viewer shows), a colour named transparent (PNG's tRNS) too."""
    if "transparency" in image.info and image.mode in ("P", "L", "RGB", "1"):
        image = image.convert("RGBA")
    if image.mode == "RGB":
        return image
    if image.mode == "P":
        image = image.convert("RGB")
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        # 16-bit grey: scale to 8 bits rather than clip (PIL's convert would clip at 255).
        image = image.point(lambda v: v / 257).convert("L")
    if image.mode in _ALPHA_MODES:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def encode_image(
    image: Image.Image,
    format: str = "jpg",
    quality: int = DEFAULT_QUALITY,
    exif: bytes | None = None,
    icc: bytes | None = None,
    location: bool = True,
    alpha: Image.Image | None = None,
) -> bytes:
    """Encode to `format` bytes, carrying EXIF (with orientation reset to 1, since the pixels
    are already upright; without its GPS location unless `location`), the ICC profile and,
    where the format holds it, the photo's transparency (`alpha`, scaled to the image)."""
    key = output_format(format.lstrip("."))
    if key not in _PIL_FORMATS:
        raise ImageInputError(f"cannot write {format!r}; use one of {', '.join(_PIL_FORMATS)}")
    pil_format = _PIL_FORMATS[key]
    limit = JPEG_EXIF_MAX if pil_format == "JPEG" else None
    options: dict[str, object] = {"exif": _marked_exif(exif, image.size, limit, location)}
    if icc:
        options["icc_profile"] = icc
    if pil_format in ("JPEG", "WEBP"):
        options["quality"] = quality
    # TIFF stays uncompressed, in Pillow's own writer: through libtiff (any compression) a
    # photo's EXIF with its Exif or GPS sub-IFD, as nearly every phone's has, failed the job
    # ("Error setting from dictionary"), and libtiff puts the tags after the pixels, beyond
    # what the check for stylefold's own answers reads (HEADER_BYTES) of a large result (a
    # photographer's trial). Pillow writes them first; the file is about a quarter larger.
    pixels = image.convert("RGB")
    if alpha is not None and key in ALPHA_FORMATS:
        pixels.putalpha(alpha.resize(image.size, Image.Resampling.LANCZOS))
    buffer = io.BytesIO()
    pixels.save(buffer, format=pil_format, **options)
    return buffer.getvalue()


def encode_result(
    image: Image.Image, photo: LoadedImage, format: str, quality: int, location: bool
) -> tuple[bytes, tuple[str, ...]]:
    """A result encoded with what its photo carries (EXIF, profile, transparency), and the
    notes to add to the render's: where the format cannot hold the photo's transparency, and
    where the photo had frames or pages after the first, which were left out (an attacker's
    trial: a 3,000-frame GIF was answered from its first without a word)."""
    data = encode_image(image, format, quality, photo.exif, photo.icc, location, photo.alpha)
    lost = _transparency_lost(photo.alpha, format)
    notes = () if lost is None else (lost,)
    return data, notes + ((FIRST_FRAME,) if photo.more_frames else ())


def _too_much_metadata(name: str) -> str:
    """A PNG whose colour profile or text unpacks past Pillow's bounds (a zip bomb in a chunk):
    copying it again, as a corrupt file is told, would never help (an attacker's trial)."""
    piece, total = PngImagePlugin.MAX_TEXT_CHUNK >> 20, PngImagePlugin.MAX_TEXT_MEMORY >> 20
    return (
        f"{name} carries metadata (a colour profile or text) that unpacks to more than "
        f"stylefold reads ({piece} MB a piece, {total} MB in all); save it again without that "
        "metadata (an export that leaves it out, or `exiftool -all= FILE`)"
    )


def carries_location(source: Path | BinaryIO) -> bool:
    """Whether the image file `source` (a path or an open file) has a GPS location in its EXIF
    (read from its header, not decoded). An unreadable file carries nothing to leave out."""
    try:
        with Image.open(source, formats=PHOTO_FORMATS) as image:
            return bool(header_exif(image).get_ifd(EXIF_GPS_IFD))
    except Exception:  # unreadable, or a damaged EXIF block: see _TRANSPOSE
        return False


def _marked_exif(
    raw: bytes | None, size: tuple[int, int], limit: int | None = None, location: bool = True
) -> bytes:
    """The photo's EXIF, upright (its pixels already are), with the result's pixel `size`
    (a camera's 6000x4000 stayed on a 512 px result) and colour space (sRGB), and signed with
    SOFTWARE, so that an image of ours synced back into an inbox is known
    (`written_by_stylefold`). Over `limit` bytes (a JPEG's 64 KiB segment; a PNG or TIFF may
    carry more, an attacker's trial: the result failed as an internal error) it loses its
    maker's notes and comments, and if that is not enough, or the photo's EXIF is damaged,
    everything but the signature: never the result."""
    try:
        data = _carried_exif(raw, size, limit, location)
    except Exception:  # a damaged EXIF block: see _TRANSPOSE
        data = None
    if data is None:
        exif = Image.Exif()
        exif[EXIF_SOFTWARE] = SOFTWARE
        data = exif.tobytes()
    return data


def _carried_exif(
    raw: bytes | None, size: tuple[int, int], limit: int | None, location: bool
) -> bytes | None:
    """`_marked_exif` with the photo's tags; None when they do not fit in `limit`."""
    exif = Image.Exif()
    if raw:
        exif.load(raw)
    if EXIF_ORIENTATION in exif:
        exif[EXIF_ORIENTATION] = 1
    if not location:
        exif.pop(EXIF_GPS_IFD, None)
    details = exif.get_ifd(EXIF_IFD) if EXIF_IFD in exif else {}  # get_ifd adds an empty one
    ours = zip((EXIF_PIXEL_X, EXIF_PIXEL_Y, EXIF_COLOR_SPACE), (*size, EXIF_SRGB), strict=True)
    for tag, value in ours:  # the result's own size, and its pixels are sRGB
        if tag in details:
            details[tag] = value
    exif[EXIF_SOFTWARE] = SOFTWARE
    data = exif.tobytes()
    if limit is not None and len(data) > limit:
        details = exif.get_ifd(EXIF_IFD)
        for tag in _BULKY_TAGS:
            details.pop(tag, None)
        data = exif.tobytes()
    return data if limit is None or len(data) <= limit else None


def header_exif(image: Image.Image) -> Image.Exif:
    """The EXIF of an opened, undecoded image, read without decoding its pixels. For checks
    made before `open_image`'s pixel limit: a PNG's own `getexif` decodes the whole image to
    look for EXIF after the pixels (an attacker's 0.7 MB PNG of 177 megapixels, which carries
    none, cost the daemon's main process half a gigabyte); stylefold writes EXIF before them,
    where opening the file finds it."""
    raw = image.info.get("exif")
    if isinstance(raw, bytes) and decode_cost.metadata_problem(raw) is not None:
        return Image.Exif()  # costly to read (a list of a million fractions): read without it
    if image.format != "PNG":
        return image.getexif()
    exif = Image.Exif()
    if isinstance(raw, bytes) and raw:
        exif.load(raw)
    return exif


def read_header(path: Path) -> bytes:
    """The first HEADER_BYTES of the regular file at `path`, and one byte more where there are
    more (what tells a header check that its read did not hold the whole file)."""
    with open_regular(path) as file:
        return file.read(HEADER_BYTES + 1)


@contextlib.contextmanager
def opened_header(source: Path | BinaryIO | bytes) -> Iterator[Image.Image]:
    """The image at `source` (or `read_header`'s bytes of it) opened from its first
    HEADER_BYTES, never decoded: for a look at its header (size, EXIF) in a process that must
    stay small, and so not opened at all where `decode_cost` finds the opening itself costly
    (ImageInputError). What lies past the read is "corrupt" to Pillow (a TIFF's directory at
    its end), and its warning is no news for the daemon's log: the decoder reads the file
    whole."""
    if isinstance(source, Path):
        source = read_header(source)
    head = source if isinstance(source, bytes) else source.read(HEADER_BYTES)
    if (slow := decode_cost.problem(head[:HEADER_BYTES])) is not None:  # before Pillow pays it
        raise ImageInputError(f"the image is {slow}")
    with _opened_judged(head) as image:
        yield image


@contextlib.contextmanager
def _opened_judged(head: bytes) -> Iterator[Image.Image]:
    """`opened_header` of bytes `decode_cost` has judged already."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        image = Image.open(io.BytesIO(head[:HEADER_BYTES]), formats=PHOTO_FORMATS)
    with image:
        yield image


def written_by_stylefold(file: BinaryIO) -> bool:
    """Whether an open (seekable) image file was encoded here (its EXIF Software is SOFTWARE).
    Anything unreadable is not ours."""
    exif = Image.Exif()
    # A hostile or broken file: Pillow raises many kinds of error, and none is ours.
    with contextlib.suppress(Exception), opened_header(file) as image:
        exif = header_exif(image)
    with contextlib.suppress(Exception):  # the header cut short a large WebP
        if EXIF_SOFTWARE not in exif and (tail := _webp_exif(file)) is not None:
            exif.load(tail)
    return str(exif.get(EXIF_SOFTWARE, "")) == SOFTWARE


def _webp_exif(file: BinaryIO) -> bytes | None:
    """A WebP file's EXIF chunk, found by walking its chunks with seeks: Pillow writes it after
    the pixels, beyond the HEADER_BYTES a large result's header check reads (a 4096 px result
    at quality 100 measured 17.8 MB)."""
    file.seek(0)
    head = file.read(12)
    if len(head) < 12 or head[:4] != b"RIFF" or head[8:] != b"WEBP":
        return None
    for _ in range(decode_cost.MAX_WEBP_CHUNKS):  # a walk of millions would hold the daemon
        if len(chunk := file.read(8)) < 8:
            return None
        size = int.from_bytes(chunk[4:], "little")
        if chunk[:4] == b"EXIF":
            exif = file.read(size) if size <= WEBP_EXIF_MAX else b""
            return exif if exif and decode_cost.metadata_problem(exif) is None else None
        file.seek(size + size % 2, os.SEEK_CUR)  # chunks are padded to an even size
    return None
