import math

import pytest
import torch
from models_by_hand import linear_model

from cs_utils.image_stats import (
    amplitude_spectrum,
    border_detail_ratio,
    brightness,
    chroma_high_frequency_share,
    class_ranks,
    clipped_share,
    colorfulness,
    contrast,
    gray,
    high_frequency_share,
    milky_share,
    photo_amplitude_spectrum,
    photo_statistics,
    saturation,
    shifted_crop,
    streak_share,
    tone_statistics,
    vivid_chroma,
)


def _cosine_image(size, terms):
    """A grey image 0.5 + sum of a * cos(2 pi f x) along the columns, for (a, f) in terms."""
    x = torch.arange(size, dtype=torch.float64)
    row = 0.5 + sum(a * torch.cos(2 * math.pi * f * x) for a, f in terms)
    return row.expand(1, 3, size, size).float().clone()


def test_clipped_share_counts_pixels_with_any_channel_at_the_ends():
    x = torch.full((2, 3, 10, 10), 0.5)
    x[0, 0, 0, :4] = 0.0             # 4 pixels black in red only
    x[0, 2, 5, 5] = 1.0              # 1 pixel with blue at white
    x[0, :, 9, 9] = 1 / 255          # exactly one level from black: clipped
    x[0, :, 8, 8] = 2 / 255          # two levels: not clipped
    x[0, :, 7, 7] = 254 / 255        # one level from white: clipped
    x[1] = 1.0                       # all white
    torch.testing.assert_close(clipped_share(x), torch.tensor([7 / 100, 1.0]))
    assert clipped_share(x, tolerance=0).tolist() == [pytest.approx(5 / 100), 1.0]
    with pytest.raises(ValueError, match="tolerance"):
        clipped_share(x, tolerance=0.6)
    with pytest.raises(ValueError, match=r"values in \[0, 1\]"):
        clipped_share(x + 1)


def test_high_frequency_share_of_cosines():
    size = 64                                         # 0.125 and 0.375 cycles/px are exact FFT bins
    low = _cosine_image(size, [(0.2, 0.125)])
    high = _cosine_image(size, [(0.2, 0.375)])
    mixed = _cosine_image(size, [(0.2, 0.125), (0.1, 0.375)])   # energy 0.04 : 0.01
    flat = torch.full((1, 3, size, size), 0.3)
    shares = high_frequency_share(torch.cat([low, high, mixed, flat]))
    torch.testing.assert_close(shares, torch.tensor([0.0, 1.0, 0.2, 0.0]), atol=1e-6, rtol=0)
    # a diagonal cosine at 0.2 cycles/px along both axes has radial frequency 0.28 > 0.25
    i = torch.arange(size, dtype=torch.float64)
    diagonal = (0.5 + 0.3 * torch.cos(2 * math.pi * 0.203125 * (i[:, None] + i[None, :]))).float()
    assert high_frequency_share(diagonal.expand(1, 3, size, size)).item() == pytest.approx(1.0)
    assert high_frequency_share(diagonal.expand(1, 3, size, size), cutoff=0.3).item() == pytest.approx(0.0)
    with pytest.raises(ValueError, match="cutoff"):
        high_frequency_share(low, cutoff=0.5)


def _ycbcr_image(luma, cb, cr):
    """RGB of BT.601 luma and chroma planes (H, W) each: (1, 3, H, W)."""
    r = luma + cr / 0.713
    b = luma + cb / 0.564
    g = (luma - 0.299 * r - 0.114 * b) / 0.587
    return torch.stack([r, g, b])[None].float()


def test_border_detail_ratio_by_hand():
    d = 0.1
    sign = (-1.0) ** (torch.arange(20)[:, None] + torch.arange(20)[None, :])
    board = 0.5 + d * sign                     # a checkerboard: Laplacian -8 d s inside
    dotted = board.clone()
    dotted[:, -1] = 0.5 + 3 * d * sign[:, -1]   # a louder dotted last column
    images = torch.stack([board, dotted])[:, None].expand(-1, 3, -1, -1)
    # board: a border pixel repeats itself once, -6 d s (corners -4 d s): median 36 d^2 over 64 d^2;
    # dotted: its last column -16 d s (corners -10 d s): median 256 d^2 over 64 d^2
    torch.testing.assert_close(border_detail_ratio(images), torch.tensor([36 / 64, 256 / 64]))
    assert border_detail_ratio(images.transpose(-1, -2))[1].item() == pytest.approx(4.0)   # a dotted row
    with pytest.raises(ValueError, match="no interior 10 px"):
        border_detail_ratio(images, interior=10)


