import numpy as np
import pytest
import torch
from PIL import Image, ImageFilter

import cs_utils


def _check(x, h, w):
    assert isinstance(x, torch.Tensor) and x.dtype == torch.float32
    assert x.shape == (1, 3, h, w)
    assert x.min() >= 0 and x.max() <= 1


def test_load_from_path_pil_array_tensor(tmp_path):
    rng = np.random.default_rng(0)
    array = rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)
    path = tmp_path / "img.png"
    Image.fromarray(array).save(path)
    expected = torch.from_numpy(array).permute(2, 0, 1)[None].float() / 255
    for source in (path, str(path), Image.fromarray(array), array):
        x = cs_utils.load_image(source)
        _check(x, 20, 30)
        torch.testing.assert_close(x, expected)
    torch.testing.assert_close(cs_utils.load_image(expected), expected)


def test_greyscale_and_rgba_become_rgb(tmp_path):
    grey = np.arange(12, dtype=np.uint8).reshape(3, 4) * 20
    x = cs_utils.load_image(grey)
    _check(x, 3, 4)
    assert torch.equal(x[0, 0], x[0, 1]) and torch.equal(x[0, 1], x[0, 2])
    rgba = np.zeros((2, 2, 4), dtype=np.uint8)
    rgba[0, 0] = (255, 0, 0, 255)       # opaque red
    rgba[1, 1] = (0, 0, 0, 0)           # fully transparent -> white background
    y = cs_utils.load_image(rgba)
    torch.testing.assert_close(y[0, :, 0, 0], torch.tensor([1.0, 0.0, 0.0]))
    torch.testing.assert_close(y[0, :, 1, 1], torch.ones(3))
    Image.fromarray(grey).save(tmp_path / "grey.png")
    _check(cs_utils.load_image(tmp_path / "grey.png"), 3, 4)


def test_float_images_are_not_rounded_to_8_bits():
    a = np.full((4, 5, 3), 0.5, dtype=np.float64)
    x = cs_utils.load_image(a)
    _check(x, 4, 5)
    assert torch.equal(x, torch.full_like(x, 0.5))
    t = torch.rand(1, 3, 6, 7, dtype=torch.float64)
    torch.testing.assert_close(cs_utils.load_image(t), t.float())
    torch.testing.assert_close(cs_utils.load_image(t[0]), t.float())
    grey = torch.rand(6, 7)
    torch.testing.assert_close(cs_utils.load_image(grey), grey.expand(1, 3, 6, 7))


def test_float_rgba_composites_over_white():
    a = np.zeros((2, 2, 4), dtype=np.float32)
    a[0, 0] = (1, 0, 0, 1)
    a[1, 1] = (0, 0, 1, 0.5)
    x = cs_utils.load_image(a)
    torch.testing.assert_close(x[0, :, 0, 0], torch.tensor([1.0, 0.0, 0.0]))
    torch.testing.assert_close(x[0, :, 0, 1], torch.ones(3))
    torch.testing.assert_close(x[0, :, 1, 1], torch.tensor([0.5, 0.5, 1.0]))


def test_tensor_resizing_matches_pil_resizing():
    rng = np.random.default_rng(3)
    a = (rng.random((40, 60, 3)) * 255).round().astype(np.uint8)
    smooth = np.asarray(Image.fromarray(a).filter(ImageFilter.GaussianBlur(3)))
    via_pil = cs_utils.load_image(smooth, 20)
    via_tensor = cs_utils.load_image(torch.from_numpy(smooth.copy()).permute(2, 0, 1).float() / 255, 20)
    assert via_tensor.shape == via_pil.shape == (1, 3, 20, 20)
    assert (via_tensor - via_pil).abs().mean() < 0.01


def test_integer_tensor_is_0_to_255():
    t = torch.randint(0, 256, (1, 3, 5, 6), dtype=torch.uint8)
    torch.testing.assert_close(cs_utils.load_image(t), t.float() / 255)


def test_size_semantics():
    src = np.zeros((100, 200, 3), dtype=np.uint8)
    _check(cs_utils.load_image(src, 50), 50, 50)                # shorter side, centre crop
    _check(cs_utils.load_image(src, 50, crop=False), 50, 100)   # shorter side, aspect kept
    _check(cs_utils.load_image(src, (30, 40)), 30, 40)          # exact
    with pytest.raises(ValueError, match="size"):
        cs_utils.load_image(src, 0)
    with pytest.raises(ValueError, match="size"):
        cs_utils.load_image(src, (10,))


