"""CAM, Grad-CAM, integrated gradients and SmoothGrad: hand-computed answers on tiny models."""

import functools

import pytest
import torch
import torch.nn.functional as F
from models_by_hand import linear_model, unusable_image
from torch import nn

import cs_utils
from cs_utils import attribution as A


def cam_net():
    """1x1 conv (f0 = R, f1 = G - B) -> ReLU -> global average pool -> linear (2 classes), by hand."""
    net = nn.Sequential()
    net.add_module("conv", nn.Conv2d(3, 2, 1))
    net.add_module("relu", nn.ReLU())
    net.add_module("pool", nn.AdaptiveAvgPool2d(1))
    net.add_module("flat", nn.Flatten())
    net.add_module("fc", nn.Linear(2, 2))
    with torch.no_grad():
        net.conv.weight.copy_(torch.tensor([[1.0, 0, 0], [0, 1, -1]]).view(2, 3, 1, 1))
        net.conv.bias.zero_()
        net.fc.weight.copy_(torch.tensor([[2.0, -1.0], [0.5, 3.0]]))
        net.fc.bias.copy_(torch.tensor([0.1, -0.2]))
    return net.eval()


# R, G, B of a 2x2 image: f0 = R, f1 = relu(G - B) = [[0, 0.5], [0, 0]]  (G - B = [[0, .5], [-.5, 0]])
CAM_X = torch.tensor([[[1.0, 0.0], [0.5, 0.25]],
                      [[0.0, 1.0], [0.5, 0.0]],
                      [[0.0, 0.5], [1.0, 0.0]]])[None]
CAM_0 = torch.tensor([[2.0, -0.5], [1.0, 0.5]])         # 2 f0 - f1
CAM_1 = torch.tensor([[0.5, 1.5], [0.25, 0.125]])       # 0.5 f0 + 3 f1


class Cubic(nn.Module):
    """Class 0: sum of x^3 over all pixels; class 1: sum of x. No parameters."""

    def forward(self, x):
        return torch.stack([x.pow(3).sum(dim=(1, 2, 3)), x.sum(dim=(1, 2, 3))], dim=1)


class Failing(nn.Module):
    """``net``'s layers under the same names, run in order up to the layer ``after``; then it raises."""

    def __init__(self, net, after="relu"):
        super().__init__()
        for name, module in net.named_children():
            self.add_module(name, module)
        self.after = after

    def forward(self, x):
        for name, module in self.named_children():
            x = module(x)
            if name == self.after:
                raise ZeroDivisionError("inside forward")
        return x


class WithUnused(nn.Module):
    """``net`` plus a convolution that forward() never calls."""

    def __init__(self, net):
        super().__init__()
        self.net, self.unused = net, nn.Conv2d(4, 4, 1)

    def forward(self, x):
        return self.net(x)


# --------------------------------------------------------------------------- CAM

def test_cam_by_hand():
    x = CAM_X.expand(2, -1, -1, -1)
    cam = cs_utils.class_activation_map(cam_net(), x, [0, 1], upsample=False)
    torch.testing.assert_close(cam, torch.stack([CAM_0, CAM_1]))
    # the bias is left out: mean(CAM) + bias is the score
    scores = cam_net()(x)
    torch.testing.assert_close(cam.mean(dim=(1, 2)) + torch.tensor([0.1, -0.2]), scores[[0, 1], [0, 1]])
    # at the image size already: upsampling changes nothing
    torch.testing.assert_close(cs_utils.class_activation_map(cam_net(), x, [0, 1]), cam)


