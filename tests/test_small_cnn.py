"""The small CNN: training, accuracy, and its filters as images."""

import numpy as np
import pytest
import torch
from torch import nn

import cs_utils


def _toy_task(n=256, generator=None):
    """Bright left half vs bright right half: any small CNN can learn it."""
    labels = torch.randint(0, 2, (n,), generator=generator)
    images = torch.rand(n, 1, 12, 12, generator=generator) * 0.3
    images[labels == 0, :, :, :6] += 0.6
    images[labels == 1, :, :, 6:] += 0.6
    return images, labels


def test_train_classifier_lowers_the_loss_and_keeps_the_caller_state(caller_state):
    gen = torch.Generator().manual_seed(0)
    images, labels = _toy_task(generator=gen)
    torch.manual_seed(0)
    model = cs_utils.SmallCNN(num_classes=2, kernel_size=5, width=4).eval()
    before = model.conv1.weight.detach().clone()
    state = caller_state(model, images, labels)
    history = cs_utils.train_classifier(model, images, labels, steps=40, batch_size=32, lr=0.01,
                                        generator=gen, progress=False)
    state.assert_unchanged()
    assert history.steps == 40 and len(history.accuracy) == 40 and history.seconds > 0
    assert np.mean(history.loss[-5:]) < 0.5 * np.mean(history.loss[:5])
    assert not torch.equal(model.conv1.weight, before)
    assert cs_utils.classifier_accuracy(model, images, labels) > 0.9


def test_train_classifier_is_repeatable_with_a_generator():
    images, labels = _toy_task(64, torch.Generator().manual_seed(3))
    runs = []
    for _ in range(2):
        torch.manual_seed(0)
        model = cs_utils.SmallCNN(num_classes=2, kernel_size=3, width=2)
        runs.append(cs_utils.train_classifier(model, images, labels, steps=5, batch_size=16,
                                              generator=torch.Generator().manual_seed(7),
                                              progress=False).loss)
    assert runs[0] == runs[1]


def test_train_classifier_restores_mode_after_an_error(caller_state):
    model = cs_utils.SmallCNN(num_classes=2, kernel_size=3, width=2)
    images = torch.rand(8, 1, 12, 12)
    state = caller_state(model, images)
    with pytest.raises(ValueError, match=r"class indices in \[0, 1\]"):
        cs_utils.train_classifier(model, images, torch.full((8,), 5), steps=2, batch_size=4, progress=False)
    state.assert_unchanged()
    with pytest.raises(ValueError, match="labels"):
        cs_utils.train_classifier(model, images, torch.zeros(7, dtype=torch.long), steps=1, progress=False)
    with pytest.raises(ValueError, match="steps"):
        cs_utils.train_classifier(model, images, torch.zeros(8, dtype=torch.long), steps=0, progress=False)


def test_filter_images_rescale_each_filter():
    weight = torch.tensor([[[[1.0, 3.0], [-1.0, 0.0]]], [[[2.0, 2.0], [2.0, 2.0]]]])
    copy_ = weight.clone()
    tiles = cs_utils.filter_images(weight)
    expected = torch.tensor([[[[0.5, 1.0], [0.0, 0.25]]], [[[0.5, 0.5], [0.5, 0.5]]]])
    assert torch.allclose(tiles, expected) and torch.equal(weight, copy_)
    conv = nn.Conv2d(3, 5, 3)
    tiles = cs_utils.filter_images(conv)
    assert tiles.shape == (5, 3, 3, 3) and not tiles.requires_grad
    assert torch.allclose(tiles.flatten(1).amin(1), torch.zeros(5))
    assert torch.allclose(tiles.flatten(1).amax(1), torch.ones(5))
    with pytest.raises(ValueError, match="C_out, C_in"):
        cs_utils.filter_images(torch.zeros(3, 3))
    with pytest.raises(TypeError, match="weight"):
        cs_utils.filter_images(nn.ReLU())


def test_pretrained_first_layer_filters(lite0):
    tiles = cs_utils.filter_images(lite0.stem[0])
    assert tiles.shape == (32, 3, 3, 3)
    weight = lite0.stem[0].weight.detach()[4]
    assert torch.allclose(tiles[4], (weight - weight.min()) / (weight.max() - weight.min()))


def test_filter_smoothness_by_hand():
    ramp = torch.arange(4.0).repeat(4, 1)[None, None]                # smooth: neighbours alike
    checker = (torch.arange(4)[:, None] + torch.arange(4)[None]) % 2  # neighbours always differ
    flat = torch.ones(1, 1, 4, 4)
    values = cs_utils.filter_smoothness(torch.cat([ramp, checker[None, None].float(), flat]))
    # ramp minus its mean: columns -1.5, -0.5, 0.5, 1.5. Horizontal products per row 0.75 - 0.25 + 0.75,
    # x 4 rows = 5; vertical: 3 pairs per column of v^2, 3 * (2.25 + 0.25 + 0.25 + 2.25) = 15 -> 20.
    # Energy (a^2 + b^2) / 2 per pair: horizontal 4 * (1.25 + 0.25 + 1.25) = 11, vertical 15 -> 26.
    assert values[0].item() == pytest.approx(20 / 26)
    assert values[1].item() == pytest.approx(-1.0)
    assert values[2].item() == 0.0
    noise = cs_utils.filter_smoothness(torch.randn(200, 1, 7, 7, generator=torch.Generator().manual_seed(0)))
    assert abs(noise.mean().item()) < 0.05
    history = cs_utils.small_cnn.TrainingHistory(loss=[2.0, 1.0, 0.5], accuracy=[0.1, 0.5, 0.9])
    fig = history.plot(smooth=2)
    np.testing.assert_allclose(fig.axes[0].lines[0].get_ydata(), [2.0, 1.0, 0.5])    # each step, faint
    np.testing.assert_allclose(fig.axes[0].lines[1].get_ydata(), [2.0, 1.5, 0.75])   # running mean of 2
    np.testing.assert_allclose(fig.axes[1].lines[0].get_ydata(), [0.1, 0.3, 0.7])    # accuracy, twin axis
