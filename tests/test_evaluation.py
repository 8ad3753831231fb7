"""Tests for fcis.evaluation: COCO AP, VOC mask mAP^r, class-agnostic mask AR, reporting."""

from __future__ import annotations

import copy
import json
import math

import numpy as np
import pytest
import torch
from helpers import uncompressed_rle
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from fcis.evaluation import (
    evaluate_coco,
    evaluate_results,
    evaluate_voc,
    format_metrics_table,
    load_results,
    mask_average_recall,
    predictions_to_coco_results,
    write_metrics,
)
from fcis.evaluation.voc_eval import voc_ap

# pycocotools 2.0.11's decode trips numpy 2's __array__(copy=...) deprecation; not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword")

H, W = 40, 50


# ----------------------------------------------------------------------------- helpers


def rect_mask(y0, y1, x0, x1, h=H, w=W) -> np.ndarray:
    """uint8[h, w] with rows y0..y1-1, columns x0..x1-1 set."""
    m = np.zeros((h, w), dtype=np.uint8)
    m[y0:y1, x0:x1] = 1
    return m


def rle(mask: np.ndarray) -> dict:
    r = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(s) for s in r["size"]], "counts": r["counts"].decode("ascii")}




def build_gt(images, categories, anns) -> dict:
    """COCO GT dict; ``anns`` = (image_id, category_id, segmentation, iscrowd); area and bbox are
    computed from the rasterised segmentation so box AP of mask-derived boxes is exact."""
    imgs = {i["id"]: i for i in images}
    out = []
    for k, (img_id, cat_id, seg, crowd) in enumerate(anns, start=1):
        h, w = imgs[img_id]["height"], imgs[img_id]["width"]
        if isinstance(seg, list):
            r = mask_utils.merge(mask_utils.frPyObjects(seg, h, w))
        elif isinstance(seg["counts"], list):
            r = mask_utils.frPyObjects(seg, h, w)
        else:
            r = seg
        out.append({
            "id": k * 10 + 1,  # non-contiguous annotation ids
            "image_id": img_id,
            "category_id": cat_id,
            "segmentation": seg,
            "iscrowd": crowd,
            "area": float(mask_utils.area(r)),
            "bbox": [float(v) for v in mask_utils.toBbox(r)],
        })
    return {"images": images, "categories": categories, "annotations": out}


def gt_as_results(coco: COCO, score: float = 1.0) -> list[dict]:
    """The non-crowd GT instances as COCO results (RLE segmentation, GT bbox)."""
    res = []
    for a in coco.dataset["annotations"]:
        if a["iscrowd"]:
            continue
        r = coco.annToRLE(a)
        counts = r["counts"].decode("ascii") if isinstance(r["counts"], bytes) else r["counts"]
        res.append({
            "image_id": a["image_id"],
            "category_id": a["category_id"],
            "bbox": list(a["bbox"]),
            "score": score,
            "segmentation": {"size": list(r["size"]), "counts": counts},
        })
    return res


def shifted(results: list[dict], coco: COCO, dy: int, dx: int) -> list[dict]:
    """Copies of ``results`` with masks and boxes shifted by (dy, dx) pixels."""
    out = []
    for r in results:
        m = mask_utils.decode(r["segmentation"])
        m = np.roll(np.roll(m, dy, axis=0), dx, axis=1)
        rr = dict(r)
        rr["segmentation"] = rle(m)
        rr["bbox"] = [r["bbox"][0] + dx, r["bbox"][1] + dy, r["bbox"][2], r["bbox"][3]]
        out.append(rr)
    return out


@pytest.fixture
def gt_path(tmp_path):
    """3 images 40×50 (image 3 has no annotations), categories 5 'cat', 9 'dog', 7 'bird' (no GT);
    masks as compressed RLE, polygons and one crowd region (uncompressed RLE)."""
    images = [{"id": i, "height": H, "width": W, "file_name": f"{i}.png"} for i in (1, 2, 3)]
    categories = [{"id": 5, "name": "cat"}, {"id": 9, "name": "dog"}, {"id": 7, "name": "bird"}]
    anns = [
        (1, 5, rle(rect_mask(5, 15, 5, 20)), 0),
        (1, 9, [[25.0, 5.0, 45.0, 5.0, 45.0, 30.0, 25.0, 30.0]], 0),  # polygon
        (1, 5, uncompressed_rle(rect_mask(25, 38, 2, 20)), 1),  # crowd
        (2, 9, rle(rect_mask(0, 30, 12, 50)), 0),  # 30x38 = 1140 px: the only medium GT
        (2, 5, [[2.0, 2.0, 12.0, 2.0, 7.0, 9.0]], 0),  # polygon triangle
        (2, 5, rle(rect_mask(32, 39, 30, 48)), 0),
    ]
    path = tmp_path / "gt.json"
    path.write_text(json.dumps(build_gt(images, categories, anns)))
    return path


