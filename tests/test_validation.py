"""cs_utils.validation: one behaviour for every input check, and every technique held to it.

The contract part runs every public technique that takes images on a tiny model and
feeds it what a hostile test found unchecked: NaN and infinite pixels, an empty
batch, a tensor on the meta device, and float64 images for a float32 model.
"""

import numpy as np
import pytest
import torch
from models_by_hand import unusable_image
from torch import nn

import cs_utils
from cs_utils import validation

# --------------------------------------------------------------------------- class indices


@pytest.mark.parametrize("target, expected", [
    (3, [3, 3]),
    (np.int64(2), [2, 2]),
    (torch.tensor(1), [1, 1]),
    ([0, 4], [0, 4]),
    ((4, 0), [4, 0]),
    (np.array([1, 2]), [1, 2]),
    (torch.tensor([2, 3], dtype=torch.int32), [2, 3]),
    (np.array([4]), [4, 4]),
])
def test_class_indices_accept_every_integer_form(target, expected):
    out = validation.class_indices(target, 2, classes=5)
    assert out.dtype == torch.long and out.device.type == "cpu" and out.tolist() == expected


@pytest.mark.parametrize("target, error, words", [
    (2.0, TypeError, "class index"),
    (True, TypeError, "class index"),
    ("goldfish", TypeError, "imagenet_index"),
    (np.array([0.5, 1.0]), TypeError, "integer"),
    (torch.tensor([0.5, 1.0]), TypeError, "integer"),
    ([1, 2.5], TypeError, "integer"),
    ([1, 2, 3], ValueError, "3 class indices for 2 images"),
    (np.zeros((2, 2), dtype=int), ValueError, "one per image"),
    (-1, IndexError, "negative"),
    ([0, 5], IndexError, "out of range: the model's classes are 0..4"),
    (None, TypeError, "class index"),
])
def test_class_indices_errors_say_what_to_do(target, error, words):
    with pytest.raises(error, match=words):
        validation.class_indices(target, 2, classes=5)


def test_class_indices_leave_the_callers_tensor_alone():
    target = torch.tensor([3])
    out = validation.class_indices(target, 3)
    out[0] = 0
    assert target.tolist() == [3] and out.tolist() == [0, 3, 3]


def test_num_classes_is_the_last_linear_layer(tiny_cnn):
    assert validation.num_classes(tiny_cnn) == 5
    assert validation.num_classes(nn.Conv2d(3, 4, 1)) is None


# --------------------------------------------------------------------------- numbers

def test_numbers_and_sizes():
    three = validation.positive_int(np.int32(3), "n")
    assert three == 3 and isinstance(three, int)
    assert validation.non_negative_int(0, "n") == 0
    assert validation.int_pair(4, "window") == (4, 4) and validation.int_pair([2, 3], "window") == (2, 3)
    assert validation.pixel_size(8 / 255) == pytest.approx(8 / 255)
    assert validation.probability(1.0, "p") == 1.0
    for bad in (0, -1, 2.5, True, "3", None):
        with pytest.raises(ValueError, match="n must be a positive int"):
            validation.positive_int(bad, "n")
    for bad in (0, (2,), (2, 0), (2.0, 3), "4"):
        with pytest.raises(ValueError, match="window must be a positive int"):
            validation.int_pair(bad, "window")
    with pytest.raises(ValueError, match="8/255"):
        validation.pixel_size(8)
    with pytest.raises(TypeError, match="pixel units"):
        validation.pixel_size("0.1")
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        validation.probability(1.0, "confidence", allow_one=False)


# --------------------------------------------------------------------------- images and models

@pytest.mark.parametrize("bad, error, words", [
    (np.zeros((1, 3, 4, 4)), TypeError, "torch.Tensor"),
    (torch.rand(3, 4, 4), ValueError, r"x\[None\]"),
    (torch.rand(0, 3, 4, 4), ValueError, "empty batch"),
    (torch.rand(1, 3, 0, 4), ValueError, "no pixels"),
    (torch.zeros(1, 3, 4, 4, dtype=torch.uint8), ValueError, "float"),
    (torch.rand(1, 3, 4, 4) * 255, ValueError, "divide 0..255"),
    (torch.full((1, 3, 4, 4), 0.5).index_fill_(3, torch.tensor([2]), float("nan")), ValueError, "NaN"),
    (torch.full((1, 3, 4, 4), 0.5).index_fill_(2, torch.tensor([0]), float("inf")), ValueError, "infinite"),
    (torch.empty(1, 3, 4, 4, device="meta"), ValueError, "meta device"),
])
def test_check_image_refuses_with_a_reason(bad, error, words):
    with pytest.raises(error, match=words):
        validation.validate_image(bad)


def test_nan_message_counts_the_bad_values():
    x = torch.full((1, 3, 2, 2), 0.5)
    x[0, 1, 0, 0] = float("nan")
    x[0, 2, 1, 1] = -float("inf")
    with pytest.raises(ValueError, match=r"\(2 of 12\)"):
        validation.validate_image(x)


