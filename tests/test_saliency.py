"""Saliency, occlusion and guided backprop: hand-computed answers on tiny models."""

import math
import weakref

import pytest
import torch
import torch.nn.functional as F
from models_by_hand import linear_model, red_square_image, red_square_model
from torch import nn

import cs_utils
from cs_utils import saliency as S
from cs_utils.engine import batch_size


def sigmoid(v):
    return 1 / (1 + math.exp(-v))



def function_mode_depth():
    return torch._C._len_torch_function_stack()


# --------------------------------------------------------------------------- saliency_map

def test_saliency_of_a_linear_model_is_abs_weight_max_over_channels():
    # class 1's weights on a 2x2 image, channels R, G, B
    w1 = torch.tensor([[[1.0, -2.0], [0.5, 0.0]],
                       [[-3.0, 1.0], [0.25, -0.1]],
                       [[2.0, 0.5], [-1.0, 0.0]]])
    model = linear_model(torch.stack([torch.ones(12), w1.flatten()]))
    x = torch.rand(2, 3, 2, 2)
    saliency = cs_utils.saliency_map(model, x, 1)
    expected = torch.tensor([[3.0, 2.0], [1.0, 0.1]])   # max(|1|,|-3|,|2|), max(|-2|,|1|,|.5|), ...
    assert saliency.shape == (2, 2, 2)
    torch.testing.assert_close(saliency, expected.expand(2, 2, 2))
    torch.testing.assert_close(cs_utils.saliency_map(model, x, 0), torch.ones(2, 2, 2))


def test_saliency_matches_float64_finite_differences(tiny_cnn):
    model = tiny_cnn.double()
    x = torch.rand(1, 3, 4, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    eps, numeric = 1e-6, torch.zeros_like(x)
    with torch.no_grad():
        for index in range(x.numel()):
            step = torch.zeros(x.numel(), dtype=torch.float64)
            step[index] = eps
            step = step.view_as(x)
            numeric.view(-1)[index] = (model(x + step)[0, 3] - model(x - step)[0, 3]) / (2 * eps)
    torch.testing.assert_close(cs_utils.saliency_map(model, x, 3), numeric.abs().amax(dim=1),
                               rtol=1e-6, atol=1e-9)


def test_saliency_is_batch_invariant_and_takes_one_target_per_image(tiny_cnn):
    x = torch.rand(3, 3, 8, 8)
    target = torch.tensor([4, 0, 2])
    batched = cs_utils.saliency_map(tiny_cnn, x, target)
    one_by_one = torch.cat([cs_utils.saliency_map(tiny_cnn, x[i:i + 1], int(target[i])) for i in range(3)])
    torch.testing.assert_close(batched, one_by_one)
    torch.testing.assert_close(cs_utils.saliency_map(tiny_cnn, x, [4, 0, 2]), batched)


def test_saliency_uses_the_unnormalised_score():
    # softmax would mix in the other class: the score's gradient is exactly w
    model = linear_model(torch.tensor([[1.0] * 3, [2.0] * 3]))
    x = torch.full((1, 3, 1, 1), 0.5)
    torch.testing.assert_close(cs_utils.saliency_map(model, x, 1), torch.full((1, 1, 1), 2.0))


@pytest.mark.parametrize("target, error, words", [
    (5, IndexError, "out of range"),
    (-1, IndexError, "negative"),
    (2.0, TypeError, "class index"),
    (True, TypeError, "class index"),
    ([1, 2, 3], ValueError, "one per image"),
    (torch.tensor([0.5, 1.0]), TypeError, "integer"),
])
def test_bad_targets_raise_clear_errors(tiny_cnn, caller_state, target, error, words):
    x = torch.rand(2, 3, 8, 8)
    for technique in (cs_utils.saliency_map, cs_utils.guided_backprop,
                      lambda m, x, t: cs_utils.occlusion_map(m, x, t, window=4, stride=4, progress=False)):
        state = caller_state(tiny_cnn, x)
        with pytest.raises(error, match=words):
            technique(tiny_cnn, x, target)
        state.assert_unchanged()
        assert function_mode_depth() == 0


def test_bad_images_raise_clear_errors(tiny_cnn):
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\)"):
        cs_utils.saliency_map(tiny_cnn, torch.rand(3, 8, 8), 0)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        cs_utils.occlusion_map(tiny_cnn, torch.rand(1, 3, 8, 8) * 255, 0, window=4, stride=4)