def test_chroma_high_frequency_share_by_hand():
    size = 64
    x = torch.arange(size, dtype=torch.float64)
    rows = torch.ones(size, 1, dtype=torch.float64)
    luma = torch.full((size, size), 0.5, dtype=torch.float64)
    stripes = torch.cos(math.pi * x).expand(size, size)          # +1, -1, ...: 0.5 cycles/px
    slow = torch.cos(2 * math.pi * x / size) * rows              # one cycle over the image
    # colored stripes at constant luminance: all the chroma energy at 0.5 cycles/px
    colored = _ycbcr_image(luma, 0.1 * stripes, -0.1 * stripes)
    # stripes in the luminance only, over a slow color gradient
    grey_stripes = _ycbcr_image(luma + 0.2 * stripes, 0.1 * slow, 0.05 * slow)
    # the two chroma channels' energies add: Cb a slow cosine (mean square 0.1^2 / 2), Cr the
    # stripes (0.05^2: a cosine at 0.5 cycles/px is +-1 on the pixels) -> 0.0025 / 0.0075
    mixed = _ycbcr_image(luma, 0.1 * slow, 0.05 * stripes)
    flat = torch.full((1, 3, size, size), 0.3)
    shares = chroma_high_frequency_share(torch.cat([colored, grey_stripes, mixed, flat]))
    torch.testing.assert_close(shares, torch.tensor([1.0, 0.0, 1 / 3, 0.0]), atol=1e-5, rtol=0)
    # a grey image with stripes has no chroma at all: 0, while its luminance share is 1
    grey = _cosine_image(size, [(0.2, 0.375)])
    assert chroma_high_frequency_share(grey).item() == pytest.approx(0.0, abs=1e-6)
    assert high_frequency_share(grey).item() == pytest.approx(1.0)
    # below the cutoff: colored stripes at 0.125 cycles/px
    slower = _ycbcr_image(luma, 0.1 * torch.cos(2 * math.pi * 0.125 * x).expand(size, size), 0 * luma)
    assert chroma_high_frequency_share(slower).item() == pytest.approx(0.0, abs=1e-6)
    assert chroma_high_frequency_share(slower, cutoff=0.1).item() == pytest.approx(1.0)
    with pytest.raises(ValueError, match="cutoff"):
        chroma_high_frequency_share(colored, cutoff=0.0)


def _pixels(*colours):
    """A 1 x len(colours) image with these (r, g, b) pixels."""
    return torch.tensor(colours, dtype=torch.float32).T.reshape(1, 3, 1, len(colours))


def test_brightness_and_contrast_by_hand():
    red = _pixels((1, 0, 0), (1, 0, 0))
    # half the pixels at 0.2, half at 0.6
    steps = torch.cat([torch.full((1, 3, 2, 2), 0.2), torch.full((1, 3, 2, 2), 0.6)], dim=-1)
    torch.testing.assert_close(brightness(torch.cat([red, red])), torch.tensor([0.299, 0.299]))
    assert brightness(steps).item() == pytest.approx(0.4)
    assert contrast(steps).item() == pytest.approx(0.2)          # population standard deviation
    assert contrast(red).item() == 0.0


def test_colorfulness_by_hand():
    # red: rg = 1, yb = 0.5 everywhere: no spread, 0.3 * sqrt(1 + 0.25)
    assert colorfulness(_pixels((1, 0, 0), (1, 0, 0))).item() == pytest.approx(0.3 * math.sqrt(1.25))
    # red and green: rg = +1, -1 (sd 1, mean 0), yb = 0.5: 1 + 0.3 * 0.5
    assert colorfulness(_pixels((1, 0, 0), (0, 1, 0))).item() == pytest.approx(1.15)
    assert colorfulness(_pixels((0.3, 0.3, 0.3), (0.9, 0.9, 0.9))).item() == pytest.approx(0.0, abs=1e-7)


def test_saturation_by_hand():
    # (max - min) / max: 1, 0 (grey), 0.75, and 0 for black
    image = _pixels((1, 0, 0), (0.5, 0.5, 0.5), (0.8, 0.4, 0.2), (0, 0, 0))
    assert saturation(image).item() == pytest.approx(0.4375)
    stats = tone_statistics(torch.cat([image, image]))
    assert set(stats) == {"brightness", "contrast", "colorfulness", "saturation"}
    assert all(v.shape == (2,) for v in stats.values())
    with pytest.raises(ValueError, match=r"values in \[0, 1\]"):
        saturation(image * 2)


