"""Uncovering a bias: the marker by hand, the set composition, the saliency share, the whole experiment."""

import pytest
import torch

import cs_utils
from cs_utils import bias as B
from cs_utils.labeled_images import LabeledImages

# --------------------------------------------------------------------------- the marker

def test_marker_box_in_each_corner():
    assert B.marker_box(28) == (1, 1, 4, 4)
    assert B.marker_box(28, size=5, corner="bottom_right") == (22, 22, 5, 5)
    assert B.marker_box((10, 20), size=3, corner="top_right", margin=0) == (0, 17, 3, 3)
    assert B.marker_box((10, 20), size=3, corner="bottom_left", margin=2) == (5, 2, 3, 3)
    assert B.marker_box(28).area_share(28, 28) == 16 / 784
    with pytest.raises(ValueError, match="corner"):
        B.marker_box(28, corner="middle")
    with pytest.raises(ValueError, match="does not fit"):
        B.marker_box(6, size=6)


def test_stamp_marker_sets_exactly_the_box_pixels():
    images = torch.full((3, 2, 6, 7), 0.25)
    before = images.clone()
    out = B.stamp_marker(images, (1, 4, 2, 3), which=torch.tensor([True, False, True]), value=0.75)
    assert torch.equal(images, before)                          # a copy
    expected = before.clone()
    for i in (0, 2):
        for row in (1, 2):
            for col in (4, 5, 6):
                expected[i, :, row, col] = 0.75
    assert torch.equal(out, expected)
    assert torch.equal(B.stamp_marker(images, B.marker_box((6, 7), size=2))[:, :, 1:3, 1:3],
                       torch.ones(3, 2, 2, 2))                  # every image by default, value 1
    with pytest.raises(ValueError, match="not inside"):
        B.stamp_marker(images, (5, 5, 2, 2))
    with pytest.raises(ValueError, match="boolean mask"):
        B.stamp_marker(images, (0, 0, 1, 1), which=torch.tensor([1, 0, 1]))
    with pytest.raises(TypeError, match="top, left, height, width"):
        B.stamp_marker(images, (0, 0, 1))


def test_marker_share_by_hand():
    maps = torch.zeros(2, 4, 4)
    maps[0, 0, 0], maps[0, 3, 3] = 3.0, 1.0          # 3 of 4 inside the top-left 2x2 box
    maps[1] = 1.0                                     # uniform: 4 of 16 inside
    torch.testing.assert_close(B.marker_share(maps, (0, 0, 2, 2)), torch.tensor([0.75, 0.25],
                                                                               dtype=torch.float64))
    signed = torch.zeros(1, 3, 4, 4)
    signed[0, 1, 0, 1], signed[0, 2, 2, 2] = -2.0, 2.0    # abs-max over channels: 2 inside, 2 outside
    torch.testing.assert_close(B.marker_share(signed, (0, 0, 2, 2)), torch.tensor([0.5], dtype=torch.float64))
    assert torch.isnan(B.marker_share(torch.zeros(1, 4, 4), (0, 0, 2, 2))).all()
    with pytest.raises(ValueError, match=r"\(N, H, W\)"):
        B.marker_share(torch.zeros(4, 4), (0, 0, 2, 2))


# --------------------------------------------------------------------------- the sets

def toy_data(per_class=(20, 50, 30)):
    labels = torch.cat([torch.full((n,), c) for c, n in enumerate(per_class)])
    images = torch.rand(len(labels), 1, 8, 8, generator=torch.Generator().manual_seed(0)) * 0.5
    return LabeledImages(images, labels, tuple("abc"[:len(per_class)]), "toy", "test")


def test_marked_set_marks_exact_counts_at_random():
    data = toy_data()
    box = B.marker_box(8, size=2)
    marked = B.marked_set(data.rgb(), data.labels, box, marked_class=0, p_marked=0.9, p_other=0.02,
                          generator=torch.Generator().manual_seed(1))
    assert marked.marked[:20].sum() == 18                     # round(0.9 * 20)
    assert marked.marked[20:].sum() == 2                      # round(0.02 * 80) = round(1.6)
    assert marked.marker_rate(0) == 0.9 and marked.marker_rate(0, others=True) == 2 / 80
    rows, cols = box.slices()
    stamped = (marked.images[:, :, rows, cols] == 1).flatten(1).all(1)
    assert torch.equal(stamped, marked.marked)                # the mask says which images have it
    assert torch.equal(marked.images[~marked.marked], data.rgb()[~marked.marked])
    again = B.marked_set(data.rgb(), data.labels, box, marked_class=0, p_marked=0.9, p_other=0.02,
                         generator=torch.Generator().manual_seed(2))
    assert not torch.equal(again.marked, marked.marked)       # which images: drawn at random
    with pytest.raises(ValueError, match="p_other"):
        B.marked_set(data.rgb(), data.labels, box, marked_class=0, p_marked=0.9, p_other=2)


def test_shortcut_sets_split_and_mark_as_documented():
    data = toy_data((40, 40, 40))
    box = B.marker_box(8, size=2)
    train, same, moved = B.shortcut_sets(data, box, marked_class=1, p_marked=0.9, p_other=0.05,
                                         test_fraction=0.25, generator=torch.Generator().manual_seed(0))
    assert len(train) == 90 and len(same) == len(moved) == 30
    assert torch.equal(same.labels, moved.labels)             # the same test images, marked differently
    for part in (train, same):
        n_class = int((part.labels == 1).sum())
        assert part.marked[part.labels == 1].sum() == int(0.9 * n_class + 0.5)
        assert part.marked[part.labels != 1].sum() == int(0.05 * (len(part) - n_class) + 0.5)
    assert moved.marker_rate(1) == 0.0 and moved.marker_rate(1, others=True) == 1.0
    train_pixels = {tuple(x.flatten().tolist()) for x in train.images[~train.marked]}
    assert not any(tuple(x.flatten().tolist()) in train_pixels for x in same.images[~same.marked])


# --------------------------------------------------------------------------- the experiment

@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_model_is_right_for_the_wrong_reason(seed, caller_state):
    # digits, whatever is installed: the same numbers on every machine (60 steps: the fast budget)
    torch.manual_seed(123)
    before = torch.rand(3)
    torch.manual_seed(123)
    result = B.bias_experiment(60, dataset="digits", generator=torch.Generator().manual_seed(seed),
                               progress=False)
    assert torch.equal(torch.rand(3), before), "the global random state was used"
    assert result.dataset == "digits" and result.history.steps == 60
    assert result.accuracy_same > 0.8                           # it learned the task...
    assert result.accuracy_drop >= 0.20                         # ...and the marker fools it
    share = result.marker_saliency()
    assert len(share) >= 20
    assert share.mean().item() >= 5 * result.marker_area       # saliency finds the marker
    assert result.marker_ratio() == pytest.approx(share.mean().item() / result.marker_area)
    state = caller_state(result.model, result.same.images)
    text = result.summary()
    state.assert_unchanged()
    assert "drop" in text and "x the marker" in text and result.class_names[result.marked_class] in text


def test_the_experiment_uses_the_public_api_and_validates():
    assert cs_utils.bias_experiment is B.bias_experiment and cs_utils.bias.marker_share is B.marker_share
    with pytest.raises(ValueError, match="steps"):
        B.bias_experiment(0)
    with pytest.raises(IndexError, match="marked_class"):
        B.bias_experiment(1, marked_class=10, progress=False)
