"""The objective vocabulary: hand-computed values, the algebra, gradients, one forward pass per
evaluation, clean-up after errors, tracked terms, and PGD on the shared loop."""

import ast
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import cs_utils
from cs_utils import objectives
from cs_utils.objectives import (
    MODEL_OUTPUT,
    Objective,
    channel,
    class_score,
    cross_entropy,
    direction,
    feature_match,
    gram_match,
    layer_l2,
    neuron,
    total_variation,
)
from cs_utils.optimize import optimize_image


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def pointwise_model() -> nn.Sequential:
    """conv: channel 0 = red, channel 1 = green - blue + 0.5; then the mean of each channel."""
    model = nn.Sequential()
    model.add_module("conv", nn.Conv2d(3, 2, 1))
    model.add_module("pool", nn.AdaptiveAvgPool2d(1))
    model.add_module("flat", nn.Flatten())
    with torch.no_grad():
        model.conv.weight.copy_(torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, -1.0]]).view(2, 3, 1, 1))
        model.conv.bias.copy_(torch.tensor([0.0, 0.5]))
    return model.eval()


def image() -> torch.Tensor:
    red = torch.tensor([[0.1, 0.2], [0.3, 0.4]])
    green = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    blue = torch.full((2, 2), 0.5)
    return torch.stack([red, green, blue])[None]      # conv channel 1 = green


def deeper_model(dtype=torch.float32) -> nn.Sequential:
    """conv -> tanh -> conv -> tanh -> pool -> fc: smooth, so gradcheck applies."""
    torch.manual_seed(0)
    model = nn.Sequential()
    model.add_module("conv1", nn.Conv2d(3, 4, 3, padding=1))
    model.add_module("act1", nn.Tanh())
    model.add_module("conv2", nn.Conv2d(4, 5, 3, padding=1, stride=2))
    model.add_module("act2", nn.Tanh())
    model.add_module("pool", nn.AdaptiveAvgPool2d(1))
    model.add_module("flat", nn.Flatten())
    model.add_module("fc", nn.Linear(5, 3))
    return model.to(dtype).eval()


# ----------------------------------------------------------------------------- values by hand

def test_objective_values_by_hand():
    model, x = pointwise_model(), image()
    # channel means: red 0.25, green 0.5
    assert channel(model, "conv", 0)(x).item() == pytest.approx(-0.25)
    assert channel(model, "conv", 1)(x).item() == pytest.approx(-0.5)
    assert neuron(model, "conv", 1)(x).item() == pytest.approx(-1.0)                   # centre (1, 1)
    assert neuron(model, "conv", 1, position=(0, 1))(x).item() == pytest.approx(0.0)
    assert neuron(model, "conv", 0, position=(1, 0))(x).item() == pytest.approx(-0.3)
    # 0.5 * (0.01 + 0.04 + 0.09 + 0.16 + 1 + 0 + 0 + 1)
    assert layer_l2(model, "conv")(x).item() == pytest.approx(-1.15)
    assert class_score(model, 1)(x).item() == pytest.approx(-0.5)                      # the output
    assert class_score(model, 0)(torch.cat([x, x])).item() == pytest.approx(-0.5)      # summed
    v = torch.tensor([2.0, 1.0])
    assert direction(model, "flat", v)(x).item() == pytest.approx(-1.0)                # -(0.5 + 0.5)
    cos = 1.0 / (math.hypot(0.25, 0.5) * math.sqrt(5))                                 # = 0.8
    assert direction(model, "flat", v, cosine_power=1)(x).item() == pytest.approx(-cos)
    target = torch.zeros(1, 2, 2, 2)
    target[0, 1] = 1.0                                                                  # ||target||^2 = 4
    # the green channel matches at 2 of 4 pixels; red differs by 0.1 .. 0.4
    expected = (0.01 + 0.04 + 0.09 + 0.16 + 0 + 1 + 1 + 0) / 4
    assert feature_match(model, "conv", target)(x).item() == pytest.approx(expected)
    assert feature_match(model, "conv", target, weight=0.5)(x).item() == pytest.approx(0.5 * 4 * expected)
    tv = total_variation(0.5)(x)
    # one pixel with both neighbours per channel: red 0.1^2 + 0.2^2, green 1 + 1, blue 0
    assert tv.item() == pytest.approx(0.5 * (0.05 + 2.0))
    torch.testing.assert_close(tv, cs_utils.tv_loss(x, 0.5))


