import os

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import cs_utils
from cs_utils.models import (
    CONTENT_LAYER,
    STYLE_LAYERS,
    Conv2dSame,
    EfficientNetLite,
    InputScaling,
    has_same_padding,
    reflect_pad,
    torchvision_cache_path,
)


def _foolbox_batch(size):
    photos = [s for s in cs_utils.sample_images() if s.name.startswith("imagenet_")]
    x = torch.cat([cs_utils.load_image(s.name, size) for s in photos])
    y = torch.tensor([s.label for s in photos])
    return x, y


# ----------------------------------------------------------------- accuracy (acceptance)

def test_lite0_foolbox_accuracy(lite0):
    x, y = _foolbox_batch(224)
    assert len(y) == 20
    with torch.no_grad():
        top5 = lite0(x).topk(5, dim=1).indices
    top1_correct = int((top5[:, 0] == y).sum())
    top5_correct = int((top5 == y[:, None]).any(1).sum())
    assert top1_correct >= 16, f"top-1 {top1_correct}/20"
    assert top5_correct == 20, f"top-5 {top5_correct}/20"


@pytest.mark.parametrize("name,size", [("efficientnet_lite1", 240), ("efficientnet_lite2", 260)])
def test_lite1_lite2_foolbox_accuracy(name, size):
    model = cs_utils.load_model(name)
    assert model.native_image_size == size
    x, y = _foolbox_batch(size)
    with torch.no_grad():
        top5 = model(x).topk(5, dim=1).indices
    assert int((top5[:, 0] == y).sum()) >= 16
    assert int((top5 == y[:, None]).any(1).sum()) == 20


def test_coffee_is_espresso(lite0):
    x = cs_utils.load_image("coffee", 224)
    with torch.no_grad():
        probs = lite0(x).softmax(1)[0]
    assert cs_utils.imagenet_label(int(probs.argmax())) == "espresso"
    assert probs.max() > 0.5


# ----------------------------------------------------------------- architecture

@pytest.mark.parametrize("name,blocks,last", [("efficientnet_lite0", 16, 320),
                                              ("efficientnet_lite1", 21, 320),
                                              ("efficientnet_lite2", 21, 352)])
def test_block_layout(name, blocks, last):
    model = cs_utils.load_model(name)
    assert len(model.blocks) == blocks
    assert model.blocks[-1].project[0].out_channels == last
    assert model.stem[0].out_channels == 32 and model.head[0].out_channels == 1280
    assert model.blocks[0].expand is None and model.blocks[1].expand is not None
    assert all(bn.eps == 1e-3 for bn in model.modules() if isinstance(bn, nn.BatchNorm2d))


def test_activations_are_out_of_place_relu6_modules(lite0):
    relus = [m for m in lite0.modules() if isinstance(m, nn.ReLU6)]
    # stem + head + (expand, depthwise) per block except block 0 which has no expansion
    assert len(relus) == 2 + 2 * len(lite0.blocks) - 1
    assert all(not m.inplace for m in relus)
    assert not any(isinstance(m, (nn.SiLU, nn.ReLU)) for m in lite0.modules())
    assert len({id(m) for m in relus}) == len(relus), "activation modules must not be shared"


def test_hooks_see_every_activation(lite0):
    names = [n for n, m in lite0.named_modules() if isinstance(m, nn.ReLU6)]
    with cs_utils.hooks.capture_activations(lite0, names) as acts, torch.no_grad():
        lite0(torch.rand(1, 3, 64, 64))
    assert set(acts) == set(names)
    assert all(a.min() >= 0 and a.max() <= 6 for a in acts.values())


