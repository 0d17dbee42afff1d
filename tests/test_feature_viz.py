import pytest
import torch
from torch import nn

from cs_utils import objectives
from cs_utils.class_viz import DEFAULT_RECIPE, RECIPE_STEPS, class_visualization
from cs_utils.feature_viz import layer_tour, mean_pairwise_cosine, multifaceted_visualization
from cs_utils.optimize import optimize_image
from cs_utils.parameterizations import FourierImage, SpectralPhaseImage
from cs_utils.regularizers import CenterBias
from cs_utils.transforms import RandomCrops


def _gram_cosine(a, b):
    ga, gb = (f.flatten(1) @ f.flatten(1).T for f in (a, b))
    return torch.nn.functional.cosine_similarity(ga.flatten(), gb.flatten(), dim=0)


def test_diversity_is_the_mean_pairwise_gram_cosine(tiny_cnn):
    x = torch.rand(3, 3, 6, 6, generator=torch.Generator().manual_seed(0))
    relu = tiny_cnn.relu(tiny_cnn.conv(x))
    pairs = [_gram_cosine(relu[i], relu[j]) for i in range(3) for j in range(3) if i != j]
    torch.testing.assert_close(objectives.diversity(tiny_cnn, "relu")(x), torch.stack(pairs).mean())
    # two identical images: similarity 1
    same = x[:1].repeat(2, 1, 1, 1)
    torch.testing.assert_close(objectives.diversity(tiny_cnn, "relu")(same), torch.tensor(1.0))
    # several views per facet (crop-major): the Gram matrices of one facet's views are averaged
    views = torch.cat([x[:2], x[:2].flip(-1)])
    flipped = tiny_cnn.relu(tiny_cnn.conv(views))
    grams = [(f.flatten(1) @ f.flatten(1).T) for f in flipped]
    g0, g1 = (grams[0] + grams[2]) / 2, (grams[1] + grams[3]) / 2
    expected = torch.nn.functional.cosine_similarity(g0.flatten(), g1.flatten(), dim=0)
    torch.testing.assert_close(objectives.diversity(tiny_cnn, "relu", facets=2)(views), expected)
    # it adds and scales like every objective
    combined = objectives.class_score(tiny_cnn, 1) + 10 * objectives.diversity(tiny_cnn, "relu")
    torch.testing.assert_close(combined(x), -tiny_cnn(x)[:, 1].sum() + 10 * torch.stack(pairs).mean())
    with pytest.raises(ValueError, match="at least 2 images"):
        objectives.diversity(tiny_cnn, "relu")(x[:1])
    with pytest.raises(ValueError, match="spatial layer"):
        objectives.diversity(tiny_cnn, "flat")(x)
    with pytest.raises(ValueError, match="facets must be an int >= 2"):
        objectives.diversity(tiny_cnn, "relu", facets=1)


def test_channel_objective_with_one_channel_per_image(tiny_cnn):
    x = torch.rand(2, 3, 6, 6, generator=torch.Generator().manual_seed(1))
    relu = tiny_cnn.relu(tiny_cnn.conv(x))
    expected = -(relu[0, 3].mean() + relu[1, 0].mean())
    torch.testing.assert_close(objectives.channel(tiny_cnn, "relu", [3, 0])(x), expected)
    with pytest.raises(IndexError, match="out of range"):
        objectives.channel(tiny_cnn, "relu", [0, 9])(x)
    with pytest.raises(ValueError, match="one channel per image"):
        objectives.channel(tiny_cnn, "relu", [0, 1, 2])(x)


