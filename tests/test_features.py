import copy
import gzip
import math

import numpy as np
import pytest
import torch
from torch import nn

import cs_utils
from cs_utils.features import _read_idx
from cs_utils.models import Conv2dSame

# --------------------------------------------------------------------------- labelled images


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
    data = cs_utils.load_labelled_images(root=root)
    assert data.name == "fashion_mnist" and data.source == str(root)
    assert data.images.shape == (4, 1, 28, 28) and data.images.dtype == torch.float32
    np.testing.assert_allclose(data.images[:, 0].numpy(), images / 255.0, atol=1e-7)
    assert data.labels.tolist() == [3, 1, 4, 1] and data.class_names[3] == "dress"
    assert data.rgb().shape == (4, 3, 28, 28) and torch.equal(data.rgb()[:, 2], data.images[:, 0])


def test_missing_fashion_mnist_falls_back_to_digits(tmp_path):
    data = cs_utils.load_labelled_images(root=tmp_path)
    assert data.name == "digits" and len(data) == 1797 and data.images.shape[-2:] == (8, 8)
    assert data.images.min() == 0 and data.images.max() == 1 and set(data.labels.tolist()) == set(range(10))
    with pytest.raises(FileNotFoundError, match="apt-get install dataset-fashion-mnist"):
        cs_utils.load_labelled_images(dataset="fashion_mnist", root=tmp_path)


def test_subset_and_resize_of_digits():
    from sklearn.datasets import load_digits

    first = cs_utils.load_labelled_images(5, dataset="digits")
    np.testing.assert_allclose(first.images[:, 0].numpy(), load_digits().images[:5] / 16.0)
    a, b = (cs_utils.load_labelled_images(50, dataset="digits", size=28,
                                          generator=torch.Generator().manual_seed(1)) for _ in range(2))
    assert a.images.shape == (50, 1, 28, 28) and torch.equal(a.labels, b.labels)
    assert not torch.equal(a.labels, cs_utils.load_labelled_images(50, dataset="digits").labels)
    assert a.images.min() >= 0 and a.images.max() <= 1


def test_labelled_images_errors(tmp_path):
    with pytest.raises(ValueError, match="dataset"):
        cs_utils.load_labelled_images(dataset="mnist")
    with pytest.raises(ValueError, match="1797"):
        cs_utils.load_labelled_images(5000, dataset="digits")
    with pytest.raises(ValueError, match="split"):
        cs_utils.load_labelled_images(split="valid")
    (tmp_path / "bad.gz").write_bytes(gzip.compress(b"\x00\x00\x0d\x01\x00\x00\x00\x02ab"))
    with pytest.raises(ValueError, match="IDX"):
        _read_idx(tmp_path / "bad.gz")


# --------------------------------------------------------------------------- training and filters


def _toy_task(n=256, generator=None):
    """Bright left half vs bright right half: any small CNN can learn it."""
    labels = torch.randint(0, 2, (n,), generator=generator)
    images = torch.rand(n, 1, 12, 12, generator=generator) * 0.3
    images[labels == 0, :, :, :6] += 0.6
    images[labels == 1, :, :, 6:] += 0.6
    return images, labels


def test_train_classifier_lowers_the_loss_and_keeps_the_caller_state(caller_state):
    gen = torch.Generator().manual_seed(0)
    images, labels = _toy_task(generator=gen)
    torch.manual_seed(0)
    model = cs_utils.SmallCNN(num_classes=2, kernel_size=5, width=4).eval()
    before = model.conv1.weight.detach().clone()
    state = caller_state(model, images, labels)
    history = cs_utils.train_classifier(model, images, labels, steps=40, batch_size=32, lr=0.01,
                                        generator=gen, progress=False)
    state.assert_unchanged()
    assert history.steps == 40 and len(history.accuracy) == 40 and history.seconds > 0
    assert np.mean(history.loss[-5:]) < 0.5 * np.mean(history.loss[:5])
    assert not torch.equal(model.conv1.weight, before)
    assert cs_utils.classifier_accuracy(model, images, labels) > 0.9