def test_same_padding_matches_hand_computation():
    conv = Conv2dSame(1, 1, 3, stride=2)
    # TensorFlow SAME: out = ceil(n / s); pad_total = (out - 1) * s + k - n, extra at the end.
    assert conv.same_padding(224, 0) == (0, 1)
    assert conv.same_padding(5, 0) == (1, 1)
    assert Conv2dSame(1, 1, 5, stride=2).same_padding(28, 1) == (1, 2)
    assert Conv2dSame(1, 1, 5, stride=1).same_padding(7, 0) == (2, 2)
    x = torch.randn(1, 1, 6, 7)
    expected = F.conv2d(F.pad(x, (1, 1, 0, 1)), conv.weight, stride=2)
    assert conv(x).shape == (1, 1, 3, 4)
    torch.testing.assert_close(conv(x), expected)
    # stride 1: symmetric padding applied by the convolution itself
    conv1 = Conv2dSame(1, 1, 5, stride=1)
    torch.testing.assert_close(conv1(x), F.conv2d(F.pad(x, (2, 2, 2, 2)), conv1.weight))
    # stride 2 on an odd size (5 x 9): symmetric, padded by the convolution; on 5 x 8, mixed
    odd = torch.randn(2, 1, 5, 9)
    torch.testing.assert_close(conv(odd), F.conv2d(F.pad(odd, (1, 1, 1, 1)), conv.weight, stride=2))
    assert conv(odd).shape == (2, 1, 3, 5)
    mixed = torch.randn(1, 1, 5, 8)
    torch.testing.assert_close(conv(mixed), F.conv2d(F.pad(mixed, (0, 1, 1, 1)), conv.weight, stride=2))


def test_has_same_padding_finds_conv2d_same_anywhere(lite0):
    assert has_same_padding(lite0)
    assert has_same_padding(nn.Sequential(nn.ReLU(), nn.Sequential(Conv2dSame(3, 2, 3, stride=2))))
    assert not has_same_padding(nn.Sequential(nn.Conv2d(3, 2, 3, padding=1), nn.ReLU()))
    assert not has_same_padding(nn.Identity())


def test_reflect_pad_mirrors_every_border_by_hand():
    x = torch.arange(12.0).reshape(1, 1, 3, 4)       # rows 0..3, 4..7, 8..11
    y = reflect_pad(x, 2)
    assert y.shape == (1, 1, 7, 8)
    assert y[0, 0, 2].tolist() == [2, 1, 0, 1, 2, 3, 2, 1]     # the first row, mirrored at both ends
    assert y[0, 0, :, 2].tolist() == [8, 4, 0, 4, 8, 4, 0]     # the first column, mirrored at both ends
    assert torch.equal(y[..., 2:5, 2:6], x)
    assert reflect_pad(x, 0) is x and reflect_pad(x, 0, same_padding=False) is x
    with pytest.raises(ValueError, match="pad"):
        reflect_pad(x, -1)


@pytest.mark.parametrize("size, pad, padded", [
    ((16, 16), 0, (17, 17)),      # 16 -> 16 * 1 + 1: one more row and column
    ((33, 20), 0, (33, 33)),      # 33 = 16 * 2 + 1 stays; 20 + 13 = 33
    ((10, 10), 3, (17, 17)),      # 10 + 2 * 3 = 16, + 1
    ((40, 256), 4, (49, 273)),    # 40 + 8 + 1 = 49 = 16 * 3 + 1; 256 + 8 + 9 = 273 = 16 * 17 + 1
])
def test_reflect_pad_for_same_padding_gives_16k_plus_1(size, pad, padded):
    x = torch.rand(1, 3, *size)
    y = reflect_pad(x, pad, same_padding=True)
    assert tuple(y.shape[-2:]) == padded
    assert torch.equal(y[..., pad:pad + size[0], pad:pad + size[1]], x)   # the extra rows go after
    assert reflect_pad(x, pad).shape[-2:] == (size[0] + 2 * pad, size[1] + 2 * pad)


def test_reflect_pad_extra_rows_mirror_the_bottom_and_right():
    x = torch.rand(1, 3, 10, 10)
    y = reflect_pad(x, 3, same_padding=True)           # 3 before, 3 + 1 after
    assert y.shape == (1, 3, 17, 17)
    assert torch.equal(y[..., 13, 3:13], x[..., 8, :]) and torch.equal(y[..., 16, 3:13], x[..., 5, :])
    assert torch.equal(y[..., 3:13, 16], x[..., :, 5]) and torch.equal(y[..., 0, 3:13], x[..., 3, :])
    assert reflect_pad(torch.rand(1, 3, 17, 33), 0, same_padding=True).shape == (1, 3, 17, 33)


