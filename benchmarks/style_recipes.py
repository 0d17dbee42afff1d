"""Weightings of the Gatys style-transfer loss on EfficientNet-Lite0, measured side by side.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/style_recipes.py [--size 192] [--steps 150]
        [--styles starry_night hubble_deep_field] [--recipes plain normalized ...] [--save DIR]

For every recipe and style: L-BFGS from the photo (chelsea) for ``--steps`` evaluations, then

* ``strength``: :func:`cs_utils.relative_style_distance`, the Gram distance to the style at
  EfficientNet-Lite2's stage ends divided by the photo's (1: no closer than the photo, 0: the
  painting's statistics); below 1 for every style is the goal;
* ``content``: the cosine similarity of Lite2's ``blocks.14`` features to the photo's;
* ``bright / contrast / colour``: :func:`cs_utils.image_stats.brightness`, ``contrast`` and
  ``colorfulness`` of the result, with the style image's and the photo's in the header rows;
* seconds for the optimisation.

Recipes (Lite0, content layer ``blocks.10``, style weight ``--weights`` (default 100), TV weight
``--tv`` (default 0.03) on the summed squared differences, for all but ``library``):

* ``plain``: the course's first recipe, ``100 * sum_l mean((G_l - A_l)^2) + mean((F - F_c)^2)
  + 0.03 TV`` at :data:`cs_utils.STYLE_LAYERS` (block outputs);
* ``normalized``: each layer's Gram error divided by the mean square of its target Gram
  ``mean(A_l^2)``, the content error by ``mean(F_c^2)`` (relative errors);
* ``relu6``: ``normalized`` at the ReLU6 outputs that read those block outputs
  (:data:`RELU6`: the stem and the expansions of blocks 1, 3, 5, 8 and 11);
* ``...+moments``: adds ``sum_l (mean((mu_l - m_l)^2) + mean((sd_l - s_l)^2)) / (mean(m_l^2) +
  mean(s_l^2))`` over the style layers and the pixels' colours (channel means ``mu`` and standard
  deviations ``sd``, the style's ``m`` and ``s``), with the style weight; ``+featmoments`` only
  the layers', ``+pixelmoments`` only the colours';
* ``swag``: ``relu6`` with the Gram matrices of ``softmax(F / T)`` over each layer's positions
  and channels (Wang et al. 2021), ``T`` the style features' standard deviation at that layer;
* ``library``: :func:`cs_utils.style_transfer` with its defaults (relative errors and moments,
  style weight 10, TV 0.001; ``--weights`` and ``--tv`` override them).

Measured (192 px, 150 evaluations, one thread on a shared 2-core machine; photo: brightness 0.46,
contrast 0.12, colourfulness 0.15)::

    style (its bright/contr/colour)   recipe              strength content bright contr colour
    starry_night (0.37 0.18 0.20)     plain                  0.290   0.766  0.500  0.186  0.275
                                      normalized             0.364   0.486  0.452  0.143  0.251
                                      relu6                  0.518   0.491  0.397  0.105  0.211
                                      normalized+moments     0.173   0.447  0.390  0.141  0.215
                                      relu6+moments          0.428   0.519  0.378  0.127  0.193
                                      swag                   0.711   0.535  0.453  0.121  0.240
                                      library (weight 10)    0.116   0.529  0.384  0.148  0.208
    hubble_deep_field (0.08 0.09 0.04) plain                 0.753   0.568  0.476  0.320  0.165
                                      normalized             0.437   0.218  0.304  0.210  0.106
                                      relu6                  0.503   0.240  0.285  0.114  0.082
                                      normalized+moments     0.160   0.147  0.075  0.071  0.052
                                      relu6+moments          0.213   0.160  0.076  0.076  0.058
                                      swag                   0.981   0.601  0.452  0.134  0.193
                                      library (weight 10)    0.264   0.170  0.073  0.072  0.072
    immunohistochemistry (0.64 0.18 0.16) plain              0.560   0.827  0.478  0.221  0.149
                                      normalized             0.451   0.452  0.518  0.171  0.149
                                      relu6                  0.867   0.492  0.544  0.117  0.153
                                      normalized+moments     0.334   0.430  0.596  0.174  0.158
                                      relu6+moments          0.652   0.466  0.598  0.143  0.161
                                      swag                   0.741   0.700  0.471  0.121  0.170
                                      library (weight 10)    0.380   0.519  0.600  0.176  0.164
    retina (0.49 0.06 0.24)           plain                  0.067   0.781  0.470  0.076  0.292
                                      normalized             0.093   0.288  0.461  0.076  0.267
                                      relu6                  0.224   0.341  0.448  0.079  0.194
                                      normalized+moments     0.071   0.246  0.466  0.069  0.239
                                      relu6+moments          0.135   0.306  0.457  0.069  0.202
                                      swag                   0.679   0.607  0.454  0.102  0.207
                                      library (weight 10)    0.254   0.327  0.465  0.071  0.256

At 256 px and 200 evaluations (notebook 05's full budget) ``library`` gives 0.130, 0.133, 0.249
and 0.062 (``plain``: 0.294, 0.715, 0.593, 0.042). Style weight 100 with the library's TV 0.001
overshoots at 192 px: the retina and the stain come out over-saturated (Lite2 1.40 and 1.22).

Moments on the features alone / the colours alone (``+featmoments``, ``+pixelmoments``): Starry
Night 0.182 / 0.230, Hubble 0.295 (brightness 0.18) / 0.172 (0.08); both together are best.
Relative errors put strokes over the whole image; the moments match brightness and
colourfulness (Hubble: 0.08 against the painting's 0.08); the ReLU6 outputs and SWAG's softmax
were weaker on every style. Without moments, relative errors alone were weaker than ``plain``
on Starry Night and the retina by Lite2's measure (the colours lag), though the strokes are
clearer. From the photo, 60 evaluations at 128 px are not enough for the moments to move the
colours (Starry Night 0.61, the retina 0.93 with ``library``); started from the photo recoloured
to the painting's channel statistics, 30 were (0.16 and 0.10).

``--save DIR`` writes each result as a PNG (``DIR/<recipe>_<style>.png``) to look at.
"""

