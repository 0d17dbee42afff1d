import pytest
import torch

import cs_utils


def test_activations_match_manual_forward(tiny_cnn):
    x = torch.rand(2, 3, 8, 8)
    with cs_utils.hooks.capture_activations(tiny_cnn, ["conv", "relu", "fc"]) as acts:
        out = tiny_cnn(x)
    conv = tiny_cnn.conv(x)
    torch.testing.assert_close(acts["conv"], conv)
    torch.testing.assert_close(acts["relu"], conv.clamp(min=0))
    torch.testing.assert_close(acts["fc"], out)


def test_single_name_and_overwrite_on_each_forward(tiny_cnn):
    x1, x2 = torch.rand(1, 3, 8, 8), torch.rand(1, 3, 8, 8)
    with cs_utils.hooks.capture_activations(tiny_cnn, "fc") as acts:
        tiny_cnn(x1)
        out2 = tiny_cnn(x2)
    torch.testing.assert_close(acts["fc"], out2)


def test_activations_keep_or_drop_graph(tiny_cnn):
    x = torch.rand(1, 3, 8, 8, requires_grad=True)
    with cs_utils.hooks.capture_activations(tiny_cnn, "relu") as acts:
        tiny_cnn(x)
    acts["relu"].sum().backward()  # differentiable by default
    assert x.grad is not None
    with cs_utils.hooks.capture_activations(tiny_cnn, "relu", detach=True) as acts:
        tiny_cnn(x)
    assert not acts["relu"].requires_grad


def test_gradients_match_autograd(tiny_cnn):
    x = torch.rand(2, 3, 8, 8)
    with cs_utils.hooks.capture_gradients(tiny_cnn, ["conv", "relu"]) as grads:
        with cs_utils.hooks.capture_activations(tiny_cnn, ["conv", "relu"]) as acts:
            score = tiny_cnn(x)[:, 2].sum()
        expected = torch.autograd.grad(score, [acts["conv"], acts["relu"]], retain_graph=True)
        score.backward()
    torch.testing.assert_close(grads["conv"], expected[0])
    torch.testing.assert_close(grads["relu"], expected[1])
    # hand check: d score / d relu output = fc weight of class 2 / (H * W), at every position
    per_pixel = tiny_cnn.fc.weight[2] / 64
    torch.testing.assert_close(grads["relu"][0, :, 3, 5], per_pixel)


def test_gradients_on_frozen_pretrained_model(lite0, hook_count):
    x = torch.rand(1, 3, 64, 64, requires_grad=True)
    before = hook_count(lite0)
    with cs_utils.hooks.capture_gradients(lite0, ["blocks.10", "stem"]) as grads:
        lite0(x)[0, 967].backward()
    assert grads["blocks.10"].shape[1] == 112 and grads["stem"].shape[1] == 32
    assert hook_count(lite0) == before
    assert not any(p.requires_grad for p in lite0.parameters())


def test_no_gradient_entry_without_grad(tiny_cnn):
    with cs_utils.hooks.capture_gradients(tiny_cnn, "conv") as grads, torch.no_grad():
        tiny_cnn(torch.rand(1, 3, 8, 8))
    assert grads == {}


@pytest.mark.parametrize("manager", [cs_utils.hooks.capture_activations, cs_utils.hooks.capture_gradients])
def test_no_hooks_left_after_block_or_exception(tiny_cnn, hook_count, manager):
    assert hook_count(tiny_cnn) == 0
    with manager(tiny_cnn, ["conv", "fc"]):
        assert hook_count(tiny_cnn) == 2
        tiny_cnn(torch.rand(1, 3, 8, 8, requires_grad=True)).sum().backward()
    assert hook_count(tiny_cnn) == 0
    with pytest.raises(RuntimeError, match="boom"):
        with manager(tiny_cnn, ["conv", "relu"]):
            assert hook_count(tiny_cnn) == 2
            raise RuntimeError("boom")
    assert hook_count(tiny_cnn) == 0


def test_tensor_hooks_removed_when_graph_outlives_block(tiny_cnn):
    x = torch.rand(1, 3, 8, 8, requires_grad=True)
    with cs_utils.hooks.capture_gradients(tiny_cnn, "relu") as grads:
        out = tiny_cnn(x)
    out.sum().backward()  # after the block: nothing is recorded any more
    assert grads == {}


