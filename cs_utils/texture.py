"""Non-parametric texture synthesis (Efros & Leung, "Texture Synthesis by Non-parametric
Sampling", ICCV 1999), and the texture patches the notebook uses.

The output grows one pixel at a time in scanline order. For each new pixel, the
already-filled part of its ``window x window`` neighbourhood is compared with every
window of the sample (sum of squared differences, Gaussian-weighted so near pixels
count more); among the windows within ``1 + epsilon`` of the best match, one is
drawn at random and its centre pixel is copied. Every output pixel is therefore a
pixel of the sample: nothing new is ever painted.

Vectorised over the sample's windows: the masked SSD against all of them is two
matrix-vector products, ``sum w (p - n)^2 = (p^2) @ w - 2 p @ (w n) + sum w n^2``.
"""

from __future__ import annotations

import torch

__all__ = ["TEXTURE_NAMES", "copy_fraction", "efros_leung", "load_texture"]

# Texture patches from scikit-image (all CC0: brick and gravel from cc0textures.com, grass
# from DeviantArt user linolafett), and a crop of a colour photo.
TEXTURE_NAMES = ("brick", "grass", "gravel", "starry_night", "immunohistochemistry")


def load_texture(name: str, size: int = 64, *, scale: float = 0.25) -> torch.Tensor:
    """A small texture patch (1, 3, size, size) in [0, 1] for Efros-Leung synthesis.

    ``name``: one of :data:`TEXTURE_NAMES`: scikit-image's greyscale textures ``brick``,
    ``grass``, ``gravel`` (512 x 512), or a style image (see :func:`cs_utils.load_style`).
    The image is first resized by ``scale`` (small textures keep the search cheap and
    still show several repeats of the pattern), then its top-left ``size`` x ``size``
    corner is kept.
    """
    from .image import load_image
    from .style_catalog import STYLE_NAMES, load_style

    if name not in TEXTURE_NAMES:
        raise KeyError(f"no texture called {name!r}; choose one of {TEXTURE_NAMES}, or pass any "
                       "(1, 3, H, W) image to efros_leung")
    if not 0 < scale <= 1:
        raise ValueError(f"scale must be in (0, 1], got {scale}")
    if name in STYLE_NAMES:
        image = load_style(name)
    else:
        import skimage.data

        image = load_image(getattr(skimage.data, name)())
    h, w = image.shape[-2:]
    image = load_image(image, (max(size, round(h * scale)), max(size, round(w * scale))))
    return image[..., :size, :size].contiguous()


def _gaussian_window(window: int, dtype) -> torch.Tensor:
    sigma = window / 6.4  # Efros & Leung's choice
    r = torch.arange(window, dtype=dtype) - window // 2
    g = torch.exp(-(r[:, None] ** 2 + r[None, :] ** 2) / (2 * sigma ** 2))
    return g / g.sum()


