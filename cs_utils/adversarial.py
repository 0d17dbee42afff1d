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
"""

from __future__ import annotations

import numbers
import time
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from . import checks, objectives
from .hooks import evaluating
from .image import check_image
from .optimize import NormalizedGradient, optimize_image
from .runtime import model_device

__all__ = ["AttackHistory", "difference_image", "fgsm", "fooling_image", "fooling_step", "pgd",
           "quantize_8bit", "reload_as_png"]


# --------------------------------------------------------------------------- helpers

def _num_classes(model: nn.Module) -> int | None:
    """The number of classes: ``out_features`` of the model's last linear layer (None if it has none)."""
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    return linears[-1].out_features if linears else None


def check_class_indices(model: nn.Module, target, n: int, what: str = "target") -> torch.Tensor:
    """``target`` (an int, or one int per image) as a long tensor of length ``n``, checked against the
    model's number of classes; a clear error otherwise."""
    if isinstance(target, torch.Tensor):
        if target.is_floating_point() or target.dtype == torch.bool:
            raise TypeError(f"{what} must hold integer class indices, got dtype {target.dtype}")
        values = target.detach().cpu().reshape(-1).tolist()
    elif isinstance(target, numbers.Integral) and not isinstance(target, bool):
        values = [int(target)]
    elif isinstance(target, (list, tuple)):
        values = list(target)
    else:
        raise TypeError(f"{what} must be a class index (int) or one index per image, "
                        f"got {type(target).__name__}; cs_utils.imagenet_index('name') finds an index")
    if len(values) == 1:
        values = values * n
    if len(values) != n:
        raise ValueError(f"{what} has {len(values)} class indices for {n} images; give one, or one per image")
    num_classes = _num_classes(model)
    for v in values:
        if isinstance(v, bool) or not isinstance(v, numbers.Integral):
            raise TypeError(f"{what} must hold integer class indices, got {v!r}")
        if v < 0 or (num_classes is not None and v >= num_classes):
            top = f"0..{num_classes - 1}" if num_classes is not None else "non-negative"
            raise IndexError(f"{what} class index {v} is out of range: the model's classes are {top}")
    return torch.tensor(values, dtype=torch.long)


def _check_epsilon(epsilon, name: str = "epsilon") -> float:
    if not isinstance(epsilon, numbers.Real) or isinstance(epsilon, bool):
        raise TypeError(f"{name} must be a number in pixel units of [0, 1] images, e.g. 8/255")
    if not 0 <= epsilon <= 1:
        raise ValueError(f"{name} = {epsilon} is not a size in pixel units of [0, 1] images; "
                         f"8 grey levels are 8/255 = {8 / 255:.4f}")
    return float(epsilon)


def quantize_8bit(x: torch.Tensor) -> torch.Tensor:
    """``x`` rounded to the 256 levels an 8-bit file stores (what saving as PNG keeps)."""
    return torch.round(x.clamp(0, 1) * 255) / 255


