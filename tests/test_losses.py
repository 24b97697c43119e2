"""The loss maths against direct, loop-level computations."""

import pytest
import torch

from service.losses import (
    LossWeights,
    Objective,
    StyleTarget,
    content_loss,
    gram,
    normalise_weights,
    style_layer_loss,
    tv_loss,
)


def _direct_gram(f: torch.Tensor) -> torch.Tensor:
    _, c, h, w = f.shape
    out = torch.zeros(c, c, dtype=torch.float64)
    for i in range(c):
        for j in range(c):
            out[i, j] = sum(
                float(f[0, i, y, x]) * float(f[0, j, y, x]) for y in range(h) for x in range(w)
            )
    return out / (c * h * w)


def test_gram_matches_the_double_sum() -> None:
    f = torch.randn(1, 4, 3, 5, generator=torch.Generator().manual_seed(1))
    assert torch.allclose(gram(f)[0].double(), _direct_gram(f), atol=1e-5)


def test_gram_is_independent_of_image_size() -> None:
    """Tiling an image repeats its statistics; a normalised Gram must not change."""
    f = torch.rand(1, 8, 6, 7, generator=torch.Generator().manual_seed(2))
    tiled = f.repeat(1, 1, 3, 2)
    assert torch.allclose(gram(f), gram(tiled), atol=1e-6)


def test_gram_of_bf16_features_is_fp32_and_near_the_full_precision_one() -> None:
    """Taken in bf16 with fp32 accumulation, where the features were copied to fp32 first:
    within bf16's rounding of the fp32 product, its gradient too, in the features' dtype."""
    torch.manual_seed(0)
    values = torch.rand(1, 64, 48, 48).to(torch.bfloat16)  # after a ReLU: not negative
    half = values.clone().requires_grad_()
    full = values.float().requires_grad_()
    upstream = torch.randn(1, 64, 64)
    product = gram(half)
    assert product.dtype == torch.float32
    torch.testing.assert_close(product, gram(full), rtol=1e-2, atol=0)
    (product * upstream).sum().backward()
    (gram(full) * upstream).sum().backward()
    assert half.grad is not None and full.grad is not None and half.grad.dtype == torch.bfloat16
    torch.testing.assert_close(half.grad.float(), full.grad, rtol=2e-2, atol=1e-6)


def test_content_style_and_tv_losses_match_direct_sums() -> None:
    g = torch.Generator().manual_seed(3)
    a, b = torch.randn(1, 3, 4, 5, generator=g), torch.randn(1, 3, 4, 5, generator=g)
    n = a.numel()
    direct = sum(float(x - y) ** 2 for x, y in zip(a.flatten(), b.flatten(), strict=True)) / n
    assert abs(float(content_loss(a, b)) - direct) < 1e-5
    ga, gb = gram(a), gram(b)
    direct_style = float(((ga - gb) ** 2).sum()) / 9
    assert abs(float(style_layer_loss(ga, gb)) - direct_style) < 1e-7

    img = torch.randn(1, 3, 4, 5, generator=g)
    dx = sum(
        float(img[0, c, y, x + 1] - img[0, c, y, x]) ** 2
        for c in range(3)
        for y in range(4)
        for x in range(4)
    ) / (3 * 4 * 4)
    dy = sum(
        float(img[0, c, y + 1, x] - img[0, c, y, x]) ** 2
        for c in range(3)
        for y in range(3)
        for x in range(5)
    ) / (3 * 3 * 5)
    assert abs(float(tv_loss(img)) - (dx + dy)) < 1e-5
    # TV in grey levels: the same image in 0-1 units with pixel_scale 1/255 scores the same.
    assert torch.allclose(tv_loss(img / 255, pixel_scale=1 / 255), tv_loss(img), rtol=1e-5)


def test_blended_target_gives_the_weighted_sum_of_losses_and_the_same_gradient() -> None:
    g = torch.Generator().manual_seed(4)
    styles = [[gram(torch.randn(1, 5, 6, 6, generator=g))] for _ in range(3)]
    weights = [2.0, 1.0, 1.0]
    feats = torch.randn(1, 5, 6, 6, generator=g, requires_grad=True)
    image = torch.zeros(1, 3, 2, 2)
    blended = Objective([], StyleTarget.blend(styles, weights), LossWeights(0, 1, 0, (1.0,)), 1.0)
    total, parts = blended(image, [], [feats])
    (grad_blend,) = torch.autograd.grad(total, feats)

    ws = normalise_weights(weights)
    separate = sum(w * style_layer_loss(gram(feats), s[0]) for w, s in zip(ws, styles, strict=True))
    assert isinstance(separate, torch.Tensor)
    (grad_sep,) = torch.autograd.grad(separate, feats)
    assert torch.allclose(total, separate, rtol=1e-5)
    assert torch.allclose(parts[:, 1], separate.detach(), rtol=1e-5)
    assert torch.allclose(grad_blend, grad_sep, rtol=1e-4, atol=1e-9)


