"""cs_utils.engine.lbfgs.LBFGS takes torch.optim.LBFGS's steps, bit for bit."""

import pytest
import torch

from cs_utils.engine.gram import gram_losses
from cs_utils.engine.lbfgs import LBFGS, _Pairs


def run(optimizer_class, fn, x0, evaluations, history, *, set_to_none=True, line_search="strong_wolfe"):
    x = x0.clone().requires_grad_(True)
    opt = optimizer_class([x], lr=1, max_iter=evaluations, max_eval=evaluations, tolerance_grad=1e-12,
                          tolerance_change=1e-14, history_size=history, line_search_fn=line_search)
    losses = []

    def closure():
        opt.zero_grad(set_to_none=set_to_none)
        loss = fn(x)
        loss.backward()
        losses.append(float(loss.detach()))
        return loss

    opt.step(closure)
    return x.detach(), losses


def quadratic():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(30, 30, generator=g, dtype=torch.float64)
    a = a @ a.T + 0.1 * torch.eye(30, dtype=torch.float64)
    b = torch.randn(30, generator=g, dtype=torch.float64)
    return (lambda x: 0.5 * x @ a @ x - b @ x), torch.zeros(30, dtype=torch.float64)


def rosenbrock():
    return (lambda x: (100 * (x[1:] - x[:-1] ** 2) ** 2 + (1 - x[:-1]) ** 2).sum()), \
        torch.full((10,), -1.0, dtype=torch.float64)


def gram_image():
    """A float32 image problem: match a random Gram matrix through a convolution."""
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(3, 6, 3, padding=1)
    target = torch.rand(1, 6, 6)
    return (lambda x: gram_losses([conv(x)], [target])), torch.rand(1, 3, 12, 12)


@pytest.mark.parametrize("problem", [quadratic, rosenbrock, gram_image])
@pytest.mark.parametrize("history", [3, 20])
def test_the_same_steps_as_torch_bit_for_bit(problem, history):
    fn, x0 = problem()
    want, want_losses = run(torch.optim.LBFGS, fn, x0, 60, history)
    got, got_losses = run(LBFGS, fn, x0, 60, history)
    assert got_losses == want_losses
    assert torch.equal(got, want)
    assert got_losses[-1] < 0.5 * got_losses[0]


def test_a_closure_that_reuses_the_gradient_in_place():
    fn, x0 = rosenbrock()
    want, want_losses = run(torch.optim.LBFGS, fn, x0, 40, 5, set_to_none=False)
    got, got_losses = run(LBFGS, fn, x0, 40, 5, set_to_none=False)
    assert got_losses == want_losses and torch.equal(got, want)


def test_a_channels_last_image_takes_the_same_steps():
    """An image in channels-last layout (as an input of a channels-last network can be) has its gradient
    laid out so: the same steps as the plain image; torch's own gather (``view``) refused it."""
    fn, x0 = quadratic()
    image = x0[:27].reshape(1, 3, 3, 3)

    def loss(x):
        return fn(torch.cat([x.reshape(-1), x0[27:]]))

    plain, plain_losses = run(LBFGS, loss, image, 12, 5)
    x, losses = run(LBFGS, loss, image.to(memory_format=torch.channels_last), 12, 5)
    assert not x.is_contiguous()
    assert losses == plain_losses and torch.equal(x, plain)


def test_without_line_search_it_is_torch_lbfgs():
    fn, x0 = quadratic()
    want, _ = run(torch.optim.LBFGS, fn, x0, 15, 5, line_search=None)
    got, _ = run(LBFGS, fn, x0, 15, 5, line_search=None)
    assert torch.equal(got, want)


def two_loop(pairs, g, h_diag):
    """The textbook recursion (Nocedal & Wright, algorithm 7.4) in float64, pairs oldest first."""
    q = -g.double()
    alphas = []
    for s, y in reversed(pairs):
        rho = 1.0 / float(y.double() @ s.double())
        alpha = rho * float(s.double() @ q)
        q = q - alpha * y.double()
        alphas.append(alpha)
    r = h_diag * q
    for (s, y), alpha in zip(pairs, reversed(alphas)):
        rho = 1.0 / float(y.double() @ s.double())
        beta = rho * float(y.double() @ r)
        r = r + (alpha - beta) * s.double()
    return r


