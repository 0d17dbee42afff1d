import pytest
import torch
from models_by_hand import unusable_image
from torch import nn

import cs_utils
from cs_utils.path_similarity import (
    PathSimilarity,
    class_path_similarity,
    default_layers,
    layer_vectors,
    path_similarity,
    path_similarity_controls,
    plot_path_similarity,
    reference_photos,
)


class TwoLayers(nn.Module):
    """Layer ``a`` passes the image on (its spatial mean is the mean colour); layer ``b`` maps a
    colour (r, g, b) to (r, g - b); ``pool`` averages ``b`` over space; ``fc`` gives 3 scores."""

    def __init__(self):
        super().__init__()
        self.a = nn.Identity()
        self.b = nn.Conv2d(3, 2, 1, bias=False)
        with torch.no_grad():
            self.b.weight.copy_(torch.tensor([[1.0, 0, 0], [0, 1, -1]]).view(2, 3, 1, 1))
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(1))
        self.fc = nn.Linear(2, 3)

    def forward(self, x):
        return self.fc(self.pool(self.b(self.a(x))))


def flat(*colours):
    """One 4x4 image of each (r, g, b) colour."""
    return torch.tensor(colours, dtype=torch.float32)[:, :, None, None].expand(-1, 3, 4, 4).clone()


RED = (1.0, 0.0, 0.0)
# cosine distance to red at layer a (the colour) and at layer b ((r, g - b)):
#   o1 (0.8, 0.2, 0)    a: 1 - 0.8 / sqrt(0.68) = 0.0299    b: (0.8, 0.2)  0.0299
#   o2 (0, 1, 0)        a: 1                                b: (0, 1)      1
#   o3 (0.5, 0.5, 0.4)  a: 1 - 0.5 / sqrt(0.66) = 0.3845    b: (0.5, 0.1)  1 - 0.5 / sqrt(0.26) = 0.0194
#   o4 (0.6, 0, 0.8)    a: 0.4                              b: (0.6, -0.8) 0.4
# order at a: o1 < o3 < o4 < o2; at b: o3 < o1 < o4 < o2
OTHERS = [(0.8, 0.2, 0.0), (0.0, 1.0, 0.0), (0.5, 0.5, 0.4), (0.6, 0.0, 0.8)]


def test_layer_scores_are_the_share_of_other_photos_farther_by_hand():
    model = TwoLayers().eval()
    grey = (0.5, 0.5, 0.5)       # a: 1 - 0.5 / sqrt(0.75) = 0.423, only o2 farther; b: (0.5, 0), distance 0
    result = path_similarity(model, flat(RED, OTHERS[0], grey), flat(RED), flat(*OTHERS), layers=["a", "b"])
    expected = torch.tensor([[1.0, 1.0],                  # the reference itself: every other photo is farther
                             [3.5 / 4, 2.5 / 4],          # equal to o1: a tie counts half
                             [1 / 4, 1.0]])               # grey departs at layer a, joins at b
    torch.testing.assert_close(result.per_layer, expected)
    torch.testing.assert_close(result.score, torch.tensor([1.0, 0.75, 0.625]))
    assert result.layers == ("a", "b") and result.references == ("reference 0",)
    assert result.others == ("other 0", "other 1", "other 2", "other 3")
    # the 2-d output of "pool" gives the same vectors as averaging "b" over space
    pooled = path_similarity(model, flat(grey), flat(RED), flat(*OTHERS), layers="pool")
    torch.testing.assert_close(pooled.per_layer, torch.tensor([[1.0]]))


def test_the_references_count_through_their_mean_vector():
    model = TwoLayers().eval()
    images = flat((0.2, 0.7, 0.1), (0.9, 0.3, 0.5))
    two = path_similarity(model, images, flat((1, 0, 0), (0, 0, 1)), flat(*OTHERS), layers=["a", "b"],
                          reference_names=["red", "blue"])
    purple = path_similarity(model, images, flat((0.5, 0, 0.5)), flat(*OTHERS), layers=["a", "b"])
    torch.testing.assert_close(two.per_layer, purple.per_layer)
    assert two.references == ("red", "blue")


def test_a_zero_vector_is_farthest():
    model = TwoLayers().eval()
    black = path_similarity(model, flat((0, 0, 0)), flat(RED), flat(*OTHERS), layers="a")
    # distance 1, as far as o2 (0, 1, 0), whose cosine with red is exactly 0: a tie, counted half
    assert black.per_layer.tolist() == [[0.5 / 4]]


def test_float_needs_one_image():
    model = TwoLayers().eval()
    result = path_similarity(model, flat(RED, RED), flat(RED), flat(*OTHERS), layers="a")
    with pytest.raises(TypeError, match="one image"):
        float(result)
    assert float(path_similarity(model, flat(RED), flat(RED), flat(*OTHERS), layers="a")) == 1.0
    assert "score=[1.00, 1.00]" in repr(result)


def test_caller_state_is_unchanged(caller_state, hook_count):
    model = TwoLayers().train()
    model.b.eval()                                      # a mixed state must come back as it was
    model.fc.weight.requires_grad_(False)
    x = flat((0.3, 0.6, 0.2)).requires_grad_(True)
    refs, others = flat(RED), flat(*OTHERS)
    state = caller_state(model, x, refs, others)
    path_similarity(model, x, refs, others, layers=["a", "b"])
    state.assert_unchanged()
    assert hook_count(model) == 0 and x.grad is None


