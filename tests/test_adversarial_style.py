import math

import pytest
import torch

from cs_utils import adversarial_style as adv


def test_style_aware_content_loss_by_hand():
    a = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]])
    b = torch.tensor([[[[1.0, 0.0], [3.0, 7.0]]]])
    # squared differences 0, 4, 0, 9 -> mean 13/4
    assert adv.style_aware_content_loss(a, b).item() == pytest.approx(3.25)
    assert adv.style_aware_content_loss(a, a).item() == 0.0
    with pytest.raises(ValueError, match="same shape"):
        adv.style_aware_content_loss(a, b[..., :1])


def test_style_aware_content_loss_in_the_stylizers_encoder_space():
    torch.manual_seed(0)
    stylizer = adv.Stylizer(channels=(4, 4, 8))
    x = torch.rand(1, 3, 16, 16)
    code = stylizer.encode(x)
    loss = adv.style_aware_content_loss(code, stylizer.encode(stylizer.decode(code)))
    assert code.shape == (1, 8, 4, 4) and loss.item() > 0
    loss.backward()                               # gradients reach the encoder and the decoder
    assert stylizer.encoder[0][1].weight.grad.abs().sum() > 0
    assert stylizer.out[1].weight.grad.abs().sum() > 0


def test_transformed_image_loss_sees_layout_not_texture():
    flat = torch.full((1, 1, 4, 4), 0.5)
    checker = torch.tensor([[0.0, 1.0], [1.0, 0.0]]).repeat(2, 2)[None, None]
    # a 2x2 average pooling turns the checkerboard into its mean 0.5: no difference
    assert adv.transformed_image_loss(flat, checker, kernel=2).item() == pytest.approx(0.0)
    # without pooling the difference is 0.5 everywhere: mean square 0.25
    assert adv.transformed_image_loss(flat, checker, kernel=1).item() == pytest.approx(0.25)
    brighter = flat + 0.2                         # a change of layout survives the pooling
    assert adv.transformed_image_loss(flat, brighter, kernel=2).item() == pytest.approx(0.04)
    with pytest.raises(ValueError, match="at least 10 pixels"):
        adv.transformed_image_loss(flat, checker)
    with pytest.raises(ValueError, match="same shape"):
        adv.transformed_image_loss(flat, checker[..., :3])


def test_discriminator_loss_and_accuracy_by_hand():
    real = torch.tensor([2.0, -1.0])
    fake = torch.tensor([-3.0, 0.5, 0.0])
    expected = (-(math.log(torch.sigmoid(torch.tensor(2.0)).item())
                  + math.log(torch.sigmoid(torch.tensor(-1.0)).item())) / 2
                - (math.log(1 - torch.sigmoid(torch.tensor(-3.0)).item())
                   + math.log(1 - torch.sigmoid(torch.tensor(0.5)).item()) + math.log(0.5)) / 3)
    assert adv.discriminator_loss(real, fake).item() == pytest.approx(expected, rel=1e-6)
    # right: real 2.0, fake -3.0 and 0.0 (<= 0) -> 3 of 5
    assert adv.discriminator_accuracy(real, fake) == pytest.approx(0.6)
    assert adv.generator_adversarial_loss(torch.zeros(4)).item() == pytest.approx(math.log(2))
    assert adv.generator_adversarial_loss(torch.full((4,), 10.0)).item() < 1e-4


def test_networks_shapes_and_errors():
    stylizer, disc = adv.Stylizer(channels=(4, 4, 8)), adv.PatchDiscriminator(width=4)
    x = torch.rand(2, 3, 32, 48)
    assert stylizer(x).shape == x.shape
    assert disc(x).shape == (2, 1, 2, 3)
    with pytest.raises(ValueError, match="multiples of 4"):
        stylizer(torch.rand(1, 3, 30, 32))