@pytest.fixture
def gt(gt_path):
    return COCO(str(gt_path))


# ----------------------------------------------------------------------------- perfect results


def test_gt_as_predictions_scores_perfectly(gt, gt_path):
    results = gt_as_results(gt)
    before = copy.deepcopy(results)
    for iou_type in ("segm", "bbox"):
        m = evaluate_coco(gt_path, results, iou_type)  # GT given as a path here
        assert set(m) == {"AP", "AP50", "AP75", "APs", "APm", "APl"}
        for k in ("AP", "AP50", "AP75", "APs", "APm"):
            assert m[k] == pytest.approx(1.0), (iou_type, k, m)
        assert math.isnan(m["APl"])  # no large GT: COCOeval's -1 becomes nan
    voc = evaluate_voc(gt, results)
    assert voc["mAP@0.5"] == pytest.approx(1.0)
    assert voc["mAP@0.7"] == pytest.approx(1.0)
    assert set(voc["per_class"]) == {"cat", "dog", "bird"}
    assert voc["per_class"]["cat"] == {"AP@0.5": pytest.approx(1.0), "AP@0.7": pytest.approx(1.0)}
    assert math.isnan(voc["per_class"]["bird"]["AP@0.5"])  # no GT: excluded from the mean
    assert voc["rule"] == "VOC2010+ all-points area under the monotone PR curve"
    ar = mask_average_recall(gt, results)
    assert set(ar) == {"AR@10", "AR@100", "AR@1000"}
    assert ar["AR@100"] == pytest.approx(1.0)
    assert results == before  # loadRes writes into entries; ours must not leak that


def test_bbox_eval_of_mask_only_results_uses_mask_boxes(gt):
    results = [{k: v for k, v in r.items() if k != "bbox"} for r in gt_as_results(gt)]
    assert evaluate_coco(gt, results, "bbox")["AP"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="segmentation"):
        evaluate_coco(gt, [{k: v for k, v in r.items() if k != "segmentation"} for r in gt_as_results(gt)], "segm")


def test_segm_eval_uses_mask_area_not_box_area(gt):
    # An unmatched detection only counts in the area range its own area falls in. This false
    # positive has a small mask (100 px) but a 40x50 = 2000 px (medium) box: segm must use the
    # mask area (as detectron2 does), so it hurts APs and not APm; with the box kept, loadRes would
    # take the box area and the opposite would happen.
    fp = {"image_id": 3, "category_id": 5, "score": 2.0, "bbox": [0.0, 0.0, float(W), float(H)],
          "segmentation": rle(rect_mask(0, 10, 0, 10))}
    m = evaluate_coco(gt, gt_as_results(gt) + [fp], "segm")
    assert m["APs"] < 0.9
    assert m["APm"] == pytest.approx(1.0)
    b = evaluate_coco(gt, gt_as_results(gt) + [fp], "bbox")  # and boxes use the box area
    assert b["APs"] == pytest.approx(1.0)
    assert b["APm"] < 1.0


# ----------------------------------------------------------------------------- worse results


def test_shifted_masks_score_lower(gt):
    perfect = gt_as_results(gt)
    moved = shifted(perfect, gt, 3, 4)
    for iou_type in ("segm", "bbox"):
        assert evaluate_coco(gt, moved, iou_type)["AP"] < evaluate_coco(gt, perfect, iou_type)["AP"] - 0.1
    v = evaluate_voc(gt, moved)
    assert v["mAP@0.7"] < 1.0
    assert v["mAP@0.7"] <= v["mAP@0.5"]
    assert mask_average_recall(gt, moved)["AR@100"] < 0.9