def test_at_16k_plus_1_four_stride_2_same_convolutions_pad_both_sides_equally():
    for k in (3, 5):
        conv = Conv2dSame(1, 1, k, stride=2)
        for size in (17, 33, 65, 225):
            for _ in range(4):
                before, after = conv.same_padding(size, 0)
                assert before == after, (k, size)
                size = -(-size // 2)
    # an even size puts the odd pixel after: the bottom/right border the extra rows fix
    assert Conv2dSame(1, 1, 3, stride=2).same_padding(16, 0) == (0, 1)


def test_same_padding_networks_see_an_odd_size():
    x = torch.rand(1, 3, 40, 256)
    y = reflect_pad(x, 4, same_padding=True)
    assert y.shape[-2] % 16 == 1 and y.shape[-1] % 16 == 1
    assert torch.equal(y[..., 4:44, 4:260], x)
    assert reflect_pad(x, 0) is x
    small = reflect_pad(torch.rand(1, 3, 6, 6), 4, same_padding=True)  # too small to mirror: edges repeat
    assert small.shape == (1, 3, 17, 17)


def test_style_layers_are_defined_once_and_name_layers_of_lite0(lite0):
    from cs_utils import fast_style, style

    assert cs_utils.STYLE_LAYERS is cs_utils.models.STYLE_LAYERS is STYLE_LAYERS
    assert cs_utils.models.CONTENT_LAYER is CONTENT_LAYER
    for module in (style, fast_style):   # used there, defined and listed only in models
        assert not {"STYLE_LAYERS", "CONTENT_LAYER"} & set(module.__all__)
    names = set(cs_utils.hooks.layer_names(lite0))
    assert set(STYLE_LAYERS) <= names and CONTENT_LAYER in names


@pytest.mark.parametrize("shape", [(1, 3, 97, 131), (2, 3, 33, 40), (1, 3, 300, 200)])
def test_any_input_size(lite0, shape):
    with torch.no_grad():
        out = lite0(torch.rand(shape))
    assert out.shape == (shape[0], 1000) and torch.isfinite(out).all()


def test_features_are_penultimate(lite0):
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad(), cs_utils.hooks.capture_activations(lite0, "pool") as acts:
        scores = lite0(x)
        feats = lite0.features(x)
    assert feats.shape == (2, 1280)
    torch.testing.assert_close(acts["pool"], feats)
    torch.testing.assert_close(lite0.fc(feats), scores)


def test_weights_load_strictly_and_match_checkpoint(lite0):
    from cs_utils.models import _lite_weights_path

    raw = torch.load(_lite_weights_path("efficientnet_lite0"), map_location="cpu", weights_only=True)
    torch.testing.assert_close(lite0.stem[0].weight, raw["_conv_stem.weight"])
    torch.testing.assert_close(lite0.blocks[7].depthwise[1].running_var, raw["_blocks.7._bn1.running_var"])
    torch.testing.assert_close(lite0.fc.bias, raw["_fc.bias"])
    params = sum(p.numel() for p in lite0.parameters())
    assert params == sum(v.numel() for k, v in raw.items() if "running" not in k and "num_batches" not in k)


def test_model_is_eval_frozen_on_requested_device(lite0):
    assert not lite0.training and all(not m.training for m in lite0.modules())
    assert not any(p.requires_grad for p in lite0.parameters())
    assert next(lite0.parameters()).device.type == "cpu"
    assert lite0.name == "efficientnet_lite0"


def test_input_scaling_maps_unit_range_to_symmetric(lite0):
    x = torch.tensor([0.0, 0.25, 1.0]).view(1, 3, 1, 1)
    torch.testing.assert_close(lite0.input_scaling(x).flatten(), torch.tensor([-1.0, -0.5, 1.0]))


def test_gradients_reach_the_input(lite0):
    x = torch.rand(1, 3, 64, 64, requires_grad=True)
    lite0(x)[0, 3].backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


# ----------------------------------------------------------------- bad input

def test_unknown_model_name_suggests():
    with pytest.raises(ValueError, match="efficientnet_lite0"):
        cs_utils.load_model("efficientnet_lite9")
    with pytest.raises(ValueError, match="choose one of"):
        cs_utils.load_model("resnet50")


@pytest.mark.parametrize("bad,match", [
    (torch.rand(3, 32, 32), r"\(N, 3, H, W\)"),
    (torch.rand(1, 1, 32, 32), r"\(N, 3, H, W\)"),
    (torch.rand(1, 3, 32, 32) * 255, "divide 0..255"),
    ((torch.rand(1, 3, 32, 32) - 0.5) * 5, r"\[0, 1\]"),
    (torch.randint(0, 255, (1, 3, 32, 32), dtype=torch.uint8), "float"),
])
def test_bad_input_raises(lite0, bad, match):
    with pytest.raises(ValueError, match=match):
        lite0(bad)


def test_range_check_can_be_switched_off():
    scaling = InputScaling((0.5,) * 3, (0.5,) * 3, check_range=False)
    assert scaling(torch.full((1, 3, 2, 2), 3.0)).max() == 5.0


def test_untrained_architecture_builds_without_weights():
    model = EfficientNetLite()
    assert sum(p.numel() for p in model.parameters()) > 4_000_000


# ----------------------------------------------------------------- torchvision models (offline)

def test_torchvision_model_without_cached_weights_says_how_to_fetch(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(FileNotFoundError) as info:
        cs_utils.load_model("vgg16")
    message = str(info.value)
    assert "download=True" in message and str(tmp_path) in message
    assert not any(tmp_path.rglob("*.pth")), "nothing may be downloaded by default"


def test_torchvision_model_loads_from_local_cache(tmp_path, monkeypatch):
    import torchvision

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    torch.manual_seed(0)
    reference = torchvision.models.squeezenet1_1(weights=None).eval()
    path = torchvision_cache_path("squeezenet1_1")
    os.makedirs(os.path.dirname(path))
    torch.save(reference.state_dict(), path)
    model = cs_utils.load_model("squeezenet1_1")
    assert not model.training and not any(p.requires_grad for p in model.parameters())
    assert not any(getattr(m, "inplace", False) for m in model.modules())
    x = torch.rand(2, 3, 96, 96)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    with torch.no_grad():
        torch.testing.assert_close(model(x), reference((x - mean) / std))
    assert "features.0" in cs_utils.hooks.layer_names(model)


def _squeezenet_file(folder, state, *, hash_ok=True):
    """``state`` saved as a torchvision-style file ``squeezenet1_1-<sha256 prefix>.pth`` in ``folder``."""
    import hashlib

    tmp = folder / "weights.tmp"
    torch.save(state, tmp)
    digest = hashlib.sha256(tmp.read_bytes()).hexdigest()[:8]
    prefix = digest if hash_ok else ("0" if digest[0] != "0" else "1") + digest[1:]
    path = folder / f"squeezenet1_1-{prefix}.pth"
    tmp.rename(path)
    return path


@pytest.fixture
def local_weights_url(tmp_path, monkeypatch):
    """Point load_model's download of squeezenet1_1 at a local file (no network): returns a setter."""
    from types import SimpleNamespace

    from cs_utils import models

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))

    def use(path):
        monkeypatch.setattr(models, "_torchvision_weights", lambda name: SimpleNamespace(url=path.as_uri()))
    return use


