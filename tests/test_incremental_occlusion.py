"""Incremental occlusion: every layer kind against plain forward passes of the occluded copies."""

import numpy as np
import pytest
import torch
from torch import nn

import cs_utils
from cs_utils import incremental_occlusion as I
from cs_utils.models import Conv2dSame, InputScaling, MBConv


def plain_probabilities(model, x, target, corners, patch, colours):
    """(N,) and (N, copies) target probabilities from one full forward pass per occluded copy."""
    ph, pw = patch
    with torch.no_grad():
        original = model(x).softmax(dim=1).gather(1, target[:, None])[:, 0]
        occluded = torch.empty(x.shape[0], len(corners), dtype=x.dtype)
        for i in range(x.shape[0]):
            copies = x[i:i + 1].repeat(len(corners), 1, 1, 1)
            for k, (top, left) in enumerate(corners):
                copies[k, :, top:top + ph, left:left + pw] = colours[i, :, None, None]
            occluded[i] = model(copies).softmax(dim=1)[:, target[i]]
    return original, occluded


def relative_error(got, expected):
    """max |got - expected| / max |expected|: the error relative to the largest value of the map."""
    return ((got - expected).abs().max() / expected.abs().max()).item()


def assert_matches_plain(model, x, target, window, stride, *, batch_size=None, fill=None, tolerance=1e-9):
    """The incremental drops equal the plain ones for every copy (float64 models: to rounding), with
    windows at every layer (fraction 2), whole maps at every layer (0) and the default choice."""
    model.eval()
    ph, pw = (window, window) if isinstance(window, int) else window
    corners = cs_utils.occlusion_windows(x.shape[2], x.shape[3], window, stride)
    colours = x.mean(dim=(2, 3)) if fill is None else torch.full((x.shape[0], 3), fill, dtype=x.dtype)
    target = torch.as_tensor(target).expand(x.shape[0])
    plain_base, plain_occluded = plain_probabilities(model, x, target, corners, (ph, pw), colours)
    assert (plain_base[:, None] - plain_occluded).abs().max() > 1e-6      # the patches change something
    for fraction in (2.0, 0.0, I.FULL_MAP_FRACTION):
        with torch.no_grad():
            base, occluded = I.incremental_occluded_probabilities(
                model, x, target, corners, (ph, pw), colours, batch_size=batch_size, fraction=fraction)
        assert relative_error(base[:, None] - occluded, plain_base[:, None] - plain_occluded) < tolerance
        torch.testing.assert_close(occluded, plain_occluded, rtol=tolerance, atol=tolerance)


def classifier(*layers, channels, classes=3):
    """``layers`` -> global average pool -> linear, in float64 with seeded random weights and
    batch-norm statistics (so folding the batch norm is really tested)."""
    torch.manual_seed(0)
    model = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, classes))
    model = model.double()
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
            nn.init.uniform_(module.weight, 0.5, 1.5)
            nn.init.uniform_(module.bias, -0.3, 0.3)
    return model.eval()


def image(n=1, size=(12, 12), seed=1):
    return torch.rand(n, 3, *size, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))


# --------------------------------------------------------------------------- where a patch reaches, by hand

def test_a_patch_footprint_grows_by_the_kernel_and_shrinks_by_the_stride():
    # 8x8 image, 2x2 patch at rows/cols 4..5. A 3x3 stride-2 SAME conv: 4 outputs, padding 0 before and
    # 1 after; output i reads rows 2i..2i+2, so outputs 1 (rows 2-4) and 2 (rows 4-6) see the patch.
    ops, _ = I._compile(classifier(Conv2dSame(3, 4, 3, stride=2), Conv2dSame(4, 4, 3), channels=4))
    first = I._Geometry(np.array([8, 8]), np.array([[4, 4]]), np.array([[6, 6]]), np.array([[4, 4]]),
                        np.array([2, 2]))
    steps, last = I._plan(ops[:1], first, chunk=1, fraction=2.0)
    out = steps[0][1]
    assert out.n.tolist() == [4, 4] and out.lo.tolist() == [[1, 1]] and out.hi.tolist() == [[3, 3]]
    # its input window: rows 2..6 (2 outputs x stride 2 + kernel 3 - 2 = 5 rows) of the padded image
    assert steps[0][2].shape == (1, 5, 5)
    # a 3x3 stride-1 conv grows [1, 3) by one on each side: [0, 4), the whole 4x4 map
    _, after = I._plan(ops, first, chunk=1, fraction=2.0)
    assert after.lo.tolist() == [[0, 0]] and after.hi.tolist() == [[4, 4]] and after.full


