"""DeepDream, feature inversion and the adversarial attacks on the folded network against the
network as loaded (EfficientNet-Lite0, 224 px, CPU).

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/bench_folded_techniques.py [--repeats 3] [--only pgd ...]

Each technique runs ``--repeats`` times on the model as loaded ("before": the engine's
:func:`cs_utils.engine.folding.gradient_network` replaced by the model itself, the code path from
before the techniques were folded) and on the folded copy ("after"), interleaved (before, after,
before, after, ...) so that load from other processes hits both alike. "After" makes its copy
afresh in every run (the cache is emptied first), so its time includes the copy; FGSM, a single
gradient, is also timed with the copy reused, as a second call in a notebook finds it. Prints the
median seconds of each, their ratio, and the largest and the mean absolute pixel difference of
the two results (same seed, same inputs).

* ``deepdream``: chelsea, ``blocks.10``, notebook 04's full settings (3 octaves x 20 steps,
  octave scale 1.4, step 0.01, jitter 32);
* ``invert``: coffee, ``blocks.10``, notebook 04's recipe for the deep layers (Adam, lr 0.02,
  jitter 4, TV 10), 40 steps; ``invert_stem``: ``stem`` with L-BFGS and TV 0.1, 40 evaluations;
* ``pgd``: the first 4 offline ImageNet photos, true labels, 8 steps, epsilon 8/255;
* ``fooling``: the first 2 of them, random targets (seed 0), at most 100 steps;
* ``fgsm``: the 8 photos, epsilon 8/255;
* ``class_viz``: goldfish (class 1) with the default recipe, 256 steps at 224 px, seed 0 (no input
  photo to nudge: its floor is not measured).

"floor": the same difference between two runs on the model as loaded, one of them with every
input photo nudged by Gaussian noise of std 1e-6 (a 4000th of one 8-bit grey level): how far
float rounding alone moves the technique's result. DeepDream, the deep inversion and PGD amplify
any such difference (and a ReLU6 gate flipped by rounding changes a gradient outright), so their
results differ from run to run of the unchanged network as much as between the two networks.
"""

from __future__ import annotations

import argparse
import statistics
import time
from unittest import mock

import torch

import cs_utils as cs
from cs_utils import adversarial, class_viz, dream
from cs_utils.engine import folding


def photos(count: int):
    samples = [s for s in cs.sample_images("photo") if s.name.startswith("imagenet_")][:count]
    return torch.cat([cs.load_image(s.path, 224) for s in samples]), torch.tensor([s.label for s in samples])


def techniques(model, nudge: float = 0.0):
    """The runs; ``nudge``: Gaussian noise of that std added to every input photo (clamped)."""
    def nudged(x):
        noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(5))
        return (x + nudge * noise).clamp(0, 1) if nudge else x

    chelsea, coffee = nudged(cs.load_image("chelsea", 224)), nudged(cs.load_image("coffee", 224))
    x8, labels8 = photos(8)
    x8 = nudged(x8)
    targets = torch.randint(0, 1000, (2,), generator=torch.Generator().manual_seed(0))
    return {
        "deepdream": lambda: cs.deepdream(model, chelsea, "blocks.10", octaves=3, octave_scale=1.4,
                                          steps_per_octave=20, step_size=0.01, jitter=32, progress=False,
                                          generator=torch.Generator().manual_seed(0))[0],
        "invert": lambda: cs.invert_features(model, coffee, "blocks.10", steps=40, optimizer="adam", lr=0.02,
                                             jitter=4, tv_weight=10.0, progress=False,
                                             generator=torch.Generator().manual_seed(0))[0],
        "invert_stem": lambda: cs.invert_features(model, coffee, "stem", steps=40, optimizer="lbfgs",
                                                  tv_weight=0.1, progress=False,
                                                  generator=torch.Generator().manual_seed(0))[0],
        "pgd": lambda: cs.pgd(model, x8[:4], labels8[:4], epsilon=8 / 255, steps=8,
                              generator=torch.Generator().manual_seed(0))[0],
        "fooling": lambda: cs.fooling_image(model, x8[:2], targets[:2], max_steps=100, step_size=0.25,
                                            confidence=0.9, epsilon=8 / 255)[0],
        "fgsm": lambda: cs.fgsm(model, x8, labels8, epsilon=8 / 255),
        "class_viz": lambda: cs.class_visualization(model, 1, progress=False,
                                                    generator=torch.Generator().manual_seed(0))[0],
    }


def as_loaded():
    """The techniques' modules with the folding switched off: they run on the model itself."""
    def itself(model, *, keep=()):
        return model

    return (mock.patch.object(dream, "gradient_network", itself),
            mock.patch.object(adversarial, "gradient_network", itself),
            mock.patch.object(class_viz, "gradient_network", itself))


def timed(fn, *, before: bool, reuse: bool = False):
    if not reuse:
        folding._NETWORKS.clear()
    patches = as_loaded() if before else ()
    for p in patches:
        p.start()
    try:
        start = time.perf_counter()
        out = fn()
        return time.perf_counter() - start, out
    finally:
        for p in patches:
            p.stop()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--only", nargs="*", default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = cs.load_model("efficientnet_lite0")
    runs, nudged_runs = techniques(model), techniques(model, nudge=1e-6)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.repeats} interleaved rounds")
    print(f"{'technique':12s} {'before s':>9s} {'after s':>9s} {'speedup':>8s} {'max |diff|':>11s} "
          f"{'mean |diff|':>12s} {'floor max':>10s} {'floor mean':>10s}   times before / after")
    for name, fn in runs.items():
        if args.only and name not in args.only:
            continue
        variants = {"before": dict(before=True), "after": dict(before=False)}
        if name == "fgsm":
            variants["reused"] = dict(before=False, reuse=True)
            fn()   # a first call makes the copy that "reused" finds
        times = {v: [] for v in variants}
        images = {}
        for _ in range(args.repeats):
            for variant, kw in variants.items():
                seconds, images[variant] = timed(fn, **kw)
                times[variant].append(seconds)
        diff = (images["after"] - images["before"]).abs()
        if name == "class_viz":
            floor_columns = f"{'-':>10s} {'-':>10s}"
        else:
            floor = (timed(nudged_runs[name], before=True)[1] - images["before"]).abs()
            floor_columns = f"{floor.max().item():10.2e} {floor.mean().item():10.2e}"
        med = {v: statistics.median(t) for v, t in times.items()}
        print(f"{name:12s} {med['before']:9.2f} {med['after']:9.2f} {med['before'] / med['after']:7.2f}x "
              f"{diff.max().item():11.2e} {diff.mean().item():12.2e} {floor_columns}   "
              + " / ".join(" ".join(f"{s:.2f}" for s in times[v]) for v in variants))
        if "reused" in med:
            print(f"{'  reused':12s} {'':9s} {med['reused']:9.2f} {med['before'] / med['reused']:7.2f}x")


if __name__ == "__main__":
    main()
