"""L-BFGS, step for step ``torch.optim.LBFGS``, with less work around each evaluation.

:class:`LBFGS` takes the same arguments and, with the strong-Wolfe line search, computes the same
numbers in the same order: the same directions, steps and stopping decisions, bit for bit (a test
runs both side by side). What changes is what an image optimisation pays between two
evaluations of a network:

* the stored pairs ``(s_i, y_i)`` live in buffers allocated once, not in a new pair of
  full-size tensors at every step;
* the line search's trial point is written as ``x + t d`` in one operation, not added and then
  restored, and the accepted one is not written again;
* a single parameter's gradient is used in place when the closure made a new tensor for it (a
  copy otherwise: the line search keeps earlier gradients);
* ``max |g|`` is one ``aminmax`` pass instead of ``abs`` then ``max``.

The two-loop recursion itself stays: it reads every stored pair twice, which is what any
L-BFGS direction costs (the coefficients depend on ``s_i . g`` for every pair, and the
direction is a sum over every pair). At 256 x 256 pixels that is 0.8 MB per vector; with the
history of 10 pairs :func:`cs_utils.optimize_image` uses, 16 MB per evaluation.

Without the strong-Wolfe line search (``line_search_fn=None``), with several parameter groups,
``maximize`` or complex parameters, ``torch.optim.LBFGS.step`` runs unchanged.
"""

from __future__ import annotations

import torch
from torch.optim.lbfgs import _strong_wolfe

__all__ = ["LBFGS", "clamp_straight_through"]


class _StraightThroughClamp(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, low, high):
        return x.clamp(low, high)

    @staticmethod
    def backward(ctx, grad):
        return grad, None, None


def clamp_straight_through(x: torch.Tensor, low: float, high: float) -> torch.Tensor:
    """``x.clamp(low, high)`` forward, the gradient passed unchanged (straight through): how an
    image optimised by L-BFGS, whose line search cannot be clamped between evaluations, is shown
    to the network. One operation where ``x + (x.clamp(low, high) - x).detach()`` takes three
    forward and one backward."""
    return _StraightThroughClamp.apply(x, low, high)


def _max_abs(v: torch.Tensor) -> float:
    """``max |v_i|`` in one pass over ``v`` (cheaper here than ``torch.linalg.vector_norm(v, inf)``)."""
    low, high = torch.aminmax(v)
    return max(-float(low), float(high))


class _Pairs:
    """The stored pairs in buffers allocated once: ``s[r]``, ``y[r]`` and ``rho[r] = 1 / (y . s)``
    of slot ``r``; ``order`` lists the slots in use from oldest to newest, ``free`` is the slot the
    next pair is written to (one more slot than pairs, so that a pair the curvature test rejects
    overwrites nothing)."""

    def __init__(self, size: int, n: int, like: torch.Tensor):
        self.size = size
        self.s = like.new_empty(size + 1, n)
        self.y = like.new_empty(size + 1, n)
        self.rho: list = [None] * (size + 1)
        self.order: list[int] = []
        self.free = 0
        self.q = like.new_empty(n)

    def keep(self, rho) -> None:
        """Keep the pair in the free slot, dropping the oldest when ``size`` are kept."""
        self.rho[self.free] = rho
        self.order.append(self.free)
        self.free = self.order.pop(0) if len(self.order) > self.size else len(self.order)


