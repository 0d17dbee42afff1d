"""Texture synthesis, style transfer, Gram targets and the style images."""

import pytest
import torch
from torch import nn

import cs_utils
from cs_utils.models import CONTENT_LAYER, STYLE_LAYERS
from cs_utils.style import (
    StyleTargets,
    channel_moments,
    mix_styles,
    moment_loss,
    noise_image,
    normalized_layer_weights,
    style_targets,
    style_transfer,
    synthesize_texture,
)
from cs_utils.style_catalog import STYLE_NAMES, load_style, style_images


def images(seed=0, size=12):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(1, 3, size, size, generator=g), torch.rand(1, 3, size + 4, size + 2, generator=g)


class Bomb(nn.Module):
    """Identity that raises on its ``after``-th call: an error in the middle of an optimisation."""

    def __init__(self, after):
        super().__init__()
        self.after, self.calls = after, 0

    def forward(self, x):
        self.calls += 1
        if self.calls >= self.after:
            raise RuntimeError("boom")
        return x


# ----------------------------------------------------------------------------- Gram targets

def test_style_targets_are_hand_computed_grams(tiny_cnn):
    _, style = images()
    targets = style_targets(tiny_cnn, style, ["conv", "relu"])
    f = tiny_cnn.conv(style)                                    # (1, 4, 16, 14)
    for feats, gram in zip([f, f.relu()], targets.grams):
        flat = feats.reshape(4, -1)
        expected = (flat @ flat.T / (4 * 16 * 14))[None]
        torch.testing.assert_close(gram, expected)
        assert not gram.requires_grad
    assert targets.layers == ("conv", "relu")
    # the channel means and standard deviations of each layer, then of the image's colours
    for (mean, std), x in zip(targets.moments, [f, f.relu(), style]):
        flat = x[0].reshape(x.shape[1], -1)
        torch.testing.assert_close(mean, flat.mean(1)[None])
        torch.testing.assert_close(std, flat.std(1, correction=0)[None], rtol=1e-4, atol=1e-6)
        assert not mean.requires_grad and not std.requires_grad
    with pytest.raises(ValueError, match="one \\(mean, std\\) pair per layer"):
        StyleTargets(("conv",), targets.grams[:1], targets.moments)


def test_mix_styles_is_the_weighted_sum_of_grams(tiny_cnn):
    a, b = images(1)
    ta, tb = style_targets(tiny_cnn, a, ["conv", "relu"]), style_targets(tiny_cnn, b, ["conv", "relu"])
    mixed = mix_styles([ta, tb], [0.25, 0.75])
    for i, name in enumerate(["conv", "relu"]):
        fa = tiny_cnn.conv(a) if name == "conv" else tiny_cnn.conv(a).relu()
        fb = tiny_cnn.conv(b) if name == "conv" else tiny_cnn.conv(b).relu()
        ga = torch.einsum("chw,dhw->cd", fa[0], fa[0]) / fa[0].numel()
        gb = torch.einsum("chw,dhw->cd", fb[0], fb[0]) / fb[0].numel()
        torch.testing.assert_close(mixed.grams[i][0], 0.25 * ga + 0.75 * gb)
    torch.testing.assert_close(mix_styles([ta], [1.0]).grams[1], ta.grams[1])
    # the channel means and standard deviations blend with the same weights (layers, then colours)
    assert len(mixed.moments) == 3
    for i in range(3):
        for k in range(2):
            torch.testing.assert_close(mixed.moments[i][k], 0.25 * ta.moments[i][k] + 0.75 * tb.moments[i][k])
    assert mix_styles([StyleTargets(ta.layers, ta.grams), ta], [0.5, 0.5]).moments is None
    with pytest.raises(ValueError, match="one weight per style"):
        mix_styles([ta, tb], [1.0])
    with pytest.raises(ValueError, match="same layers"):
        mix_styles([ta, style_targets(tiny_cnn, b, ["conv"])], [0.5, 0.5])


# ----------------------------------------------------------------------------- optimisations

