"""Speed of saliency_map, guided_backprop and occlusion_map against their physical limits.

Run: ``OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_saliency.py [--threads 1] [--runs 7]``

For EfficientNet-Lite0 on 224 x 224 photos it prints each technique's median
time over several runs and its ratio to the least work the technique needs:

* ``saliency_map`` and ``guided_backprop``: one plain forward + backward to the
  pixels of the same batch (goal <= 1.1x);
* ``occlusion_map``: one plain batched forward pass (no graph) over all the
  occluded copies, built beforehand (goal <= 1.15x).

Each run times the reference and the technique back to back, so slow phases of
a shared machine hit both; the medians of the per-run ratios are reported.
Timings on a machine that other processes are using are noisy: read the ratios,
and compare medians only between runs with the same thread count.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

import cs_utils


def plain_forward_backward(model, x, target):
    xg = x.clone().requires_grad_(True)
    score = model(xg).gather(1, target[:, None]).sum()
    return torch.autograd.grad(score, [xg])[0]


def occluded_copies(x, window, stride):
    """Every occluded copy of every image, built outside the timed region."""
    windows = cs_utils.occlusion_windows(x.shape[2], x.shape[3], window, stride)
    copies = x.repeat_interleave(len(windows), dim=0)
    colours = x.mean(dim=(2, 3))
    for k in range(copies.shape[0]):
        top, left = windows[k % len(windows)]
        copies[k, :, top:top + window, left:left + window] = colours[k // len(windows), :, None, None]
    return copies


def plain_forward(model, copies, batch_size):
    with torch.inference_mode():
        for start in range(0, copies.shape[0], batch_size):
            model(copies[start:start + batch_size])


def timed(fn):
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def compare(name, reference, technique, runs, goal):
    reference(), technique()   # warm-up
    pairs = [(timed(reference), timed(technique)) for _ in range(runs)]
    ref = statistics.median(r for r, _ in pairs)
    tech = statistics.median(t for _, t in pairs)
    ratio = statistics.median(t / r for r, t in pairs)        # per run: both timed under the same load
    verdict = "ok" if ratio <= goal else "SLOW"
    print(f"| {name:<34} | {tech * 1000:9.1f} | {ref * 1000:9.1f} | {tech / ref:5.2f}x | {ratio:5.2f}x "
          f"| <= {goal:.2f}x {verdict:4} |", flush=True)
    return ratio


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--runs", type=int, default=7, help="timed runs per technique (default 7)")
    parser.add_argument("--batch", type=int, default=4, help="photos per batch (default 4)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    model = cs_utils.load_model("efficientnet_lite0")
    photos = [s for s in cs_utils.sample_images("photo") if s.name.startswith("imagenet")][:args.batch]
    x = torch.cat([cs_utils.load_image(s.path, 224) for s in photos])
    with torch.no_grad():
        target = model(x).argmax(dim=1)
    window, stride, batch_size = 56, 28, 32
    n_windows = len(cs_utils.occlusion_windows(224, 224, window, stride))
    copies = occluded_copies(x, window, stride)

    print(f"EfficientNet-Lite0, {x.shape[0]} photos of 224 x 224, {torch.get_num_threads()} torch thread(s), "
          f"median of {args.runs} runs")
    print(f"occlusion: window {window}, stride {stride}: {n_windows} copies per photo, "
          f"{copies.shape[0]} in all, batches of {batch_size}\n")
    print("ratio of medians, and median of the per-run ratios (the verdict uses the latter)\n")
    print(f"| {'technique (reference)':<34} | {'time ms':>9} | {'ref ms':>9} "
          "| ratio  | median | goal           |")
    print(f"|{'-' * 36}|{'-' * 11}|{'-' * 11}|--------|--------|----------------|")
    fwd_bwd = lambda: plain_forward_backward(model, x, target)  # noqa: E731
    compare("saliency_map (fwd+bwd)", fwd_bwd, lambda: cs_utils.saliency_map(model, x, target),
            args.runs, 1.1)
    compare("guided_backprop (fwd+bwd)", fwd_bwd, lambda: cs_utils.guided_backprop(model, x, target),
            args.runs, 1.1)
    compare("occlusion_map (fwd of all copies)", lambda: plain_forward(model, copies, batch_size),
            lambda: cs_utils.occlusion_map(model, x, target, window=window, stride=stride,
                                           batch_size=batch_size, progress=False),
            max(3, args.runs // 2), 1.15)


if __name__ == "__main__":
    main()
