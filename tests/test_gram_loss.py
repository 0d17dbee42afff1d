"""gram_loss / gram_losses (cs_utils.engine.gram): style_loss's value and gradient with a written-out
backward, the value and the Gram matrices taken from the lesson's functions when they run."""

import pytest
import torch

import cs_utils
from cs_utils.engine.gram import gram_loss, gram_losses
from cs_utils.losses import gram_matrix, style_loss


def seeded(seed):
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("target_shape", [(1, 5, 5), (2, 5, 5), (5, 5)])
def test_gram_loss_equals_style_loss_in_value_and_gradient(channels_last, target_shape):
    f = torch.randn(2, 5, 4, 3, generator=seeded(3), dtype=torch.float64)
    if channels_last:
        f = f.contiguous(memory_format=torch.channels_last)
    f.requires_grad_(True)
    a = torch.randn(*target_shape, generator=seeded(4), dtype=torch.float64)
    value = gram_loss(f, a, 3.0)
    expected = style_loss([f], [a if a.dim() == 3 else a[None]], 3.0)
    torch.testing.assert_close(value, expected)
    (g,) = torch.autograd.grad(value, f)
    (ge,) = torch.autograd.grad(expected, f)
    torch.testing.assert_close(g, ge)
    assert g.is_contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    assert torch.autograd.gradcheck(lambda x: gram_loss(x, a, 3.0), (f,))


def test_gram_loss_by_hand():
    # F = [[1, 2], [3, 4]] over 2 positions, C=1: G = (1+4)/(1*1*2)... one channel, H=1, W=2
    f = torch.tensor([[[[1.0, 2.0]]]], requires_grad=True)
    value = gram_loss(f, torch.tensor([[[1.0]]]), 2.0)       # G = 5/2, (2.5 - 1)^2 = 2.25, x2
    assert float(value.detach()) == pytest.approx(4.5)
    (g,) = torch.autograd.grad(value, f)                      # dL/dF = 2 * 2 * 1.5 * 2F / 2 = 6F
    torch.testing.assert_close(g, torch.tensor([[[[6.0, 12.0]]]]))


def test_gram_loss_rejects_mismatched_targets_and_second_derivatives():
    f = torch.randn(1, 4, 3, 3, generator=seeded(5), requires_grad=True)
    with pytest.raises(ValueError, match=r"\(1, 4, 4\)"):
        gram_loss(f, torch.zeros(1, 3, 3))
    (g,) = torch.autograd.grad(gram_loss(f, gram_matrix(f.detach())[:, :, :] + 1), f, create_graph=True)
    with pytest.raises(RuntimeError):
        torch.autograd.grad(g.sum(), f)


def test_several_layers_in_one_node_equal_style_loss():
    features = [torch.randn(2, 3, 5, 5, generator=seeded(6), dtype=torch.float64, requires_grad=True),
                torch.randn(2, 4, 3, 3, generator=seeded(7), dtype=torch.float64, requires_grad=True)]
    targets = [torch.randn(1, 3, 3, generator=seeded(8), dtype=torch.float64),
               torch.randn(2, 4, 4, generator=seeded(9), dtype=torch.float64)]
    value = gram_losses(features, targets, [0.5, 2.0])
    expected = style_loss(features, targets, [0.5, 2.0])
    torch.testing.assert_close(value, expected)
    for g, ge in zip(torch.autograd.grad(value, features), torch.autograd.grad(expected, features)):
        torch.testing.assert_close(g, ge)


def test_the_value_and_the_grams_come_from_the_lessons_functions(monkeypatch):
    """The engine's rule: gram_losses computes no exercise's answer itself. It calls
    cs_utils.losses.gram_matrix and cs_utils.losses.style_loss, looked up when it runs (the student's,
    in the release or under the grader), and fails as they fail."""
    f = torch.randn(1, 3, 4, 4, generator=seeded(10), dtype=torch.float64, requires_grad=True)
    a = torch.randn(1, 3, 3, generator=seeded(11), dtype=torch.float64)
    calls = []

    def counted(name, fn):
        def wrapper(*args, **kwargs):
            calls.append(name)
            return fn(*args, **kwargs)
        return wrapper

    monkeypatch.setattr(cs_utils.losses, "gram_matrix", counted("gram_matrix", gram_matrix))
    monkeypatch.setattr(cs_utils.losses, "style_loss", lambda *args, **kwargs: torch.tensor(42.0))
    assert float(gram_loss(f, a).detach()) == 42.0 and calls == ["gram_matrix"]

    def not_written(*args, **kwargs):
        raise NotImplementedError("the student's stub")

    for name in ("gram_matrix", "style_loss"):
        monkeypatch.setattr(cs_utils.losses, name, not_written)
        with pytest.raises(NotImplementedError, match="stub"):
            gram_loss(f, a)
        monkeypatch.undo()