def test_false_positive_on_image_without_annotations_counts(gt):
    results = gt_as_results(gt)
    fp = dict(results[0], image_id=3, score=2.0)  # top-ranked detection on the empty image
    m = evaluate_coco(gt, results + [fp], "segm")
    assert m["AP"] < 1.0
    assert evaluate_voc(gt, results + [fp])["mAP@0.5"] < 1.0


def test_wrong_categories_score_zero(gt):
    results = gt_as_results(gt)
    for r in results:
        r["category_id"] = 9 if r["category_id"] == 5 else 5
    assert evaluate_coco(gt, results, "segm")["AP"] == pytest.approx(0.0)
    assert evaluate_voc(gt, results)["mAP@0.5"] == pytest.approx(0.0)
    # class-agnostic: the categories do not matter for AR
    assert mask_average_recall(gt, results)["AR@100"] == pytest.approx(1.0)


def test_empty_results_give_zeros(gt):
    for iou_type in ("segm", "bbox"):
        m = evaluate_coco(gt, [], iou_type)
        assert m["AP"] == m["AP50"] == m["AP75"] == m["APs"] == m["APm"] == 0.0
    v = evaluate_voc(gt, [])
    assert v["mAP@0.5"] == v["mAP@0.7"] == 0.0
    assert mask_average_recall(gt, []) == {"AR@10": 0.0, "AR@100": 0.0, "AR@1000": 0.0}
    allm = evaluate_results(gt, [], proposal_recall=True)
    assert allm["num_detections"] == 0 and allm["num_images"] == 3
    assert allm["segm"]["AP"] == 0.0 and allm["bbox"]["AP"] == 0.0


def test_results_must_match_gt_images_and_sizes(gt):
    results = gt_as_results(gt)
    with pytest.raises(ValueError, match="image_id 42"):
        evaluate_coco(gt, [dict(results[0], image_id=42)], "segm")
    small = dict(results[0], segmentation=rle(np.ones((20, 25), np.uint8)))
    with pytest.raises(ValueError, match="RLE size"):
        evaluate_voc(gt, [small])


# ----------------------------------------------------------------------------- VOC by hand


@pytest.fixture
def voc_gt():
    """Class 'a' (id 3): A in image 1 and B in image 2 (10×10 squares), a crowd region in image 1.
    Class 'b' (id 8) has no GT."""
    images = [{"id": i, "height": H, "width": W} for i in (1, 2)]
    cats = [{"id": 3, "name": "a"}, {"id": 8, "name": "b"}]
    anns = [
        (1, 3, rle(rect_mask(0, 10, 0, 10)), 0),  # A
        (2, 3, rle(rect_mask(0, 10, 0, 10)), 0),  # B
        (1, 3, rle(rect_mask(20, 40, 20, 50)), 1),  # crowd, 600 px
    ]
    coco = COCO()
    coco.dataset = build_gt(images, cats, anns)
    coco.createIndex()
    return coco


def det(image_id, mask, score, cat=3):
    return {"image_id": image_id, "category_id": cat, "score": score, "segmentation": rle(mask)}