@pytest.mark.parametrize("optimizer, lr", [("lbfgs", None), ("adam", 0.05)])
def test_style_transfer_lowers_its_loss_in_a_few_steps(tiny_cnn, optimizer, lr):
    content, style = images(2)
    image, history = style_transfer(tiny_cnn, content, style, style_layers=["conv", "relu"],
                                    content_layer="relu", steps=6, optimizer=optimizer, lr=lr,
                                    progress=False)
    assert history.steps == 6 and len(history.extra["style"]) == 6
    assert history.loss[-1] < 0.9 * history.loss[0]
    assert history.extra["content"][0] == 0.0          # starts from the content image
    assert image.shape == content.shape and not image.requires_grad
    assert 0 <= image.min() and image.max() <= 1


def test_style_transfer_objective_is_the_documented_sum(tiny_cnn):
    # the unweighted first recipe: normalize=False and no moments
    content, style = images(3)
    _, history = style_transfer(tiny_cnn, content, style, style_layers=["conv"], content_layer="relu",
                                style_weight=7.0, content_weight=3.0, tv_weight=0.5, steps=1, pad=0, margin=0,
                                normalize=False, moment_weight=0.0,
                                optimizer="adam", init="noise", generator=torch.Generator().manual_seed(0),
                                progress=False)
    x = (0.5 + 0.1 * torch.randn(1, 3, 12, 12, generator=torch.Generator().manual_seed(0))).clamp(0, 1)
    with torch.no_grad():
        gram = cs_utils.gram_matrix(tiny_cnn.conv(x))
        style_part = (gram - cs_utils.gram_matrix(tiny_cnn.conv(style))).pow(2).mean()
        content_part = (tiny_cnn.conv(x).relu() - tiny_cnn.conv(content).relu()).pow(2).mean()
        expected = 7.0 * style_part + 3.0 * content_part + cs_utils.tv_loss(x, 0.5)
    assert history.loss[0] == pytest.approx(float(expected), rel=1e-5)
    assert history.extra["style"][0] == pytest.approx(float(style_part), rel=1e-5)
    assert history.extra["content"][0] == pytest.approx(float(content_part), rel=1e-5)


def test_style_transfer_default_objective_is_the_documented_sum_of_relative_errors(tiny_cnn):
    content, style = images(3)
    _, history = style_transfer(tiny_cnn, content, style, style_layers=["conv", "relu"], content_layer="relu",
                                style_weight=7.0, content_weight=3.0, tv_weight=0.5, moment_weight=0.25,
                                layer_weights=[1.0, 2.0], steps=1, pad=0, margin=0, optimizer="adam",
                                init="noise", generator=torch.Generator().manual_seed(0), progress=False)
    x = (0.5 + 0.1 * torch.randn(1, 3, 12, 12, generator=torch.Generator().manual_seed(0))).clamp(0, 1)

    def moments(f):                     # channel means and standard deviations, written out
        flat = f[0].reshape(f.shape[1], -1)
        mean = flat.mean(1)
        return mean, ((flat - mean[:, None]) ** 2).mean(1).add(1e-8).sqrt()

    def relative(f, g):
        (mu, s), (m, t) = moments(f), moments(g)
        return (((mu - m) ** 2).mean() + ((s - t) ** 2).mean()) / ((m ** 2).mean() + (t ** 2).mean())

    with torch.no_grad():
        fx, fs, fc = tiny_cnn.conv(x), tiny_cnn.conv(style), tiny_cnn.conv(content)
        gram = cs_utils.gram_matrix
        gram_part = sum(w * (gram(a) - gram(b)).pow(2).mean() / gram(b).pow(2).mean()
                        for w, a, b in [(1.0, fx, fs), (2.0, fx.relu(), fs.relu())])
        moment_part = relative(fx, fs) + relative(fx.relu(), fs.relu()) + relative(x, style)
        content_part = (fx.relu() - fc.relu()).pow(2).sum() / fc.relu().pow(2).sum()
        expected = 7.0 * (gram_part + 0.25 * moment_part) + 3.0 * content_part + cs_utils.tv_loss(x, 0.5)
    assert history.loss[0] == pytest.approx(float(expected), rel=1e-5)
    assert history.extra["style"][0] == pytest.approx(float(gram_part), rel=1e-5)
    assert history.extra["moments"][0] == pytest.approx(float(moment_part), rel=1e-5)
    assert history.extra["content"][0] == pytest.approx(float(content_part), rel=1e-5)
    # without moments the term is neither optimised nor recorded
    _, plain = style_transfer(tiny_cnn, content, style, style_layers=["conv"], content_layer="relu",
                              moment_weight=0, steps=1, progress=False)
    assert "moments" not in plain.extra


