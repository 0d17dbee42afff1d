"""Fast (feed-forward) style transfer: a transformer network trained with a perceptual loss.

* :class:`TransformerNet` (Johnson et al. 2016, "Perceptual losses for real-time style
  transfer"): reflection padding, two stride-2 downsampling convolutions, residual blocks,
  an upsample-then-convolve decoder (no checkerboard artifacts of transposed convolutions).
  ``norm="instance"`` (Ulyanov et al. 2016), ``"batch"``, or ``"conditional"``: conditional
  instance norm (Dumoulin et al. 2017), one learned scale and shift per style, so one
  network holds several styles and mixes them.
* training: :mod:`cs_utils.fast_style_training` (``train_fast_style``, one process) and
  :mod:`cs_utils.style_training` (a folder of photos, ``torchrun``);
* :func:`stylize`: apply a trained network to a batch of any size; :func:`load_fast_style`
  loads the weights committed under ``data/fast_style/``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .data import DATA_DIR
from .history import History
from .hooks import evaluating
from .saved_nets import load_net, save_net
from .validation import validate_image

__all__ = [
    "FAST_STYLE_DIR",
    "HELD_OUT_PHOTOS",
    "ConditionalInstanceNorm",
    "TransformerNet",
    "instance_norm",
    "load_fast_style",
    "save_fast_style",
    "stylize",
]

#: Where the committed weights live (``load_fast_style(name)`` reads ``name.pt`` from here).
FAST_STYLE_DIR = DATA_DIR / "fast_style"

#: Photos never used in training, so notebooks can show the networks generalising.
HELD_OUT_PHOTOS = ("astronaut", "chelsea", "coffee", "grace_hopper", "imagenet_03", "imagenet_11")

# --------------------------------------------------------------------------- normalisation

def instance_norm(x: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Normalise each channel of each image to zero mean and unit variance over its pixels.

    ``y[n, c] = (x[n, c] - mean(x[n, c])) / sqrt(var(x[n, c]) + eps)``, with the biased
    variance (divide by H*W), as ``torch.nn.functional.instance_norm``. Unlike batch norm,
    the statistics come from one image alone, so the contrast of the content image is
    removed at test time exactly as in training (Ulyanov et al. 2016).

    x: (N, C, H, W) float tensor. Returns a tensor of the same shape.
    """
    if not isinstance(x, torch.Tensor) or x.dim() != 4:
        raise ValueError(f"instance_norm expects a (N, C, H, W) tensor, got "
                         f"{tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__}")
    if x.shape[2] * x.shape[3] < 2:
        raise ValueError(f"instance_norm needs more than one pixel per channel, got {tuple(x.shape)}")
    ### BEGIN SOLUTION
    mean = x.mean(dim=(2, 3), keepdim=True)
    var = (x - mean).pow(2).mean(dim=(2, 3), keepdim=True)
    return (x - mean) / torch.sqrt(var + eps)
    ### END SOLUTION


class ConditionalInstanceNorm(nn.Module):
    """Instance norm with one learned scale and shift per style (Dumoulin et al. 2017).

    ``forward(x, style_weights)``: ``style_weights`` (N, num_styles) holds, for each image,
    how much of each style to use (one-hot for a single style; any convex combination mixes
    them). The scale and shift used are the weighted sums of the per-style parameters:
    ``gamma = style_weights @ weight``, ``beta = style_weights @ bias``.
    """

    def __init__(self, num_features: int, num_styles: int, eps: float = 1e-5):
        super().__init__()
        if num_styles < 1:
            raise ValueError(f"num_styles must be >= 1, got {num_styles}")
        self.num_features, self.num_styles, self.eps = num_features, num_styles, eps
        self.weight = nn.Parameter(torch.ones(num_styles, num_features))
        self.bias = nn.Parameter(torch.zeros(num_styles, num_features))

    def forward(self, x: torch.Tensor, style_weights: torch.Tensor) -> torch.Tensor:
        if style_weights.shape != (x.shape[0], self.num_styles):
            raise ValueError(f"style_weights must have shape (N, num_styles) = ({x.shape[0]}, "
                             f"{self.num_styles}), got {tuple(style_weights.shape)}")
        style_weights = style_weights.to(x.dtype)
        gamma = style_weights @ self.weight
        beta = style_weights @ self.bias
        y = F.instance_norm(x, eps=self.eps)
        return y * gamma[:, :, None, None] + beta[:, :, None, None]

    def extra_repr(self) -> str:
        return f"{self.num_features}, num_styles={self.num_styles}, eps={self.eps}"


NORMS = ("instance", "batch", "conditional")