def test_voc_hand_computed(voc_gt):
    results = [
        det(1, rect_mask(0, 10, 0, 10), 0.9),  # d1: A exactly -> TP
        det(1, rect_mask(0, 10, 30, 40), 0.8),  # d2: nothing -> FP
        det(2, rect_mask(0, 10, 0, 6), 0.7),  # d3: 60 px inside B, IoU 0.6 -> TP@0.5, FP@0.7
        det(1, rect_mask(0, 10, 40, 50), 0.1, cat=8),  # class without GT: excluded
    ]
    # IoU 0.5, ranking d1 d2 d3: TP FP TP, npos 2 -> recall .5 .5 1, precision 1 .5 2/3.
    #   all points: monotone precision 1 | 2/3 -> 0.5*1 + 0.5*2/3 = 5/6
    #   11-point: r = 0..0.5 -> 1 (6 points), r = 0.6..1 -> 2/3 (5 points): (6 + 10/3)/11 = 28/33
    # IoU 0.7: TP FP FP -> recall .5 .5 .5, precision 1 .5 1/3
    #   all points: 0.5*1 = 1/2;  11-point: 6/11
    v = evaluate_voc(voc_gt, results)
    assert v["mAP@0.5"] == pytest.approx(5 / 6)
    assert v["mAP@0.7"] == pytest.approx(1 / 2)
    assert v["per_class"]["a"] == {"AP@0.5": pytest.approx(5 / 6), "AP@0.7": pytest.approx(0.5)}
    assert math.isnan(v["per_class"]["b"]["AP@0.5"])
    v07 = evaluate_voc(voc_gt, results, use_07_metric=True)
    assert v07["mAP@0.5"] == pytest.approx(28 / 33)
    assert v07["mAP@0.7"] == pytest.approx(6 / 11)
    assert v07["rule"] != v["rule"]

    # A detection that best matches the crowd region is ignored, even though its plain IoU with the
    # crowd region is small (100/600): pycocotools' crowd overlap is |det ∩ crowd| / |det| = 1.
    on_crowd = det(1, rect_mask(25, 35, 25, 35), 0.85)
    assert evaluate_voc(voc_gt, results + [on_crowd])["mAP@0.5"] == pytest.approx(5 / 6)
    # ...whereas the same detection without a crowd region under it is a false positive:
    # TP FP FP TP -> recall .5 .5 .5 1, precision 1 .5 1/3 .5 -> 0.5*1 + 0.5*0.5 = 3/4
    elsewhere = det(2, rect_mask(25, 35, 25, 35), 0.85)
    assert evaluate_voc(voc_gt, results + [elsewhere])["mAP@0.5"] == pytest.approx(3 / 4)

    # A duplicate of A ranked above d3 is a false positive (A is matched once):
    # TP FP FP TP -> same 3/4 as above
    dup = det(1, rect_mask(0, 10, 0, 9), 0.75)
    assert evaluate_voc(voc_gt, results + [dup])["mAP@0.5"] == pytest.approx(3 / 4)


def test_voc_duplicate_is_not_reassigned():
    # Two overlapping GT squares G1 (cols 0..9) and G2 (cols 2..11); d1 = G1 (TP). d2 = cols 1..10
    # has IoU 90/110 with both — argmax picks G1 (first), already matched -> FP under the VOC rule,
    # although it would clear 0.5 against the unmatched G2.
    images = [{"id": 1, "height": H, "width": W}]
    anns = [(1, 1, rle(rect_mask(0, 10, 0, 10)), 0), (1, 1, rle(rect_mask(0, 10, 2, 12)), 0)]
    coco = COCO()
    coco.dataset = build_gt(images, [{"id": 1, "name": "x"}], anns)
    coco.createIndex()
    v = evaluate_voc(coco, [det(1, rect_mask(0, 10, 0, 10), 0.9, cat=1), det(1, rect_mask(0, 10, 1, 11), 0.8, cat=1)],
                     iou_thresholds=(0.5,))
    # TP FP, npos 2 -> recall .5 .5, precision 1 .5 -> AP = 0.5
    assert set(v) == {"mAP@0.5", "per_class", "rule"}
    assert v["mAP@0.5"] == pytest.approx(0.5)


def test_voc_ap_rules():
    rec = np.array([0.5, 0.5, 1.0])
    prec = np.array([1.0, 0.5, 2 / 3])
    assert voc_ap(rec, prec) == pytest.approx(5 / 6)
    assert voc_ap(rec, prec, use_07_metric=True) == pytest.approx(28 / 33)
    # 11-point with recall exactly 0.3 reaches the r = 0.3 point (np.arange(0, 1.1, 0.1) would not)
    assert voc_ap(np.array([0.3]), np.array([1.0]), use_07_metric=True) == pytest.approx(4 / 11)
    assert voc_ap(np.array([]), np.array([])) == 0.0
    # precision rising after a plateau: TP FP TP TP with npos 3 -> recall 1/3 1/3 2/3 1,
    # precision 1 1/2 2/3 3/4; monotone precision 1 | 3/4 | 3/4 -> (1 + 3/4 + 3/4) / 3 = 5/6
    # (without the monotone envelope it would be (1 + 2/3 + 3/4) / 3).
    rec = np.array([1, 1, 2, 3]) / 3
    prec = np.array([1, 1 / 2, 2 / 3, 3 / 4])
    assert voc_ap(rec, prec) == pytest.approx(5 / 6)
    # 11-point: r = 0, .1, .2, .3 -> 1; r = .4 .. 1 (7 points) -> 3/4
    assert voc_ap(rec, prec, use_07_metric=True) == pytest.approx((4 + 7 * 0.75) / 11)


