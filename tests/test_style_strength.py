import pytest
import torch

from cs_utils import style_strength


def test_match_channel_statistics_by_hand_and_input_unchanged():
    images = torch.tensor([0.2, 0.4, 0.6, 0.8]).view(1, 1, 2, 2).expand(1, 3, 2, 2).clone()
    reference = torch.tensor([0.3, 0.5, 0.5, 0.7]).view(1, 1, 2, 2).expand(1, 3, 2, 2).clone()
    copy = images.clone()
    matched = style_strength.match_channel_statistics(images, reference)
    torch.testing.assert_close(matched.mean((-2, -1)), reference.mean((-2, -1)))
    torch.testing.assert_close(matched.std((-2, -1)), reference.std((-2, -1)))
    # the ramp keeps its order: 0.5 -/+ 1.5 and 0.5 sd units of the reference's 0.1633
    sd = reference[0, 0].std().item()
    expected = 0.5 + sd * (images[0, 0] - 0.5) / images[0, 0].std()
    torch.testing.assert_close(matched[0, 0], expected)
    half = style_strength.match_channel_statistics(images, reference, strength=0.5)
    torch.testing.assert_close(half, (images + matched) / 2)
    assert torch.equal(images, copy)
    with pytest.raises(ValueError, match="strength"):
        style_strength.match_channel_statistics(images, reference, strength=2.0)


def test_relative_style_distance(tiny_cnn, caller_state):
    gen = torch.Generator().manual_seed(0)
    style = torch.rand(1, 3, 16, 16, generator=gen)
    contents = torch.rand(2, 3, 16, 16, generator=gen) * 0.2
    state = caller_state(tiny_cnn, style, contents)
    same = style_strength.relative_style_distance(tiny_cnn, contents, contents, style, layers=("relu",))
    torch.testing.assert_close(same, torch.ones(2))
    towards = style.expand(2, -1, -1, -1)             # the style itself: distance 0
    assert style_strength.relative_style_distance(tiny_cnn, towards, contents, style,
                                                  layers=("relu",)).abs().max() < 1e-6
    state.assert_unchanged()
    with pytest.raises(ValueError, match="one content photo"):
        style_strength.relative_style_distance(tiny_cnn, contents[:1], contents, style, layers=("relu",))


def test_lite2_layers_end_stages():
    # a stage end is the last block before the resolution halves or the width changes
    import cs_utils

    lite2 = cs_utils.load_model("efficientnet_lite2")
    x = torch.rand(1, 3, 64, 64)
    names = [f"blocks.{i}" for i in range(len(lite2.blocks))]
    with torch.no_grad():
        feats = cs_utils.extract_features(lite2, x, names)
    shapes = [feats[n].shape[1:] for n in names]
    ends = [names[i] for i in range(len(names) - 1) if shapes[i] != shapes[i + 1]]
    assert list(style_strength.LITE2_STYLE_LAYERS[1:]) == ends[:5]