def test_the_margin_is_mirrored_content_optimised_with_the_image_and_cropped(tiny_cnn):
    content, style = images(3)
    kwargs = dict(style_layers=["conv"], content_layer="relu", tv_weight=0.0, normalize=False,
                  moment_weight=0.0, progress=False)
    # a step of size 0: the centre of the canvas is the content, exactly
    same, _ = style_transfer(tiny_cnn, content, style, steps=1, optimizer="adam", lr=0.0, margin=4, **kwargs)
    assert torch.equal(same, content)
    # from noise: the canvas is 12 + 2 * 4 px of noise, and the losses cover all of it
    canvas = (0.5 + 0.1 * torch.randn(1, 3, 20, 20, generator=torch.Generator().manual_seed(0))).clamp(0, 1)
    mirrored = torch.nn.ReflectionPad2d(4)(content)
    image, history = style_transfer(tiny_cnn, content, style, steps=1, margin=4, optimizer="adam", lr=0.01,
                                    init="noise", generator=torch.Generator().manual_seed(0), **kwargs)
    with torch.no_grad():
        style_part = (cs_utils.gram_matrix(tiny_cnn.conv(canvas))
                      - cs_utils.gram_matrix(tiny_cnn.conv(style))).pow(2).mean()
        content_part = (tiny_cnn.conv(canvas).relu() - tiny_cnn.conv(mirrored).relu()).pow(2).mean()
    assert history.extra["style"][0] == pytest.approx(float(style_part), rel=1e-5)
    assert history.extra["content"][0] == pytest.approx(float(content_part), rel=1e-5)
    assert image.shape == content.shape
    # one Adam step moves every pixel by about lr: the result is the canvas' centre after it
    assert (image - canvas[..., 4:16, 4:16]).abs().max() <= 0.0101
    with pytest.raises(ValueError, match="margin must be an int >= 0"):
        style_transfer(tiny_cnn, content, style, margin=-1, **kwargs)


def test_channel_moments_by_hand():
    f = torch.tensor([[1.0, 2.0], [3.0, 4.0], [2.0, 2.0], [2.0, 2.0]]).reshape(1, 2, 2, 2)
    mean, std = channel_moments(f)
    torch.testing.assert_close(mean, torch.tensor([[2.5, 2.0]]))
    # population standard deviation sqrt(1.25); a constant channel gets the floor sqrt(1e-8)
    torch.testing.assert_close(std, torch.tensor([[1.118034, 1e-4]]))
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        channel_moments(torch.ones(2, 3))


def test_moment_loss_by_hand():
    f = torch.tensor([[1.0, 2.0], [3.0, 4.0], [2.0, 2.0], [2.0, 2.0]]).reshape(1, 2, 2, 2)
    target = (torch.tensor([[2.0, 1.0]]), torch.tensor([[1.0, 0.5]]))
    # means (2.5, 2) against (2, 1): (0.25 + 1) / 2 = 0.625; standard deviations (1.118034, 1e-4)
    # against (1, 0.5): (0.0139320 + 0.2499000) / 2 = 0.1319160; divided by (4 + 1) / 2 + (1 + 0.25) / 2
    assert moment_loss([f], [target]).item() == pytest.approx((0.625 + 0.131916) / 3.125, rel=1e-5)
    # two layers add; the same statistics give 0
    same = channel_moments(f)
    assert moment_loss([f, f], [target, same]).item() == pytest.approx(0.242213, rel=1e-5)
    f.requires_grad_(True)
    moment_loss([f], [target]).backward()
    assert torch.isfinite(f.grad).all()       # also through the constant channel
    with pytest.raises(ValueError, match="one \\(mean, std\\) target per feature map"):
        moment_loss([f], [])
    with pytest.raises(ValueError, match="channels"):
        moment_loss([f], [(torch.zeros(1, 3), torch.ones(1, 3))])


