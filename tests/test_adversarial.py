"""Fooling images, FGSM and PGD: hand-checked steps on linear models, the pretrained model fooled,
the same images on the network with its batch norm folded in, and the caller's state left as it
was (also after an exception)."""

import pytest
import torch
from models_by_hand import batch_norm_cnn, linear_model, unfolded
from torch import nn

import cs_utils
from cs_utils.adversarial import (
    difference_image,
    fgsm,
    fooling_image,
    fooling_step,
    pgd,
    quantize_8bit,
    reload_as_png,
)
from cs_utils.engine.folding import gradient_network


@pytest.fixture
def switch_model():
    """Two classes: class 0 scores 0; class 1 scores 10 * (first pixel) - 6."""
    weight = torch.zeros(2, 12)
    weight[1, 0] = 10.0
    return linear_model(weight, torch.tensor([0.0, -6.0]))


def test_fooling_step_is_unit_gradient_step_on_linear_model():
    torch.manual_seed(0)
    weight = torch.randn(3, 12)
    model = linear_model(weight, torch.zeros(3))
    x = torch.rand(2, 3, 2, 2)
    out = fooling_step(model, x, [2, 0], step_size=0.3)
    # the score gradient of class t is weight[t] whatever x is; the step has L2 length 0.3
    expected = torch.stack([x[0].flatten() + 0.3 * weight[2] / weight[2].norm(),
                            x[1].flatten() + 0.3 * weight[0] / weight[0].norm()]).view_as(x)
    torch.testing.assert_close(out, expected)
    assert not out.requires_grad


def test_fooling_image_flips_class_in_one_hand_checked_step(switch_model):
    x = torch.full((1, 3, 2, 2), 0.5)  # score of class 1: 10 * 0.5 - 6 = -1 < 0: class 0
    assert switch_model(x).argmax(1).item() == 0
    fooled, history = fooling_image(switch_model, x, 1, step_size=0.2, confidence=0.5,
                                    epsilon=None, quantize=False)
    expected = x.clone()
    expected[0, 0, 0, 0] = 0.7  # the unit gradient is the first pixel: score 10 * 0.7 - 6 = 1 > 0
    torch.testing.assert_close(fooled, expected)
    assert history.steps.tolist() == [1] and history.success.tolist() == [True]
    assert history.linf.item() == pytest.approx(0.2) and history.l2.item() == pytest.approx(0.2)
    assert history.confidence.item() == pytest.approx(torch.sigmoid(torch.tensor(1.0)).item())


def test_fooling_image_respects_epsilon_and_reports_failure(switch_model):
    x = torch.full((1, 3, 2, 2), 0.5)
    fooled, history = fooling_image(switch_model, x, 1, step_size=0.2, confidence=0.5,
                                    epsilon=0.1, quantize=False, max_steps=5)
    # capped at 0.6: score 10 * 0.6 - 6 = 0 only ties class 0, so the model never predicts 1
    assert fooled[0, 0, 0, 0].item() == pytest.approx(0.6)
    assert history.steps.tolist() == [5] and history.success.tolist() == [False]
    assert history.linf.item() == pytest.approx(0.1)


def test_fooling_image_quantized_result_is_on_8bit_grid_and_each_image_stops_on_its_own(switch_model):
    x = torch.full((2, 3, 2, 2), 0.5)
    x[1, 0, 0, 0] = 0.7  # already class 1
    fooled, history = fooling_image(switch_model, x, 1, step_size=0.2, confidence=0.5, epsilon=None)
    assert torch.equal(fooled, quantize_8bit(fooled))
    assert history.steps.tolist() == [1, 0]
    assert switch_model(fooled).argmax(1).tolist() == [1, 1]


