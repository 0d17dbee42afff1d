import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
from matplotlib.figure import Figure

import cs_utils


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def test_show_images_grid_titles_and_pixels():
    x = torch.rand(5, 3, 8, 8)
    x_copy = x.clone()
    fig = cs_utils.show_images(x, [f"t{i}" for i in range(5)], ncols=3)
    assert isinstance(fig, Figure)
    drawn = [ax for ax in fig.axes if ax.images]
    assert len(drawn) == 5 and len(fig.axes) == 6
    assert [ax.get_title() for ax in drawn] == [f"t{i}" for i in range(5)]
    np.testing.assert_allclose(drawn[2].images[0].get_array(), x[2].permute(1, 2, 0).numpy())
    assert torch.equal(x, x_copy)


def test_show_images_into_given_axes_and_save(tmp_path):
    fig, axes = plt.subplots(1, 2)
    out = cs_utils.show_images([torch.rand(3, 4, 4), np.zeros((4, 4))], ax=axes,
                               save=tmp_path / "grid.png")
    assert out is fig and all(ax.images for ax in axes)
    assert (tmp_path / "grid.png").stat().st_size > 0


def test_show_images_errors():
    with pytest.raises(ValueError, match="titles"):
        cs_utils.show_images(torch.rand(2, 3, 4, 4), ["one"])
    _, ax = plt.subplots()
    with pytest.raises(ValueError, match="axes"):
        cs_utils.show_images(torch.rand(2, 3, 4, 4), ax=ax)


def test_overlay_heatmap_resizes_and_normalises(tmp_path):
    image = torch.rand(1, 3, 16, 16)
    heat = torch.zeros(4, 4)
    heat[0, 0] = 10.0
    heat_copy = heat.clone()
    fig = cs_utils.viz.overlay_heatmap(image, heat, alpha=0.4, title="map", colorbar=True,
                                   save=tmp_path / "h.png")
    ax = fig.axes[0]
    base, overlay = ax.images
    assert overlay.get_array().shape == (16, 16)
    assert overlay.get_array().max() == pytest.approx(1.0) and overlay.get_array().min() == 0
    opacity = overlay.get_alpha()  # fades with the value: transparent where the map is 0
    assert opacity.max() == pytest.approx(0.4) and opacity[-1, -1] == 0 and ax.get_title() == "map"
    assert torch.equal(heat, heat_copy)
    assert (tmp_path / "h.png").exists()


def test_overlay_heatmap_into_axes_and_errors():
    fig, ax = plt.subplots()
    assert cs_utils.viz.overlay_heatmap(torch.rand(3, 8, 8), np.ones((8, 8)), ax=ax) is fig
    with pytest.raises(ValueError, match="2-D"):
        cs_utils.viz.overlay_heatmap(torch.rand(3, 8, 8), np.ones((2, 8, 8)))
    with pytest.raises(ValueError, match="one image"):
        cs_utils.viz.overlay_heatmap(torch.rand(2, 3, 8, 8), np.ones((8, 8)))
    with pytest.raises(ValueError, match="alpha"):
        cs_utils.viz.overlay_heatmap(torch.rand(3, 8, 8), np.ones((8, 8)), alpha=2)
    with pytest.raises(ValueError, match="percentile"):
        cs_utils.viz.overlay_heatmap(torch.rand(3, 8, 8), np.ones((8, 8)), percentile=0)


def test_overlay_percentile_saturates_outliers():
    heat = np.arange(100, dtype=np.float32).reshape(10, 10)
    heat[0, 0] = 1e6  # one outlier would otherwise flatten the whole map to ~0
    fig = cs_utils.viz.overlay_heatmap(torch.rand(3, 10, 10), heat, percentile=90, fade=False)
    shown = np.asarray(fig.axes[0].images[1].get_array())
    assert shown.max() == pytest.approx(1.0) and np.median(shown) > 0.4
    assert fig.axes[0].images[1].get_alpha() == 0.6


def test_filter_montage_tiles_rescaled_filters():
    weight = torch.zeros(3, 3, 2, 2)
    weight[0, 0, 0, 0] = 5.0                      # filter 0: one bright red pixel
    weight[1] = torch.arange(12.0).reshape(3, 2, 2)
    weight[2] = -1.0                              # constant: mid-grey
    montage = cs_utils.viz.filter_montage(weight, ncols=2, pad=1)
    assert montage.shape == (2 * 3 + 1, 2 * 3 + 1, 3)
    np.testing.assert_allclose(montage[1:3, 1:3, 0], [[1, 0], [0, 0]])
    np.testing.assert_allclose(montage[1:3, 4:6, 2], [[8 / 11, 9 / 11], [10 / 11, 1]])
    np.testing.assert_allclose(montage[4:6, 1:3], 0.5)
    assert montage[0].min() == 1.0 and np.all(montage[4:6, 4:6] == 1.0)  # padding and the empty tile
    grey = cs_utils.viz.filter_montage(torch.randn(4, 1, 5, 5))
    assert grey.shape == (13, 13)
    with pytest.raises(ValueError, match="input channels"):
        cs_utils.viz.filter_montage(torch.randn(4, 8, 3, 3))


