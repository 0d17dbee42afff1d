"""A small U-Net (Ronneberger, Fischer & Brox 2015) for foreground masks, on synthetic shapes.

* :func:`synthetic_shapes`: images of 1-3 textured shapes (discs, rectangles, triangles) on a
  textured background, and their masks (1 inside a shape, 0 outside). Nothing is downloaded.
* :class:`UNet`: contracting path (two 3x3 conv + ReLU, then 2x2 max pool, per level),
  bottleneck, expanding path (2x2 stride-2 up-convolution, concatenation with the contracting
  path's features of the same size, two 3x3 conv + ReLU), 1x1 convolution to one logit per
  pixel. ``skips=False`` drops the concatenations: the decoder then only has the bottleneck.
* :func:`train_unet` (seeded, binary cross-entropy), :func:`predict_masks`, :func:`mask_iou`;
  :func:`save_unet` / :func:`load_unet` keep float16 weights under ``data/topics/``.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .history import History
from .hooks import evaluating
from .saved_nets import load_net, save_net

__all__ = ["UNet", "load_unet", "mask_iou", "predict_masks", "save_unet", "synthetic_shapes", "train_unet"]


def _texture(n: int, size: int, generator: torch.Generator) -> torch.Tensor:
    """(n, 3, size, size) random textures: two random colours mixed by a random stripe or
    checker pattern of random period and angle, plus pixel noise."""
    yy, xx = torch.meshgrid(torch.arange(size, dtype=torch.float32), torch.arange(size, dtype=torch.float32),
                            indexing="ij")
    angle = torch.rand(n, 1, 1, generator=generator) * math.pi
    period = 3 + torch.rand(n, 1, 1, generator=generator) * 9
    u = (xx * torch.cos(angle) + yy * torch.sin(angle)) * 2 * math.pi / period
    v = (-xx * torch.sin(angle) + yy * torch.cos(angle)) * 2 * math.pi / period
    checker = (torch.rand(n, 1, 1, generator=generator) < 0.5).float()
    pattern = 0.5 + 0.5 * torch.sin(u) * (1 - checker + checker * torch.sin(v))
    a, b = torch.rand(n, 3, 1, 1, generator=generator), torch.rand(n, 3, 1, 1, generator=generator)
    image = a + (b - a) * pattern[:, None]
    return (image + 0.08 * torch.randn(n, 3, size, size, generator=generator)).clamp(0, 1)


def synthetic_shapes(n: int, size: int = 64, *, generator: torch.Generator | None = None
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` images (n, 3, size, size) in [0, 1] and their masks (n, 1, size, size) in {0, 1}.

    Each image is a textured background with 2-4 shapes (disc, axis-aligned rectangle or
    triangle, 8-32% of the side) cut out of a second texture. The mask is 1 where a shape is:
    telling the shapes from the background takes texture, not only colour.
    """
    if not isinstance(n, int) or n < 1 or not isinstance(size, int) or size < 16:
        raise ValueError(f"need n >= 1 and size >= 16 (ints), got n={n!r}, size={size!r}")
    g = generator if generator is not None else torch.Generator().manual_seed(0)
    background, foreground = _texture(n, size, g), _texture(n, size, g)
    yy, xx = torch.meshgrid(torch.arange(size, dtype=torch.float32) + 0.5,
                            torch.arange(size, dtype=torch.float32) + 0.5, indexing="ij")
    masks = torch.zeros(n, 1, size, size)
    for i in range(n):
        for _ in range(2 + int(torch.randint(3, (1,), generator=g))):
            kind = int(torch.randint(3, (1,), generator=g))
            r = size * (0.04 + 0.12 * float(torch.rand(1, generator=g)))
            cy, cx = (r + (size - 2 * r) * torch.rand(2, generator=g)).tolist()
            if kind == 0:
                inside = (yy - cy) ** 2 + (xx - cx) ** 2 <= r ** 2
            elif kind == 1:
                ry = r * (0.6 + 0.4 * float(torch.rand(1, generator=g)))
                inside = ((yy - cy).abs() <= ry) & ((xx - cx).abs() <= r)
            else:  # an upward triangle with apex (cy - r, cx) and base at cy + r
                t = (yy - (cy - r)) / (2 * r)
                inside = (t >= 0) & (t <= 1) & ((xx - cx).abs() <= t * r)
            masks[i, 0] = torch.maximum(masks[i, 0], inside.float())
    images = background * (1 - masks) + foreground * masks
    return images, masks


