"""An adversarial stylizer with a style-aware content loss (Sanakoyeu, Kotovenko, Lang & Ommer,
"A style-aware content loss for real-time HD style transfer", ECCV 2018).

No pretrained loss network: an encoder-decoder stylizer ``G = D(E(x))`` is trained against a
discriminator that tells crops of real paintings of one style from stylized photos (and from
the photos themselves). Two losses keep the content:

* :func:`style_aware_content_loss`: the content is compared in the stylizer's own encoder
  space, ``mean((E(x) - E(G(x)))^2)``: only what the encoder (trained for this style) keeps
  must be preserved, so details the style would not paint may go.
* :func:`transformed_image_loss`: the photo and its stylization are compared after the same
  transformation ``T`` (an average pooling), ``mean((T(x) - T(G(x)))^2)``: the large-scale
  layout must stay, the fine texture is free to change.

The discriminator is a :class:`PatchDiscriminator` or a :class:`MultiScaleDiscriminator` (the same
design at full and reduced resolution), optionally low-passed before its strides; :func:`style_crops`
can show it the painting at a chosen scale. A plain stride-2 discriminator fed crops of the full
painting shrunk to the crop size teaches the stylizer a fine pattern of colored stripes
(:func:`cs_utils.image_stats.chroma_high_frequency_share` measures it).

:func:`discriminator_loss`, :func:`generator_adversarial_loss` and
:func:`discriminator_accuracy` work on the discriminator's patch logits (a list of them per scale);
:func:`train_adversarial_stylizer` trains both networks (seeded) and returns an
:class:`AdversarialHistory`; it can return an exponential moving average of the stylizer's weights over
its last steps (:func:`update_average`) instead of its last weights, which paints fewer horizontal
streaks (:func:`cs_utils.image_stats.streak_share` measures them); :func:`save_stylizer` /
:func:`load_stylizer` keep float16 weights.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .history import History
from .perceptual import random_photo_crops, random_square_crop, resize_short_side
from .saved_nets import load_net, save_net
from .validation import validate_image

__all__ = [
    "AdversarialHistory",
    "MultiScaleDiscriminator",
    "PatchDiscriminator",
    "Stylizer",
    "discriminator_accuracy",
    "discriminator_loss",
    "generator_adversarial_loss",
    "load_stylizer",
    "save_stylizer",
    "style_aware_content_loss",
    "style_crops",
    "train_adversarial_stylizer",
    "transformed_image_loss",
    "update_average",
]


# --------------------------------------------------------------------------- losses

def _same_shape(a: torch.Tensor, b: torch.Tensor, what: str) -> None:
    if not isinstance(a, torch.Tensor) or not isinstance(b, torch.Tensor) or a.shape != b.shape:
        raise ValueError(f"{what}: expected two tensors of the same shape, got "
                         f"{getattr(a, 'shape', type(a))} and {getattr(b, 'shape', type(b))}")
    if a.numel() == 0:
        raise ValueError(f"{what}: the tensors are empty")


def style_aware_content_loss(encoded_photo: torch.Tensor, encoded_stylized: torch.Tensor) -> torch.Tensor:
    """``mean((E(x) - E(G(x)))^2)``: the photo's and its stylization's codes in the stylizer's own
    encoder space (the paper's ``1/d ||E(x) - E(G(x))||^2`` with ``d`` the code's size)."""
    _same_shape(encoded_photo, encoded_stylized, "style_aware_content_loss")
    return ((encoded_photo - encoded_stylized) ** 2).mean()


def transformed_image_loss(photo: torch.Tensor, stylized: torch.Tensor, kernel: int = 10) -> torch.Tensor:
    """``mean((T(x) - T(y))^2)`` with ``T`` a ``kernel`` x ``kernel`` average pooling with stride 1
    (the paper's T): a blur, so only the layout of light and colour has to match."""
    _same_shape(photo, stylized, "transformed_image_loss")
    if photo.dim() != 4 or min(photo.shape[-2:]) < kernel or kernel < 1:
        raise ValueError(f"need (N, C, H, W) images at least {kernel} pixels wide and kernel >= 1, got "
                         f"{tuple(photo.shape)} and kernel {kernel}")
    return ((F.avg_pool2d(photo, kernel, 1) - F.avg_pool2d(stylized, kernel, 1)) ** 2).mean()


def _per_scale(logits) -> list[torch.Tensor]:
    """The logits of each scale: a tensor is one scale, a list or tuple (from a
    :class:`MultiScaleDiscriminator`) one tensor per scale."""
    return list(logits) if isinstance(logits, (list, tuple)) else [logits]


def discriminator_loss(real_logits, fake_logits) -> torch.Tensor:
    """Binary cross-entropy of the discriminator: real paintings' patches should score 1, the
    rest 0 (each term the mean over its patches, the two added). Lists of logits (one tensor per
    scale of a :class:`MultiScaleDiscriminator`): the mean of the scales' losses."""
    pairs = list(zip(_per_scale(real_logits), _per_scale(fake_logits), strict=True))
    return sum(F.binary_cross_entropy_with_logits(real, torch.ones_like(real))
               + F.binary_cross_entropy_with_logits(fake, torch.zeros_like(fake))
               for real, fake in pairs) / len(pairs)


def generator_adversarial_loss(fake_logits) -> torch.Tensor:
    """The stylizer's adversarial loss: binary cross-entropy of its patches against 1 ("real");
    for a list of logits (one per scale) the mean of the scales' losses."""
    scales = _per_scale(fake_logits)
    return sum(F.binary_cross_entropy_with_logits(f, torch.ones_like(f)) for f in scales) / len(scales)


def discriminator_accuracy(real_logits, fake_logits) -> float:
    """The share of patches the discriminator gets right (real > 0, fake <= 0), over both sets;
    for lists of logits (one per scale) the mean of the scales' shares."""
    pairs = list(zip(_per_scale(real_logits), _per_scale(fake_logits), strict=True))
    return sum(((real > 0).sum() + (fake <= 0).sum()).item() / (real.numel() + fake.numel())
               for real, fake in pairs) / len(pairs)


# --------------------------------------------------------------------------- networks

def _conv(cin, cout, kernel, stride=1):
    return nn.Sequential(nn.ReflectionPad2d(kernel // 2), nn.Conv2d(cin, cout, kernel, stride),
                         nn.InstanceNorm2d(cout, affine=True), nn.ReLU())


class Stylizer(nn.Module):
    """Encoder (5x5 conv, two 3x3 stride-2 convs) and decoder (two residual blocks, two
    nearest-x2-then-3x3 layers, 5x5 conv to RGB, sigmoid); ``forward(x) = decode(encode(x))``.
    Inputs (N, 3, H, W) in [0, 1] with H and W multiples of 4."""

    def __init__(self, channels=(16, 32, 64)):
        super().__init__()
        c1, c2, c3 = channels
        self.channels = tuple(channels)
        self.encoder = nn.Sequential(_conv(3, c1, 5), _conv(c1, c2, 3, 2), _conv(c2, c3, 3, 2))
        self.res = nn.ModuleList([nn.Sequential(_conv(c3, c3, 3), nn.ReflectionPad2d(1), nn.Conv2d(c3, c3, 3),
                                                nn.InstanceNorm2d(c3, affine=True)) for _ in range(2)])
        self.up = nn.ModuleList([_conv(c3, c2, 3), _conv(c2, c1, 3)])
        self.out = nn.Sequential(nn.ReflectionPad2d(2), nn.Conv2d(c1, 3, 5))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != 3 or x.shape[-1] % 4 or x.shape[-2] % 4:
            raise ValueError(f"Stylizer expects (N, 3, H, W) with H and W multiples of 4, "
                             f"got {tuple(x.shape)}")
        return self.encoder(2 * x - 1)

    def decode(self, code: torch.Tensor) -> torch.Tensor:
        y = code
        for block in self.res:
            y = y + block(y)
        for layer in self.up:
            y = layer(F.interpolate(y, scale_factor=2, mode="nearest"))
        return torch.sigmoid(self.out(y))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))


