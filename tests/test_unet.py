import pytest
import torch

from cs_utils import unet


def test_synthetic_shapes_are_seeded_and_masks_match_the_images():
    images, masks = unet.synthetic_shapes(6, 32, generator=torch.Generator().manual_seed(3))
    again, masks_again = unet.synthetic_shapes(6, 32, generator=torch.Generator().manual_seed(3))
    assert images.shape == (6, 3, 32, 32) and masks.shape == (6, 1, 32, 32)
    assert torch.equal(images, again) and torch.equal(masks, masks_again)
    assert set(masks.unique().tolist()) == {0.0, 1.0}
    assert images.min() >= 0 and images.max() <= 1
    share = masks.mean((1, 2, 3))
    assert (share > 0.005).all() and (share < 0.8).all()       # every image has some shape, never all
    with pytest.raises(ValueError, match="size"):
        unet.synthetic_shapes(2, 8)


def test_mask_iou_by_hand():
    target = torch.zeros(2, 1, 2, 2)
    target[0, 0, 0] = 1                      # image 0: top row
    pred = torch.zeros(2, 1, 2, 2, dtype=torch.bool)
    pred[0, 0, :, 0] = True                  # image 0: left column -> 1 shared of 3 -> 1/3
    # image 1: both empty -> 1
    assert unet.mask_iou(pred, target) == pytest.approx((1 / 3 + 1) / 2)
    assert unet.mask_iou(target, target) == 1.0
    with pytest.raises(ValueError, match="same shape"):
        unet.mask_iou(pred[:1], target)


def test_unet_shapes_skips_and_errors():
    x = torch.rand(2, 3, 32, 32)
    with_skips, without = unet.UNet(width=4, depth=2), unet.UNet(width=4, depth=2, skips=False)
    assert with_skips(x).shape == without(x).shape == (2, 1, 32, 32)
    # the first expanding block reads the concatenation (twice the channels) only with skips
    assert with_skips.up[0][0].in_channels == 2 * without.up[0][0].in_channels
    with pytest.raises(ValueError, match="multiples of 4"):
        with_skips(torch.rand(1, 3, 30, 32))


def test_train_predict_save_load(tmp_path):
    net, history = unet.train_unet(steps=3, batch_size=2, size=16, n_train=8, width=4, depth=2,
                                   progress=False)
    again, _ = unet.train_unet(steps=3, batch_size=2, size=16, n_train=8, width=4, depth=2, progress=False)
    assert history.steps == 3 and len(history.loss) == 3
    for a, b in zip(net.parameters(), again.parameters()):
        assert torch.equal(a, b)
    x, _ = unet.synthetic_shapes(3, 16)
    copy = x.clone()
    masks = unet.predict_masks(net, x)
    assert masks.dtype == torch.bool and masks.shape == (3, 1, 16, 16) and torch.equal(x, copy)
    assert not net.training
    loaded = unet.load_unet(unet.save_unet(net, tmp_path / "u.pt", info={"iou": 0.5}))
    assert loaded.info == {"iou": 0.5} and loaded.config() == net.config()
    assert (loaded(x) - net(x)).abs().max() < 1e-2
    with pytest.raises(FileNotFoundError, match="topics-weights"):
        unet.load_unet("no_such_unet")