def test_fooling_pretrained_survives_png(lite0, tmp_path):
    x = cs_utils.load_image(cs_utils.sample_image("imagenet_02").path, 160)
    target = cs_utils.imagenet_index("goldfish")
    fooled, history = fooling_image(lite0, x, target, epsilon=8 / 255, max_steps=40)
    assert history.success.item() and history.linf.item() <= 8 / 255 + 1e-6
    reloaded = cs_utils.load_image(cs_utils.image.save_image(fooled, tmp_path / "fooled.png"))
    with torch.no_grad():
        probs = lite0(reloaded).softmax(1)
        original = lite0(x).argmax(1).item()
    assert original != target
    assert probs.argmax(1).item() == target and probs[0, target] >= 0.9


def test_fgsm_equals_epsilon_sign_gradient_on_linear_model():
    torch.manual_seed(1)
    weight, bias = torch.randn(3, 12), torch.randn(3)
    model = linear_model(weight, bias)
    x = torch.rand(2, 3, 2, 2) * 0.6 + 0.2  # far from 0 and 1: no clamping
    labels = torch.tensor([1, 2])
    # d CE / d x = weight^T (softmax - one_hot)
    probs = (x.flatten(1) @ weight.T + bias).softmax(1)
    grad = (probs - nn.functional.one_hot(labels, 3).float()) @ weight
    eps = 8 / 255
    torch.testing.assert_close(fgsm(model, x, labels, epsilon=eps), x + eps * grad.sign().view_as(x))
    torch.testing.assert_close(fgsm(model, x, labels, epsilon=eps, targeted=True),
                               x - eps * grad.sign().view_as(x))


def test_fgsm_result_is_clamped():
    model = linear_model(torch.ones(2, 12) * torch.tensor([[1.0], [-1.0]]), torch.zeros(2))
    x = torch.zeros(1, 3, 2, 2)
    x[0, 0] = 1.0
    out = fgsm(model, x, 1, epsilon=0.1)  # ascending CE of class 1 raises every pixel
    assert out.min() >= 0 and out.max() <= 1
    torch.testing.assert_close(out, (x + 0.1).clamp(max=1))


def test_pgd_stays_in_ball_and_valid_range_and_succeeds(tiny_cnn):
    torch.manual_seed(0)
    x = torch.rand(4, 3, 8, 8)
    x[:, :, :2] = 0.0  # pixels at the edges of the valid range
    x[:, :, -2:] = 1.0
    labels = tiny_cnn(x).argmax(1)
    eps = 8 / 255
    adv, history = pgd(tiny_cnn, x, labels, epsilon=eps, steps=20, step_size=eps / 4,
                       generator=torch.Generator().manual_seed(0))
    assert (adv - x).abs().max() <= eps + 1e-6
    assert adv.min() >= 0 and adv.max() <= 1
    assert len(history.trace["success_rate"]) == 21
    assert history.linf.max() <= eps + 1e-6


def test_pgd_hand_checked_on_linear_model():
    weight = torch.zeros(2, 12)
    weight[1] = 1.0
    model = linear_model(weight, torch.tensor([0.0, -6.3]))
    x = torch.full((1, 3, 2, 2), 0.5)  # score 1: 6 - 6.3 < 0; +0.05 per pixel gives 6.6 - 6.3 > 0
    adv, history = pgd(model, x, 0, epsilon=0.05, steps=5, step_size=0.02, random_start=False)
    torch.testing.assert_close(adv, x + 0.05)
    assert history.success.tolist() == [True] and history.success_rate == 1.0


def test_pgd_same_seed_same_image(tiny_cnn):
    x = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(3))
    runs = [pgd(tiny_cnn, x, [0, 1], steps=3, generator=torch.Generator().manual_seed(s))[0]
            for s in (5, 5, 6)]
    assert torch.equal(runs[0], runs[1])
    assert not torch.equal(runs[0], runs[2])


