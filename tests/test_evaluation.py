"""Sanity and faithfulness measures of saliency maps: hand-computed answers on tiny models."""

import math

import pytest
import torch
from models_by_hand import linear_model, red_square_image, red_square_model

import cs_utils
from cs_utils import evaluation as E
from cs_utils.blur import gaussian_blur


def sigmoid(v):
    return 1 / (1 + math.exp(-v))







def random_maps(seed=0):
    """An explainer that ignores the model: fresh uniform noise for every call."""
    generator = torch.Generator().manual_seed(seed)
    return lambda model, x, target: torch.rand(x.shape[0], *x.shape[2:], generator=generator)


def image_mean(model, x, target):
    """An explainer that ignores the model: the grey image (edge-detector-like)."""
    return x.mean(1)


# --------------------------------------------------------------------------- model randomisation

def test_rank_correlation_by_hand():
    a = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
    torch.testing.assert_close(E.rank_correlation(a, a), torch.tensor([1.0], dtype=torch.float64))
    torch.testing.assert_close(E.rank_correlation(a, -a), torch.tensor([-1.0], dtype=torch.float64))
    # one swap: 1 - 6 * (1 + 1) / (4 * 15) = 0.8
    b = torch.tensor([[1.0, 3.0, 2.0, 4.0]])
    torch.testing.assert_close(E.rank_correlation(a, b), torch.tensor([0.8], dtype=torch.float64))
    with pytest.raises(ValueError, match="same shape"):
        E.rank_correlation(a, a[:, :3])


def test_randomized_copy_leaves_the_model_alone(tiny_cnn):
    before = {k: v.clone() for k, v in tiny_cnn.state_dict().items()}
    clone = E.randomized_copy(tiny_cnn, ["fc"], generator=torch.Generator().manual_seed(3))
    again = E.randomized_copy(tiny_cnn, ["fc"], generator=torch.Generator().manual_seed(3))
    for key, value in tiny_cnn.state_dict().items():
        assert torch.equal(value, before[key])
    assert not torch.equal(clone.fc.weight, tiny_cnn.fc.weight)
    assert torch.equal(clone.conv.weight, tiny_cnn.conv.weight)
    assert torch.equal(clone.fc.weight, again.fc.weight)     # the generator decides
    with pytest.raises(KeyError, match="'fc'"):
        E.randomized_copy(tiny_cnn, ["fcc"])


def test_cascading_randomization_changes_the_maps(tiny_cnn, caller_state):
    x = torch.rand(2, 3, 8, 8)
    state = caller_state(tiny_cnn, x)
    result = cs_utils.cascading_randomization(tiny_cnn, x, 1, ["fc", "conv"])
    state.assert_unchanged()
    assert list(result) == ["fc", "conv"]
    assert all(r.shape == (2,) and (r < 0.99).all() for r in result.values())
    # randomising nothing the class depends on keeps the map: identity check of the comparison
    same = cs_utils.cascading_randomization(tiny_cnn, x, 1, ["pool"])   # no parameters
    torch.testing.assert_close(same["pool"], torch.ones(2, dtype=torch.float64))


# --------------------------------------------------------------------------- deletion

def test_deletion_curve_by_hand():
    model, x = red_square_model(), red_square_image()
    saliency = cs_utils.saliency_map(model, x, 0) * x[:, 0]   # only the red square is salient
    curve = cs_utils.deletion_curve(model, x, 0, saliency, steps=4, cell=2)
    # 4 cells of 2x2, the red square goes first: red sum 4 -> 1 (mean red 0.25 fills it);
    # each further cell filled with red 0.25 adds 1 to the red sum, back to 16 * 0.25 = 4.
    expected = torch.tensor([[sigmoid(4), sigmoid(1), sigmoid(2), sigmoid(3), sigmoid(4)]])
    torch.testing.assert_close(curve.fractions, torch.tensor([0, 0.25, 0.5, 0.75, 1]))
    torch.testing.assert_close(curve.probabilities, expected)
    area = 0.25 * (sigmoid(4) / 2 + sigmoid(1) + sigmoid(2) + sigmoid(3) + sigmoid(4) / 2)
    torch.testing.assert_close(curve.auc, torch.tensor([area]))
    random = cs_utils.deletion_curve(model, x, 0, None, steps=4, cell=2,
                                     generator=torch.Generator().manual_seed(0))
    assert random.auc.item() >= curve.auc.item()
    torch.testing.assert_close(random.probabilities[:, [0, -1]], expected[:, [0, -1]])


