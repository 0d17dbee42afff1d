"""The perceptual loss of fast-style training: Johnson et al.'s absolute errors and the relative ones."""

import pytest
import torch
from torch import nn

from cs_utils.hooks import extract_features
from cs_utils.losses import gram_matrix
from cs_utils.perceptual import perceptual_terms, style_gram_targets, style_moment_targets
from cs_utils.style import channel_moments

LAYERS = ["stem", "blocks.0"]


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    model = nn.Sequential()
    model.add_module("stem", nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU()))
    block = nn.Sequential(nn.Conv2d(4, 5, 3, stride=2, padding=1), nn.ReLU())
    model.add_module("blocks", nn.Sequential(block))
    for p in model.parameters():
        p.requires_grad_(False)
    return model.eval()


def _images(seed, n=2, size=12):
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def _terms(net, x, y, targets, index, **kw):
    settings = dict(style_layers=LAYERS, content_layer="blocks.0", style_weight=1.0, content_weight=1.0,
                    tv_weight=0.0, normalize=True)
    settings.update(kw)
    return perceptual_terms(net, x, y, targets, index, **settings)


def test_relative_terms_vanish_on_their_own_targets(net):
    x = _images(1)
    styles = {"a": x[:1], "b": x[1:]}
    targets = style_gram_targets(net, styles, LAYERS, 12, "cpu")
    moments = style_moment_targets(net, styles, LAYERS, 12, "cpu")
    content, style, tv = _terms(net, x, x.clone(), targets, torch.tensor([0, 1]), moments=moments,
                                moment_weight=1.0)
    assert content.item() == pytest.approx(0, abs=1e-7) and style.item() == pytest.approx(0, abs=1e-6)
    assert tv.item() == 0
    # the stacked targets are each style's own statistics, in order
    feats = extract_features(net, x[1:], LAYERS)
    assert torch.allclose(targets[1][1], gram_matrix(feats["blocks.0"])[0], atol=1e-6)
    mean, std = channel_moments(x[1:])
    assert torch.allclose(moments[-1][0][1], mean[0]) and torch.allclose(moments[-1][1][1], std[0])
    assert len(moments) == len(LAYERS) + 1 and moments[0][0].shape == (2, 4)


def test_relative_style_error_by_hand(net):
    # targets twice an image's own Gram matrices: at every layer mean((G - 2G)^2) / mean((2G)^2) = 1/4
    y = _images(2, n=1)
    grams = [2 * t for t in style_gram_targets(net, {"y": y}, LAYERS, 12, "cpu")]
    _, style, _ = _terms(net, y, y, grams, torch.tensor([0]), style_weight=3.0)
    assert style.item() == pytest.approx(3.0 * 2 * 0.25, rel=1e-5)
    # Johnson et al.'s absolute error is 4x larger for targets 2x larger; the relative one is not
    absolute = _terms(net, y, y, grams, torch.tensor([0]), normalize=False)[1]
    absolute4 = _terms(net, y, y, [2 * g for g in grams], torch.tensor([0]), normalize=False)[1]
    relative4 = _terms(net, y, y, [2 * g for g in grams], torch.tensor([0]))[1]
    grams_by_hand = [gram_matrix(f) for f in extract_features(net, y, LAYERS).values()]
    expected = sum(((g - 2 * t) ** 2).mean() for g, t in zip(grams_by_hand, grams))
    assert absolute4.item() == pytest.approx(expected.item(), rel=1e-5)
    assert absolute.item() == pytest.approx(sum((g ** 2).mean().item() for g in grams_by_hand), rel=1e-5)
    # targets 4G: mean((G - 4G)^2) / mean((4G)^2) = 9/16 at each layer
    assert relative4.item() == pytest.approx(2 * 9 / 16, rel=1e-5)


def test_relative_content_error_is_a_mean_of_per_image_ratios(net):
    x, y = _images(3), _images(4)
    targets = style_gram_targets(net, {"s": x[:1]}, LAYERS, 12, "cpu")
    content, _, _ = _terms(net, x, y, targets, torch.tensor([0, 0]), content_weight=2.0)
    fx = extract_features(net, x, ["blocks.0"])["blocks.0"]
    fy = extract_features(net, y, ["blocks.0"])["blocks.0"]
    ratios = [((fy[i] - fx[i]) ** 2).sum() / (fx[i] ** 2).sum() for i in range(2)]
    assert content.item() == pytest.approx(2.0 * float(sum(ratios)) / 2, rel=1e-5)
    # half the batch gives the ratio of that half: processes averaging their gradients agree
    half, _, _ = _terms(net, x[:1], y[:1], targets, torch.tensor([0]), content_weight=2.0)
    assert half.item() == pytest.approx(2.0 * ratios[0].item(), rel=1e-5)


def test_moment_term_brings_a_dark_style(net):
    # a black style: the colour moment term of a mid-grey output is (0.5^2 + 0) / (0 + 0) floored,
    # and the output's gradient points to darker pixels
    x = _images(5, n=1)
    styles = {"night": torch.full((1, 3, 12, 12), 0.05)}
    targets = style_gram_targets(net, styles, LAYERS, 12, "cpu")
    moments = style_moment_targets(net, styles, LAYERS, 12, "cpu")
    y = torch.full((1, 3, 12, 12), 0.5, requires_grad=True)
    _, with_moments, _ = _terms(net, x, y, targets, torch.tensor([0]), moments=moments, moment_weight=1.0)
    _, without, _ = _terms(net, x, y, targets, torch.tensor([0]))
    # colours: ((0.5 - 0.05)^2 + (0 - 0)^2) / (0.05^2 + 0^2), floored std 1e-4 is negligible
    colour = (0.45 ** 2) / (0.05 ** 2)
    assert (with_moments - without).item() > colour * 0.99
    (grad,) = torch.autograd.grad(with_moments, [y])
    assert (grad > 0).all()  # lowering every pixel lowers the loss


def test_bad_settings(net):
    x = _images(6)
    targets = style_gram_targets(net, {"s": x[:1]}, LAYERS, 12, "cpu")
    with pytest.raises(ValueError, match="normalize=True"):
        _terms(net, x, x, targets, torch.tensor([0, 0]), normalize=False, moment_weight=1.0)
    with pytest.raises(ValueError, match="style_moment_targets"):
        _terms(net, x, x, targets, torch.tensor([0, 0]), moment_weight=1.0)