def test_center_bias_by_hand():
    flat = torch.full((1, 3, 5, 5), 0.3)
    assert CenterBias(2.0).penalty(flat).item() == 0
    centre, corner = flat.clone(), flat.clone()
    centre[0, 0, 2, 2] += 0.5
    corner[0, 0, 0, 0] += 0.5
    # r^2 is 0 at the centre and 2 at a corner: the same spot costs nothing in the middle
    def by_hand(x):
        r2 = torch.linspace(-1, 1, 5)[:, None] ** 2 + torch.linspace(-1, 1, 5)[None, :] ** 2
        dev = (x - x.mean(dim=(-2, -1), keepdim=True)).pow(2).sum(1)
        return 2.0 * (r2 * dev).mean()
    torch.testing.assert_close(CenterBias(2.0).penalty(corner), by_hand(corner))
    torch.testing.assert_close(CenterBias(2.0).penalty(centre), by_hand(centre))
    assert CenterBias(2.0).penalty(corner) > 3 * CenterBias(2.0).penalty(centre)
    with pytest.raises(ValueError, match="weight"):
        CenterBias(-1)


def test_random_crops_order_size_and_seed():
    x = torch.stack([torch.zeros(3, 20, 20), torch.ones(3, 20, 20)])
    crops = RandomCrops(3, (0.5, 1.0), size=8)(x, torch.Generator().manual_seed(0))
    assert crops.shape == (6, 3, 8, 8)
    assert crops[0::2].max() == 0 and crops[1::2].min() > 1 - 1e-6       # crop-major: image 0, 1, 0, 1, ...
    ramp = torch.linspace(0, 1, 20).expand(1, 3, 20, 20).clone()
    a = RandomCrops(2, (0.5, 0.9), size=8)(ramp, torch.Generator().manual_seed(1))
    b = RandomCrops(2, (0.5, 0.9), size=8)(ramp, torch.Generator().manual_seed(1))
    c = RandomCrops(2, (0.5, 0.9), size=8)(ramp, torch.Generator().manual_seed(2))
    assert torch.equal(a, b) and not torch.equal(a, c)
    torch.testing.assert_close(RandomCrops(1, (1.0, 1.0))(ramp), ramp)   # the whole image, not resized
    with pytest.raises(ValueError, match="scale"):
        RandomCrops(2, (0.0, 1.0))
    with pytest.raises(ValueError, match="count"):
        RandomCrops(0)


def test_spectral_phase_image_keeps_the_magnitude_and_optimises_the_phase():
    magnitude = torch.rand(3, 16, 9, generator=torch.Generator().manual_seed(0)) + 0.1
    param = SpectralPhaseImage((2, 3, 16, 16), magnitude, generator=torch.Generator().manual_seed(0))
    start = param.image().detach().clone()
    assert start.shape == (2, 3, 16, 16) and 0 < start.min() and start.max() < 1
    image, _ = optimize_image(lambda x: -x[:, 0].mean(), parameterization=param, steps=20, lr=0.1,
                              progress=False)
    assert image[:, 0].mean() > start[:, 0].mean() + 0.02               # redder, by moving phases only
    spectrum = torch.fft.rfft2(param.decorrelated().detach()).abs()
    ratio = spectrum[..., 1:-1] / magnitude[..., 1:-1]                   # interior columns are exact
    for n in range(2):                                                   # one scale per image
        torch.testing.assert_close(ratio[n], torch.full_like(ratio[n], ratio[n].mean().item()), rtol=1e-3,
                                   atol=0)
    with pytest.raises(ValueError, match=r"shape \(3, 16, 9\)"):
        SpectralPhaseImage((1, 3, 16, 16), magnitude[:, :, :5])


def test_normalized_fourier_image_has_fixed_contrast():
    param = FourierImage((2, 3, 16, 16), decay=1.0, std=5.0, normalize=True,
                         generator=torch.Generator().manual_seed(0))
    z = torch.fft.irfft2(torch.view_as_complex(param.coefficients) * param.spectrum_scale, s=(16, 16))
    assert z.std() > 10                                                   # large raw coefficients ...
    image = param.image().detach()
    assert 0.05 < image.std() < 0.3 and image.min() > 0 and image.max() < 1    # ... but a bounded image