def test_download_checks_the_published_hash_and_loads_tensors_only(tmp_path, local_weights_url):
    import torchvision

    torch.manual_seed(1)
    reference = torchvision.models.squeezenet1_1(weights=None).eval()
    source = tmp_path / "served"
    source.mkdir()
    local_weights_url(_squeezenet_file(source, reference.state_dict()))
    model = cs_utils.load_model("squeezenet1_1", download=True)
    x = torch.rand(1, 3, 64, 64)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    with torch.no_grad():
        torch.testing.assert_close(model(x), reference((x - mean) / std))
    assert len(list((tmp_path / "torch").rglob("squeezenet1_1-*.pth"))) == 1   # kept in the cache


def test_download_with_a_wrong_hash_keeps_nothing(tmp_path, local_weights_url):
    import torchvision

    source = tmp_path / "served"
    source.mkdir()
    local_weights_url(_squeezenet_file(source, torchvision.models.squeezenet1_1(weights=None).state_dict(),
                                       hash_ok=False))
    with pytest.raises(RuntimeError, match="published hash"):
        cs_utils.load_model("squeezenet1_1", download=True)
    assert not list((tmp_path / "torch").rglob("*.pth")), "a file that failed its hash check was kept"


class _Payload:
    """Unpickling this would run code; ``weights_only=True`` must refuse it."""

    def __reduce__(self):
        return (print, ("code ran while loading weights",))


def test_downloaded_file_that_is_not_only_tensors_is_refused(tmp_path, local_weights_url):
    import pickle

    source = tmp_path / "served"
    source.mkdir()
    local_weights_url(_squeezenet_file(source, {"features.0.weight": _Payload()}))
    with pytest.raises(pickle.UnpicklingError):
        cs_utils.load_model("squeezenet1_1", download=True)
