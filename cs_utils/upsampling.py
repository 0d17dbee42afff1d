"""Upsampling in a decoder: transposed convolution versus resize-then-convolve, and the checkerboard.

A transposed ("fractionally strided") convolution with stride 2 spreads each input pixel over
the output with its kernel; when the kernel size is not a multiple of the stride (3 and 2
here) the kernels overlap on every other output pixel and not on the ones between, so the
output carries a pattern of period 2 (Odena, Dumoulin & Olah, "Deconvolution and
checkerboard artifacts", Distill 2016). Resizing first (nearest x2) and then convolving
spreads every input pixel evenly.

* :func:`upsampling_net`: the :class:`cs_utils.fast_style.TransformerNet` of notebook 06 with either
  decoder (``"resize"``: its own; ``"transposed"``: 3x3 stride-2 transposed convolutions).
* :func:`train_decoder`: the perceptual-loss training of :func:`cs_utils.train_fast_style`
  (one style) for a network with either decoder, seeded, with a :class:`FastStyleHistory`.
* :func:`stride_energy`: the share of an image's spectral energy at the stride frequencies
  (for stride 2: the Nyquist frequencies, where a period-2 checkerboard puts all its energy).
* :func:`save_decoder_net` / :func:`load_decoder_net`: float16 weights under
  ``data/topics/`` (``python -m cs_utils.instructor.train_topics`` writes them).
"""

from __future__ import annotations

import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .fast_style import TransformerNet
from .fast_style_training import FastStyleHistory, training_photos
from .hooks import evaluating, extract_features
from .models import STYLE_LAYERS
from .perceptual import random_photo_crops
from .saved_nets import load_net, save_net
from .validation import validate_image

__all__ = [
    "DECODERS",
    "TransposedUp",
    "load_decoder_net",
    "power_profile",
    "save_decoder_net",
    "stride_energy",
    "train_decoder",
    "upsampling_net",
]

DECODERS = ("resize", "transposed")