def efros_leung(sample: torch.Tensor, size, *, window: int = 11, epsilon: float = 0.1,
                seed_size: int = 3, generator: torch.Generator | None = None,
                return_source: bool = False, progress: bool = True):
    """Synthesise a ``size`` texture from ``sample`` (1, 3, h, w) in [0, 1] (Efros & Leung 1999).

    ``size``: an int (square) or ``(height, width)``. ``window``: odd side of the
    neighbourhood compared (bigger captures larger structures, costs more, copies more
    verbatim). ``epsilon``: windows with error at most ``(1 + epsilon)`` times the best
    are candidates, one drawn at random (``generator``). The top-left ``seed_size``
    square is a random crop of the sample; the rest grows in scanline order.

    Returns the image (1, 3, H, W) on ``sample``'s device; with ``return_source=True``
    also a (H, W, 2) long tensor of the sample coordinates each pixel was copied from.
    """
    from tqdm.auto import tqdm

    from .validation import validate_image

    validate_image(sample, "sample")
    if sample.shape[0] != 1:
        raise ValueError(f"sample must be one image (1, 3, h, w), got a batch of {sample.shape[0]}")
    if isinstance(size, int) and not isinstance(size, bool):
        size = (size, size)
    if (not isinstance(size, (tuple, list)) or len(size) != 2
            or not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in size)):
        raise ValueError(f"size must be a positive int or a (height, width) pair, got {size!r}")
    if not isinstance(window, int) or window < 3 or window % 2 == 0:
        raise ValueError(f"window must be an odd int >= 3, got {window!r}")
    h_s, w_s = sample.shape[-2:]
    if h_s < window or w_s < window:
        raise ValueError(f"the sample ({h_s} x {w_s}) is smaller than the window ({window}); "
                         "use a bigger sample or a smaller window")
    if not isinstance(seed_size, int) or not 1 <= seed_size <= min(h_s, w_s, *size):
        raise ValueError(f"seed_size must be an int from 1 to the smaller side of sample and output, "
                         f"got {seed_size!r}")
    if not epsilon >= 0:
        raise ValueError(f"epsilon must be >= 0, got {epsilon}")

    src = sample.detach()[0].to("cpu", torch.float64).permute(1, 2, 0)       # (h, w, 3)
    # Centred and in float32: the expanded SSD below then rounds to ~1e-7, far below the
    # differences between real windows, and the search runs twice as fast as in float64.
    src = (src - src.mean((0, 1))).to(torch.float32).contiguous()
    r = window // 2
    # Every full window of the sample, flattened: (P, window * window * 3).
    windows = src.unfold(0, window, 1).unfold(1, window, 1)                   # (h', w', 3, k, k)
    n_rows, n_cols = windows.shape[:2]
    windows = windows.permute(0, 1, 3, 4, 2).reshape(n_rows * n_cols, -1)
    centres = src[r:r + n_rows, r:r + n_cols].reshape(-1, 3)
    weight = _gaussian_window(window, torch.float32)[:, :, None].expand(window, window, 3)
    # Away from the borders the filled part of a neighbourhood is always the same "causal"
    # half (the rows above and the pixels to the left), so those pixels search a matrix of
    # only those columns, with both products in one: [p^2, p] @ [w, -2 w n].
    causal = torch.zeros(window, window, 3, dtype=torch.bool)
    causal[:r] = True
    causal[r, :r] = True
    causal = causal.reshape(-1)
    causal_w = weight.reshape(-1)[causal] / weight.reshape(-1)[causal].sum()
    causal_windows = torch.cat([windows[:, causal] ** 2, windows[:, causal]], 1)
    full_windows = torch.cat([windows ** 2, windows], 1)

    height, width = size
    out = torch.zeros(height + 2 * r, width + 2 * r, 3)                       # padded with r
    filled = torch.zeros(height + 2 * r, width + 2 * r, 1)
    source = torch.zeros(height, width, 2, dtype=torch.long)

    # Seed: a random seed_size square of the sample in the top-left corner.
    top = int(torch.randint(0, h_s - seed_size + 1, (1,), generator=generator))
    left = int(torch.randint(0, w_s - seed_size + 1, (1,), generator=generator))
    out[r:r + seed_size, r:r + seed_size] = src[top:top + seed_size, left:left + seed_size]
    filled[r:r + seed_size, r:r + seed_size] = 1
    rows, cols = torch.meshgrid(torch.arange(seed_size), torch.arange(seed_size), indexing="ij")
    source[:seed_size, :seed_size, 0] = rows + top
    source[:seed_size, :seed_size, 1] = cols + left

    # Random numbers drawn up front (one per pixel) keep the loop free of generator calls.
    draws = torch.rand(height * width, generator=generator, dtype=torch.float64).tolist()
    tol = 1e-6  # rounding of the expanded SSD: exact matches must count as exact
    first_causal_row = max(r, seed_size)
    for i in tqdm(range(height), desc="Efros-Leung", disable=not progress, leave=False):
        for j in range(width):
            if i < seed_size and j < seed_size:
                continue
            nb = out[i:i + window, j:j + window].reshape(-1)
            if i >= first_causal_row and r <= j < width - r:
                w, nb, matrix = causal_w, nb[causal], causal_windows
            else:
                mask = filled[i:i + window, j:j + window]
                w = (weight * mask).reshape(-1)
                w, matrix = w / w.sum(), full_windows
            wn = w * nb
            ssd = matrix @ torch.cat([w, -2 * wn]) + (wn * nb).sum()
            candidates = torch.nonzero(ssd <= ssd.min() * (1 + epsilon) + tol).flatten()
            pick = int(candidates[min(int(draws[i * width + j] * len(candidates)), len(candidates) - 1)])
            out[i + r, j + r] = centres[pick]
            filled[i + r, j + r] = 1
            source[i, j, 0] = pick // n_cols + r
            source[i, j, 1] = pick % n_cols + r
    # Copy the sample's own values (not the centred float32 ones): bit-exact pixels of the sample.
    image = sample.detach()[0, :, source[..., 0], source[..., 1]][None].clone()
    return (image, source) if return_source else image


def copy_fraction(source: torch.Tensor) -> torch.Tensor:
    """For a ``source`` map from ``efros_leung(..., return_source=True)``: the fraction of
    output pixels whose right neighbour was copied from the sample pixel right of theirs,
    and likewise below, as a tensor ``[right, below]``.

    Near 1 means the output is long verbatim copies of the sample (the "garbage-free but
    plagiarising" failure); near 0 means pixels were assembled from everywhere.
    """
    right = (source[:, 1:] - source[:, :-1] == torch.tensor([0, 1])).all(-1).double().mean()
    below = (source[1:] - source[:-1] == torch.tensor([1, 0])).all(-1).double().mean()
    return torch.stack([right, below])

