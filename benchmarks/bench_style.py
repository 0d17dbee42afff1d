"""Speed of optimisation-based style transfer against one pass of the feature network, and
against the feed-forward network of notebook 06.

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/bench_style.py [--threads 2] [--repeats 5]

Prints median times (of ``--repeats`` runs) on CPU:

* the limit: the least time of one forward+backward (to the input) of EfficientNet-Lite0
  truncated after blocks.10, over the network as loaded and with its batch norm folded into the
  convolutions in channels-last layout (:func:`cs_utils.engine.folding.folded_copy`, what style
  transfer runs on), at the canvas the evaluation processes: 256 px with its margin of
  ``cs_utils.style.STYLE_MARGIN`` px each side, mirrored to the next 16k + 1 px (273 px), and one
  px less; the limit at 256 px is printed too, its ratio being the margin's cost;
* one style-transfer evaluation at 256 px (L-BFGS, the default layers): the median time
  between consecutive evaluations of a 60-evaluation run (the one-time setup excluded), and
  its ratio to the limit, measured back to back in each of ``--repeats`` rounds (goal: median
  ratio <= 1.2x); also the mean over evaluations 20-60, ``(t(60) - t(20)) / 40``;
* time to a converged result at 256 px: evaluations until the loss is within 1 % of its value
  after 400 evaluations, times the time per evaluation;
* ``cs_utils.stylize`` with the committed single-style network at 512 x 512 (goal <= 0.5 s),
  and the ratio of optimisation-based to feed-forward time at 512 x 512 (no goal: it falls as the
  optimisation gets faster; it says how much the feed-forward network saves).

Run it on an otherwise idle machine: with other processes on the same cores every number
here grows, by 2x or much more.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

import cs_utils as cs
from cs_utils.engine.folding import folded_copy
from cs_utils.models import CONTENT_LAYER, STYLE_LAYERS
from cs_utils.style import STYLE_MARGIN


def median_seconds(fn, repeats: int, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def forward_backward(model, size: int, repeats: int) -> float:
    """One forward pass stopped after the deepest style/content layer, and the gradient to the input."""
    x = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(0)).requires_grad_(True)
    names = list(dict.fromkeys(STYLE_LAYERS + (CONTENT_LAYER,)))

    def run():
        feats = cs.extract_features(model, x, names)
        loss = sum(f.pow(2).mean() for f in feats.values())
        torch.autograd.grad(loss, [x])

    return median_seconds(run, repeats)


def canvas_side(size: int) -> int:
    """The side of the image one evaluation of a ``size``-px style transfer feeds the network: the
    margin on both sides, then mirrored up to 16k + 1 (:func:`cs_utils.models.reflect_pad`)."""
    side = size + 2 * STYLE_MARGIN
    return side + (1 - side) % 16


def limit(networks: dict, size: int, repeats: int) -> tuple[float, str]:
    """The least forward+backward time over ``networks`` at the canvas side of a ``size``-px
    transfer and one px less, and which."""
    side = canvas_side(size)
    times = {f"{name}, {px} px": forward_backward(net, px, repeats)
             for name, net in networks.items() for px in (side - 1, side)}
    best = min(times, key=times.get)
    return times[best], best


def per_evaluation(model, content, style, steps: int = 60, skip: int = 5) -> float:
    """The median time between consecutive evaluations of ``cs.style_transfer`` (L-BFGS): what one
    more evaluation costs, the one-time setup (the style's Gram matrices, the content features, the
    folded copy) excluded."""
    stamps = []
    cs.style_transfer(model, content, style, steps=steps, progress=False,
                      callback=lambda step, image, value: stamps.append(time.perf_counter()))
    return statistics.median(b - a for a, b in zip(stamps[skip:], stamps[skip + 1:]))


def marginal_per_evaluation(model, content, style, short: int = 20, long: int = 60) -> float:
    """The mean time of evaluations ``short`` to ``long``: (time of ``long`` evaluations - time of
    ``short``) / the difference in evaluations."""
    def run(steps):
        start = time.perf_counter()
        _, history = cs.style_transfer(model, content, style, steps=steps, progress=False)
        return time.perf_counter() - start, history.steps

    (t_short, n_short), (t_long, n_long) = run(short), run(long)
    return (t_long - t_short) / max(1, n_long - n_short)


def paired_per_evaluation(model, content, style, size: int, rounds: int):
    """``rounds`` rounds of: the limit (each candidate the median of 10), then the time per
    evaluation; back to back, so a slow phase of a shared machine hits both. Returns the medians of
    the limit, of the time per evaluation and of the per-round ratios, and the limit's setting."""
    networks = {"as loaded": model, "folded, channels-last": folded_copy(model)}
    per_evaluation(model, content, style, 20)  # warm-up
    limits, evals, ratios, settings = [], [], [], []
    for _ in range(rounds):
        fb, setting = limit(networks, size, 10)
        per_eval = per_evaluation(model, content, style)
        limits.append(fb)
        evals.append(per_eval)
        ratios.append(per_eval / fb)
        settings.append(setting)
    return (statistics.median(limits), statistics.median(evals), statistics.median(ratios),
            max(set(settings), key=settings.count))


