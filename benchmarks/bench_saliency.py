"""Speed of saliency_map, guided_backprop and occlusion_map against their physical limits, and Captum's.

Run: ``.venv/bin/python benchmarks/bench_saliency.py [--threads 1 2] [--runs 3] [--window 16 --stride 8]``

For EfficientNet-Lite0 on 224 x 224 photos it prints one table: each technique's
median time (at its fastest thread count), the limit, their ratio, and the time
relative to Captum's peer at its best setting. The limit is the least work the
technique needs, at the fastest of batch sizes 1, 2, 4, ... 64 and thread counts
``--threads`` (not at our own batch size), and for the gradients of the network as loaded and
with its batch norm folded into the convolutions (the same function; ``limit_networks`` of
``bench_attribution.py``):

* ``saliency_map`` and ``guided_backprop`` on ``--batch`` photos: plain forward +
  backward to the pixels of the same photos (goal <= 1.1x);
* ``occlusion_map`` on one photo: plain forward passes (no graph) over all its
  occluded copies, built beforehand. The default, incremental path (the same loop on
  :class:`cs_utils.engine.incremental_occlusion.IncrementalNetwork`, which recomputes only each
  patch's footprint per layer) does less than that work: its goal is at most half the time of Captum's
  ``Occlusion`` at its best ``perturbations_per_eval`` (2x faster). The plain path
  (``incremental=False``) does all of it (goal <= 1.1x), with ``batch_size=None``
  (the size measured by :func:`cs_utils.engine.batch_size.measured_batch_size`).

The sweep of the plain passes and the back-to-back timing (each technique right
after the limit's plain passes at the same thread count, so slow phases of a shared
machine hit both) are those of ``bench_attribution.py``. The fastest batch size
for occlusion is found on the first ``--sweep-copies`` copies (the per-copy cost
does not depend on how many there are); the limit itself is timed on all copies.
When captum is importable (the ``bench`` extra), ``Saliency``, ``GuidedBackprop``
and ``Occlusion`` (softmax probability, the same windows and mean-colour fill) run on
the same inputs; ``Occlusion``'s ``perturbations_per_eval`` is the fastest of 1, 4, 16
and 64 on a coarser grid of the same patches (``--peer-stride``, at most the window, which
Captum requires: the time per copy does not depend on how many there are).
``--only occlusion`` skips the gradient techniques.
"""

from __future__ import annotations

import argparse
import functools
import statistics
import time
import warnings

import torch
from bench_attribution import (
    captum_attr,
    limit_networks,
    measure,
    plain_passes,
    sweep,
    sweep_networks,
    threads,
    timed,
)

import cs_utils
from cs_utils import explainers
from cs_utils.engine import incremental_occlusion

ROW = "| {:<56} | {:>8} | {:>8} | {:>6} | {:>6} | {:>8} | {:<13} |"


def occluded_copies(x, window, stride):
    """Every occluded copy of every image (mean-colour fill), built outside the timed region."""
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


