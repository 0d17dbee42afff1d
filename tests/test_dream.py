"""DeepDream and feature inversion: hand-computed steps on tiny models, the octave pyramid,
seeding, the same images on the network with its batch norm folded in, and the caller's state
left as it was (also after an exception)."""

import pytest
import torch
import torch.nn.functional as F
from models_by_hand import FailsOnCall, batch_norm_cnn, unfolded
from torch import nn

import cs_utils
from cs_utils.dream import dream_octaves, roll_offsets
from cs_utils.engine.folding import gradient_network


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def pointwise_model() -> nn.Sequential:
    """A 1x1 convolution (3 -> 2 channels) with known weights, then a ReLU."""
    model = nn.Sequential()
    model.add_module("mix", nn.Conv2d(3, 2, 1))
    model.add_module("relu", nn.ReLU())
    with torch.no_grad():
        model.mix.weight.copy_(torch.tensor([[1.0, -2.0, 0.5], [0.0, 1.0, 3.0]]).view(2, 3, 1, 1))
        model.mix.bias.copy_(torch.tensor([0.25, -1.0]))
    return model.eval()


def conv_model() -> nn.Sequential:
    """A padded 3x3 convolution: where the image is rolled to matters at its borders."""
    torch.manual_seed(1)
    model = nn.Sequential()
    model.add_module("conv", nn.Conv2d(3, 4, 3, padding=1))
    model.add_module("relu", nn.ReLU())
    return model.eval()


def half_squared_norm(model, x, layer) -> float:
    with torch.no_grad():
        return 0.5 * cs_utils.extract_features(model, x, [layer])[layer].pow(2).sum().item()


# ----------------------------------------------------------------------------- deepdream_step

def test_deepdream_step_matches_hand_computation():
    model = pointwise_model()
    x = torch.rand(2, 3, 5, 6, generator=seeded(0))
    new = cs_utils.deepdream_step(model, x, "mix", step_size=0.05, jitter=0)
    # a = W x + b at every pixel; d(0.5 ||a||^2)/dx = W^T a
    w, b = model.mix.weight.detach().view(2, 3), model.mix.bias.detach()
    a = torch.einsum("oc,nchw->nohw", w, x) + b.view(1, 2, 1, 1)
    grad = torch.einsum("oc,nohw->nchw", w, a)
    expected = (x + 0.05 * grad / grad.abs().mean(dim=(1, 2, 3), keepdim=True)).clamp(0, 1)
    torch.testing.assert_close(new, expected)
    assert not torch.equal(new, x)


def test_deepdream_step_rolls_and_rolls_back():
    model = conv_model()
    x = torch.rand(1, 3, 8, 8, generator=seeded(2))
    new = cs_utils.deepdream_step(model, x, "conv", step_size=0.02, jitter=3,
                                  generator=seeded(5))
    dy, dx = roll_offsets(3, seeded(5))
    assert (dy, dx) != (0, 0)
    rolled = torch.roll(x, (dy, dx), dims=(2, 3))
    conv = model.conv
    a = F.conv2d(rolled, conv.weight, conv.bias, padding=1)
    grad = F.conv_transpose2d(a, conv.weight, padding=1)   # J^T a of a padded convolution
    stepped = rolled + 0.02 * grad / grad.abs().mean()
    expected = torch.roll(stepped, (-dy, -dx), dims=(2, 3)).clamp(0, 1)
    torch.testing.assert_close(new, expected.detach())
    # the roll matters for a padded convolution: without it the step differs
    assert not torch.allclose(new, cs_utils.deepdream_step(model, x, "conv", step_size=0.02, jitter=0))


def test_deepdream_step_roll_is_undone_for_a_pointwise_model():
    model = pointwise_model()
    x = torch.rand(1, 3, 7, 7, generator=seeded(3))
    still = cs_utils.deepdream_step(model, x, "mix", jitter=0)
    rolled = cs_utils.deepdream_step(model, x, "mix", jitter=3, generator=seeded(0))
    torch.testing.assert_close(rolled, still)


def test_roll_offsets_stay_in_range_and_follow_the_generator():
    offsets = [roll_offsets(2, seeded(s)) for s in range(40)]
    assert all(-2 <= d <= 2 for pair in offsets for d in pair)
    assert len(set(offsets)) > 5
    assert roll_offsets(2, seeded(7)) == roll_offsets(2, seeded(7))
    assert roll_offsets(0, None) == (0, 0)


