import json

import pytest
import torch

from cs_utils import adversarial_style, unet, upsampling
from cs_utils.instructor import train_topics


def test_committed_weights_follow_the_recipes():
    record = json.loads(train_topics.RECORD_FILE.read_text())
    assert set(record) == {"decoder_resize", "decoder_transposed", "unet_skips", "unet_no_skips",
                           "adversarial_starry_night"}
    for name in ("decoder_resize", "decoder_transposed"):
        assert record[name]["recipe"] == train_topics.DECODER_RECIPE
        assert upsampling.load_decoder_net(name).decoder == name.split("_")[1]
    for name in ("unet_skips", "unet_no_skips"):
        assert record[name]["recipe"] == train_topics.UNET_RECIPE
    assert record["adversarial_starry_night"]["recipe"] == train_topics.ADVERSARIAL_RECIPE
    assert adversarial_style.load_stylizer("adversarial_starry_night").info["steps"] == \
        train_topics.ADVERSARIAL_RECIPE["steps"]


def test_committed_unets_reproduce_their_recorded_iou():
    images, masks = train_topics.unet_held_out()
    for name, skips in (("unet_skips", True), ("unet_no_skips", False)):
        net = unet.load_unet(name)
        assert net.skips is skips
        iou = unet.mask_iou(unet.predict_masks(net, images), masks)
        assert iou == pytest.approx(net.info["held_out_iou"], abs=2e-3)


def test_unknown_group_is_refused(capsys):
    with pytest.raises(SystemExit):
        train_topics.main(["no_such_group"])
    assert "unknown groups" in capsys.readouterr().err


def test_held_out_images_differ_from_training_images():
    train, _ = unet.synthetic_shapes(4, train_topics.UNET_RECIPE["size"],
                                     generator=torch.Generator().manual_seed(train_topics.UNET_RECIPE["seed"]))
    held, _ = train_topics.unet_held_out()
    assert not torch.equal(train, held[:4])