def row(name, result, goal=None, peer=None, peer_goal=None):
    count, tech, limit, paired = result
    verdict = "" if goal is None else f"<= {goal:.2f}x {'ok' if paired <= goal else 'SLOW'}"
    vs_peer = "" if peer is None else f"{tech / peer[1]:.2f}x"
    if peer_goal is not None:
        verdict = f"peer <= {peer_goal:.2f}x" + ("" if peer is None else
                                                  f" {'ok' if tech / peer[1] <= peer_goal else 'SLOW'}")
    print(ROW.format(f"{name} [{count} thr]", f"{tech * 1000:.0f}", f"{limit * 1000:.0f}",
                     f"{tech / limit:.2f}x", f"{paired:.2f}x", vs_peer, verdict), flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="thread counts (default 1 2)")
    parser.add_argument("--runs", type=int, default=3, help="timed runs per comparison (default 3)")
    parser.add_argument("--batch", type=int, default=4, help="photos for saliency/guided (default 4)")
    parser.add_argument("--window", type=int, default=16, help="occlusion window (default 16)")
    parser.add_argument("--stride", type=int, default=8, help="occlusion stride (default 8)")
    parser.add_argument("--sweep-copies", type=int, default=128,
                        help="occluded copies for the batch-size sweep (default 128)")
    parser.add_argument("--peer-stride", type=int, default=16,
                        help="stride of the sweep over Captum's perturbations_per_eval, at most the window "
                             "(default 16)")
    parser.add_argument("--only", choices=["all", "occlusion"], default="all",
                        help="'occlusion' skips saliency_map and guided_backprop (default all)")
    args = parser.parse_args()
    torch.manual_seed(0)
    warnings.filterwarnings("ignore", category=UserWarning, module="captum")  # requires_grad, ReLU hooks

    model = cs_utils.load_model("efficientnet_lite0")
    photos = [s for s in cs_utils.sample_images("photo") if s.name.startswith("imagenet")][:args.batch]
    x = torch.cat([cs_utils.load_image(s.path, 224) for s in photos])
    with torch.no_grad():
        target = model(x).argmax(dim=1)
    x1, t1 = x[:1], target[:1]
    copies = occluded_copies(x1, args.window, args.stride)
    sweep_runs = 2
    print(f"EfficientNet-Lite0, 224 x 224 photos, threads {args.threads}, median of {args.runs} runs; "
          f"captum {'not installed' if captum_attr is None else 'installed'}")
    print(f"occlusion: 1 photo, window {args.window}, stride {args.stride}: {copies.shape[0]} copies\n")

    # the limits: plain work at the fastest batch size per thread count
    gradients = args.only == "all"
    if gradients:
        sizes = [b for b in (1, 2, 4, 8, 16, 32, 64) if b <= x.shape[0]]
        nets = limit_networks(model)
        _, fastest = sweep_networks(lambda net, b: plain_passes(net, x, target, b), nets, sizes, args.threads,
                                    sweep_runs)
        grad_limit = {c: functools.partial(plain_passes, nets[name], x, target, b)
                      for c, (name, b) in fastest.items()}
        print("fwd+bwd of the photos, fastest network and batch size: "
              + ", ".join(f"{c} thr: {name}, {b}" for c, (name, b) in fastest.items()))
    sample = copies[:args.sweep_copies]
    sizes = [b for b in (1, 2, 4, 8, 16, 32, 64) if b <= sample.shape[0]]
    seconds, fastest = sweep(lambda b: plain_forward(model, sample, b), sizes, args.threads, sweep_runs)
    for count in args.threads:
        print(f"fwd of {sample.shape[0]} occluded copies on {count} thr, ms per copy: "
              + ", ".join(f"b={b}: {seconds[count][b] / sample.shape[0] * 1000:.1f}" for b in sizes),
              flush=True)
    occl_limit = {c: functools.partial(plain_forward, model, copies, b) for c, b in fastest.items()}

    for count in args.threads:
        with threads(count):
            start = time.perf_counter()
            chosen = explainers.forward_batch_size(model, x1, copies.shape[0])
            print(f"occlusion_map(batch_size=None) on {count} thr: batch size {chosen}, measured in "
                  f"{time.perf_counter() - start:.2f} s (once per process)")
    print("\ntime: the technique at its fastest thread count; limit: the fastest plain work (batch sizes "
          "1..64, all thread counts);\nratio: time / limit; median: the median per-run ratio to the limit's "
          "plain work at the same thread count\n(the verdict uses it); vs peer: time / the captum peer's "
          "time\n")
    print(ROW.format("technique (limit)", "time ms", "limit ms", "ratio", "median", "vs peer", "goal"))
    print(f"|{'-' * 58}|{'-' * 10}|{'-' * 10}|{'-' * 8}|{'-' * 8}|{'-' * 10}|{'-' * 15}|")

    peers, occlusion_rows = {}, {}
    options = dict(window=args.window, stride=args.stride, progress=False)
    occlusion_rows["incremental"] = lambda: cs_utils.occlusion_map(model, x1, t1, **options)
    occlusion_rows["plain"] = lambda: cs_utils.occlusion_map(model, x1, t1, incremental=False, **options)
    # The same forward passes in the incremental network's layout (channels-last, batch norm folded into
    # the convolutions) with whole maps at every layer, through the same loop: plain work too, often
    # faster than torch's default layout, so it is a candidate for the limit.
    whole_maps = incremental_occlusion.IncrementalNetwork(model, x1, fraction=0.0)
    occlusion_rows["whole maps"] = lambda: cs_utils.occlusion_map(
        whole_maps, x1, t1, incremental=False, batch_size=incremental_occlusion.INCREMENTAL_BATCH_SIZE,
        **options)
    if captum_attr is not None:
        sal, gbp = captum_attr.Saliency(model), captum_attr.GuidedBackprop(model)
        occlusion = captum_attr.Occlusion(lambda images: model(images).softmax(dim=1))
        baseline = x1.mean(dim=(2, 3), keepdim=True).expand_as(x1).contiguous()
        window = (3, args.window, args.window)

        def captum_occlusion(stride, per_eval):
            return occlusion.attribute(x1, sliding_window_shapes=window, strides=(3, stride, stride),
                                       baselines=baseline, target=t1, perturbations_per_eval=per_eval)

        best_batch = captum_best_per_eval(captum_occlusion, args)
        if gradients:
            peers["saliency"] = measure(
                grad_limit, lambda: sal.attribute(x, target=target, abs=True).amax(dim=1), args.runs)
            peers["guided"] = measure(grad_limit, lambda: gbp.attribute(x, target=target), args.runs)
        occlusion_rows["captum"] = lambda: captum_occlusion(args.stride, best_batch)
    occlusion_rows = measure_together(occl_limit, occlusion_rows, args.runs,
                                      warm_up=["incremental", "whole maps"])
    peers["occlusion"] = occlusion_rows.get("captum")
    name = f"{x.shape[0]} photos (fwd+bwd)"
    if gradients:
        row(f"saliency_map, {name}", measure(grad_limit, lambda: cs_utils.saliency_map(model, x, target),
                                             args.runs), 1.1, peers.get("saliency"))
        if "saliency" in peers:
            row("  captum Saliency", peers["saliency"])
        guided = measure(grad_limit, lambda: cs_utils.guided_backprop(model, x, target), args.runs)
        row(f"guided_backprop, {name}", guided, 1.1, peers.get("guided"))
        if "guided" in peers:
            row("  captum GuidedBackprop", peers["guided"])
    row(f"occlusion_map, incremental ({copies.shape[0]} copies)", occlusion_rows["incremental"],
        peer=peers.get("occlusion"), peer_goal=0.5)
    row(f"occlusion_map incremental=False ({copies.shape[0]} fwd)", occlusion_rows["plain"], 1.1,
        peers.get("occlusion"))
    if peers.get("occlusion"):
        row(f"  captum Occlusion (perturbations_per_eval {best_batch})", peers["occlusion"])
    whole = occlusion_rows["whole maps"]
    row(f"  same {copies.shape[0]} fwd, channels-last, folded BN", whole)
    fastest_plain = min(whole[1], whole[2])
    print(f"\nfastest plain computation of the {copies.shape[0]} forward passes: "
          f"{fastest_plain * 1000:.0f} ms "
          f"({'channels-last, folded BN' if whole[1] < whole[2] else 'torch default layout'}); "
          f"incremental: {occlusion_rows['incremental'][1] / fastest_plain:.2f}x of it", flush=True)