def test_train_classifier_is_repeatable_with_a_generator():
    images, labels = _toy_task(64, torch.Generator().manual_seed(3))
    runs = []
    for _ in range(2):
        torch.manual_seed(0)
        model = cs_utils.SmallCNN(num_classes=2, kernel_size=3, width=2)
        runs.append(cs_utils.train_classifier(model, images, labels, steps=5, batch_size=16,
                                              generator=torch.Generator().manual_seed(7),
                                              progress=False).loss)
    assert runs[0] == runs[1]


def test_train_classifier_restores_mode_after_an_error(caller_state):
    model = cs_utils.SmallCNN(num_classes=2, kernel_size=3, width=2)
    images = torch.rand(8, 1, 12, 12)
    state = caller_state(model, images)
    with pytest.raises(ValueError, match=r"class indices in \[0, 1\]"):
        cs_utils.train_classifier(model, images, torch.full((8,), 5), steps=2, batch_size=4, progress=False)
    state.assert_unchanged()
    with pytest.raises(ValueError, match="labels"):
        cs_utils.train_classifier(model, images, torch.zeros(7, dtype=torch.long), steps=1, progress=False)
    with pytest.raises(ValueError, match="steps"):
        cs_utils.train_classifier(model, images, torch.zeros(8, dtype=torch.long), steps=0, progress=False)


def test_filter_images_rescale_each_filter():
    weight = torch.tensor([[[[1.0, 3.0], [-1.0, 0.0]]], [[[2.0, 2.0], [2.0, 2.0]]]])
    copy_ = weight.clone()
    tiles = cs_utils.filter_images(weight)
    expected = torch.tensor([[[[0.5, 1.0], [0.0, 0.25]]], [[[0.5, 0.5], [0.5, 0.5]]]])
    assert torch.allclose(tiles, expected) and torch.equal(weight, copy_)
    conv = nn.Conv2d(3, 5, 3)
    tiles = cs_utils.filter_images(conv)
    assert tiles.shape == (5, 3, 3, 3) and not tiles.requires_grad
    assert torch.allclose(tiles.flatten(1).amin(1), torch.zeros(5))
    assert torch.allclose(tiles.flatten(1).amax(1), torch.ones(5))
    with pytest.raises(ValueError, match="C_out, C_in"):
        cs_utils.filter_images(torch.zeros(3, 3))
    with pytest.raises(TypeError, match="weight"):
        cs_utils.filter_images(nn.ReLU())


def test_pretrained_first_layer_filters(lite0):
    tiles = cs_utils.filter_images(lite0.stem[0])
    assert tiles.shape == (32, 3, 3, 3)
    weight = lite0.stem[0].weight.detach()[4]
    assert torch.allclose(tiles[4], (weight - weight.min()) / (weight.max() - weight.min()))


# --------------------------------------------------------------------------- neighbours


def test_nearest_neighbours_by_hand():
    gallery = torch.tensor([[0.0, 0.0], [3.0, 4.0], [1.0, 0.0], [0.0, 2.0]])
    queries = torch.tensor([[0.0, 0.0], [3.0, 3.0]])
    q_copy, g_copy = queries.clone(), gallery.clone()
    distances, indices = cs_utils.nearest_neighbours(queries, gallery, 3)
    assert indices.tolist() == [[0, 2, 3], [1, 3, 2]]
    expected = [[0.0, 1.0, 2.0], [1.0, math.sqrt(10), math.sqrt(13)]]
    np.testing.assert_allclose(distances.numpy(), expected, rtol=1e-6)
    distances, indices = cs_utils.nearest_neighbours(queries, gallery, 2, exclude=[0, -1])
    assert indices.tolist() == [[2, 3], [1, 3]]
    assert torch.equal(queries, q_copy) and torch.equal(gallery, g_copy)


def test_nearest_neighbours_flattens_images_and_keeps_ties_in_order():
    gallery = torch.zeros(4, 3, 2, 2)
    gallery[1] += 1.0
    gallery[3] += 1.0
    query = torch.full((1, 3, 2, 2), 0.9)
    _, indices = cs_utils.nearest_neighbours(query, gallery, 4)
    assert indices.tolist() == [[1, 3, 0, 2]]


