from collections import OrderedDict

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
from matplotlib.figure import Figure
from torch import nn

import cs_utils
from cs_utils import layer_maps


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _relu_net():
    """conv (2 filters by hand) -> ReLU: filter 0 copies the red channel, filter 1 is minus it."""
    conv = nn.Conv2d(3, 2, 1, bias=False)
    with torch.no_grad():
        conv.weight.zero_()
        conv.weight[0, 0] = 1.0
        conv.weight[1, 0] = -1.0
    return nn.Sequential(OrderedDict([("conv", conv), ("relu", nn.ReLU())]))


def test_activation_maps_by_hand_and_caller_state(caller_state):
    net = _relu_net().train()
    x = torch.rand(3, 5, 6)
    state = caller_state(net, x)
    maps = cs_utils.activation_maps(net, x, "relu")
    assert maps.shape == (2, 5, 6)
    torch.testing.assert_close(maps[0], x[0])
    assert maps[1].abs().max().item() == 0.0          # -red after ReLU is all zero
    state.assert_unchanged()
    assert net.training


def test_activation_maps_errors(tiny_cnn):
    with pytest.raises(ValueError, match="one image"):
        cs_utils.activation_maps(tiny_cnn, torch.rand(2, 3, 8, 8), "relu")
    with pytest.raises(ValueError, match="tensor"):
        cs_utils.activation_maps(tiny_cnn, torch.rand(8, 8), "relu")
    with pytest.raises(ValueError, match="convolutional"):
        cs_utils.activation_maps(tiny_cnn, torch.rand(3, 8, 8), "fc")


def test_zero_channel_share_counts_silent_channels():
    maps = torch.zeros(4, 10, 10)
    maps[0] = 1.0                     # fully active
    maps[1, 0, :3] = 2.0              # 3% active: almost all zero
    maps[2, :2] = 0.5                 # 20% active
    # maps[3] all zero
    assert layer_maps.almost_zero_channels(maps).tolist() == [False, True, False, True]
    assert cs_utils.zero_channel_share(maps) == 0.5
    assert cs_utils.zero_channel_share(maps, zero_share=0.75) == 0.75
    assert cs_utils.zero_channel_share(maps, tol=0.5) == 0.75     # values of 0.5 count as silent at tol 0.5
    with pytest.raises(ValueError, match="zero_share"):
        cs_utils.zero_channel_share(maps, zero_share=0)
    with pytest.raises(ValueError, match=r"\(C, H, W\)"):
        cs_utils.zero_channel_share(torch.zeros(10, 10))
    with pytest.raises(ValueError, match="NaN"):
        cs_utils.zero_channel_share(torch.full((1, 2, 2), float("nan")))


def test_lite0_deep_layer_is_sparser_than_shallow(lite0):
    x = cs_utils.load_image("chelsea", 224)
    shallow = cs_utils.zero_channel_share(cs_utils.activation_maps(lite0, x, "blocks.2.expand.2"))
    deep = cs_utils.zero_channel_share(cs_utils.activation_maps(lite0, x, "head.2"))
    assert shallow < 0.1
    assert deep > 0.5


def test_activation_montage_common_scale_and_layout():
    maps = torch.zeros(3, 2, 2)
    maps[0] = 4.0
    maps[1, 0, 0] = 2.0
    montage = layer_maps.activation_montage(maps, ncols=2, pad=1, pad_value=0.4)
    assert montage.shape == (2 * 3 + 1, 2 * 3 + 1)
    np.testing.assert_allclose(montage[1:3, 1:3], 1.0)             # the largest value is white
    assert montage[1, 4] == 0.5 and montage[2, 5] == 0.0           # 2 of 4 is mid-grey
    np.testing.assert_allclose(montage[4:6, 1:3], 0.0)             # silent channel is black
    np.testing.assert_allclose(montage[4:6, 4:6], 0.4)             # empty slot keeps the padding
    assert layer_maps.activation_montage(maps, vmax=8.0)[1, 1] == 0.5
    with pytest.raises(ValueError, match="ncols"):
        layer_maps.activation_montage(maps, ncols=-1)


def test_show_activation_maps_returns_figure(tmp_path):
    maps = torch.rand(5, 4, 4)
    copy = maps.clone()
    fig = cs_utils.show_activation_maps(maps, title="five", save=tmp_path / "maps.png")
    assert isinstance(fig, Figure) and fig.axes[0].get_title() == "five"
    assert (tmp_path / "maps.png").stat().st_size > 0
    _, ax = plt.subplots()
    assert cs_utils.show_activation_maps(maps, ax=ax) is ax.figure and ax.images
    assert torch.equal(maps, copy)


def test_filter_channel_montage_grey_is_zero():
    w = torch.zeros(2, 3, 1, 1)
    w[0, 0] = 2.0
    w[0, 1] = -1.0
    w[1, 2] = -3.0
    montage = layer_maps.filter_channel_montage(w, pad=0)
    np.testing.assert_allclose(montage, [[1.0, 0.25, 0.5], [0.5, 0.5, 0.0]])
    np.testing.assert_allclose(layer_maps.filter_channel_montage(w, filters=[1], pad=0), [[0.5, 0.5, 0.0]])
    with pytest.raises(ValueError, match="filters"):
        layer_maps.filter_channel_montage(w, filters=[2])
    with pytest.raises(ValueError, match="conv layer"):
        layer_maps.filter_channel_montage(torch.zeros(3, 3))


def test_show_filter_channels_of_small_cnn():
    cnn = cs_utils.SmallCNN(width=4)
    before = cnn.conv2.weight.detach().clone()
    fig = cs_utils.show_filter_channels(cnn.conv2, filters=range(3), title="conv2")
    image = fig.axes[0].images[0].get_array()
    assert image.shape == (3 * 4 + 1, 4 * 4 + 1)                   # 3 filters x 4 input channels of 3x3
    assert torch.equal(cnn.conv2.weight, before)
