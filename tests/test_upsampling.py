import math

import pytest
import torch

import cs_utils
from cs_utils import upsampling


def _smooth_plus_checkerboard(amplitude: float, size: int = 32) -> torch.Tensor:
    """(1, 1, size, size): a low-frequency cosine plus a checkerboard of the given amplitude."""
    y, x = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    smooth = torch.cos(2 * math.pi * 2 * x / size)
    checker = (-1.0) ** (x + y)
    return (smooth + amplitude * checker).double()[None, None]


@pytest.mark.parametrize("amplitude", [0.0, 0.1, 0.5, 1.0])
def test_stride_energy_of_known_checkerboard(amplitude):
    # cos has mean square 1/2, the checkerboard a^2: the share at (N/2, N/2) is a^2 / (1/2 + a^2)
    image = _smooth_plus_checkerboard(amplitude)
    expected = amplitude ** 2 / (0.5 + amplitude ** 2)
    assert upsampling.stride_energy(image) == pytest.approx(expected, rel=1e-6, abs=1e-12)


def test_stride_energy_counts_lines_and_ignores_mean():
    size = 16
    y, x = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    columns = ((-1.0) ** x)[None, None] + 5.0        # period-2 stripes on a constant: all at (0, N/2)
    assert upsampling.stride_energy(columns) == pytest.approx(1.0)
    period4 = torch.cos(2 * math.pi * x / 4)[None, None]
    assert upsampling.stride_energy(period4, stride=2) == pytest.approx(0.0, abs=1e-12)
    assert upsampling.stride_energy(period4, stride=4) == pytest.approx(1.0)
    assert upsampling.stride_energy(torch.full((1, 3, 8, 8), 0.3)) == 0.0


def test_stride_energy_of_photos_is_tiny_and_input_unchanged():
    x = cs_utils.load_image("chelsea", 128)
    copy = x.clone()
    assert upsampling.stride_energy(x) < 1e-3
    assert torch.equal(x, copy)


def test_power_profile_peaks_at_the_pattern_frequency():
    y, x = torch.meshgrid(torch.arange(16), torch.arange(16), indexing="ij")
    image = (torch.cos(2 * math.pi * x / 4) + 0.5 * (-1.0) ** y)[None, None].float()
    freqs, power = upsampling.power_profile(image)
    assert freqs.tolist() == [i / 16 for i in range(9)]
    # rows: cos of period 4 -> (16 * 0.5)^2 = 64 at 0.25; columns: 0.5 * (-1)^y -> (16 * 0.5)^2 = 64 at 0.5
    torch.testing.assert_close(power, torch.tensor([0, 0, 0, 0, 32.0, 0, 0, 0, 32.0], dtype=torch.float64))
    with pytest.raises(ValueError, match="square"):
        upsampling.power_profile(torch.rand(1, 3, 8, 6))


def test_stride_energy_errors():
    with pytest.raises(ValueError, match="multiples"):
        upsampling.stride_energy(torch.rand(1, 3, 9, 8))
    with pytest.raises(ValueError, match="stride"):
        upsampling.stride_energy(torch.rand(1, 3, 8, 8), stride=1)
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        upsampling.stride_energy(torch.rand(8, 8))
    with pytest.raises(ValueError, match="NaN"):
        upsampling.stride_energy(torch.full((1, 1, 4, 4), float("nan")))


def test_transposed_decoder_doubles_size_and_keeps_encoder():
    resize, transposed = upsampling.upsampling_net("resize"), upsampling.upsampling_net("transposed")
    assert isinstance(transposed.up[0], upsampling.TransposedUp)
    assert transposed.decoder == "transposed" and resize.decoder == "resize"
    layer = upsampling.TransposedUp(4, 2)
    assert layer(torch.rand(1, 4, 5, 7)).shape == (1, 2, 10, 14)
    x = torch.rand(2, 3, 24, 32)
    assert transposed(x).shape == resize(x).shape == x.shape
    down = {k: v.shape for k, v in resize.state_dict().items() if not k.startswith("up.")}
    assert down == {k: v.shape for k, v in transposed.state_dict().items() if not k.startswith("up.")}
    with pytest.raises(ValueError, match="decoder"):
        upsampling.upsampling_net("bilinear")


def test_transposed_stride2_kernel3_makes_a_checkerboard_from_a_constant():
    # Odena et al.: a 3x3 kernel of ones with stride 2 covers odd and even output pixels unevenly
    conv = torch.nn.ConvTranspose2d(1, 1, 3, stride=2, padding=1, output_padding=1, bias=False)
    torch.nn.init.ones_(conv.weight)
    with torch.no_grad():
        out = conv(torch.ones(1, 1, 8, 8))[..., 2:-2, 2:-2]      # away from the border
    assert set(out.unique().tolist()) == {1.0, 2.0, 4.0}
    assert upsampling.stride_energy(out) > 0.5


def test_train_decoder_short_run_is_seeded(lite0, caller_state):
    style = torch.rand(1, 3, 48, 48, generator=torch.Generator().manual_seed(0))
    photos = [torch.rand(1, 3, 40, 40, generator=torch.Generator().manual_seed(1))]
    state = caller_state(lite0, style)
    kwargs = dict(steps=2, batch_size=1, crop_size=32, style_size=32, progress=False, photos=photos)
    net_a, history = upsampling.train_decoder(lite0, "transposed", style, **kwargs)
    net_b, _ = upsampling.train_decoder(lite0, "transposed", style, **kwargs)
    state.assert_unchanged()
    assert history.steps == 2 and len(history.loss) == 2 and all(math.isfinite(v) for v in history.loss)
    for a, b in zip(net_a.parameters(), net_b.parameters()):
        assert torch.equal(a, b)
    with pytest.raises(ValueError, match="multiple of 4"):
        upsampling.train_decoder(lite0, "resize", style, **dict(kwargs, crop_size=30))


def test_save_and_load_decoder_net(tmp_path):
    net = upsampling.upsampling_net("transposed")
    path = upsampling.save_decoder_net(net, tmp_path / "d.pt", info={"steps": 3})
    loaded = upsampling.load_decoder_net(path)
    assert loaded.decoder == "transposed" and loaded.info == {"steps": 3}
    assert not any(p.requires_grad for p in loaded.parameters()) and not loaded.training
    x = torch.rand(1, 3, 16, 16)
    assert (loaded(x) - net.eval()(x)).abs().max() < 2e-3
    with pytest.raises(FileNotFoundError, match="topics-weights"):
        upsampling.load_decoder_net("no_such_net")