@pytest.mark.parametrize("technique", ["saliency", "occlusion", "guided", "guided_layer"])
def test_caller_state_is_left_alone(tiny_cnn, caller_state, technique):
    tiny_cnn.train()                       # a caller's model in train mode with trainable weights
    x = torch.rand(2, 3, 8, 8, requires_grad=True)
    state = caller_state(tiny_cnn, x)
    run = {
        "saliency": lambda: cs_utils.saliency_map(tiny_cnn, x, 1),
        "occlusion": lambda: cs_utils.occlusion_map(tiny_cnn, x, 1, window=4, stride=2, progress=False),
        "guided": lambda: cs_utils.guided_backprop(tiny_cnn, x, 1),
        "guided_layer": lambda: cs_utils.guided_backprop(tiny_cnn, x, ("relu", 2)),
    }[technique]
    result = run()
    state.assert_unchanged()
    assert all(p.grad is None for p in tiny_cnn.parameters()), "gradients were written into the model"
    assert function_mode_depth() == 0
    assert not result.requires_grad and not result.is_inference()   # usable in later autograd code
    assert tiny_cnn.training


def test_works_inside_no_grad_and_inference_mode(tiny_cnn):
    x = torch.rand(1, 3, 8, 8)
    expected = cs_utils.saliency_map(tiny_cnn, x, 2)
    with torch.no_grad():
        torch.testing.assert_close(cs_utils.saliency_map(tiny_cnn, x, 2), expected)
        assert cs_utils.guided_backprop(tiny_cnn, x, 2).abs().sum() > 0


# --------------------------------------------------------------------------- occlusion_map





def test_occlusion_on_a_linear_model_by_hand():
    model, x = red_square_model(), red_square_image()
    heat = cs_utils.occlusion_map(model, x, 0, window=2, stride=2, progress=False)
    # p0 = sigmoid(4 - 0). Hiding the square with mean red 0.25: red sum 1 -> sigmoid(1);
    # hiding any other quarter adds 4 * 0.25 of red: red sum 5 -> sigmoid(5).
    square, elsewhere = sigmoid(4) - sigmoid(1), sigmoid(4) - sigmoid(5)
    expected = torch.full((4, 4), elsewhere)
    expected[:2, :2] = square
    torch.testing.assert_close(heat[0], expected)


def test_occlusion_averages_overlapping_windows_and_uses_fill():
    model, x = red_square_model(), red_square_image()
    heat = cs_utils.occlusion_map(model, x, 0, window=2, stride=1, fill=0.0, progress=False)[0]
    # windows at rows/cols 0, 1, 2. Zeroing removes the red the window covers from the sum 4:
    # window (0,0) covers 4 red pixels, (0,1) and (1,0) cover 2, (1,1) covers 1, others 0.
    drop = {0: sigmoid(4) - sigmoid(0), 2: sigmoid(4) - sigmoid(2), 1: sigmoid(4) - sigmoid(3)}
    torch.testing.assert_close(heat[0, 0], torch.tensor(drop[0]))                 # only window (0,0)
    torch.testing.assert_close(heat[0, 1], torch.tensor((drop[0] + drop[2]) / 2))  # windows (0,0), (0,1)
    torch.testing.assert_close(heat[1, 1], torch.tensor((drop[0] + 2 * drop[2] + drop[1]) / 4))
    torch.testing.assert_close(heat[3, 3], torch.tensor(0.0))


def test_occlusion_windows_cover_every_pixel():
    assert cs_utils.occlusion_windows(5, 4, 2, 2) == [(t, s) for t in (0, 2, 3) for s in (0, 2)]
    assert len(cs_utils.occlusion_windows(224, 224, 32, 8)) == 25 * 25
    assert cs_utils.occlusion_windows(6, 6, (6, 3), 3) == [(0, 0), (0, 3)]
    with pytest.raises(ValueError, match="larger than"):
        cs_utils.occlusion_windows(8, 8, 9, 1)
    with pytest.raises(ValueError, match="at least 1"):
        cs_utils.occlusion_windows(8, 8, 4, 0)