def test_nearest_neighbours_errors():
    g = torch.rand(5, 4)
    with pytest.raises(ValueError, match="k=6"):
        cs_utils.nearest_neighbours(g[:1], g, 6)
    with pytest.raises(ValueError, match="k=5"):
        cs_utils.nearest_neighbours(g[:1], g, 5, exclude=[0])
    with pytest.raises(ValueError, match="like with like"):
        cs_utils.nearest_neighbours(torch.rand(1, 3), g, 1)
    with pytest.raises(ValueError, match="batch axis"):
        cs_utils.nearest_neighbours(torch.rand(4), g, 1)
    with pytest.raises(ValueError, match="one index per query"):
        cs_utils.nearest_neighbours(g[:2], g, 1, exclude=[0])
    with pytest.raises(ValueError, match="k must be"):
        cs_utils.nearest_neighbours(g[:1], g, 0)


def test_gallery_copies_are_flips_and_shifts():
    photo = torch.rand(1, 3, 20, 20)
    gallery = cs_utils.gallery_with_copies([photo, "coffee"], 16, shift=4)
    assert gallery.images.shape == (6, 3, 16, 16)
    assert gallery.kind == ("original",) * 2 + ("flipped",) * 2 + ("shifted",) * 2
    assert gallery.source.tolist() == [0, 1, 0, 1, 0, 1] and gallery.names[1] == "coffee"
    assert torch.equal(gallery.images[0], photo[0, :, :16, :16])
    assert torch.equal(gallery.images[2], photo[0, :, :16, :16].flip(-1))
    assert torch.equal(gallery.images[4], photo[0, :, 4:20, 4:20])
    assert gallery.index_of("coffee", "shifted") == 5 and gallery.label(3) == "coffee (flipped)"
    with pytest.raises(KeyError, match="no original copy"):
        gallery.index_of("chelsea")
    with pytest.raises(ValueError, match="shift"):
        cs_utils.gallery_with_copies([photo], 16, shift=-1)


def test_compute_features_matches_the_model_and_batches(lite0, caller_state):
    x = torch.rand(5, 3, 64, 64)
    state = caller_state(lite0, x)
    features = cs_utils.compute_features(lite0, x, batch_size=2, progress=False)
    state.assert_unchanged()
    with torch.no_grad():
        expected = lite0.features(x)
    assert features.shape == (5, 1280) and not features.requires_grad
    torch.testing.assert_close(features, expected, rtol=1e-4, atol=1e-5)
    blocks = cs_utils.compute_features(lite0, x[:1], "blocks.2", progress=False)
    assert blocks.shape == (1, 24 * 16 * 16)
    with pytest.raises(KeyError, match="blocks.2"):
        cs_utils.compute_features(lite0, x, "block.2", progress=False)
    state.assert_unchanged()
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        cs_utils.compute_features(lite0, x * 3, progress=False)


def test_features_find_the_flipped_copy(lite0):
    """Golden behaviour of the pretrained model: a flipped photo is its nearest neighbour."""
    gallery = cs_utils.gallery_with_copies(["coffee", "chelsea", "rocket", "flower"], 96, shift=12)
    features = cs_utils.compute_features(lite0, gallery.images, progress=False)
    _, indices = cs_utils.nearest_neighbours(features[:4], features, 1, exclude=torch.arange(4))
    assert gallery.source[indices[:, 0]].tolist() == [0, 1, 2, 3]


def test_random_crops_are_repeatable_and_in_range():
    images = [torch.rand(1, 3, 30, 40), torch.rand(1, 3, 50, 20)]
    a, source = cs_utils.random_crops(images, 3, 16, generator=torch.Generator().manual_seed(0))
    b, _ = cs_utils.random_crops(images, 3, 16, generator=torch.Generator().manual_seed(0))
    assert a.shape == (6, 3, 16, 16) and torch.equal(a, b) and source.tolist() == [0, 0, 0, 1, 1, 1]
    assert a.min() >= 0 and a.max() <= 1
    whole, _ = cs_utils.random_crops(torch.rand(1, 3, 16, 16), 1, 16, scale=(1.0, 1.0))
    assert whole.shape == (1, 3, 16, 16)
    with pytest.raises(ValueError, match="scale"):
        cs_utils.random_crops(images, 1, 16, scale=(0.5, 1.5))


