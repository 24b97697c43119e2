"""WebP: how many chunks a walk of them would take (libwebp reads them in C)."""

from __future__ import annotations

from service.decode_cost.refusal import refused

MAX_WEBP_CHUNKS = 100_000


def webp_problem(data: bytes) -> str | None:
    """A WebP's chunks, which libwebp reads in C: more than `MAX_WEBP_CHUNKS` (an animation's
    frames are chunks: a few thousand at most) would make a walk of them take long."""
    at = 12
    for _ in range(MAX_WEBP_CHUNKS):
        if at + 8 > len(data):
            return None
        length = int.from_bytes(data[at + 4 : at + 8], "little")
        at += 8 + length + (length & 1)
    return refused(
        f"a WebP of more than {MAX_WEBP_CHUNKS:,} chunks",
        "editors write far fewer",
        "an ordinary WebP",
    )
