import pytest
import torch
from models_by_hand import linear_model
from torch import nn

import cs_utils
from cs_utils import objectives
from cs_utils.class_viz import (
    DEFAULT_RECIPE,
    RECIPES,
    MilkPenalty,
    class_visualization,
    class_visualization_step,
    stretch_contrast,
)
from cs_utils.image_stats import class_ranks
from cs_utils.objectives import Objective
from cs_utils.optimize import optimize_image
from cs_utils.parameterizations import FourierImage, color_basis
from cs_utils.regularizers import L2Penalty

SMALL_FOURIER = dict(recipe="fourier", pad=2, jitter=1, final_jitter=1, degrees=(-5, 0, 5))
SMALL_SMOOTH = dict(SMALL_FOURIER, recipe="smooth_color")
SMALL_CLEAR = dict(SMALL_FOURIER, recipe="clear")


@pytest.mark.parametrize("recipe", [dict(recipe="cs231n", lr=100.0, l2=1e-4, jitter=2),
                                    dict(SMALL_FOURIER, lr=0.5)])
def test_class_score_improves_over_a_few_steps(tiny_cnn, recipe):
    image, history = class_visualization(tiny_cnn, 0, steps=8, image_size=12, progress=False,
                                         generator=torch.Generator().manual_seed(0), **recipe)
    assert image.shape == (1, 3, 12, 12) and 0 <= image.min() and image.max() <= 1
    assert history.steps == 8 and len(history.objective) == 8
    # the objective is -score; the first value is the score of the starting image
    start_score = -history.objective[0]
    assert tiny_cnn(image)[0, 0].item() > start_score + 0.05