def test_training_is_seeded_and_recorded(tmp_path):
    style = torch.rand(1, 3, 40, 40, generator=torch.Generator().manual_seed(0))
    photos = [torch.rand(1, 3, 40, 48, generator=torch.Generator().manual_seed(1))]
    copies = (style.clone(), photos[0].clone())
    kwargs = dict(steps=2, batch_size=1, crop_size=32, pool=4, progress=False)
    g1, d1, history = adv.train_adversarial_stylizer(style, photos, **kwargs)
    g2, _, _ = adv.train_adversarial_stylizer(style, photos, **kwargs)
    assert torch.equal(style, copies[0]) and torch.equal(photos[0], copies[1])
    assert history.steps == 2 and len(history.accuracy) == 2 and len(history.disc) == 2
    assert all(0.0 <= a <= 1.0 for a in history.accuracy)
    terms = history.adversarial[0] + history.content[0] + history.transformed[0]
    assert history.loss[0] == pytest.approx(terms)
    for a, b in zip(g1.parameters(), g2.parameters()):
        assert torch.equal(a, b)
    assert not g1.training and not d1.training
    path = adv.save_stylizer(g1, tmp_path / "s.pt", info={"steps": 2})
    loaded = adv.load_stylizer(path)
    x = torch.rand(1, 3, 32, 32)
    assert (loaded(x) - g1(x)).abs().max() < 5e-3 and loaded.info == {"steps": 2}
    with pytest.raises(ValueError, match="multiple of 16"):
        adv.train_adversarial_stylizer(style, photos, **dict(kwargs, crop_size=30))


def test_multi_scale_discriminator_shapes_and_losses():
    disc = adv.MultiScaleDiscriminator(width=4, scales=2)
    x = torch.rand(2, 3, 64, 96)
    logits = disc(x)
    assert [tuple(t.shape) for t in logits] == [(2, 1, 4, 6), (2, 1, 2, 3)]
    # the second scale judges the image average-pooled by 2
    torch.testing.assert_close(logits[1], disc.nets[1](torch.nn.functional.avg_pool2d(x, 2)))
    # lists of logits: the mean of the scales' losses and accuracies
    real, fake = [torch.full((4,), 2.0), torch.zeros(2)], [torch.full((4,), -2.0), torch.ones(2)]
    expected = (adv.discriminator_loss(real[0], fake[0]) + adv.discriminator_loss(real[1], fake[1])) / 2
    assert adv.discriminator_loss(real, fake).item() == pytest.approx(expected.item())
    assert adv.generator_adversarial_loss(fake).item() == pytest.approx(
        (adv.generator_adversarial_loss(fake[0]) + adv.generator_adversarial_loss(fake[1])).item() / 2)
    assert adv.discriminator_accuracy(real, fake) == pytest.approx((1.0 + 0.0) / 2)
    with pytest.raises(ValueError, match="scales"):
        adv.MultiScaleDiscriminator(scales=0)


def test_antialiased_discriminator_blurs_before_each_stride():
    disc = adv.PatchDiscriminator(width=4, antialias=True)
    assert disc(torch.rand(1, 3, 32, 48)).shape == (1, 1, 2, 3)
    blur = disc.net[0]
    # a checkerboard at the Nyquist frequency blurs to its mean away from the edges
    checker = (torch.arange(8)[:, None] + torch.arange(8)[None, :]) % 2
    out = blur(checker.float().expand(1, 3, 8, 8))
    torch.testing.assert_close(out[..., 1:-1, 1:-1], torch.full((1, 3, 6, 6), 0.5))
    # the input blur alone, and blur-pooling (stride-1 convolutions, then the blur with stride 2)
    only_input = adv.PatchDiscriminator(width=4, antialias="input")
    assert sum(isinstance(m, type(blur)) for m in only_input.net) == 1
    pooled = adv.PatchDiscriminator(width=4, antialias="blurpool")
    assert pooled(torch.rand(1, 3, 32, 48)).shape == (1, 1, 2, 3)
    assert all(m.stride == (1, 1) for m in pooled.net if isinstance(m, torch.nn.Conv2d))
    with pytest.raises(ValueError, match="antialias"):
        adv.PatchDiscriminator(antialias="median")


def test_style_crops_at_the_scale_of_style_side():
    gen = torch.Generator().manual_seed(0)
    style = torch.rand(1, 3, 200, 300, generator=gen)
    # the painting resized to a shorter side of 32: every 32-px crop is a window of it, unscaled
    small = adv.resize_short_side(style, 32)
    crops = adv.style_crops(style, 3, 32, gen, style_side=32)
    assert crops.shape == (3, 3, 32, 32)
    windows = [small[0, :, :, i:i + 32] for i in range(small.shape[-1] - 31)]
    for crop in crops:
        assert any(torch.allclose(crop, w) or torch.allclose(crop, w.flip(-1)) for w in windows)
    with pytest.raises(ValueError, match="style_side"):
        adv.style_crops(style, 1, 32, gen, style_side=16)
    # style_scale 1: windows of the painting at its own scale, whatever its size
    small = style[..., :40, :48]
    crops = adv.style_crops(small, 3, 32, gen, style_scale=1)
    assert crops.shape == (3, 3, 32, 32)
    windows = small[0].unfold(1, 32, 1).unfold(2, 32, 1).permute(1, 2, 0, 3, 4).flatten(0, 1)
    for crop in crops:
        assert any(torch.allclose(crop, w) or torch.allclose(crop, w.flip(-1)) for w in windows)
    with pytest.raises(ValueError, match="style_scale"):
        adv.style_crops(style, 1, 32, gen, style_scale=0.5)


