import pytest
import torch
from torch import nn

from cs_utils.optimize import optimize_image
from cs_utils.redirected_relu import redirected_clamp, redirected_relu_gradients
from cs_utils.transforms import Jitter, Views


def test_redirected_clamp_gradient_by_hand():
    x = torch.tensor([-1.0, 3.0, 7.0, -2.0, 8.0, 0.5], requires_grad=True)
    upstream = torch.tensor([-1.0, 2.0, 1.0, 1.0, -1.0, 3.0])   # d loss / d output
    y = redirected_clamp(x, 0.0, 6.0)
    torch.testing.assert_close(y, x.detach().clamp(0, 6))
    (grad,) = torch.autograd.grad((y * upstream).sum(), [x])
    # below 0: passes only if descent (x -= lr * g) raises x (g < 0); above 6: only if it lowers x (g > 0)
    torch.testing.assert_close(grad, torch.tensor([-1.0, 2.0, 1.0, 0.0, 0.0, 3.0]))


def _tiny_model(activation):
    """h = x + b (b = (-1, 7)), y = activation(h), out = y_0 - y_1."""
    first = nn.Linear(2, 2)
    last = nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        first.weight.copy_(torch.eye(2))
        first.bias.copy_(torch.tensor([-1.0, 7.0]))
        last.weight.copy_(torch.tensor([[1.0, -1.0]]))
    return nn.Sequential(first, activation, last).eval().requires_grad_(False)


def _input_gradient(model):
    x = torch.zeros(1, 2, requires_grad=True)
    (grad,) = torch.autograd.grad(-model(x).sum(), [x])   # a loss to minimise: -out
    return grad


def test_redirected_relu6_gradient_on_a_tiny_model_by_hand():
    model = _tiny_model(nn.ReLU6())
    # plain ReLU6: both units clipped (h = -1 < 0, h = 7 > 6), no gradient reaches x
    torch.testing.assert_close(_input_gradient(model), torch.zeros(1, 2))
    with redirected_relu_gradients(model) as handle:
        # d loss / d y = (-1, 1): unit 0 below 0 with g < 0 (descent raises it), unit 1 above 6 with
        # g > 0 (descent lowers it): both pass, and h = x + b passes them on to x
        torch.testing.assert_close(_input_gradient(model), torch.tensor([[-1.0, 1.0]]))
        with torch.no_grad():   # the forward pass is unchanged
            assert model(torch.zeros(1, 2)).item() == 0.0 - 6.0
        handle.enabled = False
        torch.testing.assert_close(_input_gradient(model), torch.zeros(1, 2))
        handle.enabled = True
        torch.testing.assert_close(_input_gradient(model), torch.tensor([[-1.0, 1.0]]))
    torch.testing.assert_close(_input_gradient(model), torch.zeros(1, 2))


def test_redirected_relu_blocks_a_gradient_pushing_further_out():
    model = _tiny_model(nn.ReLU())
    with torch.no_grad():
        model[2].weight.copy_(torch.tensor([[-1.0, 1.0]]))   # d loss / d y = (1, -1)
    with redirected_relu_gradients(model):
        # unit 0 (h = -1) is pushed lower: blocked; unit 1 (h = 7) is active for ReLU: plain gradient
        torch.testing.assert_close(_input_gradient(model), torch.tensor([[0.0, -1.0]]))


def test_nothing_left_on_the_model_also_after_an_exception(hook_count):
    model = _tiny_model(nn.ReLU6())
    before = {k: v.clone() for k, v in model.state_dict().items()}
    activation = model[1]
    with pytest.raises(RuntimeError, match="boom"):
        with redirected_relu_gradients(model):
            assert "forward" in vars(activation)
            raise RuntimeError("boom")
    assert "forward" not in vars(activation) and type(activation) is nn.ReLU6
    assert hook_count(model) == 0
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    torch.testing.assert_close(_input_gradient(model), torch.zeros(1, 2))
    with redirected_relu_gradients(model):
        with pytest.raises(RuntimeError, match="nested"):
            with redirected_relu_gradients(model):
                pass
        torch.testing.assert_close(_input_gradient(model), torch.tensor([[-1.0, 1.0]]))
    assert "forward" not in vars(activation)


def test_views_average_the_objective():
    views = Views(3, Jitter(2, mode="roll"))(torch.rand(1, 3, 6, 6), torch.Generator().manual_seed(0))
    assert len(views) == 3 and all(v.shape == (1, 3, 6, 6) for v in views)
    assert not torch.equal(views[0], views[1]) or not torch.equal(views[1], views[2])
    with pytest.raises(ValueError, match="count"):
        Views(0)
    x = torch.rand(1, 3, 4, 4, generator=torch.Generator().manual_seed(1))

    def objective(v):
        return (v - 0.25).pow(2).sum()

    one, h1 = optimize_image(objective, x, steps=2, optimizer="sgd", lr=0.1, progress=False)
    three, h3 = optimize_image(objective, x, steps=2, optimizer="sgd", lr=0.1, progress=False,
                               transforms=[Views(3)])   # three identical views: the same mean
    torch.testing.assert_close(one, three)
    assert h1.objective == pytest.approx(h3.objective)


def test_lucid_rule_redirects_only_images_whose_gradient_is_blocked():
    # image 0: one unit active (x = 3), so its plain gradient passes; image 1: all units clipped
    x = torch.tensor([[-1.0, 3.0], [-1.0, 7.0]], requires_grad=True)
    upstream = torch.tensor([[-1.0, 2.0], [-1.0, 1.0]])
    y = redirected_clamp(x, 0.0, 6.0, only_if_blocked=True)
    (grad,) = torch.autograd.grad((y * upstream).sum(), [x])
    torch.testing.assert_close(grad, torch.tensor([[0.0, 2.0], [-1.0, 1.0]]))
