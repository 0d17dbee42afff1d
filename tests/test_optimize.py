import math

import pytest
import torch
import torch.nn.functional as F

from cs_utils.blur import gaussian_blur
from cs_utils.optimize import NormalizedGradient, normalized_direction, optimize_image
from cs_utils.parameterizations import FourierImage
from cs_utils.regularizers import ClipSmallGradients, ClipSmallPixels, GaussianBlur, L2Penalty, TVPenalty
from cs_utils.transforms import Compose, Jitter, Pad, RandomRotate, RandomScale


def class_score(model, target):
    return lambda x: -model(x)[:, target].sum()


def test_objective_improves_on_a_tiny_model(tiny_cnn, caller_state):
    init = torch.full((1, 3, 8, 8), 0.5)
    state = caller_state(tiny_cnn, init)
    before = tiny_cnn(init)[0, 2].item()
    image, history = optimize_image(class_score(tiny_cnn, 2), init, steps=10, lr=0.05, progress=False)
    assert tiny_cnn(image)[0, 2].item() > before + 0.05
    assert history.steps == 10 and len(history.loss) == 10 and history.loss[-1] < history.loss[0]
    assert not history.stopped_early and history.seconds > 0
    assert image.requires_grad is False and 0 <= image.min() and image.max() <= 1
    assert all(p.grad is None for p in tiny_cnn.parameters()), "no gradient may reach the model"
    state.assert_unchanged()


@pytest.mark.parametrize("optimizer", ["adam", "sgd", "lbfgs", NormalizedGradient(0.2, "l2"),
                                       NormalizedGradient(0.01, "sign")])
def test_every_optimizer_lowers_a_quadratic(optimizer):
    target = torch.rand(2, 3, 5, 5, generator=torch.Generator().manual_seed(1))
    init = torch.full_like(target, 0.5)

    def objective(x):
        return (x - target).pow(2).sum()

    _, history = optimize_image(objective, init, steps=15, optimizer=optimizer, progress=False)
    assert history.objective[-1] < 0.5 * history.objective[0]


def test_lbfgs_counts_evaluations_and_stops_at_the_budget():
    target = torch.rand(1, 3, 6, 6, generator=torch.Generator().manual_seed(0))
    calls = []

    def objective(x):
        calls.append(1)
        return (x - target).pow(4).sum()

    image, history = optimize_image(objective, torch.zeros_like(target), steps=7, optimizer="lbfgs",
                                    progress=False)
    assert len(calls) == history.steps <= 7
    assert history.loss[-1] < history.loss[0]


def test_normalized_direction_by_hand():
    g = torch.tensor([[[[3.0, -4.0]]], [[[1.0, 0.0]]]])  # two images
    torch.testing.assert_close(normalized_direction(g, "l2"), torch.tensor([[[[0.6, -0.8]]], [[[1.0, 0.0]]]]))
    torch.testing.assert_close(normalized_direction(g, "mean_abs"),
                               torch.tensor([[[[3 / 3.5, -4 / 3.5]]], [[[2.0, 0.0]]]]))
    torch.testing.assert_close(normalized_direction(g, "linf"),
                               torch.tensor([[[[0.75, -1.0]]], [[[1.0, 0.0]]]]))
    torch.testing.assert_close(normalized_direction(g, "sign"),
                               torch.tensor([[[[1.0, -1.0]]], [[[1.0, 0.0]]]]))
    with pytest.raises(ValueError, match="norm"):
        NormalizedGradient(0.1, "l3")


def test_a_normalized_step_moves_exactly_lr():
    init = torch.full((1, 1, 1, 2), 0.5)
    weights = torch.tensor([3.0, 4.0])
    image, _ = optimize_image(lambda x: -(x.flatten() * weights).sum(), init, steps=1,
                              optimizer=NormalizedGradient(0.1, "l2"), progress=False)
    torch.testing.assert_close(image.flatten(), torch.tensor([0.5 + 0.06, 0.5 + 0.08]))


def test_same_seed_same_image_and_transforms_follow_the_generator(tiny_cnn):
    init = torch.rand(1, 3, 12, 12, generator=torch.Generator().manual_seed(0))
    transforms = [Pad(2), Jitter(3, "crop"), RandomScale([0.9, 1.0, 1.1]), RandomRotate([-5, 0, 5])]

    def run(seed):
        return optimize_image(class_score(tiny_cnn, 1), init, steps=6, transforms=transforms,
                              generator=torch.Generator().manual_seed(seed), progress=False)[0]

    assert torch.equal(run(0), run(0))
    assert not torch.equal(run(0), run(1))


