"""Train the small networks of notebook 06's later sections; weights go to ``data/topics/``.

``make topics-weights`` runs ``python -m cs_utils.instructor.train_topics``: for each group named (default:
all) it trains the networks with their recipe below, saves them in float16 and records the
training time and losses in ``data/topics/record.json``. One thread per process, seeded:
the same command gives the same weights on the same machine.

* ``decoders``: the TransformerNet with a resize-then-convolve and with a transposed-convolution
  decoder, the same perceptual loss, crops and steps (:mod:`cs_utils.upsampling`).
* ``unet``: the U-Net with and without skip connections on the same synthetic shapes
  (:mod:`cs_utils.unet`); the record has the IoU on held-out images (seed 1).
* ``adversarial``: the adversarial stylizer of Sanakoyeu et al. for Starry Night
  (:mod:`cs_utils.adversarial_style`); the record has the discriminator's accuracy.
"""

from __future__ import annotations

import argparse
import json
import os

import torch

from ..adversarial_style import save_stylizer, train_adversarial_stylizer
from ..fast_style_training import training_photos
from ..models import load_model
from ..saved_nets import TOPICS_DIR
from ..style_catalog import load_style
from ..unet import mask_iou, predict_masks, save_unet, synthetic_shapes, train_unet
from ..upsampling import DECODERS, save_decoder_net, train_decoder

__all__ = ["ADVERSARIAL_RECIPE", "DECODER_RECIPE", "GROUPS", "RECORD_FILE", "UNET_HELD_OUT", "UNET_RECIPE",
           "main", "train_adversarial", "train_decoders", "train_unets", "unet_held_out"]

RECORD_FILE = TOPICS_DIR / "record.json"

#: The settings both decoders are trained with (tv_weight 0: nothing but the decoder smooths).
DECODER_RECIPE = dict(style="starry_night", steps=400, batch_size=2, crop_size=96, style_size=256, lr=2e-3,
                      content_weight=1.0, style_weight=250.0, tv_weight=0.0, seed=0)

#: Both U-Nets (with and without skips) get the same recipe; held-out images come from another seed.
UNET_RECIPE = dict(steps=1200, batch_size=16, size=64, n_train=1024, width=8, depth=4, lr=3e-3, seed=0)
UNET_HELD_OUT = dict(n=256, seed=1)

#: The adversarial stylizer: Starry Night crops against photo crops (photos at most 256 px). The
#: painting at 384 px (shorter side), its crops at most 1.5 x 96 px before resizing, so the real crops
#: show its strokes at about the scale the stylizer paints at on a 384-px photo; the discriminator at
#: full and half resolution, the image blurred ([1, 2, 1] / 4) before its first stride: with the
#: painting's crops at full size and a plain strided discriminator the stylizer paints fine colored
#: stripes (the chroma high-frequency share of its outputs 0.11-0.20 depending on the seed). The
#: stylizer kept is the moving average of its weights (decay 0.99, about the last 100 steps): its last
#: weights smeared the photos along the rows (streak share 0.37 at 384 px, photos 0.10; averaged 0.12).
ADVERSARIAL_RECIPE = dict(style="starry_night", photo_side=256, steps=400, batch_size=4, crop_size=96,
                          lr=2e-4, adversarial_weight=1.0, content_weight=100.0, transformed_weight=100.0,
                          pool=10, style_side=384, style_scale=1.5, disc_scales=2, disc_antialias="input",
                          ema_decay=0.99, seed=0)


def _mean(values, part):
    values = values[:50] if part == "first" else values[-50:]
    return round(sum(values) / max(len(values), 1), 3)


