"""Checking a style image the way a worker will read it, before anything relies on it.

A style that is listed must render: `stylefold styles`, `stylefold doctor` and the daemon's
library load all decode each image fully with `service.imageio.open_image` (what the worker
calls) and refuse empty, truncated, undecodable or absurdly shaped files by name, instead of a
job failing later with "a style image is empty". Decoding is the only reliable test (a header
can be whole while the data is cut short), so results are cached by the file's identity and the
pixel limit: a reload decodes only what changed.
"""

from __future__ import annotations

import os
from pathlib import Path

from service.style_shape import shape_problem

CACHE_ENTRIES = 4096


class StyleChecker:
    """`problem(path)`: None for a usable style image, else what is wrong and what to do."""

    def __init__(self, max_pixels: int) -> None:
        self.max_pixels = max_pixels
        self._seen: dict[tuple[str, int, int, int, int], str | None] = {}

    def problem(self, path: Path) -> str | None:
        try:
            info = os.stat(path)
        except OSError as exc:
            return f"{path.name} cannot be read ({exc.strerror})"
        key = (str(path), info.st_size, info.st_mtime_ns, info.st_ino, self.max_pixels)
        if key not in self._seen:
            if len(self._seen) >= CACHE_ENTRIES:
                self._seen.clear()
            self._seen[key] = check_style_image(path, self.max_pixels)
        return self._seen[key]


def check_style_image(path: Path, max_pixels: int) -> str | None:
    """Decode `path` as the worker will; the problem in words (naming the file), or None."""
    from service.errors import ImageInputError
    from service.imageio import open_image

    try:
        image = open_image(path, max_pixels=max_pixels).image
    except ImageInputError as exc:
        message = str(exc).replace(str(path), path.name)
        return message.replace("raise the limit", "raise the daemon's max_pixels setting")
    return shape_problem(path.name, image.size)