def test_windows_keep_one_size_and_stay_inside_the_map():
    geometry = I._placed(np.array([10, 10]), np.array([[0, 0], [8, 4]]), np.array([[3, 2], [10, 7]]), 2.0)
    assert geometry.size.tolist() == [3, 3]                    # the largest change: 3 rows, 3 columns
    assert geometry.start.tolist() == [[0, 0], [7, 4]]          # the second copy's rows 8..9 moved to 7..9
    assert I._placed(np.array([10, 10]), np.array([[0, 0]]), np.array([[8, 8]]), 0.5).full   # 64% of the map


# --------------------------------------------------------------------------- every layer kind vs plain passes

@pytest.mark.parametrize("kind", ["same_conv", "stride_2_same", "stride_2_odd_size", "zero_padding",
                                  "depthwise", "residual", "batch_norm_relu6", "input_scaling"])
def test_each_layer_kind_matches_the_plain_forward(kind):
    layers = {
        "same_conv": (Conv2dSame(3, 5, 3), 5),
        "stride_2_same": (nn.Sequential(Conv2dSame(3, 4, 3, stride=2), Conv2dSame(4, 6, 5, stride=2)), 6),
        "stride_2_odd_size": (nn.Sequential(Conv2dSame(3, 4, 5, stride=2), nn.ReLU()), 4),
        "zero_padding": (nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(4, 4, 3, stride=2)), 4),
        "depthwise": (nn.Sequential(Conv2dSame(3, 6, 1), Conv2dSame(6, 6, 5, groups=6)), 6),
        "residual": (nn.Sequential(Conv2dSame(3, 8, 3), MBConv(8, 8, 3, 1, 4), MBConv(8, 8, 5, 1, 2)), 8),
        "batch_norm_relu6": (nn.Sequential(Conv2dSame(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU6(),
                                           nn.BatchNorm2d(4), nn.Conv2d(4, 4, 3, padding="same")), 4),
        "input_scaling": (nn.Sequential(InputScaling((0.5, 0.4, 0.3), (0.2, 0.3, 0.4)), Conv2dSame(3, 4, 3)),
                          4),
    }
    body, channels = layers[kind]
    model = classifier(body, channels=channels)
    assert I.why_not_incremental(model) is None
    size = (13, 11) if kind == "stride_2_odd_size" else (12, 12)
    assert_matches_plain(model, image(size=size), 1, 3, 2)


def test_blocks_with_and_without_skip_and_a_sparse_stride():
    # MBConv with stride 2 (no skip), then a 1x1 stride-2 conv that never reads some changed pixels
    model = classifier(Conv2dSame(3, 8, 3, stride=2), MBConv(8, 16, 5, 2, 6), MBConv(16, 16, 3, 1, 6),
                       nn.Conv2d(16, 8, 1, stride=2), channels=8)
    assert_matches_plain(model, image(size=(32, 32)), 2, 4, 3)


@pytest.mark.parametrize("window, stride, fill, batch_size", [(3, 1, None, None), ((5, 2), (2, 3), 0.0, 7),
                                                             (12, 4, 1.0, 1), (1, 5, 0.25, 1000)])
def test_windows_strides_fills_and_batch_sizes(window, stride, fill, batch_size):
    model = classifier(Conv2dSame(3, 8, 3, stride=2), MBConv(8, 8, 3, 1, 3), Conv2dSame(8, 8, 3, stride=2),
                       channels=8)
    assert_matches_plain(model, image(n=2), [2, 0], window, stride, batch_size=batch_size, fill=fill)


# --------------------------------------------------------------------------- EfficientNet-Lite0

def photos(size):
    return torch.cat([cs_utils.load_image(sample.path, size) for sample in cs_utils.sample_images("photo")])


def test_lite0_maps_equal_the_plain_path_on_every_photo(lite0):
    x = photos(48)                                             # all 32 offline photos, small: a quick test
    with torch.no_grad():
        target = lite0(x).argmax(dim=1)
    options = dict(window=16, stride=8, progress=False)
    incremental = cs_utils.occlusion_map(lite0, x, target, incremental=True, **options)
    plain = cs_utils.occlusion_map(lite0, x, target, incremental=False, batch_size=25, **options)
    errors = [relative_error(incremental[i], plain[i]) for i in range(x.shape[0])]
    print(f"largest relative error over the photos: {max(errors):.2e}")
    assert x.shape[0] == 32 and max(errors) < 1e-4, f"largest relative error {max(errors):.2e}"
    assert min(plain[i].abs().max().item() for i in range(32)) > 1e-4    # no map is trivially zero