def test_cam_upsamples_bilinearly_to_the_image_size(tiny_cnn):
    strided = nn.Sequential(nn.Conv2d(3, 4, 3, stride=4, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                            nn.Flatten(), nn.Linear(4, 3)).eval()
    x = torch.rand(2, 3, 16, 12)
    low = cs_utils.class_activation_map(strided, x, 2, upsample=False)
    assert low.shape == (2, 4, 3)
    full = cs_utils.class_activation_map(strided, x, 2)
    torch.testing.assert_close(full, F.interpolate(low[:, None], size=(16, 12), mode="bilinear",
                                                   align_corners=False)[:, 0])


class TwoLinears(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv, self.pool = nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1)
        self.hidden, self.fc = nn.Linear(4, 4), nn.Linear(4, 2)

    def forward(self, x):
        return self.fc(self.hidden(self.pool(self.conv(x)).flatten(1)).relu())


class ScaledOutput(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv, self.pool, self.fc = nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Linear(4, 2)

    def forward(self, x):
        return self.fc(self.pool(self.conv(x)).flatten(1)) * 2


@pytest.mark.parametrize("model, words", [
    (linear_model(torch.ones(2, 3 * 4 * 4)), "has no nn.AdaptiveAvgPool2d"),
    (nn.Sequential(nn.Conv2d(3, 2, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten()), "has no nn.Linear"),
    (TwoLinears(), "does not read the pooled features"),
    (ScaledOutput(), "output is not the output of the last linear layer"),
])
def test_cam_says_what_network_it_needs(model, words, caller_state, hook_count):
    x = torch.rand(1, 3, 4, 4)
    state = caller_state(model, x)
    with pytest.raises(ValueError, match=words) as info:
        cs_utils.class_activation_map(model, x, 0)
    assert "global average pool" in str(info.value) and "nn.Linear" in str(info.value)
    state.assert_unchanged()
    assert hook_count(model) == 0


# --------------------------------------------------------------------------- Grad-CAM

def test_grad_cam_at_the_pool_input_is_relu_cam_over_positions_by_hand():
    net = cam_net()
    x = CAM_X.expand(2, -1, -1, -1)
    # dS/df_k(i, j) = w_k / 4 everywhere: alpha_k = w_k / 4, Grad-CAM = ReLU(CAM) / 4
    expected = torch.stack([CAM_0, CAM_1]).relu() / 4
    torch.testing.assert_close(cs_utils.grad_cam(net, x, [0, 1]), expected)
    torch.testing.assert_close(cs_utils.grad_cam(net, x, [0, 1], layer="relu"), expected)


def test_grad_cam_before_the_relu_by_hand():
    # At "conv" the gradient passes the ReLU only where conv > 0 (strictly):
    # f0 = R = [[1, 0], [.5, .25]]: 3 of 4 positions -> alpha_0 = w0 / 4 * 3/4 = 2 * 3/16 = 0.375
    # G - B = [[0, .5], [-.5, 0]]: 1 of 4 positions  -> alpha_1 = w1 / 4 * 1/4 = -1/16
    # class 0: ReLU(0.375 R - 0.0625 (G - B)) = [[.375, 0], [.1875 + .03125, .09375]]
    cam = cs_utils.grad_cam(cam_net(), CAM_X, 0, layer="conv")
    torch.testing.assert_close(cam[0], torch.tensor([[0.375, 0.0], [0.21875, 0.09375]]))


def test_grad_cam_upsamples_after_the_relu(tiny_cnn):
    strided = nn.Sequential(nn.Conv2d(3, 4, 3, stride=2, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                            nn.Flatten(), nn.Linear(4, 3)).eval()
    x = torch.rand(3, 3, 8, 10, generator=torch.Generator().manual_seed(2))
    low = cs_utils.grad_cam(strided, x, 1, layer="0", upsample=False)
    assert low.shape == (3, 4, 5) and (low >= 0).all()
    torch.testing.assert_close(cs_utils.grad_cam(strided, x, 1, layer="0"),
                               F.interpolate(low[:, None], size=(8, 10), mode="bilinear",
                                             align_corners=False)[:, 0])


def test_grad_cam_equals_cam_up_to_one_factor_on_lite0(lite0):
    x = torch.cat([cs_utils.load_image("coffee", 224), cs_utils.load_image("imagenet_00", 224)])
    target = [cs_utils.imagenet_index("espresso"), 243]
    cam = cs_utils.class_activation_map(lite0, x, target, upsample=False)
    gradcam = cs_utils.grad_cam(lite0, x, target, upsample=False)
    assert cam.shape == gradcam.shape == (2, 7, 7)
    assert (cam < 0).any(), "a map with negative parts tests the ReLU"
    # one factor 1 / (h * w) = 1/49 for every position of every image
    torch.testing.assert_close(gradcam, cam.relu() / 49, rtol=1e-4, atol=1e-6)
    # the default layer is the input of the global pool: the output of `head`
    assert A.global_pool(lite0) == "pool.0"
    torch.testing.assert_close(cs_utils.grad_cam(lite0, x, target, layer="head", upsample=False), gradcam)
    full = cs_utils.grad_cam(lite0, x, target)
    torch.testing.assert_close(full, F.interpolate(cam.relu()[:, None] / 49, size=(224, 224), mode="bilinear",
                                                   align_corners=False)[:, 0], rtol=1e-4, atol=1e-6)


def test_grad_cam_layer_errors_leave_no_hook(tiny_cnn, caller_state, hook_count):
    x = torch.rand(1, 3, 8, 8)
    state = caller_state(tiny_cnn, x)
    with pytest.raises(ValueError, match=r"\(N, C, h, w\); layer 'fc' gives \(1, 5\)"):
        cs_utils.grad_cam(tiny_cnn, x, 0, layer="fc")
    with pytest.raises(KeyError, match="'relu'"):
        cs_utils.grad_cam(tiny_cnn, x, 0, layer="reul")
    with pytest.raises(RuntimeError, match="layer 'unused' did not run"):
        cs_utils.grad_cam(WithUnused(tiny_cnn), x, 0, layer="unused")
    with pytest.raises(ValueError, match="has none; name a layer"):
        cs_utils.grad_cam(linear_model(torch.ones(5, 3 * 8 * 8)), x, 0)
    state.assert_unchanged()
    assert hook_count(tiny_cnn) == 0


def test_grad_cam_survives_an_inplace_operation_after_the_layer():
    net = cam_net()
    net.relu = nn.ReLU(inplace=True)
    torch.testing.assert_close(cs_utils.grad_cam(net, CAM_X, 0, layer="conv")[0],
                               torch.tensor([[0.375, 0.0], [0.21875, 0.09375]]))


def test_guided_grad_cam_by_hand():
    # guided backprop of class 0: the gradient at the ReLU output is (w0, w1) / 4 = (0.5, -0.25);
    # only channel 0 (positive) passes, where R > 0: dR = 0.5 * [[1, 0], [1, 1]], dG = dB = 0.
    # Grad-CAM of class 0: ReLU(CAM_0) / 4 = [[0.5, 0], [0.25, 0.125]].
    result = cs_utils.guided_grad_cam(cam_net(), CAM_X, 0)
    expected = torch.zeros(1, 3, 2, 2)
    expected[0, 0] = torch.tensor([[0.25, 0.0], [0.125, 0.0625]])
    torch.testing.assert_close(result, expected)


# --------------------------------------------------------------------------- integrated gradients

def test_integrated_gradients_of_a_linear_model_is_x_times_w():
    w = torch.randn(2, 3 * 4 * 4, generator=torch.Generator().manual_seed(0))
    model = linear_model(w, torch.tensor([0.3, -1.0]))
    x = torch.rand(3, 3, 4, 4, generator=torch.Generator().manual_seed(1))
    result = cs_utils.integrated_gradients(model, x, [1, 0, 1], steps=3)
    torch.testing.assert_close(result.maps, x * w[[1, 0, 1]].view(3, 3, 4, 4))
    assert result.completeness_error.shape == (3,) and (result.completeness_error < 1e-5).all()
    baseline = torch.rand(1, 3, 4, 4, generator=torch.Generator().manual_seed(2))
    other = cs_utils.integrated_gradients(model, x, 0, baseline=baseline, steps=1)
    torch.testing.assert_close(other.maps, (x - baseline) * w[0].view(3, 4, 4))


@pytest.mark.parametrize("steps", [1, 2, 4, 7])
def test_integrated_gradients_uses_the_midpoint_rule_by_hand(steps):
    # S = sum x^3, black baseline: dS/dx along the path is 3 a^2 x^2, exact IG = x^3.
    # Midpoint rule: x^3 * 3/steps * sum_k ((k + 1/2) / steps)^2 = x^3 * (1 - 1/(4 steps^2)).
    x = torch.tensor([1.0, 0.5, 0.0, 0.8, 0.2, 0.6]).view(2, 3, 1, 1)
    result = cs_utils.integrated_gradients(Cubic(), x, 0, steps=steps)
    factor = 1 - 1 / (4 * steps ** 2)
    torch.testing.assert_close(result.maps, x.pow(3) * factor)
    torch.testing.assert_close(result.completeness_error, torch.full((2,), 1 / (4 * steps ** 2)))


def test_integrated_gradients_batches_image_by_image(tiny_cnn):
    x = torch.rand(3, 3, 8, 8, generator=torch.Generator().manual_seed(5))
    target = torch.tensor([4, 0, 2])
    results = [cs_utils.integrated_gradients(tiny_cnn, x, target, steps=5, batch_size=b, baseline="noise")
               for b in (None, 1, 4, 1000)]
    for other in results[1:]:
        torch.testing.assert_close(other.maps, results[0].maps)
        torch.testing.assert_close(other.completeness_error, results[0].completeness_error)
    alone = cs_utils.integrated_gradients(tiny_cnn, x[1:2], 0, steps=5, baseline="noise")
    assert not torch.allclose(alone.maps[0], results[0].maps[1])   # the noise baseline is drawn for the batch
    baseline = A.baseline_image(x, "noise")
    alone = cs_utils.integrated_gradients(tiny_cnn, x[1:2], 0, steps=5, baseline=baseline[1])
    torch.testing.assert_close(alone.maps[0], results[0].maps[1])


def test_integrated_gradients_counts_its_passes(tiny_cnn):
    calls = []
    handle = tiny_cnn.register_forward_pre_hook(lambda module, args: calls.append(args[0].shape[0]))
    try:
        cs_utils.integrated_gradients(tiny_cnn, torch.rand(2, 3, 8, 8), 1, steps=5, batch_size=4)
    finally:
        handle.remove()
    assert calls == [4, 4, 2, 4]      # 10 path points in batches of 4, then x and its baseline at once


def test_integrated_gradients_is_complete_on_lite0_at_64_steps(lite0):
    x = cs_utils.load_image("coffee", 224)
    result = cs_utils.integrated_gradients(lite0, x, cs_utils.imagenet_index("espresso"), steps=64)
    assert result.maps.shape == (1, 3, 224, 224)
    assert result.completeness_error.item() < 0.05
    assert not result.maps.requires_grad


def test_baseline_images():
    x = torch.rand(2, 3, 20, 16, generator=torch.Generator().manual_seed(0))
    assert torch.equal(A.baseline_image(x), torch.zeros_like(x))
    assert torch.equal(A.baseline_image(x, "black"), torch.zeros_like(x))
    assert torch.equal(A.baseline_image(x, 0.5), torch.full_like(x, 0.5))
    noise = A.baseline_image(x, "noise", generator=torch.Generator().manual_seed(4))
    assert torch.equal(noise, torch.rand(2, 3, 20, 16, generator=torch.Generator().manual_seed(4)))
    assert torch.equal(A.baseline_image(x, "noise"), A.baseline_image(x, "noise"))    # default seed 0
    blur = A.baseline_image(x, "blur")
    assert blur.shape == x.shape and 0 <= blur.min() and blur.max() <= 1
    assert blur.std() < x.std() / 4                                          # sigma 20/16 px: detail gone
    torch.testing.assert_close(blur.mean(), x.mean(), atol=0.02, rtol=0)
    flat = torch.full((1, 3, 9, 9), 0.3)
    torch.testing.assert_close(A.baseline_image(flat, "blur"), flat)         # a flat image stays flat
    torch.testing.assert_close(A.baseline_image(flat[:, :, :2, :2], "blur"), flat[:, :, :2, :2])  # tiny
    one = torch.rand(3, 20, 16)
    assert torch.equal(A.baseline_image(x, one), one.expand(2, -1, -1, -1))
    assert A.baseline_image(x.double(), one).dtype == torch.float64
    with pytest.raises(ValueError, match="'blur', 'noise'"):
        A.baseline_image(x, "white")
    with pytest.raises(ValueError, match="grey baseline"):
        A.baseline_image(x, 1.5)
    with pytest.raises(ValueError, match="baseline must hold values in"):
        A.baseline_image(x, one * 2)
    with pytest.raises(ValueError, match="shape"):
        A.baseline_image(x, torch.rand(3, 3, 20, 16))
    with pytest.raises(TypeError, match="baseline must be"):
        A.baseline_image(x, [0.0])


# --------------------------------------------------------------------------- SmoothGrad

def test_smooth_grad_of_a_linear_model_is_abs_w_for_any_noise():
    w = torch.randn(2, 3 * 4 * 4, generator=torch.Generator().manual_seed(0))
    model = linear_model(w)
    x = torch.rand(2, 3, 4, 4)
    expected = w[1].view(3, 4, 4).abs().amax(dim=0).expand(2, 4, 4)
    for noise in (0.0, 0.15, 1.0):
        torch.testing.assert_close(cs_utils.smooth_grad(model, x, 1, noise=noise, samples=3), expected)
    torch.testing.assert_close(cs_utils.smooth_grad(model, x, 1, samples=3, squared=True), expected ** 2)


def noisy_copies(images, target):
    """An 'explainer' that returns its input: SmoothGrad of it is the mean of the noisy copies."""
    return images


def test_smooth_grad_noise_by_hand():
    x = torch.rand(2, 3, 5, 5, generator=torch.Generator().manual_seed(1)) * 0.5 + 0.25
    x[1] = x[1] * 0.2                     # a darker image with a smaller range: smaller noise
    samples, noise = 3, 0.1
    mean = cs_utils.smooth_grad(Cubic(), x, 0, samples=samples, noise=noise, batch_size=2,
                                explain=lambda model, images, target: noisy_copies(images, target),
                                generator=torch.Generator().manual_seed(7))
    generator = torch.Generator().manual_seed(7)
    expected = torch.zeros_like(x)
    for i in range(2):                    # copy by copy, image by image
        sigma = noise * (x[i].max() - x[i].min())
        for _ in range(samples):
            expected[i] += (x[i] + sigma * torch.randn(3, 5, 5, generator=generator)).clamp(0, 1)
    torch.testing.assert_close(mean, expected / samples)


def test_smooth_grad_batches_all_copies_and_does_not_depend_on_batch_size(tiny_cnn):
    sizes = []

    def recording(model, images, target):
        sizes.append(images.shape[0])
        return cs_utils.saliency_map(model, images, target)

    x = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(3))
    batched = cs_utils.smooth_grad(tiny_cnn, x, [4, 0], samples=5, batch_size=4, explain=recording)
    assert sizes == [4, 4, 2]
    for b in (1, 3, 1000):
        again = cs_utils.smooth_grad(tiny_cnn, x, [4, 0], samples=5, batch_size=b)
        torch.testing.assert_close(again, batched)
    one = cs_utils.smooth_grad(tiny_cnn, x[:1], 4, samples=5)
    torch.testing.assert_close(one[0], batched[0])     # image 0's copies come first in the same order


def test_smooth_grad_passes_one_target_per_copy(tiny_cnn):
    seen = []

    def recording(model, images, target):
        seen.extend(target.tolist())
        return cs_utils.saliency_map(model, images, target)

    cs_utils.smooth_grad(tiny_cnn, torch.rand(2, 3, 8, 8), [4, 1], samples=3, batch_size=2, explain=recording)
    assert seen == [4, 4, 4, 1, 1, 1]


def test_smooth_grad_takes_any_explainer(tiny_cnn):
    x = torch.rand(2, 3, 8, 8)
    assert cs_utils.smooth_grad(tiny_cnn, x, 1, samples=2, explain=cs_utils.grad_cam).shape == (2, 8, 8)
    ig = functools.partial(cs_utils.integrated_gradients, steps=2)
    assert cs_utils.smooth_grad(tiny_cnn, x, 1, samples=2, explain=ig).shape == (2, 3, 8, 8)
    layer = cs_utils.smooth_grad(tiny_cnn, x, ("relu", 2), samples=2, explain=cs_utils.guided_backprop)
    assert layer.shape == (2, 3, 8, 8)


def test_smooth_grad_rejects_bad_settings(tiny_cnn):
    x = torch.rand(1, 3, 8, 8)
    with pytest.raises(ValueError, match="noise"):
        cs_utils.smooth_grad(tiny_cnn, x, 0, noise=-0.1)
    with pytest.raises(ValueError, match="samples"):
        cs_utils.smooth_grad(tiny_cnn, x, 0, samples=0)
    with pytest.raises(ValueError, match="batch_size"):
        cs_utils.smooth_grad(tiny_cnn, x, 0, batch_size=0)
    with pytest.raises(TypeError, match="explain"):
        cs_utils.smooth_grad(tiny_cnn, x, 0, explain="saliency")
    with pytest.raises(ValueError, match="steps"):
        cs_utils.integrated_gradients(tiny_cnn, x, 0, steps=0)


# --------------------------------------------------------------------------- every technique

def _techniques():
    """name -> call(model, x, target, generator); each returns maps or a tuple whose first item is."""
    return {
        "class_activation_map": lambda m, x, t, g: cs_utils.class_activation_map(m, x, t),
        "grad_cam": lambda m, x, t, g: cs_utils.grad_cam(m, x, t),
        "grad_cam_layer": lambda m, x, t, g: cs_utils.grad_cam(m, x, t, layer="conv"),
        "guided_grad_cam": lambda m, x, t, g: cs_utils.guided_grad_cam(m, x, t),
        "integrated_gradients": lambda m, x, t, g: cs_utils.integrated_gradients(m, x, t, steps=3),
        "integrated_gradients_noise": lambda m, x, t, g: cs_utils.integrated_gradients(
            m, x, t, steps=3, baseline="noise", generator=g),
        "integrated_gradients_blur": lambda m, x, t, g: cs_utils.integrated_gradients(
            m, x, t, steps=3, baseline="blur"),
        "smooth_grad": lambda m, x, t, g: cs_utils.smooth_grad(m, x, t, samples=3, generator=g),
        "smooth_grad_squared": lambda m, x, t, g: cs_utils.smooth_grad(m, x, t, samples=3, squared=True,
                                                                       generator=g, batch_size=2),
    }


TECHNIQUES = sorted(_techniques())


def _maps(result):
    return result[0] if isinstance(result, tuple) else result


def run(name, model, x, target=1, seed=0):
    return _techniques()[name](model, x, target, torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("name", TECHNIQUES)
def test_batched_with_one_target_per_image_equals_one_by_one(tiny_cnn, name):
    x = torch.rand(3, 3, 8, 8, generator=torch.Generator().manual_seed(4))
    target = torch.tensor([4, 0, 2])
    batched = _maps(run(name, tiny_cnn, x, target))
    assert batched.shape[0] == 3 and batched.shape[-2:] == (8, 8)
    if "noise" in name or "smooth" in name:
        return    # the noise of image i depends on the images before it (tested above)
    for i in range(3):
        torch.testing.assert_close(_maps(run(name, tiny_cnn, x[i:i + 1], int(target[i])))[0], batched[i])
    torch.testing.assert_close(_maps(run(name, tiny_cnn, x, [4, 0, 2])), batched)


@pytest.mark.parametrize("name", TECHNIQUES)
def test_caller_state_is_left_alone_and_no_graph_is_left(tiny_cnn, caller_state, name):
    tiny_cnn.train()                       # a caller's model in train mode with trainable weights
    x = torch.rand(2, 3, 8, 8, requires_grad=True)
    state = caller_state(tiny_cnn, x)
    result = run(name, tiny_cnn, x)
    state.assert_unchanged()
    assert all(p.grad is None for p in tiny_cnn.parameters()), "gradients were written into the model"
    for tensor in (result if isinstance(result, tuple) else (result,)):
        assert not tensor.requires_grad and tensor.grad_fn is None and not tensor.is_inference()
        assert tensor.dtype == x.dtype and torch.isfinite(tensor).all()
    assert tiny_cnn.training


@pytest.mark.parametrize("name", TECHNIQUES)
def test_same_seed_same_map(tiny_cnn, name):
    x = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(6))
    first, again = _maps(run(name, tiny_cnn, x, seed=3)), _maps(run(name, tiny_cnn, x, seed=3))
    assert torch.equal(first, again)
    if "noise" in name or "smooth_grad" in name:
        assert not torch.equal(first, _maps(run(name, tiny_cnn, x, seed=4)))


@pytest.mark.parametrize("name", TECHNIQUES)
@pytest.mark.parametrize("bad, words", [("nan", "NaN"), ("inf", "infinite"), ("empty", "empty batch"),
                                        ("meta", "meta device"), ("range", r"\[0, 1\]")])
def test_unusable_images_are_refused(tiny_cnn, caller_state, hook_count, name, bad, words):
    x = unusable_image(bad)
    state = caller_state(tiny_cnn)
    before = x.clone() if bad != "meta" else None
    with pytest.raises(ValueError, match=words):
        run(name, tiny_cnn, x)
    state.assert_unchanged()
    if before is not None:
        torch.testing.assert_close(x, before, rtol=0, atol=0, equal_nan=True)
    assert hook_count(tiny_cnn) == 0


@pytest.mark.parametrize("name", TECHNIQUES)
def test_float64_images_with_a_float32_model(tiny_cnn, caller_state, name):
    x64 = torch.rand(2, 3, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    state = caller_state(tiny_cnn, x64)
    out64 = run(name, tiny_cnn, x64)
    state.assert_unchanged()
    assert _maps(out64).dtype == torch.float64
    out32 = run(name, tiny_cnn, x64.float())
    torch.testing.assert_close(_maps(out64), _maps(out32).double(), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", TECHNIQUES)
@pytest.mark.parametrize("target, error, words", [
    (5, IndexError, "out of range"),
    (-1, IndexError, "negative"),
    (2.0, TypeError, "class index"),
    ([1, 2, 3], ValueError, "one per image"),
])
def test_bad_targets_raise_clear_errors(tiny_cnn, caller_state, hook_count, name, target, error, words):
    x = torch.rand(2, 3, 8, 8)
    state = caller_state(tiny_cnn, x)
    with pytest.raises(error, match=words):
        run(name, tiny_cnn, x, target)
    state.assert_unchanged()
    assert hook_count(tiny_cnn) == 0


@pytest.mark.parametrize("name", TECHNIQUES)
def test_hooks_are_removed_after_an_exception_in_forward(tiny_cnn, hook_count, name):
    failing = Failing(tiny_cnn, after="pool")
    with pytest.raises(ZeroDivisionError):
        run(name, failing, torch.rand(1, 3, 8, 8))
    assert hook_count(failing) == 0


def test_works_inside_no_grad(tiny_cnn):
    x = torch.rand(1, 3, 8, 8)
    expected = {name: _maps(run(name, tiny_cnn, x)) for name in TECHNIQUES}
    with torch.no_grad():
        for name in TECHNIQUES:
            torch.testing.assert_close(_maps(run(name, tiny_cnn, x)), expected[name])


def test_the_package_never_imports_captum():
    import ast
    from pathlib import Path

    for path in sorted((Path(cs_utils.__file__).parent).glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            assert not any(name.split(".")[0] == "captum" for name in names), f"{path.name} imports captum"


def test_the_default_batch_size_is_measured_once_and_kept(tiny_cnn):
    from cs_utils.explainers import GRADIENT_BATCH_SIZES
    from cs_utils.explainers import gradient_batch_size as _batch_size

    class Counting(torch.nn.Module):
        def __init__(self, net):
            super().__init__()
            self.net, self.calls = net, 0

        def forward(self, x):
            self.calls += 1
            return self.net(x)

    model = Counting(tiny_cnn)
    x = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    chosen = _batch_size(None, model, x, 64)
    measured = model.calls
    assert chosen in GRADIENT_BATCH_SIZES and measured >= 3          # a warm-up and one pass per size
    assert _batch_size(None, model, x, 64) == chosen and model.calls == measured   # kept
    assert _batch_size(5, model, x, 64) == 5 and model.calls == measured          # given: not measured
    assert _batch_size(None, model, x, 6) == 4                                    # too few images to compare
    maps = cs_utils.integrated_gradients(tiny_cnn, x, 1, steps=16).maps
    given = cs_utils.integrated_gradients(tiny_cnn, x, 1, steps=16, batch_size=3).maps
    torch.testing.assert_close(maps, given)
