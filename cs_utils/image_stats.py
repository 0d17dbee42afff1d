"""Numbers that say whether a generated image looks natural, and whether networks recognise it.

* :func:`brightness`, :func:`contrast`, :func:`colorfulness` and :func:`saturation`: the
  mean grey level, its standard deviation (RMS contrast), Hasler & Suesstrunk's (2003)
  colourfulness and the mean HSV saturation of each image; :func:`tone_statistics` all four;
* :func:`clipped_share`: the fraction of pixels with any channel within 1/255 of 0 or 1
  (blown-out white, black or primary colours);
* :func:`high_frequency_share`: the fraction of the spectral energy of the grey image (mean
  removed) above half the Nyquist frequency (pixel noise, dot grids);
* :func:`chroma_high_frequency_share`: the same share for the two chroma channels (Cb and Cr), whose
  fine detail photos hardly have (colored stripes, speckle);
* :func:`border_detail_ratio`: how much busier the outermost rows and columns are than the
  interior (the dotted line an optimisation leaves at an image's border);
* :func:`streak_share`: the share of the grey level's fine-scale spectral energy in horizontal (or
  vertical) lines: streaks and smears along the pixel grid;
* :func:`milky_share` (pale areas covered in fine colored speckle: the milky veil of class
  visualizations) and :func:`vivid_chroma` (the chroma of the most colorful 5% of the pixels:
  neon), each with the offline photos' largest value in :func:`photo_statistics`;
* :func:`amplitude_spectrum` and :func:`photo_amplitude_spectrum`: the mean Fourier magnitude
  of images, and of the package's offline photos (the natural-image spectrum that
  :class:`cs_utils.parameterizations.SpectralPhaseImage` keeps fixed);
* :func:`shifted_crop` and :func:`class_ranks`: recognisability, the rank of the intended
  class under a network (0 = top-1), also on a shifted crop of the image.

Photos score low on the first two: our offline photos have a median high-frequency share of
about 4% and a mean clipped share of about 5% (a few photos have black or white backgrounds).
"""

from __future__ import annotations

import functools
import math
import numbers

import torch
import torch.nn.functional as F
from torch import nn

from . import validation
from .blur import mirrored_blur
from .hooks import evaluating
from .validation import model_input, validate_image

__all__ = [
    "LUMA",
    "amplitude_spectrum",
    "border_detail_ratio",
    "brightness",
    "chroma_high_frequency_share",
    "class_ranks",
    "clipped_share",
    "colorfulness",
    "contrast",
    "gray",
    "high_frequency_share",
    "milky_share",
    "photo_amplitude_spectrum",
    "photo_statistics",
    "saturation",
    "shifted_crop",
    "streak_share",
    "tone_statistics",
    "vivid_chroma",
]

#: ITU-R BT.601 weights of R, G, B in the grey level.
LUMA = (0.299, 0.587, 0.114)


def clipped_share(images: torch.Tensor, *, tolerance: float = 1 / 255) -> torch.Tensor:
    """For each image, the fraction of pixels with at least one channel within ``tolerance``
    (default one 8-bit level) of 0 or 1: shape ``(N,)``, each value in [0, 1]."""
    validate_image(images, "images")
    if not isinstance(tolerance, numbers.Real) or not 0 <= tolerance < 0.5:
        raise ValueError(f"tolerance must be a number in [0, 0.5), got {tolerance!r}")
    x = images.detach()
    clipped = ((x <= tolerance) | (x >= 1 - tolerance)).any(dim=1)        # (N, H, W)
    return clipped.flatten(1).float().mean(dim=1).cpu()


def gray(images: torch.Tensor) -> torch.Tensor:
    """The grey level ``0.299 R + 0.587 G + 0.114 B`` of each pixel: shape ``(N, H, W)``."""
    validate_image(images, "images")
    weights = torch.tensor(LUMA, dtype=images.dtype, device=images.device).view(1, 3, 1, 1)
    return (images.detach() * weights).sum(dim=1)


def brightness(images: torch.Tensor) -> torch.Tensor:
    """The mean gray level (:func:`gray`) of each image: shape ``(N,)``, in [0, 1]."""
    return gray(images).flatten(1).mean(dim=1).float().cpu()


