import pytest
import torch

from cs_utils.losses import content_loss, gram_matrix, style_loss, tv_loss


def test_gram_matrix_by_hand():
    f = torch.tensor([[1.0, 2.0], [3.0, 4.0]]).reshape(1, 1, 2, 2)  # one channel
    g = torch.cat([f, 2 * f], dim=1)                                  # two channels
    raw = gram_matrix(g, normalize=False)
    assert raw.shape == (1, 2, 2)
    # <f, f> = 1 + 4 + 9 + 16 = 30; <f, 2f> = 60; <2f, 2f> = 120
    assert raw.tolist() == [[[30.0, 60.0], [60.0, 120.0]]]
    torch.testing.assert_close(gram_matrix(g), raw / (2 * 2 * 2))


def test_gram_matrix_is_batched_and_symmetric():
    f = torch.randn(3, 5, 4, 6, generator=torch.Generator().manual_seed(0))
    g = gram_matrix(f)
    for i in range(3):
        flat = f[i].reshape(5, -1)
        torch.testing.assert_close(g[i], flat @ flat.T / (5 * 4 * 6))
    torch.testing.assert_close(g, g.transpose(1, 2))


def test_content_loss_by_hand():
    a = torch.zeros(1, 2, 2, 2)
    b = torch.ones(1, 2, 2, 2)
    b[0, 0, 0, 0] = 3.0
    assert content_loss(b, a).item() == pytest.approx(7 * 1 + 9)
    assert content_loss(b, a, weight=0.5).item() == pytest.approx(8.0)
    with pytest.raises(ValueError, match="shape"):
        content_loss(b, torch.zeros(1, 2, 3, 3))


def test_style_loss_by_hand():
    f1 = torch.ones(1, 1, 2, 2)              # gram = 4 / 4 = 1
    f2 = torch.ones(1, 2, 1, 1) * 2          # gram = [[4,4],[4,4]] / 2 = 2
    targets = [torch.zeros(1, 1, 1), torch.ones(1, 2, 2)]
    # layer 1: mean((1-0)^2) = 1; layer 2: mean((2-1)^2) = 1
    assert style_loss([f1, f2], targets).item() == pytest.approx(2.0)
    assert style_loss([f1, f2], targets, weights=[3.0, 0.5]).item() == pytest.approx(3.5)
    with pytest.raises(ValueError, match="target"):
        style_loss([f1], targets)
    with pytest.raises(ValueError, match="channels"):
        style_loss([f1, f2], targets[::-1])


def test_tv_loss_by_hand():
    x = torch.tensor([[0.0, 1.0, 3.0], [2.0, 2.0, 2.0], [5.0, 0.0, 0.0]]).reshape(1, 1, 3, 3)
    # pixel (0,0): dx=1, dy=2 -> 5; (0,1): dx=2, dy=1 -> 5; (1,0): dx=0, dy=3 -> 9; (1,1): dx=0, dy=-2 -> 4
    assert tv_loss(x).item() == pytest.approx(23.0)
    assert tv_loss(x, weight=2.0).item() == pytest.approx(46.0)
    expected = sum(v ** 0.5 for v in (5.0, 5.0, 9.0, 4.0))
    assert tv_loss(x, beta=1.0).item() == pytest.approx(expected, rel=1e-6)
    assert tv_loss(torch.ones(2, 3, 4, 4)).item() == 0.0


@pytest.mark.parametrize("beta", [2.0, 1.5])
def test_losses_pass_float64_gradient_checks(beta):
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(2, 2, 4, 5, dtype=torch.float64, generator=gen, requires_grad=True)
    target = torch.rand(2, 2, 4, 5, dtype=torch.float64, generator=gen)
    grams = [gram_matrix(torch.rand(2, 2, 3, 3, dtype=torch.float64, generator=gen))]
    assert torch.autograd.gradcheck(lambda t: tv_loss(t, beta=beta), (x,))
    assert torch.autograd.gradcheck(lambda t: content_loss(t, target), (x,))
    assert torch.autograd.gradcheck(lambda t: gram_matrix(t), (x,))
    assert torch.autograd.gradcheck(lambda t: style_loss([t], grams), (x,))


def test_losses_do_not_modify_inputs():
    x = torch.rand(1, 3, 4, 4)
    copy = x.clone()
    gram_matrix(x), tv_loss(x), content_loss(x, x * 2), style_loss([x], [gram_matrix(x)])
    assert torch.equal(x, copy)


def test_bad_shapes_raise_clear_errors():
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        gram_matrix(torch.rand(3, 4, 4))
    with pytest.raises(TypeError, match="torch.Tensor"):
        tv_loss([[1.0]])
