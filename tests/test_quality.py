"""The second referee's maths (service.quality) on tiny tensors with known answers."""

import pytest
import torch

from service.quality import (
    SCALE_FLOOR,
    channel_scale,
    content_distance,
    directions,
    quantiles,
    sliced_wasserstein,
)


def _features(seed: int, c: int = 3, h: int = 4, w: int = 5) -> torch.Tensor:
    return torch.rand(c, h, w, generator=torch.Generator().manual_seed(seed))


def test_channel_scale_is_the_rms_with_a_floor_for_silent_channels() -> None:
    f = torch.zeros(3, 2, 2)
    f[0] = 2.0
    f[1] = 1.0  # channel 2 silent
    scale = channel_scale(f)
    assert scale[:2].tolist() == pytest.approx([2.0, 1.0])
    assert float(scale[2]) == pytest.approx(SCALE_FLOOR * 1.0)  # 0.1 x the mean RMS (3/3)


def test_content_distance_matches_the_formula() -> None:
    target = torch.tensor([[[1.0, 1.0]], [[4.0, 4.0]]])  # channel RMS 1 and 4
    features = torch.tensor([[[2.0, 1.0]], [[4.0, 0.0]]])
    # Scaled differences: (1, 0) and (0, -1); scaled target: (1, 1) and (1, 1).
    assert content_distance(features, target) == pytest.approx(2**0.5 / 2)
    assert content_distance(target, target) == 0.0


def test_content_distance_weighs_channels_equally_whatever_their_energy() -> None:
    target, features = _features(1), _features(2)
    loud = torch.tensor([5.0, 1.0, 1.0]).view(3, 1, 1)  # above the floor: each its own scale
    assert content_distance(features * loud, target * loud) == pytest.approx(
        content_distance(features, target), rel=1e-5
    )


def test_content_distance_refuses_different_shapes() -> None:
    with pytest.raises(ValueError, match="shapes differ"):
        content_distance(_features(1, h=4), _features(1, h=5))


def test_directions_are_unit_vectors_and_reproducible() -> None:
    d = directions(5, 7)
    assert d.shape == (5, 7)
    assert torch.allclose(d.norm(dim=0), torch.ones(7))
    assert torch.equal(d, directions(5, 7))
    assert not torch.equal(d, directions(5, 7, seed=1))


def test_quantiles_of_an_evenly_spread_column() -> None:
    values = torch.arange(8.0).flip(0).view(8, 1)
    assert quantiles(values, 8).flatten().tolist() == list(range(8))
    assert quantiles(values, 4).flatten().tolist() == [1.0, 3.0, 5.0, 7.0]  # bin midpoints


def test_sliced_wasserstein_is_zero_for_the_same_distribution_anywhere() -> None:
    """Layout does not matter: shuffled positions and a tiled (larger) image score 0."""
    style = _features(3, c=4, h=6, w=6)
    d = directions(4, 16)
    shuffled = style.reshape(4, -1)[:, torch.randperm(36)].reshape(4, 6, 6)
    assert sliced_wasserstein(shuffled, style, d, bins=36) == pytest.approx(0.0, abs=1e-6)
    tiled = style.repeat(1, 2, 3)
    assert sliced_wasserstein(tiled, style, d, bins=36) == pytest.approx(0.0, abs=1e-6)


def test_sliced_wasserstein_of_a_shift_is_the_shift_in_standard_deviations() -> None:
    style = torch.arange(10.0).view(1, 2, 5)
    std = float(style.std())
    shifted = style + 0.5 * std
    one = torch.ones(1, 1)
    assert sliced_wasserstein(shifted, style, one, bins=10) == pytest.approx(0.5, rel=1e-5)
    assert sliced_wasserstein(style * 0, style, one, bins=10) > 1.0  # flat: nothing of the style


def test_sliced_wasserstein_refuses_mismatched_channels() -> None:
    with pytest.raises(ValueError, match="channel count"):
        sliced_wasserstein(_features(1, c=3), _features(2, c=4), directions(4, 2))


def test_sliced_wasserstein_does_not_explode_on_a_silent_style_channel() -> None:
    """A channel that never fires in the style (std 0) is scaled by the floor, not by 0."""
    style = torch.rand(2, 4, 4, generator=torch.Generator().manual_seed(4))
    style[1] = 0.0
    lit = style.clone()
    lit[1] = 0.01
    distance = sliced_wasserstein(lit, style, torch.eye(2), bins=16)
    floor = SCALE_FLOOR * float(style[0].std()) / 2  # the mean of the two channels' std
    assert distance == pytest.approx(0.01 / floor / 2**0.5, rel=1e-4)