def test_occlusion_is_batch_size_invariant(tiny_cnn):
    x = torch.rand(3, 3, 8, 8)
    target = torch.tensor([1, 4, 0])
    results = [cs_utils.occlusion_map(tiny_cnn, x, target, window=3, stride=2, batch_size=b, progress=False)
               for b in (1, 7, 1000)]
    for other in results[1:]:
        torch.testing.assert_close(other, results[0])
    alone = cs_utils.occlusion_map(tiny_cnn, x[1:2], 4, window=3, stride=2, progress=False)
    torch.testing.assert_close(alone[0], results[0][1])


def test_occlusion_measures_the_batch_size_once_and_keeps_an_explicit_one(tiny_cnn, monkeypatch):
    measured = []

    def fake_fastest(run, sizes, **options):
        measured.append(list(sizes))
        run(sizes[-1])                      # a plain forward of the largest batch works
        return 2

    monkeypatch.setattr(batch_size, "fastest_batch_size", fake_fastest)
    monkeypatch.setattr(batch_size, "_measured", weakref.WeakKeyDictionary())
    x = torch.rand(1, 3, 8, 8)
    plain = dict(window=4, stride=2, incremental=False, progress=False)   # the plain path calibrates
    calibrated = cs_utils.occlusion_map(tiny_cnn, x, 0, **plain)
    assert measured == [[1, 2, 4, 8]]        # 9 copies: no size above the 9 copies is tried
    again = cs_utils.occlusion_map(tiny_cnn, x, 0, **plain)
    assert len(measured) == 1                # cached for this model, dtype and shape
    explicit = cs_utils.occlusion_map(tiny_cnn, x, 0, batch_size=5, **plain)
    assert len(measured) == 1
    torch.testing.assert_close(again, calibrated)
    torch.testing.assert_close(explicit, calibrated)
    cs_utils.occlusion_map(tiny_cnn, x.double(), 0, **plain)
    assert len(measured) == 1                # the images run in the model's dtype: the same key
    incremental = cs_utils.occlusion_map(tiny_cnn, x, 0, window=4, stride=2, progress=False)
    assert len(measured) == 1                # the incremental path measures nothing
    torch.testing.assert_close(incremental, calibrated)


def test_occlusion_shows_the_number_of_passes_up_front(tiny_cnn, capsys):
    x = torch.rand(2, 3, 8, 8)
    cs_utils.occlusion_map(tiny_cnn, x, 0, window=4, stride=4, batch_size=3, incremental=False)
    # 2 images x 4 windows = 8 copies, 3 per batch
    assert "occlusion: 8 copies in 3 batches" in capsys.readouterr().err
    cs_utils.occlusion_map(tiny_cnn, x, 0, window=4, stride=4, batch_size=3)
    # the same loop on the incremental network
    assert "occlusion (incremental): 8 copies in 3 batches" in capsys.readouterr().err


def test_occlusion_rejects_bad_fill(tiny_cnn):
    with pytest.raises(ValueError, match="fill"):
        cs_utils.occlusion_map(tiny_cnn, torch.rand(1, 3, 8, 8), 0, window=4, stride=4, fill=(1, 2))
    with pytest.raises(ValueError, match="batch_size"):
        cs_utils.occlusion_map(tiny_cnn, torch.rand(1, 3, 8, 8), 0, window=4, stride=4, batch_size=0)


# --------------------------------------------------------------------------- guided backprop

def test_guided_relu_rule_by_hand():
    grad = torch.tensor([1.0, -1.0, 2.0, 3.0, 4.0, -2.0])
    act = torch.tensor([0.0, 2.0, 6.0, 3.0, 0.5, 0.0])
    torch.testing.assert_close(S.guided_relu_grad(grad, act), torch.tensor([0.0, 0, 2, 3, 4, 0]))
    # ReLU6: saturated units (activation 6) pass nothing either
    torch.testing.assert_close(S.guided_relu_grad(grad, act, 6.0), torch.tensor([0.0, 0, 0, 3, 4, 0]))


