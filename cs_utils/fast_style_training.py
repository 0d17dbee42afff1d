"""Training a fast-style network in one process: the perceptual loss over random crops of photos.

:func:`train_fast_style` (Johnson et al. 2016): the perceptual loss (Gram matrices and features of
the frozen default classifier, :mod:`cs_utils.perceptual`), random crops of the offline photos
(:func:`training_photos`, every photo but :data:`cs_utils.fast_style.HELD_OUT_PHOTOS`), progress
bar, checkpoints, resumable, seeded. Its history is a :class:`FastStyleHistory`. Training on a
folder of photos, in one process or many, is :mod:`cs_utils.style_training`.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .data import sample_images
from .fast_style import HELD_OUT_PHOTOS, NORMS, TransformerNet
from .history import History
from .hooks import evaluating, get_layer
from .image import load_image
from .models import STYLE_LAYERS
from .perceptual import perceptual_terms, random_photo_crops, style_gram_targets, style_moment_targets
from .runtime import model_device
from .validation import validate_image

__all__ = ["FastStyleHistory", "named_styles", "train_fast_style", "training_photos"]


# --------------------------------------------------------------------------- training data

def training_photos(max_side: int = 512, *, exclude: Sequence[str] = HELD_OUT_PHOTOS) -> list[torch.Tensor]:
    """Every offline photo (``sample_images("photo")``) except ``exclude``, each (1, 3, H, W) in
    [0, 1] with its longer side at most ``max_side`` pixels (random crops come from these)."""
    photos = []
    for sample in sample_images("photo"):
        if sample.name in exclude:
            continue
        image = load_image(sample.path)
        h, w = image.shape[-2:]
        if max(h, w) > max_side:
            scale = max_side / max(h, w)
            image = F.interpolate(image, size=(round(h * scale), round(w * scale)), mode="bilinear",
                                  antialias=True, align_corners=False).clamp(0, 1)
        photos.append(image)
    if not photos:
        raise ValueError("no training photos left: exclude fewer names")
    return photos


# --------------------------------------------------------------------------- training

@dataclass
class FastStyleHistory(History):
    """Per-step losses of :func:`train_fast_style`, each term already weighted: ``content``,
    ``style``, ``tv`` and their sum ``loss``. The raw loss is noisy (every step sees different
    crops): plot it with ``smooth=50``, summarise it with :meth:`final_terms`."""

    content: list[float] = field(default_factory=list)
    style: list[float] = field(default_factory=list)
    tv: list[float] = field(default_factory=list)

    default_series = ("loss", "content", "style", "tv")
    default_logy = True

    def record_step(self, content: float, style: float, tv: float) -> None:
        """Append one training step's three terms (and their sum to ``loss``)."""
        self.content.append(content)
        self.style.append(style)
        self.tv.append(tv)
        self.loss.append(content + style + tv)
        self.steps += 1

    def final_terms(self, last: int = 50) -> dict[str, float]:
        """Mean of each term over the last ``last`` steps."""
        return {name: self.final(name, last) for name in ("loss", "content", "style", "tv")}

    def state(self) -> dict:
        return {"content": self.content, "style": self.style, "tv": self.tv, "seconds": self.seconds}

    @classmethod
    def from_state(cls, state: dict) -> FastStyleHistory:
        history = cls()
        for c, s, t in zip(state["content"], state["style"], state["tv"]):
            history.record_step(c, s, t)
        history.seconds = state["seconds"]
        return history


def named_styles(styles) -> dict[str, torch.Tensor]:
    """``styles`` (an image, a style name, a list of names or a dict) as a checked dict {name: image}."""
    if isinstance(styles, torch.Tensor):
        styles = {"style": styles}
    elif isinstance(styles, str):
        styles = [styles]
    if isinstance(styles, (list, tuple)):
        from .style_catalog import load_style

        styles = {name: load_style(name) for name in styles}
    if not isinstance(styles, dict) or not styles:
        raise TypeError("styles must be an image tensor, a style name, a list of names "
                        "(cs_utils.style_catalog.STYLE_NAMES), or a dict {name: image}")
    for name, image in styles.items():
        validate_image(image, f"style {name!r}")
        if image.shape[0] != 1:
            raise ValueError(f"style {name!r} must be one image (1, 3, H, W), got {tuple(image.shape)}")
    return styles


