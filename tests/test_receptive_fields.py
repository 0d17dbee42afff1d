"""Receptive fields: hand-computed, and checked against the gradient support of each unit."""

import copy

import pytest
import torch
from torch import nn

import cs_utils
from cs_utils.models import Conv2dSame


def _stack(*layers):
    model = nn.Sequential(*layers)
    return model.eval()


def test_receptive_field_of_plain_convs_by_hand():
    # conv3 s1 p1 -> conv3 s2 p0 -> maxpool2 s2: size 1+2+2*1+1*2 = 5 -> +1*2=7; stride 4; offset -1
    model = _stack(nn.Conv2d(3, 2, 3, padding=1), nn.ReLU(), nn.Conv2d(2, 2, 3, stride=2), nn.MaxPool2d(2))
    rf = cs_utils.receptive_field(model, "1", 10)
    assert (rf.size, rf.stride, rf.offset, rf.output_size) == ((3, 3), (1, 1), (-1, -1), (10, 10))
    rf = cs_utils.receptive_field(model, "2", 10)
    assert (rf.size, rf.stride, rf.offset, rf.output_size) == ((5, 5), (2, 2), (-1, -1), (4, 4))
    rf = cs_utils.receptive_field(model, "3", (10, 12))
    assert (rf.size, rf.stride, rf.offset, rf.output_size) == ((7, 7), (4, 4), (-1, -1), (2, 2))
    assert rf.box(0, 0) == (0, 0, 6, 6) and rf.box(0, 0, clip=False) == (-1, -1, 6, 6)
    assert rf.box(1, 1) == (3, 3, 10, 10)


def test_receptive_field_with_dilation_and_rectangular_kernels():
    model = _stack(nn.Conv2d(3, 1, (3, 5), padding=(0, 2), dilation=(2, 1)))
    rf = cs_utils.receptive_field(model, "0", (9, 9))
    assert (rf.size, rf.stride, rf.offset) == ((5, 5), (1, 1), (0, -2))


def test_receptive_field_of_same_padding_depends_on_the_input_size():
    # k3 s2 SAME: input 8 -> output 4, total padding (4-1)*2+3-8 = 1 -> (0 before, 1 after);
    # input 7 -> output 4, total padding 2 -> (1, 1).
    model = _stack(Conv2dSame(3, 1, 3, stride=2), Conv2dSame(1, 1, 3, stride=2))
    even = cs_utils.receptive_field(model, "0", 8)
    odd = cs_utils.receptive_field(model, "0", 7)
    assert (even.size, even.stride, even.offset) == ((3, 3), (2, 2), (0, 0))
    assert (odd.size, odd.stride, odd.offset) == ((3, 3), (2, 2), (-1, -1))
    # second conv sees 4 (even, from 8): padding (0, 1) again: size 3 + 2*2 = 7, offset 0 - 0*2 = 0.
    # From 7 the first output is 4 as well: offset -1 - 0 = -1.
    assert cs_utils.receptive_field(model, "1", 8).offset == (0, 0)
    assert cs_utils.receptive_field(model, "1", 7).offset == (-1, -1)
    assert cs_utils.receptive_field(model, "1", 7).size == (7, 7)
    # an input of 6 -> 3 (total padding 1: (0, 1)) -> 3 is odd: total padding (2-1)*2+3-3 = 2 -> (1, 1)
    six = cs_utils.receptive_field(model, "1", 6)
    assert six.offset == (0 - 1 * 2, 0 - 1 * 2) and six.output_size == (2, 2)


def _support(model, layer, x, row, col):
    """Bounding box (top, left, bottom, right) of the input pixels with a non-zero gradient."""
    out = cs_utils.extract_features(model, x, [layer])[layer]
    (grad,) = torch.autograd.grad(out[0, :, row, col].sum(), [x])
    nonzero = (grad[0].abs().sum(0) != 0).nonzero()
    return (nonzero[:, 0].min().item(), nonzero[:, 1].min().item(),
            nonzero[:, 0].max().item() + 1, nonzero[:, 1].max().item() + 1), out.shape[-2:]


def _positive_weights(model):
    torch.manual_seed(0)
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            with torch.no_grad():
                m.weight.uniform_(0.1, 1.0)
    return model.double()


@pytest.mark.parametrize("size", [(13, 13), (14, 11)])
def test_receptive_field_matches_the_gradient_support_of_a_conv_stack(size):
    model = _positive_weights(_stack(Conv2dSame(3, 2, 3, stride=2), nn.ReLU6(), nn.Conv2d(2, 2, 3, padding=1),
                                     Conv2dSame(2, 2, 5, stride=2), nn.AvgPool2d(2, 1),
                                     Conv2dSame(2, 1, 3, stride=1)))
    x = torch.rand(1, 3, *size, dtype=torch.float64, requires_grad=True)
    rf = cs_utils.receptive_field(model, "5", size)
    for row in range(rf.output_size[0]):
        for col in range(rf.output_size[1]):
            box, out_size = _support(model, "5", x, row, col)
            assert tuple(out_size) == rf.output_size
            assert box == rf.box(row, col), (row, col)


def _linearised(model):
    """A float64 copy of ``model`` with every ReLU6 replaced by the identity, so every
    input pixel in the receptive field has a non-zero gradient."""
    model = copy.deepcopy(model).double()
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, nn.ReLU6):
                setattr(module, name, nn.Identity())
    return model


@pytest.mark.parametrize("layer,size", [("blocks.2", (67, 50)), ("blocks.5", (40, 41))])
def test_receptive_field_of_efficientnet_matches_the_gradient_support(lite0, caller_state, layer, size):
    state = caller_state(lite0)
    rf = cs_utils.receptive_field(lite0, layer, size)
    state.assert_unchanged()
    model = _linearised(lite0)
    x = torch.rand(1, 3, *size, dtype=torch.float64, requires_grad=True)
    inside = 0
    for row, col in [(0, 0), (rf.output_size[0] // 2, rf.output_size[1] // 2),
                     (rf.output_size[0] - 1, rf.output_size[1] - 1), (1, rf.output_size[1] - 2)]:
        box, out_size = _support(model, layer, x, row, col)
        assert tuple(out_size) == rf.output_size
        assert box == rf.box(row, col)   # inside the box, and touching each border of the clipped box
        unclipped = rf.box(row, col, clip=False)
        inside += unclipped == rf.box(row, col)
    if layer == "blocks.2":
        assert rf.size == (19, 19) and rf.stride == (4, 4)
        assert inside >= 1  # at least one box lies wholly inside the image


def test_receptive_field_errors_leave_no_hooks(lite0, caller_state):
    state = caller_state(lite0)
    with pytest.raises(KeyError, match="blocks.2"):
        cs_utils.receptive_field(lite0, "blocks.2x", 64)
    with pytest.raises(ValueError, match="whole image"):
        cs_utils.receptive_field(lite0, "pool", 64)
    with pytest.raises(ValueError, match="input_size"):
        cs_utils.receptive_field(lite0, "blocks.2", (64,))
    state.assert_unchanged()
    rf = cs_utils.receptive_field(lite0, "stem", 8)
    with pytest.raises(IndexError, match="outside"):
        rf.box(4, 0)


def test_unknown_spatial_layer_is_refused():
    class Shrink(nn.Module):
        def forward(self, x):
            return x[..., ::2, ::2]

    model = _stack(nn.Conv2d(3, 2, 3), Shrink(), nn.Conv2d(2, 2, 3))
    with pytest.raises(ValueError, match="not known"):
        cs_utils.receptive_field(model, "2", 16)
