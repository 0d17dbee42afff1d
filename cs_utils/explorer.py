"""A live explorer for a lecture: pick a photo, a method, a class (and a layer and channel); see the map.

::

    import cs_utils as cs
    cs.explore()            # in JupyterLab: the panel (ipywidgets)

:class:`Explorer` holds the state without any widget: ``photo``, ``method``, ``target`` (a
class index; :meth:`Explorer.top_classes` offers the model's top predictions), ``layer`` and
``channel`` (for the activation view); :meth:`Explorer.render` returns a matplotlib Figure.
:class:`ExplorerPanel` puts widgets on it: dropdowns, a file upload, a status line and a
progress bar that move while a map is computed, and the figure as a PNG image.
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from .attribution import grad_cam, integrated_gradients, smooth_grad
from .data import imagenet_label, sample_images
from .hooks import extract_features, get_layer, layer_names
from .image import load_image
from .models import load_model
from .runtime import budget, model_device
from .saliency import gradient_image, guided_backprop, occlusion_map, saliency_map
from .viz import overlay_heatmap

if TYPE_CHECKING:   # matplotlib is imported when a figure is drawn, not with the package
    from matplotlib.figure import Figure

__all__ = ["METHODS", "Explorer", "ExplorerPanel", "explore"]

#: The views, in the order the panel offers them.
METHODS = ("saliency", "occlusion", "guided backprop", "Grad-CAM", "integrated gradients", "SmoothGrad",
           "activation")

Progress = Callable[[float, str], None]


def _default_layers(model: nn.Module) -> list[str]:
    names = layer_names(model)
    blocks = [n for n in names if n.count(".") == 1 and n.startswith("blocks.")]
    if blocks:  # EfficientNet: the stem, every block, the head
        return [n for n in ["stem", *blocks, "head"] if n in names]
    return [n for n, m in model.named_modules() if n and isinstance(m, nn.Conv2d)]


class Explorer:
    """The explorer's state and computation, without widgets (the panel and the tests drive it).

    ``model``: a classifier taking images in [0, 1] (default: EfficientNet-Lite0). ``size``: the
    side the photos are resized and centre-cropped to. The fast budget (``CS_UTILS_FAST=1``)
    uses fewer occlusion windows, integration steps and noise samples."""

    def __init__(self, model: nn.Module | None = None, *, size: int = 224, top: int = 5):
        self.model = load_model() if model is None else model
        self.size, self.top = size, top
        self.photos = {s.name: s.path for s in sample_images("photo")}
        self.layers = _default_layers(self.model)
        fast = budget().fast
        self.occlusion = dict(window=64, stride=40) if fast else dict(window=48, stride=16)
        self.ig_steps = 8 if fast else 32
        self.smooth_samples = 4 if fast else 16
        self.method = "saliency"
        self.progress_bars = False  # occlusion's own progress bar (tqdm), which the panel shows
        self.layer = self.layers[len(self.layers) // 2] if self.layers else None
        self.channel = 0
        self._cache: dict = {}
        self.set_photo(next(iter(self.photos)))

    # --------------------------------------------------------------------------- the photo and classes

    def set_photo(self, photo, name: str | None = None) -> None:
        """Show ``photo``: a sample name (``Explorer.photos``), a path, PIL image, array or tensor, or
        the bytes of an image file (an upload). The class becomes the model's top prediction."""
        if isinstance(photo, (bytes, bytearray, memoryview)):
            from PIL import Image, UnidentifiedImageError

            try:
                photo = Image.open(io.BytesIO(bytes(photo)))
                photo.load()
            except UnidentifiedImageError as exc:
                raise ValueError(f"{name or 'the upload'} is not an image file PIL can read; "
                                 "upload a JPEG or PNG") from exc
        if isinstance(photo, str) and photo in self.photos:
            name, photo = photo, self.photos[photo]
        self.x = load_image(photo, self.size).to(model_device(self.model))
        self.photo = name or (photo if isinstance(photo, str) else "upload")
        with torch.no_grad():
            self.probabilities = self.model(self.x).softmax(dim=1)[0]
        self.target = self.top_classes()[0][0]
        self._cache.clear()

    def top_classes(self, k: int | None = None) -> list[tuple[int, str, float]]:
        """The model's ``k`` most probable classes for the photo: (index, label, probability)."""
        values, indices = self.probabilities.topk(k or self.top)
        return [(int(i), imagenet_label(int(i)) if len(self.probabilities) == 1000 else f"class {int(i)}",
                 float(p)) for p, i in zip(values, indices)]

    def channels(self, layer: str | None = None) -> int:
        """How many channels ``layer`` (default: the current one) has."""
        return self._activation(layer or self.layer).shape[1]

    def _activation(self, layer: str) -> torch.Tensor:
        key = ("activation", layer)
        if key not in self._cache:
            get_layer(self.model, layer)  # an unknown name raises, listing close ones
            with torch.no_grad():
                self._cache[key] = extract_features(self.model, self.x, [layer])[layer]
        return self._cache[key]

    # --------------------------------------------------------------------------- computing a view

    def compute(self, progress: Progress | None = None) -> torch.Tensor:
        """The current view: an (H, W) map, or for guided backprop a (3, H, W) image in [0, 1].

        ``progress(fraction, message)`` is called before the work, after each part of it and at
        the end (fraction 1). Results are cached until the photo changes."""
        if self.method not in METHODS:
            raise ValueError(f"unknown method {self.method!r}; choose one of {', '.join(METHODS)}")
        report = progress or (lambda fraction, message: None)
        activation = self.method == "activation"
        key = (self.method, self.layer, self.channel) if activation else (self.method, self.target)
        if key in self._cache:
            report(1.0, f"{self.method}: cached")
            return self._cache[key]
        report(0.0, f"computing {self.method} ...")
        start = time.perf_counter()
        m, x, t = self.model, self.x, self.target
        if self.method == "saliency":
            view = saliency_map(m, x, t)[0]
        elif self.method == "occlusion":
            view = occlusion_map(m, x, t, **self.occlusion, progress=self.progress_bars)[0]
        elif self.method == "guided backprop":
            view = gradient_image(guided_backprop(m, x, t))[0]
        elif self.method == "Grad-CAM":
            view = grad_cam(m, x, t)[0]
        elif self.method == "integrated gradients":
            view = integrated_gradients(m, x, t, steps=self.ig_steps).maps[0].abs().amax(dim=0)
        elif self.method == "SmoothGrad":  # in parts, so that the progress bar moves
            parts, total = [], self.smooth_samples
            for i in range(total):
                generator = torch.Generator(device=x.device).manual_seed(i)
                parts.append(smooth_grad(m, x, t, samples=1, generator=generator)[0])
                report((i + 1) / (total + 1), f"SmoothGrad: {i + 1} of {total} noisy copies")
            view = torch.stack(parts).mean(dim=0)
        else:
            activation = self._activation(self.layer)
            if not 0 <= self.channel < activation.shape[1]:
                raise ValueError(f"layer {self.layer!r} has {activation.shape[1]} channels; choose a channel "
                                 f"from 0 to {activation.shape[1] - 1}")
            view = F.interpolate(activation[:, self.channel:self.channel + 1], size=x.shape[-2:],
                                 mode="bilinear", align_corners=False)[0, 0]
        view = view.detach().float().cpu()
        self._cache[key] = view
        report(1.0, f"{self.method}: {time.perf_counter() - start:.1f} s")
        return view

    def title(self) -> str:
        """What the right panel shows, e.g. ``"Grad-CAM for 'espresso' (63%)"``."""
        if self.method == "activation":
            return f"{self.layer}, channel {self.channel} of {self.channels()}"
        label = imagenet_label(self.target) if len(self.probabilities) == 1000 else f"class {self.target}"
        return f"{self.method} for {label!r} ({float(self.probabilities[self.target]):.0%})"

    def render(self, progress: Progress | None = None) -> Figure:
        """The photo and the current view side by side, as a new Figure (not shown by pyplot)."""
        view = self.compute(progress)
        from matplotlib.figure import Figure

        fig = Figure(figsize=(8, 4.2), layout="constrained")
        left, right = fig.subplots(1, 2)
        index, label, p = self.top_classes(1)[0]
        left.imshow(self.x[0].permute(1, 2, 0).cpu().numpy())
        left.set_title(f"{self.photo}: the model says {label!r} ({p:.0%})", fontsize=9)
        left.axis("off")
        if view.dim() == 3:
            right.imshow(view.permute(1, 2, 0).numpy())
            right.set_title(self.title(), fontsize=9)
            right.axis("off")
        else:
            overlay_heatmap(self.x[0].cpu(), view, ax=right, percentile=99, title=self.title())
            right.title.set_fontsize(9)
        return fig