# ----------------------------------------------------------------------------- AR


def test_mask_average_recall_by_hand(voc_gt):
    results = [det(1, rect_mask(0, 10, 0, 10), 0.9, cat=999)]  # A exactly; category (not even in GT) ignored
    results += [det(1, rect_mask(12, 18, 3 * k, 3 * k + 2), 0.6 + 0.01 * k) for k in range(12)]  # junk
    results.append(det(2, rect_mask(0, 9, 0, 9), 0.5))  # inside B: IoU 81/100 -> t = .50 .. .80
    results.append(det(1, rect_mask(25, 35, 25, 35), 0.99))  # on the crowd region: does not count
    ar = mask_average_recall(voc_gt, results, max_dets=(100, 1, 10))
    assert list(ar) == ["AR@1", "AR@10", "AR@100"]
    # per image top-N: image 1 has crowd-det, A, junk...; image 2 only the 0.81 det.
    # N=1: image 1 keeps only the crowd det -> A missed; B recalled at 7/10 thresholds -> (0 + .7)/2
    assert ar["AR@1"] == pytest.approx(0.35)
    # N>=2: A recalled at all thresholds -> (1 + .7)/2
    assert ar["AR@10"] == pytest.approx(0.85)
    assert ar["AR@100"] == pytest.approx(0.85)


# ----------------------------------------------------------------------------- conversion


def test_predictions_to_coco_results_round_trip():
    g = torch.Generator().manual_seed(0)
    probs = torch.rand(3, 1, H, W, generator=g)
    outputs = [
        {
            "boxes": torch.tensor([[1.0, 2.0, 11.0, 22.0], [0.5, 0.5, 49.5, 39.5], [10.0, 10.0, 20.0, 15.0]]),
            "labels": torch.tensor([1, 2, 1]),
            "scores": torch.tensor([0.9, 0.5, 0.1]),
            "masks": probs,
        },
        {  # an image without detections
            "boxes": torch.zeros(0, 4),
            "labels": torch.zeros(0, dtype=torch.int64),
            "scores": torch.zeros(0),
            "masks": torch.zeros(0, 1, H, W),
        },
    ]
    res = predictions_to_coco_results(outputs, [7, 8], {1: 5, 2: 9}, mask_threshold=0.4)
    assert len(res) == 3
    assert [r["category_id"] for r in res] == [5, 9, 5]
    assert [r["image_id"] for r in res] == [7, 7, 7]
    assert res[0]["bbox"] == pytest.approx([1.0, 2.0, 10.0, 20.0])
    assert res[1]["bbox"] == pytest.approx([0.5, 0.5, 49.0, 39.0])
    assert [r["score"] for r in res] == pytest.approx([0.9, 0.5, 0.1])
    json.dumps(res)  # counts are str
    for k, r in enumerate(res):
        assert isinstance(r["segmentation"]["counts"], str)
        assert r["segmentation"]["size"] == [H, W]
        decoded = mask_utils.decode(r["segmentation"])
        np.testing.assert_array_equal(decoded, (probs[k, 0] >= 0.4).numpy().astype(np.uint8))
    # another threshold gives other masks
    res5 = predictions_to_coco_results(outputs, [7, 8], {1: 5, 2: 9})
    assert res5[0]["segmentation"] != res[0]["segmentation"]
    with pytest.raises(ValueError, match="label_to_cat_id"):
        predictions_to_coco_results(outputs, [7, 8], {1: 5})
    with pytest.raises(ValueError, match="image ids"):
        predictions_to_coco_results(outputs, [7], {1: 5, 2: 9})