class _Norm(nn.Module):
    """One normalisation layer of the chosen kind, all called as ``norm(x, style_weights)``."""

    def __init__(self, channels: int, kind: str, num_styles: int):
        super().__init__()
        self.kind = kind
        if kind == "instance":
            self.norm = nn.InstanceNorm2d(channels, affine=True)
        elif kind == "batch":
            self.norm = nn.BatchNorm2d(channels)
        else:
            self.norm = ConditionalInstanceNorm(channels, num_styles)

    def forward(self, x, style_weights):
        if self.kind == "conditional":
            return self.norm(x, style_weights)
        return self.norm(x)


class _ConvNorm(nn.Module):
    """(optional nearest x2 upsampling) -> reflection pad -> conv -> norm -> (ReLU)."""

    def __init__(self, cin, cout, kernel, stride, norm, num_styles, relu=True, upsample=False):
        super().__init__()
        self.upsample, self.relu = upsample, relu
        self.pad = nn.ReflectionPad2d(kernel // 2)
        self.conv = nn.Conv2d(cin, cout, kernel, stride)
        self.norm = _Norm(cout, norm, num_styles)

    def forward(self, x, style_weights):
        if self.upsample:
            x = F.interpolate(x, scale_factor=2, mode="nearest")
        x = self.norm(self.conv(self.pad(x)), style_weights)
        return F.relu(x) if self.relu else x


class _Residual(nn.Module):
    def __init__(self, channels, norm, num_styles):
        super().__init__()
        self.a = _ConvNorm(channels, channels, 3, 1, norm, num_styles)
        self.b = _ConvNorm(channels, channels, 3, 1, norm, num_styles, relu=False)

    def forward(self, x, style_weights):
        return x + self.b(self.a(x, style_weights), style_weights)


class TransformerNet(nn.Module):
    """Image transformation network of Johnson et al. (2016), slimmed for CPUs.

    Encoder: 9x9 conv (``channels[0]``), two 3x3 stride-2 convs (``channels[1]``,
    ``channels[2]``); ``num_residual`` residual blocks at 1/4 resolution; decoder: two
    (nearest x2 upsample, 3x3 conv) layers and a 9x9 conv to RGB; a sigmoid keeps the output
    in [0, 1]. Every conv uses reflection padding. Any input size works: when it is not a
    multiple of 4 the decoder's output is a few pixels larger and is cropped to the input's size.

    ``norm``: ``"instance"`` (default), ``"batch"`` or ``"conditional"`` (conditional
    instance norm over ``style_names``: pass ``style=`` to ``forward``).
    Johnson's network has channels (32, 64, 128) and 5 residual blocks; the default here, (12, 24,
    48) and 3 blocks, stylizes 512x512 in a fraction of a second on a CPU and trains in an hour.
    """

    def __init__(self, norm: str = "instance", *, channels: Sequence[int] = (12, 24, 48),
                 num_residual: int = 3, outer_kernel: int = 9, style_names: Sequence[str] = ()):
        super().__init__()
        if norm not in NORMS:
            raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")
        channels = tuple(int(c) for c in channels)
        if len(channels) != 3 or min(channels) < 1:
            raise ValueError(f"channels must be three positive ints, e.g. (16, 32, 64), got {channels}")
        style_names = tuple(style_names)
        if norm == "conditional" and not style_names:
            raise ValueError("a conditional network needs style_names (one per style it holds)")
        if len(set(style_names)) != len(style_names):
            raise ValueError(f"style_names must be distinct, got {style_names}")
        if outer_kernel < 1 or outer_kernel % 2 == 0:
            raise ValueError(f"outer_kernel must be an odd positive int, got {outer_kernel}")
        self.norm, self.channels, self.num_residual = norm, channels, int(num_residual)
        self.outer_kernel = k = int(outer_kernel)
        self.style_names = style_names
        c1, c2, c3 = channels
        s = max(len(style_names), 1)
        self.down = nn.ModuleList([
            _ConvNorm(3, c1, k, 1, norm, s),
            _ConvNorm(c1, c2, 3, 2, norm, s),
            _ConvNorm(c2, c3, 3, 2, norm, s),
        ])
        self.residual = nn.ModuleList([_Residual(c3, norm, s) for _ in range(self.num_residual)])
        self.up = nn.ModuleList([
            _ConvNorm(c3, c2, 3, 1, norm, s, upsample=True),
            _ConvNorm(c2, c1, 3, 1, norm, s, upsample=True),
        ])
        self.pad_out = nn.ReflectionPad2d(k // 2)
        self.conv_out = nn.Conv2d(c1, 3, k)

    @property
    def num_styles(self) -> int:
        return len(self.style_names)

    def config(self) -> dict:
        """The constructor arguments, enough to rebuild the network."""
        return {"norm": self.norm, "channels": list(self.channels), "num_residual": self.num_residual,
                "outer_kernel": self.outer_kernel, "style_names": list(self.style_names)}

    def style_weights(self, style, n: int) -> torch.Tensor | None:
        """``style`` as an (n, num_styles) weight matrix (None for a single-style network).

        ``style``: a style name or index (one-hot), a vector of ``num_styles`` weights
        (mixing; usually summing to 1), or an (n, num_styles) matrix (one row per image).
        """
        if self.norm != "conditional":
            if style is not None:
                raise ValueError(f"this {self.norm}-norm network holds one style; pass style=None")
            return None
        device = self.conv_out.weight.device
        if style is None:
            raise ValueError(f"this network holds {self.num_styles} styles {list(self.style_names)}; "
                             "pass style= a name, an index, or a weight vector to mix them")
        if isinstance(style, str):
            if style not in self.style_names:
                raise KeyError(f"unknown style {style!r}; this network holds {list(self.style_names)}")
            style = self.style_names.index(style)
        if isinstance(style, int) and not isinstance(style, bool):
            if not 0 <= style < self.num_styles:
                raise IndexError(f"style index {style} is out of range 0..{self.num_styles - 1}")
            weights = torch.zeros(self.num_styles, device=device)
            weights[style] = 1.0
            return weights.expand(n, -1)
        weights = torch.as_tensor(style, dtype=torch.float32, device=device)
        if weights.dim() == 1 and weights.shape[0] == self.num_styles:
            return weights.expand(n, -1)
        if weights.shape == (n, self.num_styles):
            return weights
        raise ValueError(f"style weights must have shape ({self.num_styles},) or ({n}, {self.num_styles}), "
                         f"got {tuple(weights.shape)}")

    def forward(self, x: torch.Tensor, style=None) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"TransformerNet expects (N, 3, H, W) images, got {tuple(x.shape)}")
        h, w = x.shape[-2:]
        if min(h, w) < 8:
            raise ValueError(f"images must be at least 8x8 pixels, got {h}x{w}")
        weights = self.style_weights(style, x.shape[0])
        y = x
        for layer in self.down:
            y = layer(y, weights)
        for block in self.residual:
            y = block(y, weights)
        for layer in self.up:
            y = layer(y, weights)
        y = torch.sigmoid(self.conv_out(self.pad_out(y)))
        return y[..., :h, :w]  # sizes that are not multiples of 4 come back a few pixels larger


# --------------------------------------------------------------------------- using a trained network

def stylize(net: TransformerNet, x: torch.Tensor, style=None, *, batch_size: int = 4) -> torch.Tensor:
    """Apply a trained :class:`TransformerNet` to images ``x`` (N, 3, H, W) in [0, 1], any size.

    ``style``: ``None`` for a single-style network; for a conditional one a style name or
    index, a vector of per-style weights (mixing the conditional-norm parameters, e.g.
    ``[0.5, 0.5, 0, 0]``), or an (N, num_styles) matrix with one row per image. Runs on the
    network's device in eval mode (restored afterwards), ``batch_size`` images at a time,
    without building a graph. Returns the stylized images detached, on ``x``'s device.
    """
    if not isinstance(net, TransformerNet):
        raise TypeError(f"net must be a TransformerNet (see load_fast_style), got {type(net).__name__}")
    validate_image(x)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    weights = net.style_weights(style, x.shape[0])
    device = net.conv_out.weight.device
    dtype = net.conv_out.weight.dtype
    outputs = []
    with evaluating(net), torch.inference_mode():
        for i in range(0, x.shape[0], batch_size):
            chunk = x[i:i + batch_size].to(device=device, dtype=dtype)
            chunk_style = None if weights is None else weights[i:i + batch_size]
            outputs.append(net(chunk, style=chunk_style).to(device=x.device, dtype=x.dtype))
    return torch.cat(outputs) if outputs else x.new_empty(x.shape)


def save_fast_style(net: TransformerNet, path, *, history: History | None = None,
                    info: dict | None = None, dtype: torch.dtype = torch.float16) -> Path:
    """Save a network's configuration and weights (``dtype``, float16 by default) with an optional
    training record (``history``: a :class:`cs_utils.fast_style_training.FastStyleHistory`;
    :func:`cs_utils.saved_nets.save_net`)."""
    record = dict(info or {})
    if history is not None:
        record.update(steps=history.steps, seconds=round(history.seconds, 1),
                      final=history.final_terms())
    return save_net(net, net.config(), path, info=record, dtype=dtype)


def load_fast_style(name_or_path, *, device="cpu") -> TransformerNet:
    """A trained :class:`TransformerNet` in eval mode (float32, frozen): a name of the committed
    weights in ``data/fast_style/`` or a file written by :func:`save_fast_style`.

    Committed: ``"starry_night"`` (instance norm), ``"starry_night_500"`` (the same run after half
    its steps), ``"starry_night_batchnorm"`` (its batch-norm twin, as many steps as the latter) and
    ``"four_styles"`` (conditional instance norm over :data:`cs_utils.style_catalog.STYLE_NAMES`).
    ``net.info`` holds the training record (steps, seconds, final losses, settings)."""
    return load_net(name_or_path, TransformerNet, what="fast-style", folder=FAST_STYLE_DIR,
                    retrain="make weights", device=device)