def test_training_with_a_multi_scale_discriminator_and_style_side():
    style = torch.rand(1, 3, 64, 80, generator=torch.Generator().manual_seed(0))
    photos = [torch.rand(1, 3, 64, 72, generator=torch.Generator().manual_seed(1))]
    kwargs = dict(steps=1, batch_size=1, crop_size=64, pool=4, style_side=64, progress=False)
    _, disc, history = adv.train_adversarial_stylizer(style, photos, disc_scales=2, disc_antialias=True,
                                                      **kwargs)
    assert isinstance(disc, adv.MultiScaleDiscriminator) and len(disc.nets) == 2
    assert all(net.antialias for net in disc.nets) and history.steps == 1
    _, disc, _ = adv.train_adversarial_stylizer(style, photos, **kwargs)
    assert isinstance(disc, adv.PatchDiscriminator) and not disc.antialias
    with pytest.raises(ValueError, match="multiple of 32"):
        adv.train_adversarial_stylizer(style, photos, disc_scales=2,
                                       **dict(kwargs, crop_size=48, style_side=None))


def test_update_average_by_hand():
    average, net = torch.nn.Linear(1, 1), torch.nn.Linear(1, 1)
    with torch.no_grad():
        average.weight.fill_(1.0), average.bias.fill_(-2.0)
        net.weight.fill_(3.0), net.bias.fill_(2.0)
    adv.update_average(average, net, 0.75)            # 0.75 * 1 + 0.25 * 3 and 0.75 * -2 + 0.25 * 2
    assert average.weight.item() == pytest.approx(1.5) and average.bias.item() == pytest.approx(-1.0)
    adv.update_average(average, net, 0.75)            # 0.75 * 1.5 + 0.25 * 3 and 0.75 * -1 + 0.25 * 2
    assert average.weight.item() == pytest.approx(1.875) and average.bias.item() == pytest.approx(-0.25)
    adv.update_average(average, net, 0.0)             # decay 0: a copy
    assert average.weight.item() == 3.0 and average.bias.item() == 2.0
    assert net.weight.item() == 3.0                   # the net itself is untouched
    with pytest.raises(ValueError, match="decay"):
        adv.update_average(average, net, 1.5)


def test_training_with_a_weight_average():
    style = torch.rand(1, 3, 40, 40, generator=torch.Generator().manual_seed(0))
    photos = [torch.rand(1, 3, 40, 48, generator=torch.Generator().manual_seed(1))]
    kwargs = dict(steps=3, batch_size=1, crop_size=32, pool=4, progress=False)
    last, _, plain = adv.train_adversarial_stylizer(style, photos, **kwargs)
    copied, _, history = adv.train_adversarial_stylizer(style, photos, ema_decay=0.0, **kwargs)
    frozen, _, _ = adv.train_adversarial_stylizer(style, photos, ema_decay=1.0, **kwargs)
    half, _, _ = adv.train_adversarial_stylizer(style, photos, ema_decay=0.5, **kwargs)
    assert history.loss == plain.loss                 # the average does not change the training
    torch.manual_seed(0)
    initial = adv.Stylizer()                          # the seeded initial weights
    for name, w in last.state_dict().items():
        assert torch.equal(copied.state_dict()[name], w)                     # decay 0: the last weights
        assert torch.equal(frozen.state_dict()[name], initial.state_dict()[name])   # decay 1: the start
    # three steps with decay 0.5: 1/8 of the start, 1/8, 1/4 and 1/2 of the weights after steps 1, 2, 3
    # (a shorter training with the same seed is the start of the longer one)
    after = [initial] + [adv.train_adversarial_stylizer(style, photos, **dict(kwargs, steps=k))[0]
                         for k in (1, 2)] + [last]
    for name, w in half.state_dict().items():
        expected = sum(c * net.state_dict()[name] for c, net in zip((0.125, 0.125, 0.25, 0.5), after))
        assert torch.allclose(w, expected, atol=1e-6)
    assert not torch.allclose(half.out[1].bias, last.out[1].bias)
    assert all(not p.requires_grad for p in half.parameters()) and not half.training
    with pytest.raises(ValueError, match="ema_decay"):
        adv.train_adversarial_stylizer(style, photos, ema_decay=-0.1, **kwargs)
