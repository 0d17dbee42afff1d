"""``python -m cs_utils.instructor.train_fast_style``: train a fast-style network on a folder of photos.

::

    python -m cs_utils.instructor.train_fast_style --images DIR --style starry_night --out starry.pt
    torchrun --nproc_per_node=2 -m cs_utils.instructor.train_fast_style --images DIR --style starry_night

The command line (``--help`` lists the options) of :func:`cs_utils.style_training.train_on_folder`,
which holds the data and the processes; the training function itself is
:func:`cs_utils.train_fast_style`. The command lives with the instructor's tools.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist

from ..fast_style import NORMS, save_fast_style
from ..image import load_image
from ..style_training import train_on_folder

__all__ = ["main"]


def _parse(argv):
    from ..style_catalog import STYLE_NAMES

    parser = argparse.ArgumentParser(
        prog="python -m cs_utils.instructor.train_fast_style",
        description="Train a fast-style network on a folder of photos; runs the "
        "same under torchrun --nproc_per_node=N (and --nnodes).",
    )
    parser.add_argument(
        "--images",
        type=Path,
        default=None,
        help="folder of photos, searched recursively (default: the offline photos)",
    )
    parser.add_argument(
        "--style",
        action="append",
        required=True,
        help=f"a style name ({', '.join(STYLE_NAMES)}) or an image file; repeat for a "
        "conditional network with several styles",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="the trained weights (default build/fast_style/<styles>.pt; load_fast_style reads them)",
    )
    parser.add_argument("--checkpoint", type=Path, default=None, help="default: <out>.ckpt")
    parser.add_argument("--no-resume", action="store_true", help="start afresh even if the checkpoint exists")
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=4, help="crops per process and step")
    parser.add_argument("--crop-size", type=int, default=128)
    parser.add_argument("--style-size", type=int, default=256)
    parser.add_argument(
        "--max-side", type=int, default=512, help="photos are scaled down to this longer side"
    )
    parser.add_argument("--norm", choices=NORMS, default=None)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--style-weight", type=float, default=0.6)
    parser.add_argument("--content-weight", type=float, default=1.0)
    parser.add_argument("--tv-weight", type=float, default=1.0)
    parser.add_argument("--moment-weight", type=float, default=1.0,
                        help="weight of the channel mean and standard deviation term (0: none)")
    parser.add_argument("--absolute", action="store_true",
                        help="Johnson et al.'s absolute errors instead of relative ones (with "
                             "--style-weight 250 --tv-weight 10 --moment-weight 0)")
    parser.add_argument("--checkpoint-every", type=int, default=100)
    parser.add_argument("--log-every", type=int, default=10)
    parser.add_argument(
        "--workers", type=int, default=2, help="DataLoader worker processes per training process"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--model", default="efficientnet_lite0", help="the loss network (cs_utils.models.MODEL_NAMES)"
    )
    parser.add_argument("--device", default=None, help="default: this process's GPU, else the CPU")
    parser.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    return parser.parse_args(argv)


def _style_argument(names: list[str]) -> dict[str, torch.Tensor]:
    from ..style_catalog import STYLE_NAMES, load_style

    styles = {}
    for name in names:
        path = Path(name).expanduser()
        if name in STYLE_NAMES:
            styles[name] = load_style(name)
        elif path.is_file():
            styles[path.stem] = load_image(path)
        else:
            raise SystemExit(
                f"--style {name!r} is neither a style name ({', '.join(STYLE_NAMES)}) nor an image file"
            )
    return styles


def main(argv=None) -> int:
    """The command line of ``python -m cs_utils.instructor.train_fast_style`` (see ``--help``)."""
    args = _parse(argv)
    from ..models import load_model

    styles = _style_argument(args.style)
    out = args.out or Path("build") / "fast_style" / f"{'+'.join(styles)}.pt"
    checkpoint = args.checkpoint or out.with_name(out.name + ".ckpt")
    rank = int(os.environ.get("RANK", "0"))
    log = None
    if rank == 0:
        out.parent.mkdir(parents=True, exist_ok=True)
        log = _Tee(out.with_suffix(".log"))
    try:
        net, history = _train_or_explain(
            load_model(args.model),
            styles,
            args.images,
            steps=args.steps,
            batch_size=args.batch_size,
            crop_size=args.crop_size,
            style_size=args.style_size,
            norm=args.norm,
            lr=args.lr,
            style_weight=args.style_weight,
            content_weight=args.content_weight,
            tv_weight=args.tv_weight,
            normalize=not args.absolute,
            moment_weight=args.moment_weight,
            checkpoint=checkpoint,
            checkpoint_every=args.checkpoint_every,
            resume=not args.no_resume,
            seed=args.seed,
            workers=args.workers,
            max_side=args.max_side,
            dtype=getattr(torch, args.dtype),
            device=args.device,
            log=log,
            log_every=args.log_every,
        )
        if rank == 0:
            save_fast_style(
                net,
                out,
                history=history,
                dtype=getattr(torch, args.dtype),
                info={
                    "images": str(args.images or "offline photos"),
                    "styles": list(styles),
                    "processes": int(os.environ.get("WORLD_SIZE", "1")),
                    "batch_size": args.batch_size,
                    "crop_size": args.crop_size,
                },
            )
            print(f"wrote {out} ({history.steps} steps, {history.seconds:.0f} s)", file=log, flush=True)
    finally:
        if log is not None:
            log.close()
        if dist.is_initialized():
            dist.destroy_process_group()
    return 0


def _train_or_explain(*args, **kwargs):
    """:func:`train_on_folder`; bad input ends the program with its message (no traceback)."""
    try:
        return train_on_folder(*args, **kwargs)
    except (ValueError, FileNotFoundError, KeyError) as exc:
        raise SystemExit(f"error: {exc}") from exc


class _Tee:
    """Lines to stdout and to a log file."""

    def __init__(self, path: Path):
        self.file = open(path, "a")  # noqa: SIM115 - closed by close()

    def write(self, text):
        sys.stdout.write(text)
        self.file.write(text)

    def flush(self):
        sys.stdout.flush()
        self.file.flush()

    def close(self):
        self.file.close()


if __name__ == "__main__":
    sys.exit(main())
