"""Pictures and the optimiser's tensors: PIL RGB images <-> `[1, 3, H, W]` floats in [0, 1],
resized the conventional way, and an iterate decoded back into the picture it stands for."""

import numpy as np
import torch
from PIL import Image

from service import color
from service.network import InputSpace
from service.params import RenderParams


def to_tensor(image: Image.Image) -> torch.Tensor:
    """RGB PIL image -> `[1, 3, H, W]` float in [0, 1]."""
    array = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
    return torch.from_numpy(array).permute(2, 0, 1).unsqueeze(0).contiguous()


def to_image(tensor: torch.Tensor) -> Image.Image:
    """`[3, H, W]` or `[1, 3, H, W]` in [0, 1] -> RGB PIL image."""
    if tensor.dim() == 4:
        tensor = tensor[0]
    array = (tensor.detach().float().clamp(0, 1) * 255).round().byte().permute(1, 2, 0)
    return Image.fromarray(array.cpu().numpy(), "RGB")


def resized(image: Image.Image, size: tuple[int, int]) -> torch.Tensor:
    """PIL's bilinear filter (antialiased when shrinking), as pastiche and neural-style resize.
    Deep-layer Grams are very sensitive to the resampling filter (Lanczos keeps so much more
    high-frequency energy that conv4_1's Gram differs by an order of magnitude), so targets are
    prepared the conventional way to keep results comparable with the tools users know."""
    if image.size != size:
        image = image.resize(size, Image.Resampling.BILINEAR)
    return to_tensor(image)


def picture(
    space: InputSpace,
    x: torch.Tensor,
    content: Image.Image,
    size: tuple[int, int],
    params: RenderParams,
) -> Image.Image:
    """One item of the iterate `x` (`[1, ...]`, at `size`) as the image it stands for: the
    result at the end, a preview before."""
    out = space.decode(x.detach()).cpu()
    if params.preserve_colors == "luminance":
        out = color.combine_luminance(out, resized(content, size))
    return to_image(out)