def test_show_filters_draws_colour_or_grey(tmp_path):
    fig = cs_utils.show_filters(torch.nn.Conv2d(3, 8, 3), title="stem", save=tmp_path / "f.png")
    ax = fig.axes[0]
    assert ax.get_title() == "stem" and ax.images[0].get_array().shape[-1] == 3
    assert (tmp_path / "f.png").stat().st_size > 0
    fig, axes = plt.subplots(1, 2)
    assert cs_utils.show_filters(torch.randn(4, 1, 7, 7), ax=axes[1]) is fig
    assert axes[1].images[0].get_cmap().name == "gray"


def test_plot_embedding_colours_by_class():
    points = np.array([[0.0, 0.0], [1.0, 1.0], [2.0, 0.5]])
    fig = cs_utils.plot_embedding(points, torch.tensor([0, 2, 2]), ["zero", "one", "two"], title="t-SNE")
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["zero", "two"]
    assert [len(c.get_offsets()) for c in ax.collections] == [1, 2]
    np.testing.assert_allclose(ax.collections[1].get_offsets(), points[1:])
    with pytest.raises(ValueError, match=r"\(N, 2\)"):
        cs_utils.plot_embedding(np.zeros((3, 3)), [0, 1, 2])
    with pytest.raises(ValueError, match="one label per point"):
        cs_utils.plot_embedding(points, [0, 1])
    with pytest.raises(ValueError, match="class_names"):
        cs_utils.plot_embedding(points, [0, 1, 5], ["a", "b"])


def test_thumbnail_canvas_places_images_at_their_points():
    images = torch.zeros(2, 1, 4, 4)
    images[1] = 0.5
    points = np.array([[0.0, 0.0], [1.0, 1.0]])  # bottom-left and top-right corners
    canvas = cs_utils.viz.thumbnail_canvas(points, images, canvas_size=20, thumb_size=4)
    assert canvas.shape == (20, 20, 3)
    assert np.all(canvas[16:, :4] == 0) and np.all(canvas[:4, 16:] == 0.5)
    assert np.all(canvas[5:15, 5:15] == 1.0)      # background elsewhere
    with pytest.raises(ValueError, match="points for"):
        cs_utils.viz.thumbnail_canvas(points[:1], images)
    with pytest.raises(ValueError, match="smaller"):
        cs_utils.viz.thumbnail_canvas(points, images, canvas_size=4, thumb_size=4)
    # stretched per axis: points on a line still fill the width
    wide = cs_utils.viz.thumbnail_canvas(np.array([[0.0, 5.0], [10.0, 5.0]]), images, canvas_size=20,
                                     thumb_size=4)
    assert np.all(wide[16:, :4] == 0) and np.all(wide[16:, 16:] == 0.5) and np.all(wide[:16] == 1)
    fig = cs_utils.show_thumbnails(points, images + 0.5, canvas_size=20, thumb_size=4, title="map",
                                   background=0.0)
    shown = np.asarray(fig.axes[0].images[0].get_array())
    assert fig.axes[0].get_title() == "map" and shown.shape == (20, 20, 3) and shown[10, 10, 0] == 0


def test_show_image_rows_layout_and_errors():
    rows = [torch.rand(3, 3, 5, 5), torch.rand(2, 3, 5, 5)]
    fig = cs_utils.show_image_rows(rows, ["query a", "query b"], [["a", "b", "c"], ["d", "e"]])
    drawn = [ax for ax in fig.axes if ax.images]
    assert len(fig.axes) == 6 and len(drawn) == 5
    assert fig.axes[0].get_ylabel() == "query a" and fig.axes[3].get_ylabel() == "query b"
    assert fig.axes[4].get_title() == "e" and not fig.axes[5].axison
    np.testing.assert_allclose(fig.axes[1].images[0].get_array(), rows[0][1].permute(1, 2, 0).numpy())
    with pytest.raises(ValueError, match="row titles"):
        cs_utils.show_image_rows(rows, ["only one"])
    with pytest.raises(ValueError, match="one title per image"):
        cs_utils.show_image_rows(rows, titles=[["a"], ["b"]])


def test_thumbnail_grid_keeps_the_point_nearest_each_cell_centre():
    images = torch.stack([torch.full((1, 2, 2), v) for v in (0.0, 0.2, 0.4, 0.6)])
    # canvas 8, cells of 2: the range maps x, y in [0, 3] to left/top = round(unit * 6)
    points = np.array([[0.0, 3.0], [0.1, 2.9], [3.0, 0.0], [1.5, 1.5]])
    canvas = cs_utils.viz.thumbnail_canvas(points, images, canvas_size=8, thumb_size=2, grid=True)
    np.testing.assert_allclose(canvas[0:2, 0:2], 0.0)     # image 0 sits exactly on cell (0, 0); 1 loses it
    np.testing.assert_allclose(canvas[6:8, 6:8], 0.4)     # image 2: bottom-right
    np.testing.assert_allclose(canvas[4:6, 4:6], 0.6)     # image 3: left/top 3, centre 4 -> cell 2
    assert not np.any(np.isclose(canvas, 0.2))            # image 1 collided with image 0 and is left out


def test_show_maps_draws_one_row_per_map_and_checks_shapes():
    x = torch.rand(2, 3, 8, 8)
    fig = cs_utils.show_maps(x, {"map": torch.rand(2, 8, 8), "image": torch.rand(2, 3, 8, 8)}, ["a", "b"])
    assert len(fig.axes) == 6 and fig.axes[0].get_title() == "a"
    assert fig.axes[2].get_ylabel() == "map"
    with pytest.raises(ValueError, match="row 'map'"):
        cs_utils.show_maps(x, {"map": torch.rand(3, 8, 8)})
