"""GIF: the metadata blocks and stray bytes before its first picture."""

from __future__ import annotations

from service.decode_cost.refusal import refused

MAX_GIF_BLOCKS = 1_000_000  # Photoshop's XMP in a GIF reads as one block per ~60 bytes
MAX_GIF_JUNK = 65_536


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
                return refused(
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
            return refused(
                f"a GIF of more than {MAX_GIF_BLOCKS:,} metadata blocks before its picture",
                "editors write far fewer",
                "an ordinary GIF or as a PNG",
            )
        at += 1
    return None
