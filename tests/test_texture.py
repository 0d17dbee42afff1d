"""Efros-Leung non-parametric texture synthesis: it copies, continues patterns, and is seeded."""

import pytest
import torch

import cs_utils
from cs_utils.texture import TEXTURE_NAMES, copy_fraction, efros_leung, load_texture


def periodic_sample(period=4, size=20, seed=0):
    """A (1, 3, size, size) image tiling one random period x period tile of distinct colours."""
    tile = torch.rand(3, period, period, generator=torch.Generator().manual_seed(seed))
    reps = -(-size // period)
    return tile.repeat(1, reps, reps)[None, :, :size, :size].contiguous(), tile


def test_periodic_pattern_is_continued_exactly():
    sample, tile = periodic_sample(period=4, size=20)
    out = efros_leung(sample, (24, 28), window=5, generator=torch.Generator().manual_seed(1),
                      progress=False)
    assert out.shape == (1, 3, 24, 28)
    # Periodic with the sample's period in both directions ...
    assert torch.equal(out[..., :, 4:], out[..., :, :-4])
    assert torch.equal(out[..., 4:, :], out[..., :-4, :])
    # ... and equal to the tiling at one of its 16 phases.
    tiled = tile.repeat(1, 8, 8)
    phases = [(a, b) for a in range(4) for b in range(4)
              if torch.equal(out[0], tiled[:, a:a + 24, b:b + 28])]
    assert len(phases) == 1


def test_output_pixels_are_copied_from_the_sample_and_source_map_says_where():
    sample = load_texture("brick", 24)
    out, source = efros_leung(sample, 20, window=7, generator=torch.Generator().manual_seed(0),
                              return_source=True, progress=False)
    assert source.shape == (20, 20, 2) and source.dtype == torch.long
    assert torch.equal(out[0], sample[0][:, source[..., 0], source[..., 1]])
    pixels = {tuple(p) for p in sample[0].reshape(3, -1).T.tolist()}
    assert all(tuple(p) in pixels for p in out[0].reshape(3, -1).T.tolist())


def test_seeded_determinism():
    sample = load_texture("gravel", 20)
    a = efros_leung(sample, 16, window=5, generator=torch.Generator().manual_seed(3), progress=False)
    b = efros_leung(sample, 16, window=5, generator=torch.Generator().manual_seed(3), progress=False)
    c = efros_leung(sample, 16, window=5, generator=torch.Generator().manual_seed(4), progress=False)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_sample_unchanged_and_dtype_device_kept():
    sample = load_texture("grass", 16).double()
    copy = sample.clone()
    out = efros_leung(sample, 12, window=5, generator=torch.Generator().manual_seed(0), progress=False)
    assert torch.equal(sample, copy)
    assert out.dtype == torch.float64 and out.device == sample.device


def test_copy_fraction_by_hand():
    # 2 x 3 output; row 0 copies a horizontal run (0,0),(0,1),(0,2); row 1 is scattered,
    # except (1,0) lies directly below (0,0)'s source.
    source = torch.tensor([[[0, 0], [0, 1], [0, 2]],
                           [[1, 0], [5, 5], [2, 7]]])
    right, below = copy_fraction(source).tolist()
    assert right == pytest.approx(2 / 4)   # 4 horizontal pairs, 2 continue the run
    assert below == pytest.approx(1 / 3)   # 3 vertical pairs, 1 continues


def test_load_texture():
    for name in TEXTURE_NAMES:
        t = load_texture(name, 32)
        assert t.shape == (1, 3, 32, 32) and 0 <= t.min() and t.max() <= 1
    assert torch.equal(load_texture("brick", 32)[0, 0], load_texture("brick", 32)[0, 2])  # greyscale
    with pytest.raises(KeyError, match="TEXTURE_NAMES|choose one of"):
        load_texture("bricks")


@pytest.mark.parametrize("kwargs, message", [
    (dict(window=4), "odd"),
    (dict(window=31), "smaller than the window"),
    (dict(size=0), "size"),
    (dict(seed_size=0), "seed_size"),
    (dict(epsilon=-1.0), "epsilon"),
])
def test_bad_arguments_say_what_to_do(kwargs, message):
    sample = load_texture("brick", 16)
    args = dict(size=8, window=5)
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        efros_leung(sample, progress=False, **args)


def test_bad_sample():
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\)"):
        efros_leung(torch.rand(3, 16, 16), 8)
    with pytest.raises(ValueError, match="one image"):
        efros_leung(torch.rand(2, 3, 16, 16), 8)
    assert cs_utils.efros_leung is efros_leung