def train_fast_style(model: nn.Module, styles, photos: Sequence[torch.Tensor] | None = None, *,
                     norm: str | None = None, channels: Sequence[int] = (12, 24, 48),
                     num_residual: int = 3, outer_kernel: int = 9,
                     steps: int = 1000, batch_size: int = 4, crop_size: int = 128, style_size: int = 256,
                     lr: float = 2e-3, style_layers: Sequence[str] = STYLE_LAYERS,
                     content_layer: str = "blocks.4", style_weight: float = 0.6,
                     content_weight: float = 1.0, tv_weight: float = 1.0,
                     normalize: bool = True, moment_weight: float = 1.0,
                     checkpoint=None, checkpoint_every: int = 100, resume: bool = True,
                     generator: torch.Generator | None = None, progress: bool = True,
                     desc: str | None = None) -> tuple[TransformerNet, FastStyleHistory]:
    """Train a :class:`TransformerNet` with the perceptual loss of Johnson et al. (2016).

    ``model``: the frozen loss network (the default classifier; used in eval mode, never
    changed). ``styles``: one style image (1, 3, H, W), a style name, a list of names, or a
    dict ``{name: image}``; more than one style trains a conditional-instance-norm network
    (Dumoulin et al. 2017) where each image of a batch gets a random style. ``photos``: the
    content images to crop from (default: :func:`training_photos`, every offline photo but
    :data:`HELD_OUT_PHOTOS`). Each step draws ``batch_size`` random crops (random scale,
    position and horizontal flip, resized to ``crop_size``) and minimises, by
    default (``normalize=True``) with relative errors as :func:`cs_utils.style_transfer` does,

        content_weight * mean_n ||phi_c(y_n) - phi_c(x_n)||^2 / ||phi_c(x_n)||^2
        + style_weight * (sum_l mean((G_l(y) - A_l)^2) / mean(A_l^2) + moment_weight * L_moments)
        + tv_weight * mean(squared variation)

    with ``phi`` the features at ``content_layer`` and ``style_layers`` (Gram targets ``A_l``
    of the style image resized to ``style_size`` on its shorter side, computed once) and
    ``L_moments`` the relative error of the channel means and standard deviations at the style
    layers and in the colours (it carries a style's brightness, which Gram matrices do not:
    without it a black Hubble sky comes out pale). ``normalize=False, moment_weight=0,
    style_weight=250, tv_weight=10`` is Johnson et al.'s absolute loss
    (:func:`cs_utils.perceptual.perceptual_terms`), where the largest Gram entries (the stem's
    colours) decide the result: a tint. Every term is a mean over the batch, so the weights do
    not depend on the crop size or batch size. The forward pass of ``model`` stops after the
    deepest layer needed.

    ``checkpoint``: a file path; every ``checkpoint_every`` steps (and at the end) the network,
    optimiser, history and random state are saved there. With ``resume`` (default) an existing
    checkpoint of the same configuration is continued, and the result is the same as one
    uninterrupted run. Random choices come from ``generator``. Returns ``(net, history)``:
    the trained network in eval mode on the model's device, and a :class:`FastStyleHistory`.
    """
    style_dict = named_styles(styles)
    names = tuple(style_dict)
    if norm is None:
        norm = "conditional" if len(names) > 1 else "instance"
    if norm not in NORMS:
        raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")
    if len(names) > 1 and norm != "conditional":
        raise ValueError(f"{len(names)} styles need norm='conditional' (one scale and shift per style); "
                         f"a {norm}-norm network holds one style")
    if steps < 0 or batch_size < 1 or crop_size < 16:
        raise ValueError(f"need steps >= 0, batch_size >= 1 and crop_size >= 16; got {steps}, "
                         f"{batch_size}, {crop_size}")
    style_layers = list(style_layers)
    if photos is None:
        photos = training_photos()
    photos = list(photos)
    if not photos:
        raise ValueError("photos is empty: pass content images to crop from (or None for the defaults)")
    for i, photo in enumerate(photos):
        validate_image(photo, f"photos[{i}]")
    device = model_device(model)
    net_config = {"norm": norm, "channels": list(channels), "num_residual": num_residual,
                  "outer_kernel": outer_kernel, "style_names": list(names) if norm == "conditional" else []}
    config = {"net": net_config,
              "batch_size": batch_size, "crop_size": crop_size, "style_size": style_size, "lr": lr,
              "style_layers": style_layers, "content_layer": content_layer, "style_weight": style_weight,
              "content_weight": content_weight, "tv_weight": tv_weight, "styles": list(names)}
    if normalize:  # recorded only when used, so older checkpoints still resume
        config.update(normalize=True, moment_weight=moment_weight)
    layers = list(dict.fromkeys(style_layers + [content_layer]))
    for layer in layers:  # an unknown name fails here, listing close names, before any work
        get_layer(model, layer)

    saved = None
    if checkpoint is not None:
        checkpoint = Path(checkpoint)
        if resume and checkpoint.exists():
            saved = torch.load(checkpoint, map_location="cpu", weights_only=True)
            if saved["step"] > steps:
                raise ValueError(f"checkpoint {str(checkpoint)!r} is already {saved['step']} steps on, "
                                 f"more than steps={steps}; ask for more steps or pass resume=False")
            if saved.get("config") != config:
                raise ValueError(f"checkpoint {str(checkpoint)!r} was written with other settings "
                                 f"({saved.get('config')}); pass resume=False to start afresh, "
                                 "or another path")
    rng = torch.Generator()
    if saved is None:
        seed = int(torch.randint(2**62, (1,), generator=generator))
        rng.manual_seed(seed)
        with torch.random.fork_rng(devices=[]):  # weight initialisation from our generator only
            torch.manual_seed(int(torch.randint(2**62, (1,), generator=rng)))
            net = TransformerNet(**config["net"])
    else:
        net = TransformerNet(**config["net"])
        net.load_state_dict(saved["net"])
        rng.set_state(saved["rng"])
    net = net.to(device).train()
    optimizer = torch.optim.Adam(net.parameters(), lr=lr)
    history = FastStyleHistory()
    if saved is not None:
        optimizer.load_state_dict(saved["optimizer"])
        history = FastStyleHistory.from_state(saved["history"])
    params = [p for p in net.parameters()]

    def save():
        if checkpoint is None:
            return
        state = {"config": config, "net": net.state_dict(), "optimizer": optimizer.state_dict(),
                 "rng": rng.get_state(), "history": history.state(), "step": history.steps}
        partial = checkpoint.with_name(checkpoint.name + ".partial")
        torch.save(state, partial)
        partial.replace(checkpoint)

    from tqdm.auto import tqdm

    with evaluating(model):
        targets = style_gram_targets(model, style_dict, style_layers, style_size, device)
        moments = style_moment_targets(model, style_dict, style_layers, style_size, device) \
            if moment_weight else None

    start = time.perf_counter()
    seconds_before = history.seconds
    bar = tqdm(total=steps, initial=min(history.steps, steps), disable=not progress,
               desc=desc or f"fast style ({norm})")
    try:
        with evaluating(model):
            while history.steps < steps:
                x = random_photo_crops(photos, batch_size, crop_size, rng).to(device)
                style_index = torch.randint(len(names), (batch_size,), generator=rng).to(device)
                style = F.one_hot(style_index, len(names)).float() if norm == "conditional" else None
                y = net(x, style=style)
                content_term, style_term, tv_term = perceptual_terms(
                    model, x, y, targets, style_index, style_layers=style_layers, content_layer=content_layer,
                    style_weight=style_weight, content_weight=content_weight, tv_weight=tv_weight,
                    normalize=normalize, moments=moments, moment_weight=moment_weight)
                loss = content_term + style_term + tv_term
                grads = torch.autograd.grad(loss, params)
                for p, g in zip(params, grads):
                    p.grad = g
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                history.record_step(content_term.item(), style_term.item(), tv_term.item())
                history.seconds = seconds_before + time.perf_counter() - start
                bar.update(1)
                bar.set_postfix(loss=f"{history.loss[-1]:.3g}")
                if history.steps % checkpoint_every == 0:
                    save()
    finally:
        bar.close()
    save()
    return net.eval(), history