def test_jitter_roll_is_a_roll_within_range():
    x = torch.arange(36.0).reshape(1, 1, 6, 6)
    gen = torch.Generator().manual_seed(3)
    out = Jitter(2)(x, gen)
    shifts = [(dy, dx) for dy in range(-2, 3) for dx in range(-2, 3)
              if torch.equal(out, torch.roll(x, (dy, dx), dims=(2, 3)))]
    assert len(shifts) == 1
    assert torch.equal(Jitter(0)(x, gen), x)
    crop = Jitter(2, "crop")(x, gen)
    assert crop.shape == (1, 1, 4, 4)
    i, j = int(crop[0, 0, 0, 0]) // 6, int(crop[0, 0, 0, 0]) % 6
    assert torch.equal(crop, x[..., i:i + 4, j:j + 4]) and 0 <= i <= 2 and 0 <= j <= 2


def test_pad_scale_rotate_exact():
    x = torch.rand(2, 3, 4, 4)
    padded = Pad(1, value=0.5)(x)
    assert padded.shape == (2, 3, 6, 6) and torch.all(padded[..., 0, :] == 0.5)
    assert torch.equal(padded[..., 1:5, 1:5], x)
    torch.testing.assert_close(Pad(2, "reflect")(x), F.pad(x, (2, 2, 2, 2), mode="reflect"))
    assert torch.equal(RandomScale([1.0])(x), x)
    torch.testing.assert_close(RandomScale([2.0])(x),
                               F.interpolate(x, size=(8, 8), mode="bilinear", align_corners=False))
    assert torch.equal(RandomRotate([0])(x), x)
    torch.testing.assert_close(RandomRotate([90])(x), torch.rot90(x, 1, dims=(2, 3)), atol=1e-5, rtol=0)
    composed = Compose(Pad(1), RandomScale([2.0]))(x)
    assert composed.shape == (2, 3, 12, 12)


def test_gaussian_blur_of_a_delta_is_the_normalised_kernel():
    x = torch.zeros(1, 1, 9, 9)
    x[0, 0, 4, 4] = 1.0
    out = gaussian_blur(x, 1.0)
    t = torch.arange(-3.0, 4.0)
    k = torch.exp(-0.5 * t ** 2)
    k = k / k.sum()
    torch.testing.assert_close(out[0, 0, 1:8, 1:8], k[:, None] * k[None, :])
    assert out.sum().item() == pytest.approx(1.0, abs=1e-6)
    assert torch.equal(gaussian_blur(x, 0), x)


def test_blur_runs_every_k_steps():
    reg = GaussianBlur(1.0, every=3)
    x = torch.zeros(1, 1, 9, 9)
    x[0, 0, 4, 4] = 1.0
    copy = x.clone()
    reg.after_step(x, 0)
    assert torch.equal(x, copy)
    reg.after_step(x, 2)
    assert x[0, 0, 4, 4] < 0.5


def test_clip_small_pixels_and_gradients_by_hand():
    x = torch.full((1, 3, 2, 2), 0.5)
    x[0, :, 0, 0] = 1.0   # distance 0.866
    x[0, :, 0, 1] = 0.6   # distance 0.173
    x[0, :, 1, 0] = 0.0   # distance 0.866
    ClipSmallPixels(50).after_step(x, 0)   # median of (0.866, 0.173, 0.866, 0) = 0.52
    assert x[0, 0, 0, 1] == 0.5 and x[0, 0, 0, 0] == 1.0 and x[0, 0, 1, 0] == 0.0
    g = torch.tensor([[[[0.1, -0.2], [0.3, -0.4]]]])
    out = ClipSmallGradients(50).filter_grad(g, None, 0)
    assert torch.equal(out, torch.tensor([[[[0.0, 0.0], [0.3, -0.4]]]]))


def test_penalties_by_hand():
    x = torch.tensor([[[[0.0, 1.0]]]])
    assert L2Penalty(2.0).penalty(x).item() == pytest.approx(2.0 * (0.25 + 0.25))
    y = torch.tensor([[[[0.0, 1.0], [2.0, 0.0]]]])
    assert TVPenalty(0.5).penalty(y).item() == pytest.approx(0.5 * (1 + 4))