def test_centre_crop_keeps_the_centre():
    a = np.zeros((10, 30, 3), dtype=np.uint8)
    a[:, 10:20] = 255  # white middle third
    x = cs_utils.load_image(a, 10)
    assert x.min() > 0.95


def test_sample_photo_by_name():
    x = cs_utils.load_image("coffee")
    _check(x, 400, 600)
    _check(cs_utils.load_image("imagenet_05", 64), 64, 64)


def test_missing_file_names_the_file(tmp_path):
    path = tmp_path / "nope.jpg"
    with pytest.raises(FileNotFoundError, match="nope.jpg"):
        cs_utils.load_image(path)
    with pytest.raises(FileNotFoundError, match="coffee"):
        cs_utils.load_image("cofee")


def test_unreadable_file_names_the_file_and_problem(tmp_path):
    path = tmp_path / "broken.png"
    path.write_bytes(b"this is not an image")
    with pytest.raises(ValueError, match="broken.png"):
        cs_utils.load_image(path)
    with pytest.raises(IsADirectoryError, match="folder"):
        cs_utils.load_image(tmp_path)


@pytest.mark.parametrize("bad,match", [
    (np.full((4, 4, 3), 2.0), r"\[0, 1\]"),
    (np.zeros((3, 8, 8), dtype=np.uint8), "channels-first"),
    (np.zeros((4, 4, 2), dtype=np.uint8), "shape"),
    (np.full((4, 4), np.nan), "NaN"),
    (np.full((4, 4), 300, dtype=np.int32), "0..255"),
])
def test_bad_arrays(bad, match):
    with pytest.raises(ValueError, match=match):
        cs_utils.load_image(bad)


@pytest.mark.parametrize("bad,match", [
    (torch.rand(2, 3, 4, 4), "one image"),
    (torch.rand(1, 3, 4, 4) * 255, "divide 0..255"),
    (torch.full((3, 4, 4), float("nan")), "NaN"),
    (np.zeros((3, 8, 8), dtype=np.float32), "channels-first"),
])
def test_bad_float_images(bad, match):
    with pytest.raises(ValueError, match=match):
        cs_utils.load_image(bad)


def test_bad_type():
    with pytest.raises(TypeError, match="file path"):
        cs_utils.load_image(42)


def test_caller_inputs_unchanged():
    a = np.random.default_rng(1).random((8, 8, 3))
    a_copy = a.copy()
    t = torch.rand(1, 3, 8, 8)
    t_copy = t.clone()
    cs_utils.load_image(a, 4)
    out = cs_utils.load_image(t)
    out.mul_(0)  # the result is a new tensor, not a view of the caller's
    assert np.array_equal(a, a_copy) and torch.equal(t, t_copy)


def test_save_and_reload_is_exact_for_8bit_values(tmp_path):
    x = torch.randint(0, 256, (1, 3, 9, 7)).float() / 255
    path = cs_utils.image.save_image(x, tmp_path / "out.png")
    torch.testing.assert_close(cs_utils.load_image(path), x)
    with pytest.raises(FileNotFoundError, match="folder"):
        cs_utils.image.save_image(x, tmp_path / "missing" / "out.png")


def test_to_numpy_and_pil():
    x = torch.rand(1, 3, 5, 6)
    a = cs_utils.image.to_numpy(x)
    assert a.shape == (5, 6, 3)
    np.testing.assert_allclose(a, x[0].permute(1, 2, 0).numpy())
    assert cs_utils.image.to_pil(x).size == (6, 5)
    with pytest.raises(ValueError, match="batch"):
        cs_utils.image.to_numpy(torch.rand(2, 3, 5, 6))


@pytest.mark.parametrize("bad,error", [
    (np.zeros((1, 3, 4, 4)), TypeError),
    (torch.rand(3, 4, 4), ValueError),
    (torch.rand(1, 3, 4, 4) * 255, ValueError),
    (torch.zeros(1, 3, 4, 4, dtype=torch.uint8), ValueError),
])
def test_check_image(bad, error):
    with pytest.raises(error):
        cs_utils.validation.validate_image(bad)
    x = torch.rand(2, 3, 4, 4)
    assert cs_utils.validation.validate_image(x) is x