def test_deletion_curve_is_batch_size_invariant_and_validates(tiny_cnn):
    x = torch.rand(3, 3, 8, 8)
    saliency = cs_utils.saliency_map(tiny_cnn, x, 2)
    a = cs_utils.deletion_curve(tiny_cnn, x, 2, saliency, steps=5, cell=2, batch_size=1)
    b = cs_utils.deletion_curve(tiny_cnn, x, 2, saliency, steps=5, cell=2, batch_size=100)
    torch.testing.assert_close(a.probabilities, b.probabilities)
    with pytest.raises(ValueError, match="shape"):
        cs_utils.deletion_curve(tiny_cnn, x, 2, saliency[:2], steps=5)
    with pytest.raises(ValueError, match="cell"):
        cs_utils.deletion_curve(tiny_cnn, x, 2, saliency, cell=9)


@pytest.mark.parametrize("measure", ["deletion", "insertion"])
def test_curves_on_the_folded_network_are_those_of_the_model_as_it_is(measure, caller_state):
    from models_by_hand import batch_norm_cnn, unfolded

    from cs_utils.engine.folding import gradient_network

    model = batch_norm_cnn()
    with torch.no_grad():
        model.fc.weight.mul_(30.0)                                       # confident enough to move
    assert gradient_network(model) is not model                         # its batch norms fold
    x = torch.rand(3, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    saliency = torch.rand(3, 16, 16, generator=torch.Generator().manual_seed(3))
    curve = {"deletion": cs_utils.deletion_curve, "insertion": E.insertion_curve}[measure]
    state = caller_state(model, x, saliency)
    folded = curve(model, x, 2, saliency, steps=6, cell=2, batch_size=5).probabilities
    state.assert_unchanged()
    with unfolded(model):
        plain = curve(model, x, 2, saliency, steps=6, cell=2, batch_size=5).probabilities
    state.assert_unchanged()
    torch.testing.assert_close(folded, plain, rtol=1e-5, atol=1e-6)
    assert (plain[:, 0] - plain[:, -1]).abs().max() > 0.01            # the curves do move


# --------------------------------------------------------------------------- blur and insertion

def test_gaussian_blur_by_hand():
    x = torch.zeros(1, 1, 9, 9, dtype=torch.float64)
    x[0, 0, 4, 4] = 1.0
    blurred = gaussian_blur(x, 1.0, border="inside")
    g = [math.exp(-d * d / 2) for d in range(4)]           # radius 3 sigma = 3 pixels
    full = g[0] + 2 * (g[1] + g[2] + g[3])                  # the weights around a pixel far from the edges
    near_top = g[0] + 2 * g[1] + g[2] + g[3]                # row 1: offsets -1..3 lie inside the image
    torch.testing.assert_close(blurred[0, 0, 4, 4].item(), 1 / full ** 2)
    # column 6: offsets -3..2 lie inside the 9 columns
    torch.testing.assert_close(blurred[0, 0, 4, 6].item(), g[2] / (full * (full - g[3])))
    torch.testing.assert_close(blurred[0, 0, 1, 4].item(), g[3] / (near_top * full))
    assert blurred[0, 0, 0, 4].item() == 0.0                # 4 rows away: beyond the kernel
    grey = torch.full((2, 3, 5, 7), 0.3)
    torch.testing.assert_close(gaussian_blur(grey, 4.0, border="inside"), grey)    # no dark borders
    image = torch.rand(2, 3, 5, 7)
    torch.testing.assert_close(gaussian_blur(image, math.inf, border="inside"),
                               image.mean((2, 3), keepdim=True).expand_as(image))
    assert torch.equal(gaussian_blur(image, 0, border="inside"), image)
    with pytest.raises(ValueError, match="blur_sigma"):
        gaussian_blur(image, -1.0, border="inside")


def two_square_model():
    """Class 0 scores the red of the top-left 2x2 cell (weight 1) and the top-right cell (weight 1)."""
    weight = torch.zeros(2, 3, 4, 4)
    weight[0, 0, :2, :] = 1.0
    return linear_model(weight.view(2, -1))


def test_insertion_curve_by_hand():
    model = two_square_model()
    x = torch.zeros(1, 3, 4, 4)
    x[0, 0, :2, :2], x[0, 0, :2, 2:] = 1.0, 0.5               # mean red (4 + 2) / 16 = 0.375
    saliency = torch.zeros(1, 4, 4)
    saliency[0, :2, :2], saliency[0, :2, 2:] = 1.0, 0.25
    curve = cs_utils.evaluation.insertion_curve(model, x, 0, saliency, steps=4, cell=2, blur_sigma=math.inf)
    # start: red 0.375 everywhere -> 8 weighted pixels * 0.375 = 3; then the bright cell (4 + 4 * 0.375),
    # then the half-bright one (4 + 2); the two cells without weight change nothing.
    expected = torch.tensor([[sigmoid(3), sigmoid(5.5), sigmoid(6), sigmoid(6), sigmoid(6)]])
    torch.testing.assert_close(curve.fractions, torch.tensor([0, 0.25, 0.5, 0.75, 1]))
    torch.testing.assert_close(curve.probabilities, expected)
    area = 0.25 * (sigmoid(3) / 2 + sigmoid(5.5) + sigmoid(6) * 2 + sigmoid(6) / 2)
    torch.testing.assert_close(curve.auc, torch.tensor([area]))
    random = cs_utils.evaluation.insertion_curve(model, x, 0, None, steps=4, cell=2, blur_sigma=math.inf,
                                      generator=torch.Generator().manual_seed(0))
    assert random.auc.item() <= curve.auc.item()
    torch.testing.assert_close(random.probabilities[:, [0, -1]], expected[:, [0, -1]])
    # deletion of the same order on the same model: the bright cell first
    deletion = cs_utils.deletion_curve(model, x, 0, saliency, steps=4, cell=2)
    torch.testing.assert_close(deletion.probabilities[0, :3],
                               torch.tensor([sigmoid(6), sigmoid(1.5 + 2), sigmoid(1.5 + 1.5)]))


def test_insertion_curve_with_a_real_blur_matches_direct_masking(tiny_cnn):
    x = torch.rand(2, 3, 8, 8)
    saliency = cs_utils.saliency_map(tiny_cnn, x, 3)
    curve = cs_utils.evaluation.insertion_curve(tiny_cnn, x, 3, saliency, steps=2, cell=4, blur_sigma=2.0)
    blurred = gaussian_blur(x, 2.0, border="inside")
    cells = torch.nn.functional.avg_pool2d(saliency[:, None], 4).flatten(1)    # 4 cells of 4x4
    halves = []
    for i in range(2):
        first, second = cells[i].argsort(descending=True)[:2].tolist()
        mask = torch.zeros(8, 8, dtype=torch.bool)
        for c in (first, second):
            mask[4 * (c // 2):4 * (c // 2) + 4, 4 * (c % 2):4 * (c % 2) + 4] = True
        halves.append(torch.where(mask, x[i], blurred[i]))
    with torch.no_grad():
        def p(images):
            return tiny_cnn(images).softmax(1)[:, 3]
        expected = torch.stack([p(blurred), p(torch.stack(halves)), p(x)], dim=1)
    torch.testing.assert_close(curve.probabilities, expected)


def test_insertion_curve_is_batch_size_invariant_and_validates(tiny_cnn):
    x = torch.rand(3, 3, 8, 8)
    saliency = cs_utils.saliency_map(tiny_cnn, x, 2)
    a = cs_utils.evaluation.insertion_curve(tiny_cnn, x, 2, saliency, steps=5, cell=2, batch_size=1)
    b = cs_utils.evaluation.insertion_curve(tiny_cnn, x, 2, saliency, steps=5, cell=2, batch_size=100)
    torch.testing.assert_close(a.probabilities, b.probabilities)
    with pytest.raises(ValueError, match="shape"):
        cs_utils.evaluation.insertion_curve(tiny_cnn, x, 2, saliency[:, :4], steps=5, cell=2)
    with pytest.raises(ValueError, match="cell"):
        cs_utils.evaluation.insertion_curve(tiny_cnn, x, 2, saliency, cell=0)
    with pytest.raises(ValueError, match="blur_sigma"):
        cs_utils.evaluation.insertion_curve(tiny_cnn, x, 2, saliency, cell=2, blur_sigma=float("nan"))
    with pytest.raises(ValueError, match="until"):
        cs_utils.evaluation.insertion_curve(tiny_cnn, x, 2, saliency, cell=2, until=0)
    with pytest.raises(IndexError, match="out of range"):
        cs_utils.evaluation.insertion_curve(tiny_cnn, x, 7, saliency, cell=2)


# --------------------------------------------------------------------------- every measure

@pytest.mark.parametrize("measure", ["deletion", "insertion", "cascade", "table"])
def test_caller_state_is_left_alone(tiny_cnn, caller_state, hook_count, measure):
    tiny_cnn.train()                       # a caller's model in train mode with trainable weights
    x = torch.rand(2, 3, 8, 8, requires_grad=True)
    state = caller_state(tiny_cnn, x)
    run = {
        "deletion": lambda: cs_utils.deletion_curve(tiny_cnn, x, 1, None, steps=4, cell=2).probabilities,
        "insertion": lambda: E.insertion_curve(tiny_cnn, x, 1, None, steps=4, cell=2).probabilities,
        "cascade": lambda: cs_utils.cascading_randomization(tiny_cnn, x, 1, ["fc", "conv"])["conv"],
        "table": lambda: cs_utils.evaluation_table(tiny_cnn, x, 1, {"gradient": cs_utils.saliency_map},
                                                   steps=2, cell=4, progress=False)["gradient"].insertion_auc,
    }[measure]
    result = run()
    state.assert_unchanged()
    assert all(p.grad is None for p in tiny_cnn.parameters()), "gradients were written into the model"
    assert hook_count(tiny_cnn) == 0
    assert not result.requires_grad and not result.is_inference()   # usable in later autograd code
    assert tiny_cnn.training


@pytest.mark.parametrize("measure", ["insertion", "table"])
@pytest.mark.parametrize("bad, words", [("nan", "NaN"), ("empty", "empty batch"), ("range", r"\[0, 1\]")])
def test_unusable_images_raise_clear_errors(tiny_cnn, measure, bad, words):
    x = {"nan": torch.full((1, 3, 8, 8), float("nan")), "empty": torch.zeros(0, 3, 8, 8),
         "range": torch.full((1, 3, 8, 8), 2.0)}[bad]
    with pytest.raises(ValueError, match=words):
        if measure == "insertion":
            cs_utils.evaluation.insertion_curve(tiny_cnn, x, 1, None, cell=2)
        else:
            cs_utils.evaluation_table(tiny_cnn, x, 1, {"random": random_maps()}, cell=2, progress=False)


def test_float64_images_give_the_float32_numbers(tiny_cnn):
    x64 = torch.rand(2, 3, 8, 8, dtype=torch.float64)
    for measure in (cs_utils.evaluation.insertion_curve, cs_utils.deletion_curve):
        a = measure(tiny_cnn, x64, 1, None, steps=3, cell=2).probabilities
        b = measure(tiny_cnn, x64.float(), 1, None, steps=3, cell=2).probabilities
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


# --------------------------------------------------------------------------- the table

def test_table_numbers_are_the_measures_computed_directly(tiny_cnn):
    x = torch.rand(3, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    targets = torch.tensor([0, 1, 2])
    layers = ["fc", "conv"]
    table = cs_utils.evaluation_table(tiny_cnn, x, targets, {"gradient": cs_utils.saliency_map},
                                      randomize_layers=layers, steps=4, cell=2, blur_sigma=3.0,
                                      batch_size=2, generator=torch.Generator().manual_seed(5),
                                      progress=False)
    maps = cs_utils.saliency_map(tiny_cnn, x, targets)
    scores = table["gradient"]
    torch.testing.assert_close(scores.deletion_auc,
                               cs_utils.deletion_curve(tiny_cnn, x, targets, maps, steps=4, cell=2).auc)
    torch.testing.assert_close(scores.insertion_auc, cs_utils.evaluation.insertion_curve(
        tiny_cnn, x, targets, maps, steps=4, cell=2, blur_sigma=3.0).auc)
    cascade = cs_utils.cascading_randomization(tiny_cnn, x, targets, layers,
                                               generator=torch.Generator().manual_seed(5))
    torch.testing.assert_close(scores.randomization_correlation, cascade["conv"])
    assert scores.seconds_per_image > 0
    assert table.randomized_layers == ("fc", "conv") and table.n_images == 3
    # the default: the last layer with parameters, the classifier
    default = cs_utils.evaluation_table(tiny_cnn, x, targets, {"gradient": cs_utils.saliency_map},
                                        steps=4, cell=2, progress=False)
    assert default.randomized_layers == ("fc",)
    torch.testing.assert_close(default["gradient"].randomization_correlation,
                               cs_utils.cascading_randomization(tiny_cnn, x, targets, ["fc"])["fc"])


def test_a_map_that_ignores_the_model_passes_no_sanity_check(tiny_cnn):
    x = torch.rand(4, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    table = cs_utils.evaluation_table(tiny_cnn, x, 1, {"random": random_maps(), "image mean": image_mean},
                                      randomize_layers=["fc", "conv"], steps=4, cell=4, progress=False)
    rows = {row["method"]: row for row in table.to_rows()}
    assert abs(rows["random"]["randomization_correlation"]) < 0.2        # unrelated maps
    torch.testing.assert_close(table["image mean"].randomization_correlation,
                               torch.ones(4, dtype=torch.float64))   # the same map, whatever the model


def test_three_channel_maps_are_reduced_with_abs_max(tiny_cnn):
    x = torch.rand(2, 3, 8, 8)

    def signed(model, images, target):
        return -images * torch.tensor([1.0, 2.0, 0.5]).view(1, 3, 1, 1)

    table = cs_utils.evaluation_table(tiny_cnn, x, 1, {"signed": signed}, steps=4, cell=2, progress=False)
    maps = (x * torch.tensor([1.0, 2.0, 0.5]).view(1, 3, 1, 1)).amax(1)
    torch.testing.assert_close(table["signed"].deletion_auc,
                               cs_utils.deletion_curve(tiny_cnn, x, 1, maps, steps=4, cell=2).auc)


def test_table_renders_text_markdown_and_rows(tiny_cnn):
    x = torch.rand(2, 3, 8, 8)
    table = cs_utils.evaluation_table(tiny_cnn, x, [1, 2], {"gradient": cs_utils.saliency_map,
                                                            "random": random_maps()},
                                      steps=2, cell=4, progress=False)
    rows = table.to_rows()
    assert [row["method"] for row in rows] == ["gradient", "random"]
    assert set(rows[0]) == {"method", "deletion_auc", "insertion_auc", "randomization_correlation",
                            "seconds_per_image"}
    assert all(isinstance(v, float) for row in rows for k, v in row.items() if k != "method")
    assert rows[0]["deletion_auc"] == pytest.approx(table["gradient"].deletion_auc.mean().item())
    text = str(table)
    assert text.splitlines()[0].startswith("method") and "gradient" in text and "random" in text
    assert f"{rows[1]['insertion_auc']:.3f}" in text and "mean over 2 images" in text and "fc" in text
    markdown = table.to_markdown()
    assert markdown.startswith("| method |") and "| --- |" in markdown
    assert markdown.count("\n| ") == 3 and table._repr_markdown_() == markdown


def test_table_validates_its_arguments(tiny_cnn, caller_state):
    x = torch.rand(2, 3, 8, 8)
    state = caller_state(tiny_cnn, x)
    quiet = dict(cell=2, steps=2, progress=False)
    with pytest.raises(ValueError, match="'flat' returned"):
        cs_utils.evaluation_table(tiny_cnn, x, 1, {"flat": lambda m, x, t: x.flatten(1)}, **quiet)
    with pytest.raises(ValueError, match="empty"):
        cs_utils.evaluation_table(tiny_cnn, x, 1, {}, **quiet)
    with pytest.raises(TypeError, match="callables"):
        cs_utils.evaluation_table(tiny_cnn, x, 1, {"gradient": "saliency_map"}, **quiet)
    with pytest.raises(TypeError, match="dict"):
        cs_utils.evaluation_table(tiny_cnn, x, 1, [cs_utils.saliency_map], **quiet)
    with pytest.raises(KeyError, match="'fc'"):
        cs_utils.evaluation_table(tiny_cnn, x, 1, {"g": cs_utils.saliency_map}, randomize_layers=["fcc"],
                                  **quiet)
    with pytest.raises(ValueError, match="steps"):
        cs_utils.evaluation_table(tiny_cnn, x, 1, {"g": cs_utils.saliency_map}, steps=0, progress=False)
    with pytest.raises(IndexError, match="out of range"):
        cs_utils.evaluation_table(tiny_cnn, x, 9, {"g": cs_utils.saliency_map}, **quiet)
    with pytest.raises(ValueError, match="blur_sigma"):
        cs_utils.evaluation_table(tiny_cnn, x, 1, {"g": cs_utils.saliency_map}, blur_sigma=-2, **quiet)
    state.assert_unchanged()


def test_table_shows_progress(tiny_cnn, capsys):
    cs_utils.evaluation_table(tiny_cnn, torch.rand(3, 3, 8, 8), 1, {"g": cs_utils.saliency_map}, cell=4,
                              steps=2, batch_size=2)
    assert "evaluating saliency methods" in capsys.readouterr().err
