"""One referee for every output: pastiche's Gatys loss, computed with stylefold's modules.

Every output PNG (pastiche's and stylefold's) is scored by the same function at its own final
size: content loss at conv4_2 against the content image, style loss (five layers, equal weights)
against the style image, with stylefold's network (the same original VGG-19 file pastiche ships,
max pooling) and stylefold's loss maths. The weights are fixed and chosen so that the total is
exactly pastiche's own loss (`service.losses` explains why 0.01 x content + 10 x style is), so
"pastiche's 500-iteration loss" means what pastiche itself reports. The targets are prepared the
way pastiche prepares them (bilinear resize, style resized to the output's pixel count), which if
anything favours pastiche; `python -m bench.score` prints the score of single files.
"""

import argparse
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from PIL import Image

from service.losses import content_loss, gram, style_layer_loss
from service.network import VGGFeatures
from service.params import RenderParams
from service.tensors import to_tensor
from service.weights import WeightsConfig, load_weights

CONTENT_WEIGHT = 0.01
STYLE_WEIGHT = 10.0
CONTENT_LAYERS = RenderParams.model_validate({}).content_layers
STYLE_LAYERS = RenderParams.model_validate({}).style_layers
RESAMPLE = Image.Resampling.BILINEAR  # pastiche's resize


@dataclass(frozen=True)
class Score:
    content: float  # mean squared feature error at conv4_2 (unweighted)
    style: float  # sum over the style layers of the mean squared Gram error (unweighted)
    total: float  # CONTENT_WEIGHT * content + STYLE_WEIGHT * style: pastiche's loss

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def pastiche_size(width: int, height: int, pixels: int) -> tuple[int, int]:
    """The (w, h) pastiche resizes an image to for a pixel budget (its `load_image`)."""
    h = round(math.sqrt(pixels * height / width))
    return round(width / height * h), h


class Scorer:
    """Holds the network and, per output size, the content features and style Grams."""

    def __init__(self, content: Image.Image, style: Image.Image, device: str = "cpu") -> None:
        self.content = content.convert("RGB")
        self.style = style.convert("RGB")
        self.device = torch.device(device)
        weights = load_weights("vgg19", STYLE_LAYERS[-1], WeightsConfig())
        self.net = VGGFeatures(weights, "max").to(self.device)
        self.content_taps = self.net.tap_indices(CONTENT_LAYERS)
        self.style_taps = self.net.tap_indices(STYLE_LAYERS)
        self._targets: dict[tuple[int, int], tuple[list[torch.Tensor], list[torch.Tensor]]] = {}

    def _encode(self, image: Image.Image) -> torch.Tensor:
        return self.net.space.encode(to_tensor(image).to(self.device))

    def targets(self, size: tuple[int, int]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Content features and style Grams for outputs of `size` (w, h), computed once."""
        if size not in self._targets:
            content = self._encode(self.content.resize(size, RESAMPLE))
            style_size = pastiche_size(*self.style.size, size[0] * size[1])
            style = self._encode(self.style.resize(style_size, RESAMPLE))
            with torch.no_grad():
                content_feats = self.net(content, self.content_taps)
                grams = [gram(f) for f in self.net(style, self.style_taps)]
            self._targets[size] = (content_feats, grams)
        return self._targets[size]

    def score(self, image: Image.Image) -> Score:
        image = image.convert("RGB")
        content_targets, style_grams = self.targets(image.size)
        x = self._encode(image)
        with torch.no_grad():
            c = sum(
                float(content_loss(f, t))
                for f, t in zip(self.net(x, self.content_taps), content_targets, strict=True)
            )
            s = sum(
                float(style_layer_loss(gram(f), t))
                for f, t in zip(self.net(x, self.style_taps), style_grams, strict=True)
            )
        return Score(c, s, CONTENT_WEIGHT * c + STYLE_WEIGHT * s)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("images", nargs="+", type=Path, help="outputs to score (any size)")
    parser.add_argument("--content", type=Path, required=True)
    parser.add_argument("--style", type=Path, required=True)
    args = parser.parse_args()
    scorer = Scorer(Image.open(args.content), Image.open(args.style))
    for path in args.images:
        s = scorer.score(Image.open(path))
        print(f"{path}: content {s.content:.6g}  style {s.style:.6g}  total {s.total:.6g}")


if __name__ == "__main__":
    main()