def test_gram_match_and_cross_entropy_by_hand():
    model, x = pointwise_model(), image()
    f = model.conv(x).detach().reshape(2, 4)
    gram = f @ f.T / 8
    target = torch.eye(2)[None]
    value = gram_match(model, ["conv"], [target])(x)
    assert value.item() == pytest.approx(((gram - target[0]) ** 2).mean().item())
    both = gram_match(model, ["conv", "pool"], [target, torch.zeros(1, 2, 2)], layer_weights=[2.0, 0.0])
    assert both(x).item() == pytest.approx(2 * value.item())
    scores = torch.tensor([0.25, 0.5])
    assert cross_entropy(model, 1)(x).item() == pytest.approx(-scores.log_softmax(0)[1].item())
    assert cross_entropy(model, [0, 1])(torch.cat([x, x])).item() == pytest.approx(
        -scores.log_softmax(0).sum().item())


def test_gradients_pass_a_numerical_check_in_float64():
    model = deeper_model(torch.float64)
    x, other = torch.rand(2, 2, 3, 6, 6, generator=seeded(0), dtype=torch.float64)
    with torch.no_grad():
        feats = cs_utils.extract_features(model, other, ["conv1", "act2"])
    grams = [cs_utils.gram_matrix(feats["conv1"]), cs_utils.gram_matrix(feats["act2"])]
    match = feature_match(model, "act2", feats["act2"])
    for objective in (gram_match(model, ["conv1", "act2"], grams, [1.0, 3.0]), match,
                      gram_match(model, ["conv1"], grams[:1]) + 0.5 * match):
        assert torch.autograd.gradcheck(objective, (x.clone().requires_grad_(True),), eps=1e-6, atol=1e-6)


# ----------------------------------------------------------------------------- algebra and names

def test_add_scale_subtract_sum_and_names():
    model, x = pointwise_model(), image()
    a, b, c = channel(model, "conv", 0), channel(model, "conv", 1), layer_l2(model, "conv")
    va, vb, vc = a(x), b(x), c(x)
    cases = {
        "conv channel 0 + conv channel 1": (a + b, va + vb),
        "conv channel 0 - conv channel 1": (a - b, va - vb),
        "0.5 * (conv channel 0)": (0.5 * a, 0.5 * va),
        "2 * (conv channel 1)": (b * 2, 2 * vb),
        "-(conv channel 0)": (-a, -va),
        "conv channel 0 + conv channel 1 + conv L2": (sum([a, b, c]), va + vb + vc),
        "conv channel 0 + 0.1 * (conv L2) - conv channel 1": (a + 0.1 * c - b, va + 0.1 * vc - vb),
    }
    for name, (objective, expected) in cases.items():
        assert isinstance(objective, Objective) and objective.name == name
        torch.testing.assert_close(objective(x), expected)
    assert sum([a]) is a and a + 0 is a and repr(a) == "Objective(conv channel 0)"
    for bad in (lambda: a + 1, lambda: "x" * a, lambda: a * True, lambda: a + (lambda im: im.sum())):
        with pytest.raises(TypeError):
            bad()


def test_a_plain_callable_is_an_objective_too():
    x = image()
    plain = Objective(lambda im: im.sum(), "pixel sum")
    torch.testing.assert_close((plain + total_variation(1.0))(x), x.sum() + cs_utils.tv_loss(x))
    with pytest.raises(ValueError, match="both model and layers"):
        Objective(lambda f: f["conv"].sum(), "half", model=pointwise_model())
    with pytest.raises(KeyError, match="'conv'"):
        Objective(lambda f: f["cnov"].sum(), "typo", model=pointwise_model(), layers=["cnov"])


# ----------------------------------------------------------------------------- one forward pass

class CountCalls:
    """Counts forward passes of a module (a pre-hook runs even when a pass is stopped early)."""

    def __init__(self, module):
        self.calls = 0
        self.handle = module.register_forward_pre_hook(self)

    def __call__(self, module, inputs):
        self.calls += 1


def test_a_sum_of_feature_objectives_runs_the_model_once():
    model = deeper_model()
    x, other = torch.rand(2, 2, 3, 8, 8, generator=seeded(0))
    with torch.no_grad():
        feats = cs_utils.extract_features(model, other, ["conv1", "act2"])
    grams = [cs_utils.gram_matrix(feats["conv1"]), cs_utils.gram_matrix(feats["act2"])]
    terms = [gram_match(model, ["conv1", "act2"], grams), feature_match(model, "act2", feats["act2"]),
             layer_l2(model, "conv2"), channel(model, "act1", 2), neuron(model, "act2", 1)]
    total = 3.0 * terms[0] + sum(terms[1:])
    passes, head = CountCalls(model), CountCalls(model.fc)
    value = total(x)
    assert passes.calls == 1 and head.calls == 0          # one pass, stopped after act2
    separately = 3.0 * terms[0](x) + sum(t(x) for t in terms[1:])
    torch.testing.assert_close(value, separately)
    value.backward()                                       # one graph, gradients reach the model
    assert model.conv1.weight.grad is not None

    passes.calls = head.calls = 0
    (total + class_score(model, 2))(x)                    # the output too: one full pass
    assert passes.calls == 1 and head.calls == 1
    other = deeper_model()
    passes.calls = 0
    (total + layer_l2(other, "conv1"))(x)                 # another model: its own pass
    assert passes.calls == 1
    passes.handle.remove()
    head.handle.remove()


