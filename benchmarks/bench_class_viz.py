"""Which class-visualization recipe gives natural images that a second network recognises.

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/bench_class_viz.py
        [--recipes clear smooth_color natural fourier cs231n] [--classes 10 | --classes goldfish zebra ...]
        [--threads 2] [--size 224] [--save DIR]

For each recipe of ``cs_utils.class_viz.RECIPES`` (at its own default steps, 224 px, seed 0,
EfficientNet-Lite0) and each of ten classes (or the first N of them, or the classes named), prints

* Lite2 rank: the class's rank under EfficientNet-Lite2 (a second network, at its 260 px) on the
  whole image (1 = top-1; the acceptance goal is top-5 for at least 9 of 10 classes);
* Lite0 shifted, Lite2 shifted: the class's rank under Lite0 and Lite2 on the image's lower-right
  80% window, enlarged (``cs_utils.image_stats.shifted_crop``): still the class when moved and
  rescaled?
* clipped: share of pixels with a channel within 1/255 of 0 or 1 (goal: mean <= 3%);
* HF: share of the grey image's spectral energy above half the Nyquist frequency (goal: at most
  twice the offline photos' median, printed first);
* milky: ``cs_utils.image_stats.milky_share``, the share of pale pixels in fine colored speckle
  (goal: at most the offline photos' largest, 0.093 at 224 px);
* neon: ``cs_utils.image_stats.vivid_chroma``, the chroma of the most colorful 5% of the pixels
  (goal: at most the offline photos' largest, 0.71 at 224 px);
* brightness, contrast, colorfulness and saturation (``tone_statistics``; the offline photos'
  5th-95th percentiles: 0.27-0.60, 0.11-0.30, 0.06-0.34, 0.16-0.77);
* seconds per class (goal <= 30 s on 2 cores; the median over the classes). On a machine whose
  cores are busy with other work, ``--threads 1`` is faster than 2 (2 threads then wait for each
  other: 6x slower per step in one measurement).

and a summary line per recipe. ``--save DIR`` writes each recipe's images as one PNG grid.
Other processes on the same cores lengthen every time here.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

import cs_utils as cs
from cs_utils import image_stats
from cs_utils.class_viz import RECIPE_STEPS, RECIPES
from cs_utils.image import save_image

#: Ten classes with distinctive shapes, colours or textures (none of notebook 03's five).
CLASSES = ("strawberry", "lemon", "daisy", "jellyfish", "peacock", "ladybug", "volcano", "zebra", "broccoli",
           "goldfinch")


def run_recipe(model, recipe: str, classes, size: int):
    images, seconds = [], []
    for name in classes:
        start = time.perf_counter()
        image, _ = cs.class_visualization(model, cs.imagenet_index(name), recipe=recipe, image_size=size,
                                          generator=torch.Generator().manual_seed(0), progress=False)
        seconds.append(time.perf_counter() - start)
        images.append(image.cpu())
    return torch.cat(images), seconds


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--recipes", nargs="+", choices=list(RECIPES),
                        default=["clear", "smooth_color", "natural", "fourier", "cs231n"])
    parser.add_argument("--classes", nargs="+", default=[str(len(CLASSES))],
                        help="how many of the ten classes, or ImageNet class names")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--save", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if len(args.classes) == 1 and args.classes[0].isdigit():
        classes = CLASSES[:int(args.classes[0])]
    else:
        classes = tuple(name.replace("_", " ") for name in args.classes)
    targets = [cs.imagenet_index(name) for name in classes]
    lite0 = cs.load_model("efficientnet_lite0")
    lite2 = cs.load_model("efficientnet_lite2")
    photos = image_stats.photo_statistics(args.size)
    milky_max, neon_max = photos["milky_share_max"], photos["vivid_chroma_max"]
    print(f"offline photos at {args.size} px: median high-frequency share "
          f"{photos['high_frequency_share']:.1%}, "
          f"mean clipped share {photos['clipped_share']:.1%}, largest milky share {milky_max:.3f}, "
          f"largest vivid chroma {neon_max:.2f}; {torch.get_num_threads()} threads")
    summary, grids = [], []
    for recipe in args.recipes:
        images, seconds = run_recipe(lite0, recipe, classes, args.size)
        lite2_ranks = image_stats.class_ranks(lite2, images, targets)
        shifted_ranks = image_stats.class_ranks(lite0, image_stats.shifted_crop(images), targets)
        shifted2_ranks = image_stats.class_ranks(lite2, image_stats.shifted_crop(images), targets)
        clipped = image_stats.clipped_share(images)
        high = image_stats.high_frequency_share(images)
        milky, neon = image_stats.milky_share(images), image_stats.vivid_chroma(images)
        tone = image_stats.tone_statistics(images)
        print(f"\n{recipe} ({RECIPE_STEPS[recipe]} steps)")
        print(f"{'class':12s} {'Lite2 rank':>10s} {'Lite0 shifted':>13s} {'Lite2 shifted':>13s} "
              f"{'clipped':>8s} {'HF':>6s} "
              f"{'milky':>6s} {'neon':>5s} {'bright':>6s} {'contr':>6s} {'color':>6s} {'sat':>6s} {'s':>6s}")
        for i, name in enumerate(classes):
            r2, r0, s2 = int(lite2_ranks[i]) + 1, int(shifted_ranks[i]) + 1, int(shifted2_ranks[i]) + 1
            tones = " ".join(f"{tone[key][i]:6.2f}" for key in ("brightness", "contrast", "colorfulness",
                                                               "saturation"))
            print(f"{name[:12]:12s} {r2:10d} {r0:13d} {s2:13d} {clipped[i]:8.1%} {high[i]:6.1%} "
                  f"{milky[i]:6.3f} "
                  f"{neon[i]:5.2f} {tones} {seconds[i]:6.1f}")
        summary.append((recipe, int((lite2_ranks < 5).sum()), int((shifted_ranks < 5).sum()),
                        float(clipped.mean()), float(high.mean()), int((milky > milky_max).sum()),
                        int((neon > neon_max).sum()), statistics.median(seconds)))
        if args.save is not None:
            args.save.mkdir(parents=True, exist_ok=True)
            per_row = 5 if len(images) % 5 == 0 else len(images)
            rows = [torch.cat(list(images[i:i + per_row]), dim=2) for i in range(0, len(images), per_row)]
            save_image(torch.cat(rows, dim=1)[None], args.save / f"class_viz_{recipe}.png")
            grids.append(torch.cat(list(images), dim=2))
    if args.save is not None and len(grids) > 1:   # one row per recipe, in the order given
        save_image(torch.cat(grids, dim=1)[None], args.save / "class_viz_recipes.png")
    n = len(classes)
    print(f"\n{'recipe':10s} {'Lite2 top-5':>11s} {'Lite0 shifted top-5':>19s} {'clipped':>8s} {'HF':>6s} "
          f"{'HF / photos':>11s} {'milky':>6s} {'neon':>5s} {'s/class':>8s}")
    # milky, neon: how many images score beyond every offline photo
    for recipe, top5, shifted, clipped, high, milky, neon, seconds in summary:
        print(f"{recipe:10s} {top5:>8d}/{n} {shifted:>16d}/{n} {clipped:8.1%} {high:6.1%} "
              f"{high / photos['high_frequency_share']:11.2f} {milky:>3d}/{n} {neon:>2d}/{n} {seconds:8.1f}")


if __name__ == "__main__":
    main()