def test_gray_uses_luma_weights():
    x = torch.zeros(1, 3, 2, 2)
    x[0, 1] = 1.0
    torch.testing.assert_close(gray(x), torch.full((1, 2, 2), 0.587))


def test_amplitude_spectrum_of_a_cosine_and_a_colour_transform():
    x = _cosine_image(16, [(0.25, 0.25)])                  # 4 cycles along the columns
    spectrum = amplitude_spectrum(x)
    assert spectrum.shape == (3, 16, 9)
    # |rfft2| of a * cos at bin 4 is a * H * W / 2; everything else is zero (the mean is removed)
    assert spectrum[0, 0, 4].item() == pytest.approx(0.25 * 16 * 16 / 2, rel=1e-5)
    assert spectrum.sum().item() == pytest.approx(3 * 0.25 * 16 * 16 / 2, rel=1e-5)
    swap = torch.tensor([[0.0, 0, 0], [0, 2, 0], [0, 0, 0]])
    transformed = amplitude_spectrum(x, color_transform=swap)
    assert transformed[0].sum() == 0
    assert transformed[1, 0, 4].item() == pytest.approx(2 * 0.25 * 128, rel=1e-5)
    with pytest.raises(ValueError, match="3x3"):
        amplitude_spectrum(x, color_transform=torch.eye(2))


def test_offline_photos_are_natural_by_these_numbers():
    stats = photo_statistics(224)
    assert 0.02 < stats["high_frequency_share"] < 0.06        # about 4%
    assert 0.05 < stats["milky_share_max"] < 0.1              # 0.093: pale areas of photos have smooth color
    assert 0.65 < stats["vivid_chroma_max"] < 0.73            # 0.71: no photo is neon
    spectrum = photo_amplitude_spectrum(64)
    assert spectrum.shape == (3, 64, 33)
    # natural images: the amplitude falls with frequency, roughly as 1 / f
    assert spectrum[:, 0, 2].mean() > 4 * spectrum[:, 0, 16].mean()
    with pytest.raises(ValueError, match="size"):
        photo_amplitude_spectrum(4)


def test_shifted_crop_moves_the_content():
    x = torch.zeros(1, 3, 10, 10)
    x[..., 2:, 2:] = 0.75          # the lower-right 80% of the image
    crop = shifted_crop(x, 0.2)
    assert crop.shape == x.shape
    torch.testing.assert_close(crop, torch.full_like(x, 0.75))
    torch.testing.assert_close(shifted_crop(x, 0), x)
    with pytest.raises(ValueError, match="shift"):
        shifted_crop(x, 1.0)


def test_class_ranks_by_hand_and_checks():
    weight = torch.zeros(3, 12)
    weight[0, 0], weight[1, 1], weight[2, 2] = 3.0, 2.0, 1.0
    model = linear_model(weight, torch.zeros(3))
    x = torch.zeros(1, 3, 2, 2)
    x.view(-1)[:3] = 1.0           # scores 3, 2, 1
    assert class_ranks(model, x, 0, size=2).tolist() == [0]
    assert class_ranks(model, x.repeat(2, 1, 1, 1), [2, 1], size=2).tolist() == [2, 1]
    with pytest.raises(IndexError, match="out of range"):
        class_ranks(model, x, 3, size=2)


def _color_checkerboard(size, base, delta):
    """A gray ``base`` image whose red channel alternates ``base +- delta`` pixel by pixel (checkerboard)."""
    x = torch.full((1, 3, size, size), base, dtype=torch.float64)
    sign = (torch.arange(size)[:, None] + torch.arange(size)[None, :]) % 2 * 2 - 1
    x[0, 0] += delta * sign
    return x.float()


def _checkerboard_detail(delta):
    """The speckle :func:`milky_share` measures on a red checkerboard of amplitude ``delta``: the blur
    (sigma 1, radius 3) keeps ``g^2`` of the checkerboard, ``g = sum_k w_k (-1)^k``; the opponent
    channels are ``R - G = +-delta`` and ``(R + G) / 2 - B = +-delta / 2``."""
    w = [math.exp(-k * k / 2) for k in range(-3, 4)]
    g = sum(wk * (-1) ** k for k, wk in zip(range(-3, 4), w)) / sum(w)
    return (1 - g * g) * delta * math.sqrt(1.25)