def test_default_recipe_and_steps(tiny_cnn):
    image, history = class_visualization(tiny_cnn, 2, image_size=16, progress=False,
                                         generator=torch.Generator().manual_seed(0), pad=2, jitter=4)
    assert history.steps == RECIPE_STEPS[DEFAULT_RECIPE]
    assert image.shape == (1, 3, 16, 16) and tiny_cnn(image)[0].argmax() == 2
    for recipe in ("maco", "natural", "smooth_color"):
        a, _ = class_visualization(tiny_cnn, 1, steps=3, image_size=16, recipe=recipe, progress=False,
                                   generator=torch.Generator().manual_seed(3))
        b, _ = class_visualization(tiny_cnn, 1, steps=3, image_size=16, recipe=recipe, progress=False,
                                   generator=torch.Generator().manual_seed(3))
        assert torch.equal(a, b) and a.shape == (1, 3, 16, 16)


def test_multifaceted_visualization_differs_and_leaves_the_model_alone(tiny_cnn, caller_state, hook_count):
    tiny_cnn.train()
    state = caller_state(tiny_cnn)
    settings = dict(steps=30, image_size=12, recipe="natural", pad=2, jitter=2, progress=False)
    div = objectives.diversity(tiny_cnn, "relu")
    plain, _ = multifaceted_visualization(tiny_cnn, 2, 4, diversity=0, diversity_layer="relu",
                                          generator=torch.Generator().manual_seed(0), **settings)
    varied, history = multifaceted_visualization(tiny_cnn, 2, 4, diversity=5.0, diversity_layer="relu",
                                                 generator=torch.Generator().manual_seed(0), **settings)
    again, _ = multifaceted_visualization(tiny_cnn, 2, 4, diversity=5.0, diversity_layer="relu",
                                          generator=torch.Generator().manual_seed(0), **settings)
    assert varied.shape == (4, 3, 12, 12) and torch.equal(varied, again)
    with torch.no_grad():
        assert div(varied) < div(plain) - 0.05
        assert (tiny_cnn.eval()(varied).argmax(1) == 2).all()
    tiny_cnn.train()
    pair = dict(diversity=1.0, diversity_layer="relu", **settings)
    centred, _ = multifaceted_visualization(tiny_cnn, 2, 2, center_bias=1.0,
                                            generator=torch.Generator().manual_seed(0), **pair)
    free, _ = multifaceted_visualization(tiny_cnn, 2, 2, generator=torch.Generator().manual_seed(0), **pair)
    assert CenterBias(1.0).penalty(centred) < 0.8 * CenterBias(1.0).penalty(free)  # less off-centre
    state.assert_unchanged()
    assert hook_count(tiny_cnn) == 0 and all(p.grad is None for p in tiny_cnn.parameters())
    with pytest.raises(ValueError, match="facets must be at least 2"):
        multifaceted_visualization(tiny_cnn, 3, 1)
    with pytest.raises(ValueError, match="diversity must be a number >= 0"):
        multifaceted_visualization(tiny_cnn, 2, 2, diversity=-1)


def test_multifaceted_keep_class_adds_the_class_cross_entropy(tiny_cnn):
    settings = dict(steps=6, image_size=12, recipe="natural", pad=2, jitter=2, progress=False)
    seed = lambda: torch.Generator().manual_seed(4)  # noqa: E731
    kept, _ = multifaceted_visualization(tiny_cnn, 2, 3, diversity=0, keep_class=2.5, generator=seed(),
                                         **settings)
    by_hand, _ = class_visualization(
        tiny_cnn, objectives.class_score(tiny_cnn, 2) + 2.5 * objectives.cross_entropy(tiny_cnn, 2), batch=3,
        generator=seed(), **settings)
    scores_only, _ = multifaceted_visualization(tiny_cnn, 2, 3, diversity=0, keep_class=0, generator=seed(),
                                                **settings)
    assert torch.equal(kept, by_hand) and not torch.equal(kept, scores_only)
    # an objective target is taken as it is: keep_class only applies to a class index
    channel = objectives.channel(tiny_cnn, "relu", 1)
    a, _ = multifaceted_visualization(tiny_cnn, channel, 2, diversity=0, keep_class=5.0, generator=seed(),
                                      **settings)
    b, _ = multifaceted_visualization(tiny_cnn, channel, 2, diversity=0, keep_class=0.0, generator=seed(),
                                      **settings)
    assert torch.equal(a, b)
    with pytest.raises(ValueError, match="keep_class must be a number >= 0"):
        multifaceted_visualization(tiny_cnn, 2, 2, keep_class=-1)


