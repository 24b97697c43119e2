"""The coarse-to-fine plan and the size arithmetic (pure functions)."""

import itertools

from hypothesis import given
from hypothesis import strategies as st

from service.params import RenderParams
from service.schedule import (
    AFTER_SKETCH_SHARE,
    AUTO_ABOVE,
    MIN_SIDE,
    REFINE_DEEP_WEIGHT,
    SKETCH_SHARE,
    Stage,
    dimensions,
    output_problem,
    plan,
    refit,
    style_dimensions,
    style_floor_note,
    style_layer_weights,
    style_upscale_note,
)


def test_outputs_up_to_the_threshold_run_one_scale_by_default() -> None:
    for size in (256, 512, AUTO_ABOVE):
        stages = plan(RenderParams(size=size, iterations=123))
        assert [(s.long_side, s.iterations, s.content_boost) for s in stages] == [(size, 123, 1.0)]


def test_on_sketches_outputs_up_to_the_threshold_at_half_size() -> None:
    for size in (256, 512, 601, AUTO_ABOVE):
        sketch, output = plan(RenderParams(size=size, iterations=300, multiscale="on"))
        assert (sketch.long_side, output.long_side) == (size // 2, size)
        # The sketch gets part of the cap; the output pass does most of the painting, with the
        # job's own balance and style layers.
        assert sketch.iterations == round(300 * SKETCH_SHARE) < 300
        assert output.iterations == round(sketch.iterations * AFTER_SKETCH_SHARE)
        assert sketch.content_boost > 1.0 and output.content_boost == 1.0
        assert sketch.deep_style == output.deep_style == 1.0


def test_no_iterations_or_one_is_one_pass_at_any_size() -> None:
    """`iterations: 0` returns the start as it is; a sketch or coarse pass made it 1-2 steps
    (a photographer's trial: "2 iterations (at the iteration cap)"). One cannot be shared."""
    for size, multiscale, cap in itertools.product((96, 660, 2048), ("auto", "on"), (0, 1)):
        stages = plan(RenderParams(size=size, iterations=cap, multiscale=multiscale))
        assert [(s.long_side, s.iterations) for s in stages] == [(size, cap)]


def test_a_sketch_and_its_output_pass_never_run_more_than_the_cap() -> None:
    """A re-test: 3 iterations ran a sketch of 2 and an output pass of 2."""
    for cap in range(2, 40):
        stages = plan(RenderParams(size=96, iterations=cap, multiscale="on"))
        assert len(stages) == 2 and sum(s.iterations for s in stages) <= cap, (cap, stages)


def test_off_means_one_scale_at_any_size() -> None:
    assert len(plan(RenderParams(size=4096, multiscale="off"))) == 1


def test_large_outputs_go_coarse_to_fine() -> None:
    for size in (AUTO_ABOVE + 1, 1024, 2048, 4096):
        stages = plan(RenderParams(size=size, iterations=300))
        sides = [s.long_side for s in stages]
        assert len(stages) >= 2
        assert sides[-1] == size and MIN_SIDE <= sides[0] < 2 * MIN_SIDE
        assert all(b in (2 * a, 2 * a + 1) for a, b in itertools.pairwise(sides))
        # The first pass does the work; each finer, costlier pass refines with fewer iterations.
        caps = [s.iterations for s in stages]
        assert caps[0] == 300 and all(b < a for a, b in itertools.pairwise(caps))
        # Coarse passes keep more content; the output pass uses the job's own balance.
        assert stages[-1].content_boost == 1.0
        assert all(s.content_boost > 1.0 for s in stages[:-1])
    assert len(plan(RenderParams(size=2048))) > len(plan(RenderParams(size=1024)))


def test_finer_passes_lighten_the_deep_style_layers() -> None:
    params = RenderParams(size=2048)
    first, *finer = plan(params)
    layers = params.style_layers  # conv1_1 .. conv5_1
    assert style_layer_weights(layers, None, first) == (1.0,) * 5
    r = REFINE_DEEP_WEIGHT
    assert 0 < r < 1
    for stage in finer:
        assert style_layer_weights(layers, None, stage) == (1.0, 1.0, 1.0, r, r)
        assert style_layer_weights(layers, (2, 0, 1, 4, 8), stage) == (2, 0, 1, 4 * r, 8 * r)
    # A single-scale render keeps the job's weights.
    (only,) = plan(RenderParams(size=512))
    assert style_layer_weights(layers, (2, 0, 1, 4, 8), only) == (2, 0, 1, 4, 8)


def test_deep_only_style_is_not_weakened_in_finer_passes() -> None:
    finer = Stage(1024, 50, 1.0, REFINE_DEEP_WEIGHT)
    assert style_layer_weights(("conv4_1", "conv5_1"), None, finer) == (1.0, 1.0)
    assert style_layer_weights(("conv1_1", "conv5_1"), (0, 3), finer) == (0, 3)
    assert style_layer_weights(("conv3_4", "conv4_1"), (1, 1), finer) == (1, REFINE_DEEP_WEIGHT)


def test_on_forces_a_coarse_pass_even_when_small() -> None:
    stages = plan(RenderParams(size=48, iterations=10, multiscale="on"))
    assert [(s.long_side, s.iterations) for s in stages] == [(24, 5), (48, 5)]


def test_a_finer_pass_gets_a_share_of_what_the_coarser_one_ran() -> None:
    stages = plan(RenderParams(size=2048, iterations=500))
    assert [s.iterations for s in stages] == [500, 150, 45]
    # The 512 px pass converged after 120 iterations: 36 at 1024 px, then 11 at 2048 px.
    after_first = refit(stages, 0, 120)
    assert [s.iterations for s in after_first] == [500, 36, 11]
    assert [s.long_side for s in after_first] == [s.long_side for s in stages]
    # A finer pass that converged early passes its own count on.
    assert [s.iterations for s in refit(after_first, 1, 20)] == [500, 36, 10]
    # Never more than the plan gave: a coarse pass that ran long does not grow the finer ones.
    capped = plan(RenderParams(size=1024, iterations=40))
    assert [s.iterations for s in refit(capped, 0, 40)] == [40, 12]
    assert [s.iterations for s in refit(plan(RenderParams(size=1024, iterations=5)), 0, 5)] == [
        5,
        5,
    ]


def test_passes_too_small_for_the_network_are_left_out_before_sharing() -> None:
    """The first pass that runs gets the job's cap (or the sketch's share), whichever coarse
    passes an elongated photo had to drop."""
    stages = plan(RenderParams(size=2048, iterations=300), fits=lambda side: side >= 1024)
    assert [(s.long_side, s.iterations) for s in stages] == [(1024, 300), (2048, 90)]
    assert stages[0].deep_style == 1.0 and stages[1].deep_style == REFINE_DEEP_WEIGHT
    sketch_dropped = RenderParams(size=512, iterations=300, multiscale="on")
    (only,) = plan(sketch_dropped, fits=lambda side: side >= 512)
    assert (only.long_side, only.iterations, only.content_boost) == (512, 300, 1.0)


@given(st.integers(1, 5000), st.integers(1, 5000), st.integers(16, 4096))
def test_dimensions_keep_the_aspect_and_set_the_long_side(w: int, h: int, side: int) -> None:
    out_w, out_h = dimensions(w, h, side)
    assert max(out_w, out_h) == side
    assert min(out_w, out_h) >= 1
    if min(out_w, out_h) > 1:
        assert abs(out_w / out_h - w / h) <= (w / h) * 2 / min(out_w, out_h)


@given(st.integers(8, 3000), st.integers(8, 3000), st.integers(16, 1024), st.integers(16, 1024))
def test_style_gets_the_outputs_pixel_count(sw: int, sh: int, ow: int, oh: int) -> None:
    w, h = style_dimensions((sw, sh), (ow, oh), 1.0, min_side=1)
    assert abs(w * h - ow * oh) <= (w + h + 1) * 1.5
    w2, h2 = style_dimensions((sw, sh), (ow, oh), 2.0, min_side=1)
    assert abs(w2 * h2 - 4 * ow * oh) <= (w2 + h2 + 1) * 1.5


def test_style_short_side_has_a_floor() -> None:
    assert min(style_dimensions((1000, 50), (40, 30), 1.0, min_side=16)) == 16


def test_a_style_image_too_small_to_carry_texture_is_kept_at_the_floor() -> None:
    """Found by a photographer's trial: style_scale 0.25 at 160 px made a 40 px style image,
    and the picture a frame of swirls around a washed-out middle (at 512 px: 0.25 still)."""
    assert style_dimensions((800, 600), (160, 120), 0.25) == (171, 128)
    assert style_dimensions((800, 600), (512, 384), 0.25) == (171, 128)
    assert style_dimensions((800, 600), (512, 384), 0.5) == (256, 192)  # above: as asked
    # So does any scale below it, down to the smallest a sidecar may give (an attacker's
    # trial: 1e-300 underflowed to a 0 px height, a division by zero in the worker).
    for scale in (1e-3, 1e-300, 5e-324):
        assert style_dimensions((800, 600), (512, 384), scale) == (171, 128)
        assert style_dimensions((600, 800), (512, 384), scale) == (128, 171)


def test_a_style_scale_the_floor_overrode_gets_a_note() -> None:
    """A user's trial: at 160 px style_scale 0.5 changed nothing, and nothing said so."""
    note = style_floor_note((800, 600), (160, 120), 0.5)
    assert note is not None and note.startswith("style_scale 0.5 asks for a 80x60 px style")
    assert "it was used at 171x128" in note and "ask for a larger size" in note
    assert style_floor_note((800, 600), (512, 384), 0.5) is None  # 256x192: as asked
    assert style_floor_note((800, 600), (64, 48), 1.0) is None  # floored, but nothing asked
    assert style_floor_note((800, 600), (64, 48), 2.0) is None


def test_a_style_image_enlarged_more_than_twice_gets_a_note() -> None:
    """A photographer's trial: a 40x25 style at style_scale 4 was enlarged 14 times without a
    word, where an enlarged photo is told."""
    note = style_upscale_note((40, 25), (128, 85), 4.0)
    assert note is not None and note.startswith("the style image is only 40x25 px, enlarged to ")
    assert note.endswith("(send a larger style image or a lower style_scale)")
    assert style_upscale_note((200, 138), (512, 353), 1.0) is not None  # 2.5 times
    assert style_upscale_note((400, 276), (512, 353), 1.0) is None
    # A small style at a small size: the floor's own enlargement is not the sender's doing.
    assert style_upscale_note((48, 48), (48, 36), 1.0) is None


def test_a_strip_no_size_mends_is_told_its_shape_rounded() -> None:
    """An attacker's trial: 1000x15 px was said to be 66:1 (cut, not rounded)."""
    told = output_problem((1000, 15), RenderParams(size=512), max_size=512)
    assert told is not None and "no output size up to 512 reaches that at 67:1," in told
    told = output_problem((15, 97), RenderParams(size=64), max_size=64)
    assert told is not None and "reaches that at 6.5:1," in told
    assert output_problem((1000, 15), RenderParams(size=2048), max_size=2048) is None
