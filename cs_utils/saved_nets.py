"""Save and load the small networks the course trains: one file format for all of them.

A file holds ``{"config": ..., "state_dict": ..., "info": ...}``: the keyword arguments that build
the network again, its weights (float16 by default: half the size, and the images they make
differ by less than 1/255) and its training record. The fast-style networks
(:mod:`cs_utils.fast_style`, ``data/fast_style/``), the decoders (:mod:`cs_utils.upsampling`), the
U-Nets (:mod:`cs_utils.unet`) and the adversarial stylizer (:mod:`cs_utils.adversarial_style`),
all under :data:`TOPICS_DIR`, are saved and loaded here.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from .data import DATA_DIR

__all__ = ["TOPICS_DIR", "load_net", "save_net"]

#: The committed networks of notebook 06's later sections (``make topics-weights``).
TOPICS_DIR = DATA_DIR / "topics"


def save_net(net: nn.Module, config: dict, path, *, info: dict | None = None,
             dtype: torch.dtype = torch.float16) -> Path:
    """Save ``net``'s weights in ``dtype`` with ``config`` (the keyword arguments that build it
    again) and ``info`` (its training record)."""
    path = Path(path)
    state = {k: (t.to(dtype) if t.is_floating_point() else t) for k, t in net.state_dict().items()}
    torch.save({"config": dict(config), "state_dict": state, "info": dict(info or {})}, path)
    return path


def load_net(name_or_path, build: Callable[..., nn.Module], *, what: str, folder: Path = TOPICS_DIR,
             retrain: str = "make topics-weights", device="cpu") -> nn.Module:
    """A network saved by :func:`save_net`: a name of a file in ``folder`` or a path, built by
    ``build(**config)``, float32, frozen, in eval mode, on ``device``; ``net.info`` holds its
    training record. A missing file raises a ``FileNotFoundError`` that lists the committed ones
    and names the command (``retrain``) that trains them again."""
    path = Path(name_or_path)
    if not path.suffix:
        path = folder / f"{name_or_path}.pt"
    if not path.exists():
        available = sorted(p.stem for p in folder.glob("*.pt")) if folder.exists() else []
        raise FileNotFoundError(f"no {what} weights at {str(path)!r}; committed ones: {available} "
                                f"(`{retrain}` trains them again)")
    saved = torch.load(path, map_location="cpu", weights_only=True)
    net = build(**saved["config"])
    net.load_state_dict({k: t.float() if t.is_floating_point() else t
                         for k, t in saved["state_dict"].items()})
    net.info = saved.get("info", {})
    for p in net.parameters():
        p.requires_grad_(False)
    return net.to(device).eval()
