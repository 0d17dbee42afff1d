"""Random transforms for :func:`cs_utils.optimize_image`: what the network sees of the image.

A transform is a callable ``t(x, generator) -> x`` applied to the image, in order,
before the objective sees it; every random choice is drawn from ``generator`` (same
seed, same draws). Penalties act on the untransformed image. Olah et al. (2017)
show that random jitter, scaling and rotation at every step make visualizations
robust and far more natural; DeepDream rolls the image by a random jitter.

Each transform is reached through this module (``cs_utils.transforms.Jitter``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

__all__ = ["Clamp", "Compose", "Jitter", "Pad", "RandomCrops", "RandomRotate", "RandomScale", "Views"]


def _randint(low: int, high: int, generator) -> int:
    """A uniform integer in [low, high] from ``generator``."""
    return int(torch.randint(low, high + 1, (1,), generator=generator))


class Jitter:
    """Shift the image by up to ``pixels`` in each direction.

    ``mode="roll"`` rolls with wrap-around (DeepDream); ``mode="crop"`` takes a
    random crop that is ``pixels`` smaller in each dimension (Lucid).
    """

    def __init__(self, pixels: int, mode: str = "roll"):
        if pixels < 0 or mode not in ("roll", "crop"):
            raise ValueError(f"Jitter needs pixels >= 0 and mode 'roll' or 'crop', got {pixels}, {mode!r}")
        self.pixels, self.mode = int(pixels), mode

    def __call__(self, x, generator=None):
        if self.pixels == 0:
            return x
        if self.mode == "roll":
            dy = _randint(-self.pixels, self.pixels, generator)
            dx = _randint(-self.pixels, self.pixels, generator)
            return torch.roll(x, shifts=(dy, dx), dims=(2, 3))
        dy, dx = _randint(0, self.pixels, generator), _randint(0, self.pixels, generator)
        h, w = x.shape[-2:]
        return x[..., dy:h - self.pixels + dy, dx:w - self.pixels + dx]


class Pad:
    """Pad ``pixels`` on every side, with ``mode`` "constant" (``value``), "reflect" or "replicate"."""

    def __init__(self, pixels: int, mode: str = "constant", value: float = 0.5):
        self.pixels, self.mode, self.value = int(pixels), mode, value

    def __call__(self, x, generator=None):
        p = (self.pixels,) * 4
        if self.mode == "constant":
            return F.pad(x, p, mode="constant", value=self.value)
        return F.pad(x, p, mode=self.mode)


class RandomScale:
    """Resize by a factor drawn uniformly from ``scales`` (bilinear)."""

    def __init__(self, scales: Sequence[float]):
        self.scales = [float(s) for s in scales]
        if not self.scales or min(self.scales) <= 0:
            raise ValueError("RandomScale needs a non-empty list of positive factors")

    def __call__(self, x, generator=None):
        scale = self.scales[_randint(0, len(self.scales) - 1, generator)]
        if scale == 1.0:
            return x
        size = [max(1, round(s * scale)) for s in x.shape[-2:]]
        return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


class RandomRotate:
    """Rotate about the centre by an angle (degrees) drawn uniformly from ``degrees``."""

    def __init__(self, degrees: Sequence[float]):
        self.degrees = [float(d) for d in degrees]
        if not self.degrees:
            raise ValueError("RandomRotate needs a non-empty list of angles")

    def __call__(self, x, generator=None):
        angle = self.degrees[_randint(0, len(self.degrees) - 1, generator)]
        if angle == 0.0:
            return x
        theta = math.radians(angle)
        c, s = math.cos(theta), math.sin(theta)
        matrix = torch.tensor([[c, -s, 0.0], [s, c, 0.0]], dtype=x.dtype, device=x.device)
        grid = F.affine_grid(matrix.expand(x.shape[0], 2, 3), list(x.shape), align_corners=False)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


class RandomCrops:
    """``count`` random square crops of every image, each resized to ``size`` x ``size`` with
    antialiasing (the transformation robustness of Lucid and Horama): the network sees the image at
    several positions and scales per step, and a pattern finer than the resizing keeps is averaged
    away instead of rewarded.

    A crop's side is a fraction of the image's shorter side drawn uniformly from ``scale``; its
    position is uniform over the places it fits. ``noise`` adds Gaussian noise of that standard
    deviation to the crops. The output is ``(count * N, C, size, size)``, crop-major: rows
    ``k * N .. k * N + N - 1`` are the ``k``-th crop of images ``0 .. N - 1``.
    """

    def __init__(self, count: int, scale: Sequence[float] = (0.6, 1.0), size: int | None = None,
                 noise: float = 0.0):
        low, high = (float(s) for s in scale)
        if not (isinstance(count, int) and count >= 1):
            raise ValueError(f"count must be a positive int, got {count!r}")
        if not 0 < low <= high <= 1:
            raise ValueError(f"scale must be (low, high) with 0 < low <= high <= 1, got {tuple(scale)}")
        if size is not None and int(size) < 1:
            raise ValueError(f"size must be a positive number of pixels, got {size!r}")
        if noise < 0:
            raise ValueError(f"noise must be >= 0, got {noise!r}")
        self.count, self.scale, self.size, self.noise = count, (low, high), size, float(noise)

    def __call__(self, x, generator=None):
        h, w = x.shape[-2:]
        out_size = int(self.size or min(h, w))
        low, high = self.scale
        crops = []
        for _ in range(self.count):
            fraction = low + (high - low) * float(torch.rand((), generator=generator))
            side = max(1, round(fraction * min(h, w)))
            top = _randint(0, h - side, generator)
            left = _randint(0, w - side, generator)
            crop = x[..., top:top + side, left:left + side]
            if side != out_size:
                crop = F.interpolate(crop, size=(out_size, out_size), mode="bilinear", align_corners=False,
                                     antialias=side > out_size)
            crops.append(crop)
        out = torch.cat(crops)
        if self.noise:
            out = out + self.noise * torch.randn(out.shape, generator=generator).to(out)
        return out


class Clamp:
    """Show the network the pixels clamped to ``[low, high]``.

    The loop clamps raw pixels after every first-order step, but L-BFGS's line search may
    leave the range between evaluations. The clamp's gradient is zero for pixels at or
    beyond ``low`` or ``high``, so pixels pushed against the border stay there.
    """

    def __init__(self, low: float = 0.0, high: float = 1.0):
        self.low, self.high = low, high

    def __call__(self, x, generator=None):
        return x.clamp(self.low, self.high)


class Compose:
    """Apply transforms in order: ``Compose(Pad(12), Jitter(8, "crop"), RandomScale([0.9, 1, 1.1]))``."""

    def __init__(self, *transforms):
        self.transforms = [t for t in transforms if t is not None]

    def __call__(self, x, generator=None):
        for t in self.transforms:
            x = t(x, generator)
        return x


class Views:
    """``count`` independently transformed copies of the image per step: each view goes through
    ``transforms`` (in order, with its own random draws) and :func:`cs_utils.optimize_image` averages
    the objective over the views, so every step's gradient is the mean over ``count`` random jitters,
    scales and rotations (Lucid's batch of transformed copies) instead of a single one. Returns a
    list of ``count`` tensors (views of different sizes cannot share a batch)."""

    def __init__(self, count: int, *transforms):
        if not (isinstance(count, int) and not isinstance(count, bool) and count >= 1):
            raise ValueError(f"count must be a positive int, got {count!r}")
        self.count, self.transform = count, Compose(*transforms)

    def __call__(self, x, generator=None):
        return [self.transform(x, generator) for _ in range(self.count)]
