"""Are the saliency maps telling the truth? Faithfulness and sanity measures of any explainer.

* Sanity (Adebayo et al. 2018): :func:`cascading_randomization` randomises the model's
  layers from the top (:func:`randomized_copy`) and compares the maps with
  :func:`rank_correlation`; a map that explains the model must change (correlation near 0).
* Faithfulness (Petsiuk et al. 2018): :func:`deletion_curve` deletes the most important
  cells first and watches p(target) fall (small area: good); :func:`insertion_curve`
  starts from a blurred copy (:func:`cs_utils.blur.gaussian_blur`) and puts the most important cells
  back first (large area: good). Both share one ordering and masking code.
* :func:`evaluation_table`: every measure for several explainers on the same images, as
  one :class:`EvaluationTable` (text or Markdown, or plain rows).

An explainer is any callable ``fn(model, x, target) -> maps`` with maps (N, H, W) or
(N, C, H, W), e.g. :func:`cs_utils.saliency_map`. Every function leaves the caller's
model and tensors as it found them: randomisation works on copies, forward passes run
under :func:`cs_utils.hooks.evaluating` and ``torch.inference_mode``.
"""

from __future__ import annotations

import copy
import math
import numbers
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from .blur import gaussian_blur
from .engine.folding import gradient_network
from .explainers import fill_colors, prepare, target_scores
from .hooks import evaluating, get_layer
from .runtime import progress_bar
from .saliency import saliency_map
from .validation import positive_int, validate_layers, validate_model

__all__ = [
    "DeletionCurve",
    "EvaluationTable",
    "InsertionCurve",
    "MethodScores",
    "cascading_randomization",
    "deletion_curve",
    "evaluation_table",
    "insertion_curve",
    "randomized_copy",
    "rank_correlation",
]


# --------------------------------------------------------------------------- model randomisation

def randomized_copy(model: nn.Module, layer_names: Sequence[str], *,
                    generator: torch.Generator | None = None) -> nn.Module:
    """A deep copy of ``model`` whose named layers have random weights; ``model`` is not touched.

    Every parameter of the named layers (and their sublayers) is redrawn from a
    normal distribution with that tensor's own mean and standard deviation, so
    scales stay plausible while everything learned is gone (Adebayo et al.
    2018). Buffers (batch-norm statistics) are kept.
    """
    layer_names = validate_layers(model, layer_names, "layer_names")  # validate on the original
    generator = generator if generator is not None else torch.Generator().manual_seed(0)
    clone = copy.deepcopy(model)
    with torch.no_grad():
        for name in layer_names:
            for param in get_layer(clone, name).parameters():
                mean = param.float().mean().item()
                std = param.float().std().item() if param.numel() > 1 else 0.0
                noise = torch.randn(param.shape, generator=generator, dtype=torch.float32)
                param.copy_((noise * std + mean).to(param))
    return clone


def rank_correlation(maps_a: torch.Tensor, maps_b: torch.Tensor) -> torch.Tensor:
    """Spearman rank correlation between corresponding maps: (N, ...) and (N, ...) -> (N,).

    1 means the pixels are ranked identically, 0 unrelated. Ties get average
    ranks (``scipy.stats.spearmanr``). A constant map (e.g. a Grad-CAM that the ReLU made
    all zero) ranks nothing, so it shares no ranking with any map: its correlation is 0.
    """
    from scipy.stats import spearmanr

    if maps_a.shape != maps_b.shape or maps_a.dim() < 2:
        raise ValueError(f"expected two batches of maps of the same shape (N, ...), got "
                         f"{tuple(maps_a.shape)} and {tuple(maps_b.shape)}")
    a = maps_a.detach().double().flatten(1).cpu().numpy()
    b = maps_b.detach().double().flatten(1).cpu().numpy()
    return torch.tensor([spearmanr(u, v).statistic if np.ptp(u) > 0 and np.ptp(v) > 0 else 0.0
                         for u, v in zip(a, b)], dtype=torch.float64)


def _layer_list(layer_names) -> list[str]:
    if isinstance(layer_names, str):
        layer_names = [layer_names]
    if not layer_names:
        raise ValueError("name at least one layer to randomise, e.g. ['fc']")
    return list(layer_names)


def _cascade(model: nn.Module, layer_names: list[str],
             generator: torch.Generator) -> Iterator[tuple[str, nn.Module]]:
    """(last randomised layer, copy) for each step of the cascade: step k randomises the first k + 1."""
    for k in range(len(layer_names)):
        yield layer_names[k], randomized_copy(model, layer_names[:k + 1], generator=generator)