def test_facets_keep_the_recipes_regularizers_and_add_the_center_bias(tiny_cnn, monkeypatch):
    from cs_utils import class_viz

    seen = []

    def recording(objective, **kwargs):
        seen.append([type(r).__name__ for r in kwargs["regularizers"]])
        return optimize_image(objective, **kwargs)

    monkeypatch.setattr(class_viz, "optimize_image", recording)
    settings = dict(steps=2, image_size=12, pad=2, jitter=2, progress=False, diversity_layer="relu")
    multifaceted_visualization(tiny_cnn, 2, 2, **settings)                      # the clear recipe
    multifaceted_visualization(tiny_cnn, 2, 2, center_bias=0.5, **settings)
    multifaceted_visualization(tiny_cnn, 2, 2, recipe="natural", center_bias=0.5, **settings)
    assert seen == [["MilkPenalty"], ["MilkPenalty", "CenterBias"], ["CenterBias"]]
    assert DEFAULT_RECIPE == "clear"


def test_mean_pairwise_cosine_by_hand():
    model = nn.Sequential(nn.Flatten()).eval()
    model.add_module("pool", nn.Identity())
    x = torch.zeros(3, 3, 1, 1)
    x[0, 0] = 1.0
    x[1, 1] = 1.0
    x[2, :2] = 1.0                  # cosines: (0, 1/sqrt2, 1/sqrt2) -> mean sqrt(2) / 3
    assert mean_pairwise_cosine(model, x, "pool") == pytest.approx(2 ** 0.5 / 3, rel=1e-6)
    with pytest.raises(ValueError, match="at least 2 images"):
        mean_pairwise_cosine(model, x[:1], "pool")