# --------------------------------------------------------------------------- embeddings


def test_pca_embedding_finds_the_main_axis():
    rng = np.random.default_rng(0)
    points = np.zeros((50, 5))
    points[:, 2] = np.linspace(-10, 10, 50)
    points[:, 4] = rng.normal(0, 0.1, 50)
    emb = cs_utils.embed_2d(points, "pca")
    assert emb.shape == (50, 2)
    assert abs(np.corrcoef(emb[:, 0], points[:, 2])[0, 1]) > 0.999


def test_tsne_separates_two_blobs_and_knn_accuracy():
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(40, 20, generator=gen)
    b = torch.randn(40, 20, generator=gen) + 8
    labels = torch.cat([torch.zeros(40), torch.ones(40)]).long()
    emb = cs_utils.embed_2d(torch.cat([a, b]), perplexity=10, generator=gen)
    assert emb.shape == (80, 2)
    assert cs_utils.knn_accuracy(emb, labels, k=3) == 1.0
    random_labels = torch.randint(0, 2, (80,), generator=torch.Generator().manual_seed(1))
    assert cs_utils.knn_accuracy(torch.randn(80, 2, generator=gen), random_labels) < 0.8
    again = cs_utils.embed_2d(torch.cat([a, b]), perplexity=10, generator=torch.Generator().manual_seed(0))
    assert again.shape == emb.shape


def test_knn_accuracy_by_hand():
    # 1-NN on a line: points 0,1 (class 0) and 10,11 (class 1), 2 folds -> every point's neighbour
    # in the other fold has its class.
    points = np.array([[0.0], [10.0], [1.0], [11.0]])
    assert cs_utils.knn_accuracy(points, [0, 1, 0, 1], k=1, folds=2) == 1.0
    assert cs_utils.knn_accuracy(points, [0, 1, 1, 0], k=1, folds=2) == 0.0


def test_embedding_errors():
    with pytest.raises(ValueError, match="method"):
        cs_utils.embed_2d(np.zeros((5, 3)), "umap")
    with pytest.raises(ValueError, match="perplexity"):
        cs_utils.embed_2d(np.random.default_rng(0).normal(size=(5, 3)), perplexity=30)
    with pytest.raises(ValueError, match="one label per point"):
        cs_utils.knn_accuracy(np.zeros((5, 2)), [0, 1])


# --------------------------------------------------------------------------- receptive fields


def _stack(*layers):
    model = nn.Sequential(*layers)
    return model.eval()


def test_receptive_field_of_plain_convs_by_hand():
    # conv3 s1 p1 -> conv3 s2 p0 -> maxpool2 s2: size 1+2+2*1+1*2 = 5 -> +1*2=7; stride 4; offset -1
    model = _stack(nn.Conv2d(3, 2, 3, padding=1), nn.ReLU(), nn.Conv2d(2, 2, 3, stride=2), nn.MaxPool2d(2))
    rf = cs_utils.receptive_field(model, "1", 10)
    assert (rf.size, rf.stride, rf.offset, rf.output_size) == ((3, 3), (1, 1), (-1, -1), (10, 10))
    rf = cs_utils.receptive_field(model, "2", 10)
    assert (rf.size, rf.stride, rf.offset, rf.output_size) == ((5, 5), (2, 2), (-1, -1), (4, 4))
    rf = cs_utils.receptive_field(model, "3", (10, 12))
    assert (rf.size, rf.stride, rf.offset, rf.output_size) == ((7, 7), (4, 4), (-1, -1), (2, 2))
    assert rf.box(0, 0) == (0, 0, 6, 6) and rf.box(0, 0, clip=False) == (-1, -1, 6, 6)
    assert rf.box(1, 1) == (3, 3, 10, 10)


