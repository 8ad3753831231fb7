"""Bad inputs (issue 13): each case is generated here (tests/bad_input_corpus.py) and must be
handled right or refused with the file named — never silently wrong."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from fcis.data import CocoInstances, DataError
from fcis.data.coco import read_image
from fcis.data.convert import convert_instance_masks, convert_via, convert_yolo_seg
from fcis.inference.image_input import load_image_array
from fcis.visualize import draw_predictions

from bad_input_corpus import (box_polygon, coco_json, corrupt_png_that_decodes, displayed, not_an_image, pattern,
                              save_png16, save_with_orientation)

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy:DeprecationWarning")


# --- 1. EXIF orientation: every loader and converter sees the displayed picture ----------------------

@pytest.mark.parametrize("suffix", [".png", ".jpg"])
def test_exif_orientation_prediction_and_overlay_loaders(tmp_path, suffix):
    stored = pattern(4, 6)                                          # stored 6 wide, 4 high
    path = save_with_orientation(tmp_path / f"phone{suffix}", stored, 6)
    want = displayed(stored, 6)                                     # displayed 4 wide, 6 high
    got = load_image_array(path)
    assert got.shape == (3, 6, 4)
    assert draw_predictions(path, {}).size == (4, 6)
    if suffix == ".png":                                            # lossless: the very pixels
        assert np.array_equal((got * 255).round().astype(np.uint8).transpose(1, 2, 0), want)
        assert np.array_equal(np.asarray(draw_predictions(path, {})), want)


def test_exif_orientation_training_dataset_square_image(tmp_path):
    """A square photo: no size check can catch a rotation, the pixels must be the displayed ones."""
    stored = pattern(5, 5, seed=1)
    save_with_orientation(tmp_path / "sq.png", stored, 6)
    js = coco_json(tmp_path / "a.json", [{"id": 1, "file_name": "sq.png", "width": 5, "height": 5}],
                   [{"id": 1, "image_id": 1, "category_id": 1, "segmentation": [box_polygon(0, 0, 2, 5)]}])
    image, _ = CocoInstances(js)[0]
    assert np.array_equal((image * 255).round().byte().permute(1, 2, 0).numpy(), displayed(stored, 6))
    array, reason = read_image(tmp_path / "sq.png")
    assert reason is None and np.array_equal(array, displayed(stored, 6))


def test_exif_orientation_training_dataset_sizes_are_displayed_ones(tmp_path):
    save_with_orientation(tmp_path / "p.png", pattern(4, 6), 6)
    js = coco_json(tmp_path / "a.json", [{"id": 1, "file_name": "p.png", "width": 4, "height": 6}],
                   [{"id": 1, "image_id": 1, "category_id": 1, "segmentation": [box_polygon(0, 3, 4, 6)]}])
    sample = CocoInstances(js, on_bad_sample="raise")[0]
    assert sample[0].shape == (3, 6, 4) and sample[1]["masks"].shape == (1, 6, 4)


def test_exif_orientation_converters_use_displayed_size(tmp_path):
    (tmp_path / "img").mkdir()
    save_with_orientation(tmp_path / "img" / "p.jpg", pattern(40, 60), 6)   # displayed 40 x 60
    # VIA: a polygon drawn on the displayed picture, down to y = 55 (> the stored height 40)
    via = {"p.jpg123": {"filename": "p.jpg", "regions": [{"shape_attributes": {
        "name": "polygon", "all_points_x": [5, 35, 35, 5], "all_points_y": [10, 10, 55, 55]}}]}}
    (tmp_path / "img" / "via.json").write_text(json.dumps(via))
    data = json.loads(convert_via(tmp_path / "img" / "via.json", tmp_path / "via_coco.json").read_text())
    assert (data["images"][0]["width"], data["images"][0]["height"]) == (40, 60)
    assert data["annotations"][0]["bbox"] == [5.0, 10.0, 30.0, 45.0]                 # not clipped at 40
    # YOLO: normalised by the displayed size
    (tmp_path / "labels").mkdir()
    (tmp_path / "labels" / "p.txt").write_text("0 0.125 0.5 0.875 0.5 0.875 1.0 0.125 1.0\n")
    data = json.loads(convert_yolo_seg(tmp_path / "img", tmp_path / "labels", tmp_path / "y.json",
                                       class_names=["a"]).read_text())
    assert data["annotations"][0]["bbox"] == [5.0, 30.0, 30.0, 30.0]
    # instance masks: the mask is drawn on the displayed picture
    (tmp_path / "masks").mkdir()
    ids = np.zeros((60, 40), np.uint8)
    ids[30:50, 10:20] = 1
    Image.fromarray(ids).save(tmp_path / "masks" / "p_mask.png")
    data = json.loads(convert_instance_masks(tmp_path / "img", tmp_path / "masks", tmp_path / "m.json").read_text())
    assert (data["images"][0]["width"], data["images"][0]["height"]) == (40, 60)


# --- 5. 16-bit PNGs: one loader, right for prediction, training and evaluation ------------------------

def test_16bit_png_is_read_the_same_everywhere(tmp_path):
    values = np.array([[0, 32768, 65535], [256, 1024, 49152]], dtype=np.uint16)
    path = save_png16(tmp_path / "deep.png", values)
    assert Image.open(path).mode.startswith("I")
    want = (values >> 8).astype(np.float32) / 255
    got = load_image_array(path)                                    # predict
    assert got.shape == (3, 2, 3) and np.allclose(got, want[None], atol=1e-6)
    array, reason = read_image(path)                                # training and evaluation
    assert reason is None and np.allclose(array.transpose(2, 0, 1) / 255, got, atol=1e-6)
    with Image.open(path) as im:                                    # a PIL image given by the caller
        assert np.allclose(load_image_array(im), got, atol=1e-6)
        assert np.allclose(load_image_array(im.convert("I")), got, atol=1e-6)


# --- 8a. a corrupt mask PNG that still decodes is refused, named --------------------------------------

def test_corrupt_mask_png_is_refused(tmp_path):
    (tmp_path / "img").mkdir()
    (tmp_path / "masks").mkdir()
    Image.fromarray(pattern(16, 16)).save(tmp_path / "img" / "a.png")
    ids = np.zeros((16, 16), np.uint8)
    ids[2:6, 2:6] = 1
    ids[8:14, 8:14] = 2
    bad = corrupt_png_that_decodes(tmp_path / "masks" / "a_mask.png", ids)
    with Image.open(bad) as im:                                     # it does decode, into other ids
        assert im.size == (16, 16) and not np.array_equal(np.asarray(im), ids)
    with pytest.raises(DataError, match=r"a_mask\.png: corrupt mask file .*checksum"):
        convert_instance_masks(tmp_path / "img", tmp_path / "masks", tmp_path / "o.json")


# --- smaller: a polygon entirely outside the image says so --------------------------------------------

def test_polygon_entirely_outside_the_image_is_reported_as_such(tmp_path):
    js = coco_json(tmp_path / "a.json", [{"id": 1, "file_name": "x.png", "width": 10, "height": 8}],
                   [{"id": 7, "image_id": 1, "category_id": 1, "segmentation": [box_polygon(20, 2, 30, 6)]}])
    with pytest.raises(DataError, match=r"annotation 7: polygon lies entirely outside the image \(10x8\)"):
        CocoInstances(js, on_bad_sample="raise")
    Image.fromarray(pattern(8, 10)).save(tmp_path / "x.png")
    via = {"x": {"filename": "x.png", "regions": [{"shape_attributes": {
        "name": "polygon", "all_points_x": [20, 30, 30], "all_points_y": [2, 2, 6]}}]}}
    (tmp_path / "via.json").write_text(json.dumps(via))
    with pytest.raises(DataError, match=r"region 0: polygon lies entirely outside the image \(10x8\)"):
        convert_via(tmp_path / "via.json", tmp_path / "o.json")


# --- 3. a very thin image (2x900) through every model family, eval and training ----------------------

@pytest.mark.parametrize("name", ["fcis_resnet18", "instancefcn_resnet18", "maskrcnn_resnet18_fpn"])
def test_very_thin_image_runs_through_every_model(name):
    from fcis.models import build_model

    model = build_model(name, num_classes=2, min_size=256, max_size=320)
    model.eval()
    with torch.no_grad():
        (out,) = model([torch.rand(3, 2, 900)])
    assert out["masks"].shape[-2:] == (2, 900) and out["boxes"].shape[1] == 4
    model.train()
    mask = torch.zeros(1, 900, 2, dtype=torch.uint8)
    mask[0, 100:400] = 1
    target = {"boxes": torch.tensor([[0.0, 100.0, 2.0, 400.0]]), "labels": torch.tensor([1]), "masks": mask}
    losses = model([torch.rand(3, 900, 2)], [target])
    assert all(torch.isfinite(v) for v in losses.values())