def _double_conv(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
                         nn.Conv2d(cout, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class UNet(nn.Module):
    """A U-Net with ``depth`` levels of 2x downsampling, ``width`` channels at the first level
    (doubling per level), and a 1x1 output convolution giving one logit per pixel.

    ``skips=True``: each expanding level concatenates the up-convolved features with the
    contracting path's features of the same size (the U-Net); ``skips=False``: it does not,
    so everything the decoder knows went through the bottleneck. Inputs: (N, 3, H, W) in
    [0, 1], H and W multiples of 2**depth. Output: (N, 1, H, W) logits (mask = logit > 0).
    """

    def __init__(self, *, width: int = 16, depth: int = 3, skips: bool = True, in_channels: int = 3):
        super().__init__()
        if width < 1 or depth < 1:
            raise ValueError(f"width and depth must be >= 1, got {width}, {depth}")
        self.width, self.depth, self.skips = int(width), int(depth), bool(skips)
        chans = [width * 2 ** i for i in range(depth + 1)]
        self.down = nn.ModuleList([_double_conv(in_channels if i == 0 else chans[i - 1], chans[i])
                                   for i in range(depth)])
        self.bottleneck = _double_conv(chans[depth - 1], chans[depth])
        self.upconv = nn.ModuleList([nn.ConvTranspose2d(chans[i + 1], chans[i], 2, stride=2)
                                     for i in reversed(range(depth))])
        self.up = nn.ModuleList([_double_conv(chans[i] * (2 if skips else 1), chans[i])
                                 for i in reversed(range(depth))])
        self.out = nn.Conv2d(chans[0], 1, 1)

    def config(self) -> dict:
        return {"width": self.width, "depth": self.depth, "skips": self.skips}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[-1] % 2 ** self.depth or x.shape[-2] % 2 ** self.depth:
            raise ValueError(f"UNet expects (N, C, H, W) with H and W multiples of {2 ** self.depth}, "
                             f"got {tuple(x.shape)}")
        x = 2 * x - 1
        saved = []
        for block in self.down:
            x = block(x)
            saved.append(x)
            x = F.max_pool2d(x, 2)
        x = self.bottleneck(x)
        for upconv, block, skip in zip(self.upconv, self.up, reversed(saved)):
            x = upconv(x)
            x = block(torch.cat([skip, x], 1) if self.skips else x)
        return self.out(x)


def predict_masks(net: UNet, images: torch.Tensor, *, batch_size: int = 32) -> torch.Tensor:
    """Bool masks (N, 1, H, W): where the net's logit is > 0. Eval mode (restored), no graph."""
    if not isinstance(images, torch.Tensor) or images.dim() != 4:
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f"images must be a tensor (N, 3, H, W), got {shape}")
    out = []
    with evaluating(net), torch.no_grad():
        for i in range(0, images.shape[0], batch_size):
            out.append(net(images[i:i + batch_size]) > 0)
    return torch.cat(out)


def mask_iou(pred: torch.Tensor, target: torch.Tensor) -> float:
    """Mean over images of intersection / union of two masks (N, 1, H, W) (bool or 0/1).

    An image where both masks are empty counts as 1 (nothing to find, nothing found)."""
    if pred.shape != target.shape or pred.dim() != 4:
        raise ValueError(f"pred and target must be masks of the same shape (N, 1, H, W), got "
                         f"{tuple(pred.shape)} and {tuple(target.shape)}")
    p, t = pred.bool().flatten(1), target.bool().flatten(1)
    inter = (p & t).sum(1).double()
    union = (p | t).sum(1).double()
    iou = torch.where(union > 0, inter / union.clamp_min(1), torch.ones_like(union))
    return iou.mean().item()


def train_unet(*, skips: bool = True, steps: int = 600, batch_size: int = 16, size: int = 64,
               n_train: int = 1024, width: int = 16, depth: int = 3, lr: float = 3e-3, seed: int = 0,
               progress: bool = True) -> tuple[UNet, History]:
    """Train a :class:`UNet` on ``n_train`` :func:`synthetic_shapes` (drawn from ``seed``) with
    binary cross-entropy and Adam, ``batch_size`` random training images per step. The same
    seed gives both variants the same images, batches and (for shared layers) start.
    Returns ``(net, history)``: the net in eval mode, per-step loss and the wall time."""
    if steps < 0 or batch_size < 1:
        raise ValueError(f"need steps >= 0 and batch_size >= 1, got {steps}, {batch_size}")
    from tqdm.auto import tqdm

    g = torch.Generator().manual_seed(seed)
    images, masks = synthetic_shapes(n_train, size, generator=g)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = UNet(width=width, depth=depth, skips=skips)
    optimizer = torch.optim.Adam(net.parameters(), lr=lr)
    history = History()
    net.train()
    start = time.perf_counter()
    for _ in tqdm(range(steps), disable=not progress, desc=f"U-Net ({'with' if skips else 'no'} skips)"):
        idx = torch.randint(n_train, (batch_size,), generator=g)
        loss = F.binary_cross_entropy_with_logits(net(images[idx]), masks[idx])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        history.loss.append(loss.item())
        history.steps += 1
    history.seconds = time.perf_counter() - start
    return net.eval(), history


def save_unet(net: UNet, path, *, info: dict | None = None) -> Path:
    """Save a :class:`UNet` (config, float16 weights, ``info``)."""
    return save_net(net, net.config(), path, info=info)


def load_unet(name_or_path) -> UNet:
    """A :class:`UNet` saved by :func:`save_unet` (a name under ``data/topics/`` or a path), float32,
    frozen, in eval mode; ``net.info`` holds its training record."""
    return load_net(name_or_path, UNet, what="U-Net")
