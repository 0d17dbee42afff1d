"""How strongly is a photo stylized? Measured on a network that no stylizer was trained with.

:func:`relative_style_distance` divides the Gram-matrix distance of each stylized image to the
style by that of its content photo, at EfficientNet-Lite2's stage ends (the stylizers of
notebooks 05 and 06 are trained or optimised with Lite0's, so Lite2 is an independent judge):
1 means "no closer to the style than the photo", 0 "the style's statistics exactly".
:func:`match_channel_statistics` gives every colour channel of an image the mean and standard
deviation of a reference image's channel, a stylization step that needs no training.
"""

from __future__ import annotations

import torch

from .style import style_distance, style_targets
from .validation import validate_image

__all__ = ["LITE2_STYLE_LAYERS", "match_channel_statistics", "relative_style_distance"]

#: The stem and the ends of the first five stages of EfficientNet-Lite2 (as STYLE_LAYERS are Lite0's).
LITE2_STYLE_LAYERS = ("stem", "blocks.0", "blocks.3", "blocks.6", "blocks.10", "blocks.14")


def relative_style_distance(model, stylized: torch.Tensor, contents: torch.Tensor, style: torch.Tensor,
                            layers=LITE2_STYLE_LAYERS) -> torch.Tensor:
    """(N,): the Gram distance (style loss, plain forward pass) of ``stylized[i]`` to ``style``,
    divided by that of ``contents[i]``. ``model``: the judge, e.g.
    ``load_model("efficientnet_lite2")`` with its :data:`LITE2_STYLE_LAYERS`; used in eval mode
    and left as it was. Below 1: the stylization moved the photo's statistics towards the style."""
    validate_image(stylized, "stylized")
    validate_image(contents, "contents")
    if stylized.shape[0] != contents.shape[0]:
        raise ValueError(f"give one content photo per stylized image: {stylized.shape[0]} and "
                         f"{contents.shape[0]}")
    targets = style_targets(model, style, layers, mirror=False)
    before = torch.tensor([style_distance(model, c[None], targets, mirror=False) for c in contents])
    after = torch.tensor([style_distance(model, s[None], targets, mirror=False) for s in stylized])
    if (before <= 0).any():
        raise ValueError("a content photo already has the style's Gram matrices exactly; nothing to compare")
    return after / before


def match_channel_statistics(images: torch.Tensor, reference: torch.Tensor, *, strength: float = 1.0
                             ) -> torch.Tensor:
    """A new batch: each channel of each image shifted and scaled to the mean and standard
    deviation of ``reference``'s channel (1, 3, H, W), then clipped to [0, 1].
    ``strength`` in [0, 1] blends from the image (0) to the matched image (1)."""
    validate_image(images, "images")
    validate_image(reference, "reference")
    if not 0.0 <= strength <= 1.0:
        raise ValueError(f"strength must be in [0, 1], got {strength}")
    mean = images.mean((-2, -1), keepdim=True)
    std = images.std((-2, -1), keepdim=True).clamp_min(1e-6)
    ref = reference.to(images.device, images.dtype)
    ref_mean, ref_std = ref.mean((-2, -1), keepdim=True), ref.std((-2, -1), keepdim=True)
    matched = ((images - mean) / std * ref_std + ref_mean).clamp(0, 1)
    return images + strength * (matched - images)
