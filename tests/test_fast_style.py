"""Fast style transfer: instance norm, conditional instance norm, TransformerNet, training, weights."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import cs_utils
from cs_utils.fast_style import (
    FAST_STYLE_DIR,
    ConditionalInstanceNorm,
    TransformerNet,
    instance_norm,
    load_fast_style,
    save_fast_style,
    stylize,
)
from cs_utils.fast_style_training import train_fast_style

# --------------------------------------------------------------------------- instance norm


def test_instance_norm_by_hand():
    # one image, one channel, four pixels 1, 2, 3, 6: mean 3, biased variance (4+1+0+9)/4 = 3.5
    x = torch.tensor([[[[1.0, 2.0], [3.0, 6.0]]]])
    expected = (torch.tensor([1.0, 2.0, 3.0, 6.0]) - 3.0) / (3.5 + 1e-5) ** 0.5
    assert torch.allclose(instance_norm(x).flatten(), expected, atol=1e-6)
    # each channel and image on its own: a shifted and scaled copy gives the same result
    y = torch.cat([x, 10 * x + 7], dim=1)
    out = instance_norm(y)
    assert torch.allclose(out[0, 1], instance_norm(x)[0, 0], atol=1e-4)


def test_instance_norm_matches_torch():
    x = torch.randn(3, 5, 7, 9, generator=torch.Generator().manual_seed(0)) * 4 + 2
    for eps in (1e-5, 0.1):
        assert torch.allclose(instance_norm(x, eps), F.instance_norm(x, eps=eps), atol=1e-5)
    out = instance_norm(x)
    assert torch.allclose(out.mean(dim=(2, 3)), torch.zeros(3, 5), atol=1e-5)
    assert torch.allclose(out.var(dim=(2, 3), unbiased=False), torch.ones(3, 5), atol=1e-3)


def test_instance_norm_gradcheck():
    x = torch.randn(2, 3, 4, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    x.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda t: instance_norm(t, 1e-3), (x,))


def test_instance_norm_bad_input():
    with pytest.raises(ValueError, match="N, C, H, W"):
        instance_norm(torch.zeros(3, 4, 4))
    with pytest.raises(ValueError, match="more than one pixel"):
        instance_norm(torch.zeros(1, 3, 1, 1))


# --------------------------------------------------------------------------- conditional instance norm


def test_conditional_instance_norm_one_style_equals_instance_norm():
    g = torch.Generator().manual_seed(2)
    cin = ConditionalInstanceNorm(6, num_styles=4)
    with torch.no_grad():
        cin.weight.copy_(torch.randn(4, 6, generator=g))
        cin.bias.copy_(torch.randn(4, 6, generator=g))
    x = torch.randn(3, 6, 5, 5, generator=g)
    plain = nn.InstanceNorm2d(6, affine=True)
    for style in range(4):
        with torch.no_grad():
            plain.weight.copy_(cin.weight[style])
            plain.bias.copy_(cin.bias[style])
        one_hot = F.one_hot(torch.full((3,), style), 4).float()
        assert torch.allclose(cin(x, one_hot), plain(x), atol=1e-5)


def test_conditional_instance_norm_mixes_parameters_linearly():
    g = torch.Generator().manual_seed(3)
    cin = ConditionalInstanceNorm(2, num_styles=2)
    with torch.no_grad():
        cin.weight.copy_(torch.tensor([[1.0, 2.0], [3.0, -1.0]]))
        cin.bias.copy_(torch.tensor([[0.0, 1.0], [4.0, 0.0]]))
    x = torch.randn(1, 2, 3, 3, generator=g)
    mixed = cin(x, torch.tensor([[0.25, 0.75]]))
    # gamma = 0.25*[1,2] + 0.75*[3,-1] = [2.5, -0.25]; beta = [3, 0.25]
    expected = F.instance_norm(x) * torch.tensor([2.5, -0.25]).view(1, 2, 1, 1) + \
        torch.tensor([3.0, 0.25]).view(1, 2, 1, 1)
    assert torch.allclose(mixed, expected, atol=1e-5)
    with pytest.raises(ValueError, match="num_styles"):
        cin(x, torch.ones(1, 3))


def test_conditional_instance_norm_gradcheck():
    cin = ConditionalInstanceNorm(3, num_styles=2).double()
    g = torch.Generator().manual_seed(4)
    x = torch.randn(2, 3, 3, 4, dtype=torch.float64, generator=g, requires_grad=True)
    w = torch.rand(2, 2, dtype=torch.float64, generator=g, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: cin(a, b), (x, w))


# --------------------------------------------------------------------------- the network


@pytest.mark.parametrize("norm", ["instance", "batch", "conditional"])
@pytest.mark.parametrize("size", [(33, 47), (64, 64), (17, 30)])
def test_transformer_net_output_shape_and_range(norm, size):
    torch.manual_seed(0)
    net = TransformerNet(norm, channels=(4, 8, 8), num_residual=1, style_names=("a", "b"))
    x = torch.rand(2, 3, *size)
    style = "b" if norm == "conditional" else None
    y = net(x, style=style)
    assert y.shape == x.shape
    assert 0 <= y.min() and y.max() <= 1


def test_transformer_net_pads_by_reflection_and_upsamples_before_convolving():
    net = TransformerNet(channels=(4, 8, 8), num_residual=2)
    convs = [m for m in net.modules() if isinstance(m, nn.Conv2d)]
    assert all(c.padding == (0, 0) for c in convs)   # padding is done by ReflectionPad2d layers
    assert sum(isinstance(m, nn.ReflectionPad2d) for m in net.modules()) == len(convs)
    assert not any(isinstance(m, nn.ConvTranspose2d) for m in net.modules())
    assert [c.stride for c in convs[:3]] == [(1, 1), (2, 2), (2, 2)]
    assert sum(isinstance(m, nn.InstanceNorm2d) for m in net.modules()) == 3 + 2 * 2 + 2


def test_transformer_net_style_argument():
    torch.manual_seed(0)
    net = TransformerNet("conditional", channels=(4, 8, 8), num_residual=1, style_names=("a", "b", "c"))
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, ConditionalInstanceNorm):
                m.weight.normal_()
                m.bias.normal_()
    x = torch.rand(2, 3, 16, 16)
    by_name, by_index = net(x, style="c"), net(x, style=2)
    assert torch.equal(by_name, by_index)
    assert torch.allclose(net(x, style=[0.0, 0.0, 1.0]), by_name)
    per_image = net(x, style=torch.tensor([[1.0, 0, 0], [0, 0, 1.0]]))
    assert torch.allclose(per_image[1], by_name[1], atol=1e-6)
    assert torch.allclose(per_image[0], net(x, style="a")[0], atol=1e-6)
    assert not torch.allclose(net(x, style="a"), by_name)
    with pytest.raises(KeyError, match="holds"):
        net(x, style="d")
    with pytest.raises(IndexError):
        net(x, style=3)
    with pytest.raises(ValueError, match="pass style="):
        net(x)
    with pytest.raises(ValueError, match="style=None"):
        TransformerNet()(x, style=0)
    with pytest.raises(ValueError, match="norm must be"):
        TransformerNet("layer")
    with pytest.raises(ValueError, match="style_names"):
        TransformerNet("conditional")


# --------------------------------------------------------------------------- stylize


def test_stylize_batches_and_keeps_the_callers_state(caller_state):
    torch.manual_seed(0)
    net = TransformerNet("batch", channels=(4, 8, 8), num_residual=1).train()
    x = torch.rand(5, 3, 20, 24)
    state = caller_state(net, x)
    out = stylize(net, x, batch_size=2)
    state.assert_unchanged()
    assert out.shape == x.shape and not out.requires_grad
    with torch.no_grad(), cs_utils.hooks.evaluating(net):
        assert torch.allclose(out, net(x), atol=1e-6)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        stylize(net, x * 2)
    state.assert_unchanged()


def test_stylize_conditional_per_image_styles():
    torch.manual_seed(0)
    net = TransformerNet("conditional", channels=(4, 8, 8), num_residual=1, style_names=("a", "b"))
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, ConditionalInstanceNorm):
                m.bias.normal_()
    x = torch.rand(3, 3, 16, 16)
    weights = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.5, 0.5]])
    out = stylize(net, x, style=weights, batch_size=2)
    assert torch.allclose(out[1], stylize(net, x[1:2], style="b")[0], atol=1e-6)
    assert torch.allclose(out[2], stylize(net, x[2:3], style=[0.5, 0.5])[0], atol=1e-6)


# --------------------------------------------------------------------------- committed weights

COMMITTED = ["starry_night", "starry_night_500", "starry_night_batchnorm", "four_styles"]


@pytest.mark.parametrize("name", COMMITTED)
def test_committed_weights_reproduce_the_reference_output(name):
    reference = torch.load(FAST_STYLE_DIR / "reference.pt", weights_only=True)
    net = load_fast_style(name)
    assert not net.training and all(not p.requires_grad for p in net.parameters())
    out = stylize(net, reference["input"], style=1 if net.norm == "conditional" else None)
    assert torch.equal(out, reference["outputs"][name])


def test_committed_weights_are_small_and_recorded():
    files = sorted(FAST_STYLE_DIR.glob("*.pt"))
    assert sum(f.stat().st_size for f in files) < 5_000_000
    four = load_fast_style("four_styles")
    assert four.style_names == cs_utils.style_catalog.STYLE_NAMES
    assert four.info["steps"] > 0 and four.info["final"]["loss"] > 0


def test_load_fast_style_unknown_name():
    with pytest.raises(FileNotFoundError, match="starry_night"):
        load_fast_style("van_gogh")


def test_save_and_load_round_trip(tmp_path):
    torch.manual_seed(0)
    net = TransformerNet("conditional", channels=(4, 8, 8), num_residual=1, style_names=("a", "b")).eval()
    path = save_fast_style(net, tmp_path / "net.pt", dtype=torch.float32, info={"note": 1})
    loaded = load_fast_style(path)
    x = torch.rand(1, 3, 16, 16)
    assert torch.equal(stylize(loaded, x, style="a"), stylize(net, x, style="a"))
    assert loaded.info == {"note": 1} and loaded.style_names == ("a", "b")


# --------------------------------------------------------------------------- training


@pytest.fixture
def tiny_loss_net():
    """A frozen two-conv network named like the default one's layers the loss uses."""
    torch.manual_seed(0)
    model = nn.Sequential()
    model.add_module("stem", nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU()))
    block = nn.Sequential(nn.Conv2d(6, 8, 3, stride=2, padding=1), nn.ReLU())
    model.add_module("blocks", nn.Sequential(block))
    model.add_module("head", nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 2)))
    for p in model.parameters():
        p.requires_grad_(False)
    return model.eval()