class LBFGS(torch.optim.LBFGS):
    """``torch.optim.LBFGS``, the same steps, with less work between evaluations (see the module)."""

    @torch.no_grad()
    def step(self, closure):  # the structure mirrors torch.optim.LBFGS.step
        group = self.param_groups[0]
        if len(self.param_groups) != 1 or group["line_search_fn"] != "strong_wolfe" or not self._params \
                or group.get("maximize", False) or any(torch.is_complex(p) for p in self._params):
            return super().step(closure)
        closure = torch.enable_grad()(closure)
        lr = float(group["lr"])
        max_iter, max_eval = group["max_iter"], group["max_eval"]
        tolerance_grad, tolerance_change = group["tolerance_grad"], group["tolerance_change"]
        history_size = group["history_size"]

        state = self.state[self._params[0]]
        state.setdefault("func_evals", 0)
        state.setdefault("n_iter", 0)

        orig_loss = closure()
        loss = float(orig_loss)
        current_evals = 1
        state["func_evals"] += 1
        flat_grad = self._flat_grad()
        if _max_abs(flat_grad) <= tolerance_grad:
            return orig_loss

        d, t = state.get("d"), state.get("t")
        pairs: _Pairs | None = state.get("pairs")
        h_diag = state.get("H_diag")
        prev_flat_grad, prev_loss = state.get("prev_flat_grad"), state.get("prev_loss")
        x_init = state.get("x_init")

        n_iter = 0
        while n_iter < max_iter:
            n_iter += 1
            state["n_iter"] += 1
            if state["n_iter"] == 1:
                d = flat_grad.neg()
                pairs = _Pairs(history_size, flat_grad.numel(), flat_grad)
                h_diag = 1.0
            else:
                d, h_diag = self._direction(pairs, flat_grad, prev_flat_grad, d, t, h_diag)

            if prev_flat_grad is None:
                prev_flat_grad = flat_grad.clone(memory_format=torch.contiguous_format)
            else:
                prev_flat_grad.copy_(flat_grad)
            prev_loss = loss

            t = min(1.0, 1.0 / flat_grad.abs().sum()) * lr if state["n_iter"] == 1 else lr
            gtd = flat_grad.dot(d)
            if gtd > -tolerance_change:
                break

            if x_init is None:
                x_init = [p.clone(memory_format=torch.contiguous_format) for p in self._params]
            else:
                for x, p in zip(x_init, self._params):
                    x.copy_(p)
            self._trial_step = None
            loss, flat_grad, t, ls_func_evals = _strong_wolfe(
                lambda x, t, d: self._evaluate_at(closure, x, t, d), x_init, t, d, loss, flat_grad, gtd,
                max_ls=max_eval - current_evals)
            if self._trial_step is None or float(self._trial_step) != float(t):
                self._set_step(x_init, t, d)
            opt_cond = _max_abs(flat_grad) <= tolerance_grad

            current_evals += ls_func_evals
            state["func_evals"] += ls_func_evals
            if n_iter == max_iter or current_evals >= max_eval or opt_cond:
                break
            if abs(float(t)) * _max_abs(d) <= tolerance_change:
                break
            if abs(loss - prev_loss) < tolerance_change:
                break

        state.update(d=d, t=t, pairs=pairs, H_diag=h_diag, prev_flat_grad=prev_flat_grad, prev_loss=prev_loss,
                     x_init=x_init)
        return orig_loss

    def _evaluate_at(self, closure, x, t, d):
        """The line search's trial: the parameters become ``x + t d`` (bit for bit what PyTorch's
        add-then-restore leaves), then the loss and the gradient there."""
        self._set_step(x, t, d)
        self._trial_step = t
        return float(closure()), self._flat_grad()

    def _flat_grad(self) -> torch.Tensor:
        """The gradient as one vector. A view of a single parameter's gradient when the closure
        set a new tensor since the last call (a copy when it reused the old one in place: the
        line search keeps earlier gradients)."""
        if len(self._params) == 1 and self._params[0].grad is not None:
            grad = self._params[0].grad
            if grad is not self.__dict__.get("_last_grad") and grad.is_contiguous() and not grad.is_sparse:
                self._last_grad = grad
                return grad.view(-1)
        self._last_grad = None
        # torch.optim.LBFGS._gather_flat_grad views each gradient, which fails for a non-contiguous one
        # (an image's gradient through a channels-last network can be); reshape copies it instead
        return torch.cat([p.new_zeros(p.numel()) if p.grad is None else
                          p.grad.to_dense().reshape(-1) if p.grad.is_sparse else p.grad.reshape(-1)
                          for p in self._params])

    def _set_step(self, x, t, d) -> None:
        """parameters = x + t d."""
        offset = 0
        for p, start in zip(self._params, x):
            numel = p.numel()
            torch.add(start, d[offset:offset + numel].view_as(p), alpha=t, out=p)
            offset += numel

    @staticmethod
    def _direction(pairs: _Pairs, g: torch.Tensor, prev_g: torch.Tensor, d: torch.Tensor, t, h_diag):
        """Store the newest pair if its curvature is positive, then ``-H g`` by PyTorch's two-loop
        recursion, the same operations in the same order (the same numbers), on buffers
        allocated once."""
        y, s = torch.sub(g, prev_g, out=pairs.y[pairs.free]), torch.mul(d, t, out=pairs.s[pairs.free])
        ys = y.dot(s)
        if ys > 1e-10:
            pairs.keep(1.0 / ys)
            h_diag = ys / y.dot(y)
        order = pairs.order
        al = [None] * len(order)
        q = torch.neg(g, out=pairs.q)
        for i in range(len(order) - 1, -1, -1):
            r = order[i]
            al[i] = pairs.s[r].dot(q) * pairs.rho[r]
            q.add_(pairs.y[r], alpha=-al[i])
        d = r_ = torch.mul(q, h_diag)
        for i, r in enumerate(order):
            be_i = pairs.y[r].dot(r_) * pairs.rho[r]
            r_.add_(pairs.s[r], alpha=al[i] - be_i)
        return d, h_diag