def contrast(images: torch.Tensor) -> torch.Tensor:
    """The RMS contrast of each image, the standard deviation of its grey level over the pixels
    (population, ``1/(HW)``): shape ``(N,)``, in [0, 0.5]."""
    return gray(images).double().flatten(1).std(dim=1, correction=0).float().cpu()


def colorfulness(images: torch.Tensor) -> torch.Tensor:
    """Hasler & Suesstrunk's (2003) colourfulness of each image, on the [0, 1] scale (their
    0-255 values divided by 255): ``sqrt(sd(rg)^2 + sd(yb)^2) + 0.3 sqrt(mean(rg)^2 + mean(yb)^2)``
    with ``rg = R - G`` and ``yb = (R + G) / 2 - B`` over the pixels (population standard
    deviations). 0 for a grey image; their "highly colourful" starts near 0.43 (109 / 255)."""
    validate_image(images, "images")
    x = images.detach().double()
    rg = (x[:, 0] - x[:, 1]).flatten(1)
    yb = (0.5 * (x[:, 0] + x[:, 1]) - x[:, 2]).flatten(1)
    spread = torch.sqrt(rg.var(dim=1, correction=0) + yb.var(dim=1, correction=0))
    offset = torch.sqrt(rg.mean(dim=1) ** 2 + yb.mean(dim=1) ** 2)
    return (spread + 0.3 * offset).float().cpu()


def saturation(images: torch.Tensor) -> torch.Tensor:
    """The mean HSV saturation ``(max - min) / max`` of the pixels of each image (0 for black
    pixels): shape ``(N,)``, in [0, 1]."""
    validate_image(images, "images")
    x = images.detach().double()
    high, low = x.amax(dim=1), x.amin(dim=1)
    sat = torch.where(high > 0, (high - low) / high.clamp_min(1e-12), torch.zeros_like(high))
    return sat.flatten(1).mean(dim=1).float().cpu()


def tone_statistics(images: torch.Tensor) -> dict[str, torch.Tensor]:
    """``{"brightness", "contrast", "colorfulness", "saturation"}`` of each image, each of shape ``(N,)``."""
    return {"brightness": brightness(images), "contrast": contrast(images),
            "colorfulness": colorfulness(images), "saturation": saturation(images)}


def milky_share(images: torch.Tensor, *, pale: float = 0.5, speckle: float = 0.02) -> torch.Tensor:
    """For each image, the share of its pixels that are pale (every channel above ``pale``) and lie in
    fine colored speckle: shape ``(N,)``, in [0, 1]. The milky veil of class visualizations.

    The speckle is the color's fine detail: the opponent channels ``R - G`` and ``(R + G) / 2 - B``
    minus their Gaussian blur (sigma 1 pixel), its length per pixel, averaged locally (Gaussian,
    sigma 2); a pixel is in speckle when that local mean exceeds ``speckle``. In photos the fine
    detail is in the brightness and pale areas (paper, sky, a cutting board) have smooth color: our 32
    offline photos score at most 0.093 at 224 px; the ``natural`` recipe's class images 0.13-0.36.
    Images smaller than 7 pixels a side are too small to measure."""
    validate_image(images, "images")
    if images.shape[-1] < 7 or images.shape[-2] < 7:
        raise ValueError(f"images must be at least 7x7 pixels, got {tuple(images.shape[-2:])}")
    for name, value in (("pale", pale), ("speckle", speckle)):
        if not isinstance(value, numbers.Real) or not 0 <= value < 1:
            raise ValueError(f"{name} must be a number in [0, 1), got {value!r}")
    x = images.detach().double()
    rg = x[:, 0] - x[:, 1]
    yb = 0.5 * (x[:, 0] + x[:, 1]) - x[:, 2]
    opponent = torch.stack([rg, yb], dim=1)
    detail = (opponent - mirrored_blur(opponent, 1.0)).pow(2).sum(dim=1, keepdim=True).sqrt()
    speckled = mirrored_blur(detail, 2.0)[:, 0] > speckle
    milky = (x.amin(dim=1) > pale) & speckled
    return milky.flatten(1).double().mean(dim=1).float().cpu()