@pytest.mark.parametrize("attack", ["fooling_step", "fooling_image", "fgsm", "pgd"])
def test_contract_and_bad_class_index(attack, tiny_cnn, caller_state):
    tiny_cnn.train()  # the attacks run in eval mode and restore the caller's mode
    tiny_cnn.conv.weight.requires_grad_(False)
    x = torch.rand(1, 3, 8, 8, requires_grad=True)
    fn = {"fooling_step": lambda t: fooling_step(tiny_cnn, x, t),
          "fooling_image": lambda t: fooling_image(tiny_cnn, x, t, max_steps=3),
          "fgsm": lambda t: fgsm(tiny_cnn, x, t),
          "pgd": lambda t: pgd(tiny_cnn, x, t, steps=2)}[attack]
    state = caller_state(tiny_cnn, x)
    out = fn(3)
    image = out[0] if isinstance(out, tuple) else out
    assert image.shape == x.shape and not image.requires_grad
    state.assert_unchanged()
    assert all(p.grad is None for p in tiny_cnn.parameters())
    with pytest.raises(IndexError, match="out of range: the model's classes are 0..4"):
        fn(5)
    state.assert_unchanged()
    with pytest.raises(TypeError, match="class index"):
        fn("goldfish")
    with pytest.raises(ValueError, match="3 class indices for 1 images"):
        fn([0, 1, 2])


def test_bad_image_and_epsilon_raise_clear_errors(tiny_cnn):
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        fgsm(tiny_cnn, torch.rand(1, 3, 8, 8) * 255, 0)
    with pytest.raises(ValueError, match="8/255"):
        pgd(tiny_cnn, torch.rand(1, 3, 8, 8), 0, epsilon=8)


def test_reload_as_png_keeps_8bit_images_and_rounds_others():
    x = torch.randint(0, 256, (2, 3, 5, 4), generator=torch.Generator().manual_seed(0)).float() / 255
    assert torch.equal(reload_as_png(x), x)
    y = (x + 0.3 / 255).clamp(0, 1)
    torch.testing.assert_close(reload_as_png(y), quantize_8bit(y))


def test_difference_image_is_grey_where_unchanged():
    x = torch.full((1, 3, 2, 2), 0.4)
    changed = x.clone()
    changed[0, 0, 0, 0] += 0.01
    changed[0, 1, 1, 1] -= 0.2
    diff = difference_image(x, changed, magnify=10)
    assert diff[0, 0, 0, 0].item() == pytest.approx(0.6)
    assert diff[0, 1, 1, 1].item() == 0.0  # 0.5 - 2.0, clamped
    assert (diff[0, 2] == 0.5).all()


# --------------------------------------------------------------------------- folded batch norm

def attack_runs(model, x):
    return {"fooling_image": lambda: fooling_image(model, x, [1, 3], max_steps=6, step_size=0.5,
                                                   confidence=0.6,
                                                   epsilon=None, quantize=False)[0],
            "fgsm": lambda: fgsm(model, x, [0, 2], epsilon=4 / 255),
            "pgd": lambda: pgd(model, x, [0, 2], epsilon=8 / 255, steps=5,
                               generator=torch.Generator().manual_seed(1))[0]}


@pytest.mark.parametrize("attack", ["fooling_image", "fgsm", "pgd"])
def test_attacks_on_the_folded_network_give_the_image_of_the_model_as_it_is(attack, caller_state):
    model = batch_norm_cnn()
    x = 0.2 + 0.6 * torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    assert not any(isinstance(m, nn.BatchNorm2d) for m in gradient_network(model).modules())   # it folds
    state = caller_state(model, x)
    run = attack_runs(model, x)[attack]
    folded = run()
    state.assert_unchanged()
    with unfolded(model):
        plain = run()
    state.assert_unchanged()
    assert (folded - plain).abs().max() < 1e-5      # float rounding; no sign step flipped here
    assert not torch.equal(plain, x)


@pytest.mark.parametrize("attack, fails_on_call", [("fooling_image", 2), ("fgsm", 1), ("pgd", 3)])
def test_the_model_is_left_as_it_was_when_the_folded_network_raises(attack, fails_on_call, caller_state):
    model = batch_norm_cnn(fails_on_call=fails_on_call)
    assert gradient_network(model) is not model
    x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    state = caller_state(model, x)
    with pytest.raises(RuntimeError, match="middle of the optimisation"):
        attack_runs(model, x)[attack]()
    state.assert_unchanged()
    assert not model.block1[0].bias.requires_grad and model.training