def test_normalized_layer_weights_by_hand():
    grams = (torch.tensor([[[1.0, 2.0], [2.0, 4.0]]]), torch.tensor([[[3.0]]]))   # mean squares 6.25 and 9
    targets = StyleTargets(("a", "b"), grams)
    assert normalized_layer_weights(targets) == pytest.approx([0.16, 1 / 9])
    assert normalized_layer_weights(targets, [2.0, 3.0]) == pytest.approx([0.32, 1 / 3])
    with pytest.raises(ValueError, match="2 style layers"):
        normalized_layer_weights(targets, [1.0])
    with pytest.raises(ValueError, match="all zeros"):
        normalized_layer_weights(StyleTargets(("a",), (torch.zeros(1, 2, 2),)))
    with pytest.raises(TypeError, match="StyleTargets"):
        normalized_layer_weights(list(grams))


def test_synthesize_texture_lowers_the_gram_loss(tiny_cnn):
    _, texture = images(4)
    # 12 evaluations: after 8 the Gram loss had fallen by 39-51%, depending on float rounding
    kwargs = dict(size=10, steps=12, tv_weight=0.0, pad=0, margin=0, progress=False)
    image, history = synthesize_texture(tiny_cnn, texture, ["conv", "relu"],
                                        generator=torch.Generator().manual_seed(0), **kwargs)
    assert image.shape == (1, 3, 10, 10)
    assert history.extra["style"][-1] < 0.5 * history.extra["style"][0]
    again, _ = synthesize_texture(tiny_cnn, texture, ["conv", "relu"],
                                  generator=torch.Generator().manual_seed(0), **kwargs)
    assert torch.equal(image, again)


def test_synthesize_texture_returns_the_centre_of_a_larger_canvas(tiny_cnn):
    _, texture = images(4)
    kwargs = dict(steps=4, tv_weight=0.0, pad=0, progress=False)
    image, _ = synthesize_texture(tiny_cnn, texture, ["relu"], size=(6, 7), margin=3,
                                  generator=torch.Generator().manual_seed(0), **kwargs)
    canvas = noise_image((1, 3, 12, 13), generator=torch.Generator().manual_seed(0))
    whole, _ = synthesize_texture(tiny_cnn, texture, ["relu"], init=canvas,
                                  generator=torch.Generator().manual_seed(0), **kwargs)
    assert image.shape == (1, 3, 6, 7)
    assert torch.equal(image, whole[..., 3:9, 3:10])
    with pytest.raises(ValueError, match="margin"):
        synthesize_texture(tiny_cnn, texture, ["relu"], margin=-1, **kwargs)


def test_synthesize_texture_from_mixed_targets(tiny_cnn):
    a, b = images(5)
    mixed = mix_styles([style_targets(tiny_cnn, a, ["relu"]), style_targets(tiny_cnn, b, ["relu"])],
                       [0.5, 0.5])
    image, history = synthesize_texture(tiny_cnn, mixed, size=(8, 9), steps=5, progress=False,
                                        generator=torch.Generator().manual_seed(0))
    assert image.shape == (1, 3, 8, 9) and history.loss[-1] < history.loss[0]
    with pytest.raises(ValueError, match="size="):
        synthesize_texture(tiny_cnn, mixed, steps=2, progress=False)


def test_style_transfer_on_the_pretrained_model_lowers_both_losses(lite0):
    content = cs_utils.load_image("chelsea", 64)
    style = load_style("starry_night", 64)
    image, history = style_transfer(lite0, content, style, steps=10, progress=False)
    assert history.loss[-1] < 0.7 * history.loss[0]
    assert history.extra["style"][-1] < 0.7 * history.extra["style"][0]
    assert (image - content).abs().mean() > 0.01
    # without margin, total variation and moments the image is the optimised tensor itself, in the
    # folded network's channels-last layout: L-BFGS used to fail to flatten its gradient
    bare, history = style_transfer(lite0, content, style, steps=3, margin=0, tv_weight=0.0, moment_weight=0.0,
                                   progress=False)
    assert history.steps == 3 and bare.shape == content.shape and bare.is_contiguous()


# ----------------------------------------------------------------------------- contract

def test_nothing_of_the_callers_changes(tiny_cnn, caller_state):
    content, style = images(6)
    tiny_cnn.train()
    state = caller_state(tiny_cnn, content, style)
    style_transfer(tiny_cnn, content, style, style_layers=["conv"], content_layer="relu", steps=3,
                   progress=False)
    synthesize_texture(tiny_cnn, style, ["conv", "relu"], steps=3, progress=False)
    state.assert_unchanged()
    assert all(p.grad is None for p in tiny_cnn.parameters())