def vivid_chroma(images: torch.Tensor, *, quantile: float = 0.95) -> torch.Tensor:
    """For each image, the ``quantile`` (default 0.95) of its pixels' chroma ``max(R, G, B) - min(R, G, B)``:
    how colorful its most colorful 5% are, shape ``(N,)``, in [0, 1]. Neon shows here: our 32
    offline photos reach at most 0.71 at 224 px (an espresso cup, a fundus photo, a red bottle cap),
    the free-contrast Fourier recipe's class images 0.76-0.93."""
    validate_image(images, "images")
    if not isinstance(quantile, numbers.Real) or not 0 <= quantile <= 1:
        raise ValueError(f"quantile must be a number in [0, 1], got {quantile!r}")
    x = images.detach().double()
    chroma = (x.amax(dim=1) - x.amin(dim=1)).flatten(1)
    return torch.quantile(chroma, float(quantile), dim=1).float().cpu()


def _radial_frequency(h: int, w: int) -> torch.Tensor:
    """Frequency of each 2-D FFT bin in cycles per pixel (0 .. 0.5 * sqrt(2)): shape ``(h, w)``."""
    fy = torch.fft.fftfreq(h)[:, None]
    fx = torch.fft.fftfreq(w)[None, :]
    return torch.sqrt(fx ** 2 + fy ** 2)


def high_frequency_share(images: torch.Tensor, *, cutoff: float = 0.25) -> torch.Tensor:
    """For each image, the share of the spectral energy ``|FFT|^2`` of its grey level (mean removed)
    at radial frequencies above ``cutoff`` cycles per pixel (default 0.25: half the Nyquist
    frequency): shape ``(N,)``, each value in [0, 1]; 0 for a flat image."""
    if not isinstance(cutoff, numbers.Real) or not 0 < cutoff < 0.5:
        raise ValueError(f"cutoff must be a frequency in (0, 0.5) cycles per pixel, got {cutoff!r}")
    g = gray(images).double()
    g = g - g.mean(dim=(-2, -1), keepdim=True)
    energy = torch.fft.fft2(g).abs().pow(2)
    high = _radial_frequency(*g.shape[-2:]).to(energy.device) > cutoff
    total = energy.flatten(1).sum(dim=1)
    share = (energy * high).flatten(1).sum(dim=1) / total.clamp_min(1e-30)
    return torch.where(total > 1e-20, share, torch.zeros_like(share)).float().cpu()


def border_detail_ratio(images: torch.Tensor, *, interior: int = 8) -> torch.Tensor:
    """For each image, the largest over its four outermost lines (first and last row, first and last
    column) of the line's median squared Laplacian of the grey level (4 neighbours, edges repeated),
    divided by the median over the interior (pixels at least ``interior`` from every border): shape
    ``(N,)``. Medians, so that one object or star crossing a border does not count, a dotted line
    along it does. The offline photos at 256 px: median 0.9, 27 of 32 below 2.4 (a photo with detail
    at a border and a flat interior, more)."""
    validate_image(images, "images")
    interior = validation.non_negative_int(interior, "interior")
    h, w = images.shape[-2:]
    if min(h, w) <= 2 * interior:
        raise ValueError(f"images of {h}x{w} px have no interior {interior} px from every border")
    g = F.pad(gray(images).double()[:, None], (1, 1, 1, 1), mode="replicate")
    kernel = torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]], dtype=g.dtype,
                          device=g.device).view(1, 1, 3, 3)
    energy = F.conv2d(g, kernel)[:, 0].pow(2)                                    # (N, H, W)
    lines = torch.stack([line.median(dim=-1).values for line in
                         (energy[:, 0], energy[:, -1], energy[:, :, 0], energy[:, :, -1])], dim=1)
    inside = energy[:, interior:h - interior, interior:w - interior].flatten(1).median(dim=1).values
    return (lines.amax(dim=1) / inside.clamp_min(1e-20)).float().cpu()