def test_deepdream_is_repeated_deepdream_steps():
    model = conv_model()
    x = torch.rand(1, 3, 10, 10, generator=seeded(4)) * 0.5 + 0.25
    dreamed, history = cs_utils.deepdream(model, x, "relu", octaves=1, steps_per_octave=3, step_size=0.03,
                                          jitter=2, progress=False, generator=seeded(9))
    gen = seeded(9)
    expected = x
    for _ in range(3):
        expected = cs_utils.deepdream_step(model, expected, "relu", step_size=0.03, jitter=2, generator=gen)
    torch.testing.assert_close(dreamed, expected)
    assert history.steps == 3 and history.extra["octave"] == [0, 0, 0]


def test_deepdream_raises_the_layer_objective(lite0):
    x = cs_utils.load_image("coffee", 96)
    before = half_squared_norm(lite0, x, "blocks.10")
    dreamed, history = cs_utils.deepdream(lite0, x, "blocks.10", octaves=1, steps_per_octave=5,
                                          progress=False, generator=seeded(0))
    after = half_squared_norm(lite0, dreamed, "blocks.10")
    assert after > 1.1 * before
    assert history.objective[-1] < history.objective[0]   # the loop minimises -0.5 ||a||^2
    assert dreamed.shape == x.shape and 0 <= dreamed.min() and dreamed.max() <= 1


# ----------------------------------------------------------------------------- octaves

def test_octave_sizes():
    assert cs_utils.octave_sizes(224, 224, 3, 1.4) == [(114, 114), (160, 160), (224, 224)]
    assert cs_utils.octave_sizes(300, 200, 2, 2.0) == [(150, 100), (300, 200)]
    assert cs_utils.octave_sizes(50, 60, 1, 1.4) == [(50, 60)]
    with pytest.raises(ValueError, match="octaves"):
        cs_utils.octave_sizes(224, 224, 0, 1.4)
    with pytest.raises(ValueError, match="octave_scale"):
        cs_utils.octave_sizes(224, 224, 3, 0.7)
    with pytest.raises(ValueError, match="fewer octaves"):
        cs_utils.octave_sizes(64, 64, 4, 2.0)


def test_dream_octaves_carry_detail_from_small_to_large():
    x = 0.2 + 0.4 * torch.rand(1, 3, 48, 40, generator=seeded(0))
    sizes = cs_utils.octave_sizes(48, 40, 3, 1.5)
    seen = []

    def add_a_tenth(init, k):
        seen.append((k, tuple(init.shape[-2:])))
        return init + 0.1

    out = dream_octaves(x, sizes, add_a_tenth)
    assert seen == [(k, size) for k, size in enumerate(sizes)]
    # each octave adds 0.1 on top of the detail carried up from the smaller ones
    torch.testing.assert_close(out, x + 0.3)


def test_deepdream_octaves_record_each_octave(lite0):
    x = cs_utils.load_image("chelsea", 64)
    dreamed, history = cs_utils.deepdream(lite0, x, "blocks.2", octaves=2, octave_scale=1.5,
                                          steps_per_octave=2, progress=False, generator=seeded(0))
    assert dreamed.shape == x.shape
    assert history.extra["octave"] == [0, 0, 1, 1] and history.steps == 4 and len(history.objective) == 4


# ----------------------------------------------------------------------------- inversion

def test_relative_feature_error_by_hand():
    model = pointwise_model()
    x = torch.rand(1, 3, 4, 4, generator=seeded(0))
    image = torch.rand(1, 3, 4, 4, generator=seeded(1))
    w, b = model.mix.weight.detach().view(2, 3), model.mix.bias.detach().view(1, 2, 1, 1)
    phi_x = torch.einsum("oc,nchw->nohw", w, x) + b
    phi_image = torch.einsum("oc,nchw->nohw", w, image) + b
    expected = (phi_image - phi_x).norm() / phi_x.norm()
    error = cs_utils.dream.relative_feature_error(model, image, x, "mix")
    assert error.shape == (1,)
    torch.testing.assert_close(error[0], expected)
    assert cs_utils.dream.relative_feature_error(model, x, x, "mix").item() == 0.0


@pytest.mark.parametrize("optimizer, lr", [("adam", 0.05), ("lbfgs", None)])
def test_inversion_lowers_the_feature_error(tiny_cnn, optimizer, lr):
    x = torch.rand(1, 3, 12, 12, generator=seeded(0))
    image, history = cs_utils.invert_features(tiny_cnn, x, "relu", steps=40, tv_weight=0.0,
                                              optimizer=optimizer, lr=lr, progress=False, generator=seeded(1))
    start = history.objective[0] ** 0.5    # relative error of the grey-plus-noise start
    final = history.extra["relative_feature_error"][0]
    assert start > 0.3
    assert final < 0.5 * start
    torch.testing.assert_close(torch.tensor(final),
                               cs_utils.dream.relative_feature_error(tiny_cnn, image, x, "relu")[0])
    assert image.shape == x.shape and 0 <= image.min() and image.max() <= 1


