"""CocoInstances on tiny hand-written COCO files: remapping, crowd, empty images, decoding, bad input."""

import json
import pickle
import warnings

import numpy as np
import pytest
import torch
from helpers import uncompressed_rle
from PIL import Image
from pycocotools import mask as mask_utils

from fcis.data import CocoInstances, DataError, DataWarning, build_transforms, collate

H, W = 20, 30


def _rect(y0, y1, x0, x1, h=H, w=W):
    m = np.zeros((h, w), dtype=np.uint8)
    m[y0:y1, x0:x1] = 1
    return m


def _rle(m):
    r = mask_utils.encode(np.asfortranarray(m))
    return {"size": list(r["size"]), "counts": r["counts"].decode()}




def _ann(aid, img, cat, seg, bbox=None, crowd=0):
    a = {"id": aid, "image_id": img, "category_id": cat, "segmentation": seg, "iscrowd": crowd, "area": 1.0}
    if bbox is not None:
        a["bbox"] = bbox
    return a


def _write(tmp_path, annotations, images=None, name="ann.json", categories=None):
    if images is None:
        rng = np.random.default_rng(0)
        Image.fromarray(rng.integers(0, 256, (H, W, 3), dtype=np.uint8)).save(tmp_path / "a.png")
        Image.fromarray(rng.integers(0, 256, (H, W), dtype=np.uint8), "L").save(tmp_path / "b.png")
        Image.fromarray(rng.integers(0, 256, (H, W, 4), dtype=np.uint8), "RGBA").save(tmp_path / "c.png")
        images = [{"id": i + 1, "file_name": f, "height": H, "width": W} for i, f in enumerate("abc")]
        for im in images:
            im["file_name"] += ".png"
    data = {"images": images, "annotations": annotations,
            "categories": categories or [{"id": 7, "name": "seven"}, {"id": 3, "name": "three"}]}
    path = tmp_path / name
    path.write_text(json.dumps(data))
    return path


def _good_annotations():
    return [
        _ann(1, 1, 7, [[2, 3, 12, 3, 12, 9, 2, 9]], [2, 3, 10, 6]),  # polygon: rows 3..8, cols 2..11
        _ann(2, 1, 3, _rle(_rect(10, 15, 20, 28)), [20, 10, 8, 5]),
        _ann(3, 1, 3, uncompressed_rle(_rect(0, 4, 0, 4)), [0, 0, 4, 4], crowd=1),
        _ann(4, 2, 7, uncompressed_rle(_rect(5, 18, 1, 6))),  # no bbox/area: filled in
    ]


def test_remapping_crowd_empty_and_decoding(tmp_path):
    ds = CocoInstances(_write(tmp_path, _good_annotations()))
    assert len(ds) == 3 and ds.image_ids == [1, 2, 3]
    assert ds.num_classes == 2 and ds.class_names == ["three", "seven"]
    assert ds.label_to_cat_id == {1: 3, 2: 7} and ds.cat_id_to_label == {3: 1, 7: 2}
    assert ds.bad_samples == [] and ds.json_path.name == "ann.json"

    image, t = ds[0]
    assert image.shape == (3, H, W) and image.dtype == torch.float32
    assert 0.0 <= image.min() and image.max() <= 1.0
    assert t["image_id"] == 1
    assert t["labels"].tolist() == [2, 1] and t["labels"].dtype == torch.int64  # crowd (ann 3) left out
    assert t["masks"].dtype == torch.uint8 and t["masks"].shape == (2, H, W)
    assert np.array_equal(t["masks"][0].numpy(), _rect(3, 9, 2, 12))
    assert np.array_equal(t["masks"][1].numpy(), _rect(10, 15, 20, 28))
    assert t["boxes"].dtype == torch.float32
    assert t["boxes"].tolist() == [[2, 3, 12, 9], [20, 10, 28, 15]]
    assert 3 in ds.coco.anns and ds.coco.anns[3]["iscrowd"] == 1  # still there for COCOeval

    gray, t2 = ds[1]  # grayscale image -> 3 equal channels; uncompressed RLE decoded
    assert gray.shape == (3, H, W) and torch.equal(gray[0], gray[1]) and torch.equal(gray[1], gray[2])
    assert np.array_equal(t2["masks"][0].numpy(), _rect(5, 18, 1, 6))
    assert t2["boxes"].tolist() == [[1, 5, 6, 18]] and t2["labels"].tolist() == [2]
    assert ds.coco.anns[4]["bbox"] == [1, 5, 5, 13] and ds.coco.anns[4]["area"] == 1.0

    rgba, t3 = ds[2]  # RGBA -> RGB; image without annotations kept
    assert rgba.shape == (3, H, W)
    assert t3["boxes"].shape == (0, 4) and t3["labels"].shape == (0,) and t3["masks"].shape == (0, H, W)


def test_picklable_for_dataloader_workers(tmp_path):
    ds = CocoInstances(_write(tmp_path, _good_annotations()), transforms=build_transforms(True, min_size=40))
    copy = pickle.loads(pickle.dumps(ds))
    image, t = copy[0]
    assert image.shape == (3, 40, 60) and t["labels"].tolist() == [2, 1]
    assert copy.coco.anns.keys() == ds.coco.anns.keys()


def test_image_root_and_transforms(tmp_path):
    sub = tmp_path / "imgs"
    sub.mkdir()
    json_path = _write(sub, _good_annotations())
    moved = tmp_path / "ann.json"
    moved.write_text(json_path.read_text())
    calls = []

    def tf(image, target):
        calls.append(target["image_id"])
        return image * 0, target

    ds = CocoInstances(moved, image_root=sub, transforms=tf)
    image, _ = ds[1]
    assert calls == [2] and image.abs().sum() == 0