def test_nothing_changes_after_an_exception_mid_optimisation(caller_state):
    torch.manual_seed(0)
    model = nn.Sequential()
    model.add_module("conv", nn.Conv2d(3, 4, 3, padding=1))
    model.add_module("bomb", Bomb(after=4))
    model.add_module("relu", nn.ReLU())
    model.train()
    content, style = images(7)
    state = caller_state(model, content, style)
    with pytest.raises(RuntimeError, match="boom"):
        style_transfer(model, content, style, style_layers=["conv", "relu"], content_layer="relu",
                       steps=10, progress=False)
    assert model.bomb.calls == 4        # it failed inside the optimisation, not before
    state.assert_unchanged()


def test_bad_layer_names_are_explained(tiny_cnn, caller_state):
    content, style = images(8)
    state = caller_state(tiny_cnn, content, style)
    with pytest.raises(KeyError, match="Closest valid names: 'relu'"):
        style_transfer(tiny_cnn, content, style, style_layers=["conv", "rleu"], content_layer="relu")
    with pytest.raises(KeyError, match="has no layer 'blocks.10'"):
        style_transfer(tiny_cnn, content, style, style_layers=["conv"])   # default content layer
    with pytest.raises(KeyError, match="Closest valid names"):
        synthesize_texture(tiny_cnn, style, ["cnov"])
    with pytest.raises(ValueError, match="non-empty list of layer names"):
        style_targets(tiny_cnn, style, [])
    with pytest.raises(ValueError, match="twice"):
        style_targets(tiny_cnn, style, ["conv", "conv"])
    state.assert_unchanged()


def test_bad_arguments_are_explained(tiny_cnn):
    content, style = images(9)
    kwargs = dict(style_layers=["conv"], content_layer="relu", progress=False, steps=2)
    with pytest.raises(ValueError, match="'content', 'noise'"):
        style_transfer(tiny_cnn, content, style, init="zeros", **kwargs)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        style_transfer(tiny_cnn, content * 255, style, **kwargs)
    with pytest.raises(ValueError, match="one image"):
        style_transfer(tiny_cnn, content, style.expand(2, -1, -1, -1), **kwargs)
    targets = style_targets(tiny_cnn, style, ["conv"])
    with pytest.raises(ValueError, match="computed at"):
        style_transfer(tiny_cnn, content, targets, style_layers=["relu"], content_layer="relu")
    for name in ("style_weight", "content_weight", "tv_weight", "moment_weight"):
        with pytest.raises(ValueError, match=f"{name} must be a number >= 0"):
            style_transfer(tiny_cnn, content, style, **{name: -1.0}, **kwargs)
    with pytest.raises(TypeError, match="normalize must be True or False"):
        style_transfer(tiny_cnn, content, style, normalize="yes", **kwargs)
    by_hand = StyleTargets(("conv",), targets.grams)           # no moments
    with pytest.raises(ValueError, match="no channel moments"):
        style_transfer(tiny_cnn, content, by_hand, **kwargs)
    style_transfer(tiny_cnn, content, by_hand, moment_weight=0, **kwargs)   # fine without them


def test_precomputed_targets_give_the_same_result(tiny_cnn):
    content, style = images(10)
    kwargs = dict(style_layers=["conv", "relu"], content_layer="relu", steps=4, progress=False)
    a, _ = style_transfer(tiny_cnn, content, style, **kwargs)
    b, _ = style_transfer(tiny_cnn, content, style_targets(tiny_cnn, style, ["conv", "relu"]), **kwargs)
    assert torch.equal(a, b)


# ----------------------------------------------------------------------------- style images

def test_style_images():
    assert STYLE_NAMES == ("starry_night", "hubble_deep_field", "immunohistochemistry", "retina")
    full = load_style("starry_night")
    assert full.shape == (1, 3, 600 - 40, 752 - 40)           # the frame is cropped away
    raw = cs_utils.load_image("starry_night")
    assert torch.equal(full, raw[..., 20:-20, 20:-20])
    styles = style_images(64)
    assert list(styles) == list(STYLE_NAMES)
    for image in styles.values():
        assert min(image.shape[-2:]) == 64 and 0 <= image.min() and image.max() <= 1
    assert styles["starry_night"].shape == (1, 3, 64, 81)     # aspect ratio kept
    assert style_images(32, square=True)["hubble_deep_field"].shape == (1, 3, 32, 32)
    assert load_style("retina", (20, 30)).shape == (1, 3, 20, 30)
    # The retina crop keeps only the fundus, not the black disc around it.
    assert load_style("retina").mean(1).min() > 0.1
    load_style("retina").zero_()                               # a copy: the cache is untouched
    assert load_style("retina").mean() > 0.1
    with pytest.raises(KeyError, match="Did you mean 'starry_night'"):
        load_style("stary_night")


