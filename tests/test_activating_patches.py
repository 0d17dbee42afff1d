"""Maximally activating units and their receptive-field patches."""

import pytest
import torch
from torch import nn

import cs_utils


def _stack(*layers):
    model = nn.Sequential(*layers)
    return model.eval()


def _spot_detector():
    """One 3x3 conv that sums the red channel over its window (no padding)."""
    conv = nn.Conv2d(3, 2, 3, bias=False)
    with torch.no_grad():
        conv.weight.zero_()
        conv.weight[0, 0] = 1.0   # channel 0: red
        conv.weight[1, 2] = 1.0   # channel 1: blue
    return _stack(conv)


def test_top_activations_by_hand(caller_state):
    model = _spot_detector()
    images = torch.zeros(4, 3, 8, 8)
    images[1, 0, 2:5, 3:6] = 1.0      # a full red 3x3 spot: activation 9 at (2, 3)
    images[3, 0, 5, 0] = 0.5          # weaker red pixel: 0.5 at rows 3..5, cols 0
    images[2, 2, 0, 7] = 1.0          # blue corner
    state = caller_state(model, images)
    top = cs_utils.top_activations(model, images, "0", [0, 1], k=2, batch_size=3, progress=False)
    state.assert_unchanged()
    assert top.channels == (0, 1) and top.value.shape == (2, 2)
    assert top.value[0].tolist() == [9.0, 0.5] and top.image[0].tolist() == [1, 3]
    assert (top.row[0, 0].item(), top.col[0, 0].item()) == (2, 3)
    assert top.image[1, 0].item() == 2 and (top.row[1, 0].item(), top.col[1, 0].item()) == (0, 5)
    every = cs_utils.top_activations(model, images, "0", 0, k=3, one_per_image=False, progress=False)
    assert every.value[0].tolist() == [9.0, 6.0, 6.0] and every.image[0].tolist() == [1, 1, 1]

    field = cs_utils.receptive_field(model, "0", 8)
    patches = cs_utils.crop_patches(images, top, field)
    assert patches.shape == (2, 2, 3, 3, 3)
    assert torch.equal(patches[0, 0], images[1, :, 2:5, 3:6])
    assert patches[0, 0, 0].sum() == 9


def test_crop_patches_fill_outside_the_image():
    model = _stack(nn.Conv2d(3, 1, 3, padding=1, bias=False))
    with torch.no_grad():
        model[0].weight.fill_(1.0)
    images = torch.zeros(1, 3, 6, 6)
    images[0, :, 0, 0] = 1.0
    top = cs_utils.top_activations(model, images, "0", [0], k=1, progress=False)
    assert (top.row.item(), top.col.item()) == (0, 0)
    field = cs_utils.receptive_field(model, "0", 6)
    patch = cs_utils.crop_patches(images, top, field, fill=0.25)[0, 0]
    assert patch.shape == (3, 3, 3)
    assert torch.all(patch[:, 0, :] == 0.25) and torch.all(patch[:, :, 0] == 0.25)
    assert torch.equal(patch[:, 1:, 1:], images[0, :, :2, :2])


def test_top_activations_errors(caller_state):
    model = _spot_detector()
    images = torch.rand(3, 3, 8, 8)
    state = caller_state(model, images)
    with pytest.raises(IndexError, match="channels"):
        cs_utils.top_activations(model, images, "0", [5], progress=False)
    with pytest.raises(ValueError, match="only 3 images"):
        cs_utils.top_activations(model, images, "0", [0], k=4, progress=False)
    with pytest.raises(KeyError):
        cs_utils.top_activations(model, images, "conv", [0], progress=False)
    with pytest.raises(ValueError, match="k must be"):
        cs_utils.top_activations(model, images, "0", [0], k=0, progress=False)
    state.assert_unchanged()
    field = cs_utils.receptive_field(model, "0", 10)
    top = cs_utils.top_activations(model, images, "0", [0], k=1, progress=False)
    with pytest.raises(ValueError, match="computed for"):
        cs_utils.crop_patches(images, top, field)


def test_patches_of_lite0_depend_only_on_their_receptive_field(lite0):
    """Changing every pixel outside a unit's box leaves its activation unchanged."""
    x = cs_utils.load_image("chelsea", 96)
    top = cs_utils.top_activations(lite0, x, "blocks.4", [3], k=1, progress=False)
    field = cs_utils.receptive_field(lite0, "blocks.4", 96)
    t, l, b, r = field.box(top.row.item(), top.col.item())
    assert (b - t) * (r - l) < 0.5 * 96 * 96  # the box leaves most of the image out
    noisy = torch.rand(1, 3, 96, 96, generator=torch.Generator().manual_seed(0))
    noisy[..., t:b, l:r] = x[..., t:b, l:r]
    with torch.no_grad():
        a = cs_utils.extract_features(lite0, x, ["blocks.4"])["blocks.4"][0, 3, top.row, top.col]
        c = cs_utils.extract_features(lite0, noisy, ["blocks.4"])["blocks.4"][0, 3, top.row, top.col]
    assert torch.allclose(a, top.value[0], atol=1e-5) and torch.allclose(a, c, atol=1e-4)


def test_top_activations_inside_the_image_and_one_per_group():
    # weights: left column -1, the rest +1. On an all-ones image an interior unit gives 3 channels x
    # (6 - 3) = 9, but a unit in column 0 has padding under its negative column: 3 x 6 = 18.
    model = _stack(nn.Conv2d(3, 1, 3, padding=1, bias=False))
    with torch.no_grad():
        model[0].weight.fill_(1.0)
        model[0].weight[..., 0] = -1.0
    images = torch.zeros(4, 3, 6, 6)
    images[0] = 1.0
    images[1, :, 1:4, 2:4] = 0.9      # unit (2, 2): 3 rows x 2 cols x 3 channels x 0.9 = 16.2
    field = cs_utils.receptive_field(model, "0", 6)
    anywhere = cs_utils.top_activations(model, images, "0", [0], k=1, progress=False)
    assert anywhere.image.item() == 0 and anywhere.value.item() == pytest.approx(18.0)
    assert (anywhere.row.item(), anywhere.col.item()) == (1, 0)
    inside = cs_utils.top_activations(model, images, "0", [0], k=2, field=field, progress=False)
    assert inside.image[0].tolist() == [1, 0]
    assert inside.value[0].tolist() == pytest.approx([16.2, 9.0])
    assert (inside.row[0, 0].item(), inside.col[0, 0].item()) == (2, 2)
    for j in range(2):
        t, l, b, r = field.box(int(inside.row[0, j]), int(inside.col[0, j]), clip=False)
        assert t >= 0 and l >= 0 and b <= 6 and r <= 6
    grouped = cs_utils.top_activations(model, images, "0", [0], k=2, field=field, groups=[0, 0, 1, 1],
                                       progress=False)
    assert grouped.image[0].tolist() == [1, 2] and grouped.value[0].tolist() == pytest.approx([16.2, 0.0])
    with pytest.raises(ValueError, match="only 2 images"):
        cs_utils.top_activations(model, images, "0", [0], k=3, groups=[0, 0, 1, 1], progress=False)
    with pytest.raises(ValueError, match="one id per image"):
        cs_utils.top_activations(model, images, "0", [0], k=1, groups=[0, 1], progress=False)
    too_wide = cs_utils.receptive_field(_stack(nn.Conv2d(3, 1, 7, padding=3)), "0", 6)
    with pytest.raises(ValueError, match="whole receptive field"):
        cs_utils.top_activations(model, images[:1], "0", [0], k=1, field=too_wide, progress=False)