def test_pretrained_class_visualization_reaches_its_class(lite0):
    goldfish = cs_utils.imagenet_index("goldfish")
    image, history = class_visualization(lite0, goldfish, steps=12, image_size=64, recipe="fourier",
                                         pad=4, jitter=4, final_jitter=2, progress=False,
                                         generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        scores = lite0(image)
    assert scores.argmax(1).item() == goldfish
    assert history.objective[-1] < history.objective[0]


def test_same_seed_same_image(tiny_cnn):
    def run(seed, recipe):
        return class_visualization(tiny_cnn, 1, steps=3, image_size=10, progress=False,
                                   generator=torch.Generator().manual_seed(seed), **recipe)[0]
    for recipe in (dict(recipe="cs231n"), SMALL_FOURIER, SMALL_SMOOTH):
        assert torch.equal(run(0, recipe), run(0, recipe))
        assert not torch.equal(run(0, recipe), run(1, recipe))



def test_class_visualization_step_by_hand_on_linear_model():
    torch.manual_seed(0)
    weight = torch.randn(4, 12)
    model = linear_model(weight, torch.zeros(4))
    x = torch.rand(1, 3, 2, 2)
    out = class_visualization_step(model, x, 2, learning_rate=0.5, l2_reg=0.1)
    # d/dx [w_2 . x - 0.1 * ||x - 0.5||^2] = w_2 - 0.2 (x - 0.5)
    expected = x + 0.5 * (weight[2].view_as(x) - 0.2 * (x - 0.5))
    torch.testing.assert_close(out, expected)
    assert not out.requires_grad


def test_class_visualization_step_is_one_sgd_step_of_the_shared_loop(tiny_cnn):
    x = torch.rand(1, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    step = class_visualization_step(tiny_cnn, x, 4, learning_rate=2.0, l2_reg=0.01)
    loop, _ = optimize_image(objectives.class_score(tiny_cnn, 4), x, steps=1, optimizer="sgd", lr=2.0,
                             regularizers=[L2Penalty(0.01)], clamp=None, progress=False)
    torch.testing.assert_close(step, loop)


def test_objectives_by_hand(tiny_cnn):
    x = torch.rand(2, 3, 6, 6, generator=torch.Generator().manual_seed(2))
    relu = tiny_cnn.relu(tiny_cnn.conv(x))
    torch.testing.assert_close(objectives.channel(tiny_cnn, "relu", 1)(x), -relu[:, 1].mean(dim=(1, 2)).sum())
    torch.testing.assert_close(objectives.neuron(tiny_cnn, "conv", 2)(x), -tiny_cnn.conv(x)[:, 2, 3, 3].sum())
    torch.testing.assert_close(objectives.neuron(tiny_cnn, "conv", 2, position=(0, 5))(x),
                               -tiny_cnn.conv(x)[:, 2, 0, 5].sum())
    features = relu.mean(dim=(2, 3))  # the "flat" layer: the 4-d penultimate representation
    direction = torch.tensor([1.0, -2.0, 0.5, 0.0])
    torch.testing.assert_close(objectives.direction(tiny_cnn, "flat", direction)(x),
                               -(features @ direction).sum())
    cos = nn.functional.cosine_similarity(features, direction[None], dim=1)
    torch.testing.assert_close(objectives.direction(tiny_cnn, "flat", direction, cosine_power=1)(x),
                               -((features @ direction) * cos.clamp_min(1e-4)).sum())
    scores = tiny_cnn(x)
    torch.testing.assert_close(objectives.class_score(tiny_cnn, 3)(x), -scores[:, 3].sum())
    combined = objectives.class_score(tiny_cnn, 3) + 0.5 * objectives.channel(tiny_cnn, "relu", 1)
    assert isinstance(combined, Objective)
    torch.testing.assert_close(combined(x), -scores[:, 3].sum() - 0.5 * relu[:, 1].mean(dim=(1, 2)).sum())


@pytest.mark.parametrize("objective", ["channel", "neuron", "representation"])
def test_other_objectives_improve(tiny_cnn, objective):
    make = {"channel": lambda: objectives.channel(tiny_cnn, "conv", 0),
            "neuron": lambda: objectives.neuron(tiny_cnn, "relu", 2),
            "representation": lambda: objectives.direction(tiny_cnn, "flat", torch.ones(4))}[objective]
    _, history = class_visualization(tiny_cnn, make(), steps=6, image_size=8, recipe="cs231n", lr=30.0,
                                     jitter=0, progress=False, generator=torch.Generator().manual_seed(0))
    assert history.objective[-1] < history.objective[0]


def test_contract_and_clear_errors(tiny_cnn, caller_state, hook_count):
    tiny_cnn.train()
    tiny_cnn.fc.weight.requires_grad_(False)
    state = caller_state(tiny_cnn)
    class_visualization(tiny_cnn, 0, steps=2, image_size=8, progress=False)
    class_visualization(tiny_cnn, objectives.channel(tiny_cnn, "conv", 1), steps=2, image_size=8,
                        recipe="fourier", pad=1, jitter=1, final_jitter=0, progress=False)
    state.assert_unchanged()
    assert all(p.grad is None for p in tiny_cnn.parameters())
    with pytest.raises(IndexError, match="out of range: the model's classes are 0..4"):
        class_visualization(tiny_cnn, 5, steps=2, image_size=8, progress=False)
    with pytest.raises(KeyError, match="'conv'"):
        objectives.channel(tiny_cnn, "cnov", 0)
    # errors raised inside the loop, after the forward hooks were placed
    with pytest.raises(IndexError, match="layer 'conv' has 4 channels"):
        class_visualization(tiny_cnn, objectives.channel(tiny_cnn, "conv", 9), steps=2, image_size=8,
                            progress=False)
    with pytest.raises(ValueError, match="direction has 3 values"):
        class_visualization(tiny_cnn, objectives.direction(tiny_cnn, "flat", torch.ones(3)), steps=2,
                            image_size=8, progress=False)
    with pytest.raises(IndexError, match="outside the 8x8 feature map"):
        class_visualization(tiny_cnn, objectives.neuron(tiny_cnn, "conv", 0, position=(8, 0)), steps=2,
                            image_size=8, recipe="cs231n", progress=False)
    with pytest.raises(ValueError, match="unknown recipe 'lucid'"):
        class_visualization(tiny_cnn, 0, steps=2, recipe="lucid")
    state.assert_unchanged()
    assert hook_count(tiny_cnn) == 0


def test_class_visualization_step_checks_input(tiny_cnn, caller_state):
    x = torch.rand(1, 3, 8, 8, requires_grad=True)
    state = caller_state(tiny_cnn, x)
    class_visualization_step(tiny_cnn, x, 1)
    state.assert_unchanged()
    with pytest.raises(IndexError, match="class index 7"):
        class_visualization_step(tiny_cnn, x, 7)
    with pytest.raises(ValueError, match=r"shape \(N, 3, H, W\)"):
        class_visualization_step(tiny_cnn, x[0], 1)


def test_class_ranks_by_hand():
    weight = torch.zeros(3, 12)
    weight[0, 0], weight[1, 1], weight[2, 2] = 3.0, 2.0, 1.0
    model = linear_model(weight, torch.zeros(3))
    x = torch.zeros(2, 3, 2, 2)
    x[:, 0, 0, :3] = 1.0  # scores 3, 2, 1 for both images
    assert class_ranks(model, x, [2, 0], size=2).tolist() == [2, 0]
    with pytest.raises(IndexError, match="class index 3"):
        class_ranks(model, x, 3, size=2)


def test_stretch_contrast_by_hand():
    x = torch.full((1, 3, 2, 2), 0.5)
    x[0, 0, 0, 0], x[0, 1, 0, 0] = 0.6, 0.45
    out = stretch_contrast(x, percentile=100)
    assert out[0, 0, 0, 0].item() == pytest.approx(1.0) and out[0, 1, 0, 0].item() == pytest.approx(0.25)
    assert (out[0, 2] == 0.5).all()


def test_fourier_image_with_its_channels_standardised_by_hand():
    param = FourierImage((2, 3, 16, 16), decay=(1.0, 2.0, 2.0), scale=3.0, std=5.0, normalize="channels",
                         channel_std=(1.0, 0.5, 0.25), generator=torch.Generator().manual_seed(0))
    # one power per channel: at the frequency 1/16 the luminance is scaled by 16, the colour by 16^2
    column = param.spectrum_scale[0, :, 0, 1] / param.spectrum_scale[0, :, 0, 2]      # f = 1/16 over 2/16
    torch.testing.assert_close(column, torch.tensor([2.0, 4.0, 4.0]))
    torch.testing.assert_close(param.spectrum_scale[0, 0, 0, 1] / param.spectrum_scale[0, 1, 0, 1],
                               torch.tensor(1 / 16))
    d = param.decorrelated().detach()
    # each channel of each image: mean 0 and standard deviation 1, 0.5, 0.25, however large the coefficients
    torch.testing.assert_close(d.mean(dim=(2, 3)), torch.zeros(2, 3), atol=1e-5, rtol=0)
    torch.testing.assert_close(d.flatten(2).std(dim=2), torch.tensor([[1.0, 0.5, 0.25]] * 2))
    expected = torch.sigmoid(3.0 * torch.einsum("nchw,dc->ndhw", d, color_basis()))
    torch.testing.assert_close(param.image().detach(), expected)
    with pytest.raises(ValueError, match="normalize must be False, True or 'channels'"):
        FourierImage((1, 3, 8, 8), normalize="luminance")
    with pytest.raises(ValueError, match="decay must be a number or three numbers"):
        FourierImage((1, 3, 8, 8), decay=(1.5, 2.0))
    with pytest.raises(ValueError, match="channel_std must be >= 0"):
        FourierImage((1, 3, 8, 8), normalize="channels", channel_std=(1.0, -0.5, 0.5))


def test_smooth_color_recipe_keeps_its_colour_spread(tiny_cnn):
    assert DEFAULT_RECIPE == "clear"
    assert {"natural", "smooth_color", "fourier", "maco", "cs231n"} <= set(RECIPES)
    image, history = class_visualization(tiny_cnn, 2, steps=40, image_size=16, lr=0.2, progress=False,
                                         generator=torch.Generator().manual_seed(0), **SMALL_SMOOTH)
    assert tiny_cnn(image)[0].argmax() == 2 and history.objective[-1] < history.objective[0]
    # back to the decorrelated channels: the colour's spread stays 0.7 of the luminance's
    rgb = torch.logit(image.clamp(1e-6, 1 - 1e-6)) / 3.0
    d = torch.einsum("dc,nchw->ndhw", torch.linalg.inv(color_basis()), rgb)
    spread = d.flatten(2).std(dim=2)[0]
    torch.testing.assert_close(spread, torch.tensor([1.0, 0.7, 0.7]), rtol=1e-3, atol=1e-3)


def test_clear_recipe_runs_on_a_tiny_model(tiny_cnn, caller_state, hook_count):
    state = caller_state(tiny_cnn)
    image, history = class_visualization(tiny_cnn, 2, steps=30, image_size=16, lr=0.2, progress=False,
                                         generator=torch.Generator().manual_seed(0), **SMALL_CLEAR)
    assert image.shape == (1, 3, 16, 16) and 0 <= image.min() and image.max() <= 1
    assert history.steps == 30 and tiny_cnn(image)[0].argmax() == 2
    # the milk penalty acts: without it the same run leaves more pale speckle
    free, _ = class_visualization(tiny_cnn, 2, steps=30, image_size=16, lr=0.2, progress=False, milk=0,
                                  generator=torch.Generator().manual_seed(0), **SMALL_CLEAR)
    assert MilkPenalty(1.0).penalty(image) < 0.5 * MilkPenalty(1.0).penalty(free)
    state.assert_unchanged()
    assert hook_count(tiny_cnn) == 0
    again, _ = class_visualization(tiny_cnn, 2, steps=30, image_size=16, lr=0.2, progress=False,
                                   generator=torch.Generator().manual_seed(0), **SMALL_CLEAR)
    assert torch.equal(image, again)


def test_redirected_gradients_in_the_loop_leave_the_model_as_it_was(tiny_cnn, caller_state, hook_count):
    state = caller_state(tiny_cnn)
    seen = []

    def callback(step, image, value):
        seen.append("forward" in vars(tiny_cnn.relu))   # swapped for the whole loop, switched by a flag
        return False

    image, history = class_visualization(tiny_cnn, 1, steps=6, image_size=10, progress=False, redirect=0.5,
                                         callback=callback, generator=torch.Generator().manual_seed(0),
                                         **dict(SMALL_FOURIER, recipe="natural"))
    assert history.steps == 6 and seen == [True] * 6 and 0 <= image.min() and image.max() <= 1
    assert "forward" not in vars(tiny_cnn.relu)
    state.assert_unchanged()
    assert hook_count(tiny_cnn) == 0


def test_milk_penalty_charges_only_pale_speckle():
    index = torch.arange(16)
    checker = ((index[:, None] + index[None, :]) % 2).float()      # a checkerboard: the finest pattern
    white = torch.full((1, 3, 16, 16), 0.9)
    speckled = white.clone()
    speckled[0, 0] += 0.05 * checker                       # fine red/cyan speckle on white
    dark = speckled - 0.5                                  # the same speckle, dark (every channel < 0.5)
    penalty = MilkPenalty(1.0)
    assert penalty.penalty(white).item() == pytest.approx(0.0, abs=1e-6)      # clean white: free
    assert penalty.penalty(dark).item() == pytest.approx(0.0, abs=1e-12)      # speckle, not pale: free
    assert penalty.penalty(speckled).item() > 1e-3
    both = torch.cat([speckled, white])
    assert penalty.penalty(both).item() == pytest.approx(penalty.penalty(speckled).item(), rel=1e-4)
    assert MilkPenalty(3.0).penalty(speckled).item() == pytest.approx(3 * penalty.penalty(speckled).item())
    with pytest.raises(ValueError, match="weight must be >= 0"):
        MilkPenalty(-1.0)


def test_milk_penalty_blur_is_the_packages_gaussian_blur():
    from cs_utils.blur import gaussian_blur
    from cs_utils.blur import mirrored_blur as _separable_blur
    x = torch.rand(2, 2, 20, 24, generator=torch.Generator().manual_seed(0))
    for sigma in (1.0, 2.0):
        torch.testing.assert_close(_separable_blur(x, sigma), gaussian_blur(x, sigma), atol=1e-6, rtol=0)
