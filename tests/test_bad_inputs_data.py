"""Bad inputs (issue 13): each case is generated here (tests/bad_input_corpus.py) and must be
handled right or refused with the file named — never silently wrong."""

import json

import numpy as np
import pytest
import torch
from bad_input_corpus import (
    box_polygon,
    coco_json,
    corrupt_png_that_decodes,
    displayed,
    not_an_image,
    pattern,
    save_png16,
    save_with_orientation,
)
from PIL import Image
from test_engine import tiny, tiny_builder  # noqa: F401 - the fixture registers a stand-in model

from fcis.data import CocoInstances, DataError
from fcis.data.coco import read_image
from fcis.data.convert import convert_instance_masks, convert_via, convert_yolo_seg
from fcis.inference.image_input import load_image_array
from fcis.visualize import draw_predictions

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

    small = {"rpn_post_nms_top_n_train": 100, "rpn_post_nms_top_n_test": 100, "roi_batch_size_per_image": 64,
             "detections_per_img": 30} if name.startswith("maskrcnn") else {}
    model = build_model(name, num_classes=2, min_size=256, max_size=320, **small)
    model.eval()
    with torch.no_grad():
        (out,) = model([torch.rand(3, 2, 900)])
    assert out["masks"].shape[-2:] == (2, 900) and out["boxes"].shape[1] == 4
    with torch.no_grad():                                           # the path predict/evaluate/validation take
        windows = list(model.detect_windows([torch.rand(3, 2, 900)])[0])
    assert all(w.x0 + w.window.shape[1] <= 900 and w.y0 + w.window.shape[0] <= 2 for w in windows)
    model.train()
    mask = torch.zeros(1, 900, 2, dtype=torch.uint8)
    mask[0, 100:400] = 1
    target = {"boxes": torch.tensor([[0.0, 100.0, 2.0, 400.0]]), "labels": torch.tensor([1]), "masks": mask}
    losses = model([torch.rand(3, 900, 2)], [target])
    assert all(torch.isfinite(v) for v in losses.values())


# --- 2. evaluation that would be wrong without a word ------------------------------------------------