def chroma_high_frequency_share(images: torch.Tensor, *, cutoff: float = 0.25) -> torch.Tensor:
    """For each image, the share of the spectral energy ``|FFT|^2`` of its two chroma channels (ITU-R
    BT.601 ``Cb = 0.564 (B - Y)`` and ``Cr = 0.713 (R - Y)``, each with its mean removed, their energies
    added) at radial frequencies above ``cutoff`` cycles per pixel (default 0.25): shape ``(N,)``, each
    value in [0, 1]; 0 for an image without color variation (flat, or grey). Photos keep their fine
    detail in the brightness and have smooth color (about 0.006 at 384 px); fine colored stripes or
    speckle raise it towards 1. The luminance counterpart is :func:`high_frequency_share`."""
    validate_image(images, "images")
    if not isinstance(cutoff, numbers.Real) or not 0 < cutoff < 0.5:
        raise ValueError(f"cutoff must be a frequency in (0, 0.5) cycles per pixel, got {cutoff!r}")
    x = images.detach().double()
    y = sum(w * x[:, i] for i, w in enumerate(LUMA))
    chroma = torch.stack([0.564 * (x[:, 2] - y), 0.713 * (x[:, 0] - y)], dim=1)     # (N, 2, H, W)
    chroma = chroma - chroma.mean(dim=(-2, -1), keepdim=True)
    energy = torch.fft.fft2(chroma).abs().pow(2).sum(dim=1)                         # (N, H, W)
    high = _radial_frequency(*chroma.shape[-2:]).to(energy.device) > cutoff
    total = energy.flatten(1).sum(dim=1)
    share = (energy * high).flatten(1).sum(dim=1) / total.clamp_min(1e-30)
    return torch.where(total > 1e-20, share, torch.zeros_like(share)).float().cpu()


def streak_share(images: torch.Tensor, *, direction: str = "horizontal", angle: float = 7.0,
                 cutoff: float = 0.1) -> torch.Tensor:
    """For each image, the share of the spectral energy ``|FFT|^2`` of its grey level (mean removed, a
    Hann window in each direction against the edges' leakage) at radial frequencies above ``cutoff``
    cycles per pixel that lies within ``angle`` degrees of the vertical frequency axis (``direction=
    "horizontal"``: horizontal lines, streaks and smears, which vary from row to row only) or of the
    horizontal axis (``"vertical"``): shape ``(N,)``, each value in [0, 1]; 0 without fine detail (less
    than a millionth of the energy).
    Held-out photos score about 0.1 for either direction at 384 px, Starry Night 0.1 (horizontal) and 0.06
    (vertical); a stylizer that smears along the rows raises the horizontal share to 0.3-0.5."""
    validate_image(images, "images")
    if direction not in ("horizontal", "vertical"):
        raise ValueError(f"direction must be 'horizontal' or 'vertical', got {direction!r}")
    if not isinstance(cutoff, numbers.Real) or not 0 < cutoff < 0.5:
        raise ValueError(f"cutoff must be a frequency in (0, 0.5) cycles per pixel, got {cutoff!r}")
    if not isinstance(angle, numbers.Real) or not 0 < angle < 45:
        raise ValueError(f"angle must be in (0, 45) degrees, got {angle!r}")
    g = gray(images).double()
    g = g - g.mean(dim=(-2, -1), keepdim=True)
    h, w = g.shape[-2:]
    window = torch.outer(torch.hann_window(h, dtype=g.dtype), torch.hann_window(w, dtype=g.dtype))
    energy = torch.fft.fft2(g * window.to(g.device)).abs().pow(2)
    fy = torch.fft.fftfreq(h, dtype=g.dtype)[:, None].abs()
    fx = torch.fft.fftfreq(w, dtype=g.dtype)[None, :].abs()
    along, across = (fx, fy) if direction == "horizontal" else (fy, fx)
    fine = _radial_frequency(h, w) > cutoff
    lines = fine & (along <= across * math.tan(math.radians(angle))).cpu()
    energy = energy.cpu()
    total = (energy * fine).flatten(1).sum(dim=1)
    share = (energy * lines).flatten(1).sum(dim=1) / total.clamp_min(1e-30)
    has_detail = total > 1e-6 * energy.flatten(1).sum(dim=1).clamp_min(1e-20)      # not rounding noise
    return torch.where(has_detail, share, torch.zeros_like(share)).float()


