"""Image parameterizations for :func:`cs_utils.optimize.optimize_image`: what the optimizer changes.

A parameterization has ``parameters()`` (the tensors the optimizer steps) and ``image()`` (the
(N, 3, H, W) image in [0, 1] they stand for):

* :class:`PixelImage`: raw pixels, a copy of a start image;
* :class:`FourierImage`: a 2-D spectrum in decorrelated color (Olah et al. 2017): plain gradient
  steps change low frequencies more than high ones, so raw-pixel noise is damped;
* :class:`SpectralPhaseImage`: only the spectrum's phase, its magnitude fixed to that of photos
  (MACO, Fel et al. 2023).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

__all__ = ["FourierImage", "PixelImage", "SpectralPhaseImage", "color_basis"]


class PixelImage:
    """The image is its own parameter: a copy of ``init`` (N, 3, H, W), optimised directly."""

    def __init__(self, init: torch.Tensor):
        if not isinstance(init, torch.Tensor) or init.dim() != 4:
            shape = tuple(init.shape) if isinstance(init, torch.Tensor) else type(init).__name__
            raise ValueError(f"init must be an image batch of shape (N, C, H, W), got {shape}")
        if not init.is_floating_point():
            raise TypeError(f"init must be a float tensor in [0, 1], got {init.dtype}")
        self.pixels = init.detach().clone().requires_grad_(True)

    def parameters(self) -> list[torch.Tensor]:
        return [self.pixels]

    def image(self) -> torch.Tensor:
        return self.pixels


# Square root of the colour correlation of ImageNet photos (Olah et al. 2017, Lucid).
_COLOR_CORRELATION_SVD_SQRT = torch.tensor([[0.26, 0.09, 0.02],
                                            [0.27, 0.00, -0.05],
                                            [0.27, -0.09, 0.03]])


class FourierImage:
    """An image parameterised by its 2-D Fourier spectrum in decorrelated colour space.

    Each frequency's coefficient is scaled by ``1 / f^decay``, so plain gradient
    steps change low frequencies more than high ones (the high-frequency noise
    that raw-pixel ascent produces is damped); colours go through the square
    root of ImageNet's colour correlation and a sigmoid keeps pixels in (0, 1).
    ``decay`` is one power for all three decorrelated channels or one per channel
    (luminance first, then the two colour-opponent channels: a larger power there gives
    smoother colour over sharper brightness, as in photos). ``scale`` multiplies the
    decorrelated image before the sigmoid (more contrast). ``normalize``:

    * ``False``: as Olah et al. (free contrast);
    * ``True``: the decorrelated image is standardised per image over all its values (mean 0,
      standard deviation 1), so ``scale`` alone sets the contrast and the optimiser cannot blow the
      image out to pure white, black or primary colours;
    * ``"channels"``: each decorrelated channel of each image is standardised on its own and
      multiplied by ``channel_std`` (luminance, colour, colour): the optimiser can change neither the
      contrast nor how colourful the image is, only where the brightness and colour go.

    Random initial coefficients come from ``generator``.
    """

    def __init__(self, shape: Sequence[int], *, decay: float | Sequence[float] = 1.0, scale: float = 1.0,
                 std: float = 0.01, normalize: bool | str = False,
                 channel_std: Sequence[float] = (1.0, 1.0, 1.0), generator: torch.Generator | None = None,
                 device=None):
        if len(shape) != 4 or shape[1] != 3:
            raise ValueError(f"shape must be (N, 3, H, W), got {tuple(shape)}")
        if normalize not in (False, True, "channels"):
            raise ValueError(f"normalize must be False, True or 'channels', got {normalize!r}")
        decays = _three(decay, "decay")
        channel_std = _three(channel_std, "channel_std")
        if min(channel_std) < 0:
            raise ValueError(f"channel_std must be >= 0, got {channel_std}")
        n, c, h, w = (int(s) for s in shape)
        self.size = (h, w)
        fy = torch.fft.fftfreq(h)[:, None]
        fx = torch.fft.rfftfreq(w)[None, :]
        freqs = torch.sqrt(fx ** 2 + fy ** 2).clamp(min=1.0 / max(h, w))
        scales = torch.stack([1.0 / freqs ** d for d in decays])[None]   # (1, 3, h, w // 2 + 1)
        self.spectrum_scale = (scales * math.sqrt(h * w)).to(device)
        noise = torch.randn(n, c, h, w // 2 + 1, 2, generator=generator) * std
        self.coefficients = noise.to(device).requires_grad_(True)
        self.scale, self.normalize = scale, normalize
        self.channel_std = torch.tensor(channel_std).view(1, 3, 1, 1).to(device)
        self.color = color_basis().to(device)

    def parameters(self) -> list[torch.Tensor]:
        return [self.coefficients]

    def decorrelated(self) -> torch.Tensor:
        """The image in decorrelated colour (luminance, two colour-opponent channels) before ``scale``
        and the sigmoid, standardised as ``normalize`` says: ``(N, 3, H, W)``."""
        spectrum = torch.view_as_complex(self.coefficients) * self.spectrum_scale
        decorrelated = torch.fft.irfft2(spectrum, s=self.size, norm="backward") / 4.0
        if self.normalize == "channels":
            return _standardized(decorrelated, per_channel=True) * self.channel_std
        if self.normalize:
            return _standardized(decorrelated)
        return decorrelated

    def image(self) -> torch.Tensor:
        rgb = torch.einsum("nchw,dc->ndhw", self.decorrelated(), self.color)
        return torch.sigmoid(self.scale * rgb)


def _three(value, name: str) -> tuple[float, float, float]:
    """``value`` (one number, or one per decorrelated channel) as three floats."""
    values = (value,) * 3 if isinstance(value, (int, float)) else tuple(value)
    if len(values) != 3 or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        raise ValueError(f"{name} must be a number or three numbers (luminance, colour, colour), "
                         f"got {value!r}")
    return tuple(float(v) for v in values)


def _standardized(x: torch.Tensor, *, per_channel: bool = False) -> torch.Tensor:
    """Each image of ``x`` (N, C, H, W) with mean 0 and standard deviation 1 over all its values, or
    over each channel's values with ``per_channel``."""
    flat = x.flatten(2) if per_channel else x.flatten(1)
    shape = (x.shape[0], x.shape[1] if per_channel else 1, 1, 1)
    mean, std = flat.mean(-1).view(shape), flat.std(-1).view(shape)
    return (x - mean) / (std + 1e-8)