def test_predictions_to_results_evaluate_perfectly(gt):
    # model-style outputs built from the GT (masks as soft probabilities) score AP 1 end to end
    outputs, ids = [], []
    for img_id in gt.getImgIds():
        anns = [a for a in gt.loadAnns(gt.getAnnIds(imgIds=[img_id])) if not a["iscrowd"]]
        masks = torch.tensor(np.stack([gt.annToMask(a) for a in anns]) if anns else np.zeros((0, H, W)))
        masks = (0.3 + 0.4 * masks.float())[:, None]  # 0.7 inside, 0.3 outside
        boxes = torch.tensor([[a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2], a["bbox"][1] + a["bbox"][3]]
                              for a in anns]).reshape(-1, 4)
        labels = torch.tensor([{5: 1, 9: 2}[a["category_id"]] for a in anns], dtype=torch.int64)
        outputs.append({"boxes": boxes, "labels": labels, "scores": torch.linspace(1, 0.5, len(anns)), "masks": masks})
        ids.append(img_id)
    res = predictions_to_coco_results(outputs, ids, {1: 5, 2: 9}, mask_threshold=0.5)
    m = evaluate_results(gt, res, proposal_recall=True)
    assert m["segm"]["AP"] == pytest.approx(1.0)
    assert m["bbox"]["AP"] == pytest.approx(1.0)
    assert m["voc"]["mAP@0.7"] == pytest.approx(1.0)
    assert m["ar"]["AR@100"] == pytest.approx(1.0)
    assert m["num_detections"] == 5 and m["num_images"] == 3


# ----------------------------------------------------------------------------- I/O and report


def test_load_results(tmp_path, gt):
    good = tmp_path / "res.json"
    good.write_text(json.dumps(gt_as_results(gt)))
    assert load_results(good) == gt_as_results(gt)
    cases = {
        "notjson.json": ("{oops", "not valid JSON"),
        "dict.json": (json.dumps({"image_id": 1}), "JSON list"),
        "nokey.json": (json.dumps([{"image_id": 1, "score": 0.5, "bbox": [0, 0, 1, 1]}]), "'category_id'"),
        "nogeom.json": (json.dumps([{"image_id": 1, "category_id": 5, "score": 0.5}]), "neither 'bbox' nor"),
        "badscore.json": (json.dumps([{"image_id": 1, "category_id": 5, "score": "x", "bbox": [0, 0, 1, 1]}]), "score"),
    }
    for name, (text, problem) in cases.items():
        p = tmp_path / name
        p.write_text(text)
        with pytest.raises(ValueError) as e:
            load_results(p)
        assert name in str(e.value) and problem in str(e.value), str(e.value)


def test_write_metrics_and_table(tmp_path, gt):
    metrics = evaluate_results(gt, shifted(gt_as_results(gt), gt, 1, 1), proposal_recall=True)
    path = write_metrics(tmp_path / "new" / "dir", metrics)
    assert path == tmp_path / "new" / "dir" / "metrics.json"

    def no_nan(c):
        raise AssertionError(f"non-standard JSON constant {c}")

    loaded = json.loads(path.read_text(), parse_constant=no_nan)
    assert loaded["segm"]["AP"] == pytest.approx(metrics["segm"]["AP"])
    assert loaded["segm"]["APl"] is None  # nan -> null
    assert loaded["voc"]["per_class"]["bird"]["AP@0.5"] is None
    assert loaded["ar"] == pytest.approx(metrics["ar"])
    assert [p.name for p in path.parent.iterdir()] == ["metrics.json"]  # no temp file left
    write_metrics(path.parent, {"x": 1})  # replaces
    assert json.loads(path.read_text()) == {"x": 1}

    table = format_metrics_table(metrics)
    lines = table.splitlines()
    segm_line = next(l for l in lines if l.startswith("segm"))
    bbox_line = next(l for l in lines if l.startswith("bbox"))
    assert f"{100 * metrics['segm']['AP']:.1f}" in segm_line
    assert f"{100 * metrics['bbox']['AP50']:.1f}" in bbox_line
    assert segm_line.split()[-1] == "-"  # APl is nan
    assert len(segm_line) == len(bbox_line) == len(lines[0])  # aligned
    voc_line = next(l for l in lines if "VOC" in l)
    assert f"{100 * metrics['voc']['mAP@0.7']:.1f}" in voc_line
    ar_line = next(l for l in lines if "AR" in l)
    assert f"{100 * metrics['ar']['AR@100']:.1f}" in ar_line
    assert "AR" not in format_metrics_table(evaluate_results(gt, gt_as_results(gt)))
