"""Colour preservation (Gatys et al. 2017, "Controlling Perceptual Factors"), pure tensor maths on
RGB images in [0, 1] shaped `[B, 3, H, W]`.

- Luminance-only transfer: style transfer runs on the luminance channel (Y of YIQ) of both
  images, with the style's luminance mean and deviation matched to the content's; the result's
  luminance is then combined with the content's I and Q channels.
- Histogram matching: the style image's colours get the content's mean and covariance before
  transfer, so the stylised image inherits the content's palette.
"""

import torch

_RGB_TO_YIQ = torch.tensor(
    [
        [0.299, 0.587, 0.114],
        [0.595716, -0.274453, -0.321263],
        [0.211456, -0.522591, 0.311135],
    ]
)
_YIQ_TO_RGB = torch.linalg.inv(_RGB_TO_YIQ)


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
    """The style's grey image with the content's luminance mean and deviation."""
    ys, yc = luminance(style), luminance(content)
    scaled = (ys - ys.mean()) / (ys.std() + 1e-6) * yc.std() + yc.mean()
    return scaled


def combine_luminance(stylised: torch.Tensor, content: torch.Tensor) -> torch.Tensor:
    """The stylised image's luminance with the content's chroma (I, Q)."""
    y = rgb_to_yiq(stylised)[:, :1]
    iq = rgb_to_yiq(content)[:, 1:]
    return yiq_to_rgb(torch.cat([y, iq], dim=1))


def match_histogram(style: torch.Tensor, content: torch.Tensor) -> torch.Tensor:
    """An affine colour map x -> A (x - mu_s) + mu_c taking the style's colour mean and
    covariance to the content's (A = C_c^1/2 C_s^-1/2, symmetric square roots); not clamped."""
    s = style.reshape(3, -1).double()
    c = content.reshape(3, -1).double()
    mu_s, mu_c = s.mean(1, keepdim=True), c.mean(1, keepdim=True)
    eye = torch.eye(3, dtype=torch.float64) * 1e-5
    cov_s = torch.cov(s) + eye
    cov_c = torch.cov(c) + eye
    mapping = _sqrtm(cov_c) @ torch.linalg.inv(_sqrtm(cov_s))
    out = mapping @ (s - mu_s) + mu_c
    return out.reshape(style.shape).to(style.dtype)


def _sqrtm(matrix: torch.Tensor) -> torch.Tensor:
    values, vectors = torch.linalg.eigh(matrix)
    return vectors @ torch.diag(values.clamp(min=0).sqrt()) @ vectors.T