def amplitude_spectrum(images: torch.Tensor, *, color_transform: torch.Tensor | None = None) -> torch.Tensor:
    """The mean magnitude ``|rfft2|`` over images of each channel of ``images`` (mean removed per image
    and channel): shape ``(3, H, W // 2 + 1)``, the layout of ``torch.fft.rfft2``.
    ``color_transform``: a 3x3 matrix ``M`` applied to each pixel's colours first (``M @ rgb``), e.g.
    the inverse of a colour-decorrelation basis."""
    validate_image(images, "images")
    x = images.detach().double()
    x = x - x.mean(dim=(-2, -1), keepdim=True)
    if color_transform is not None:
        if not isinstance(color_transform, torch.Tensor) or tuple(color_transform.shape) != (3, 3):
            raise ValueError("color_transform must be a 3x3 tensor (applied as M @ rgb)")
        x = torch.einsum("dc,nchw->ndhw", color_transform.detach().double().to(x.device), x)
    return torch.fft.rfft2(x).abs().mean(dim=0).float().cpu()


@functools.lru_cache(maxsize=4)
def _photo_batch(size: int) -> torch.Tensor:
    from .data import sample_images
    from .image import load_image

    return torch.cat([load_image(s.path, size) for s in sample_images("photo")])


def photo_amplitude_spectrum(size: int, *, color_transform: torch.Tensor | None = None) -> torch.Tensor:
    """:func:`amplitude_spectrum` of the package's offline photos (:func:`cs_utils.sample_images`,
    ``kind="photo"``), each resized and centre-cropped to ``size`` x ``size``: shape
    ``(3, size, size // 2 + 1)``. Computed from the photos on this machine, never downloaded."""
    size = validation.positive_int(size, "size")
    if size < 8:
        raise ValueError(f"size must be at least 8 pixels, got {size}")
    return amplitude_spectrum(_photo_batch(size), color_transform=color_transform)


def photo_statistics(size: int = 224) -> dict[str, float]:
    """Median :func:`high_frequency_share`, mean :func:`clipped_share` and the largest
    :func:`milky_share` and :func:`vivid_chroma` (keys ``"milky_share_max"``, ``"vivid_chroma_max"``)
    of the offline photos at ``size`` x ``size``: the reference values for generated images."""
    photos = _photo_batch(validation.positive_int(size, "size"))
    return {"high_frequency_share": float(high_frequency_share(photos).median()),
            "clipped_share": float(clipped_share(photos).mean()),
            "milky_share_max": float(milky_share(photos).max()),
            "vivid_chroma_max": float(vivid_chroma(photos).max())}


def shifted_crop(images: torch.Tensor, shift: float = 0.2) -> torch.Tensor:
    """The window of side ``1 - shift`` of each image that starts ``shift`` of the side from its
    top-left corner (the lower-right ``80%`` for ``shift=0.2``), resized back to the images' size
    with antialiasing: the same content moved by ``shift`` of the side and enlarged."""
    validate_image(images, "images")
    if not isinstance(shift, numbers.Real) or not 0 <= shift < 1:
        raise ValueError(f"shift must be a fraction of the side in [0, 1), got {shift!r}")
    h, w = images.shape[-2:]
    dy, dx = round(shift * h), round(shift * w)
    if dy >= h or dx >= w:
        raise ValueError(f"shift {shift} leaves nothing of a {h}x{w} image")
    window = images[..., dy:, dx:]
    if shift == 0:
        return images.clone()
    return F.interpolate(window, size=(h, w), mode="bilinear", align_corners=False,
                         antialias=True).clamp(0, 1)


def class_ranks(model: nn.Module, images: torch.Tensor, targets, *, size: int | None = None) -> torch.Tensor:
    """Rank of each image's target class among ``model``'s scores (0 = top-1, < 5 = in the top 5),
    after resizing the images to ``size`` (default: the model's native size; bilinear, antialiased
    when shrinking). ``targets``: one class index, or one per image. Returns an int64 tensor ``(N,)``."""
    x = model_input(model, images, "images")
    targets = validation.class_indices(targets, images.shape[0], classes=validation.num_classes(model),
                                   what="targets")
    size = int(size or getattr(model, "native_image_size", images.shape[-1]))
    device = x.device
    if x.shape[-2:] != (size, size):
        shrinking = size < min(x.shape[-2:])
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=shrinking)
    with torch.no_grad(), evaluating(model):
        scores = model(x)
    own = scores.gather(1, targets.to(device)[:, None])
    return (scores > own).sum(dim=1).cpu()