def color_basis() -> torch.Tensor:
    """The 3x3 matrix ``M`` that maps decorrelated colour to RGB (``rgb = M @ c``) in
    :class:`FourierImage` and :class:`SpectralPhaseImage`: ImageNet's colour correlation, square-rooted."""
    return _COLOR_CORRELATION_SVD_SQRT / _COLOR_CORRELATION_SVD_SQRT.norm(dim=0).max()


class SpectralPhaseImage:
    """MACO (Fel et al. 2023): only the *phase* of the image's 2-D spectrum is optimised; its magnitude
    stays fixed to ``magnitude``, the mean spectrum of natural photos, so the image keeps the
    photos' balance of coarse and fine structure (no pixel noise, no dot grid).

    ``magnitude``: ``(3, H, W // 2 + 1)`` amplitudes of the three decorrelated colour channels, e.g.
    :func:`cs_utils.image_stats.photo_amplitude_spectrum` with ``decorrelated=True``. The image is
    the inverse FFT, standardised per image (mean 0, standard deviation 1), recorrelated with
    ImageNet's colour correlation and squashed into (0, 1) by ``sigmoid(contrast * .)``: no pixel is
    ever clamped. Initial phases are uniform in [-pi, pi) from ``generator``.
    """

    def __init__(self, shape: Sequence[int], magnitude: torch.Tensor, *, contrast: float = 2.0,
                 generator: torch.Generator | None = None, device=None):
        if len(shape) != 4 or shape[1] != 3:
            raise ValueError(f"shape must be (N, 3, H, W), got {tuple(shape)}")
        n, _, h, w = (int(s) for s in shape)
        expected = (3, h, w // 2 + 1)
        if not isinstance(magnitude, torch.Tensor) or tuple(magnitude.shape) != expected:
            got = tuple(magnitude.shape) if isinstance(magnitude, torch.Tensor) else type(magnitude).__name__
            raise ValueError(f"magnitude must be a tensor of shape {expected} (rfft2 of a {h}x{w} image), "
                             f"got {got}")
        if not contrast > 0:
            raise ValueError(f"contrast must be positive, got {contrast!r}")
        self.size, self.contrast = (h, w), float(contrast)
        self.magnitude = magnitude.detach().float().to(device)
        phase = (torch.rand(n, 3, h, w // 2 + 1, generator=generator) * 2 - 1) * math.pi
        self.phase = phase.to(device).requires_grad_(True)
        self.color = color_basis().to(device)

    def parameters(self) -> list[torch.Tensor]:
        return [self.phase]

    def decorrelated(self) -> torch.Tensor:
        """The image in decorrelated colour before the sigmoid, standardised per image: its spectrum
        has the fixed ``magnitude`` (up to one scale per image) and the optimised phase."""
        spectrum = torch.polar(self.magnitude.expand_as(self.phase), self.phase)
        return _standardized(torch.fft.irfft2(spectrum, s=self.size))

    def image(self) -> torch.Tensor:
        rgb = torch.einsum("nchw,dc->ndhw", self.decorrelated(), self.color)
        return torch.sigmoid(self.contrast * rgb)