def test_defaults_name_real_layers(lite0):
    for name in STYLE_LAYERS + (CONTENT_LAYER,):
        cs_utils.hooks.get_layer(lite0, name)
    assert isinstance(style_targets(lite0, load_style("retina", 32), STYLE_LAYERS), StyleTargets)


def test_style_distance_is_the_style_loss_of_the_image(tiny_cnn, caller_state):
    image, style = images(11)
    targets = style_targets(tiny_cnn, style, ["conv", "relu"])
    state = caller_state(tiny_cnn, image)
    distance = cs_utils.style_distance(tiny_cnn, image, targets)
    state.assert_unchanged()
    with torch.no_grad():
        f = tiny_cnn.conv(image)
        expected = sum((cs_utils.gram_matrix(a) - g).pow(2).mean()
                       for a, g in zip([f, f.relu()], targets.grams))
    assert distance == pytest.approx(float(expected), rel=1e-6)
    assert cs_utils.style_distance(tiny_cnn, style, targets) == pytest.approx(0.0, abs=1e-12)


def test_padding_mirrors_the_borders_before_the_network(tiny_cnn):
    content, style = images(12)
    _, history = style_transfer(tiny_cnn, content, style, style_layers=["conv"], content_layer="relu",
                                tv_weight=0.0, steps=1, pad=3, margin=0, optimizer="adam", init="noise",
                                normalize=False, moment_weight=0.0,   # the plain errors, written out below
                                generator=torch.Generator().manual_seed(0), progress=False)
    x = (0.5 + 0.1 * torch.randn(1, 3, 12, 12, generator=torch.Generator().manual_seed(0))).clamp(0, 1)
    mirror = torch.nn.ReflectionPad2d(3)
    with torch.no_grad():
        style_part = (cs_utils.gram_matrix(tiny_cnn.conv(mirror(x)))
                      - cs_utils.gram_matrix(tiny_cnn.conv(style))).pow(2).mean()
        content_part = (tiny_cnn.conv(mirror(x)).relu() - tiny_cnn.conv(mirror(content)).relu()).pow(2).mean()
    assert history.extra["style"][0] == pytest.approx(float(style_part), rel=1e-5)
    assert history.extra["content"][0] == pytest.approx(float(content_part), rel=1e-5)
    with pytest.raises(ValueError, match="pad must be an int >= 0"):
        style_transfer(tiny_cnn, content, style, style_layers=["conv"], content_layer="relu", pad=-1)


def test_style_distance_without_mirror_is_the_plain_gram_loss(lite0):
    """mirror=False measures what train_fast_style's loss sees: the plain forward pass."""
    from cs_utils.hooks import extract_features
    from cs_utils.losses import gram_matrix, style_loss

    gen = torch.Generator().manual_seed(0)
    image, style = torch.rand(1, 3, 40, 40, generator=gen), torch.rand(1, 3, 48, 48, generator=gen)
    layers = ["stem", "blocks.2"]
    with torch.no_grad():
        feats, grams = extract_features(lite0, image, layers), extract_features(lite0, style, layers)
        expected = style_loss([feats[name] for name in layers], [gram_matrix(grams[name]) for name in layers])
    targets = cs_utils.style_targets(lite0, style, layers, mirror=False)
    plain = cs_utils.style_distance(lite0, image, targets, mirror=False)
    assert plain == pytest.approx(expected.item(), rel=1e-6)
    mirrored_targets = cs_utils.style_targets(lite0, style, layers)
    mirrored = cs_utils.style_distance(lite0, image, mirrored_targets, mirror=True)
    assert mirrored != pytest.approx(expected.item(), rel=1e-3)   # 40 px is padded to 49 for SAME padding