def reload_as_png(x: torch.Tensor) -> torch.Tensor:
    """Each image of ``x`` saved as an 8-bit PNG file and loaded back (what a file on disk keeps)."""
    import tempfile
    from pathlib import Path

    from .image import load_image, save_image

    check_image(x)
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
class AttackHistory:
    """What an attack did, per image: ``steps`` taken, ``success`` (fooled at the end), the final
    ``linf`` and ``l2`` size of the change and the final ``confidence`` (softmax probability of the
    target, or of the true class for untargeted attacks), plus one entry per step in ``trace``
    (mean target score, mean confidence, success rate) and the wall-clock ``seconds``."""

    steps: torch.Tensor
    success: torch.Tensor
    linf: torch.Tensor
    l2: torch.Tensor
    confidence: torch.Tensor
    trace: dict = field(default_factory=lambda: {"score": [], "confidence": [], "success_rate": []})
    seconds: float = 0.0

    @property
    def success_rate(self) -> float:
        return self.success.float().mean().item()

    def plot(self, ax=None, key: str = "confidence"):
        """Plot one trace (``"score"``, ``"confidence"`` or ``"success_rate"``) against the step."""
        import matplotlib.pyplot as plt

        if key not in self.trace:
            raise KeyError(f"no trace {key!r}; choose one of {', '.join(self.trace)}")
        if ax is None:
            _, ax = plt.subplots(figsize=(4, 3))
        ax.plot(range(len(self.trace[key])), self.trace[key])
        ax.set_xlabel("step")
        ax.set_ylabel(key.replace("_", " "))
        return ax.figure


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
    check_image(x)
    targets = check_class_indices(model, target, x.shape[0]).to(x.device)
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
    check_image(x)
    if not isinstance(max_steps, numbers.Integral) or max_steps < 0:
        raise ValueError(f"max_steps must be a non-negative int, got {max_steps!r}")
    if not 0 <= confidence < 1:
        raise ValueError(f"confidence must be a probability in [0, 1), got {confidence}")
    if epsilon is not None:
        epsilon = _check_epsilon(epsilon)
    device = model_device(model)
    targets = check_class_indices(model, target, x.shape[0]).to(device)
    x0 = x.detach().to(device)
    current = x0.clone()
    n = x0.shape[0]
    steps = torch.zeros(n, dtype=torch.long)
    done = torch.zeros(n, dtype=torch.bool)
    final_conf = torch.zeros(n)
    history = AttackHistory(steps, done, torch.zeros(n), torch.zeros(n), final_conf)
    bar = _progress(max_steps, progress, "fooling")
    start = time.perf_counter()
    with evaluating(model):
        for step in range(max_steps + 1):
            shown = quantize_8bit(current) if quantize else current
            with torch.no_grad():
                scores = model(shown)
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
            moved = fooling_step(model, current[active], targets[active], step_size=step_size)
            current[active] = _project(moved, x0[active], epsilon)
            steps[~done] += 1
            if bar is not None:
                bar.update(1)
    if bar is not None:
        bar.close()
    result = quantize_8bit(current) if quantize else current
    history.linf, history.l2 = (t.cpu() for t in _change_sizes(result, x0))
    history.seconds = time.perf_counter() - start
    return result.to(x.device), history


def _progress(total: int, enabled: bool, desc: str):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, leave=False)


# --------------------------------------------------------------------------- FGSM and PGD

def fgsm(model: nn.Module, x: torch.Tensor, labels, *, epsilon: float = 8 / 255,
         targeted: bool = False) -> torch.Tensor:
    """Fast gradient sign method: ``clamp(x + epsilon * sign(grad_x loss), 0, 1)``.

    Untargeted (default): ``labels`` are the true classes and the step increases their
    cross-entropy loss. ``targeted=True``: ``labels`` are the wanted classes and the step
    decreases their loss. ``epsilon`` is in pixel units of [0, 1] images (8/255 = 8 grey levels).
    """
    check_image(x)
    epsilon = _check_epsilon(epsilon)
    device = model_device(model)
    labels = check_class_indices(model, labels, x.shape[0], "labels").to(device)
    x0 = x.detach().to(device)
    with evaluating(model):
        grad = _loss_gradient(model, x0, labels, targeted)
    return (x0 + epsilon * grad.sign()).clamp(0, 1).to(x.device)


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
    check_image(x)
    epsilon = checks.pixel_size(epsilon)
    if not isinstance(steps, numbers.Integral) or isinstance(steps, bool) or steps < 1:
        raise ValueError(f"steps must be a positive int, got {steps!r}")
    step_size = 2.5 * epsilon / steps if step_size is None else checks.pixel_size(step_size, "step_size")
    device = model_device(model)
    labels = checks.class_indices(labels, x.shape[0], classes=checks.num_classes(model),
                                  what="labels").to(device)
    x0 = x.detach().to(device)
    start = x0.clone()
    if random_start:
        noise = torch.rand(x0.shape, generator=generator, dtype=x0.dtype)
        start = _project(x0 + (2 * noise.to(device) - 1) * epsilon, x0, epsilon)
    n = x0.shape[0]
    history = AttackHistory(torch.full((n,), int(steps)), torch.zeros(n, dtype=torch.bool),
                            torch.zeros(n), torch.zeros(n), torch.zeros(n))
    final = {}

    def record(image):
        with torch.no_grad():
            scores = model(image)
        success = scores.argmax(1) == labels
        final["success"] = success if targeted else ~success
        final["confidence"] = scores.softmax(1).gather(1, labels[:, None])[:, 0]
        history.trace["score"].append(scores.gather(1, labels[:, None]).mean().item())
        history.trace["confidence"].append(final["confidence"].mean().item())
        history.trace["success_rate"].append(final["success"].float().mean().item())

    loss = objectives.cross_entropy(model, labels)
    began = time.perf_counter()
    with evaluating(model):
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
    return current.to(x.device), history