class _Blur(nn.Module):
    """A fixed separable [1, 2, 1] / 4 blur of each channel (reflected edges), then every ``stride``-th
    pixel: a low-pass before (or with) a subsampling."""

    def __init__(self, channels: int, stride: int = 1):
        super().__init__()
        k = torch.tensor([1.0, 2.0, 1.0])
        self.stride = stride
        self.register_buffer("kernel", (k[:, None] * k[None, :] / 16).expand(channels, 1, 3, 3).clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(F.pad(x, (1, 1, 1, 1), mode="reflect"), self.kernel, stride=self.stride,
                        groups=x.shape[1])


class PatchDiscriminator(nn.Module):
    """Four stride-2 convolutions with leaky ReLUs and a 3x3 conv to one logit per patch:
    (N, 3, H, W) -> (N, 1, H/16, W/16), each logit judging a window of about 60 pixels.
    ``antialias``: ``False`` (the strided convolutions alone), ``True`` or ``"blur"`` (a [1, 2, 1] / 4
    blur in each direction before each stride-2 convolution), ``"input"`` (that blur of the image
    only, before the first) or ``"blurpool"`` (Zhang 2019: each
    stage a stride-1 3x3 convolution and leaky ReLU, then the blur with stride 2)."""

    def __init__(self, width: int = 16, antialias: bool | str = False):
        super().__init__()
        if antialias not in (False, True, "blur", "input", "blurpool"):
            raise ValueError(f"antialias must be False, True, 'blur', 'input' or 'blurpool', "
                             f"got {antialias!r}")
        self.antialias = "blur" if antialias is True else antialias
        layers, cin = [], 3
        for i in range(4):
            cout = width * 2 ** i
            if self.antialias == "blur" or (self.antialias == "input" and i == 0):
                layers += [_Blur(cin)]
            layers += [nn.Conv2d(cin, cout, 3, 1, 1) if self.antialias == "blurpool"
                       else nn.Conv2d(cin, cout, 4, 2, 1)]
            if i:
                layers += [nn.InstanceNorm2d(cout, affine=True)]
            layers += [nn.LeakyReLU(0.2)]
            if self.antialias == "blurpool":
                layers += [_Blur(cout, stride=2)]
            cin = cout
        layers += [nn.Conv2d(cin, 1, 3, 1, 1)]
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(2 * x - 1)


class MultiScaleDiscriminator(nn.Module):
    """``scales`` :class:`PatchDiscriminator` s, the k-th judging the image average-pooled by ``2^k``
    (k = 0: full resolution): a list of logits, (N, 1, H/16, W/16), (N, 1, H/32, W/32), ...; the
    losses take the mean over the scales. H and W must be multiples of ``2^(scales - 1) * 16``."""

    def __init__(self, width: int = 16, scales: int = 2, antialias: bool | str = False):
        super().__init__()
        if scales < 1:
            raise ValueError(f"scales must be at least 1, got {scales}")
        self.nets = nn.ModuleList([PatchDiscriminator(width, antialias) for _ in range(scales)])

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        logits = []
        for i, net in enumerate(self.nets):
            if i:
                x = F.avg_pool2d(x, 2)
            logits.append(net(x))
        return logits


# --------------------------------------------------------------------------- training

@torch.no_grad()
def update_average(average: nn.Module, net: nn.Module, decay: float) -> None:
    """One step of an exponential moving average of ``net``'s weights, in place:
    ``a <- decay * a + (1 - decay) * w`` for each parameter (buffers are copied). ``average`` must have
    ``net``'s architecture; ``decay`` in [0, 1] (0: a copy of ``net``, 1: unchanged)."""
    if not 0.0 <= decay <= 1.0:
        raise ValueError(f"decay must be in [0, 1], got {decay!r}")
    for a, w in zip(average.parameters(), net.parameters(), strict=True):
        a.mul_(decay).add_(w.detach(), alpha=1.0 - decay)
    for a, w in zip(average.buffers(), net.buffers(), strict=True):
        a.copy_(w)


@dataclass
class AdversarialHistory(History):
    """Per step: the stylizer's total ``loss`` and its terms ``adversarial``, ``content`` (style-aware)
    and ``transformed`` (each weighted), the discriminator's loss ``disc`` and its accuracy ``accuracy``
    on the batch before its step."""

    adversarial: list[float] = field(default_factory=list)
    content: list[float] = field(default_factory=list)
    transformed: list[float] = field(default_factory=list)
    disc: list[float] = field(default_factory=list)
    accuracy: list[float] = field(default_factory=list)

    default_series = ("loss", "adversarial", "content", "transformed", "disc")


def style_crops(style: torch.Tensor, n: int, size: int, generator: torch.Generator, *,
                style_side: int | None = None, style_scale: float | None = None) -> torch.Tensor:
    """``n`` random crops of the painting ``style`` (1, 3, H, W) resized to ``size``: its style
    collection (random scale between ``size`` and the shorter side, position, flip).
    ``style_side``: first resize the painting so that its shorter side is ``style_side`` pixels, which
    sets the scale of its strokes in the crops (``None``: as given). ``style_scale``: the crops' side
    at most ``style_scale * size`` before resizing (1: windows of the painting at its own scale;
    ``None``: up to the shorter side)."""
    validate_image(style, "style")
    if style_side is not None:
        if style_side < size:
            raise ValueError(f"style_side must be at least the crop size {size}, got {style_side}")
        style = resize_short_side(style, style_side)
    if style_scale is None:
        return random_photo_crops([style], n, size, generator)
    if style_scale < 1:
        raise ValueError(f"style_scale must be at least 1, got {style_scale}")
    return torch.cat([random_square_crop(style, size, generator, max_side=int(size * style_scale))
                      for _ in range(n)])


def train_adversarial_stylizer(style: torch.Tensor, photos, *, steps: int = 600, batch_size: int = 4,
                               crop_size: int = 96, lr: float = 2e-4, adversarial_weight: float = 1.0,
                               content_weight: float = 100.0, transformed_weight: float = 100.0,
                               pool: int = 10, style_side: int | None = None,
                               style_scale: float | None = None, disc_scales: int = 1,
                               disc_antialias: bool | str = False, ema_decay: float | None = None,
                               seed: int = 0, progress: bool = True
                               ) -> tuple[Stylizer, nn.Module, AdversarialHistory]:
    """Train a :class:`Stylizer` against a :class:`PatchDiscriminator` (Adam, betas (0.5, 0.999)).

    Each step draws ``batch_size`` crops of the photos and of the painting ``style``; the
    discriminator takes a step on painting crops (real) versus stylized photos and the photos
    themselves (fake), then the stylizer takes a step on
    ``adversarial_weight * generator_adversarial_loss + content_weight * style_aware_content_loss
    + transformed_weight * transformed_image_loss`` (``T``: ``pool`` x ``pool`` average pooling).
    ``style_side``: the painting's shorter side before cropping (:func:`style_crops`; ``None``: as
    given) and ``style_scale`` (the crops' largest side over ``crop_size``). ``disc_scales`` > 1: a
    :class:`MultiScaleDiscriminator` with that many scales instead of one :class:`PatchDiscriminator`;
    ``disc_antialias``: its low-pass before the strides (see :class:`PatchDiscriminator`).
    ``ema_decay``: return the exponential moving average of the stylizer's weights after each of its steps
    (:func:`update_average` from its initial weights; 0.99 averages over about the last 100 steps) instead
    of its last weights; the training itself is the same. Seeded by ``seed``. Returns
    ``(stylizer, discriminator, history)``, both nets in eval mode.
    """
    from tqdm.auto import tqdm

    validate_image(style, "style")
    photos = list(photos)
    multiple = 16 * 2 ** (max(disc_scales, 1) - 1)
    if not photos or steps < 0 or batch_size < 1 or disc_scales < 1 or crop_size % multiple:
        raise ValueError(f"need photos, steps >= 0, batch_size >= 1, disc_scales >= 1 and crop_size a "
                         f"multiple of {multiple}; got {len(photos)} photos, {steps}, {batch_size}, "
                         f"{disc_scales}, {crop_size}")
    if ema_decay is not None and not 0.0 <= ema_decay <= 1.0:
        raise ValueError(f"ema_decay must be None or in [0, 1], got {ema_decay!r}")
    if style_side is not None:
        style = resize_short_side(style, style_side)      # once, not at every step
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        stylizer = Stylizer()
        disc = (PatchDiscriminator(antialias=disc_antialias) if disc_scales == 1
                else MultiScaleDiscriminator(scales=disc_scales, antialias=disc_antialias))
    average = None if ema_decay is None else copy.deepcopy(stylizer).requires_grad_(False)
    rng = torch.Generator().manual_seed(seed)
    opt_g = torch.optim.Adam(stylizer.parameters(), lr=lr, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(disc.parameters(), lr=lr, betas=(0.5, 0.999))
    history = AdversarialHistory()
    stylizer.train()
    disc.train()
    start = time.perf_counter()
    for _ in tqdm(range(steps), disable=not progress, desc="adversarial stylizer"):
        x = random_photo_crops(photos, batch_size, crop_size, rng)
        real = style_crops(style, batch_size, crop_size, rng, style_scale=style_scale)
        with torch.no_grad():
            fake = stylizer(x)
        real_logits, fake_logits = disc(real), disc(torch.cat([fake, x]))
        d_loss = discriminator_loss(real_logits, fake_logits)
        history.accuracy.append(discriminator_accuracy(real_logits, fake_logits))
        opt_d.zero_grad(set_to_none=True)
        d_loss.backward()
        opt_d.step()

        code = stylizer.encode(x)
        y = stylizer.decode(code)
        adversarial = adversarial_weight * generator_adversarial_loss(disc(y))
        content = content_weight * style_aware_content_loss(code, stylizer.encode(y))
        transformed = transformed_weight * transformed_image_loss(x, y, pool)
        g_loss = adversarial + content + transformed
        opt_g.zero_grad(set_to_none=True)
        opt_d.zero_grad(set_to_none=True)
        g_loss.backward()
        opt_g.step()
        if average is not None:
            update_average(average, stylizer, ema_decay)
        for name, value in (("adversarial", adversarial), ("content", content), ("transformed", transformed),
                            ("disc", d_loss)):
            getattr(history, name).append(value.item())
        history.loss.append(g_loss.item())
        history.steps += 1
    opt_d.zero_grad(set_to_none=True)
    history.seconds = time.perf_counter() - start
    if average is not None:
        stylizer = average
    return stylizer.eval(), disc.eval(), history


def save_stylizer(stylizer: Stylizer, path, *, info: dict | None = None) -> Path:
    """Save a :class:`Stylizer` (channels, float16 weights, ``info``)."""
    return save_net(stylizer, {"channels": list(stylizer.channels)}, path, info=info)


def load_stylizer(name_or_path) -> Stylizer:
    """A :class:`Stylizer` saved by :func:`save_stylizer` (a name under ``data/topics/`` or a path),
    float32, frozen, in eval mode; ``stylizer.info`` holds its training record."""
    return load_net(name_or_path, Stylizer, what="stylizer")
