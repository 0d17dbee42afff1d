"""GrabCut seeded from a saliency map: seeds from percentiles, masks on synthetic scenes."""

import numpy as np
import pytest
import torch

import cs_utils
from cs_utils import segmentation as seg


def square_scene(size=64, top=16, side=32, generator=None):
    """A textured red square on a textured blue-green background, and its true mask."""
    g = generator if generator is not None else torch.Generator().manual_seed(0)
    x = torch.empty(1, 3, size, size)
    x[0, 0], x[0, 1], x[0, 2] = 0.15, 0.55, 0.6
    x[:, :, top:top + side, top:top + side] = torch.tensor([0.85, 0.15, 0.1])[:, None, None]
    x = (x + 0.05 * torch.randn(x.shape, generator=g)).clamp(0, 1)
    mask = torch.zeros(1, size, size, dtype=torch.bool)
    mask[:, top:top + side, top:top + side] = True
    return x, mask


def iou(a, b):
    return ((a & b).sum() / (a | b).sum()).item()


def test_seeds_follow_the_percentiles_by_hand():
    saliency = torch.arange(100, dtype=torch.float32).view(10, 10)
    labels = seg.saliency_seeds(saliency, foreground=90, background=20, sigma=0)
    flat = labels.ravel()
    # values 0..99: below the 20th percentile (19.8) -> sure background, >= 90th (89.1) -> sure foreground,
    # the rest split at the median (49.5) into probable background / probable foreground.
    assert (flat[:20] == seg.BACKGROUND).all()
    assert (flat[20:50] == seg.PROBABLE_BACKGROUND).all()
    assert (flat[50:90] == seg.PROBABLE_FOREGROUND).all()
    assert (flat[90:] == seg.FOREGROUND).all()
    assert labels.dtype == np.uint8 and labels.shape == (10, 10)


def test_grabcut_recovers_a_square_from_a_rough_saliency_blob(caller_state):
    x, truth = square_scene()
    yy, xx = torch.meshgrid(torch.arange(64.0), torch.arange(64.0), indexing="ij")
    # a blob centred on the square, too small and too round: GrabCut must find the edges
    saliency = torch.exp(-((yy - 30) ** 2 + (xx - 33) ** 2) / (2 * 9.0 ** 2))[None]
    saliency = saliency + 0.05 * torch.rand(saliency.shape, generator=torch.Generator().manual_seed(1))
    x_before, s_before = x.clone(), saliency.clone()
    mask = cs_utils.grabcut_from_saliency(x, saliency)
    assert mask.shape == (1, 64, 64) and mask.dtype == torch.bool
    assert iou(mask, truth) > 0.9
    seeds_only = torch.from_numpy(seg.saliency_seeds(saliency[0]) % 2 == 1)[None]   # FGD or PR_FGD
    assert iou(mask, truth) > iou(seeds_only, truth) + 0.1      # GrabCut improved on the seeds
    assert torch.equal(x, x_before) and torch.equal(saliency, s_before)


def test_grabcut_is_repeatable_and_batched():
    x1, _ = square_scene(top=8)
    x2, _ = square_scene(top=24, generator=torch.Generator().manual_seed(5))
    x = torch.cat([x1, x2])
    saliency = x[:, 0] - x[:, 2]           # redness marks the object
    a = cs_utils.grabcut_from_saliency(x, saliency, generator=torch.Generator().manual_seed(0))
    b = cs_utils.grabcut_from_saliency(x, saliency, generator=torch.Generator().manual_seed(0))
    assert torch.equal(a, b)
    single = cs_utils.grabcut_from_saliency(x[1:], saliency[1:])
    assert iou(single[0], a[1]) > 0.95


def test_grabcut_rejects_bad_input():
    x, _ = square_scene()
    with pytest.raises(ValueError, match=r"\(N, H, W\)"):
        cs_utils.grabcut_from_saliency(x, torch.rand(64, 64))
    with pytest.raises(ValueError, match="background < foreground"):
        cs_utils.grabcut_from_saliency(x, torch.rand(1, 64, 64), foreground=20, background=30)
    with pytest.raises(ValueError, match="iterations"):
        cs_utils.grabcut_from_saliency(x, torch.rand(1, 64, 64), iterations=0)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        cs_utils.grabcut_from_saliency(x * 255, torch.rand(1, 64, 64))