def _tiny_photos():
    g = torch.Generator().manual_seed(5)
    smooth = F.interpolate(torch.rand(3, 3, 6, 6, generator=g), size=(40, 48), mode="bilinear")
    return list(smooth.split(1))


TINY = dict(channels=(4, 8, 8), num_residual=1, outer_kernel=3, batch_size=2, crop_size=24, style_size=24,
            lr=0.02, style_layers=("stem", "blocks.0"), content_layer="blocks.0", style_weight=1e4,
            tv_weight=1.0, progress=False)


def test_train_fast_style_lowers_the_loss(tiny_loss_net, caller_state):
    style = torch.tensor([0.9, 0.5, 0.1]).view(1, 3, 1, 1).expand(1, 3, 24, 24).clone()  # flat orange
    photos = _tiny_photos()
    state = caller_state(tiny_loss_net, style, *photos)
    net, history = train_fast_style(tiny_loss_net, style, photos, steps=30,
                                    generator=torch.Generator().manual_seed(0), **TINY)
    state.assert_unchanged()
    assert history.steps == 30 and len(history.loss) == 30
    first, last = sum(history.loss[:5]) / 5, sum(history.loss[-5:]) / 5
    assert last < 0.5 * first, (first, last)
    assert sum(history.style[-5:]) < 0.2 * sum(history.style[:5])
    assert isinstance(net, TransformerNet) and not net.training