def measure_together(references, techniques, runs, warm_up=()):
    """:func:`bench_attribution.measure` for several techniques sharing the limit's passes: at each
    thread count, in each of ``runs`` rounds, the reference runs once, then every technique, back to
    back. ``warm_up``: techniques run once untimed first (those with a first-call cost; many plain
    passes need none). Returns {name: (count, time, limit, paired)} as ``measure`` does."""
    per_count = {name: {} for name in techniques}
    for count, reference in references.items():
        with threads(count):
            for name in warm_up:
                techniques[name]()
            pairs = {name: [] for name in techniques}
            for _ in range(runs):
                plain = timed(reference)
                for name, technique in techniques.items():
                    pairs[name].append((plain, timed(technique)))
        for name, runs_of in pairs.items():
            per_count[name][count] = (statistics.median(t for _, t in runs_of),
                                      statistics.median(r for r, _ in runs_of),
                                      statistics.median(t / r for r, t in runs_of))
    results = {}
    for name, found in per_count.items():
        count = min(found, key=lambda c: found[c][0])
        results[name] = (count, found[count][0], min(ref for _, ref, _ in found.values()), found[count][2])
    return results


def captum_best_per_eval(captum_occlusion, args):
    """Captum's fastest ``perturbations_per_eval`` of 1, 4, 16, 64, timed once each on the patches at
    stride ``--peer-stride`` (fewer copies of the same kind) at the largest thread count."""
    per_copy, stride = {}, min(args.peer_stride, args.window)
    with threads(max(args.threads)):
        copies = len(cs_utils.occlusion_windows(224, 224, args.window, stride))
        captum_occlusion(stride, 4)                               # warm-up
        for per_eval in (1, 4, 16, 64):
            start = time.perf_counter()
            captum_occlusion(stride, per_eval)
            per_copy[per_eval] = (time.perf_counter() - start) / copies
    best = min(per_copy, key=per_copy.get)
    print(f"captum Occlusion on {copies} copies, ms per copy by perturbations_per_eval: "
          + ", ".join(f"{b}: {t * 1000:.1f}" for b, t in per_copy.items()) + f" -> {best}\n", flush=True)
    return best


if __name__ == "__main__":
    main()
