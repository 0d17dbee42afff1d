"""Features, nearest neighbours, galleries of moved copies and 2-D embeddings."""

import math

import numpy as np
import pytest
import torch

import cs_utils


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