def test_mean_pairwise_cosine_of_gram_matrices_by_hand(tiny_cnn):
    model = nn.Sequential()
    model.add_module("feat", nn.Identity())
    x = torch.zeros(3, 3, 2, 2)
    x[0, 0, 0, 0] = 1.0             # Gram e00
    x[1, 1, 1, 1] = 1.0             # Gram e11
    x[2, :2, 0, 1] = 1.0            # Gram with ones on the top-left 2 x 2: cosines (0, 1/2, 1/2)
    assert mean_pairwise_cosine(model, x, "feat", gram=True) == pytest.approx(1 / 3, rel=1e-6)
    # the positions are summed out: the same channels at other pixels give the same Gram matrices
    moved = x.roll(1, dims=-1)
    assert mean_pairwise_cosine(model, moved, "feat", gram=True) == pytest.approx(1 / 3, rel=1e-6)
    assert mean_pairwise_cosine(model, x, "feat") == pytest.approx(0.0, abs=1e-7)   # no shared pixel
    # what the diversity term measures
    images = torch.rand(4, 3, 12, 12, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        term = objectives.diversity(tiny_cnn.eval(), "relu")(images)
    assert mean_pairwise_cosine(tiny_cnn, images, "relu", gram=True) == pytest.approx(float(term), rel=1e-5)
    with pytest.raises(ValueError, match="needs a spatial layer"):
        mean_pairwise_cosine(nn.Sequential(nn.Flatten()), x, "0", gram=True)


def test_the_diversity_term_acts_for_its_share_of_the_steps(tiny_cnn, monkeypatch):
    from cs_utils import feature_viz

    settings = dict(steps=6, image_size=12, recipe="natural", pad=2, jitter=2, progress=False,
                    diversity=5.0, diversity_layer="relu")
    seed = lambda: torch.Generator().manual_seed(2)  # noqa: E731
    goal = (objectives.class_score(tiny_cnn, 2)
            + feature_viz.KEEP_CLASS * objectives.cross_entropy(tiny_cnn, 2))
    throughout, _ = multifaceted_visualization(tiny_cnn, 2, 3, diversity_share=1.0, generator=seed(),
                                               **settings)
    by_hand, _ = class_visualization(tiny_cnn, goal + 5.0 * objectives.diversity(tiny_cnn, "relu"), batch=3,
                                     generator=seed(), **{k: settings[k] for k in list(settings)[:6]})
    assert torch.equal(throughout, by_hand)
    never, _ = multifaceted_visualization(tiny_cnn, 2, 3, diversity_share=0.0, generator=seed(), **settings)
    plain, _ = multifaceted_visualization(tiny_cnn, 2, 3, generator=seed(), **{**settings, "diversity": 0})
    assert torch.equal(never, plain)
    half, _ = multifaceted_visualization(tiny_cnn, 2, 3, diversity_share=0.5, generator=seed(), **settings)
    assert not torch.equal(half, plain) and not torch.equal(half, throughout)
    # the term is evaluated at the first round(0.5 * 6) = 3 steps only, and the caller's callback still runs
    calls, steps_seen = [], []
    real = objectives.diversity

    def counted(model, layer, **kwargs):
        term = real(model, layer, **kwargs)
        return objectives.Objective(lambda f: calls.append(1) or term.fn(f), term.name, model=term.model,
                                    layers=term.layers)

    monkeypatch.setattr(feature_viz.objectives, "diversity", counted)
    again, _ = multifaceted_visualization(tiny_cnn, 2, 3, diversity_share=0.5, generator=seed(),
                                          callback=lambda step, image, value: steps_seen.append(step),
                                          **settings)
    assert len(calls) == 3 and steps_seen == list(range(6)) and torch.equal(again, half)
    for bad in (-0.1, 1.5, True, "half"):
        with pytest.raises(ValueError, match="diversity_share must be a number in"):
            multifaceted_visualization(tiny_cnn, 2, 2, diversity_share=bad)
    with pytest.raises(ValueError, match="unknown recipe 'lucid'; choose one of"):
        multifaceted_visualization(tiny_cnn, 2, 2, recipe="lucid")


def test_layer_tour_shapes_and_contract(tiny_cnn, caller_state, hook_count):
    photos = torch.rand(5, 3, 12, 12, generator=torch.Generator().manual_seed(0))
    state = caller_state(tiny_cnn, photos)
    tour = layer_tour(tiny_cnn, {"conv": [0, 2], "relu": [1]}, photos, k=3, steps=4, image_size=12,
                      recipe="natural", pad=2, jitter=2, progress=False,
                      generator=torch.Generator().manual_seed(0))
    state.assert_unchanged()
    assert hook_count(tiny_cnn) == 0
    assert tour.channels == {"conv": (0, 2), "relu": (1,)}
    assert tour.visualizations["conv"].shape == (2, 3, 12, 12)
    assert tour.patches["conv"].shape == (2, 3, 3, 3, 3)        # 3x3 receptive field of the conv
    assert tour.activations["relu"].shape == (1, 3)
    # the patches are the top activations, largest first
    assert (tour.activations["conv"][:, :-1] >= tour.activations["conv"][:, 1:]).all()
    with pytest.raises(ValueError, match="no channels"):
        layer_tour(tiny_cnn, {"conv": []}, photos)