def test_train_fast_style_resume_equals_one_run(tiny_loss_net, tmp_path):
    photos, style = _tiny_photos(), torch.rand(1, 3, 24, 24, generator=torch.Generator().manual_seed(6))
    styles = {"noise": style, "flat": torch.full((1, 3, 24, 24), 0.5)}
    straight, h1 = train_fast_style(tiny_loss_net, styles, photos, steps=6,
                                    generator=torch.Generator().manual_seed(1), **TINY)
    ckpt = tmp_path / "run.ckpt"
    train_fast_style(tiny_loss_net, styles, photos, steps=4, checkpoint=ckpt, checkpoint_every=2,
                     generator=torch.Generator().manual_seed(1), **TINY)
    resumed, h2 = train_fast_style(tiny_loss_net, styles, photos, steps=6, checkpoint=ckpt,
                                   generator=torch.Generator().manual_seed(99), **TINY)
    assert h2.steps == 6 and h2.loss == pytest.approx(h1.loss, rel=1e-5)
    for a, b in zip(straight.state_dict().values(), resumed.state_dict().values()):
        assert torch.allclose(a, b, atol=1e-6)
    assert straight.norm == "conditional" and straight.style_names == ("noise", "flat")
    with pytest.raises(ValueError, match="other settings"):
        train_fast_style(tiny_loss_net, styles, photos, steps=6, checkpoint=ckpt,
                         **{**TINY, "lr": 0.1})
    with pytest.raises(ValueError, match="already 6 steps"):
        train_fast_style(tiny_loss_net, styles, photos, steps=5, checkpoint=ckpt, **TINY)


def test_train_fast_style_is_seeded(tiny_loss_net):
    photos, style = _tiny_photos(), torch.rand(1, 3, 24, 24, generator=torch.Generator().manual_seed(6))
    runs = [train_fast_style(tiny_loss_net, style, photos, steps=2,
                             generator=torch.Generator().manual_seed(seed), **TINY)[1].loss
            for seed in (3, 3, 4)]
    assert runs[0] == runs[1] and runs[0] != runs[2]


def test_train_fast_style_bad_input(tiny_loss_net, caller_state):
    photos = _tiny_photos()
    style = torch.rand(1, 3, 24, 24)
    state = caller_state(tiny_loss_net, style)
    with pytest.raises(ValueError, match="conditional"):
        train_fast_style(tiny_loss_net, {"a": style, "b": style}, photos, norm="instance", **TINY)
    with pytest.raises(KeyError, match="blocks"):
        train_fast_style(tiny_loss_net, style, photos, steps=0, **{**TINY, "content_layer": "blocks.9"})
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        train_fast_style(tiny_loss_net, style * 3, photos, **TINY)
    state.assert_unchanged()


def test_training_photos_hold_out_the_demo_photos():
    photos = cs_utils.fast_style_training.training_photos(max_side=64)
    assert len(photos) == len(cs_utils.sample_images("photo")) - len(cs_utils.fast_style.HELD_OUT_PHOTOS)
    assert all(max(p.shape[-2:]) <= 64 for p in photos)