def test_model_input_is_a_converted_detached_copy(tiny_cnn):
    x = torch.rand(2, 3, 4, 4, dtype=torch.float64, requires_grad=True)
    out = validation.model_input(tiny_cnn, x)
    assert out.dtype == torch.float32 and not out.requires_grad and out.data_ptr() != x.data_ptr()
    torch.testing.assert_close(out, x.detach().float())
    out.zero_()
    assert x.detach().abs().sum() > 0, "the caller's tensor changed"
    same = validation.model_input(tiny_cnn.double(), x)
    assert same.dtype == torch.float64 and same.data_ptr() != x.data_ptr()


def test_check_model_refuses_non_modules_and_meta_weights():
    with pytest.raises(TypeError, match="torch.nn.Module"):
        validation.validate_model(lambda x: x)
    with torch.device("meta"):
        model = nn.Linear(3, 2)
    with pytest.raises(ValueError, match="meta device"):
        validation.validate_model(model)


def test_check_layers_lists_close_names(tiny_cnn):
    assert validation.validate_layers(tiny_cnn, "conv") == ("conv",)
    assert validation.validate_layers(tiny_cnn, ["conv", "fc"]) == ("conv", "fc")
    with pytest.raises(KeyError, match="'conv'"):
        validation.validate_layer(tiny_cnn, "cnov")
    with pytest.raises(ValueError, match="non-empty list of layer names"):
        validation.validate_layers(tiny_cnn, [])
    with pytest.raises(TypeError, match="layer names are strings"):
        validation.validate_layer(tiny_cnn, 3)


# --------------------------------------------------------------------------- every technique


def _techniques():
    """name -> call(model, x); each returns an image-like result or a tuple whose first item is."""
    quiet = dict(progress=False)
    return {
        "saliency_map": lambda m, x: cs_utils.saliency_map(m, x, 1),
        "occlusion_map": lambda m, x: cs_utils.occlusion_map(m, x, 1, window=4, stride=4, **quiet),
        "guided_backprop": lambda m, x: cs_utils.guided_backprop(m, x, 1),
        "deletion_curve": lambda m, x: cs_utils.deletion_curve(m, x, 1, None, steps=2, cell=4).auc,
        "fooling_step": lambda m, x: cs_utils.fooling_step(m, x, 2),
        "fooling_image": lambda m, x: cs_utils.fooling_image(m, x, 2, max_steps=2),
        "fgsm": lambda m, x: cs_utils.fgsm(m, x, 1),
        "pgd": lambda m, x: cs_utils.pgd(m, x, 1, steps=2, generator=torch.Generator().manual_seed(0)),
        "class_visualization_step": lambda m, x: cs_utils.class_visualization_step(m, x, 1),
        "deepdream_step": lambda m, x: cs_utils.deepdream_step(m, x, "relu", jitter=1),
        "deepdream": lambda m, x: cs_utils.deepdream(m, x, "relu", octaves=1, steps_per_octave=2, jitter=1,
                                                     **quiet),
        "invert_features": lambda m, x: cs_utils.invert_features(m, x, "relu", steps=2, **quiet),
        "relative_feature_error": lambda m, x: cs_utils.dream.relative_feature_error(m, x, x.clamp(0, 1),
                                                                                     "relu"),
        "style_transfer": lambda m, x: cs_utils.style_transfer(
            m, x, torch.rand(1, 3, 8, 8), style_layers=["conv"], content_layer="relu", steps=2, pad=0,
            **quiet),
        "synthesize_texture": lambda m, x: cs_utils.synthesize_texture(m, x, ["conv"], steps=2, pad=0,
                                                                       margin=0, **quiet),
        "compute_features": lambda m, x: cs_utils.compute_features(m, x, "relu", **quiet),
        "top_activations": lambda m, x: cs_utils.top_activations(m, x, "relu", [0], k=1, **quiet).value,
    }


TECHNIQUES = sorted(_techniques())


def _first(result):
    return result[0] if isinstance(result, tuple) else result


@pytest.mark.parametrize("name", TECHNIQUES)
@pytest.mark.parametrize("bad, words", [
    ("nan", "NaN"),
    ("inf", "infinite"),
    ("empty", "empty batch"),
    ("meta", "meta device"),
])
def test_every_technique_refuses_unusable_images(tiny_cnn, caller_state, hook_count, name, bad, words):
    x = unusable_image(bad)
    state = caller_state(tiny_cnn)
    before = x.clone() if bad != "meta" else None
    with pytest.raises(ValueError, match=words):
        _techniques()[name](tiny_cnn, x)
    state.assert_unchanged()
    if before is not None:
        torch.testing.assert_close(x, before, rtol=0, atol=0, equal_nan=True)
    assert hook_count(tiny_cnn) == 0


@pytest.mark.parametrize("name", TECHNIQUES)
def test_every_technique_takes_float64_images_with_a_float32_model(tiny_cnn, caller_state, name):
    torch.manual_seed(0)
    x64 = torch.rand(1, 3, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    state = caller_state(tiny_cnn, x64)
    out64 = _first(_techniques()[name](tiny_cnn, x64))
    state.assert_unchanged()
    assert torch.isfinite(torch.as_tensor(out64, dtype=torch.float64)).all()
    # the same numbers as for the float32 image (up to float32 rounding of the input)
    torch.manual_seed(0)
    out32 = _first(_techniques()[name](tiny_cnn, x64.float()))
    torch.testing.assert_close(torch.as_tensor(out64).double(), torch.as_tensor(out32).double(),
                               rtol=1e-4, atol=1e-4)