def test_missing_and_corrupt_images(tmp_path):
    path = _write(tmp_path, _good_annotations())
    (tmp_path / "b.png").unlink()
    (tmp_path / "c.png").write_bytes(b"this is not a png" * 10)
    ds = CocoInstances(path)
    with pytest.warns(DataWarning, match=r"b\.png: cannot read image \(file not found\)"):
        assert ds[1] is None
    with pytest.warns(DataWarning, match=r"c\.png: cannot read image \(cannot identify image file\)"):
        assert ds[2] is None
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert ds[2] is None  # warned and recorded once only
    assert [(p.split("/")[-1], r) for p, r in ds.bad_samples] == [
        ("b.png", "cannot read image (file not found)"), ("c.png", "cannot read image (cannot identify image file)")]

    images, targets = collate([ds[0], ds[1], ds[2]])
    assert len(images) == len(targets) == 1 and targets[0]["image_id"] == 1
    loader = torch.utils.data.DataLoader(ds, batch_size=3, collate_fn=collate)
    assert [len(b[0]) for b in loader] == [1]

    strict = CocoInstances(path, on_bad_sample="raise")
    with pytest.raises(DataError, match=r"b\.png: cannot read image \(file not found\)"):
        strict[1]
    with pytest.raises(DataError, match=r"c\.png: cannot read image \(cannot identify image file\)"):
        strict[2]


def test_image_size_mismatch(tmp_path):
    path = _write(tmp_path, _good_annotations())
    Image.new("RGB", (W + 1, H)).save(tmp_path / "a.png")
    with pytest.raises(DataError, match=r"a\.png: image size 31x20 does not match the annotation file \(30x20\)"):
        CocoInstances(path, on_bad_sample="raise")[0]


@pytest.mark.parametrize("content, problem", [
    ("[1, 2]", "not a COCO instances file: top level is a list"),
    ('{"images": [], "categories": []}', "not a COCO instances file: missing key 'annotations'"),
    ('{"images": [', "invalid JSON"),
    ('{"images": {}, "annotations": [], "categories": []}', "not a COCO instances file: 'images' is a dict, expected a list"),
])
def test_not_coco(tmp_path, content, problem):
    path = tmp_path / "foo.json"
    path.write_text(content)
    with pytest.raises(DataError, match="foo.json: " + problem.replace("(", r"\(")):
        CocoInstances(path)


def test_missing_json(tmp_path):
    with pytest.raises(DataError, match="nope.json: file not found"):
        CocoInstances(tmp_path / "nope.json")


@pytest.mark.parametrize("mode", ["skip", "raise"])
def test_unknown_category_and_image(tmp_path, mode):
    anns = _good_annotations() + [_ann(17, 1, 99, [[0, 0, 5, 0, 5, 5]])]
    with pytest.raises(DataError, match="annotations.json: annotation 17 refers to unknown category 99"):
        CocoInstances(_write(tmp_path, anns, name="annotations.json"), on_bad_sample=mode)
    anns[-1] = _ann(18, 42, 7, [[0, 0, 5, 0, 5, 5]])
    with pytest.raises(DataError, match="annotations.json: annotation 18 refers to unknown image 42"):
        CocoInstances(_write(tmp_path, anns, name="annotations.json"), on_bad_sample=mode)


BAD = [
    (_ann(5, 1, 7, [[0, 0, 5, 5, 10, 10]]), "annotation 5: polygon has no area"),
    (_ann(5, 1, 7, [[0, 0, 5, 5]]), "annotation 5: polygon has fewer than 3 points"),
    (_ann(5, 1, 7, _rle(np.zeros((H, W), np.uint8))), "annotation 5: empty RLE mask"),
    (_ann(5, 1, 7, _rle(_rect(0, 5, 0, 5, h=H + 1))), "annotation 5: RLE size [21, 30] does not match"),
    (_ann(5, 1, 7, [[0, 0, 5, 0, 5, 5]], bbox=[0, 0, 0, 5]), "annotation 5: box [0, 0, 0, 5] has non-positive size"),
    (_ann(5, 1, 7, [[0, 0, 5, 0, 5, 5]], bbox=[40, 0, 5, 5]), "annotation 5: box [40, 0, 5, 5] lies outside"),
]


@pytest.mark.parametrize("bad, problem", BAD)
def test_bad_annotation_skip_and_raise(tmp_path, bad, problem):
    path = _write(tmp_path, _good_annotations() + [bad])
    with pytest.warns(DataWarning, match="ann.json: dropped 1 bad annotation"):
        ds = CocoInstances(path)
    assert len(ds.bad_samples) == 1
    file, reason = ds.bad_samples[0]
    assert file.endswith("ann.json") and reason.startswith(problem)
    assert 5 not in ds.coco.anns and len(ds.coco.anns) == 4
    assert ds[0][1]["labels"].tolist() == [2, 1]
    with pytest.raises(DataError, match="ann.json: " + problem.replace("[", r"\[").replace("]", r"\]")):
        CocoInstances(path, on_bad_sample="raise")


def test_degenerate_polygon_parts_dropped(tmp_path):
    anns = [_ann(1, 1, 3, [[2, 3, 12, 3, 12, 9, 2, 9], [0, 0, 1, 1], [0, 0, 3, 3, 6, 6]], [2, 3, 10, 6])]
    ds = CocoInstances(_write(tmp_path, anns))
    assert ds.bad_samples == [] and ds.coco.anns[1]["segmentation"] == [[2, 3, 12, 3, 12, 9, 2, 9]]
    assert ds[0][1]["masks"].sum() == 60


def test_on_bad_sample_value(tmp_path):
    with pytest.raises(ValueError, match="on_bad_sample"):
        CocoInstances(_write(tmp_path, []), on_bad_sample="ignore")