def evaluations_to_converge(model, content, style, budget: int = 400, tolerance: float = 0.01) -> int:
    """Evaluations until the loss is within ``tolerance`` of the loss after ``budget`` evaluations."""
    _, history = cs.style_transfer(model, content, style, steps=budget, progress=False)
    final = history.loss[-1]
    return next(i + 1 for i, loss in enumerate(history.loss) if loss <= final * (1 + tolerance))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    parser.add_argument("--repeats", type=int, default=5, help="runs per median")
    parser.add_argument("--size", type=int, default=256, help="side of the optimised image")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    model = cs.load_model("efficientnet_lite0")
    content = cs.load_image("chelsea", args.size)
    style = cs.load_style("starry_night", args.size)
    rows = []

    fb, per_eval, ratio, setting = paired_per_evaluation(model, content, style, args.size, args.repeats)
    plain = forward_backward(model, args.size, 10)
    bare = min(forward_backward(net, args.size, 10) for net in (model, folded_copy(model)))
    rows.append((f"limit: forward+backward, truncated after blocks.10, {args.size} px with its margin",
                 f"{fb * 1e3:.1f} ms", f"least of 4 settings: {setting}"))
    rows.append((f"  the same at {args.size} px, no margin", f"{bare * 1e3:.1f} ms",
                 f"the margin costs {fb / bare:.2f}x"))
    rows.append((f"  the network as loaded, {args.size} px", f"{plain * 1e3:.1f} ms", "not the limit"))
    rows.append((f"style transfer, time per evaluation, {args.size} px", f"{per_eval * 1e3:.1f} ms",
                 "median between consecutive evaluations"))
    rows.append(("  ratio to the limit (median of paired rounds)", f"{ratio:.2f}x",
                 f"goal <= 1.2x {'ok' if ratio <= 1.2 else 'SLOW'}"))
    rows.append(("  ratio to the network as loaded", f"{per_eval / plain:.2f}x", "for comparison"))
    mean_eval = marginal_per_evaluation(model, content, style)
    rows.append(("  mean of evaluations 20-60", f"{mean_eval * 1e3:.1f} ms", "(t(60) - t(20)) / 40"))
    n_converged = evaluations_to_converge(model, content, style)
    converged = n_converged * per_eval
    rows.append((f"style transfer, converged (loss within 1% of 400 evaluations), {args.size} px",
                 f"{converged:.1f} s", f"{n_converged} evaluations"))

    try:
        net = cs.load_fast_style("starry_night")
    except (AttributeError, FileNotFoundError) as err:
        rows.append(("stylize 512 x 512", "n/a", f"no feed-forward network: {err}"))
    else:
        x512 = cs.load_image("chelsea", 512)
        feed_forward = median_seconds(lambda: cs.stylize(net, x512), args.repeats)
        rows.append(("stylize (feed-forward), 512 x 512", f"{feed_forward:.3f} s", "goal <= 0.5 s"))
        content512, style512 = x512, cs.load_style("starry_night", 512)
        per_eval512 = statistics.median(marginal_per_evaluation(model, content512, style512, 5, 15)
                                        for _ in range(max(1, args.repeats // 2)))
        optimisation512 = per_eval512 * n_converged
        rows.append(("style transfer (optimisation), 512 x 512",
                     f"{optimisation512:.1f} s", f"{n_converged} evaluations x {per_eval512 * 1e3:.0f} ms"))
        rows.append(("  ratio optimisation / feed-forward", f"{optimisation512 / feed_forward:.0f}x",
                     "the feed-forward network's saving"))

    width = max(len(r[0]) for r in rows)
    print(f"\nmedians of {args.repeats} runs, {args.threads} torch threads, CPU "
          f"(torch {torch.__version__}); noisy and pessimistic on a shared machine\n")
    print(f"{'measurement':<{width}}  {'time':>10}  note")
    print(f"{'-' * width}  {'-' * 10}  {'-' * 30}")
    for name, value, note in rows:
        print(f"{name:<{width}}  {value:>10}  {note}")


if __name__ == "__main__":
    main()