def figure_png(fig: Figure, dpi: int = 90) -> bytes:
    """The Figure as PNG bytes."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()


class ExplorerPanel:
    """ipywidgets on an :class:`Explorer`: photo, upload, method, class, layer, channel; the figure
    as an image that updates after every change; a status line and a progress bar meanwhile."""

    def __init__(self, explorer: Explorer):
        try:
            import ipywidgets as w
        except ImportError as exc:
            raise ImportError("the explorer panel needs ipywidgets: pip install ipywidgets (or make setup); "
                              "Explorer(model).render() works without it") from exc

        self.explorer = ex = explorer
        self.photo = w.Dropdown(options=list(ex.photos), value=ex.photo, description="photo")
        self.upload = w.FileUpload(accept="image/*", multiple=False, description="upload")
        self.method = w.Dropdown(options=list(METHODS), value=ex.method, description="method")
        self.target = w.Dropdown(description="class")
        self.layer = w.Dropdown(options=ex.layers, value=ex.layer, description="layer")
        self.channel = w.BoundedIntText(value=0, min=0, max=0, description="channel")
        self.status = w.Label(value="")
        self.progress = w.FloatProgress(value=0.0, min=0.0, max=1.0, description="")
        self.image = w.Image(format="png")
        self.details = w.Output()  # occlusion's progress bar, one per window batch
        ex.progress_bars = True
        self._updating = False
        self._final_message = ""
        self._set_classes()
        self._set_channels()
        self.photo.observe(self._on_photo, names="value")
        self.upload.observe(self._on_upload, names="value")
        for control in (self.method, self.target, self.layer, self.channel):
            control.observe(self._on_change, names="value")
        controls = w.VBox([w.HBox([self.photo, self.upload]), w.HBox([self.method, self.target]),
                           w.HBox([self.layer, self.channel]), w.HBox([self.progress, self.status])])
        self.widget = w.VBox([controls, self.details, self.image])
        self._show_activation_controls()
        self.update()

    def _set_classes(self) -> None:
        self._updating = True
        try:
            options = [(f"{label} ({p:.0%})", index) for index, label, p in self.explorer.top_classes()]
            self.target.options = options
            self.target.value = self.explorer.target
        finally:
            self._updating = False

    def _set_channels(self) -> None:
        self._updating = True
        try:
            self.channel.max = self.explorer.channels() - 1
            self.channel.value = min(self.channel.value, self.channel.max)
        finally:
            self._updating = False

    def _show_activation_controls(self) -> None:
        activation = self.method.value == "activation"
        self.layer.layout.display = None if activation else "none"
        self.channel.layout.display = None if activation else "none"
        self.target.layout.display = "none" if activation else None

    def _report(self, fraction: float, message: str) -> None:
        self.progress.value = fraction
        if fraction >= 1:  # the final message ("saliency: 0.3 s") appears with the new image
            self._final_message = message
        else:
            self.status.value = message

    def update(self) -> None:
        """Copy the controls into the explorer and draw the figure (errors go to the status line)."""
        ex = self.explorer
        ex.method, ex.layer, ex.channel = self.method.value, self.layer.value, int(self.channel.value)
        if self.target.value is not None:
            ex.target = self.target.value
        self._show_activation_controls()
        self.progress.bar_style = "info"
        figure, error = None, None
        self.details.clear_output()
        with self.details:  # in a kernel, Output swallows other exceptions and shows their traceback here
            try:
                figure = ex.render(progress=self._report)
            except (ValueError, KeyError, RuntimeError) as exc:  # NotImplementedError: an unwritten exercise
                error = exc
        if figure is None:
            self.progress.bar_style = "danger"
            self.status.value = f"error: {error}" if error is not None else "error: see the traceback above"
            return
        self.image.value = figure_png(figure)
        self.status.value = self._final_message
        self.progress.bar_style = "success"

    def _on_change(self, change) -> None:
        if self._updating:
            return
        if change["owner"] is self.layer:
            self._set_channels()
        self.update()

    def _on_photo(self, change) -> None:
        if self._updating:
            return
        self._report(0.0, f"loading {change['new']} ...")
        self.explorer.set_photo(change["new"])
        self._set_classes()
        self._set_channels()
        self.update()

    def _on_upload(self, change) -> None:
        files = change["new"]
        if not files:
            return
        upload = files[0] if isinstance(files, (list, tuple)) else next(iter(files.values()))
        name = upload.get("name", "upload")
        try:
            self.explorer.set_photo(upload["content"], name=name)
        except ValueError as exc:
            self.status.value = f"error: {exc}"
            return
        self._updating = True
        try:
            self.photo.options = [*[o for o in self.photo.options if o != name], name]
            self.explorer.photos[name] = self.explorer.x.cpu()
            self.photo.value = name
        finally:
            self._updating = False
        self._set_classes()
        self._set_channels()
        self.update()

    def _repr_mimebundle_(self, **kwargs):
        return self.widget._repr_mimebundle_(**kwargs)


def explore(model: nn.Module | None = None, *, size: int = 224) -> ExplorerPanel:
    """The live explorer for a lecture (ipywidgets; shows itself as a notebook cell's result).

    ``model``: a classifier taking images in [0, 1] (default: EfficientNet-Lite0). The panel
    holds the :class:`Explorer` as ``panel.explorer`` (set its fields and call ``render()`` to
    drive it from code)."""
    return ExplorerPanel(Explorer(model, size=size))
