"""Fast (feed-forward) style transfer: a transformer network trained with a perceptual loss.

* :class:`TransformerNet` (Johnson et al. 2016, "Perceptual losses for real-time style
  transfer"): reflection padding, two stride-2 downsampling convolutions, residual blocks,
  an upsample-then-convolve decoder (no checkerboard artifacts of transposed convolutions).
  ``norm="instance"`` (Ulyanov et al. 2016), ``"batch"``, or ``"conditional"``: conditional
  instance norm (Dumoulin et al. 2017), one learned scale and shift per style, so one
  network holds several styles and mixes them.
* :func:`train_fast_style`: the perceptual loss (Gram matrices and features of the frozen
  default classifier), random crops of the offline photos, progress bar, checkpoints,
  resumable, seeded.
* :func:`stylize`: apply a trained network to a batch of any size; :func:`load_fast_style`
  loads the weights committed under ``data/fast_style/``.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .checks import check_image
from .data import DATA_DIR, sample_images
from .history import History
from .hooks import evaluating, get_layer
from .image import load_image
from .models import STYLE_LAYERS
from .perceptual import perceptual_terms, random_photo_crops, style_gram_targets
from .runtime import model_device
from .saved_nets import load_net, save_net

__all__ = [
    "FAST_STYLE_DIR",
    "HELD_OUT_PHOTOS",
    "STYLE_LAYERS",
    "ConditionalInstanceNorm",
    "FastStyleHistory",
    "TransformerNet",
    "instance_norm",
    "load_fast_style",
    "save_fast_style",
    "stylize",
    "train_fast_style",
    "training_photos",
]

#: Where the committed weights live (``load_fast_style(name)`` reads ``name.pt`` from here).
FAST_STYLE_DIR = DATA_DIR / "fast_style"

#: Photos never used in training, so notebooks can show the networks generalising.
HELD_OUT_PHOTOS = ("astronaut", "chelsea", "coffee", "grace_hopper", "imagenet_03", "imagenet_11")

# --------------------------------------------------------------------------- normalisation

def instance_norm(x: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Normalise each channel of each image to zero mean and unit variance over its pixels.

    ``y[n, c] = (x[n, c] - mean(x[n, c])) / sqrt(var(x[n, c]) + eps)``, with the biased
    variance (divide by H*W), as ``torch.nn.functional.instance_norm``. Unlike batch norm,
    the statistics come from one image alone, so the contrast of the content image is
    removed at test time exactly as in training (Ulyanov et al. 2016).

    x: (N, C, H, W) float tensor. Returns a tensor of the same shape.
    """
    if not isinstance(x, torch.Tensor) or x.dim() != 4:
        raise ValueError(f"instance_norm expects a (N, C, H, W) tensor, got "
                         f"{tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__}")
    if x.shape[2] * x.shape[3] < 2:
        raise ValueError(f"instance_norm needs more than one pixel per channel, got {tuple(x.shape)}")
    ### BEGIN SOLUTION
    mean = x.mean(dim=(2, 3), keepdim=True)
    var = (x - mean).pow(2).mean(dim=(2, 3), keepdim=True)
    return (x - mean) / torch.sqrt(var + eps)
    ### END SOLUTION


class ConditionalInstanceNorm(nn.Module):
    """Instance norm with one learned scale and shift per style (Dumoulin et al. 2017).

    ``forward(x, style_weights)``: ``style_weights`` (N, num_styles) holds, for each image,
    how much of each style to use (one-hot for a single style; any convex combination mixes
    them). The scale and shift used are the weighted sums of the per-style parameters:
    ``gamma = style_weights @ weight``, ``beta = style_weights @ bias``.
    """

    def __init__(self, num_features: int, num_styles: int, eps: float = 1e-5):
        super().__init__()
        if num_styles < 1:
            raise ValueError(f"num_styles must be >= 1, got {num_styles}")
        self.num_features, self.num_styles, self.eps = num_features, num_styles, eps
        self.weight = nn.Parameter(torch.ones(num_styles, num_features))
        self.bias = nn.Parameter(torch.zeros(num_styles, num_features))

    def forward(self, x: torch.Tensor, style_weights: torch.Tensor) -> torch.Tensor:
        if style_weights.shape != (x.shape[0], self.num_styles):
            raise ValueError(f"style_weights must have shape (N, num_styles) = ({x.shape[0]}, "
                             f"{self.num_styles}), got {tuple(style_weights.shape)}")
        style_weights = style_weights.to(x.dtype)
        gamma = style_weights @ self.weight
        beta = style_weights @ self.bias
        y = F.instance_norm(x, eps=self.eps)
        return y * gamma[:, :, None, None] + beta[:, :, None, None]

    def extra_repr(self) -> str:
        return f"{self.num_features}, num_styles={self.num_styles}, eps={self.eps}"