def _magnitude(maps: torch.Tensor) -> torch.Tensor:
    """Maps as magnitudes (N, H, W): ``abs``, then the max over channels of (N, C, H, W) maps."""
    maps = maps.abs()
    return maps.amax(dim=1) if maps.dim() == 4 else maps


def cascading_randomization(model: nn.Module, x: torch.Tensor, target, layer_names: Sequence[str], *,
                            explain: Callable = saliency_map,
                            generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
    """Model-randomisation sanity check (Adebayo et al. 2018), cascading from the top.

    ``layer_names`` from the output towards the input, e.g. ``["fc", "head",
    "blocks.15"]``. Step k randomises the first k + 1 of them in a copy of the
    model (:func:`randomized_copy`; ``model`` itself is never changed) and
    compares ``explain(copy, x, target)`` with ``explain(model, x, target)``.
    Maps are compared as magnitudes (``abs``, then max over channels for
    (N, 3, H, W) maps). Returns ``{last randomised layer: (N,) Spearman rank
    correlations}`` in order: a map that explains the model must change,
    i.e. correlations near 0.
    """
    layer_names = _layer_list(layer_names)
    generator = generator if generator is not None else torch.Generator().manual_seed(0)
    trained = _magnitude(explain(model, x, target))
    return {layer: rank_correlation(trained, _magnitude(explain(randomized, x, target)))
            for layer, randomized in _cascade(model, layer_names, generator)}


# --------------------------------------------------------------------------- deletion and insertion

class DeletionCurve(NamedTuple):
    """``probabilities[i, k]``: p(target) of image i with a ``fractions[k]`` share of its pixels deleted."""

    fractions: torch.Tensor      # (steps + 1,) from 0 to until
    probabilities: torch.Tensor  # (N, steps + 1)
    auc: torch.Tensor            # (N,) area under each curve (trapezoid rule), divided by until


class InsertionCurve(NamedTuple):
    """``probabilities[i, k]``: p(target) of blurred image i with a ``fractions[k]`` share of its
    pixels put back."""

    fractions: torch.Tensor      # (steps + 1,) from 0 to until
    probabilities: torch.Tensor  # (N, steps + 1)
    auc: torch.Tensor            # (N,) area under each curve (trapezoid rule), divided by until


def _cell_ranks(saliency: torch.Tensor | None, shape: torch.Size, cell,
                generator) -> tuple[torch.Tensor, int]:
    """Each pixel's place in the order of its ``cell`` x ``cell`` square, most important first.

    Returns ``rank`` (N, 1, H, W), the rank of the square the pixel is in (0 = first), and
    the number of squares. ``saliency`` (N, H, W) orders the squares by total saliency;
    ``None`` draws a random order per image from ``generator``.
    """
    n, _, height, width = shape
    if isinstance(cell, bool) or not isinstance(cell, int) or not 1 <= cell <= min(height, width):
        raise ValueError(f"cell must be an int from 1 to the image side {min(height, width)}, got {cell!r}")
    rows, cols = math.ceil(height / cell), math.ceil(width / cell)
    if saliency is None:
        generator = generator if generator is not None else torch.Generator().manual_seed(0)
        order = torch.stack([torch.randperm(rows * cols, generator=generator) for _ in range(n)])
    else:
        if not isinstance(saliency, torch.Tensor) or saliency.shape != (n, height, width):
            raise ValueError(f"saliency must have shape (N, H, W) = {(n, height, width)}, got "
                             f"{tuple(getattr(saliency, 'shape', ())) or type(saliency).__name__}")
        totals = F.avg_pool2d(saliency.detach().float().cpu()[:, None], cell, ceil_mode=True)
        order = totals.flatten(1).argsort(dim=1, descending=True, stable=True)
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(rows * cols).expand(n, -1))   # rank[i, square]
    rank = rank.view(n, 1, rows, cols).repeat_interleave(cell, 2).repeat_interleave(cell, 3)
    return rank[:, :, :height, :width], rows * cols