def test_inversion_tv_weight_smooths_the_result(tiny_cnn):
    x = torch.rand(1, 3, 12, 12, generator=seeded(0))
    kw = dict(steps=30, optimizer="adam", lr=0.05, progress=False)
    rough, _ = cs_utils.invert_features(tiny_cnn, x, "relu", tv_weight=0.0,
                                        generator=seeded(1), **kw)
    smooth, _ = cs_utils.invert_features(tiny_cnn, x, "relu", tv_weight=50.0,
                                         generator=seeded(1), **kw)
    assert cs_utils.tv_loss(smooth).item() < 0.5 * cs_utils.tv_loss(rough).item()


def test_inversion_of_a_shallow_layer_of_the_pretrained_model(lite0):
    x = cs_utils.load_image("coffee", 64)
    image, history = cs_utils.invert_features(lite0, x, "stem", steps=30, tv_weight=0.1, progress=False,
                                              generator=seeded(0))
    assert history.extra["relative_feature_error"][0] < 0.5 * history.objective[0] ** 0.5
    assert (image - x).abs().mean() < (0.5 - x).abs().mean()   # closer to the photo than grey is


# ----------------------------------------------------------------------------- seeding

def test_same_seed_same_image_other_seed_other_image():
    model = conv_model()
    x = torch.rand(1, 3, 24, 24, generator=seeded(0))
    kw = dict(octaves=2, octave_scale=1.5, steps_per_octave=3, jitter=4, progress=False)
    first, _ = cs_utils.deepdream(model, x, "relu", generator=seeded(3), **kw)
    again, _ = cs_utils.deepdream(model, x, "relu", generator=seeded(3), **kw)
    other, _ = cs_utils.deepdream(model, x, "relu", generator=seeded(4), **kw)
    assert torch.equal(first, again)
    assert not torch.equal(first, other)

    kw = dict(steps=5, optimizer="adam", lr=0.05, jitter=2, progress=False)
    first, _ = cs_utils.invert_features(model, x, "relu", generator=seeded(3), **kw)
    again, _ = cs_utils.invert_features(model, x, "relu", generator=seeded(3), **kw)
    other, _ = cs_utils.invert_features(model, x, "relu", generator=seeded(4), **kw)
    assert torch.equal(first, again)
    assert not torch.equal(first, other)


# ----------------------------------------------------------------------------- contract

def run_each(model, x, layer):
    cs_utils.deepdream_step(model, x, layer, jitter=1, generator=seeded(0))
    cs_utils.deepdream(model, x, layer, octaves=1, steps_per_octave=2, jitter=1, progress=False,
                       generator=seeded(0))
    cs_utils.invert_features(model, x, layer, steps=3, optimizer="adam", progress=False,
                             generator=seeded(0))
    cs_utils.invert_features(model, x, layer, steps=3, optimizer="lbfgs", progress=False,
                             generator=seeded(0))
    cs_utils.dream.relative_feature_error(model, x, x, layer)


def test_caller_state_is_left_unchanged(tiny_cnn, caller_state):
    tiny_cnn.train()                     # a model in training mode stays in training mode
    x = torch.rand(1, 3, 16, 16, requires_grad=True)
    state = caller_state(tiny_cnn, x)
    run_each(tiny_cnn, x, "relu")
    state.assert_unchanged()
    assert all(p.grad is None for p in tiny_cnn.parameters())


@pytest.mark.parametrize("batch_norm", [False, True], ids=["plain", "folded"])
@pytest.mark.parametrize("technique", ["step", "deepdream", "invert", "invert_lbfgs"])
def test_no_hooks_left_after_an_exception_inside(caller_state, technique, batch_norm):
    if batch_norm:    # the techniques run on a folded copy; the copy raises, the model is untouched
        model, layer = batch_norm_cnn(fails_on_call=3), "block2"
        assert gradient_network(model, keep=(layer,)) is not model
    else:
        model, layer = nn.Sequential(), "relu"
        model.add_module("conv", nn.Conv2d(3, 4, 3, padding=1))
        model.add_module("fails", FailsOnCall(n=3))
        model.add_module("relu", nn.ReLU())
        model.train()
    x = torch.rand(1, 3, 16, 16)
    state = caller_state(model, x)
    calls = {
        "step": lambda: [cs_utils.deepdream_step(model, x, layer) for _ in range(3)],
        "deepdream": lambda: cs_utils.deepdream(model, x, layer, octaves=1, steps_per_octave=5,
                                                progress=False),
        "invert": lambda: cs_utils.invert_features(model, x, layer, steps=5, optimizer="adam",
                                                   progress=False),
        "invert_lbfgs": lambda: cs_utils.invert_features(model, x, layer, steps=5, progress=False),
    }
    with pytest.raises(RuntimeError, match="middle of the optimisation"):
        calls[technique]()
    state.assert_unchanged()
    assert not model.block1[0].bias.requires_grad if batch_norm else True


