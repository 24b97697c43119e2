"""Statistics that judge a stylised image without being the loss that made it.

The optimiser minimises mean squared errors of conv4_2 features (content) and of Gram matrices
at conv1_1 ... conv5_1 (style). A referee built from the same quantities rewards whatever
optimises them best, not necessarily a better picture. These functions measure the same two
properties another way, for `bench.referee`:

- content: the relative distance between the output's and the photo's features at layers the
  loss never looks at, each channel scaled by the photo's own RMS so that a few high-energy
  channels do not decide the score (the loss's plain MSE is dominated by them);
- style: the sliced Wasserstein distance between the output's and the style's feature
  distributions (every channel standardised by the style's own mean and spread, floored): the
  whole distribution of activations, not its second moments, compared along random directions.

All functions take features as `[C, H, W]` (one image) and return plain floats, lower is better.
"""

import torch

# Floor of a channel's scale, as a fraction of the mean scale over channels: a channel that is
# almost silent in the reference must not turn a small absolute change into a huge relative one.
SCALE_FLOOR = 0.1


def channel_scale(reference: torch.Tensor) -> torch.Tensor:
    """`[C, H, W]` -> `[C]`: each channel's RMS, floored at `SCALE_FLOOR` x the mean RMS."""
    rms = reference.float().pow(2).mean(dim=(1, 2)).sqrt()
    return rms.clamp(min=SCALE_FLOOR * float(rms.mean()) + 1e-12)


def content_distance(features: torch.Tensor, target: torch.Tensor) -> float:
    """||(F - T) / s|| / ||T / s|| with s the target's per-channel scale: 0 for the photo
    itself, about 1 when the features are as far from the photo's as the photo is from zero."""
    if features.shape != target.shape:
        raise ValueError(f"feature shapes differ: {tuple(features.shape)} {tuple(target.shape)}")
    scale = channel_scale(target).view(-1, 1, 1)
    diff = (features.float() - target.float()) / scale
    return float(diff.norm() / (target.float() / scale).norm().clamp(min=1e-12))


def directions(channels: int, count: int, seed: int = 0) -> torch.Tensor:
    """`[C, count]` random unit vectors, the same for a given seed on every machine."""
    generator = torch.Generator().manual_seed(seed)
    d = torch.randn(channels, count, generator=generator, dtype=torch.float64).float()
    return d / d.norm(dim=0, keepdim=True)


def quantiles(values: torch.Tensor, count: int) -> torch.Tensor:
    """`[N, K]` -> `[count, K]`: each column's values at the midpoints of `count` equal-mass
    bins (sorted), so distributions with different sample counts can be compared."""
    n = values.shape[0]
    ordered = values.sort(dim=0).values
    index = ((torch.arange(count, dtype=torch.float64) + 0.5) * n / count).long().clamp(max=n - 1)
    return ordered[index]


def sliced_wasserstein(
    features: torch.Tensor,
    style: torch.Tensor,
    projections: torch.Tensor,
    bins: int = 256,
) -> float:
    """The sliced 2-Wasserstein distance between the distributions of feature vectors (one
    per position) of `features` and `style` (`[C, H, W]`, any H and W), each channel first
    standardised by the style's mean and standard deviation (floored like `channel_scale`:
    a dark style such as a deep-field photo has channels that hardly ever fire), along
    `projections` (`[C, K]` unit vectors). 0 when the two have the same distribution of
    activations wherever they are in the image; 1 is the spread of the style's own features
    along a direction."""
    c = style.shape[0]
    if features.shape[0] != c or projections.shape[0] != c:
        raise ValueError("features, style and projections must have the same channel count")
    s = style.float().reshape(c, -1)
    mean = s.mean(dim=1, keepdim=True)
    std = s.std(dim=1, keepdim=True)
    std = std.clamp(min=SCALE_FLOOR * float(std.mean()) + 1e-12)
    a = ((features.float().reshape(c, -1) - mean) / std).T @ projections
    b = ((s - mean) / std).T @ projections
    gap = quantiles(a, bins) - quantiles(b, bins)
    return float(gap.pow(2).mean().sqrt())
