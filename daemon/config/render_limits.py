"""What one render may ask for: the rule set behind `max_output_size` and `max_iterations`.

The config holds its `defaults` to it and every photo's merged parameters are held to it
(`daemon.intake.sidecar.merge_params`), so the two can never disagree; each words the breaches
for its reader ("lower defaults.size ..." for the administrator, "ask for ..." for the sender).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from service.params import NAMED_INITS, RenderParams
from service.weights import WeightsConfig, ships_without_file

# A job's photo and styles come from the inbox and the library; nothing brings a start image.
START_IMAGE_REFUSED = (
    "init 'image' needs a start image file, which only `stylefold render --init PATH` takes; "
    f"use one of {', '.join(repr(name) for name in NAMED_INITS)}"
)


@dataclass(frozen=True)
class OverLimit:
    """One parameter above a limit: `setting` (the daemon's) at `limit`; `allowed` is the most
    the parameter may ask for with the others as they are; `how` joins the asked value to "above
    the limit" in a sentence, saying why when the parameter breaks the limit through another one
    (style_scale through the style image's length)."""

    key: str
    asked: float
    allowed: float
    setting: str
    limit: int
    how: str = " is"


def ceilings(max_size: int, max_iterations: int) -> dict[str, tuple[str, int]]:
    """The params the daemon caps one by one: key -> (setting, limit)."""
    return {"size": ("max_output_size", max_size), "iterations": ("max_iterations", max_iterations)}


def breach_text(over: OverLimit) -> str:
    """A breach as the sender reads it: what was asked, the setting, what to ask instead."""
    return (
        f"params.{over.key}: {over.asked:g}{over.how} above this daemon's {over.setting} "
        f"({over.limit}); ask for {over.key} {over.allowed:g} or less"
    )


def above_ceilings(
    values: Mapping[str, object], caps: Mapping[str, tuple[str, int]]
) -> list[OverLimit]:
    """The params of `values` (numbers; anything else is another check's) above their
    `ceilings`."""
    return [
        OverLimit(key, asked, limit, setting, limit)
        for key, (setting, limit) in caps.items()
        if isinstance(asked := values.get(key), int | float)
        and not isinstance(asked, bool)
        and asked > limit
    ]


def over_limits(params: RenderParams, max_size: int, max_iterations: int) -> list[OverLimit]:
    """The breaches, in the order a reader fixes them. The style image is sized from the output
    (size x style_scale per side) and costs as much per iteration as an output, so it counts as
    one; a size already too large is reported for itself only."""
    caps = ceilings(max_size, max_iterations)
    over = above_ceilings({key: getattr(params, key) for key in caps}, caps)
    style_side = params.size * params.style_scale
    if style_side > max_size >= params.size:
        over.append(
            OverLimit(
                "style_scale",
                params.style_scale,
                math.floor(max_size / params.size * 100) / 100,
                "max_output_size",
                max_size,
                how=f" at size {params.size} makes the style image {round(style_side)} px long,",
            )
        )
    return over


def network_missing(params: RenderParams, weights: WeightsConfig) -> str | None:
    """Why this daemon has no weights for the network asked for (VGG-16's do not ship
    offline), in the administrator's terms; None when it has them."""
    network = params.network
    if getattr(weights, network) is not None or ships_without_file(network, weights):
        return None
    return (
        f"this daemon has no {network.upper()} weights (none ship offline, and weights."
        f"{network} is not set); use vgg19, or have the administrator set weights.{network} "
        "to a torchvision .pth file"
    )
