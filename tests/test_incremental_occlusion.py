"""Incremental inference (cs_utils.engine.incremental_occlusion): every layer kind against plain forward
passes of the occluded copies; the network's scores for any images; occlusion_map on it."""

import numpy as np
import pytest
import torch
from torch import nn

import cs_utils
from cs_utils.engine import incremental_occlusion as I
from cs_utils.engine import network_ops
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


def incremental_probabilities(model, x, target, corners, patch, colours, *, batch_size=None,
                              fraction=I.FULL_MAP_FRACTION):
    """The same numbers from :class:`I.IncrementalNetwork`, asked as the occlusion loop asks it: the
    copies built in full, ``batch_size`` at a time (batches mixing the images), softmax probabilities."""
    ph, pw = patch
    net = I.IncrementalNetwork(model, x, fraction=fraction)
    copies, rows = [], []
    for i in range(x.shape[0]):
        for top, left in corners:
            copy = x[i].clone()
            copy[:, top:top + ph, left:left + pw] = colours[i, :, None, None]
            copies.append(copy)
            rows.append(i)
    copies, size = torch.stack(copies), batch_size or I.INCREMENTAL_BATCH_SIZE
    with torch.no_grad():
        original = net(x).softmax(dim=1).gather(1, target[:, None])[:, 0]
        scores = torch.cat([net(copies[s:s + size]) for s in range(0, len(copies), size)])
    occluded = scores.softmax(dim=1)[torch.arange(len(rows)), target[rows]]
    return original, occluded.view(x.shape[0], len(corners))


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
            base, occluded = incremental_probabilities(
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
    model = classifier(Conv2dSame(3, 4, 3, stride=2), Conv2dSame(4, 4, 3), channels=4)
    ops, _ = network_ops.compile_ops(model)
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
        base, occluded = incremental_probabilities(lite0, x, target, picked, (16, 16), colours)
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
        I.IncrementalNetwork(nn.Sequential(Square()), image())


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
    with pytest.raises(ValueError, match="batch of images"):
        I.IncrementalNetwork(model, image()[0])
    with pytest.raises(ValueError, match="batch of images"):
        I.IncrementalNetwork(model, image()[:0])
    with pytest.raises(ValueError, match="fraction"):
        I.IncrementalNetwork(model, image(), fraction=-1.0)


# --------------------------------------------------------------------------- a network, nothing more

def test_the_network_gives_the_models_scores_for_any_images():
    """Originals, one patch, two patches far apart, a change of a whole image, images of the other
    reference and of no reference, in one batch: the model's scores, each from the right path."""
    model = classifier(Conv2dSame(3, 8, 3, stride=2), MBConv(8, 8, 3, 1, 3), Conv2dSame(8, 8, 3, stride=2),
                       channels=8)
    x = image(n=2, size=(16, 16))
    net = I.IncrementalNetwork(model, x)
    patch, spots, second = x[0].clone(), x[0].clone(), x[1].clone()
    patch[:, 4:8, 5:9] = 0.5
    spots[:, 0:2, 0:2], spots[:, 13:16, 12:16] = 0.0, 1.0          # one box holds both: most of the image
    second[1, 10:12, 3:7] += 0.25
    other = image(n=1, size=(16, 16), seed=9)[0]                    # like neither reference
    batch = torch.stack([x[1], patch, spots, second, other, x[0]])
    with torch.no_grad():
        torch.testing.assert_close(net(batch), model(batch), rtol=1e-9, atol=1e-9)
        torch.testing.assert_close(net(batch[1:2]), model(batch[1:2]), rtol=1e-9, atol=1e-9)
        torch.testing.assert_close(net(x[:, :, :8]), model(x[:, :, :8]))      # another shape: the model
    grad_x = patch[None].clone().requires_grad_(True)
    scores = net(grad_x)                                         # a graph asked for: the model itself
    assert scores.grad_fn is not None
    torch.testing.assert_close(scores.detach(), model(grad_x).detach())
    assert not net(batch).requires_grad


def test_occlusion_map_runs_its_own_loop_on_the_network(monkeypatch):
    """The engine computes scores only: occlusion_map's loop builds every copy and asks the network for
    its scores, so a stub of the loop is a stub, whatever the engine can do."""
    model = classifier(Conv2dSame(3, 4, 3), channels=4).float()
    x = image(n=1).float()
    seen = []
    forward = I.IncrementalNetwork.forward
    monkeypatch.setattr(I.IncrementalNetwork, "forward", lambda net, images: seen.append(images.shape[0])
                        or forward(net, images))
    heat = cs_utils.occlusion_map(model, x, 1, window=4, stride=4, batch_size=4, progress=False)
    assert seen == [1, 4, 4, 1]             # the image, then 9 copies 4 at a time
    plain = cs_utils.occlusion_map(model, x, 1, window=4, stride=4, incremental=False, progress=False)
    torch.testing.assert_close(heat, plain)


def test_torchs_private_global_hook_check_is_still_what_the_engine_calls():
    """cs_utils.engine.network_ops calls torch.nn.modules.module._has_any_global_hook, a private
    function torch may change without notice: pin its name and its answers."""
    from torch.nn.modules import module as torch_module

    has_hook = getattr(torch_module, "_has_any_global_hook", None)
    assert callable(has_hook), "torch.nn.modules.module._has_any_global_hook is gone: network_ops needs it"
    assert not has_hook()
    handle = torch.nn.modules.module.register_module_forward_hook(lambda module, args, out: None)
    try:
        assert has_hook()
    finally:
        handle.remove()
    assert not has_hook()
