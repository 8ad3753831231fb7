"""Converters to COCO: tiny synthetic folders round-trip through CocoInstances; real data counts."""

import json

import numpy as np
import pytest
from PIL import Image

from fcis.data import CocoInstances, DataError
from fcis.data.convert import convert_instance_masks, convert_via, convert_yolo_seg

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy:DeprecationWarning")


def _image(path, h, w, seed=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path)


def _box(h, w, y0, y1, x0, x1):
    m = np.zeros((h, w), dtype=np.uint8)
    m[y0:y1, x0:x1] = 1
    return m


def test_instance_masks_round_trip(tmp_path):
    ids = [np.zeros((24, 32), np.uint8), np.zeros((20, 28), np.uint8)]
    ids[0][2:10, 3:12] = 1
    ids[0][12:20, 15:30] = 2
    ids[0][0:3, 28:32] = 5  # ids need not be contiguous
    for k, name in enumerate(["p1", "p2"]):  # p2 has no instance at all
        _image(tmp_path / "img" / f"{name}.png", *ids[k].shape, seed=k)
        (tmp_path / "masks").mkdir(exist_ok=True)
        Image.fromarray(ids[k], "L").save(tmp_path / "masks" / f"{name}_mask.png")
    out = convert_instance_masks(tmp_path / "img", tmp_path / "masks", tmp_path / "out" / "coco.json",
                                 category="pedestrian")
    assert out == tmp_path / "out" / "coco.json"
    assert json.loads(out.read_text())["images"][0]["file_name"] == "../img/p1.png"
    ds = CocoInstances(out)
    assert ds.class_names == ["pedestrian"] and len(ds) == 2
    image, t = ds[0]
    assert image.shape == (3, 24, 32) and t["labels"].tolist() == [1, 1, 1]
    for k, v in enumerate([1, 2, 5]):
        assert np.array_equal(t["masks"][k].numpy(), (ids[0] == v).astype(np.uint8))
    assert t["boxes"].tolist() == [[3, 2, 12, 10], [15, 12, 30, 20], [28, 0, 32, 3]]
    assert ds[1][1]["masks"].shape == (0, 20, 28)


def test_instance_masks_errors(tmp_path):
    _image(tmp_path / "img" / "a.png", 10, 10)
    (tmp_path / "masks").mkdir()
    with pytest.raises(DataError, match=r"a\.png: no instance mask file \(expected .*a_mask\.png\)"):
        convert_instance_masks(tmp_path / "img", tmp_path / "masks", tmp_path / "o.json")
    Image.new("RGB", (10, 10)).save(tmp_path / "masks" / "a_mask.png")
    with pytest.raises(DataError, match=r"a_mask\.png: instance mask must have one channel"):
        convert_instance_masks(tmp_path / "img", tmp_path / "masks", tmp_path / "o.json")
    Image.new("L", (11, 10)).save(tmp_path / "masks" / "a_mask.png")
    with pytest.raises(DataError, match=r"a_mask\.png: mask size 11x10 does not match image size 10x10"):
        convert_instance_masks(tmp_path / "img", tmp_path / "masks", tmp_path / "o.json")
    with pytest.raises(DataError, match="nothere: image folder not found"):
        convert_instance_masks(tmp_path / "nothere", tmp_path / "masks", tmp_path / "o.json")


def _via(xs, ys):
    return {"shape_attributes": {"name": "polygon", "all_points_x": xs, "all_points_y": ys}, "region_attributes": {}}


def test_via_round_trip(tmp_path):
    _image(tmp_path / "v" / "x.jpg", 16, 20)
    _image(tmp_path / "v" / "y.png", 12, 14, seed=1)
    _image(tmp_path / "v" / "z.png", 8, 8, seed=2)
    _image(tmp_path / "v" / "w.png", 20, 20, seed=3)
    via = {
        "x.jpg123": {"filename": "x.jpg", "size": 123, "regions": {"0": _via([2, 10, 10, 2], [3, 3, 8, 8])}},
        "y.png45": {"filename": "y.png", "size": 45, "regions": [
            _via([0, 6, 6, 0], [0, 0, 4, 4]),
            {"shape_attributes": {"name": "rect", "x": 7, "y": 5, "width": 5, "height": 6}}]},
        "w.png9": {"filename": "w.png", "regions": [
            {"shape_attributes": {"name": "circle", "cx": 10, "cy": 10, "r": 6}},
            {"shape_attributes": {"name": "ellipse", "cx": 10, "cy": 10, "rx": 8, "ry": 3, "theta": 1.5707963}}]},
        "z.png1": {"filename": "z.png", "regions": {}},
    }
    (tmp_path / "v" / "via_region_data.json").write_text(json.dumps(via))
    out = convert_via(tmp_path / "v" / "via_region_data.json", tmp_path / "v" / "coco.json", category="balloon")
    ds = CocoInstances(out)
    assert ds.class_names == ["balloon"] and len(ds) == 4 and len(ds.coco.anns) == 5
    _, t = ds[0]
    assert np.array_equal(t["masks"][0].numpy(), _box(16, 20, 3, 8, 2, 10))
    _, t = ds[1]
    assert np.array_equal(t["masks"][0].numpy(), _box(12, 14, 0, 4, 0, 6))
    assert np.array_equal(t["masks"][1].numpy(), _box(12, 14, 5, 11, 7, 12))
    assert ds[3][1]["masks"].shape == (0, 8, 8)
    _, t = ds[2]  # circle r=6 and an ellipse rotated by 90 degrees (3 wide, 8 high), centred at (10, 10)
    circle, ellipse = t["masks"].numpy().astype(bool)
    assert abs(circle.sum() - np.pi * 36) < 10 and circle[10, 4:16].all() and not circle[3, 10]
    assert t["boxes"][1].tolist() == [7, 2, 13, 18] and ellipse[2:18, 10].all() and not ellipse[10, 5]