def train_decoders(steps: int | None = None) -> dict:
    recipe = dict(DECODER_RECIPE, steps=steps or DECODER_RECIPE["steps"])
    model = load_model("efficientnet_lite0")
    style = load_style(recipe["style"])
    settings = {k: v for k, v in recipe.items() if k != "style"}
    records = {}
    for decoder in DECODERS:
        net, history = train_decoder(model, decoder, style, **settings)
        record = {"recipe": recipe, "seconds": round(history.seconds, 1), "steps": history.steps,
                  "torch_threads": torch.get_num_threads(),
                  "loss": {"mean_of_first_50_steps": _mean(history.loss, "first"),
                           "mean_of_last_50_steps": _mean(history.loss, "last")},
                  "content_last_50": _mean(history.content, "last"),
                  "style_last_50": _mean(history.style, "last"),
                  "loss_per_step": [round(v, 2) for v in history.loss]}
        save_decoder_net(net, TOPICS_DIR / f"decoder_{decoder}.pt", info=record)
        records[f"decoder_{decoder}"] = {k: v for k, v in record.items() if k != "loss_per_step"}
    return records


def unet_held_out() -> tuple[torch.Tensor, torch.Tensor]:
    """The held-out synthetic images and masks the U-Nets are scored on."""
    return synthetic_shapes(UNET_HELD_OUT["n"], UNET_RECIPE["size"],
                            generator=torch.Generator().manual_seed(UNET_HELD_OUT["seed"]))


def train_unets(steps: int | None = None) -> dict:
    recipe = dict(UNET_RECIPE, steps=steps or UNET_RECIPE["steps"])
    images, masks = unet_held_out()
    records = {}
    for skips in (True, False):
        net, history = train_unet(skips=skips, **recipe)
        record = {"recipe": recipe, "skips": skips, "seconds": round(history.seconds, 1),
                  "steps": history.steps,
                  "torch_threads": torch.get_num_threads(),
                  "loss": {"mean_of_first_50_steps": _mean(history.loss, "first"),
                           "mean_of_last_50_steps": _mean(history.loss, "last")},
                  "held_out": UNET_HELD_OUT,
                  "held_out_iou": round(mask_iou(predict_masks(net, images), masks), 4),
                  "loss_per_step": [round(v, 4) for v in history.loss]}
        name = f"unet_{'skips' if skips else 'no_skips'}"
        save_unet(net, TOPICS_DIR / f"{name}.pt", info=record)
        records[name] = {k: v for k, v in record.items() if k != "loss_per_step"}
    return records


def train_adversarial(steps: int | None = None) -> dict:
    recipe = dict(ADVERSARIAL_RECIPE, steps=steps or ADVERSARIAL_RECIPE["steps"])
    settings = {k: v for k, v in recipe.items() if k not in ("style", "photo_side")}
    photos = training_photos(max_side=recipe["photo_side"])
    stylizer, _, history = train_adversarial_stylizer(load_style(recipe["style"]), photos, **settings)
    series = ("loss", "adversarial", "content", "transformed", "disc", "accuracy")
    record = {"recipe": recipe, "seconds": round(history.seconds, 1), "steps": history.steps,
              "torch_threads": torch.get_num_threads(),
              "mean_of_first_50_steps": {k: _mean(getattr(history, k), "first") for k in series},
              "mean_of_last_50_steps": {k: _mean(getattr(history, k), "last") for k in series},
              "per_step": {k: [round(v, 4) for v in getattr(history, k)] for k in series}}
    save_stylizer(stylizer, TOPICS_DIR / "adversarial_starry_night.pt", info=record)
    return {"adversarial_starry_night": {k: v for k, v in record.items() if k != "per_step"}}


GROUPS = {"decoders": train_decoders, "unet": train_unets, "adversarial": train_adversarial}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("groups", nargs="*", default=list(GROUPS), help=f"what to train: {list(GROUPS)}")
    parser.add_argument("--steps", type=int, default=None, help="override the number of steps (a trial run)")
    args = parser.parse_args(argv)
    unknown = [g for g in args.groups if g not in GROUPS]
    if unknown:
        parser.error(f"unknown groups {unknown}; choose from {list(GROUPS)}")
    if "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(1)
    TOPICS_DIR.mkdir(parents=True, exist_ok=True)
    for group in args.groups:
        records = GROUPS[group](args.steps)
        saved = json.loads(RECORD_FILE.read_text()) if RECORD_FILE.exists() else {}
        saved.update(records)
        RECORD_FILE.write_text(json.dumps(saved, indent=2, sort_keys=True) + "\n")
        print(group, json.dumps(records), flush=True)


if __name__ == "__main__":
    main()