def _grid_gt(n_objects: int, categories=(1, 2)) -> dict:
    """One 80x60 image with ``n_objects`` 3x3 squares of category 1 (category 2 has none)."""
    anns = []
    for k in range(n_objects):
        x, y = 4 * (k % 20), 4 * (k // 20)
        anns.append({"id": k + 1, "image_id": 1, "category_id": 1, "iscrowd": 0, "area": 9.0,
                     "bbox": [x, y, 3, 3], "segmentation": [box_polygon(x, y, x + 3, y + 3)]})
    return {"images": [{"id": 1, "file_name": "x.png", "width": 80, "height": 60}], "annotations": anns,
            "categories": [{"id": c, "name": f"c{c}"} for c in categories]}


def _perfect(gt: dict, category_id=None) -> list[dict]:
    from fcis.evaluation.ground_truth import load_coco_gt

    coco = load_coco_gt(gt)
    return [{"image_id": a["image_id"], "category_id": a["category_id"] if category_id is None else category_id,
             "bbox": a["bbox"], "score": 1.0 - 1e-3 * k, "segmentation": coco.annToRLE(a)}
            for k, a in enumerate(gt["annotations"])]


def test_unknown_prediction_category_ids_are_never_silent():
    from fcis.evaluation import evaluate_results
    from fcis.evaluation.report import EvaluationWarning

    gt = _grid_gt(4)
    with pytest.raises(ValueError, match=r"none of the 4 predictions has a category id of the ground truth: "
                                         r"predicted ids 0 \(4x\).*\[1, 2\]"):
        evaluate_results(gt, _perfect(gt, category_id=0))                      # 0-based ids
    results = _perfect(gt) + [dict(_perfect(gt)[0], category_id=99)]
    with pytest.warns(EvaluationWarning, match=r"1 of 5 predictions have category ids that are not in the "
                                               r"ground truth and are not scored: 99 \(1x\)"):
        metrics = evaluate_results(gt, results)
    assert metrics["unknown_category_predictions"] == 1 and metrics["segm"]["AP"] == pytest.approx(1.0)


def test_more_objects_than_the_coco_detection_cap_warns_and_has_an_option(recwarn):
    from fcis.evaluation import evaluate_results
    from fcis.evaluation.report import EvaluationWarning

    gt = _grid_gt(150)
    with pytest.warns(EvaluationWarning, match=r"at most 100 detections per image and category; 1 exceed it "
                                               r"\(image 1 category 1: 150 objects, 150 predictions\)"):
        capped = evaluate_results(gt, _perfect(gt), voc=False)
    assert capped["segm"]["AP"] < 0.95 and capped["max_dets_exceeded"]
    recwarn.clear()
    full = evaluate_results(gt, _perfect(gt), voc=False, max_dets=200)
    assert full["segm"]["AP"] == pytest.approx(1.0) and full["bbox"]["AP"] == pytest.approx(1.0)
    assert not [w for w in recwarn if issubclass(w.category, EvaluationWarning)]


def test_evaluate_weights_with_a_missing_image_skips_it_and_leaves_out_its_objects(
        tmp_path, tiny, capsys):  # noqa: F811
    from fcis.cli.main import main
    from fcis.engine import save_checkpoint

    images = [{"id": i, "file_name": f"im{i}.png", "width": 40, "height": 30} for i in (1, 2)]
    anns = [{"id": i, "image_id": i, "category_id": 1, "segmentation": [box_polygon(5, 5, 25, 20)]} for i in (1, 2)]
    coco_json(tmp_path / "val.json", images, anns)
    coco_json(tmp_path / "val_one.json", images[:1], anns[:1])
    Image.fromarray(pattern(30, 40)).save(tmp_path / "im1.png")                  # im2.png is missing
    model = tiny_builder(num_classes=1)
    save_checkpoint(tmp_path / "m.pt", model=model.state_dict(), model_name=tiny, model_config=model.config.to_dict(),
                    dataset={"class_names": ["thing"], "label_to_cat_id": {1: 1}})
    for data, out in (("val.json", "ev"), ("val_one.json", "ev_one")):
        assert main(["evaluate", "--weights", str(tmp_path / "m.pt"), "--data", str(tmp_path / data), "--output",
                     str(tmp_path / out), "--device", "cpu", "--no-progress"]) == 0
    shown = capsys.readouterr().out
    assert "skipped (not scored): " in shown and "im2.png: cannot read image (file not found)" in shown
    metrics = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    alone = json.loads((tmp_path / "ev_one" / "metrics.json").read_text())
    assert metrics["num_images"] == 1
    assert [s["image_id"] for s in metrics["skipped_images"]] == [2]
    assert metrics["segm"] == alone["segm"] and metrics["bbox"] == alone["bbox"]


# --- 6. one unreadable file does not abort fcis predict on a folder ----------------------------------

def _tiny_checkpoint(path, tiny):  # noqa: F811
    from fcis.engine import save_checkpoint

    model = tiny_builder(num_classes=2)
    save_checkpoint(path, model=model.state_dict(), model_name=tiny, model_config=model.config.to_dict(),
                    dataset={"class_names": ["cat", "dog"], "label_to_cat_id": {1: 1, 2: 2}})
    return path


def test_predict_skips_an_unreadable_file_names_it_and_writes_the_rest(tmp_path, tiny, capsys):  # noqa: F811
    from fcis.cli.main import main

    folder = tmp_path / "photos"
    folder.mkdir()
    Image.fromarray(pattern(20, 24)).save(folder / "a.png")
    not_an_image(folder / "b.jpg")
    Image.fromarray(pattern(20, 24, seed=2)).save(folder / "c.png")
    ckpt = _tiny_checkpoint(tmp_path / "m.pt", tiny)
    assert main(["predict", "--weights", str(ckpt), str(folder), "--output", str(tmp_path / "out"),
                 "--score-threshold", "0", "--device", "cpu", "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert "b.jpg: cannot read image" in err
    preds = json.loads((tmp_path / "out" / "predictions.json").read_text())
    assert {p["file_name"].rsplit("/", 1)[-1] for p in preds} == {"a.png", "c.png"}
    skipped = json.loads((tmp_path / "out" / "skipped.json").read_text())
    assert [s["file_name"].rsplit("/", 1)[-1] for s in skipped] == ["b.jpg"]
    not_an_image(folder / "a.png")                                              # nothing readable: an error,
    not_an_image(folder / "c.png")                                              # and still the files
    assert main(["predict", "--weights", str(ckpt), str(folder), "--output", str(tmp_path / "out2"),
                 "--device", "cpu", "--no-progress"]) == 2
    assert json.loads((tmp_path / "out2" / "predictions.json").read_text()) == []
    assert len(json.loads((tmp_path / "out2" / "skipped.json").read_text())) == 3


# --- 7. prediction memory: threshold before pasting, one box window at a time, straight to RLE -------

@pytest.mark.parametrize("name", ["fcis_resnet18", "instancefcn_resnet18", "maskrcnn_resnet18_fpn"])
def test_windowed_rle_path_equals_full_masks_and_skips_low_scores(name, monkeypatch):
    from pycocotools import mask as mask_utils

    import fcis.models.mask_paste as mask_paste
    from fcis.inference import Predictor
    from fcis.models import build_model

    small = {"rpn_post_nms_top_n_test": 100, "detections_per_img": 30} if name.startswith("maskrcnn") else {}
    model = build_model(name, num_classes=2, min_size=96, max_size=128, **small).eval()
    image = torch.rand(3, 70, 90)
    with torch.no_grad():
        (full,) = model([image])
    thr = model.config.mask_threshold
    assert len(full["scores"]) > 0
    predictor = Predictor(model, ["a", "b"], score_threshold=0.0)
    pred = predictor.predict_rle(image)
    assert len(pred["rles"]) == len(full["scores"])
    assert torch.equal(pred["labels"], full["labels"]) and torch.allclose(pred["scores"], full["scores"])
    assert torch.allclose(pred["boxes"], full["boxes"])
    for k, rle in enumerate(pred["rles"]):
        want = mask_utils.encode(np.asfortranarray((full["masks"][k, 0] >= thr).numpy().astype(np.uint8)))
        assert rle["counts"] == want["counts"].decode() and rle["size"] == [70, 90]
    assert torch.equal(predictor.predict(image)["masks"], full["masks"][:, 0] >= thr)
    # a score threshold above every score: no mask is pasted at the image's resolution at all
    pasted = []
    real = mask_paste.paste_masks_in_frame

    def spy(masks, boxes, frame):
        pasted.append((frame[2] - frame[0]) * (frame[3] - frame[1]))
        return real(masks, boxes, frame)

    for module in ("fcis.models.mask_paste", "fcis.models.fcis.mask_voting", "fcis.models.instancefcn.inference"):
        monkeypatch.setattr(f"{module}.paste_masks_in_frame", spy)
    assert len(Predictor(model, ["a", "b"], score_threshold=1.01).predict_rle(image)["rles"]) == 0
    assert all(p < 70 * 90 / 4 for p in pasted)                   # only InstanceFCN's coarse NMS grid


def test_cli_predict_never_builds_full_image_masks(tmp_path, monkeypatch, capsys):
    """fcis predict goes through detect_windows and RLE: model(images), which pastes every mask
    into the whole image, is never called."""
    from fcis.cli.main import main
    from fcis.engine import save_checkpoint
    from fcis.models import build_model

    model = build_model("fcis_resnet18", num_classes=2, min_size=96, max_size=128)
    save_checkpoint(tmp_path / "m.pt", model=model.state_dict(), model_name="fcis_resnet18",
                    model_config=model.config.to_dict(), dataset={"class_names": ["a", "b"]})
    Image.fromarray(pattern(50, 70)).save(tmp_path / "p.png")

    def no_full_masks(self, *a, **k):
        raise AssertionError("model(images) pastes full-image masks")

    monkeypatch.setattr("fcis.models.fcis.model.FCIS.forward", no_full_masks)
    assert main(["predict", "--weights", str(tmp_path / "m.pt"), str(tmp_path / "p.png"), "--output",
                 str(tmp_path / "out"), "--score-threshold", "0", "--device", "cpu", "--no-progress"]) == 0
    preds = json.loads((tmp_path / "out" / "predictions.json").read_text())
    assert preds and all(p["segmentation"]["size"] == [50, 70] for p in preds)
    assert Image.open(tmp_path / "out" / "p.png").size == (70, 50)


def test_window_to_rle_matches_pycocotools_encode():
    from pycocotools import mask as mask_utils

    from fcis.models.mask_paste import window_to_rle

    rng = np.random.default_rng(0)
    for _ in range(300):
        H, W = (int(v) for v in rng.integers(1, 10, 2))
        h, w = int(rng.integers(0, H + 1)), int(rng.integers(0, W + 1))
        x0, y0 = int(rng.integers(0, W - w + 1)), int(rng.integers(0, H - h + 1))
        window = rng.random((h, w)) < rng.random()
        full = np.zeros((H, W), np.uint8)
        full[y0:y0 + h, x0:x0 + w] = window
        want = mask_utils.encode(np.asfortranarray(full))["counts"].decode()
        assert window_to_rle(window, x0, y0, H, W)["counts"] == want
