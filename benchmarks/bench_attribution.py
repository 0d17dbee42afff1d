"""Speed of grad_cam, integrated_gradients and smooth_grad against their physical limits, and Captum's.

Run: ``.venv/bin/python benchmarks/bench_attribution.py [--threads 1 2] [--runs 5] [--steps 32]``

For EfficientNet-Lite0 on 224 x 224 photos it prints each technique's median time over
several runs and its ratio to the least work the technique needs:

* ``grad_cam`` (batch of ``--batch`` photos): one plain forward + backward to the pixels of
  the same batch, at the fastest thread count and network (goal <= 1.1x; Grad-CAM's backward stops at the
  layer, so it can be faster);
* ``integrated_gradients`` with n = ``--steps`` steps on ``--images`` photos: the same number
  (images x n) of plain forward + backward passes over pre-built images, at the fastest of
  batch sizes 1, 2, 4, ... 64 and the thread counts in ``--threads`` (goal <= 1.1x);
* ``smooth_grad`` (saliency maps) with n = ``--steps`` samples: the same limit (goal <= 1.1x).

Every limit is taken over two networks, the model as loaded and the same function with its
batch norm folded into the convolutions (:func:`limit_networks`). First a sweep of the plain
passes over networks, batch sizes and thread counts (milliseconds per image) finds the fastest
network and batch size for each thread count; ``integrated_gradients`` at a few batch sizes
shows where its default (``cs_utils.explainers.DEFAULT_BATCH_SIZE``) comes from. Then at every
thread count each technique runs back to back with the fastest plain passes at that count, so
slow phases of a shared machine hit both; the table gives the technique's fastest median, the
limit (the fastest plain median over thread counts), their ratio, and the median per-run ratio at
the technique's fastest thread count (the verdict uses it). When captum is importable (the
``bench`` extra: ``pip install captum==0.9.0``), its ``LayerGradCam`` (+ interpolation),
``IntegratedGradients`` (``riemann_middle``, completeness delta) and ``NoiseTunnel(Saliency)``
run on the same inputs and batch sizes, and the agreement of the maps is printed.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import statistics
import time

import torch

import cs_utils
from cs_utils import attribution, explainers
from cs_utils.engine.folding import folded_copy, gradient_network

try:
    import captum.attr as captum_attr
except ImportError:       # the optional `bench` extra
    captum_attr = None


@contextlib.contextmanager
def threads(count):
    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def plain_passes(model, images, targets, batch_size):
    """Forward + backward to the pixels of every image, ``batch_size`` at a time."""
    for start in range(0, images.shape[0], batch_size):
        xb = images[start:start + batch_size].clone().requires_grad_(True)
        score = model(xb).gather(1, targets[start:start + batch_size, None]).sum()
        torch.autograd.grad(score, [xb])


def timed(fn):
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def median_time(fn, runs):
    fn()   # warm-up
    return statistics.median(timed(fn) for _ in range(runs))


ROW = "| {:<50} | {:>8} | {:>8} | {:>6} | {:>6} | {:<13} |"


def measure(references, technique, runs):
    """``references``: {thread count: the plain passes at that count's fastest batch size}.

    At each thread count the reference and the technique run back to back ``runs`` times.
    Returns ``(count, time, limit, paired)``: the technique's fastest thread count and median
    time there, the limit (the fastest reference median over thread counts) and the median
    per-run ratio at the technique's fastest count.
    """
    results = {}
    for count, reference in references.items():
        with threads(count):
            technique()    # warm-up
            pairs = [(timed(reference), timed(technique)) for _ in range(runs)]
        results[count] = (statistics.median(t for _, t in pairs), statistics.median(r for r, _ in pairs),
                          statistics.median(t / r for r, t in pairs))
    count = min(results, key=lambda c: results[c][0])
    tech, _, paired = results[count]
    limit = min(ref for _, ref, _ in results.values())
    return count, tech, limit, paired


def compare(name, references, technique, runs, goal=None):
    """Prints one table row of :func:`measure` (the verdict uses the median per-run ratio)."""
    count, tech, limit, paired = measure(references, technique, runs)
    verdict = "" if goal is None else f"<= {goal:.2f}x {'ok' if paired <= goal else 'SLOW'}"
    print(ROW.format(f"{name} [{count} thr]", f"{tech * 1000:.0f}", f"{limit * 1000:.0f}",
                     f"{tech / limit:.2f}x", f"{paired:.2f}x", verdict), flush=True)
    return paired


def sweep(work, sizes, thread_counts, runs):
    """{thread count: {batch size: median seconds of ``work(batch_size)``}} and
    {thread count: its fastest batch size}."""
    seconds, fastest = {}, {}
    for count in thread_counts:
        with threads(count):
            seconds[count] = {b: median_time(functools.partial(work, b), runs) for b in sizes}
        fastest[count] = min(seconds[count], key=seconds[count].get)
    return seconds, fastest


def limit_networks(model):
    """The networks the limit is taken over: the model as loaded, and with its batch norm folded into
    the convolutions in channels-last layout (:func:`cs_utils.engine.folding.folded_copy`: the same
    function; what the gradient techniques run on). On a 2-core CPU the folded forward+backward of
    Lite0 is about 2x faster at batch 4."""
    return {"as loaded": model, "folded": folded_copy(model)}


def sweep_networks(work, nets, sizes, thread_counts, runs):
    """:func:`sweep` of ``work(net, batch_size)`` for every network: ({net name: {thread count:
    {batch size: seconds}}}, {thread count: (the fastest net name, its fastest batch size)})."""
    tables = {name: sweep(functools.partial(work, net), sizes, thread_counts, runs)[0]
              for name, net in nets.items()}
    fastest = {}
    for count in thread_counts:
        fastest[count] = min(((name, b) for name in tables for b in sizes),
                             key=lambda nb: tables[nb[0]][count][nb[1]])
    return tables, fastest


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="thread counts (default 1 2)")
    parser.add_argument("--runs", type=int, default=5, help="timed runs per comparison (default 5)")
    parser.add_argument("--batch", type=int, default=4, help="photos in grad_cam's batch (default 4)")
    parser.add_argument("--images", type=int, default=2, help="photos for IG and SmoothGrad (default 2)")
    parser.add_argument("--steps", type=int, default=32, help="IG steps and SmoothGrad samples (default 32)")
    args = parser.parse_args()
    torch.manual_seed(0)

    model = cs_utils.load_model("efficientnet_lite0")
    photos = [s for s in cs_utils.sample_images("photo") if s.name.startswith("imagenet")]
    x = torch.cat([cs_utils.load_image(s.path, 224) for s in photos[:max(args.batch, args.images)]])
    with torch.no_grad():
        target = model(x).argmax(dim=1)
    xb, tb = x[:args.batch], target[:args.batch]
    xi, ti = x[:args.images], target[:args.images]
    n = args.steps
    copies, copy_targets = xi.repeat_interleave(n, dim=0), ti.repeat_interleave(n)
    sweep_runs = max(3, args.runs // 2)

    print(f"EfficientNet-Lite0, 224 x 224 photos, threads {args.threads}, median of {args.runs} runs; "
          f"captum {'not installed' if captum_attr is None else 'installed'}\n")
    nets = limit_networks(model)
    print(f"plain forward + backward to the pixels of {copies.shape[0]} images "
          f"({args.images} photos x {n}), ms per image, median of {sweep_runs} runs:\n")
    sizes = [b for b in (1, 2, 4, 8, 16, 32, 64) if b <= copies.shape[0]]
    tables, fastest = sweep_networks(lambda net, b: plain_passes(net, copies, copy_targets, b), nets, sizes,
                                     args.threads, sweep_runs)
    print("| network   | threads | " + " | ".join(f"b={b:<4}" for b in sizes) + " |")
    print("|-----------|---------|" + "|".join("--------" for _ in sizes) + "|")
    for name, seconds in tables.items():
        for count in args.threads:
            per_image = [f"{seconds[count][b] / copies.shape[0] * 1000:6.1f}" for b in sizes]
            print(f"| {name:<9} | {count:>7} | " + " | ".join(per_image) + " |", flush=True)
    print("\nfastest network and batch size per thread count: "
          + ", ".join(f"{c} thread(s): {name}, {b}" for c, (name, b) in fastest.items()) + "\n")
    limit = {c: functools.partial(plain_passes, nets[name], copies, copy_targets, b)
             for c, (name, b) in fastest.items()}
    _, batch_fastest = sweep_networks(lambda net, b: plain_passes(net, xb, tb, b), nets, [xb.shape[0]],
                                      args.threads, sweep_runs)
    batch = {c: functools.partial(plain_passes, nets[name], xb, tb, b)
             for c, (name, b) in batch_fastest.items()}

    for count in args.threads:
        timings = []
        with threads(count):
            for b in (1, 2, 4, 8, 16):
                run = functools.partial(attribution.integrated_gradients, model, xi, ti, steps=n,
                                        batch_size=b)
                timings.append(f"b={b}: {median_time(run, sweep_runs) * 1000:.0f}")
        print(f"integrated_gradients ({n} steps x {args.images} photos) on {count} thread(s), ms by batch "
              f"size: {', '.join(timings)}", flush=True)
    for count in args.threads:
        with threads(count):
            chosen = explainers.gradient_batch_size(None, gradient_network(model), xi, xi.shape[0] * n)
        print(f"default batch size on {count} thread(s), measured once per process: {chosen}")
    print()

    print("time: the technique at its fastest thread count; limit: the fastest plain passes; ratio: time / "
          "limit;\nmedian: the median per-run ratio to the plain passes at the same thread count "
          "(the verdict uses it)\n")
    print(ROW.format("technique (limit)", "time ms", "limit ms", "ratio", "median", "goal"))
    print(f"|{'-' * 52}|{'-' * 10}|{'-' * 10}|{'-' * 8}|{'-' * 8}|{'-' * 15}|")
    compare(f"grad_cam, {args.batch} photos (fwd+bwd of the batch)", batch,
            lambda: cs_utils.grad_cam(model, xb, tb), args.runs, 1.1)
    if captum_attr is not None:
        layer_gc = captum_attr.LayerGradCam(model, model.head)

        def captum_grad_cam():
            cam = layer_gc.attribute(xb, target=tb, relu_attributions=True)
            cam = captum_attr.LayerAttribution.interpolate(cam, (224, 224), interpolate_mode="bilinear")
            return cam[:, 0]

        compare("  captum LayerGradCam + interpolate", batch, captum_grad_cam, args.runs)
    compare(f"integrated_gradients, {n} steps ({args.images * n} fwd+bwd)", limit,
            lambda: cs_utils.integrated_gradients(model, xi, ti, steps=n), args.runs, 1.1)
    if captum_attr is not None:
        ig = captum_attr.IntegratedGradients(model)

        def captum_ig():
            return ig.attribute(xi, target=ti, n_steps=n, method="riemann_middle",
                                return_convergence_delta=True,
                                internal_batch_size=explainers.DEFAULT_BATCH_SIZE)

        compare(f"  captum IntegratedGradients (batch {explainers.DEFAULT_BATCH_SIZE})", limit, captum_ig,
                args.runs)
    compare(f"smooth_grad, {n} samples ({args.images * n} fwd+bwd)", limit,
            lambda: cs_utils.smooth_grad(model, xi, ti, samples=n), args.runs, 1.1)
    if captum_attr is not None:
        tunnel = captum_attr.NoiseTunnel(captum_attr.Saliency(model))

        def captum_smooth_grad():   # captum does not clamp the noisy copies to [0, 1]
            model.input_scaling.check_range = False
            try:
                return tunnel.attribute(xi, target=ti, nt_type="smoothgrad", nt_samples=n, stdevs=0.15,
                                        nt_samples_batch_size=explainers.DEFAULT_BATCH_SIZE)
            finally:
                model.input_scaling.check_range = True

        compare(f"  captum NoiseTunnel(Saliency) (batch {explainers.DEFAULT_BATCH_SIZE})", limit,
                captum_smooth_grad, args.runs)

        print("\nagreement with captum (max |difference| / max |value|):")
        ours = cs_utils.grad_cam(model, xb, tb)
        print(f"  grad_cam:             {(ours - captum_grad_cam()).abs().max() / ours.abs().max():.1e}")
        ours = cs_utils.integrated_gradients(model, xi, ti, steps=n)
        theirs, delta = captum_ig()
        relative = delta.abs() / (theirs.sum(dim=(1, 2, 3)) - delta).abs()   # delta = sum - (S(x) - S(b))
        print(f"  integrated_gradients: {(ours.maps - theirs).abs().max() / ours.maps.abs().max():.1e}; "
              f"completeness error {[round(v, 4) for v in ours.completeness_error.tolist()]}, "
              f"captum's {[round(v, 4) for v in relative.tolist()]}")


if __name__ == "__main__":
    main()