def _reveal_curve(model: nn.Module, x, target, saliency, *, steps, until, cell, batch_size, generator,
                  hidden: Callable, shown: Callable):
    """The curve both metrics share: at step k the first ``round(fractions[k] * squares)``
    squares of the order show ``shown(xd)``, the others ``hidden(xd)``.

    Returns the fractions, the (N, steps + 1) probabilities of the target and the AUCs.
    """
    xd, target = prepare(model, x, target)
    steps = positive_int(steps, "steps")
    batch_size = positive_int(batch_size, "batch_size")
    if isinstance(until, bool) or not isinstance(until, numbers.Real) or not 0 < until <= 1:
        raise ValueError(f"until (the share of the image changed at the end) must be in (0, 1], "
                         f"got {until!r}")
    rank, squares = _cell_ranks(saliency, xd.shape, cell, generator)
    rank = rank.to(xd.device)
    first, then = hidden(xd), shown(xd)
    n = xd.shape[0]
    fractions = torch.linspace(0, until, steps + 1)
    counts = (fractions * squares).round().long().tolist()
    jobs = [(i, k) for i in range(n) for k in range(steps + 1)]
    probabilities = torch.empty(n, steps + 1)
    net = gradient_network(model)   # the same function with batch norm folded in: 1.5x faster forwards
    with evaluating(model), torch.inference_mode():
        for start in range(0, len(jobs), batch_size):
            chunk = jobs[start:start + batch_size]
            images = torch.tensor([i for i, _ in chunk], device=xd.device)
            limits = torch.tensor([counts[k] for _, k in chunk], device=xd.device).view(-1, 1, 1, 1)
            batch = torch.where(rank[images] < limits, then[images], first[images])
            probs = target_scores(net(batch).softmax(dim=1), target[images]).float().cpu()
            probabilities[[i for i, _ in chunk], [k for _, k in chunk]] = probs
    auc = torch.trapezoid(probabilities, fractions, dim=1) / until
    return fractions, probabilities, auc


def deletion_curve(model: nn.Module, x: torch.Tensor, target, saliency: torch.Tensor | None, *,
                   steps: int = 20, until: float = 1.0, cell: int = 8, fill=None, batch_size: int = 32,
                   generator: torch.Generator | None = None) -> DeletionCurve:
    """The deletion metric (Petsiuk et al. 2018): delete pixels in order, watch p(target) fall.

    The image is cut into ``cell`` x ``cell`` squares. With ``saliency``
    (N, H, W) the squares of largest total saliency go first; with
    ``saliency=None`` a random order (from ``generator``) is the baseline.
    Deleted squares take the image's mean colour (or ``fill``: one grey value, 3
    RGB values, or an image of ``x``'s shape). Squares rather than single pixels:
    deleting scattered single pixels adds noise that alone destroys the
    prediction, whatever the order, and hides the difference between orders.
    ``cell=1`` deletes pixel by pixel. The curve has ``steps + 1`` points, 0 to
    ``until`` (100 %) deleted; a map that finds the evidence the model relies on
    gives a fast drop, i.e. a small ``auc``. ``batch_size`` copies per forward pass.
    """
    def fill_image(xd):
        if isinstance(fill, torch.Tensor) and fill.dim() == 4:
            if fill.shape != xd.shape:
                raise ValueError(f"a fill image must have the shape of x, {tuple(xd.shape)}, "
                                 f"got {tuple(fill.shape)}")
            return fill.detach().to(xd.device, xd.dtype)
        return fill_colors(xd, fill)[:, :, None, None]

    return DeletionCurve(*_reveal_curve(model, x, target, saliency, steps=steps, until=until, cell=cell,
                                        batch_size=batch_size, generator=generator,
                                        hidden=lambda xd: xd, shown=fill_image))


def insertion_curve(model: nn.Module, x: torch.Tensor, target, saliency: torch.Tensor | None, *,
                    steps: int = 20, until: float = 1.0, cell: int = 8, blur_sigma: float = 10.0,
                    batch_size: int = 32, generator: torch.Generator | None = None) -> InsertionCurve:
    """The insertion metric (Petsiuk et al. 2018): put pixels back in order, watch p(target) rise.

    The start is a strongly blurred copy of each image (:func:`gaussian_blur` with
    ``blur_sigma`` pixels; ``math.inf``: the mean colour), which keeps the colours but
    hides the evidence. The ``cell`` x ``cell`` squares of the original are inserted
    in the order of ``saliency`` (N, H, W), largest total first, or in a random
    order (from ``generator``) with ``saliency=None``. The same squares and order as
    :func:`deletion_curve`. The curve has ``steps + 1`` points, 0 to ``until`` (100 %)
    inserted; a map that finds the evidence gives a fast rise, i.e. a large ``auc``.
    """
    return InsertionCurve(*_reveal_curve(model, x, target, saliency, steps=steps, until=until, cell=cell,
                                         batch_size=batch_size, generator=generator,
                                         hidden=lambda xd: gaussian_blur(xd, blur_sigma, border="inside"),
                                         shown=lambda xd: xd))


# --------------------------------------------------------------------------- the table