def test_lite0_at_224_px_equals_plain_forward_passes(lite0):
    x = cs_utils.load_image(cs_utils.sample_images("photo")[0].path, 224)
    corners = cs_utils.occlusion_windows(224, 224, 16, 8)       # the benchmark's 729 patches
    picked = corners[::31] + [(0, 208), (208, 0), (208, 208), (112, 112)]   # 28, the image corners included
    assert len(picked) == 28 and (0, 0) in picked
    target = torch.tensor([lite0(x).argmax().item()])
    colours = x.mean(dim=(2, 3))
    with torch.no_grad():
        base, occluded = I.incremental_occluded_probabilities(lite0, x, target, picked, (16, 16), colours)
    plain_base, plain_occluded = plain_probabilities(lite0, x, target, picked, (16, 16), colours)
    drops, plain_drops = base[:, None] - occluded, plain_base[:, None] - plain_occluded
    assert plain_drops.abs().max() > 0.01                       # some patches matter
    print(f"relative error at 224 px: {relative_error(drops, plain_drops):.2e}")
    assert relative_error(drops, plain_drops) < 1e-4


# --------------------------------------------------------------------------- the fallback

class Square(nn.Module):
    def forward(self, x):
        return x * x


def test_a_model_with_an_unknown_module_takes_the_plain_path():
    model = classifier(Conv2dSame(3, 4, 3), Square(), channels=4).float()
    assert I.why_not_incremental(model) == "1 (Square)"
    x, options = image(n=2).float(), dict(window=4, stride=4, progress=False)
    fallback = cs_utils.occlusion_map(model, x, 1, **options)
    plain = cs_utils.occlusion_map(model, x, 1, incremental=False, **options)
    torch.testing.assert_close(fallback, plain, rtol=0, atol=0)
    assert fallback.abs().max() > 0
    with pytest.raises(ValueError, match=r"cannot run this model: 1 \(Square\)"):
        cs_utils.occlusion_map(model, x, 1, incremental=True, **options)
    with pytest.raises(TypeError, match="incremental must be"):
        cs_utils.occlusion_map(model, x, 1, incremental="yes", **options)


def test_what_the_incremental_path_cannot_run_is_named():
    def reason(model):
        return I.why_not_incremental(model)

    ok = classifier(Conv2dSame(3, 4, 3), channels=4)
    handle = ok[0].register_forward_hook(lambda *args: None)   # a hook it would skip
    assert reason(ok) == "0 has forward hooks, which the incremental path would not call"
    handle.remove()
    assert reason(ok) is None
    assert reason(nn.Sequential(nn.Flatten(), nn.Linear(12, 2))) == "0 (Flatten)"   # no pool before it
    assert reason(nn.Sequential(nn.Conv2d(3, 4, 3))).startswith("the model has no global average pool")
    assert reason(nn.Sequential(nn.Conv2d(3, 4, 3, dilation=2), nn.AdaptiveAvgPool2d(1))) == \
        "a convolution with dilation or non-zero padding mode"
    assert reason(nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Softmax(dim=1))) == \
        "1 (Softmax after the global pool)"
    assert reason(cs_utils.models.TorchvisionClassifier(nn.Sequential())).startswith(
        "the model is a TorchvisionClassifier")
    with pytest.raises(ValueError, match="cannot run this model"):
        I.incremental_occluded_probabilities(nn.Sequential(Square()), image(), torch.tensor([0]), [(0, 0)],
                                             (2, 2), torch.zeros(1, 3))


def test_the_callers_model_and_images_are_left_alone(caller_state):
    model = classifier(Conv2dSame(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU6(), channels=4).float().train()
    x = image(n=2).float().requires_grad_(True)
    state = caller_state(model, x)
    running = model[1].running_mean.clone()
    heat = cs_utils.occlusion_map(model, x, 0, window=4, stride=2, incremental=True, progress=False)
    state.assert_unchanged()
    assert model.training and torch.equal(model[1].running_mean, running)   # batch norm statistics untouched
    assert not heat.requires_grad and not heat.is_inference() and heat.shape == (2, 12, 12)


def test_bad_arguments_raise_clear_errors():
    model = classifier(Conv2dSame(3, 4, 3), channels=4)
    x, t, colours = image(), torch.tensor([0]), torch.zeros(1, 3, dtype=torch.float64)
    run = I.incremental_occluded_probabilities
    with pytest.raises(ValueError, match="inside the 12x12 image"):
        run(model, x, t, [(10, 0)], (4, 4), colours)
    with pytest.raises(ValueError, match="no corners"):
        run(model, x, t, [], (4, 4), colours)
    with pytest.raises(ValueError, match="one patch colour per image"):
        run(model, x, t, [(0, 0)], (4, 4), torch.zeros(2, 3))
    with pytest.raises(ValueError, match="one per image"):
        run(model, x, torch.tensor([0, 1]), [(0, 0)], (4, 4), colours)
    with pytest.raises(ValueError, match="batch_size"):
        run(model, x, t, [(0, 0)], (4, 4), colours, batch_size=0)
    base, occluded = run(model, x.clone().requires_grad_(True), t, [(0, 0), (8, 8)], (4, 4), colours)
    assert occluded.shape == (1, 2) and not occluded.requires_grad and not base.requires_grad
