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
    fig = cs_utils.overlay_heatmap(image, heat, alpha=0.4, title="map", colorbar=True,
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
    assert cs_utils.overlay_heatmap(torch.rand(3, 8, 8), np.ones((8, 8)), ax=ax) is fig
    with pytest.raises(ValueError, match="2-D"):
        cs_utils.overlay_heatmap(torch.rand(3, 8, 8), np.ones((2, 8, 8)))
    with pytest.raises(ValueError, match="one image"):
        cs_utils.overlay_heatmap(torch.rand(2, 3, 8, 8), np.ones((8, 8)))
    with pytest.raises(ValueError, match="alpha"):
        cs_utils.overlay_heatmap(torch.rand(3, 8, 8), np.ones((8, 8)), alpha=2)
    with pytest.raises(ValueError, match="percentile"):
        cs_utils.overlay_heatmap(torch.rand(3, 8, 8), np.ones((8, 8)), percentile=0)


def test_overlay_percentile_saturates_outliers():
    heat = np.arange(100, dtype=np.float32).reshape(10, 10)
    heat[0, 0] = 1e6  # one outlier would otherwise flatten the whole map to ~0
    fig = cs_utils.overlay_heatmap(torch.rand(3, 10, 10), heat, percentile=90, fade=False)
    shown = np.asarray(fig.axes[0].images[1].get_array())
    assert shown.max() == pytest.approx(1.0) and np.median(shown) > 0.4
    assert fig.axes[0].images[1].get_alpha() == 0.6
