"""Adversarial images: tiny pixel changes that change a classifier's decision.

* :func:`fooling_image` (Szegedy et al. 2014, as in CS231n): from a photo, take
  normalised-gradient ascent steps on a *target* class score until the model
  predicts the target with a chosen confidence. :func:`fooling_step` is one step.
* :func:`fgsm` (Goodfellow et al. 2015): one step of size ``epsilon`` along the
  sign of the loss gradient.
* :func:`pgd` (Madry et al. 2018): iterated sign steps, each followed by a
  projection back onto the L-infinity ball of radius ``epsilon`` around the photo.

Sizes are in pixel units of images in [0, 1] (``epsilon=8/255`` is 8 grey levels).
Every result is clamped to valid pixels [0, 1]. The caller's model and tensors are
never changed: gradients are taken with ``torch.autograd.grad`` on a copy of the image.
:func:`fooling_image`, :func:`fgsm` and :func:`pgd` run on
:func:`cs_utils.engine.folding.gradient_network` of the model, the same function with its batch
norm folded into the convolutions, made once per model and kept for the next call (a model with
hooks is used as it is; the times and differences are in ``benchmarks/README.md``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from . import objectives
from .engine.folding import gradient_network
from .history import History
from .hooks import evaluating
from .optimize import NormalizedGradient, optimize_image
from .runtime import progress_bar
from .validation import (
    class_indices,
    model_input,
    non_negative_int,
    num_classes,
    pixel_size,
    positive_int,
    probability,
    validate_image,
)

__all__ = ["AttackHistory", "difference_image", "fgsm", "fooling_image", "fooling_step", "pgd",
           "quantize_8bit", "reload_as_png"]


# --------------------------------------------------------------------------- helpers

def quantize_8bit(x: torch.Tensor) -> torch.Tensor:
    """``x`` rounded to the 256 levels an 8-bit file stores (what saving as PNG keeps)."""
    return torch.round(x.clamp(0, 1) * 255) / 255


def reload_as_png(x: torch.Tensor) -> torch.Tensor:
    """Each image of ``x`` saved as an 8-bit PNG file and loaded back (what a file on disk keeps)."""
    import tempfile
    from pathlib import Path

    from .image import load_image, save_image

    validate_image(x)
    with tempfile.TemporaryDirectory() as folder:
        images = [load_image(save_image(x[i:i + 1], Path(folder) / f"{i}.png")) for i in range(x.shape[0])]
    return torch.cat(images).to(x.device)


def difference_image(x: torch.Tensor, changed: torch.Tensor, *, magnify: float = 10.0) -> torch.Tensor:
    """``0.5 + magnify * (changed - x)``, clamped to [0, 1]: mid-grey where nothing changed."""
    return (0.5 + magnify * (changed.detach() - x.detach())).clamp(0, 1)


def _project(x: torch.Tensor, center: torch.Tensor, epsilon: float | None) -> torch.Tensor:
    """Clamp ``x`` into the L-infinity ball of radius ``epsilon`` around ``center`` and into [0, 1]."""
    if epsilon is not None:
        x = torch.max(torch.min(x, center + epsilon), center - epsilon)
    return x.clamp(0, 1)


def _loss_gradient(model, x, labels, targeted: bool) -> torch.Tensor:
    """Gradient of the cross-entropy of ``labels`` w.r.t. ``x``, signed so that ascending it attacks."""
    x = x.detach().requires_grad_(True)
    loss = F.cross_entropy(model(x), labels, reduction="sum")
    (grad,) = torch.autograd.grad(loss, [x])
    return -grad if targeted else grad


@dataclass
class AttackHistory(History):
    """What an attack did, per image: ``steps`` taken, ``success`` (fooled at the end), the final
    ``linf`` and ``l2`` size of the change and the final ``confidence`` (softmax probability of the
    target, or of the true class for untargeted attacks); per step, the series ``"score"`` (mean
    target score), ``"confidence"`` (mean) and ``"success_rate"`` (in ``extra``, also reached as
    ``trace``), from the start (step 0) to the end; and the wall-clock ``seconds``."""

    steps: torch.Tensor | None = None
    success: torch.Tensor | None = None
    linf: torch.Tensor | None = None
    l2: torch.Tensor | None = None
    confidence: torch.Tensor | None = None

    default_series = ("confidence",)

    def __post_init__(self):
        for name in ("score", "confidence", "success_rate"):
            self.extra.setdefault(name, [])

    @property
    def trace(self) -> dict[str, list]:
        """The per-step series: ``"score"``, ``"confidence"``, ``"success_rate"``."""
        return self.extra

    @property
    def success_rate(self) -> float:
        return self.success.float().mean().item()

    def series(self, name: str) -> list[float]:
        """Per-step series only: ``confidence`` is the per-step mean here, not the per-image tensor."""
        if name in self.extra:
            return self.extra[name]
        return super().series(name)


def _change_sizes(x: torch.Tensor, x0: torch.Tensor):
    diff = (x - x0).flatten(1)
    return diff.abs().amax(dim=1), diff.norm(dim=1)


# --------------------------------------------------------------------------- fooling images

def fooling_step(model: nn.Module, x: torch.Tensor, target, *, step_size: float = 0.25) -> torch.Tensor:
    """One normalised-gradient ascent step on the unnormalised score of class ``target``.

    With ``g = d score_target / d x`` (one gradient per image), returns
    ``x + step_size * g / ||g||_2``, detached. The step has L2 length ``step_size``
    whatever the scale of the scores; it is not clamped (:func:`fooling_image` does that).
    ``target`` is one class index or one per image.
    """
    x = model_input(model, x)   # a detached copy on the model's device, in its dtype
    targets = class_indices(target, x.shape[0], classes=num_classes(model)).to(x.device)
    ### BEGIN SOLUTION
    x = x.detach().clone().requires_grad_(True)
    scores = model(x).gather(1, targets[:, None]).sum()
    (grad,) = torch.autograd.grad(scores, [x])
    norms = grad.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)
    return (x + step_size * grad / norms).detach()
    ### END SOLUTION


def fooling_image(model: nn.Module, x: torch.Tensor, target, *, max_steps: int = 100,
                  step_size: float = 0.25, confidence: float = 0.9, epsilon: float | None = 8 / 255,
                  quantize: bool = True, progress: bool = False):
    """Change ``x`` until ``model`` classifies it as ``target`` with probability >= ``confidence``.

    Repeats :func:`fooling_step`; after each step the image is clamped to the L-infinity
    ball of radius ``epsilon`` around ``x`` (``None``: no limit) and to [0, 1]. With
    ``quantize`` (default) the stopping test is made on the image rounded to 8 bits and
    that rounded image is returned, so it stays fooled when saved as PNG. Each image of a
    batch stops on its own. Returns ``(image, AttackHistory)``; ``history.steps`` counts
    the steps each image took and ``history.success`` says which ones reached the goal.
    """
    x0 = model_input(model, x)
    max_steps = non_negative_int(max_steps, "max_steps")
    confidence = probability(confidence, "confidence", allow_one=False)
    if epsilon is not None:
        epsilon = pixel_size(epsilon)
    device = x0.device
    targets = class_indices(target, x.shape[0], classes=num_classes(model)).to(device)
    current = x0.clone()
    n = x0.shape[0]
    steps = torch.zeros(n, dtype=torch.long)
    done = torch.zeros(n, dtype=torch.bool)
    final_conf = torch.zeros(n)
    history = AttackHistory(steps=steps, success=done, linf=torch.zeros(n), l2=torch.zeros(n),
                            confidence=final_conf)
    bar = progress_bar(total=max_steps, desc="fooling", enabled=progress)
    start = time.perf_counter()
    net = gradient_network(model)   # the same function with batch norm folded in
    with evaluating(net):
        for step in range(max_steps + 1):
            shown = quantize_8bit(current) if quantize else current
            with torch.no_grad():
                scores = net(shown)
            target_scores = scores.gather(1, targets[:, None])[:, 0]
            conf = scores.softmax(1).gather(1, targets[:, None])[:, 0]
            fooled = (scores.argmax(1) == targets) & (conf >= confidence)
            done |= fooled.cpu()
            final_conf.copy_(conf.cpu())
            history.trace["score"].append(target_scores.mean().item())
            history.trace["confidence"].append(conf.mean().item())
            history.trace["success_rate"].append(done.float().mean().item())
            if done.all() or step == max_steps:
                break
            active = (~done).nonzero()[:, 0].to(device)
            moved = fooling_step(net, current[active], targets[active], step_size=step_size)
            current[active] = _project(moved, x0[active], epsilon)
            steps[~done] += 1
            bar.update(1)
    bar.close()
    result = quantize_8bit(current) if quantize else current
    history.linf, history.l2 = (t.cpu() for t in _change_sizes(result, x0))
    history.seconds = time.perf_counter() - start
    return result.to(x.device, x.dtype), history


# --------------------------------------------------------------------------- FGSM and PGD

def fgsm(model: nn.Module, x: torch.Tensor, labels, *, epsilon: float = 8 / 255,
         targeted: bool = False) -> torch.Tensor:
    """Fast gradient sign method: ``clamp(x + epsilon * sign(grad_x loss), 0, 1)``.

    Untargeted (default): ``labels`` are the true classes and the step increases their
    cross-entropy loss. ``targeted=True``: ``labels`` are the wanted classes and the step
    decreases their loss. ``epsilon`` is in pixel units of [0, 1] images (8/255 = 8 grey levels).
    """
    x0 = model_input(model, x)
    epsilon = pixel_size(epsilon)
    labels = class_indices(labels, x.shape[0], classes=num_classes(model), what="labels").to(x0.device)
    net = gradient_network(model)   # the same function with batch norm folded in
    with evaluating(net):
        grad = _loss_gradient(net, x0, labels, targeted)
    return (x0 + epsilon * grad.sign()).clamp(0, 1).to(x.device, x.dtype)


def pgd(model: nn.Module, x: torch.Tensor, labels, *, epsilon: float = 8 / 255, steps: int = 10,
        step_size: float | None = None, targeted: bool = False, random_start: bool = True,
        generator: torch.Generator | None = None, progress: bool = False):
    """Projected gradient descent (Madry et al. 2018) in the L-infinity ball of radius ``epsilon``.

    Starts from ``x`` (plus uniform noise in the ball if ``random_start``, drawn with
    ``generator``), takes ``steps`` sign steps of ``step_size`` (default ``2.5 * epsilon / steps``)
    on the cross-entropy loss (up for untargeted, down for ``targeted``), and after each
    projects onto the ball and onto [0, 1]. Returns ``(image, AttackHistory)``;
    ``history.success`` says which images ended misclassified (or classified as the target).

    Runs on the shared loop :func:`cs_utils.optimize_image`: the objective
    ``-cross_entropy(model, labels)`` (``+`` when ``targeted``), the optimiser
    ``NormalizedGradient(step_size, "sign")`` and ``project=`` the ball; a callback records
    ``history.trace`` after every step.
    """
    x0 = model_input(model, x)
    epsilon = pixel_size(epsilon)
    steps = positive_int(steps, "steps")
    step_size = 2.5 * epsilon / steps if step_size is None else pixel_size(step_size, "step_size")
    device = x0.device
    labels = class_indices(labels, x.shape[0], classes=num_classes(model), what="labels").to(device)
    start = x0.clone()
    if random_start:
        noise = torch.rand(x0.shape, generator=generator, dtype=x0.dtype)
        start = _project(x0 + (2 * noise.to(device) - 1) * epsilon, x0, epsilon)
    n = x0.shape[0]
    history = AttackHistory(steps=torch.full((n,), int(steps)), success=torch.zeros(n, dtype=torch.bool),
                            linf=torch.zeros(n), l2=torch.zeros(n), confidence=torch.zeros(n))
    final = {}
    began = time.perf_counter()
    net = gradient_network(model)   # the same function with batch norm folded in

    def record(image):
        with torch.no_grad():
            scores = net(image)
        success = scores.argmax(1) == labels
        final["success"] = success if targeted else ~success
        final["confidence"] = scores.softmax(1).gather(1, labels[:, None])[:, 0]
        history.trace["score"].append(scores.gather(1, labels[:, None]).mean().item())
        history.trace["confidence"].append(final["confidence"].mean().item())
        history.trace["success_rate"].append(final["success"].float().mean().item())

    loss = objectives.cross_entropy(net, labels)
    with evaluating(net):
        record(start)
        current, _ = optimize_image(loss if targeted else -loss, start, steps=int(steps),
                                    optimizer=NormalizedGradient(step_size, "sign"), clamp=None,
                                    project=lambda pixels: _project(pixels, x0, epsilon),
                                    callback=lambda step, image, value: record(image),
                                    progress=progress, desc="PGD")
    history.success = final["success"].cpu()
    history.confidence = final["confidence"].cpu()
    history.linf, history.l2 = (t.cpu() for t in _change_sizes(current, x0))
    history.seconds = time.perf_counter() - began
    return current.to(x.device, x.dtype), history