from __future__ import annotations

import argparse
import time

import torch

import cs_utils as cs
from cs_utils import objectives
from cs_utils.engine.folding import folded_copy
from cs_utils.hooks import extract_features
from cs_utils.image_stats import brightness, colorfulness, contrast
from cs_utils.models import has_same_padding, reflect_pad
from cs_utils.style import _run

TV = None
RELU6 = ("stem", "blocks.1.expand", "blocks.3.expand", "blocks.5.expand", "blocks.8.expand",
         "blocks.11.expand")


def _features(net, image, layers):
    with torch.no_grad():
        return extract_features(net, reflect_pad(image, 0, same_padding=has_same_padding(net)), list(layers))


def _moments(f):
    flat = f.flatten(2)
    return flat.mean(2), flat.std(2, correction=0)


def _moment_term(net, layers, style, weight_pixels=True, weight_features=True):
    """Channel means and standard deviations of the features (and of the pixels), relative errors."""
    feats = _features(net, style, layers)
    targets = {name: _moments(feats[name]) for name in layers}
    pixel_target = _moments(style)

    def relative(f, target):
        mu, sd = _moments(f)
        m, s = target
        return ((mu - m).pow(2).mean() + (sd - s).pow(2).mean()) / (m.pow(2).mean() + s.pow(2).mean())

    term = 0
    if weight_features:
        term = objectives.Objective(lambda fs: sum(relative(fs[name], targets[name]) for name in layers),
                                    "moments", model=net, layers=list(layers))
    if weight_pixels:
        term = term + objectives.Objective(lambda x: relative(x, pixel_target), "pixels")
    return term


def _swag_gram(f, temperature):
    n, c, h, w = f.shape
    soft = torch.softmax(f.reshape(n, -1) / temperature, dim=1).reshape(n, c, h, w) * (c * h * w)
    return soft