def test_l2_penalty_pulls_to_grey():
    init = torch.rand(1, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    image, _ = optimize_image(lambda x: x.sum() * 0, init, steps=30, optimizer="sgd", lr=0.1,
                              regularizers=[L2Penalty(1.0)], progress=False)
    assert (image - 0.5).abs().max() < 0.5 * (init - 0.5).abs().max()


def test_callback_stops_early():
    seen = []

    def callback(step, image, value):
        seen.append(step)
        return step == 2

    _, history = optimize_image(lambda x: x.sum(), torch.rand(1, 3, 4, 4), steps=10, callback=callback,
                                progress=False)
    assert seen == [0, 1, 2] and history.steps == 3 and history.stopped_early


def test_fourier_image_is_valid_and_seeded(tiny_cnn):
    def make(seed):
        return FourierImage((2, 3, 16, 12), decay=1.0, generator=torch.Generator().manual_seed(seed))

    img = make(0).image()
    assert img.shape == (2, 3, 16, 12) and 0 < img.min() and img.max() < 1
    assert torch.equal(img, make(0).image()) and not torch.equal(img, make(1).image())
    image, history = optimize_image(class_score(tiny_cnn, 3), parameterization=make(0), steps=8,
                                    progress=False)
    assert history.objective[-1] < history.objective[0] and image.shape == (2, 3, 16, 12)
    with pytest.raises(ValueError, match="raw pixels"):
        optimize_image(class_score(tiny_cnn, 3), parameterization=make(0), steps=2,
                       regularizers=[GaussianBlur(1.0)], progress=False)


def test_fourier_parameterisation_damps_high_frequencies():
    """A plain gradient step in the Fourier basis changes the image smoothly."""
    param = FourierImage((1, 3, 32, 32), generator=torch.Generator().manual_seed(0))
    image = param.image()
    noise = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    (grad,) = torch.autograd.grad((image * noise).sum(), param.parameters())
    with torch.no_grad():
        param.coefficients -= 0.01 * grad
    change = param.image() - image.detach()
    spectrum = torch.fft.rfft2(change).abs()
    low, high = spectrum[..., :4, :4].mean(), spectrum[..., 12:20, 12:].mean()
    assert low > 5 * high


def test_bad_arguments_raise_clear_errors(tiny_cnn):
    x = torch.rand(1, 3, 4, 4)
    with pytest.raises(ValueError, match="scalar"):
        optimize_image(lambda im: im, x, steps=1, progress=False)
    with pytest.raises(ValueError, match="init"):
        optimize_image(lambda im: im.sum(), steps=1, progress=False)
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        optimize_image(lambda im: im.sum(), torch.rand(3, 4, 4), steps=1, progress=False)
    with pytest.raises(ValueError, match="optimizer"):
        optimize_image(lambda im: im.sum(), x, steps=1, optimizer="adamw", progress=False)
    with pytest.raises(TypeError, match="Regularizer"):
        optimize_image(lambda im: im.sum(), x, steps=1, regularizers=[lambda im: im], progress=False)


def test_errors_inside_the_objective_leave_no_trace(tiny_cnn, caller_state):
    x = torch.rand(1, 3, 8, 8)
    state = caller_state(tiny_cnn, x)

    def objective(im):
        tiny_cnn(im)
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        optimize_image(objective, x, steps=3, progress=False)
    state.assert_unchanged()
    assert math.isfinite(float(x.sum()))


def test_lbfgs_objective_only_sees_pixels_in_range():
    seen = []
    target = torch.full((1, 3, 4, 4), 2.0)   # out of range: plain L-BFGS would step outside [0, 1]

    def objective(x):
        seen.append((float(x.detach().min()), float(x.detach().max())))
        return (x - target).pow(2).sum()

    image, history = optimize_image(objective, torch.full((1, 3, 4, 4), 0.5), steps=6, optimizer="lbfgs",
                                    progress=False)
    assert all(0.0 <= lo and hi <= 1.0 for lo, hi in seen)
    assert history.loss[-1] < history.loss[0] and image.max() == 1.0


def test_project_runs_after_every_step_in_place_or_returned():
    init = torch.full((1, 1, 2, 2), 0.5)
    ball = (0.45, 0.55)
    sign_steps = NormalizedGradient(0.1, "sign")
    for project in (lambda p: p.clamp_(*ball), lambda p: p.clamp(*ball)):
        seen = []
        image, _ = optimize_image(lambda x: -x.sum(), init, steps=3, optimizer=sign_steps, project=project,
                                  callback=lambda s, im, v, seen=seen: seen.append(im.max().item()),
                                  progress=False)
        assert seen == pytest.approx([0.55] * 3) and torch.allclose(image, torch.full_like(init, 0.55))
    with pytest.raises(ValueError, match="first-order"):
        optimize_image(lambda x: x.sum(), init, steps=2, optimizer="lbfgs", project=lambda p: p,
                       progress=False)
    with pytest.raises(ValueError, match="raw pixels"):
        optimize_image(lambda x: x.sum(), parameterization=FourierImage((1, 3, 4, 4)), steps=1,
                       project=lambda p: p, progress=False)