def test_objective_weights_the_parts() -> None:
    g = torch.Generator().manual_seed(5)
    content_feats = torch.randn(1, 4, 3, 3, generator=g)
    content_target = torch.randn(1, 4, 3, 3, generator=g)
    style_feats = torch.randn(1, 4, 3, 3, generator=g)
    style_target = StyleTarget.blend([[gram(torch.randn(1, 4, 3, 3, generator=g))]], [1.0])
    image = torch.randn(1, 3, 5, 5, generator=g)
    objective = Objective([content_target], style_target, LossWeights(2.0, 3.0, 0.5, (4.0,)), 1.0)
    total, parts = objective(image, [content_feats], [style_feats])
    c = content_loss(content_feats, content_target)
    s = 4.0 * style_layer_loss(gram(style_feats), style_target.grams[0])
    t = tv_loss(image)
    assert torch.allclose(parts, torch.stack([c, s, t], dim=1), rtol=1e-5)
    assert torch.allclose(total, 2 * c + 3 * s + 0.5 * t, rtol=1e-5)


def test_gram_reads_channels_last_features_the_same() -> None:
    f = torch.randn(2, 8, 5, 6, generator=torch.Generator().manual_seed(6))
    assert torch.allclose(gram(f), gram(f.contiguous(memory_format=torch.channels_last)), atol=1e-6)


def test_a_batch_scores_each_item_as_if_it_were_alone() -> None:
    """Items share the passes, never the loss: item i's loss and gradient ignore the others."""
    g = torch.Generator().manual_seed(7)
    images = torch.randn(3, 3, 6, 6, generator=g)
    content_feats = torch.randn(3, 4, 3, 3, generator=g, requires_grad=True)
    content_targets = torch.randn(3, 4, 3, 3, generator=g)
    style_feats = torch.randn(3, 4, 3, 3, generator=g, requires_grad=True)
    per_item = [StyleTarget.blend([[gram(torch.randn(1, 4, 3, 3, generator=g))]], [1.0])]
    per_item += [StyleTarget.blend([[gram(torch.randn(1, 4, 3, 3, generator=g))]], [1.0])] * 2
    weights = LossWeights(2.0, 3.0, 0.5, (1.0,))
    batch = Objective([content_targets], StyleTarget.per_item(per_item), weights, 1.0)
    total, parts = batch(images, [content_feats], [style_feats])
    assert total.shape == (3,) and parts.shape == (3, 3)
    grads = torch.autograd.grad(total.sum(), [content_feats, style_feats])
    for i in range(3):
        feats = (content_feats[i : i + 1].detach(), style_feats[i : i + 1].detach())
        feats[0].requires_grad_(True)
        feats[1].requires_grad_(True)
        alone = Objective([content_targets[i : i + 1]], per_item[i], weights, 1.0)
        one_total, one_parts = alone(images[i : i + 1], [feats[0]], [feats[1]])
        assert torch.allclose(one_total, total[i : i + 1], rtol=1e-5)
        assert torch.allclose(one_parts, parts[i : i + 1], rtol=1e-5)
        one_grads = torch.autograd.grad(one_total.sum(), list(feats))
        assert torch.allclose(one_grads[0], grads[0][i : i + 1], rtol=1e-5, atol=1e-8)
        assert torch.allclose(one_grads[1], grads[1][i : i + 1], rtol=1e-5, atol=1e-8)


def test_the_floor_is_the_weighted_blend_constant() -> None:
    """What no image can remove: zero for one style, the weighted spread for a blend."""
    g = torch.Generator().manual_seed(1)
    a, b = (torch.rand(1, 4, 4, generator=g) for _ in range(2))
    weights = LossWeights(content=1.0, style=7.0, tv=0.0, style_layers=(2.0,))
    alone = Objective([], StyleTarget.blend([[a]], [1.0]), weights, 1.0)
    assert alone.floor(3) == [0.0, 0.0, 0.0]
    blended = StyleTarget.blend([[a], [b]], [0.25, 0.75])
    objective = Objective([], blended, weights, 1.0)
    (floor,) = objective.floor(1)
    assert floor > 0
    mean = 0.25 * a + 0.75 * b
    expected = (
        7.0
        * 2.0
        * (0.25 * float(((a - mean) ** 2).mean()) + 0.75 * float(((b - mean) ** 2).mean()))
    )
    assert floor == pytest.approx(expected)


@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_gram_gradient_is_autograds_of_the_plain_product(layout: torch.memory_format) -> None:
    """The Gram's own backward (one matmul) gives what autograd gives through the two uses of
    the features in the plain product."""
    torch.manual_seed(0)
    features = torch.randn(2, 8, 6, 5).contiguous(memory_format=layout).requires_grad_()
    upstream = torch.randn(2, 8, 8)  # not symmetric: both halves of the backward matter
    (gram(features) * upstream).sum().backward()
    ours, features.grad = features.grad, None
    flat = features.reshape(2, 8, 30)
    (torch.bmm(flat, flat.transpose(1, 2)) / (8 * 30) * upstream).sum().backward()
    assert ours is not None and features.grad is not None
    torch.testing.assert_close(ours, features.grad, rtol=1e-5, atol=1e-7)