NORMS = ("instance", "batch", "conditional")


class _Norm(nn.Module):
    """One normalisation layer of the chosen kind, all called as ``norm(x, style_weights)``."""

    def __init__(self, channels: int, kind: str, num_styles: int):
        super().__init__()
        self.kind = kind
        if kind == "instance":
            self.norm = nn.InstanceNorm2d(channels, affine=True)
        elif kind == "batch":
            self.norm = nn.BatchNorm2d(channels)
        else:
            self.norm = ConditionalInstanceNorm(channels, num_styles)

    def forward(self, x, style_weights):
        if self.kind == "conditional":
            return self.norm(x, style_weights)
        return self.norm(x)


class _ConvNorm(nn.Module):
    """(optional nearest x2 upsampling) -> reflection pad -> conv -> norm -> (ReLU)."""

    def __init__(self, cin, cout, kernel, stride, norm, num_styles, relu=True, upsample=False):
        super().__init__()
        self.upsample, self.relu = upsample, relu
        self.pad = nn.ReflectionPad2d(kernel // 2)
        self.conv = nn.Conv2d(cin, cout, kernel, stride)
        self.norm = _Norm(cout, norm, num_styles)

    def forward(self, x, style_weights):
        if self.upsample:
            x = F.interpolate(x, scale_factor=2, mode="nearest")
        x = self.norm(self.conv(self.pad(x)), style_weights)
        return F.relu(x) if self.relu else x


class _Residual(nn.Module):
    def __init__(self, channels, norm, num_styles):
        super().__init__()
        self.a = _ConvNorm(channels, channels, 3, 1, norm, num_styles)
        self.b = _ConvNorm(channels, channels, 3, 1, norm, num_styles, relu=False)

    def forward(self, x, style_weights):
        return x + self.b(self.a(x, style_weights), style_weights)


class TransformerNet(nn.Module):
    """Image transformation network of Johnson et al. (2016), slimmed for CPUs.

    Encoder: 9x9 conv (``channels[0]``), two 3x3 stride-2 convs (``channels[1]``,
    ``channels[2]``); ``num_residual`` residual blocks at 1/4 resolution; decoder: two
    (nearest x2 upsample, 3x3 conv) layers and a 9x9 conv to RGB; a sigmoid keeps the output
    in [0, 1]. Every conv uses reflection padding. Any input size works: when it is not a
    multiple of 4 the decoder's output is a few pixels larger and is cropped to the input's size.

    ``norm``: ``"instance"`` (default), ``"batch"`` or ``"conditional"`` (conditional
    instance norm over ``style_names``: pass ``style=`` to ``forward``).
    Johnson's network has channels (32, 64, 128) and 5 residual blocks; the default here, (12, 24,
    48) and 3 blocks, stylizes 512x512 in a fraction of a second on a CPU and trains in an hour.
    """

    def __init__(self, norm: str = "instance", *, channels: Sequence[int] = (12, 24, 48),
                 num_residual: int = 3, outer_kernel: int = 9, style_names: Sequence[str] = ()):
        super().__init__()
        if norm not in NORMS:
            raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")
        channels = tuple(int(c) for c in channels)
        if len(channels) != 3 or min(channels) < 1:
            raise ValueError(f"channels must be three positive ints, e.g. (16, 32, 64), got {channels}")
        style_names = tuple(style_names)
        if norm == "conditional" and not style_names:
            raise ValueError("a conditional network needs style_names (one per style it holds)")
        if len(set(style_names)) != len(style_names):
            raise ValueError(f"style_names must be distinct, got {style_names}")
        if outer_kernel < 1 or outer_kernel % 2 == 0:
            raise ValueError(f"outer_kernel must be an odd positive int, got {outer_kernel}")
        self.norm, self.channels, self.num_residual = norm, channels, int(num_residual)
        self.outer_kernel = k = int(outer_kernel)
        self.style_names = style_names
        c1, c2, c3 = channels
        s = max(len(style_names), 1)
        self.down = nn.ModuleList([
            _ConvNorm(3, c1, k, 1, norm, s),
            _ConvNorm(c1, c2, 3, 2, norm, s),
            _ConvNorm(c2, c3, 3, 2, norm, s),
        ])
        self.residual = nn.ModuleList([_Residual(c3, norm, s) for _ in range(self.num_residual)])
        self.up = nn.ModuleList([
            _ConvNorm(c3, c2, 3, 1, norm, s, upsample=True),
            _ConvNorm(c2, c1, 3, 1, norm, s, upsample=True),
        ])
        self.pad_out = nn.ReflectionPad2d(k // 2)
        self.conv_out = nn.Conv2d(c1, 3, k)

    @property
    def num_styles(self) -> int:
        return len(self.style_names)

    def config(self) -> dict:
        """The constructor arguments, enough to rebuild the network."""
        return {"norm": self.norm, "channels": list(self.channels), "num_residual": self.num_residual,
                "outer_kernel": self.outer_kernel, "style_names": list(self.style_names)}

    def style_weights(self, style, n: int) -> torch.Tensor | None:
        """``style`` as an (n, num_styles) weight matrix (None for a single-style network).

        ``style``: a style name or index (one-hot), a vector of ``num_styles`` weights
        (mixing; usually summing to 1), or an (n, num_styles) matrix (one row per image).
        """
        if self.norm != "conditional":
            if style is not None:
                raise ValueError(f"this {self.norm}-norm network holds one style; pass style=None")
            return None
        device = self.conv_out.weight.device
        if style is None:
            raise ValueError(f"this network holds {self.num_styles} styles {list(self.style_names)}; "
                             "pass style= a name, an index, or a weight vector to mix them")
        if isinstance(style, str):
            if style not in self.style_names:
                raise KeyError(f"unknown style {style!r}; this network holds {list(self.style_names)}")
            style = self.style_names.index(style)
        if isinstance(style, int) and not isinstance(style, bool):
            if not 0 <= style < self.num_styles:
                raise IndexError(f"style index {style} is out of range 0..{self.num_styles - 1}")
            weights = torch.zeros(self.num_styles, device=device)
            weights[style] = 1.0
            return weights.expand(n, -1)
        weights = torch.as_tensor(style, dtype=torch.float32, device=device)
        if weights.dim() == 1 and weights.shape[0] == self.num_styles:
            return weights.expand(n, -1)
        if weights.shape == (n, self.num_styles):
            return weights
        raise ValueError(f"style weights must have shape ({self.num_styles},) or ({n}, {self.num_styles}), "
                         f"got {tuple(weights.shape)}")

    def forward(self, x: torch.Tensor, style=None) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"TransformerNet expects (N, 3, H, W) images, got {tuple(x.shape)}")
        h, w = x.shape[-2:]
        if min(h, w) < 8:
            raise ValueError(f"images must be at least 8x8 pixels, got {h}x{w}")
        weights = self.style_weights(style, x.shape[0])
        y = x
        for layer in self.down:
            y = layer(y, weights)
        for block in self.residual:
            y = block(y, weights)
        for layer in self.up:
            y = layer(y, weights)
        y = torch.sigmoid(self.conv_out(self.pad_out(y)))
        return y[..., :h, :w]  # sizes that are not multiples of 4 come back a few pixels larger


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


def _style_dict(styles) -> dict[str, torch.Tensor]:
    if isinstance(styles, torch.Tensor):
        styles = {"style": styles}
    elif isinstance(styles, str):
        styles = [styles]
    if isinstance(styles, (list, tuple)):
        from .style import load_style

        styles = {name: load_style(name) for name in styles}
    if not isinstance(styles, dict) or not styles:
        raise TypeError("styles must be an image tensor, a style name, a list of names "
                        "(cs_utils.style.STYLE_NAMES), or a dict {name: image}")
    for name, image in styles.items():
        check_image(image, f"style {name!r}")
        if image.shape[0] != 1:
            raise ValueError(f"style {name!r} must be one image (1, 3, H, W), got {tuple(image.shape)}")
    return styles


def train_fast_style(model: nn.Module, styles, photos: Sequence[torch.Tensor] | None = None, *,
                     norm: str | None = None, channels: Sequence[int] = (12, 24, 48),
                     num_residual: int = 3, outer_kernel: int = 9,
                     steps: int = 1000, batch_size: int = 4, crop_size: int = 128, style_size: int = 256,
                     lr: float = 2e-3, style_layers: Sequence[str] = STYLE_LAYERS,
                     content_layer: str = "blocks.4", style_weight: float = 250.0,
                     content_weight: float = 1.0, tv_weight: float = 10.0,
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
    position and horizontal flip, resized to ``crop_size``) and minimises

        content_weight * mean((phi_c(y) - phi_c(x))^2)
        + style_weight * sum_l mean((G_l(y) - A_l)^2)  +  tv_weight * mean(squared variation)

    with ``phi`` the features at ``content_layer`` and ``style_layers`` (Gram targets ``A_l``
    of the style image resized to ``style_size`` on its shorter side, computed once). Every
    term is a mean, so the weights do not depend on the crop size or batch size. The forward
    pass of ``model`` stops after the deepest layer needed.

    ``checkpoint``: a file path; every ``checkpoint_every`` steps (and at the end) the network,
    optimiser, history and random state are saved there. With ``resume`` (default) an existing
    checkpoint of the same configuration is continued, and the result is the same as one
    uninterrupted run. Random choices come from ``generator``. Returns ``(net, history)``:
    the trained network in eval mode on the model's device, and a :class:`FastStyleHistory`.
    """
    style_dict = _style_dict(styles)
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
        check_image(photo, f"photos[{i}]")
    device = model_device(model)
    net_config = {"norm": norm, "channels": list(channels), "num_residual": num_residual,
                  "outer_kernel": outer_kernel, "style_names": list(names) if norm == "conditional" else []}
    config = {"net": net_config,
              "batch_size": batch_size, "crop_size": crop_size, "style_size": style_size, "lr": lr,
              "style_layers": style_layers, "content_layer": content_layer, "style_weight": style_weight,
              "content_weight": content_weight, "tv_weight": tv_weight, "styles": list(names)}
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
                    style_weight=style_weight, content_weight=content_weight, tv_weight=tv_weight)
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


# --------------------------------------------------------------------------- using a trained network

def stylize(net: TransformerNet, x: torch.Tensor, style=None, *, batch_size: int = 4) -> torch.Tensor:
    """Apply a trained :class:`TransformerNet` to images ``x`` (N, 3, H, W) in [0, 1], any size.

    ``style``: ``None`` for a single-style network; for a conditional one a style name or
    index, a vector of per-style weights (mixing the conditional-norm parameters, e.g.
    ``[0.5, 0.5, 0, 0]``), or an (N, num_styles) matrix with one row per image. Runs on the
    network's device in eval mode (restored afterwards), ``batch_size`` images at a time,
    without building a graph. Returns the stylized images detached, on ``x``'s device.
    """
    if not isinstance(net, TransformerNet):
        raise TypeError(f"net must be a TransformerNet (see load_fast_style), got {type(net).__name__}")
    check_image(x)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    weights = net.style_weights(style, x.shape[0])
    device = net.conv_out.weight.device
    dtype = net.conv_out.weight.dtype
    outputs = []
    with evaluating(net), torch.inference_mode():
        for i in range(0, x.shape[0], batch_size):
            chunk = x[i:i + batch_size].to(device=device, dtype=dtype)
            chunk_style = None if weights is None else weights[i:i + batch_size]
            outputs.append(net(chunk, style=chunk_style).to(device=x.device, dtype=x.dtype))
    return torch.cat(outputs) if outputs else x.new_empty(x.shape)


def save_fast_style(net: TransformerNet, path, *, history: FastStyleHistory | None = None,
                    info: dict | None = None, dtype: torch.dtype = torch.float16) -> Path:
    """Save a network's configuration and weights (``dtype``, float16 by default) with an optional
    training record (:func:`cs_utils.saved_nets.save_net`)."""
    record = dict(info or {})
    if history is not None:
        record.update(steps=history.steps, seconds=round(history.seconds, 1),
                      final=history.final_terms())
    return save_net(net, net.config(), path, info=record, dtype=dtype)


def load_fast_style(name_or_path, *, device="cpu") -> TransformerNet:
    """A trained :class:`TransformerNet` in eval mode (float32, frozen): a name of the committed
    weights in ``data/fast_style/`` or a file written by :func:`save_fast_style`.

    Committed: ``"starry_night"`` (instance norm), ``"starry_night_500"`` (the same run after half
    its steps), ``"starry_night_batchnorm"`` (its batch-norm twin, as many steps as the latter) and
    ``"four_styles"`` (conditional instance norm over :data:`cs_utils.style.STYLE_NAMES`).
    ``net.info`` holds the training record (steps, seconds, final losses, settings)."""
    return load_net(name_or_path, TransformerNet, what="fast-style", folder=FAST_STYLE_DIR,
                    retrain="make weights", device=device)
