"""Colour preservation maths."""

import torch

from service import color


def _image(seed: int, shape: tuple[int, ...] = (1, 3, 12, 10)) -> torch.Tensor:
    return torch.rand(shape, generator=torch.Generator().manual_seed(seed))


def test_yiq_round_trips() -> None:
    x = _image(0)
    assert torch.allclose(color.yiq_to_rgb(color.rgb_to_yiq(x)), x, atol=1e-5)


def test_luminance_is_grey_and_matches_y() -> None:
    x = _image(1)
    grey = color.luminance(x)
    assert torch.equal(grey[:, 0], grey[:, 1]) and torch.equal(grey[:, 1], grey[:, 2])
    y = 0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]
    assert torch.allclose(grey[:, 0], y, atol=1e-6)


def test_combine_luminance_takes_y_from_one_and_iq_from_the_other() -> None:
    stylised, content = _image(2), _image(3)
    out = color.rgb_to_yiq(color.combine_luminance(stylised, content))
    assert torch.allclose(out[:, 0], color.rgb_to_yiq(stylised)[:, 0], atol=1e-5)
    assert torch.allclose(out[:, 1:], color.rgb_to_yiq(content)[:, 1:], atol=1e-5)


def test_match_luminance_takes_the_contents_mean_and_spread() -> None:
    style, content = _image(4) * 0.3, _image(5) * 0.8 + 0.1
    matched = color.match_luminance(style, content)[:, 0]
    y = color.luminance(content)[:, 0]
    assert torch.allclose(matched.mean(), y.mean(), atol=1e-5)
    assert torch.allclose(matched.std(), y.std(), atol=1e-4)


def test_histogram_matching_gives_the_contents_mean_and_covariance() -> None:
    style = _image(6, (1, 3, 20, 20))
    style[:, 0] *= 0.2  # a strongly tinted style
    content = _image(7, (1, 3, 16, 16))
    content[:, 2] = 0.5 * content[:, 2] + 0.5 * content[:, 0]  # correlated channels
    matched = color.match_histogram(style, content)
    m, c = matched.reshape(3, -1).double(), content.reshape(3, -1).double()
    assert torch.allclose(m.mean(1), c.mean(1), atol=1e-5)
    # Equal up to the small ridge that keeps near-grey styles from blowing up noise.
    assert torch.allclose(torch.cov(m), torch.cov(c), atol=1e-3)


def test_recolour_gives_each_image_the_palettes_mean_and_covariance() -> None:
    photos = _image(8, (2, 3, 14, 14))
    photos[1] = photos[1] * 0.3 + 0.6  # a second, paler photo: recoloured on its own
    style = _image(9, (1, 3, 20, 20))
    style[:, 2] = 0.4 * style[:, 2] + 0.6 * style[:, 1]
    palette = color.Palette.of(style)
    out = color.recolour(photos, palette)
    for item in out:
        pixels = item.reshape(3, -1).double()
        assert torch.allclose(pixels.mean(1, keepdim=True), palette.mean, atol=1e-5)
        assert torch.allclose(torch.cov(pixels), palette.cov, atol=1e-3)


def test_a_mixtures_palette_is_that_of_the_pooled_pixels() -> None:
    one, two = _image(10, (1, 3, 16, 16)) * 0.5, _image(11, (1, 3, 16, 16)) * 0.2 + 0.7
    mixed = color.Palette.mixture([color.Palette.of(one), color.Palette.of(two)], [0.5, 0.5])
    pooled = color.Palette.of(torch.cat([one, two], dim=-1))
    assert torch.allclose(mixed.mean, pooled.mean, atol=1e-9)
    # torch.cov divides by n - 1: pooled 2n pixels against two halves of n.
    assert torch.allclose(mixed.cov, pooled.cov, atol=2e-3)
    alone = color.Palette.mixture([color.Palette.of(one), color.Palette.of(two)], [1.0, 0.0])
    assert torch.allclose(alone.cov, color.Palette.of(one).cov)


def test_recolour_with_a_share_takes_that_share_of_the_palettes_mean() -> None:
    photo, style = _image(12, (1, 3, 16, 16)) * 0.4, _image(13, (1, 3, 16, 16)) * 0.3 + 0.6
    palette = color.Palette.of(style)
    half = color.recolour(photo, palette, share=0.5).reshape(3, -1).double().mean(1, keepdim=True)
    own = color.Palette.of(photo).mean
    assert torch.allclose(half, (own + palette.mean) / 2, atol=1e-6)
    unchanged = color.recolour(photo, palette, share=0.0)
    assert torch.allclose(unchanged, photo, atol=1e-3)


def test_a_flat_content_keeps_part_of_the_styles_contrast() -> None:
    """A new user's trial: preserve_colors on a photo of one colour gave back the photo itself,
    the style's contrast scaled to the photo's, none."""
    style = _image(8, (1, 3, 20, 20))
    flat = torch.ones(1, 3, 16, 16) * torch.tensor([0.47, 0.31, 0.16]).view(1, 3, 1, 1)
    grey = color.match_luminance(style, flat)[:, 0]
    y_style = color.luminance(style)[:, 0]
    assert torch.allclose(grey.std(), color.MIN_CONTRAST * y_style.std(), rtol=1e-3)
    assert torch.allclose(grey.mean(), color.luminance(flat)[:, 0].mean(), atol=1e-5)
    matched = color.match_histogram(style, flat).reshape(3, -1).double()
    own = torch.cov(style.reshape(3, -1).double()).trace()
    assert torch.allclose(torch.cov(matched).trace(), color.MIN_CONTRAST**2 * own, rtol=1e-2)
    assert torch.allclose(matched.mean(1), flat.reshape(3, -1).double().mean(1), atol=1e-5)
    # What is added is grey: the three channels move together, no hue of the style's.
    deviation = matched - matched.mean(1, keepdim=True)
    assert torch.allclose(deviation[0], deviation[1], atol=0.02)  # up to the ridge
    assert torch.allclose(deviation[1], deviation[2], atol=0.02)


def test_a_dark_or_flat_photo_is_lifted_to_the_floor_and_an_ordinary_one_is_not() -> None:
    """A kept-colour photo is seen with at least `floor` of luminance spread (at most MAX_LIFT
    times its own), moved in from black so that it fits; one with enough is left as it is."""
    ordinary = _image(3, (1, 3, 16, 16))
    assert color.lifted(ordinary, 0.1) is ordinary
    dark = ordinary * 0.08
    lifted = color.lifted(dark, 0.1)
    y = color.luminance(lifted)[:, 0]
    assert torch.allclose(y.std(), torch.tensor(0.1), rtol=1e-3)
    assert float(y.mean()) >= 0.1 - 1e-6  # not centred on black, half of it cut off
    assert torch.allclose(  # the same picture, only more contrast: its deviations scaled
        lifted - lifted.mean(dim=(-2, -1), keepdim=True),
        (dark - dark.mean(dim=(-2, -1), keepdim=True))
        * float(y.std() / color.luminance(dark)[:, 0].std()),
        atol=1e-5,
    )
    flat = dark * 0.01
    assert torch.allclose(
        color.luminance(color.lifted(flat, 0.1))[:, 0].std(),
        color.MAX_LIFT * color.luminance(flat)[:, 0].std(),
        rtol=1e-3,
    )