def test_unknown_layer_lists_closest_names_and_registers_nothing(lite0, hook_count):
    before = hook_count(lite0)
    with pytest.raises(KeyError, match="blocks.10"):
        with cs_utils.hooks.capture_activations(lite0, ["stem", "block.10"]):
            pass
    with pytest.raises(KeyError, match="layer_names"):
        with cs_utils.hooks.capture_gradients(lite0, "features.30"):
            pass
    assert hook_count(lite0) == before


def test_layer_names_and_get_layer(lite0):
    names = cs_utils.hooks.layer_names(lite0)
    assert {"stem", "blocks.0", "blocks.15", "blocks.3.expand", "head", "pool", "fc"} <= set(names)
    assert cs_utils.hooks.get_layer(lite0, "blocks.3") is lite0.blocks[3]
    with pytest.raises(TypeError):
        cs_utils.hooks.get_layer(lite0, 3)


def test_bad_layer_list(tiny_cnn):
    with pytest.raises(ValueError, match="empty"):
        with cs_utils.hooks.capture_activations(tiny_cnn, []):
            pass
    with pytest.raises(TypeError):
        with cs_utils.hooks.capture_activations(tiny_cnn, 5):
            pass


@pytest.mark.parametrize("manager", [cs_utils.hooks.capture_activations, cs_utils.hooks.capture_gradients])
def test_caller_state_unchanged(tiny_cnn, caller_state, manager):
    tiny_cnn.train()
    tiny_cnn.conv.weight.requires_grad_(False)
    x = torch.rand(1, 3, 8, 8)
    state = caller_state(tiny_cnn, x)
    with manager(tiny_cnn, ["conv", "fc"]):
        tiny_cnn(x).sum().backward()
    state.assert_unchanged()


def test_caller_state_check_catches_changes(tiny_cnn, caller_state):
    x = torch.rand(1, 3, 8, 8)
    for change in (lambda: tiny_cnn.train(), lambda: x.mul_(2), lambda: tiny_cnn.fc.requires_grad_(False),
                   lambda: tiny_cnn.conv.register_forward_hook(lambda *a: None)):
        state = caller_state(tiny_cnn, x)
        change()
        with pytest.raises(AssertionError):
            state.assert_unchanged()


def test_extract_features_stops_after_deepest_layer(tiny_cnn, hook_count):
    calls = []
    handle = tiny_cnn.fc.register_forward_hook(lambda m, i, o: calls.append(1))
    x = torch.rand(2, 3, 8, 8)
    feats = cs_utils.extract_features(tiny_cnn, x, ["relu", "conv"])
    handle.remove()
    assert list(feats) == ["relu", "conv"]
    assert calls == [], "layers after the deepest requested one must not run"
    assert torch.equal(feats["relu"], torch.relu(tiny_cnn.conv(x)))
    assert hook_count(tiny_cnn) == 0


def test_extract_features_keeps_the_graph_and_runs_fully_without_stop(tiny_cnn, hook_count):
    x = torch.rand(1, 3, 8, 8, requires_grad=True)
    feats = cs_utils.extract_features(tiny_cnn, x, "fc", stop=False)
    assert torch.allclose(feats["fc"], tiny_cnn(x))
    feats["fc"].sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    with pytest.raises(KeyError, match="conv"):
        cs_utils.extract_features(tiny_cnn, x, "cnov")
    assert hook_count(tiny_cnn) == 0


def test_extract_features_on_lite0_matches_full_forward(lite0):
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        feats = cs_utils.extract_features(lite0, x, ["blocks.4", "stem"])
        with cs_utils.hooks.capture_activations(lite0, ["blocks.4"], detach=True) as full:
            lite0(x)
    assert torch.equal(feats["blocks.4"], full["blocks.4"])


def test_evaluating_restores_each_modules_mode_also_after_an_error(tiny_cnn):
    tiny_cnn.train()
    tiny_cnn.conv.eval()
    before = [m.training for m in tiny_cnn.modules()]
    with pytest.raises(ValueError):
        with cs_utils.hooks.evaluating(tiny_cnn):
            assert not any(m.training for m in tiny_cnn.modules())
            raise ValueError
    assert [m.training for m in tiny_cnn.modules()] == before
