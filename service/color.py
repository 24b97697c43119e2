"""Colour preservation (Gatys et al. 2017, "Controlling Perceptual Factors"), pure tensor maths on
RGB images in [0, 1] shaped `[B, 3, H, W]`.

- Luminance-only transfer: style transfer runs on the luminance channel (Y of YIQ) of both
  images, with the style's luminance mean and deviation matched to the content's; the result's
  luminance is then combined with the content's I and Q channels.
- Histogram matching: the style image's colours get the content's mean and covariance before
  transfer, so the stylised image inherits the content's palette.

Either match takes the content's contrast, and a photo with little (a white wall, fog, a night
sky) took the style's away with it: a flat photo came back as itself. So the style keeps at
least `MIN_CONTRAST` of its own spread; what the content lacks is added as grey, which brings no
colour of the style's.

The same affine map, the other way round, gives the default start (`init="recolored"`): the
photo in the style's colours. The optimiser then spends its iterations on texture instead of
repainting every pixel's colour, and at the same balance the result is closer to the style by an
independent referee and no further from the photo (docs/BENCH.md).
"""

from collections.abc import Sequence
from dataclasses import dataclass

import torch

_RGB_TO_YIQ = torch.tensor(
    [
        [0.299, 0.587, 0.114],
        [0.595716, -0.274453, -0.321263],
        [0.211456, -0.522591, 0.311135],
    ]
)
_YIQ_TO_RGB = torch.linalg.inv(_RGB_TO_YIQ)


MIN_CONTRAST = 0.5  # of the style's own deviation, kept however flat the content
MAX_LIFT = 8.0  # the most a kept-colour photo's contrast is raised (`lifted`)
_GREY = torch.full((3, 1), 3**-0.5, dtype=torch.float64)  # the unit luminance-ish direction


def _mix(matrix: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
    return torch.einsum("ij,bjhw->bihw", matrix.to(image), image)


def rgb_to_yiq(image: torch.Tensor) -> torch.Tensor:
    return _mix(_RGB_TO_YIQ, image)


def yiq_to_rgb(image: torch.Tensor) -> torch.Tensor:
    return _mix(_YIQ_TO_RGB, image)


def luminance(image: torch.Tensor) -> torch.Tensor:
    """The Y channel repeated into three, so the network sees a grey RGB image."""
    return rgb_to_yiq(image)[:, :1].expand(-1, 3, -1, -1).contiguous()


def match_luminance(style: torch.Tensor, content: torch.Tensor) -> torch.Tensor:
    """The style's grey image with the content's luminance mean and deviation (at least
    MIN_CONTRAST of its own)."""
    ys, yc = luminance(style), luminance(content)
    spread = torch.maximum(yc.std(), MIN_CONTRAST * ys.std())
    return (ys - ys.mean()) / (ys.std() + 1e-6) * spread + yc.mean()


def lifted(content: torch.Tensor, floor: float) -> torch.Tensor:
    """The photo with its luminance spread raised to `floor` where below (at most MAX_LIFT
    times), and moved in from black or white so that it fits: a dark or flat photo as the
    network sees it when its colours are kept. Matched to its own little contrast, the style
    drowned it (a photographer's trial: a night photo under Starry Night, colours kept, came
    back all swirls, no town), since the losses' balance is set for photos of a painting's
    contrast. The result keeps the lifted contrast; its chroma is still the photo's."""
    y = luminance(content)[:, :1]
    spread = y.std()
    gain = float((floor / spread.clamp(min=1e-6)).clamp(1.0, MAX_LIFT))
    if gain <= 1.0:
        return content
    centre = content.mean(dim=(-2, -1), keepdim=True)
    half = min(float(spread) * gain, 0.5)
    mean = float(y.mean())
    shift = min(max(mean, half), 1.0 - half) - mean
    return (content - centre) * gain + centre + shift


def luminance_spread(image: torch.Tensor) -> float:
    return float(luminance(image)[:, :1].std())


def combine_luminance(stylised: torch.Tensor, content: torch.Tensor) -> torch.Tensor:
    """The stylised image's luminance with the content's chroma (I, Q)."""
    y = rgb_to_yiq(stylised)[:, :1]
    iq = rgb_to_yiq(content)[:, 1:]
    return yiq_to_rgb(torch.cat([y, iq], dim=1))


@dataclass(frozen=True)
class Palette:
    """An image's colour statistics: the mean and covariance of its RGB values (float64)."""

    mean: torch.Tensor  # [3, 1]
    cov: torch.Tensor  # [3, 3]

    @staticmethod
    def of(image: torch.Tensor) -> "Palette":
        pixels = image.movedim(-3, 0).reshape(3, -1).double()
        return Palette(pixels.mean(1, keepdim=True), torch.cov(pixels))

    @staticmethod
    def mixture(palettes: Sequence["Palette"], weights: Sequence[float]) -> "Palette":
        """The statistics of the images' pixels pooled with these weights (summing to 1): a
        blend of styles has the colours of all its styles, in proportion."""
        pairs = list(zip(palettes, weights, strict=True))
        mean = sum((w * p.mean for p, w in pairs), torch.zeros(3, 1, dtype=torch.float64))
        second = sum(
            (w * (p.cov + p.mean @ p.mean.T) for p, w in pairs),
            torch.zeros(3, 3, dtype=torch.float64),
        )
        return Palette(mean, second - mean @ mean.T)


def recolour(image: torch.Tensor, palette: Palette, share: float = 1.0) -> torch.Tensor:
    """An affine colour map x -> A (x - mu_x) + mu taking each image of the batch, on its own,
    from its colour mean and covariance to the palette's (A = C^1/2 C_x^-1/2, symmetric square
    roots); with `share` below 1, to the mixture of its own palette and the palette, so it takes
    that share of the palette's colours. Not clamped."""
    eye = torch.eye(3, dtype=torch.float64) * 1e-5
    out = []
    for item in image.split(1):
        own = Palette.of(item)
        target = palette if share >= 1 else Palette.mixture([own, palette], [1 - share, share])
        mapping = _sqrtm(target.cov + eye) @ torch.linalg.inv(_sqrtm(own.cov + eye))
        pixels = item.reshape(3, -1).double()
        out.append((mapping @ (pixels - own.mean) + target.mean).reshape(item.shape))
    return torch.cat(out).to(image.dtype)


def match_histogram(style: torch.Tensor, content: torch.Tensor) -> torch.Tensor:
    """The style image with the content's colour mean and covariance, its total variance
    raised in grey to MIN_CONTRAST^2 of the style's own where the content's is below; not
    clamped."""
    target, own = Palette.of(content), Palette.of(style)
    missing = MIN_CONTRAST**2 * own.cov.trace() - target.cov.trace()
    if missing > 0:
        target = Palette(target.mean, target.cov + missing * (_GREY @ _GREY.T))
    return recolour(style, target)


def _sqrtm(matrix: torch.Tensor) -> torch.Tensor:
    values, vectors = torch.linalg.eigh(matrix)
    return vectors @ torch.diag(values.clamp(min=0).sqrt()) @ vectors.T