def run(model, content, style, recipe, steps, generator, weight=None):
    if recipe == "library":
        start = time.perf_counter()
        kwargs = {} if TV is None else {"tv_weight": TV}
        if weight is not None:
            kwargs["style_weight"] = weight
        image, _ = cs.style_transfer(model, content, style, steps=steps, progress=False, **kwargs)
        return image, time.perf_counter() - start
    layers = RELU6 if recipe.startswith(("relu6", "swag")) else cs.STYLE_LAYERS
    content_layer = "blocks.10"
    net = folded_copy(model, keep=(*layers, content_layer))
    start = time.perf_counter()
    weight = 100.0 if weight is None else weight
    content_target = _features(net, content, [content_layer])[content_layer]
    style_feats = _features(net, style, layers)
    tv = 0.03 if TV is None else TV
    if recipe == "swag":
        temps = {name: float(style_feats[name].std()) for name in layers}
        grams = [cs.gram_matrix(_swag_gram(style_feats[name], temps[name])) for name in layers]
        weights = [1.0 / g.pow(2).mean().item() for g in grams]
        from cs_utils.engine.gram import gram_losses
        style_term = objectives.Objective(
            lambda fs: gram_losses([_swag_gram(fs[name], temps[name]) for name in layers], grams, weights),
            "swag", model=net, layers=list(layers))
    else:
        grams = [cs.gram_matrix(style_feats[name]) for name in layers]
        weights = 1.0 if recipe == "plain" else [1.0 / g.pow(2).mean().item() for g in grams]
        style_term = objectives.gram_match(net, layers, grams, weights)
    content_weight = 1.0 / content_target.numel() if recipe == "plain" else \
        1.0 / content_target.pow(2).sum().item()
    objective = weight * style_term + objectives.feature_match(net, content_layer, content_target,
                                                              weight=content_weight)
    if recipe.endswith("moments"):
        objective = objective + weight * _moment_term(net, layers, style,
                                                      weight_pixels=not recipe.endswith("+featmoments"),
                                                      weight_features=not recipe.endswith("+pixelmoments"))
    image, _ = _run(net, objective, content, pad=0, steps=steps, optimizer="lbfgs", lr=None,
                    tv_weight=tv, generator=generator, progress=False, desc=recipe, callback=None)
    return image, time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=192)
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--weights", type=float, nargs="+", default=[None],
                        help="style weights to try (default: 100, the library's own for 'library')")
    parser.add_argument("--styles", nargs="+", default=list(cs.STYLE_NAMES))
    parser.add_argument("--recipes", nargs="+",
                        default=["plain", "normalized", "relu6", "normalized+moments", "relu6+moments",
                                 "swag",
                                 "library"])
    parser.add_argument("--tv", type=float, default=None,
                        help="TV weight (of the sum of squared differences); default 0.03, the library's own")
    parser.add_argument("--save", default=None)
    args = parser.parse_args()
    global TV
    TV = args.tv
    torch.set_num_threads(args.threads)
    model = cs.load_model("efficientnet_lite0")
    judge = cs.load_model("efficientnet_lite2")
    content = cs.load_image("chelsea", args.size)

    def similarity(image):
        with torch.no_grad():
            a, b = (cs.extract_features(judge, x, ["blocks.14"])["blocks.14"].flatten()
                    for x in (image, content))
        return torch.nn.functional.cosine_similarity(a, b, dim=0).item()

    def stats(image):
        return brightness(image).item(), contrast(image).item(), colorfulness(image).item()

    print(f"{args.size} px, {args.steps} L-BFGS evaluations, {args.threads} thread(s)")
    print(f"{'recipe':20s} {'style':22s} {'strength':>8s} {'content':>7s} {'bright':>6s} {'contr':>6s} "
          f"{'colour':>6s} {'s':>5s}")
    print(f"{'(photo)':20s} {'':22s} {1:8.3f} {1:7.3f} " + " ".join(f"{v:6.3f}" for v in stats(content)))
    for name in args.styles:
        style = cs.load_style(name, args.size)
        print(f"{'(style image)':20s} {name:22s} {'':8s} {'':7s} "
              + " ".join(f"{v:6.3f}" for v in stats(style)))
        for recipe, weight in [(r, w) for r in args.recipes for w in args.weights]:
            image, seconds = run(model, content, style, recipe, args.steps, torch.Generator().manual_seed(0),
                                 weight)
            if len(args.weights) > 1:
                recipe = f"{recipe}@{weight:g}"
            strength = cs.relative_style_distance(judge, image, content, style).item()
            print(f"{recipe:20s} {name:22s} {strength:8.3f} {similarity(image):7.3f} "
                  + " ".join(f"{v:6.3f}" for v in stats(image)) + f" {seconds:5.1f}", flush=True)
            if args.save:
                cs.save_image(image, f"{args.save}/{recipe}_{name}.png")


if __name__ == "__main__":
    main()