def test_on_networks_moves_only_the_named_models_terms_and_keeps_the_objective():
    model, other = deeper_model(), deeper_model()
    total = 2.0 * channel(model, "act1", 1) - layer_l2(model, "conv2") + class_score(other, 0)
    assert {k: layers for k, (_, layers) in total.models().items()} == {
        id(model): ("act1", "conv2"), id(other): (MODEL_OUTPUT,)}
    twice = deeper_model()
    with torch.no_grad():                        # the same layer names, other weights
        twice.conv1.weight.mul_(2.0)
        twice.conv2.bias.add_(0.5)
    x = torch.rand(1, 3, 8, 8, generator=seeded(4))
    moved = total.on_networks({id(model): twice})
    assert moved is not total and moved.models().keys() == {id(twice), id(other)}
    assert total.models().keys() == {id(model), id(other)}               # the original is unchanged
    with torch.no_grad():
        a1 = torch.tanh(twice.conv1(x))
        expected = (-2.0 * a1[:, 1].mean() + 0.5 * twice.conv2(a1).pow(2).sum() - other(x)[0, 0])
    torch.testing.assert_close(moved(x), expected)
    passes = CountCalls(twice)
    moved(x)
    assert passes.calls == 1                                             # still one pass per model
    passes.handle.remove()
    for unmoved in (total.on_networks({}), total.on_networks({id(twice): model})):
        assert unmoved.models().keys() == total.models().keys()
        torch.testing.assert_close(unmoved(x), total(x))
    assert total_variation(1.0).on_networks({id(model): twice}).models() == {}


def test_style_transfer_reads_style_and_content_in_one_pass(tiny_cnn):
    content = torch.rand(1, 3, 12, 12, generator=seeded(0))
    style = torch.rand(1, 3, 12, 12, generator=seeded(1))
    passes = CountCalls(tiny_cnn)
    _, history = cs_utils.style_transfer(tiny_cnn, content, style, style_layers=["conv"],
                                         content_layer="relu", steps=3, optimizer="adam", progress=False)
    passes.handle.remove()
    assert history.steps == 3 and passes.calls == 2 + 3   # style targets, content target, 3 evaluations
    assert len(history.extra["style"]) == len(history.extra["content"]) == 3


def test_tracked_terms_are_recorded_unscaled_by_the_loop(tiny_cnn):
    x = torch.rand(1, 3, 8, 8, generator=seeded(0))
    a, b = channel(tiny_cnn, "relu", 0), layer_l2(tiny_cnn, "conv")
    objective = 2.0 * a.track("channel") + b.track("l2")
    assert objective.track("all").name == objective.name
    _, history = optimize_image(objective, x, steps=3, lr=0.05, progress=False)
    assert set(history.extra) == {"channel", "l2"} and len(history.extra["l2"]) == 3
    assert history.extra["channel"][0] == pytest.approx(a(x).item())
    assert history.extra["l2"][0] == pytest.approx(b(x).item())
    assert history.objective[0] == pytest.approx(2 * a(x).item() + b(x).item())
    value, tracked = objective.evaluate(x)
    assert set(tracked) == {"channel", "l2"}
    torch.testing.assert_close(value, 2.0 * tracked["channel"] + tracked["l2"])


# ----------------------------------------------------------------------------- clean-up after errors

class Bomb(nn.Module):
    def forward(self, x):
        raise RuntimeError("boom")


