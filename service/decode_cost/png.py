"""PNG: its chunks, which Pillow reads one at a time in Python, inflating each compressed one."""

from __future__ import annotations

from service.decode_cost.refusal import refused

MAX_PNG_METADATA = 1_000
MAX_PNG_CHUNKS = 200_000

_PNG_PIXELS = frozenset({b"IHDR", b"PLTE", b"IDAT", b"IEND", b"fcTL", b"fdAT", b"acTL"})


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
            return refused(
                f"a PNG of more than {MAX_PNG_METADATA:,} metadata chunks",
                "editors write a few",
                "an ordinary PNG",
            )
        if chunks > MAX_PNG_CHUNKS:
            return refused(
                f"a PNG of more than {MAX_PNG_CHUNKS:,} chunks",
                "editors write a few hundred at most",
                "an ordinary PNG",
            )
    return None