class TransposedUp(nn.Module):
    """3x3 transposed convolution with stride 2 (output exactly twice the input) -> instance norm -> ReLU.

    Called as ``layer(x, style_weights)`` like the decoder layers of :class:`TransformerNet`
    (``style_weights`` is ignored: one style)."""

    def __init__(self, cin: int, cout: int, kernel: int = 3):
        super().__init__()
        self.conv = nn.ConvTranspose2d(cin, cout, kernel, stride=2, padding=kernel // 2, output_padding=1)
        self.norm = nn.InstanceNorm2d(cout, affine=True)

    def forward(self, x, style_weights=None):
        return F.relu(self.norm(self.conv(x)))


def upsampling_net(decoder: str = "resize", *, channels=(12, 24, 48), num_residual: int = 3,
                   outer_kernel: int = 9) -> TransformerNet:
    """A one-style instance-norm :class:`TransformerNet` whose two upsampling layers are
    ``"resize"`` (nearest x2, then 3x3 convolution: the network's own) or ``"transposed"``
    (:class:`TransposedUp`). Everything else, and so the parameter count of the encoder, is the same.
    ``net.decoder`` names the choice."""
    if decoder not in DECODERS:
        raise ValueError(f"decoder must be one of {DECODERS}, got {decoder!r}")
    net = TransformerNet("instance", channels=channels, num_residual=num_residual, outer_kernel=outer_kernel)
    if decoder == "transposed":
        c1, c2, c3 = net.channels
        net.up = nn.ModuleList([TransposedUp(c3, c2), TransposedUp(c2, c1)])
    net.decoder = decoder
    return net


def stride_energy(images: torch.Tensor, stride: int = 2) -> float:
    """The share (0..1) of the images' spectral energy at the stride frequencies.

    Each channel of each image, minus its mean, is Fourier transformed; the power at the
    frequencies ``(k * H / stride, l * W / stride)`` for ``k, l`` in ``0..stride-1`` (not both 0)
    is divided by the total power (summed over images and channels). A pattern that repeats
    every ``stride`` pixels puts all its energy there; natural images put very little there
    (about 1e-4 of it for stride 2). ``images``: (N, C, H, W) with H and W multiples of ``stride``.
    """
    if not isinstance(images, torch.Tensor) or images.dim() != 4 or images.numel() == 0:
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f"images must be a non-empty tensor (N, C, H, W), got {shape}")
    if not isinstance(stride, int) or stride < 2:
        raise ValueError(f"stride must be an int >= 2, got {stride!r}")
    h, w = images.shape[-2:]
    if h % stride or w % stride:
        raise ValueError(f"height and width must be multiples of the stride {stride}, got {h}x{w}")
    if not torch.isfinite(images).all():
        raise ValueError("images contain NaN or infinite values")
    x = images.detach().double().cpu()
    x = x - x.mean((-2, -1), keepdim=True)
    power = torch.fft.fft2(x).abs() ** 2
    total = power.sum().item()
    if total == 0:
        return 0.0
    at_stride = power[..., ::h // stride, ::w // stride].sum().item()
    return at_stride / total


def power_profile(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(freqs, power)``: the mean spectral power of the images' rows and columns at each
    frequency ``0, 1/W, ..., 1/2`` cycles per pixel (each line minus its mean; images (N, C, H, W)
    with H == W, channels averaged). A pattern of period 2 shows as a spike at 0.5."""
    if not isinstance(images, torch.Tensor) or images.dim() != 4 or images.shape[-1] != images.shape[-2]:
        raise ValueError(f"images must be square (N, C, H, H), got {getattr(images, 'shape', type(images))}")
    x = images.detach().double().cpu()
    rows = x - x.mean(-1, keepdim=True)
    cols = x - x.mean(-2, keepdim=True)
    power = (torch.fft.rfft(rows, dim=-1).abs() ** 2).mean((0, 1, 2))
    power = (power + (torch.fft.rfft(cols, dim=-2).abs() ** 2).mean((0, 1, 3))) / 2
    freqs = torch.fft.rfftfreq(x.shape[-1], dtype=torch.float64)
    return freqs, power


def train_decoder(model: nn.Module, decoder: str, style: torch.Tensor, photos=None, *, steps: int = 300,
                  batch_size: int = 2, crop_size: int = 96, style_size: int = 256, lr: float = 2e-3,
                  style_layers=STYLE_LAYERS, content_layer: str = "blocks.4", style_weight: float = 250.0,
                  content_weight: float = 1.0, tv_weight: float = 0.0, seed: int = 0,
                  progress: bool = True) -> tuple[TransformerNet, FastStyleHistory]:
    """Train :func:`upsampling_net` (``decoder``) with the perceptual loss of
    :func:`cs_utils.train_fast_style` on random crops of ``photos`` (default: the training photos).

    The same ``seed`` gives both decoders the same crops in the same order and the same
    encoder initialisation. ``tv_weight`` is 0 by default: a total-variation term would
    smooth away the pattern this comparison is about. ``model`` (the frozen loss network)
    is used in eval mode and left as it was. Returns the network in eval mode and its history.
    """
    from tqdm.auto import tqdm

    from .losses import content_loss, gram_matrix, style_loss, tv_loss

    validate_image(style, "style")
    if steps < 0 or batch_size < 1 or crop_size < 16 or crop_size % 4:
        raise ValueError(f"need steps >= 0, batch_size >= 1 and crop_size a multiple of 4 >= 16; got "
                         f"{steps}, {batch_size}, {crop_size}")
    photos = list(training_photos() if photos is None else photos)
    style_layers = list(style_layers)
    layers = list(dict.fromkeys(style_layers + [content_layer]))
    device = next(model.parameters()).device
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = upsampling_net(decoder)
        if decoder == "transposed":  # the same encoder start as the resize network
            reference = upsampling_net("resize")
            net.load_state_dict({k: v for k, v in reference.state_dict().items() if not k.startswith("up.")},
                                strict=False)
    net = net.to(device).train()
    rng = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(net.parameters(), lr=lr)
    history = FastStyleHistory()
    with evaluating(model), torch.no_grad():
        h, w = style.shape[-2:]
        scale = style_size / min(h, w)
        small = F.interpolate(style.to(device), size=(round(h * scale), round(w * scale)), mode="bilinear",
                              antialias=scale < 1, align_corners=False).clamp(0, 1)
        feats = extract_features(model, small, style_layers)
        targets = [gram_matrix(feats[layer]) for layer in style_layers]
    start = time.perf_counter()
    with evaluating(model):
        for _ in tqdm(range(steps), disable=not progress, desc=f"{decoder} decoder"):
            x = random_photo_crops(photos, batch_size, crop_size, rng).to(device)
            with torch.no_grad():
                content_target = extract_features(model, x, [content_layer])[content_layer]
            y = net(x)
            feats = extract_features(model, y, layers)
            content_term = content_loss(feats[content_layer], content_target,
                                        weight=content_weight / content_target.numel())
            style_term = style_loss([feats[layer] for layer in style_layers],
                                    [t.expand(batch_size, -1, -1) for t in targets], weights=style_weight)
            tv_term = tv_loss(y, weight=tv_weight / y.numel())
            loss = content_term + style_term + tv_term
            optimizer.zero_grad(set_to_none=True)
            grads = torch.autograd.grad(loss, list(net.parameters()))
            for p, g in zip(net.parameters(), grads):
                p.grad = g
            optimizer.step()
            history.record_step(content_term.item(), style_term.item(), tv_term.item())
    history.seconds = time.perf_counter() - start
    return net.eval(), history


def save_decoder_net(net: TransformerNet, path, *, info: dict | None = None) -> Path:
    """Save a network of :func:`upsampling_net` in float16 with its decoder kind and ``info``."""
    config = {"decoder": getattr(net, "decoder", "resize"), "channels": list(net.channels),
              "num_residual": net.num_residual, "outer_kernel": net.outer_kernel}
    return save_net(net, config, path, info=info)


def load_decoder_net(name_or_path) -> TransformerNet:
    """A network saved by :func:`save_decoder_net` (a name under ``data/topics/`` or a path),
    float32, frozen, in eval mode; ``net.info`` holds its training record."""
    return load_net(name_or_path, upsampling_net, what="decoder")
