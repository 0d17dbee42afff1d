"""Train the fast-style networks whose weights are committed under ``data/fast_style/``.

``make weights`` runs ``python -m cs_utils.instructor.train_weights``: it trains every network in
:data:`NETWORKS` (resuming from ``build/fast_style/*.ckpt`` if a run was interrupted),
saves the weights in float16 to ``data/fast_style/NAME.pt``, writes ``record.json`` (steps,
time, final losses) and the reference outputs the unit tests compare against
(``reference.pt``). One thread per process is the default; name networks to train only
some of them (``python -m cs_utils.instructor.train_weights starry_night``).
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import torch

from ..fast_style import FAST_STYLE_DIR, load_fast_style, save_fast_style, stylize
from ..fast_style_training import train_fast_style
from ..models import load_model
from ..style_catalog import STYLE_NAMES

__all__ = ["main", "reference_input", "reference_outputs", "train"]

#: Shared perceptual-loss and network settings (the lecture's single- and multi-style networks).
SETTINGS = dict(channels=(12, 24, 48), num_residual=3, outer_kernel=9, batch_size=4, crop_size=128,
                style_size=256, lr=2e-3, content_layer="blocks.4", content_weight=1.0,
                style_weight=0.6, tv_weight=1.0, normalize=True, moment_weight=1.0)

#: name -> (styles, norm, steps, seed, run). Networks of the same ``run`` share one checkpoint:
#: ``starry_night_500`` is ``starry_night`` after 500 of its 1000 steps (a resumed run equals an
#: uninterrupted one), trained as long as the batch-norm twin for the side-by-side comparison.
NETWORKS = {
    "starry_night_500": (("starry_night",), "instance", 500, 0, "starry_night"),
    "starry_night": (("starry_night",), "instance", 6000, 0, "starry_night"),
    "starry_night_batchnorm": (("starry_night",), "batch", 500, 0, "starry_night_batchnorm"),
    "four_styles": (STYLE_NAMES, "conditional", 6000, 0, "four_styles"),
}

REFERENCE_FILE = FAST_STYLE_DIR / "reference.pt"
RECORD_FILE = FAST_STYLE_DIR / "record.json"


def reference_input() -> torch.Tensor:
    """The fixed input of the weight-loading test: (2, 3, 19, 26) uniform noise, seed 0."""
    return torch.rand(2, 3, 19, 26, generator=torch.Generator().manual_seed(0))


def reference_outputs(names) -> dict[str, torch.Tensor]:
    """Each committed network's output on :func:`reference_input` (the second style for the
    multi-style network)."""
    x = reference_input()
    outputs = {}
    for name in names:
        net = load_fast_style(name)
        outputs[name] = stylize(net, x, style=1 if net.norm == "conditional" else None)
    return outputs


def train(name: str, *, out_dir: Path, checkpoint_dir: Path, steps: int | None = None) -> dict:
    styles, norm, default_steps, seed, run = NETWORKS[name]
    model = load_model("efficientnet_lite0")
    net, history = train_fast_style(
        model, list(styles), norm=norm, steps=steps or default_steps, **SETTINGS,
        checkpoint=checkpoint_dir / f"{run}.ckpt", checkpoint_every=50,
        generator=torch.Generator().manual_seed(seed), desc=name)
    info = {"styles": list(styles), "norm": norm, "seed": seed,
            "settings": {k: list(v) if isinstance(v, tuple) else v for k, v in SETTINGS.items()},
            "torch_threads": torch.get_num_threads()}
    save_fast_style(net, out_dir / f"{name}.pt", history=history, info=info)
    first = {key: sum(getattr(history, key)[:50]) / len(getattr(history, key)[:50])
             for key in ("loss", "content", "style", "tv")}
    return {"steps": history.steps, "minutes": round(history.seconds / 60, 1), "settings": info["settings"],
            "torch_threads": info["torch_threads"],
            "mean_of_first_50_steps": {k: round(v, 3) for k, v in first.items()},
            "mean_of_last_50_steps": {k: round(v, 3) for k, v in history.final_terms().items()}}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", default=list(NETWORKS),
                        help=f"networks to train: {list(NETWORKS)}")
    parser.add_argument("--steps", type=int, default=None, help="override the number of steps")
    parser.add_argument("--checkpoints", default="build/fast_style", help="folder for resumable checkpoints")
    parser.add_argument("--reference-only", action="store_true",
                        help="only rewrite reference.pt from the committed weights")
    args = parser.parse_args(argv)
    unknown = [n for n in args.names if n not in NETWORKS]
    if unknown:
        parser.error(f"unknown networks {unknown}; choose from {list(NETWORKS)}")
    if "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(1)
    FAST_STYLE_DIR.mkdir(parents=True, exist_ok=True)
    checkpoint_dir = Path(args.checkpoints)
    checkpoint_dir.mkdir(parents=True, exist_ok=True)
    if not args.reference_only:
        for name in args.names:
            record = train(name, out_dir=FAST_STYLE_DIR, checkpoint_dir=checkpoint_dir, steps=args.steps)
            records = json.loads(RECORD_FILE.read_text()) if RECORD_FILE.exists() else {}
            records[name] = record
            RECORD_FILE.write_text(json.dumps(records, indent=2, sort_keys=True) + "\n")
            print(name, record, flush=True)
    present = [name for name in NETWORKS if (FAST_STYLE_DIR / f"{name}.pt").exists()]
    torch.save({"input": reference_input(), "outputs": reference_outputs(present)}, REFERENCE_FILE)
    print(f"reference outputs of {present} written to {REFERENCE_FILE}")


if __name__ == "__main__":
    main()