@pytest.mark.parametrize("where", ["in the forward pass", "in the output pass", "after the features"])
def test_no_hooks_left_after_an_exception_inside_an_objective(where, hook_count, caller_state):
    fails = where != "after the features"
    model = nn.Sequential()
    model.add_module("conv", nn.Conv2d(3, 4, 3, padding=1))
    model.add_module("bomb" if fails else "relu", Bomb() if fails else nn.ReLU())
    model.add_module("pool", nn.AdaptiveAvgPool2d(1))
    model.train()
    x = torch.rand(1, 3, 8, 8)
    state = caller_state(model, x)
    before = hook_count(model)
    if where == "in the forward pass":
        objective = channel(model, "conv", 0) + layer_l2(model, "pool")
    elif where == "in the output pass":
        output = Objective(lambda f: f[MODEL_OUTPUT].sum(), "out", model=model, layers=[MODEL_OUTPUT])
        objective = channel(model, "conv", 0) + output
    else:
        failing = Objective(lambda f: 1 / 0, "fails", model=model, layers=["relu"])
        objective = channel(model, "conv", 0) + failing
    with pytest.raises((RuntimeError, ZeroDivisionError)):
        objective(x)
    with pytest.raises((RuntimeError, ZeroDivisionError)):
        optimize_image(objective, x, steps=2, progress=False)
    assert hook_count(model) == before == 0
    state.assert_unchanged()


def test_errors_name_the_problem(tiny_cnn):
    with pytest.raises(KeyError, match="Closest valid names: 'relu'"):
        channel(tiny_cnn, "rleu", 0)
    with pytest.raises(TypeError, match="channel must be a non-negative int"):
        neuron(tiny_cnn, "conv", -1)
    with pytest.raises(IndexError, match="out of range: the model's classes are 0..4"):
        class_score(tiny_cnn, 5)
    with pytest.raises(ValueError, match="one target Gram matrix"):
        gram_match(tiny_cnn, ["conv", "relu"], [torch.eye(4)[None]])
    with pytest.raises(ValueError, match="3 layer weights for 1 layers"):
        gram_match(tiny_cnn, ["conv"], [torch.eye(4)[None]], [1.0, 2.0, 3.0])
    with pytest.raises(TypeError, match="target_features"):
        feature_match(tiny_cnn, "conv", [1.0])
    with pytest.raises(ValueError, match="2 labels for a batch of 3"):
        cross_entropy(tiny_cnn, [0, 1])(torch.rand(3, 3, 4, 4))


def test_objectives_import_only_the_allowed_modules():
    tree = ast.parse(Path(objectives.__file__).read_text())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            imported |= {node.module} if node.module else {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module not in ("__future__", "collections.abc"):
            imported.add(node.module.split(".")[0])
        elif isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
    allowed = {"validation", "engine.gram", "hooks", "losses", "runtime", "torch", "copy", "numbers"}
    assert imported <= allowed, imported
    class_viz = Path(cs_utils.class_viz.__file__).read_text()
    assert "adversarial" not in class_viz


def test_each_objective_and_transform_has_one_name():
    from cs_utils import class_viz, optimize

    for old in ("class_score_objective", "channel_objective", "neuron_objective", "representation_objective"):
        assert not hasattr(cs_utils, old) and not hasattr(class_viz, old), old
    assert not {"Jitter", "Compose", "History", "L2Penalty"} & set(optimize.__all__)
    assert cs_utils.objectives.class_score is class_score and cs_utils.objectives.channel is channel
    assert cs_utils.objectives.neuron is neuron and cs_utils.objectives.Objective is Objective


# ----------------------------------------------------------------------------- PGD on the loop

def pgd_written_out(model, x, labels, *, epsilon, steps, step_size, targeted, generator):
    """PGD as it was before it ran on the shared loop: a plain loop."""
    def project(z):
        return torch.max(torch.min(z, x + epsilon), x - epsilon).clamp(0, 1)

    noise = torch.rand(x.shape, generator=generator, dtype=x.dtype)
    current = project(x + (2 * noise - 1) * epsilon)
    trace = []
    for step in range(steps + 1):
        with torch.no_grad():
            scores = model(current)
        trace.append(scores.gather(1, labels[:, None]).mean().item())
        if step == steps:
            break
        z = current.detach().requires_grad_(True)
        (grad,) = torch.autograd.grad(F.cross_entropy(model(z), labels, reduction="sum"), [z])
        current = project(current + step_size * (-grad if targeted else grad).sign())
    return current, trace


@pytest.mark.parametrize("targeted", [False, True])
def test_pgd_on_the_loop_equals_the_plain_loop(tiny_cnn, targeted):
    x = torch.rand(3, 3, 8, 8, generator=seeded(0))
    labels = torch.tensor([0, 3, 1])
    kwargs = dict(epsilon=6 / 255, steps=4, step_size=2 / 255, targeted=targeted)
    adv, history = cs_utils.pgd(tiny_cnn, x, labels, generator=seeded(7), **kwargs)
    expected, trace = pgd_written_out(tiny_cnn, x, labels, generator=seeded(7), **kwargs)
    assert torch.equal(adv, expected)
    assert history.trace["score"] == trace and len(history.trace["success_rate"]) == 5