def test_hooks_and_modes_are_restored_after_an_exception(caller_state, hook_count, monkeypatch):
    model = TwoLayers().train()
    state = caller_state(model)

    def broken(x):
        raise RuntimeError("layer b broke")

    monkeypatch.setattr(model.b, "forward", broken)
    with pytest.raises(RuntimeError, match="layer b broke"):
        path_similarity(model, flat(RED), flat(RED), flat(*OTHERS), layers=["a", "b"])
    assert hook_count(model) == 0
    state.assert_unchanged()


@pytest.mark.parametrize("bad", ["nan", "range", "empty"])
def test_unusable_images_are_refused(bad):
    model = TwoLayers().eval()
    x = unusable_image(bad)[..., :4, :4]
    for kwargs in (dict(images=x), dict(references=x), dict(others=x)):
        args = dict(images=flat(RED), references=flat(RED), others=flat(*OTHERS))
        args.update(kwargs)
        with pytest.raises(ValueError, match=next(iter(kwargs))):
            path_similarity(model, layers="a", **args)


def test_bad_arguments_say_what_to_do():
    model = TwoLayers().eval()
    with pytest.raises(ValueError, match="at least 2"):
        path_similarity(model, flat(RED), flat(RED), flat(OTHERS[0]), layers="a")
    with pytest.raises(KeyError, match="layer_names"):
        path_similarity(model, flat(RED), flat(RED), flat(*OTHERS), layers=["a", "bb"])
    with pytest.raises(ValueError, match="non-empty"):
        path_similarity(model, flat(RED), flat(RED), flat(*OTHERS), layers=[])
    with pytest.raises(ValueError, match=r"pass layers=\[\.\.\.\]"):
        path_similarity(model, flat(RED), flat(RED), flat(*OTHERS))
    with pytest.raises(ValueError, match="one per image"):
        path_similarity(model, flat(RED), flat(RED), flat(*OTHERS), layers="a", other_names=["x"])
    with pytest.raises(TypeError, match="torch.nn.Module"):
        path_similarity("model", flat(RED), flat(RED), flat(*OTHERS), layers="a")
    with pytest.raises(ValueError, match="not \\(N, C, \\.\\.\\.\\) activations"):
        layer_vectors(nn.Sequential(nn.Flatten(0), nn.Linear(48, 2)).eval(), flat(RED), ["0"])
    with pytest.raises(IndexError, match="out of range"):
        class_path_similarity(model, flat(RED), 3, layers="a")
    with pytest.raises(TypeError, match="dict"):
        plot_path_similarity([])


def test_default_layers_of_lite0_cover_each_resolution(lite0):
    assert default_layers(lite0) == ("stem", "blocks.0", "blocks.2", "blocks.4", "blocks.7", "blocks.10",
                                     "blocks.15", "pool")


def test_offline_references_are_the_labelled_photos_or_the_top_scoring_ones(lite0):
    strawberry = cs_utils.imagenet_index("strawberry")
    references, others, how = reference_photos(lite0, strawberry)
    assert references == ["imagenet_04"] and "labelled" in how
    assert len(others) == 31 and "imagenet_04" not in others
    photo = cs_utils.load_image(cs_utils.data.sample_image("imagenet_04").path, 224)
    result = class_path_similarity(lite0, photo, strawberry)
    assert result.per_layer.tolist() == [[1.0] * 8] and result.target == strawberry
    # without its photo the references are the 3 photos the network scores highest for the class
    references, others, how = reference_photos(lite0, strawberry, exclude="imagenet_04")
    assert len(references) == 3 and "imagenet_04" not in references + others and "scores highest" in how
    assert len(others) == 28
    with pytest.raises(KeyError, match="not offline photos"):
        reference_photos(lite0, strawberry, exclude=["strawberry.jpg"])


def test_controls_of_lite0_mean_high_for_the_class_path_and_low_off_it(lite0, caller_state, hook_count):
    strawberry = cs_utils.imagenet_index("strawberry")
    viz = torch.full((1, 3, 224, 224), 0.5)
    state = caller_state(lite0, viz)
    results = path_similarity_controls(lite0, strawberry, images={"grey": viz},
                                       generator=torch.Generator().manual_seed(0))
    state.assert_unchanged()
    assert list(results) == ["held-out photo", "noise", "attacked photo", "adversarial", "grey"]
    assert all(isinstance(r, PathSimilarity) and r.per_layer.shape == (1, 8) for r in results.values())
    first = results["held-out photo"]
    # strawberry has one labelled photo: it is held out, the references are the top-scoring other photos
    assert "held out: imagenet_04" in first.how and len(first.references) == 3
    assert all(r.references == first.references and r.others == first.others for r in results.values())
    assert "imagenet_04" not in first.others and len(first.others) == 27
    held, noise, source, adversarial = (results[k].per_layer[0] for k in
                                        ("held-out photo", "noise", "attacked photo", "adversarial"))
    # measured: held-out 0.54, noise 0.35, attacked photo 0.07, after the attack 0.26 (about 0.03 up to
    # blocks.10, then 0.93 and 0.89-1.0 depending on the rounding of the attack's 10 sign steps): the
    # attack reaches the class only at the last layers
    assert held.mean() > noise.mean() > source.mean()
    assert adversarial[-1] >= 0.8 and adversarial[:6].max() <= 0.2 and source[-1] <= 0.3
    assert noise[2:6].max() <= 0.15
    with pytest.raises(ValueError, match="name of a control"):
        path_similarity_controls(lite0, strawberry, images={"noise": viz})
    with pytest.raises(TypeError, match="dict"):
        path_similarity_controls(lite0, strawberry, images=viz)
    with pytest.raises(ValueError, match="attack_steps"):
        path_similarity_controls(lite0, strawberry, attack_steps=0)
    fig = plot_path_similarity(results)
    assert len(fig.axes[0].lines) == 6                  # five results and the dashed 0.5
    assert hook_count(lite0) == 0