def two_layer_net(relu=None):
    """3 inputs (a 1x1 RGB image) -> 3 hidden ReLUs -> 2 classes, weights chosen by hand."""
    net = nn.Sequential(nn.Flatten(), nn.Linear(3, 3, bias=False), relu or nn.ReLU(),
                        nn.Linear(3, 2, bias=False))
    with torch.no_grad():
        net[1].weight.copy_(torch.tensor([[1.0, -1.0, 0.5], [-1.0, 0.5, 1.0], [-1.0, -1.0, 0.0]]))
        net[3].weight.copy_(torch.tensor([[2.0, -1.0, 3.0], [1.0, 1.0, 1.0]]))
    return net.eval()


X = torch.tensor([0.5, 0.2, 0.9]).view(1, 3, 1, 1)


def test_guided_backprop_on_a_two_layer_relu_net_by_hand():
    net = two_layer_net()
    # hidden pre-activations: 0.5-0.2+0.45 = 0.75, -0.5+0.1+0.9 = 0.5, -0.7 (off).
    # gradient at the ReLU output for class 0: (2, -1, 3). Plain backprop: mask (1, 1, 0) -> (2, -1, 0),
    # dx = 2 * row0 - row1 = (3, -2.5, 0). Guided: keep positives (2, 0, 3), mask -> (2, 0, 0), dx = 2 * row0.
    guided = cs_utils.guided_backprop(net, X, 0)
    torch.testing.assert_close(guided.flatten(), torch.tensor([2.0, -2.0, 1.0]))
    xg = X.clone().requires_grad_(True)
    plain = torch.autograd.grad(net(xg)[0, 0], [xg])[0]
    torch.testing.assert_close(plain.flatten(), torch.tensor([3.0, -2.5, 0.0]))


def test_guided_backprop_to_a_hidden_unit_by_hand():
    net = two_layer_net()
    # unit 1 of the ReLU is active (0.5): its gradient is row 1 of the first layer.
    torch.testing.assert_close(cs_utils.guided_backprop(net, X, ("2", 1)).flatten(),
                               torch.tensor([-1.0, 0.5, 1.0]))
    # unit 2 is off: nothing passes
    torch.testing.assert_close(cs_utils.guided_backprop(net, X, ("2", 2)), torch.zeros(1, 3, 1, 1))


def test_guided_backprop_relu6_silences_saturated_units():
    net = two_layer_net(nn.ReLU6())
    with torch.no_grad():
        net[1].weight[0] *= 10       # unit 0: 7.5 -> saturated at 6
    # gradient at the ReLU6 output (2, -1, 3): unit 0 saturated, unit 1 negative, unit 2 off -> zero
    torch.testing.assert_close(cs_utils.guided_backprop(net, X, 0), torch.zeros(1, 3, 1, 1))
    # class 1 weights (1, 1, 1): unit 1 (0.5, active) passes -> row 1
    torch.testing.assert_close(cs_utils.guided_backprop(net, X, 1).flatten(), torch.tensor([-1.0, 0.5, 1.0]))


class FunctionalNet(nn.Module):
    """The two-layer net written with functional or in-place activations."""

    def __init__(self, activation):
        super().__init__()
        reference = two_layer_net()
        self.first, self.second, self.activation = reference[1], reference[3], activation

    def forward(self, x):
        h = self.first(x.flatten(1))
        if self.activation == "F.relu":
            h = F.relu(h)
        elif self.activation == "relu_":
            torch.relu_(h)                    # in place, the result ignored on purpose
        elif self.activation == "method":
            h = h.relu()
        elif self.activation == "hardtanh":
            h = F.hardtanh(h, 0.0, 6.0)
        elif self.activation == "clamp":
            h = h.clamp(min=0)
        return self.second(h)


@pytest.mark.parametrize("activation", ["F.relu", "relu_", "method", "hardtanh"])
def test_functional_and_inplace_activations_are_guided(activation, caller_state):
    net = FunctionalNet(activation)
    state = caller_state(net, X)
    torch.testing.assert_close(cs_utils.guided_backprop(net, X, 0).flatten(), torch.tensor([2.0, -2.0, 1.0]))
    state.assert_unchanged()


def test_inplace_relu_module_is_guided_and_keeps_its_forward():
    net = two_layer_net(nn.ReLU(inplace=True))
    torch.testing.assert_close(cs_utils.guided_backprop(net, X, 0).flatten(), torch.tensor([2.0, -2.0, 1.0]))
    torch.testing.assert_close(net(X), two_layer_net()(X))