def test_via_errors(tmp_path):
    _image(tmp_path / "x.jpg", 16, 20)
    cases = [
        ({"k": {"filename": "x.jpg", "regions": [_via([1, 5], [1, 5])]}}, "image 'x.jpg' region 0: polygon has 2 point"),
        ({"k": {"filename": "x.jpg", "regions": [_via([1, 5, 9], [1, 5, 9])]}}, "image 'x.jpg' region 0: polygon has no area"),
        ({"k": {"filename": "x.jpg", "regions": [_via([1, 5, 9], [1, 5])]}}, "polygon has 3 x and 2 y coordinates"),
        ({"k": {"filename": "x.jpg", "regions": [{"shape_attributes": {"name": "point", "cx": 1, "cy": 1}}]}},
         "unsupported region shape 'point'"),
        ({"k": {"regions": []}}, "entry 'k' has no 'filename'"),
        ({"k": {"filename": "x.jpg", "regions": [_via([1, "a", 9], [1, 5, 2])]}}, "polygon region has non-numeric coordinates"),
        ({"k": {"filename": "x.jpg", "regions": [{"shape_attributes": {"name": "rect", "x": 1}}]}},
         "rect region is missing 'y'"),
        ([1, 2], "not a VIA region file"),
    ]
    for content, problem in cases:
        (tmp_path / "via.json").write_text(json.dumps(content))
        with pytest.raises(DataError, match=f"via.json: (image .x.jpg. region 0: )?{problem}"):
            convert_via(tmp_path / "via.json", tmp_path / "o.json")
    (tmp_path / "via.json").write_text(json.dumps({"k": {"filename": "gone.jpg", "regions": []}}))
    with pytest.raises(DataError, match=r"gone\.jpg: cannot read image \(file not found\)"):
        convert_via(tmp_path / "via.json", tmp_path / "o.json")


def test_yolo_round_trip_and_errors(tmp_path):
    _image(tmp_path / "images" / "a.png", 10, 20)
    _image(tmp_path / "images" / "b.png", 10, 10, seed=1)  # no label file: no objects
    (tmp_path / "labels").mkdir()
    (tmp_path / "labels" / "a.txt").write_text("1 0.1 0.2 0.5 0.2 0.5 0.8 0.1 0.8\n\n0 0.75 0 1 0 1 1 0.75 1\n")
    out = convert_yolo_seg(tmp_path / "images", tmp_path / "labels", tmp_path / "coco.json",
                           class_names=["cat", "dog"])
    ds = CocoInstances(out)
    assert ds.class_names == ["cat", "dog"] and len(ds) == 2
    _, t = ds[0]
    assert t["labels"].tolist() == [2, 1]
    assert np.array_equal(t["masks"][0].numpy(), _box(10, 20, 2, 8, 2, 10))
    assert np.array_equal(t["masks"][1].numpy(), _box(10, 20, 0, 10, 15, 20))
    assert ds[1][1]["labels"].shape == (0,)
    for line, problem in [("0 0.5 0.5 0.2 0.2", "line 2: 4 values look like a YOLO box"),
                          ("2 0.1 0.1 0.5 0.1 0.5 0.5", r"line 2: class 2 out of range \(0\.\.1\)"),
                          ("0 0.1 0.1 0.5", "line 2: polygon has an odd number of coordinates"),
                          ("0 10 10 50 10 50 50", r"line 2: coordinates must be normalised to \[0, 1\]"),
                          ("0 a b c d e f", "line 2: not a list of numbers")]:
        (tmp_path / "labels" / "a.txt").write_text("1 0.1 0.2 0.5 0.2 0.5 0.8\n" + line + "\n")
        with pytest.raises(DataError, match=r"a\.txt: " + problem):
            convert_yolo_seg(tmp_path / "images", tmp_path / "labels", tmp_path / "coco.json",
                             class_names=["cat", "dog"])


@pytest.mark.data
def test_pennfudan(shared_data, tmp_path):
    root = shared_data / "PennFudanPed"
    out = convert_instance_masks(root / "PNGImages", root / "PedMasks", tmp_path / "pennfudan.json",
                                 category="pedestrian")
    data = json.loads(out.read_text())
    assert len(data["images"]) == 170 and len(data["annotations"]) == 423
    ds = CocoInstances(out)
    assert ds.class_names == ["pedestrian"] and ds.bad_samples == []
    image, t = ds[0]  # FudanPed00001: two pedestrians; Annotation/*.txt gives (160,182)-(302,431) 1-based
    assert image.shape == (3, 536, 559) and t["masks"].shape == (2, 536, 559)
    assert t["boxes"][0].tolist() == [159, 181, 302, 431]
    assert (t["masks"].flatten(1).sum(1) > 0).all()


@pytest.mark.data
@pytest.mark.parametrize("split, n_images, n_instances", [("train", 61, 255), ("val", 13, 50)])
def test_balloon(shared_data, tmp_path, split, n_images, n_instances):
    out = convert_via(shared_data / "balloon" / split / "via_region_data.json", tmp_path / f"{split}.json",
                      category="balloon")
    data = json.loads(out.read_text())
    assert len(data["images"]) == n_images and len(data["annotations"]) == n_instances
    ds = CocoInstances(out)
    assert ds.class_names == ["balloon"] and ds.bad_samples == []
    image, t = ds[0]
    n = len(ds.coco.imgToAnns[ds.image_ids[0]])
    assert image.shape[0] == 3 and n >= 1 and t["masks"].shape[0] == n
    assert (t["masks"].flatten(1).sum(1) > 0).all()
