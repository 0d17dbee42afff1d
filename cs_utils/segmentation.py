"""Segmentation without supervision: GrabCut seeded from a saliency map (Simonyan et al. 2014, sec. 3.1).

A classifier never saw a mask, yet its saliency map says roughly where the
object is. The most salient pixels seed the foreground colour model of
GrabCut (OpenCV's ``cv2.grabCut``), the least salient the background; GrabCut
then settles the rest from colour statistics and image edges.
"""

from __future__ import annotations

import numpy as np
import torch

from .validation import positive_int, validate_image

__all__ = ["grabcut_from_saliency", "saliency_seeds"]

# OpenCV's GrabCut labels (cv2.GC_BGD, GC_FGD, GC_PR_BGD, GC_PR_FGD), named for the tests and docs.
BACKGROUND, FOREGROUND, PROBABLE_BACKGROUND, PROBABLE_FOREGROUND = 0, 1, 2, 3


def _smooth(saliency: np.ndarray, sigma: float) -> np.ndarray:
    import cv2

    if sigma <= 0:
        return saliency
    return cv2.GaussianBlur(saliency, (0, 0), sigmaX=sigma, sigmaY=sigma, borderType=cv2.BORDER_REFLECT)


def saliency_seeds(saliency, *, foreground: float = 95.0, background: float = 30.0,
                   sigma: float | None = None) -> np.ndarray:
    """GrabCut labels (H, W) uint8 from one saliency map (H, W).

    The map is first smoothed with a Gaussian of ``sigma`` pixels (default:
    1.5 % of the image side; gradient maps are speckled). Pixels above the
    ``foreground`` percentile become sure foreground, those below the
    ``background`` percentile sure background; the rest probable foreground
    when above the median, else probable background.
    """
    s = saliency.detach().float().cpu().numpy() if isinstance(saliency, torch.Tensor) else np.asarray(
        saliency, dtype=np.float32)
    if s.ndim != 2:
        raise ValueError(f"expected one saliency map of shape (H, W), got {s.shape}")
    if not 0 <= background < foreground <= 100:
        raise ValueError(f"need 0 <= background < foreground <= 100 (percentiles), got background="
                         f"{background}, foreground={foreground}")
    if not np.isfinite(s).all():
        raise ValueError("saliency map contains NaN or infinite values")
    sigma = 0.015 * max(s.shape) if sigma is None else float(sigma)
    s = _smooth(np.ascontiguousarray(s, dtype=np.float32), sigma)
    high, low, middle = np.percentile(s, [foreground, background, 50])
    labels = np.where(s > middle, PROBABLE_FOREGROUND, PROBABLE_BACKGROUND).astype(np.uint8)
    labels[s < low] = BACKGROUND
    labels[s >= high] = FOREGROUND
    return labels


def grabcut_from_saliency(x: torch.Tensor, saliency: torch.Tensor, *, foreground: float = 95.0,
                          background: float = 30.0, sigma: float | None = None, iterations: int = 5,
                          generator: torch.Generator | None = None) -> torch.Tensor:
    """Foreground masks (N, H, W) bool for images ``x`` (N, 3, H, W) in [0, 1] from their saliency maps.

    Seeds come from :func:`saliency_seeds` (percentiles ``foreground`` and
    ``background``, smoothing ``sigma``); ``cv2.grabCut`` refines them for
    ``iterations`` rounds. GrabCut's colour models start from k-means, whose
    random start is seeded from ``generator`` (default: seed 0), so results
    repeat. Returns the mask on ``x``'s device; the inputs are not modified.
    """
    import cv2

    validate_image(x)
    if not isinstance(saliency, torch.Tensor) or saliency.shape != (x.shape[0], *x.shape[2:]):
        raise ValueError(f"saliency must be a tensor of shape (N, H, W) = {(x.shape[0], *x.shape[2:])}, "
                         f"got {getattr(saliency, 'shape', type(saliency).__name__)}")
    iterations = positive_int(iterations, "iterations")
    generator = generator if generator is not None else torch.Generator().manual_seed(0)
    masks = []
    for image, smap in zip(x.detach().cpu(), saliency.detach().cpu()):
        labels = saliency_seeds(smap, foreground=foreground, background=background, sigma=sigma)
        bgr = np.ascontiguousarray((image.permute(1, 2, 0).numpy()[..., ::-1] * 255).round().astype(np.uint8))
        background_model = np.zeros((1, 65), np.float64)
        foreground_model = np.zeros((1, 65), np.float64)
        cv2.setRNGSeed(int(torch.randint(0, 2**31 - 1, (1,), generator=generator)))
        cv2.grabCut(bgr, labels, None, background_model, foreground_model, iterations,
                    cv2.GC_INIT_WITH_MASK)
        masks.append(torch.from_numpy((labels == FOREGROUND) | (labels == PROBABLE_FOREGROUND)))
    return torch.stack(masks).to(x.device)