@dataclass(frozen=True)
class MethodScores:
    """One explainer's scores, one value per image; ``means()`` gives the row of the table."""

    deletion_auc: torch.Tensor               # (N,) lower is better
    insertion_auc: torch.Tensor              # (N,) higher is better
    randomization_correlation: torch.Tensor  # (N,) near 0 is good
    seconds_per_image: float                 # the explainer's wall time on the trained model / N

    def means(self) -> dict[str, float]:
        """The mean over images of each score (and the seconds per image)."""
        return {"deletion_auc": self.deletion_auc.double().mean().item(),
                "insertion_auc": self.insertion_auc.double().mean().item(),
                "randomization_correlation": self.randomization_correlation.double().mean().item(),
                "seconds_per_image": self.seconds_per_image}


_COLUMNS = (("deletion_auc", "deletion AUC ↓", "{:.3f}"),
            ("insertion_auc", "insertion AUC ↑", "{:.3f}"),
            ("randomization_correlation", "randomisation corr. →0", "{:+.2f}"),
            ("seconds_per_image", "s / image", "{:.2g}"))


@dataclass(frozen=True)
class EvaluationTable:
    """The result of :func:`evaluation_table`: ``methods[name]`` is a :class:`MethodScores`.

    ``print(table)`` shows a text table, ``table.to_markdown()`` a Markdown one (also what
    Jupyter displays), ``table.to_rows()`` plain dicts of mean scores, one per method.
    """

    methods: dict[str, MethodScores]
    randomized_layers: tuple[str, ...]
    n_images: int

    def __getitem__(self, name: str) -> MethodScores:
        return self.methods[name]

    def to_rows(self) -> list[dict[str, str | float]]:
        """One dict per method, in order: ``{"method": name, "deletion_auc": mean, ...}``."""
        return [{"method": name, **scores.means()} for name, scores in self.methods.items()]

    def _cells(self) -> tuple[list[str], list[list[str]]]:
        header = ["method"] + [title for _, title, _ in _COLUMNS]
        rows = [[row["method"]] + [fmt.format(row[key]) for key, _, fmt in _COLUMNS]
                for row in self.to_rows()]
        return header, rows

    def _caption(self) -> str:
        layers = ", ".join(self.randomized_layers)
        return (f"mean over {self.n_images} images. ↓ lower is better, ↑ higher is better, →0: near 0 is "
                f"good (rank correlation with the maps after randomising {layers})")

    def to_markdown(self) -> str:
        """The table in Markdown, numbers right-aligned, with a caption line below."""
        header, rows = self._cells()
        lines = ["| " + " | ".join(header) + " |", "| --- |" + " ---: |" * (len(header) - 1)]
        lines += ["| " + " | ".join(row) + " |" for row in rows]
        return "\n".join(lines) + f"\n\n{self._caption()}"

    def to_text(self) -> str:
        """The table as aligned plain text, with a caption line below."""
        header, rows = self._cells()
        widths = [max(len(r[j]) for r in [header, *rows]) for j in range(len(header))]

        def line(cells):
            return "  ".join(c.ljust(w) if j == 0 else c.rjust(w)
                             for j, (c, w) in enumerate(zip(cells, widths)))

        rule = "  ".join("-" * w for w in widths)
        return "\n".join([line(header), rule, *map(line, rows), self._caption()])

    def __str__(self) -> str:
        return self.to_text()

    def _repr_markdown_(self) -> str:
        return self.to_markdown()


def _top_layer(model: nn.Module) -> list[str]:
    """The last layer (in ``named_modules`` order) that has parameters of its own: usually the classifier."""
    names = [name for name, module in model.named_modules()
             if name and next(module.parameters(recurse=False), None) is not None]
    if not names:
        raise ValueError("the model has no layer with parameters to randomise; pass randomize_layers")
    return names[-1:]


def _explain(fn: Callable, name: str, model: nn.Module, x: torch.Tensor, target) -> torch.Tensor:
    """``fn(model, x, target)`` as (N, H, W) float maps on the CPU (3-channel maps: abs-max over channels)."""
    maps = fn(model, x, target)
    n, _, height, width = x.shape
    shape = tuple(maps.shape) if isinstance(maps, torch.Tensor) else type(maps).__name__
    if not isinstance(maps, torch.Tensor) or not (
            (maps.dim() == 3 and maps.shape == (n, height, width))
            or (maps.dim() == 4 and maps.shape[0] == n and maps.shape[2:] == (height, width))):
        raise ValueError(f"explainer {name!r} returned {shape} for {n} images of {height}x{width}; an "
                         "explainer returns maps of shape (N, H, W) or (N, 3, H, W)")
    maps = maps.detach().float().cpu()
    return _magnitude(maps) if maps.dim() == 4 else maps


