"""Train the small networks of notebook 06's later sections; weights go to ``data/topics/``.

``make topics-weights`` runs ``python -m cs_utils.train_topics``: for each group named (default:
all) it trains the networks with their recipe below, saves them in float16 and records the
training time and losses in ``data/topics/record.json``. One thread per process, seeded:
the same command gives the same weights on the same machine.

* ``decoders``: the TransformerNet with a resize-then-convolve and with a transposed-convolution
  decoder, the same perceptual loss, crops and steps (:mod:`cs_utils.upsampling`).
"""

from __future__ import annotations

import argparse
import json
import os

import torch

from .models import load_model
from .style import load_style
from .upsampling import DECODERS, UPSAMPLING_DIR, save_decoder_net, train_decoder

__all__ = ["DECODER_RECIPE", "GROUPS", "RECORD_FILE", "main", "train_decoders"]

RECORD_FILE = UPSAMPLING_DIR / "record.json"

#: The settings both decoders are trained with (tv_weight 0: nothing but the decoder smooths).
DECODER_RECIPE = dict(style="starry_night", steps=400, batch_size=2, crop_size=96, style_size=256, lr=2e-3,
                      content_weight=1.0, style_weight=250.0, tv_weight=0.0, seed=0)


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
        save_decoder_net(net, UPSAMPLING_DIR / f"decoder_{decoder}.pt", info=record)
        records[f"decoder_{decoder}"] = {k: v for k, v in record.items() if k != "loss_per_step"}
    return records


GROUPS = {"decoders": train_decoders}


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
    UPSAMPLING_DIR.mkdir(parents=True, exist_ok=True)
    for group in args.groups:
        records = GROUPS[group](args.steps)
        saved = json.loads(RECORD_FILE.read_text()) if RECORD_FILE.exists() else {}
        saved.update(records)
        RECORD_FILE.write_text(json.dumps(saved, indent=2, sort_keys=True) + "\n")
        print(group, json.dumps(records), flush=True)


if __name__ == "__main__":
    main()