def test_receptive_field_with_dilation_and_rectangular_kernels():
    model = _stack(nn.Conv2d(3, 1, (3, 5), padding=(0, 2), dilation=(2, 1)))
    rf = cs_utils.receptive_field(model, "0", (9, 9))
    assert (rf.size, rf.stride, rf.offset) == ((5, 5), (1, 1), (0, -2))


def test_receptive_field_of_same_padding_depends_on_the_input_size():
    # k3 s2 SAME: input 8 -> output 4, total padding (4-1)*2+3-8 = 1 -> (0 before, 1 after);
    # input 7 -> output 4, total padding 2 -> (1, 1).
    model = _stack(Conv2dSame(3, 1, 3, stride=2), Conv2dSame(1, 1, 3, stride=2))
    even = cs_utils.receptive_field(model, "0", 8)
    odd = cs_utils.receptive_field(model, "0", 7)
    assert (even.size, even.stride, even.offset) == ((3, 3), (2, 2), (0, 0))
    assert (odd.size, odd.stride, odd.offset) == ((3, 3), (2, 2), (-1, -1))
    # second conv sees 4 (even, from 8): padding (0, 1) again: size 3 + 2*2 = 7, offset 0 - 0*2 = 0.
    # From 7 the first output is 4 as well: offset -1 - 0 = -1.
    assert cs_utils.receptive_field(model, "1", 8).offset == (0, 0)
    assert cs_utils.receptive_field(model, "1", 7).offset == (-1, -1)
    assert cs_utils.receptive_field(model, "1", 7).size == (7, 7)
    # an input of 6 -> 3 (total padding 1: (0, 1)) -> 3 is odd: total padding (2-1)*2+3-3 = 2 -> (1, 1)
    six = cs_utils.receptive_field(model, "1", 6)
    assert six.offset == (0 - 1 * 2, 0 - 1 * 2) and six.output_size == (2, 2)


def _support(model, layer, x, row, col):
    """Bounding box (top, left, bottom, right) of the input pixels with a non-zero gradient."""
    out = cs_utils.extract_features(model, x, [layer])[layer]
    (grad,) = torch.autograd.grad(out[0, :, row, col].sum(), [x])
    nonzero = (grad[0].abs().sum(0) != 0).nonzero()
    return (nonzero[:, 0].min().item(), nonzero[:, 1].min().item(),
            nonzero[:, 0].max().item() + 1, nonzero[:, 1].max().item() + 1), out.shape[-2:]


def _positive_weights(model):
    torch.manual_seed(0)
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            with torch.no_grad():
                m.weight.uniform_(0.1, 1.0)
    return model.double()


@pytest.mark.parametrize("size", [(13, 13), (14, 11)])
def test_receptive_field_matches_the_gradient_support_of_a_conv_stack(size):
    model = _positive_weights(_stack(Conv2dSame(3, 2, 3, stride=2), nn.ReLU6(), nn.Conv2d(2, 2, 3, padding=1),
                                     Conv2dSame(2, 2, 5, stride=2), nn.AvgPool2d(2, 1),
                                     Conv2dSame(2, 1, 3, stride=1)))
    x = torch.rand(1, 3, *size, dtype=torch.float64, requires_grad=True)
    rf = cs_utils.receptive_field(model, "5", size)
    for row in range(rf.output_size[0]):
        for col in range(rf.output_size[1]):
            box, out_size = _support(model, "5", x, row, col)
            assert tuple(out_size) == rf.output_size
            assert box == rf.box(row, col), (row, col)


def _linearised(model):
    """A float64 copy of ``model`` with every ReLU6 replaced by the identity, so every
    input pixel in the receptive field has a non-zero gradient."""
    model = copy.deepcopy(model).double()
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, nn.ReLU6):
                setattr(module, name, nn.Identity())
    return model


