import numpy as np
import pytest
import torch

import cs_utils


def test_labels_are_unique_and_complete():
    labels = cs_utils.data.imagenet_labels()
    assert len(labels) == 1000 and len(set(labels)) == 1000
    assert all(isinstance(s, str) and s for s in labels)


@pytest.mark.parametrize("index,label", [(0, "tench"), (1, "goldfish"), (967, "espresso"),
                                         (652, "military uniform")])
def test_known_labels(index, label):
    assert cs_utils.imagenet_label(index) == label
    assert cs_utils.imagenet_index(label) == index


def test_repeated_short_names_are_told_apart():
    # The package's short names repeat ("missile" x2, "sunglasses" x2).
    assert cs_utils.imagenet_label(657) != cs_utils.imagenet_label(744)
    assert cs_utils.imagenet_label(836) != cs_utils.imagenet_label(837)
    assert cs_utils.imagenet_index(cs_utils.imagenet_label(744)) == 744


def test_index_round_trips_for_every_class():
    assert [cs_utils.imagenet_index(name) for name in cs_utils.data.imagenet_labels()] == list(range(1000))


def test_index_accepts_case_and_wordnet_synonyms():
    assert cs_utils.imagenet_index("  ESPRESSO ") == 967
    assert cs_utils.imagenet_index("Carassius auratus") == 1


def test_label_accepts_numpy_and_tensor_ints():
    assert cs_utils.imagenet_label(np.int64(967)) == "espresso"
    assert cs_utils.imagenet_label(torch.tensor(967)) == "espresso"


@pytest.mark.parametrize("bad,error", [(1000, IndexError), (-1, IndexError), (3.0, TypeError),
                                       ("967", TypeError), (True, TypeError)])
def test_bad_class_index(bad, error):
    with pytest.raises(error, match="class"):
        cs_utils.imagenet_label(bad)


def test_unknown_class_name_suggests_close_ones():
    with pytest.raises(KeyError, match="espresso"):
        cs_utils.imagenet_index("expresso")


def test_sample_images_exist_with_sources_and_licences():
    samples = cs_utils.sample_images()
    names = [s.name for s in samples]
    assert len(names) == len(set(names)) >= 30
    for s in samples:
        assert s.path.is_file(), s
        assert s.source and s.license
    foolbox = [s for s in samples if s.source.startswith("foolbox")]
    assert len(foolbox) == 20
    for s in foolbox:  # label from the file name imagenet_NN_LABEL.jpg
        assert s.path.stem.split("_")[-1] == str(s.label)
    assert cs_utils.sample_image("coffee").label_name == "espresso"
    assert {s.name for s in cs_utils.sample_images("painting")} == {"starry_night"}
    assert "starry_night" not in {s.name for s in cs_utils.sample_images("photo")}


def test_unknown_sample_name():
    with pytest.raises(KeyError, match="chelsea"):
        cs_utils.sample_image("chelsey")
    with pytest.raises(ValueError, match="kind"):
        cs_utils.sample_images("video")