def test_unrecognised_activations_raise_instead_of_a_plain_gradient(caller_state):
    net = FunctionalNet("clamp")
    state = caller_state(net, X)
    with pytest.raises(RuntimeError, match="no ReLU"):
        cs_utils.guided_backprop(net, X, 0)
    state.assert_unchanged()
    assert function_mode_depth() == 0


def test_guided_backprop_cleans_up_after_an_exception_in_forward(tiny_cnn, hook_count):
    class Failing(nn.Module):
        def forward(self, x):
            F.relu(x)
            raise ZeroDivisionError("inside forward")

    with pytest.raises(ZeroDivisionError):
        cs_utils.guided_backprop(Failing(), torch.rand(1, 3, 4, 4), 0)
    assert function_mode_depth() == 0
    h = torch.randn(5, requires_grad=True)      # relu outside works as plain relu again
    (grad,) = torch.autograd.grad(F.relu(h).sum() * -1, [h])
    torch.testing.assert_close(grad, -(h > 0).float())


def test_bad_layer_targets_raise_clear_errors(tiny_cnn, caller_state):
    x = torch.rand(1, 3, 8, 8)
    state = caller_state(tiny_cnn, x)
    with pytest.raises(KeyError, match="'relu'"):
        cs_utils.guided_backprop(tiny_cnn, x, ("reul", 0))
    with pytest.raises(IndexError, match="4 channels"):
        cs_utils.guided_backprop(tiny_cnn, x, ("relu", 4))
    with pytest.raises(TypeError, match="layer_name, channel"):
        cs_utils.guided_backprop(tiny_cnn, x, ("relu",))
    state.assert_unchanged()
    assert function_mode_depth() == 0


def test_guided_backprop_is_batch_invariant(tiny_cnn):
    x = torch.rand(2, 3, 8, 8)
    batched = cs_utils.guided_backprop(tiny_cnn, x, torch.tensor([1, 3]))
    torch.testing.assert_close(batched[1:], cs_utils.guided_backprop(tiny_cnn, x[1:], 3))
    layer = cs_utils.guided_backprop(tiny_cnn, x, ("relu", 1))
    torch.testing.assert_close(layer[:1], cs_utils.guided_backprop(tiny_cnn, x[:1], ("relu", 1)))


def test_a_layer_before_every_activation_is_refused(tiny_cnn):
    # no ReLU between the pixels and "conv": guided backprop would be the plain gradient
    with pytest.raises(RuntimeError, match="before the first activation"):
        cs_utils.guided_backprop(tiny_cnn, torch.rand(1, 3, 8, 8), ("conv", 1))


def test_guided_backprop_on_the_pretrained_model(lite0, caller_state):
    x = cs_utils.load_image("coffee", 96)
    state = caller_state(lite0, x)
    guided = cs_utils.guided_backprop(lite0, x, cs_utils.imagenet_index("espresso"))
    state.assert_unchanged()
    xg = x.clone().requires_grad_(True)
    plain = torch.autograd.grad(lite0(xg)[0, cs_utils.imagenet_index("espresso")], [xg])[0]
    assert guided.shape == (1, 3, 96, 96) and torch.isfinite(guided).all()
    # every ReLU6 filters: the guided map differs from the gradient (and is much less noisy)
    assert not torch.allclose(guided, plain, atol=1e-6)
    assert function_mode_depth() == 0


# --------------------------------------------------------------------------- gradient_image

def test_gradient_image_maps_zero_to_grey_by_hand():
    grad = torch.zeros(1, 3, 2, 2)
    grad[0, 0, 0, 0], grad[0, 1, 0, 1], grad[0, 2, 1, 1] = 2.0, -1.0, 4.0
    shown = cs_utils.gradient_image(grad, percentile=100)     # scale = largest |value| = 4
    torch.testing.assert_close(shown[0, 0, 0, 0], torch.tensor(0.75))
    torch.testing.assert_close(shown[0, 1, 0, 1], torch.tensor(0.375))
    torch.testing.assert_close(shown[0, 2, 1, 1], torch.tensor(1.0))
    torch.testing.assert_close(shown[0, 0, 1, 0], torch.tensor(0.5))
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\)"):
        cs_utils.gradient_image(grad[0])