def test_a_pair_without_positive_curvature_is_not_kept():
    gen = torch.Generator().manual_seed(1)
    n = 8
    pairs = _Pairs(2, n, torch.zeros(1, dtype=torch.float64))
    kept = []
    g = torch.randn(n, generator=gen, dtype=torch.float64)
    d = torch.randn(n, generator=gen, dtype=torch.float64)
    h_diag = 1.0
    for _ in range(3):   # three positive-curvature pairs into a history of two: the oldest goes
        g_new = g + 0.5 * d + 0.01 * torch.randn(n, generator=gen, dtype=torch.float64)
        kept.append((d.clone(), g_new - g))
        d, h_diag = LBFGS._direction(pairs, g_new, g, d, 1.0, h_diag)
        g = g_new
        torch.testing.assert_close(d, two_loop(kept[-2:], g, float(h_diag)))
    stored = (pairs.s.clone(), pairs.y.clone(), list(pairs.order))
    g_new = g - 3.0 * d                                    # y . s < 0: rejected
    d_new, h_new = LBFGS._direction(pairs, g_new, g, d, 1.0, h_diag)
    assert pairs.order == stored[2] and h_new is h_diag
    for slot in pairs.order:
        assert torch.equal(pairs.s[slot], stored[0][slot]) and torch.equal(pairs.y[slot], stored[1][slot])
    torch.testing.assert_close(d_new, two_loop(kept[-2:], g_new, float(h_diag)))


def test_clamp_straight_through_clamps_forward_and_passes_the_gradient():
    from cs_utils.engine.lbfgs import clamp_straight_through

    x = torch.tensor([-0.5, 0.25, 1.0, 1.75], requires_grad=True)
    y = clamp_straight_through(x, 0.0, 1.0)
    assert y.tolist() == [0.0, 0.25, 1.0, 1.0]
    (g,) = torch.autograd.grad((y * torch.tensor([1.0, 2.0, 3.0, 4.0])).sum(), x)
    assert g.tolist() == [1.0, 2.0, 3.0, 4.0]          # also where the value was clamped


def test_torchs_private_strong_wolfe_is_still_what_the_engine_calls():
    """cs_utils.engine.lbfgs calls torch.optim.lbfgs._strong_wolfe, a private function torch may change
    without notice: pin its name, signature, calling convention and result, so that an upgrade of
    torch that changes it fails here and not inside a style transfer."""
    import inspect

    from torch.optim import lbfgs as torch_lbfgs

    strong_wolfe = getattr(torch_lbfgs, "_strong_wolfe", None)
    assert callable(strong_wolfe), "torch.optim.lbfgs._strong_wolfe is gone: cs_utils.engine.lbfgs needs it"
    params = inspect.signature(strong_wolfe).parameters
    assert list(params) == ["obj_func", "x", "t", "d", "f", "g", "gtd", "c1", "c2", "tolerance_change",
                            "max_ls"]
    assert {name: p.default for name, p in params.items() if p.default is not p.empty} == \
        {"c1": 1e-4, "c2": 0.9, "tolerance_change": 1e-9, "max_ls": 25}
    # f(x) = |x - 1|^2 from x = 0 along d = -g: obj_func(x, t, d) gives (f, g) at x + t d; the result
    # is (f, g, t, evaluations) at the accepted step
    target = torch.tensor([1.0, 2.0], dtype=torch.float64)
    calls = []

    def obj_func(x, t, d):
        calls.append(t)
        point = x + t * d
        return float((point - target).pow(2).sum()), 2 * (point - target)

    x = torch.zeros(2, dtype=torch.float64)
    f, g = obj_func(x, 0.0, torch.zeros(2, dtype=torch.float64))
    d = -g
    f_new, g_new, t, evaluations = strong_wolfe(obj_func, x, 1.0, d, f, g, g.dot(d), max_ls=10)
    assert evaluations == len(calls) - 1 >= 1 and f_new < f
    assert isinstance(g_new, torch.Tensor) and g_new.shape == x.shape
    assert float(t) == pytest.approx(0.5)        # the exact minimum of the quadratic along d