def test_milky_share_counts_pale_pixels_in_color_speckle():
    # pale (every channel above 0.5) and speckled in color: every pixel
    assert milky_share(_color_checkerboard(16, 0.8, 0.1)).tolist() == [1.0]
    # the same speckle on a dark image, or pale with the detail in brightness only: none
    assert milky_share(_color_checkerboard(16, 0.3, 0.1)).tolist() == [0.0]
    gray_board = _color_checkerboard(16, 0.8, 0.1)[:, :1].expand(1, 3, 16, 16)
    assert milky_share(gray_board).tolist() == [0.0]
    # flat white is pale but not speckled
    assert milky_share(torch.ones(1, 3, 16, 16)).tolist() == [0.0]
    # the threshold, by hand: just above 0.02 of detail every pixel counts, just below none does
    delta = 0.02 / _checkerboard_detail(1.0)
    assert milky_share(_color_checkerboard(16, 0.8, 1.02 * delta)).tolist() == [1.0]
    assert milky_share(_color_checkerboard(16, 0.8, 0.98 * delta)).tolist() == [0.0]
    assert milky_share(_color_checkerboard(16, 0.8, 0.98 * delta), speckle=0.019).tolist() == [1.0]


def test_milky_share_of_half_a_milky_image():
    x = torch.ones(2, 3, 32, 32)
    x[0, :, :, :16] = _color_checkerboard(32, 0.8, 0.1)[0, :, :, :16]   # left half speckled, right half white
    x[1, :, :, :16] = _color_checkerboard(32, 0.3, 0.1)[0, :, :, :16]   # left half dark, right half white
    share = milky_share(x)
    # the left half, and the local mean (sigma 2) carries the speckle at most 6 pixels into the white
    assert 16 / 32 <= share[0] <= 22 / 32
    assert share[1] <= 6 / 32
    with pytest.raises(ValueError, match="7x7"):
        milky_share(torch.ones(1, 3, 6, 6))
    with pytest.raises(ValueError, match="pale"):
        milky_share(x, pale=1.5)


def test_vivid_chroma_is_a_quantile_of_max_minus_min():
    chroma = torch.arange(100, dtype=torch.float64) / 100           # 0, 0.01, ..., 0.99
    x = torch.stack([0.5 + chroma / 2, 0.5 - chroma / 2, 0.5 + chroma / 4]).view(1, 3, 10, 10)
    # linear interpolation between the 95th and 96th of 100 sorted values: 0.94 + 0.05 * 0.01
    assert vivid_chroma(x.float()).item() == pytest.approx(0.9405, abs=1e-6)
    assert vivid_chroma(x.float(), quantile=0.5).item() == pytest.approx(0.495, abs=1e-6)
    assert vivid_chroma(torch.full((2, 3, 4, 4), 0.7)).tolist() == [0.0, 0.0]
    red = torch.zeros(1, 3, 4, 4)
    red[0, 0] = 1.0
    assert vivid_chroma(red).tolist() == [1.0]
    with pytest.raises(ValueError, match="quantile"):
        vivid_chroma(red, quantile=95)


def test_streak_share_of_stripes_by_hand():
    size = 64
    y = torch.arange(size, dtype=torch.float64)
    rows = torch.cos(2 * math.pi * 0.25 * y)[:, None].expand(size, size)      # horizontal stripes
    cols = rows.T                                                             # vertical stripes
    diagonal = torch.cos(2 * math.pi * 0.25 * (y[:, None] + y[None, :]))
    smooth = torch.cos(2 * math.pi * y / size)[:, None].expand(size, size)   # below the cutoff
    images = torch.stack([0.5 + 0.2 * rows + 0.1 * cols, 0.5 + 0.25 * rows, 0.5 + 0.25 * diagonal,
                          0.5 + 0.25 * smooth, torch.full((size, size), 0.5, dtype=torch.float64)])
    images = images[:, None].expand(5, 3, size, size).float()
    horizontal = streak_share(images)
    vertical = streak_share(images, direction="vertical")
    # the window spreads each stripe over 3 x 3 bins within 4 degrees of the axis, the two sets apart:
    # energies 0.2^2 and 0.1^2, shares 0.04 / 0.05 = 0.8 and 0.2
    assert horizontal[0].item() == pytest.approx(0.8, abs=1e-5)
    assert vertical[0].item() == pytest.approx(0.2, abs=1e-5)
    assert horizontal[1].item() == pytest.approx(1.0, abs=1e-5) and vertical[1].item() == pytest.approx(0.0)
    assert horizontal[2].item() == pytest.approx(0.0) and vertical[2].item() == pytest.approx(0.0)
    assert horizontal[3:].tolist() == [0.0, 0.0]                            # no fine detail, flat
    with pytest.raises(ValueError, match="direction"):
        streak_share(images, direction="diagonal")
    with pytest.raises(ValueError, match="angle"):
        streak_share(images, angle=50)
