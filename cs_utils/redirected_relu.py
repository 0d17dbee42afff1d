"""Redirected ReLU gradients (Lucid's ``redirected_relu_grad`` and ``redirected_relu6_grad``).

A ReLU6 unit whose input is below 0 or above 6 passes no gradient: at the start of a
visualization, most units of a network fed a near-grey image sit below 0, and the image can
only change through the few that are active. :func:`redirected_relu_gradients` swaps, for the
duration of a ``with`` block, the backward pass of every ``nn.ReLU`` and ``nn.ReLU6`` module of
a model: where a unit is clipped, its gradient still passes if a descent step along it moves
the unit's input back into the active range (below the range and ``grad < 0``, or above it
and ``grad > 0``, for a loss to *minimise*); where it would push the input further out, it is
zero, as for the plain activation. Inside the range the gradient is the plain one, and the
forward pass is unchanged throughout.

Lucid uses the redirected gradient for the first steps of an optimisation only (its
``render_vis`` switches it off after 16% of them): the handle's ``enabled`` flag switches
between the redirected and the plain gradient without leaving the block. On leaving (also
after an exception) the modules' own ``forward`` is back and nothing is left on the model.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator

import torch
from torch import nn

__all__ = ["RedirectedGradients", "redirected_clamp", "redirected_relu_gradients"]


class _RedirectedClamp(torch.autograd.Function):
    """``x.clamp(low, high)`` whose gradient also passes where ``x`` is outside ``(low, high)`` and
    the incoming gradient of the loss points back inside (descent: ``x -= lr * grad``)."""

    @staticmethod
    def forward(ctx, x, low, high, only_if_blocked):
        ctx.save_for_backward(x)
        ctx.low, ctx.high, ctx.only_if_blocked = low, high, only_if_blocked
        return x.clamp(low, high)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        low, high = ctx.low, ctx.high
        # pushed out: outside the active range (or at its border, where torch's hardtanh passes
        # nothing) and a descent step would move x further out
        pushed_out = ((x <= low) & (grad >= 0)) | ((x >= high) & (grad <= 0))
        redirected = grad.masked_fill(pushed_out, 0)
        if not ctx.only_if_blocked:
            return redirected, None, None, None
        plain = grad.masked_fill((x <= low) | (x >= high), 0)
        passes = plain.flatten(1).ne(0).any(1) if x.dim() > 1 else plain.ne(0).any().view(1)
        passes = passes.view(-1, *[1] * (x.dim() - 1)) if x.dim() > 1 else passes
        return torch.where(passes, plain, redirected), None, None, None


def redirected_clamp(x: torch.Tensor, low: float = 0.0, high: float = 6.0, *,
                     only_if_blocked: bool = False) -> torch.Tensor:
    """``x.clamp(low, high)`` (``ReLU6`` by default; ``high=math.inf`` for ``ReLU``) with the
    redirected gradient: inside ``(low, high)`` the gradient of the loss passes unchanged; outside,
    it passes where a descent step moves ``x`` back towards the range (``grad < 0`` below ``low``,
    ``grad > 0`` above ``high``) and is zero where it would push ``x`` further out.

    ``only_if_blocked`` (Lucid's rule): each image of the batch (first dimension) gets the
    redirected gradient only where the plain one is zero for all of its units, else the plain one."""
    return _RedirectedClamp.apply(x, float(low), float(high), bool(only_if_blocked))


class RedirectedGradients:
    """The handle :func:`redirected_relu_gradients` yields: ``enabled`` chooses between the
    redirected gradient (``True``) and the activation's plain one (``False``); ``modules`` are the
    activations it swapped."""

    def __init__(self, modules: list[nn.Module], enabled: bool = True):
        self.modules, self.enabled = modules, bool(enabled)


def _bounds(module: nn.Module) -> tuple[float, float]:
    if isinstance(module, nn.ReLU6):
        return 0.0, 6.0
    return 0.0, math.inf


@contextlib.contextmanager
def redirected_relu_gradients(model: nn.Module, *, enabled: bool = True,
                              only_if_blocked: bool = False) -> Iterator[RedirectedGradients]:
    """Inside the block, every ``nn.ReLU`` and ``nn.ReLU6`` module of ``model`` back-propagates the
    redirected gradient (:func:`redirected_clamp`) while the yielded handle's ``enabled`` is true,
    and its plain gradient otherwise; the forward pass is the same either way. The modules' own
    ``forward`` is restored on leaving, also after an exception (no hooks, no attributes left).
    ``only_if_blocked``: Lucid's rule (see :func:`redirected_clamp`)."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    modules = [m for m in model.modules() if type(m) in (nn.ReLU, nn.ReLU6)]
    handle = RedirectedGradients(modules, enabled)
    swapped = []
    try:
        for module in modules:
            if "forward" in vars(module):
                raise RuntimeError(f"{type(module).__name__} module already has its forward replaced "
                                   "(nested redirected_relu_gradients on the same model?)")
            plain = module.forward
            low, high = _bounds(module)

            def forward(x, plain=plain, low=low, high=high):
                if handle.enabled and torch.is_grad_enabled():
                    return redirected_clamp(x, low, high, only_if_blocked=only_if_blocked)
                return plain(x)

            module.forward = forward
            swapped.append(module)
        yield handle
    finally:
        for module in swapped:
            del module.forward