def evaluation_table(model: nn.Module, images: torch.Tensor, targets, explainers: Mapping[str, Callable], *,
                     randomize_layers: Sequence[str] | None = None, steps: int = 20, cell: int = 8,
                     deletion_until: float = 1.0,
                     blur_sigma: float = 10.0, batch_size: int = 32, generator: torch.Generator | None = None,
                     progress: bool = True) -> EvaluationTable:
    """Faithfulness and sanity of several saliency methods on the same images, as one table.

    ``explainers``: ``{name: fn}`` with ``fn(model, x, target) -> maps`` of shape (N, H, W)
    or (N, 3, H, W) (reduced to (N, H, W) with abs-max over channels), e.g.
    ``{"gradient": cs.saliency_map, "guided backprop": cs.guided_backprop}``. For every
    method and image (``images`` (N, 3, H, W), ``targets`` one class index or one per image):

    * ``deletion_auc``: :func:`deletion_curve` with the map (``steps``, ``cell``, up to the share
      ``deletion_until`` of the image; lower is better);
    * ``insertion_auc``: :func:`insertion_curve` with the map (``blur_sigma``; higher is better);
    * ``randomization_correlation``: the Spearman rank correlation between the map and the
      map of the model with ``randomize_layers`` randomised, top down (the last step of
      :func:`cascading_randomization`, the same copy for every method; default: the last
      layer with parameters). Near 0 is good: the map depends on what the model learned;
      a map that ignores the model (e.g. an edge detector) gets 1.
    * ``seconds_per_image``: the explainer's wall time on the trained model, divided by N.

    Explainers run on ``batch_size`` images at a time (on copies of them), and the curves
    put ``batch_size`` images through the model per forward pass. ``generator`` draws the
    random weights (seed 0 without one). Returns an :class:`EvaluationTable`; per-image
    scores are in ``table[name]``, the means in ``table.to_rows()``; ``print(table)``.
    """
    validate_model(model)
    xd, targets = prepare(model, images, targets)
    if not isinstance(explainers, Mapping):
        raise TypeError("explainers must be a dict {name: fn(model, x, target) -> maps}, "
                        f"got {type(explainers).__name__}")
    if not explainers:
        raise ValueError("explainers is empty; give at least one, e.g. {'gradient': cs.saliency_map}")
    for name, fn in explainers.items():
        if not isinstance(name, str) or not callable(fn):
            raise TypeError(f"explainers must map names (str) to callables fn(model, x, target), got "
                            f"{name!r}: {type(fn).__name__}")
    layers = _top_layer(model) if randomize_layers is None else list(
        validate_layers(model, _layer_list(randomize_layers), "randomize_layers"))
    steps, batch_size = positive_int(steps, "steps"), positive_int(batch_size, "batch_size")
    gaussian_blur(xd[:1], blur_sigma, border="inside")   # checks blur_sigma before any explainer runs
    generator = generator if generator is not None else torch.Generator().manual_seed(0)
    *_, (_, randomized) = _cascade(model, layers, generator)
    n = xd.shape[0]
    chunks = [slice(start, start + batch_size) for start in range(0, n, batch_size)]
    curves = dict(steps=steps, cell=cell, batch_size=batch_size)
    methods = {}
    with progress_bar(total=len(explainers) * len(chunks), desc="evaluating saliency methods",
                      enabled=progress) as bar:
        for name, fn in explainers.items():
            scores, seconds = {"deletion": [], "insertion": [], "randomization": []}, 0.0
            for part in chunks:
                x, t = xd[part].clone(), targets[part]
                start = time.perf_counter()
                maps = _explain(fn, name, model, x, t)
                seconds += time.perf_counter() - start
                scores["deletion"].append(deletion_curve(model, x, t, maps, until=deletion_until,
                                                         **curves).auc)
                scores["insertion"].append(insertion_curve(model, x, t, maps, blur_sigma=blur_sigma,
                                                           **curves).auc)
                random_maps = _explain(fn, name, randomized, x.clone(), t)
                scores["randomization"].append(rank_correlation(_magnitude(maps), _magnitude(random_maps)))
                bar.update(1)
            methods[name] = MethodScores(torch.cat(scores["deletion"]), torch.cat(scores["insertion"]),
                                         torch.cat(scores["randomization"]), seconds / n)
    return EvaluationTable(methods, tuple(layers), n)
