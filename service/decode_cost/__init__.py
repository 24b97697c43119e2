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

from service.decode_cost.bmp import bmp_problem
from service.decode_cost.gif import gif_problem
from service.decode_cost.heif import heif_problem
from service.decode_cost.jpeg import jpeg_problem
from service.decode_cost.png import png_problem
from service.decode_cost.profile import profile_problem
from service.decode_cost.tiff import TIFF_HEADERS, metadata_problem, tiff_problem
from service.decode_cost.webp import MAX_WEBP_CHUNKS, webp_problem

__all__ = ["MAX_WEBP_CHUNKS", "metadata_problem", "problem", "profile_problem"]


def problem(data: bytes) -> str | None:
    """What in `data` would make reading it costly ("a JPEG of more than 100 progressive scans
    (...), which would take very long to read; save it again ..."), or None. Judged before a
    decoder opens the file: Pillow reads a GIF's or a PNG's metadata as it opens it."""
    if data.startswith(b"\xff\xd8\xff"):  # JPEG, and MPO, a JPEG followed by others
        return jpeg_problem(data)
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return gif_problem(data)
    if data[:4] in TIFF_HEADERS:  # Pillow's, each of them
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