# ----------------------------------------------------------------------------- folded batch norm

def dream_runs(model, x, layer):
    return {
        "deepdream": lambda: cs_utils.deepdream(model, x, layer, octaves=2, octave_scale=1.5,
                                                steps_per_octave=4, step_size=0.02, jitter=3, progress=False,
                                                generator=seeded(1))[0],
        "invert_adam": lambda: cs_utils.invert_features(model, x, layer, steps=10, optimizer="adam", lr=0.02,
                                                        jitter=2, tv_weight=1.0, progress=False,
                                                        generator=seeded(2))[0],
        "invert_lbfgs": lambda: cs_utils.invert_features(model, x, layer, steps=10, tv_weight=0.1,
                                                         progress=False, generator=seeded(2))[0],
    }


# block1.0: a convolution whose output is read, so its batch norm stays. Not with L-BFGS there: its
# line search branches on rounding-level differences of the loss (the channels-last layout alone
# moves its 3rd or 10th evaluation by up to 0.1; by the 20th both runs agree again to 1e-3)
@pytest.mark.parametrize("technique, layer", [("deepdream", "block2"), ("invert_adam", "block2"),
                                              ("invert_lbfgs", "block2"), ("deepdream", "block1.0"),
                                              ("invert_adam", "block1.0")])
def test_folded_batch_norm_gives_the_image_of_the_model_as_it_is(caller_state, technique, layer):
    model = batch_norm_cnn()
    x = 0.2 + 0.6 * torch.rand(1, 3, 24, 24, generator=seeded(0))
    net = gradient_network(model, keep=(layer,))
    assert not any(isinstance(m, nn.BatchNorm2d) for m in net.block2.modules())   # it does fold
    assert isinstance(net.block1[1], nn.BatchNorm2d if layer == "block1.0" else nn.Identity)
    state = caller_state(model, x)
    run = dream_runs(model, x, layer)[technique]
    folded = run()
    state.assert_unchanged()
    with unfolded(model):
        plain = run()
    state.assert_unchanged()
    # float32 rounding of the folded weights, carried through the steps: far below one grey level
    assert (folded - plain).abs().max() < 1e-4
    assert not torch.equal(plain, x)


def test_bad_layer_name_raises_a_clear_error(lite0, caller_state):
    x = cs_utils.load_image("coffee", 64)
    state = caller_state(lite0, x)
    for call in (lambda: cs_utils.deepdream_step(lite0, x, "block.10"),
                 lambda: cs_utils.deepdream(lite0, x, "block.10", progress=False),
                 lambda: cs_utils.invert_features(lite0, x, "block.10", progress=False),
                 lambda: cs_utils.dream.relative_feature_error(lite0, x, x, "block.10")):
        with pytest.raises(KeyError, match=r"no layer 'block.10'.*'blocks.10'"):
            call()
    state.assert_unchanged()


def test_bad_arguments_raise_clear_errors(tiny_cnn):
    x = torch.rand(1, 3, 16, 16)
    with pytest.raises(ValueError, match="jitter"):
        cs_utils.deepdream_step(tiny_cnn, x, "relu", jitter=-1)
    with pytest.raises(ValueError, match="steps_per_octave"):
        cs_utils.deepdream(tiny_cnn, x, "relu", steps_per_octave=0)
    with pytest.raises(ValueError, match="fewer octaves"):
        cs_utils.deepdream(tiny_cnn, x, "relu", octaves=5, octave_scale=2.0)
    with pytest.raises(ValueError, match="tv_weight"):
        cs_utils.invert_features(tiny_cnn, x, "relu", tv_weight=-1.0)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        cs_utils.deepdream(tiny_cnn, x * 3, "relu")
    with pytest.raises(ValueError, match="same shape"):
        cs_utils.dream.relative_feature_error(tiny_cnn, x[..., :8], x, "relu")
