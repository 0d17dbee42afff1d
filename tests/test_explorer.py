"""The live explorer: its state class renders every method; the panel redraws when a control changes."""

import datetime
import io

import pytest
import torch
from matplotlib.figure import Figure

import cs_utils
from cs_utils.explorer import METHODS, Explorer, ExplorerPanel, figure_png


@pytest.fixture(scope="module")
def explorer(lite0):
    return Explorer(lite0)


def test_every_method_gives_a_view_of_the_photo(explorer):
    explorer.set_photo("imagenet_16")
    assert explorer.top_classes(1)[0][1] == "Dalmatian"
    for method in METHODS:
        explorer.method = method
        view = explorer.compute()
        if method == "guided backprop":
            assert view.shape == (3, 224, 224) and 0 <= view.min() and view.max() <= 1
        else:
            assert view.shape == (224, 224), method
        assert view.std() > 0, f"{method} gave a constant view"
        fig = explorer.render()
        assert isinstance(fig, Figure) and len(fig.axes) == 2
        assert method.split()[0] in fig.axes[1].get_title() or explorer.layer in fig.axes[1].get_title()


def test_the_view_follows_the_method_the_class_and_the_channel(explorer):
    explorer.set_photo("imagenet_00")  # Bullmastiff 70 %, Boxer 25 %
    (first, *_), (second, *_) = explorer.top_classes(2)
    assert explorer.target == first
    explorer.method = "Grad-CAM"
    top = explorer.compute()
    explorer.target = second
    runner_up = explorer.compute()
    explorer.method = "saliency"
    saliency = explorer.compute()
    assert (top - runner_up).abs().max() > 0.1 * top.max()  # Boxer: the same dog, other evidence
    assert cs_utils.rank_correlation(top[None], saliency[None]).item() < 0.9
    explorer.method, explorer.layer = "activation", "blocks.10"
    assert explorer.channels() == 112
    explorer.channel = 3
    three = explorer.compute()
    explorer.channel = 4
    assert not torch.allclose(three, explorer.compute())


def test_long_computations_report_progress_up_to_one(explorer):
    explorer.set_photo("imagenet_13")
    explorer.method = "SmoothGrad"
    reports = []
    explorer.compute(progress=lambda fraction, message: reports.append((fraction, message)))
    fractions = [f for f, _ in reports]
    assert len(reports) == explorer.smooth_samples + 2
    assert fractions == sorted(fractions) and fractions[0] == 0 and fractions[-1] == 1
    assert reports[1][1] == f"SmoothGrad: 1 of {explorer.smooth_samples} noisy copies"
    assert reports[-1][1].startswith("SmoothGrad: ") and reports[-1][1].endswith(" s")


def test_bad_choices_say_what_to_do(explorer):
    explorer.method = "deep taylor"
    with pytest.raises(ValueError, match="unknown method 'deep taylor'; choose one of saliency, occlusion"):
        explorer.compute()
    explorer.method, explorer.layer, explorer.channel = "activation", "blocks.10", 500
    with pytest.raises(ValueError, match="'blocks.10' has 112 channels; choose a channel from 0 to 111"):
        explorer.compute()
    explorer.layer = "blocks.99"
    with pytest.raises(KeyError, match="blocks.99"):
        explorer.compute()
    with pytest.raises(ValueError, match="notes.txt is not an image file PIL can read; upload a JPEG or PNG"):
        explorer.set_photo(b"hello", name="notes.txt")


def png_bytes(name: str) -> bytes:
    buffer = io.BytesIO()
    cs_utils.image.to_pil(cs_utils.load_image(name, 256)).save(buffer, format="PNG")
    return buffer.getvalue()


def test_an_uploaded_photo_is_classified_like_the_file(explorer):
    explorer.set_photo(png_bytes("coffee"), name="my_coffee.png")
    assert explorer.photo == "my_coffee.png"
    assert explorer.top_classes(1)[0][1] == "espresso"


def test_the_panel_redraws_when_a_control_changes(lite0):
    panel = ExplorerPanel(Explorer(lite0))
    first = panel.image.value
    assert first[:8] == b"\x89PNG\r\n\x1a\n" and panel.progress.value == 1.0
    assert panel.status.value.startswith("saliency: ")
    panel.method.value = "Grad-CAM"
    assert panel.image.value != first and panel.status.value.startswith("Grad-CAM: ")
    assert panel.layer.layout.display == "none"
    panel.photo.value = "imagenet_16"
    assert panel.target.label.startswith("Dalmatian (") and panel.explorer.photo == "imagenet_16"
    panel.method.value = "activation"
    assert panel.layer.layout.display is None and panel.target.layout.display == "none"
    panel.layer.value = "blocks.10"
    assert panel.channel.max == 111
    before = panel.image.value
    panel.channel.value = 7
    assert panel.image.value != before and "channel 7 of 112" in panel.explorer.title()
    panel.channel.value = 7  # no change, no error
    panel.upload.value = (
        {
            "name": "cup.png",
            "type": "image/png",
            "size": 1,
            "last_modified": datetime.datetime(2026, 1, 1),
            "content": memoryview(png_bytes("coffee")),
        },
    )
    assert panel.photo.value == "cup.png" and panel.target.label.startswith("espresso (")
    assert figure_png(panel.explorer.render())[:4] == b"\x89PNG"


def test_explore_is_public_and_returns_a_panel(lite0):
    panel = cs_utils.explore(lite0)
    assert isinstance(panel, ExplorerPanel)
    assert "application/vnd.jupyter.widget-view+json" in panel._repr_mimebundle_()


def test_an_unwritten_exercise_shows_in_the_status_line_and_keeps_the_image(lite0):
    panel = ExplorerPanel(Explorer(lite0))
    image = panel.image.value

    def unwritten(progress=None):
        raise NotImplementedError("grad_cam (cs_utils/attribution.py): write this function's body")

    panel.explorer.compute = unwritten
    panel.method.value = "Grad-CAM"
    assert panel.status.value == "error: grad_cam (cs_utils/attribution.py): write this function's body"
    assert panel.progress.bar_style == "danger" and panel.image.value == image