@pytest.mark.parametrize("layer,size", [("blocks.2", (67, 50)), ("blocks.5", (40, 41))])
def test_receptive_field_of_efficientnet_matches_the_gradient_support(lite0, caller_state, layer, size):
    state = caller_state(lite0)
    rf = cs_utils.receptive_field(lite0, layer, size)
    state.assert_unchanged()
    model = _linearised(lite0)
    x = torch.rand(1, 3, *size, dtype=torch.float64, requires_grad=True)
    inside = 0
    for row, col in [(0, 0), (rf.output_size[0] // 2, rf.output_size[1] // 2),
                     (rf.output_size[0] - 1, rf.output_size[1] - 1), (1, rf.output_size[1] - 2)]:
        box, out_size = _support(model, layer, x, row, col)
        assert tuple(out_size) == rf.output_size
        assert box == rf.box(row, col)   # inside the box, and touching each border of the clipped box
        unclipped = rf.box(row, col, clip=False)
        inside += unclipped == rf.box(row, col)
    if layer == "blocks.2":
        assert rf.size == (19, 19) and rf.stride == (4, 4)
        assert inside >= 1  # at least one box lies wholly inside the image


def test_receptive_field_errors_leave_no_hooks(lite0, caller_state):
    state = caller_state(lite0)
    with pytest.raises(KeyError, match="blocks.2"):
        cs_utils.receptive_field(lite0, "blocks.2x", 64)
    with pytest.raises(ValueError, match="whole image"):
        cs_utils.receptive_field(lite0, "pool", 64)
    with pytest.raises(ValueError, match="input_size"):
        cs_utils.receptive_field(lite0, "blocks.2", (64,))
    state.assert_unchanged()
    rf = cs_utils.receptive_field(lite0, "stem", 8)
    with pytest.raises(IndexError, match="outside"):
        rf.box(4, 0)


def test_unknown_spatial_layer_is_refused():
    class Shrink(nn.Module):
        def forward(self, x):
            return x[..., ::2, ::2]

    model = _stack(nn.Conv2d(3, 2, 3), Shrink(), nn.Conv2d(2, 2, 3))
    with pytest.raises(ValueError, match="not known"):
        cs_utils.receptive_field(model, "2", 16)


# --------------------------------------------------------------------------- maximally activating patches


def _spot_detector():
    """One 3x3 conv that sums the red channel over its window (no padding)."""
    conv = nn.Conv2d(3, 2, 3, bias=False)
    with torch.no_grad():
        conv.weight.zero_()
        conv.weight[0, 0] = 1.0   # channel 0: red
        conv.weight[1, 2] = 1.0   # channel 1: blue
    return _stack(conv)


def test_top_activations_by_hand(caller_state):
    model = _spot_detector()
    images = torch.zeros(4, 3, 8, 8)
    images[1, 0, 2:5, 3:6] = 1.0      # a full red 3x3 spot: activation 9 at (2, 3)
    images[3, 0, 5, 0] = 0.5          # weaker red pixel: 0.5 at rows 3..5, cols 0
    images[2, 2, 0, 7] = 1.0          # blue corner
    state = caller_state(model, images)
    top = cs_utils.top_activations(model, images, "0", [0, 1], k=2, batch_size=3, progress=False)
    state.assert_unchanged()
    assert top.channels == (0, 1) and top.value.shape == (2, 2)
    assert top.value[0].tolist() == [9.0, 0.5] and top.image[0].tolist() == [1, 3]
    assert (top.row[0, 0].item(), top.col[0, 0].item()) == (2, 3)
    assert top.image[1, 0].item() == 2 and (top.row[1, 0].item(), top.col[1, 0].item()) == (0, 5)
    every = cs_utils.top_activations(model, images, "0", 0, k=3, one_per_image=False, progress=False)
    assert every.value[0].tolist() == [9.0, 6.0, 6.0] and every.image[0].tolist() == [1, 1, 1]

    field = cs_utils.receptive_field(model, "0", 8)
    patches = cs_utils.crop_patches(images, top, field)
    assert patches.shape == (2, 2, 3, 3, 3)
    assert torch.equal(patches[0, 0], images[1, :, 2:5, 3:6])
    assert patches[0, 0, 0].sum() == 9


def test_crop_patches_fill_outside_the_image():
    model = _stack(nn.Conv2d(3, 1, 3, padding=1, bias=False))
    with torch.no_grad():
        model[0].weight.fill_(1.0)
    images = torch.zeros(1, 3, 6, 6)
    images[0, :, 0, 0] = 1.0
    top = cs_utils.top_activations(model, images, "0", [0], k=1, progress=False)
    assert (top.row.item(), top.col.item()) == (0, 0)
    field = cs_utils.receptive_field(model, "0", 6)
    patch = cs_utils.crop_patches(images, top, field, fill=0.25)[0, 0]
    assert patch.shape == (3, 3, 3)
    assert torch.all(patch[:, 0, :] == 0.25) and torch.all(patch[:, :, 0] == 0.25)
    assert torch.equal(patch[:, 1:, 1:], images[0, :, :2, :2])


def test_top_activations_errors(caller_state):
    model = _spot_detector()
    images = torch.rand(3, 3, 8, 8)
    state = caller_state(model, images)
    with pytest.raises(IndexError, match="channels"):
        cs_utils.top_activations(model, images, "0", [5], progress=False)
    with pytest.raises(ValueError, match="only 3 images"):
        cs_utils.top_activations(model, images, "0", [0], k=4, progress=False)
    with pytest.raises(KeyError):
        cs_utils.top_activations(model, images, "conv", [0], progress=False)
    with pytest.raises(ValueError, match="k must be"):
        cs_utils.top_activations(model, images, "0", [0], k=0, progress=False)
    state.assert_unchanged()
    field = cs_utils.receptive_field(model, "0", 10)
    top = cs_utils.top_activations(model, images, "0", [0], k=1, progress=False)
    with pytest.raises(ValueError, match="computed for"):
        cs_utils.crop_patches(images, top, field)


def test_patches_of_lite0_depend_only_on_their_receptive_field(lite0):
    """Changing every pixel outside a unit's box leaves its activation unchanged."""
    x = cs_utils.load_image("chelsea", 96)
    top = cs_utils.top_activations(lite0, x, "blocks.4", [3], k=1, progress=False)
    field = cs_utils.receptive_field(lite0, "blocks.4", 96)
    t, l, b, r = field.box(top.row.item(), top.col.item())
    assert (b - t) * (r - l) < 0.5 * 96 * 96  # the box leaves most of the image out
    noisy = torch.rand(1, 3, 96, 96, generator=torch.Generator().manual_seed(0))
    noisy[..., t:b, l:r] = x[..., t:b, l:r]
    with torch.no_grad():
        a = cs_utils.extract_features(lite0, x, ["blocks.4"])["blocks.4"][0, 3, top.row, top.col]
        c = cs_utils.extract_features(lite0, noisy, ["blocks.4"])["blocks.4"][0, 3, top.row, top.col]
    assert torch.allclose(a, top.value[0], atol=1e-5) and torch.allclose(a, c, atol=1e-4)


def test_place_randomly_moves_each_image_intact():
    images = torch.rand(5, 1, 3, 4)
    copy_ = images.clone()
    canvases, offsets = cs_utils.place_randomly(images, 10, background=0.25,
                                                generator=torch.Generator().manual_seed(0))
    assert canvases.shape == (5, 1, 10, 10) and torch.equal(images, copy_)
    for i, (top, left) in enumerate(offsets.tolist()):
        assert 0 <= top <= 7 and 0 <= left <= 6
        assert torch.equal(canvases[i, :, top:top + 3, left:left + 4], images[i])
        assert (canvases[i] == 0.25).sum() == 100 - 12
    assert len(set(map(tuple, offsets.tolist()))) > 1
    again, _ = cs_utils.place_randomly(images, 10, background=0.25,
                                       generator=torch.Generator().manual_seed(0))
    assert torch.equal(again, canvases)
    with pytest.raises(ValueError, match="do not fit"):
        cs_utils.place_randomly(images, 3)


def test_filter_smoothness_by_hand():
    ramp = torch.arange(4.0).repeat(4, 1)[None, None]                # smooth: neighbours alike
    checker = (torch.arange(4)[:, None] + torch.arange(4)[None]) % 2  # neighbours always differ
    flat = torch.ones(1, 1, 4, 4)
    values = cs_utils.filter_smoothness(torch.cat([ramp, checker[None, None].float(), flat]))
    # ramp minus its mean: columns -1.5, -0.5, 0.5, 1.5. Horizontal products per row 0.75 - 0.25 + 0.75,
    # x 4 rows = 5; vertical: 3 pairs per column of v^2, 3 * (2.25 + 0.25 + 0.25 + 2.25) = 15 -> 20.
    # Energy (a^2 + b^2) / 2 per pair: horizontal 4 * (1.25 + 0.25 + 1.25) = 11, vertical 15 -> 26.
    assert values[0].item() == pytest.approx(20 / 26)
    assert values[1].item() == pytest.approx(-1.0)
    assert values[2].item() == 0.0
    noise = cs_utils.filter_smoothness(torch.randn(200, 1, 7, 7, generator=torch.Generator().manual_seed(0)))
    assert abs(noise.mean().item()) < 0.05
    history = cs_utils.TrainingHistory(loss=[2.0, 1.0, 0.5], accuracy=[0.1, 0.5, 0.9])
    fig = history.plot(smooth=2)
    np.testing.assert_allclose(fig.axes[0].lines[0].get_ydata(), [1.5, 0.75])


def test_top_activations_inside_the_image_and_one_per_group():
    # weights: left column -1, the rest +1. On an all-ones image an interior unit gives 3 channels x
    # (6 - 3) = 9, but a unit in column 0 has padding under its negative column: 3 x 6 = 18.
    model = _stack(nn.Conv2d(3, 1, 3, padding=1, bias=False))
    with torch.no_grad():
        model[0].weight.fill_(1.0)
        model[0].weight[..., 0] = -1.0
    images = torch.zeros(4, 3, 6, 6)
    images[0] = 1.0
    images[1, :, 1:4, 2:4] = 0.9      # unit (2, 2): 3 rows x 2 cols x 3 channels x 0.9 = 16.2
    field = cs_utils.receptive_field(model, "0", 6)
    anywhere = cs_utils.top_activations(model, images, "0", [0], k=1, progress=False)
    assert anywhere.image.item() == 0 and anywhere.value.item() == pytest.approx(18.0)
    assert (anywhere.row.item(), anywhere.col.item()) == (1, 0)
    inside = cs_utils.top_activations(model, images, "0", [0], k=2, field=field, progress=False)
    assert inside.image[0].tolist() == [1, 0]
    assert inside.value[0].tolist() == pytest.approx([16.2, 9.0])
    assert (inside.row[0, 0].item(), inside.col[0, 0].item()) == (2, 2)
    for j in range(2):
        t, l, b, r = field.box(int(inside.row[0, j]), int(inside.col[0, j]), clip=False)
        assert t >= 0 and l >= 0 and b <= 6 and r <= 6
    grouped = cs_utils.top_activations(model, images, "0", [0], k=2, field=field, groups=[0, 0, 1, 1],
                                       progress=False)
    assert grouped.image[0].tolist() == [1, 2] and grouped.value[0].tolist() == pytest.approx([16.2, 0.0])
    with pytest.raises(ValueError, match="only 2 images"):
        cs_utils.top_activations(model, images, "0", [0], k=3, groups=[0, 0, 1, 1], progress=False)
    with pytest.raises(ValueError, match="one id per image"):
        cs_utils.top_activations(model, images, "0", [0], k=1, groups=[0, 1], progress=False)
    too_wide = cs_utils.receptive_field(_stack(nn.Conv2d(3, 1, 7, padding=3)), "0", 6)
    with pytest.raises(ValueError, match="whole receptive field"):
        cs_utils.top_activations(model, images[:1], "0", [0], k=1, field=too_wide, progress=False)
