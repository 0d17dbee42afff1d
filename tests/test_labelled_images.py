"""Loading labelled image sets: the Fashion-MNIST files (IDX format) and the digits fallback."""

import gzip

import numpy as np
import pytest
import torch

import cs_utils
from cs_utils.labeled_images import _read_idx


def _write_idx(path, array: np.ndarray):
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(s).to_bytes(4, "big") for s in array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


@pytest.fixture
def fake_fashion(tmp_path):
    images = np.arange(4 * 28 * 28).reshape(4, 28, 28) % 256
    labels = np.array([3, 1, 4, 1])
    _write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", images)
    _write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", labels)
    return tmp_path, images, labels


def test_fashion_mnist_files_are_read_exactly(fake_fashion):
    root, images, labels = fake_fashion
    data = cs_utils.load_labeled_images(root=root)
    assert data.name == "fashion_mnist" and data.source == str(root)
    assert data.images.shape == (4, 1, 28, 28) and data.images.dtype == torch.float32
    np.testing.assert_allclose(data.images[:, 0].numpy(), images / 255.0, atol=1e-7)
    assert data.labels.tolist() == [3, 1, 4, 1] and data.class_names[3] == "dress"
    assert data.rgb().shape == (4, 3, 28, 28) and torch.equal(data.rgb()[:, 2], data.images[:, 0])


def test_missing_fashion_mnist_falls_back_to_digits(tmp_path):
    data = cs_utils.load_labeled_images(root=tmp_path)
    assert data.name == "digits" and len(data) == 1797 and data.images.shape[-2:] == (8, 8)
    assert data.images.min() == 0 and data.images.max() == 1 and set(data.labels.tolist()) == set(range(10))
    with pytest.raises(FileNotFoundError, match="apt-get install dataset-fashion-mnist"):
        cs_utils.load_labeled_images(dataset="fashion_mnist", root=tmp_path)


def test_subset_and_resize_of_digits():
    from sklearn.datasets import load_digits

    first = cs_utils.load_labeled_images(5, dataset="digits")
    np.testing.assert_allclose(first.images[:, 0].numpy(), load_digits().images[:5] / 16.0)
    a, b = (cs_utils.load_labeled_images(50, dataset="digits", size=28,
                                          generator=torch.Generator().manual_seed(1)) for _ in range(2))
    assert a.images.shape == (50, 1, 28, 28) and torch.equal(a.labels, b.labels)
    assert not torch.equal(a.labels, cs_utils.load_labeled_images(50, dataset="digits").labels)
    assert a.images.min() >= 0 and a.images.max() <= 1


def test_labelled_images_errors(tmp_path):
    with pytest.raises(ValueError, match="dataset"):
        cs_utils.load_labeled_images(dataset="mnist")
    with pytest.raises(ValueError, match="1797"):
        cs_utils.load_labeled_images(5000, dataset="digits")
    with pytest.raises(ValueError, match="split"):
        cs_utils.load_labeled_images(split="valid")
    (tmp_path / "bad.gz").write_bytes(gzip.compress(b"\x00\x00\x0d\x01\x00\x00\x00\x02ab"))
    with pytest.raises(ValueError, match="IDX"):
        _read_idx(tmp_path / "bad.gz")
