"""BMP: run-length compressed pictures, which Pillow decodes a pixel at a time."""

from __future__ import annotations

from service.decode_cost.refusal import refused

MAX_RLE_PIXELS = 4_000_000


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
        return refused(
            f"a BMP of {width * height:,} pixels compressed with run lengths",
            f"read a pixel at a time; stylefold reads up to {MAX_RLE_PIXELS:,}",
            "a PNG",
        )
    return None
