"""The flat index of a COCO file (fcis/data/index.py) against the per-annotation path it replaces
(``load_coco_json`` + ``check_annotation``, kept in fcis/data/cocofile.py as the reference): the same
kept annotations with the same cleaned values, the same dropped ones with the same reasons, the
same structural errors; and what CocoInstances builds on it (lazy COCO, masks, boxes)."""

import json
import math
import pickle

import numpy as np
import pytest
import torch
from helpers import uncompressed_rle
from PIL import Image
from pycocotools import mask as mask_utils

from fcis.data import CocoInstances, DataError
from fcis.data import index as index_mod
from fcis.data.cocofile import check_annotation, load_coco_json
from fcis.data.index import build_index
from fcis.engine.anchor_fit import input_boxes

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy:DeprecationWarning")


def _reference(path):
    """What CocoInstances did before the index: kept (cleaned) annotations and dropped reasons."""
    data = load_coco_json(path)
    sizes = {img["id"]: (img["height"], img["width"]) for img in data["images"]}
    kept, dropped = [], []
    for ann in data["annotations"]:
        clean, reason = check_annotation(ann, *sizes[ann["image_id"]])
        if clean is None:
            dropped.append(f"annotation {ann['id']}: {reason}")
        else:
            kept.append(clean)
    return data, kept, dropped


def _rle(m):
    r = mask_utils.encode(np.asfortranarray(m.astype(np.uint8)))
    return {"size": list(r["size"]), "counts": r["counts"].decode()}


def _zoo(seed=0, n_images=12, n_anns=400):
    """Images of several sizes and annotations of every kind the checks know, good and bad."""
    rng = np.random.default_rng(seed)
    images = [{"id": 100 + i, "file_name": f"img{i},{{x}}.png", "height": int(rng.integers(20, 90)),
               "width": int(rng.integers(20, 90))} for i in range(n_images)]
    anns = []
    for k in range(n_anns):
        img = images[int(rng.integers(n_images))]
        h, w = img["height"], img["width"]
        kind = int(rng.integers(0, 30))

        def poly(n=None, lo=0.0, hi=1.0, h=h, w=w):
            n = n or int(rng.integers(3, 9))
            return [round(float(v), 2) for v in np.stack([rng.uniform(lo * w, hi * w, n),
                                                          rng.uniform(lo * h, hi * h, n)], 1).ravel()]
        seg = [poly() for _ in range(int(rng.integers(1, 3)))]
        xs = [v for p in seg for v in p[0::2]]
        ys = [v for p in seg for v in p[1::2]]
        a = {"id": 5000 + k, "image_id": img["id"], "category_id": int(rng.choice([3, 9, 4])),
             "segmentation": seg, "area": float(rng.uniform(1, 100)), "iscrowd": 0,
             "bbox": [min(xs), min(ys), max(xs) - min(xs), max(ys) - min(ys)], "note": "a},{b ] ["}
        if kind == 1:
            a["segmentation"] = [[int(v) for v in seg[0]]]                      # integer coordinates
        elif kind == 2:
            a["segmentation"] = seg + [[0, 0, 1, 1]]                           # a part of 2 points
        elif kind == 3:
            a["segmentation"] = seg + [[0, 0, 5, 5, 10, 10]]                   # a part without area
        elif kind == 4:
            a["segmentation"] = [poly(lo=1.5, hi=2.0)]                         # outside the image
        elif kind == 5:
            a["segmentation"] = seg + [poly(lo=1.5, hi=2.0)]                   # a part outside
        elif kind == 6:
            a["segmentation"] = [[1, 2, 3]]                                    # odd count
        elif kind == 7:
            a["segmentation"] = [seg[0][:-1] + [True]]                         # a bool
        elif kind == 8:
            a["segmentation"] = [seg[0][:-1] + ["3"]]                          # a string
        elif kind == 9:
            a["segmentation"] = [seg[0][:-1] + [float("nan")]]                 # NaN
        elif kind == 10:
            del a["bbox"]                                                      # filled in
        elif kind == 11:
            del a["area"]
        elif kind == 12:
            a["bbox"] = [1, 2, 3]
        elif kind == 13:
            a["bbox"] = [w + 1, 0, 5, 5]                                       # outside
        elif kind == 14:
            a["bbox"] = [0, 0, -1, 5]
        elif kind == 15:
            a["bbox"] = [-3, -3, 5, 5]                                         # partly outside: fine
        elif kind == 16:
            m = np.zeros((h, w), bool)
            m[2:h // 2, 3:w // 2] = 1
            a["segmentation"] = _rle(m)                                        # compressed RLE
        elif kind == 17:
            m = np.zeros((h, w), bool)
            m[1:h // 3, 1:w // 3] = 1
            a["segmentation"] = uncompressed_rle(m.astype(np.uint8))          # uncompressed, crowd
            a["iscrowd"] = 1
        elif kind == 18:
            a["segmentation"] = _rle(np.zeros((h, w), bool))                   # empty RLE
        elif kind == 19:
            a["segmentation"] = _rle(np.ones((h + 1, w), bool))                # wrong size
        elif kind == 20:
            a["segmentation"] = None
        elif kind == 21:
            a["segmentation"] = "polygon"
        elif kind == 22:
            a["segmentation"] = []
        elif kind == 23:
            del a["iscrowd"]
        elif kind == 24:
            a["iscrowd"] = 1                                                   # a crowd polygon
        elif kind == 25:
            a["area"] = "big"                                                  # kept as it is
        elif kind == 26:
            a["bbox"] = [0, 0, "5", 5]
        elif kind == 27:
            a["segmentation"] = {"counts": "abc"}
        anns.append(a)
    cats = [{"id": 9, "name": "nine"}, {"id": 3, "name": "three"}, {"id": 4, "name": "four"}]
    return {"info": {"x": "},{"}, "images": images, "annotations": anns, "categories": cats}


def _write(path, data, **dump):
    path.write_text(json.dumps(data, **dump))
    return path


def _assert_same(path, build):
    data, kept, dropped = _reference(path)
    ix = build.index
    assert build.dropped == dropped
    assert ix.ann_ids.tolist() == [a["id"] for a in kept]
    assert ix.image_ids.tolist() == [img["id"] for img in data["images"]]
    assert [ix.file_name(i) for i in range(ix.num_images)] == [img["file_name"] for img in data["images"]]
    assert ix.heights.tolist() == [img["height"] for img in data["images"]]
    assert ix.image_ids[ix.ann_image].tolist() == [a["image_id"] for a in kept]
    assert ix.ann_category.tolist() == [a["category_id"] for a in kept]
    assert ix.ann_bbox.tolist() == [[float(v) for v in a["bbox"]] for a in kept]
    want_area = [float(a["area"]) if isinstance(a["area"], (int, float)) else math.nan for a in kept]
    assert np.array_equal(ix.ann_area, np.asarray(want_area), equal_nan=True)
    assert ix.ann_crowd.tolist() == [bool(a["iscrowd"]) for a in kept]
    sizes = {img["id"]: (img["height"], img["width"]) for img in data["images"]}
    for row, a in enumerate(kept):
        seg = a["segmentation"]
        if isinstance(seg, list):
            got = ix.polygons(row)
            assert ix.rle_counts(row) is None and len(got) == len(seg)
            for p, q in zip(got, seg):
                assert np.array_equal(p, np.asarray(q, dtype=np.float32).astype(np.float64))
        else:
            counts = seg["counts"]
            want = counts.encode() if isinstance(counts, str) else mask_utils.frPyObjects(seg, *sizes[a["image_id"]])["counts"]
            assert ix.rle_counts(row) == want and ix.ann_part_count[row] == 0
    for i, img in enumerate(data["images"]):   # grouped by image, file order within
        assert ix.ann_ids[ix.annotations_of(i)].tolist() == [a["id"] for a in kept if a["image_id"] == img["id"]]
    return kept, dropped


@pytest.mark.parametrize("parser", ["default", "stdlib"])
@pytest.mark.parametrize("chunk", [1 << 22, 700, 60])
@pytest.mark.parametrize("layout", ["compact", "indented", "annotations first"])
def test_index_matches_the_per_annotation_checks(tmp_path, monkeypatch, chunk, layout, parser):
    monkeypatch.setattr(index_mod, "_CHUNK_CHARS", chunk)   # small: many chunks, cuts inside strings
    if parser == "stdlib":   # the chunk parser without orjson
        monkeypatch.setattr(index_mod, "_loads", json.loads)
    data = _zoo()
    if layout == "annotations first":
        data = {"annotations": data["annotations"], "categories": data["categories"], "images": data["images"]}
    path = _write(tmp_path / "a.json", data, **({"indent": 1} if layout == "indented" else {}))
    kept, dropped = _assert_same(path, build_index(path))
    assert len(kept) > 150 and len(dropped) > 100   # the zoo holds plenty of both
    assert any(not isinstance(a["segmentation"], list) for a in kept)


def test_whole_file_parse_gives_the_same(tmp_path):
    """A file the streaming walk does not take (a repeated top-level key: json keeps the last)."""
    data = _zoo(seed=1, n_anns=120)
    text = json.dumps(data)
    path = tmp_path / "dup.json"
    path.write_text('{"info": 1, ' + text[1:])
    _assert_same(path, build_index(path))


def test_odd_but_accepted_ids_and_empty_lists(tmp_path):
    """Ids that are floats equal to an int pass ``in`` as before; no annotations; no images."""
    data = _zoo(seed=2, n_images=3, n_anns=20)
    data["annotations"][0]["image_id"] = float(data["annotations"][0]["image_id"])
    data["annotations"][1]["category_id"] = float(data["annotations"][1]["category_id"])
    path = _write(tmp_path / "a.json", data)
    _assert_same(path, build_index(path))
    empty = _write(tmp_path / "e.json", {"images": data["images"], "annotations": [], "categories": data["categories"]})
    assert build_index(empty).index.num_annotations == 0
    none = _write(tmp_path / "n.json", {"images": [], "annotations": [], "categories": data["categories"]})
    ix = build_index(none).index
    assert ix.num_images == 0 and ix.image_ann_start.tolist() == [0]


def _structural_cases():
    base = _zoo(seed=3, n_images=3, n_anns=10)

    def with_(fn):
        d = json.loads(json.dumps(base))
        fn(d)
        return d
    return [
        with_(lambda d: d["images"].append({"id": 100, "file_name": "x", "height": 1, "width": 1})),
        with_(lambda d: d["images"][1].update(height=0)),
        with_(lambda d: d["images"][1].pop("file_name")),
        with_(lambda d: d["images"].insert(0, [1])),
        with_(lambda d: d["annotations"].__setitem__(4, "x")),
        with_(lambda d: d["annotations"][6].update(id=d["annotations"][2]["id"])),
        with_(lambda d: d["annotations"][3].update(image_id=77)),
        with_(lambda d: d["annotations"][3].update(image_id="100")),
        with_(lambda d: d["annotations"][5].update(category_id=99)),
        with_(lambda d: (d["annotations"][5].update(category_id=99), d["annotations"][7].update(image_id=7))),
        with_(lambda d: (d["annotations"][8].update(category_id=99), d["annotations"][7].update(id="7"))),
        with_(lambda d: (d["annotations"][2].update(category_id=99), d["images"][2].update(width=1.5))),
        with_(lambda d: d["categories"].append({"id": 3, "name": "again"})),
        with_(lambda d: d["categories"].clear()),
        with_(lambda d: d.__setitem__("annotations", {})),
        with_(lambda d: d.pop("categories")),
    ]


@pytest.mark.parametrize("case", range(len(_structural_cases())))
@pytest.mark.parametrize("annotations_first", [False, True])
def test_structural_errors_are_the_same(tmp_path, case, annotations_first):
    data = _structural_cases()[case]
    if annotations_first and "annotations" in data:
        data = {"annotations": data.pop("annotations"), **data}
    path = _write(tmp_path / "bad.json", data)
    with pytest.raises(DataError) as want:
        load_coco_json(path)
    with pytest.raises(DataError) as got:
        build_index(path)
    assert str(got.value) == str(want.value)


def test_raise_mode_raises_the_first_bad_annotation(tmp_path):
    path = _write(tmp_path / "a.json", _zoo(seed=4, n_anns=60))
    _, _, dropped = _reference(path)
    with pytest.raises(DataError) as e:
        build_index(path, on_bad="raise")
    assert str(e.value) == f"{path}: {dropped[0]}"


def test_the_bulk_area_check_leaves_near_zero_areas_to_check_annotation(tmp_path):
    """Collinear points with decimals: the shoelace sum may round to a tiny non-zero number in
    one summation order and to 0 in another; check_annotation's own verdict is the one kept."""
    img = {"id": 1, "file_name": "a.png", "height": 50, "width": 50}
    anns = [{"id": i + 1, "image_id": 1, "category_id": 1, "area": 1.0, "bbox": [0, 0, 40, 40],
             "segmentation": [[0.1 * i, 0.3 * i, 10.1 + 0.7 * i, 30.3 + 2.1 * i, 20.1 + 1.4 * i, 50.3 + 4.2 * i - 0.2]]}
            for i in range(40)]
    path = _write(tmp_path / "a.json", {"images": [img], "annotations": anns, "categories": [{"id": 1, "name": "x"}]})
    _assert_same(path, build_index(path))


# --- CocoInstances on the index ---------------------------------------------------------------------

def _dataset_files(tmp_path, n_anns=80, seed=5):
    data = _zoo(seed=seed, n_images=4, n_anns=n_anns)
    for i, img in enumerate(data["images"]):
        img["file_name"] = f"im{i}.png"
        Image.new("RGB", (img["width"], img["height"]), (i * 40, 90, 200)).save(tmp_path / img["file_name"])
    return _write(tmp_path / "ann.json", data)


def test_lazy_coco_is_the_one_built_before(tmp_path):
    path = _dataset_files(tmp_path)
    with pytest.warns(UserWarning, match="dropped"):
        ds = CocoInstances(path)
    assert ds._coco is None                                  # nothing built for training
    data, kept, dropped = _reference(path)
    assert [r for _, r in ds.bad_samples] == dropped
    assert ds.coco.dataset["annotations"] == kept and ds._coco is not None
    assert set(ds.coco.anns) == set(ds.index.ann_ids.tolist())
    state = pickle.loads(pickle.dumps(ds)).__dict__
    assert state["_coco"] is None and len(pickle.dumps(ds)) < 100_000


def test_lazy_coco_refuses_a_file_changed_since(tmp_path):
    path = _dataset_files(tmp_path)
    with pytest.warns(UserWarning):
        ds = CocoInstances(path)
    data = json.loads(path.read_text())
    data["annotations"] = data["annotations"][5:]
    path.write_text(json.dumps(data))
    with pytest.raises(DataError, match="changed after the dataset was built"):
        _ = ds.coco


def test_targets_equal_pycocotools_masks_at_the_photo_size(tmp_path):
    """Without input_size the masks are pycocotools' annToMask of the (cleaned) annotations:
    the coordinates here have 2 decimals, stored as float32 in the index."""
    path = _dataset_files(tmp_path)
    with pytest.warns(UserWarning):
        ds = CocoInstances(path)
    for i in range(len(ds)):
        t = ds.target(i)
        anns = [a for a in ds.coco.imgToAnns.get(ds.image_ids[i], []) if not a["iscrowd"]]
        want = np.stack([ds.coco.annToMask(a) for a in anns]) if anns else np.zeros((0,) + ds.image_size(i), np.uint8)
        assert t["masks"].shape == want.shape
        # the index stores float32 coordinates: a vertex just below a rasterisation threshold in
        # float64 may land on it in float32 and move an edge pixel (a handful in 40k here)
        assert (t["masks"].numpy() != want).sum() <= max(2, int(want.sum()) // 200)
        assert t["labels"].tolist() == [ds.cat_id_to_label[a["category_id"]] for a in anns]


def test_input_size_rasterises_at_the_input_scale(tmp_path):
    path = _dataset_files(tmp_path)
    with pytest.warns(UserWarning):
        full = CocoInstances(path)
    with pytest.warns(UserWarning):
        small = CocoInstances(path, input_size=(40, 60))
    for i in range(len(full)):
        image, t = small[i]
        h, w = full.image_size(i)
        from fcis.data.transforms import resized_size
        nh, nw = resized_size(h, w, 40, 60)
        assert image.shape == (3, nh, nw) and t["masks"].shape[1:] == (nh, nw)
        ft = full.target(i)
        assert t["labels"].tolist() == ft["labels"].tolist()
        # the same objects: the full-size mask resized agrees with the input-scale one on most pixels
        if len(ft["masks"]):
            resized = torch.nn.functional.interpolate(ft["masks"][None].float(), size=(nh, nw), mode="bilinear")[0] > 0.5
            agree = (resized == t["masks"].bool()).float().mean()
            assert agree > 0.9
            boxes = t["boxes"]
            assert (boxes[:, 2] <= nw).all() and (boxes[:, 3] <= nh).all() and (boxes[:, :2] >= 0).all()


def test_input_boxes_from_the_index_equal_those_from_pycocotools(tmp_path):
    path = _dataset_files(tmp_path)
    with pytest.warns(UserWarning):
        ds = CocoInstances(path)
    for sizes in [(None, None), (50, 70), (600, 1000)]:
        got = input_boxes(ds, *sizes)
        want = input_boxes(ds.coco, *sizes)
        assert all(np.array_equal(g, w) for g, w in zip(got, want))   # boxes, padded sizes, category ids


def test_empty_index_parts(tmp_path):
    """An image without annotations and a dataset without any: targets of size 0, summary works."""
    Image.new("RGB", (8, 6)).save(tmp_path / "a.png")
    path = _write(tmp_path / "a.json", {"images": [{"id": 1, "file_name": "a.png", "height": 6, "width": 8}],
                                        "annotations": [], "categories": [{"id": 1, "name": "x"}]})
    ds = CocoInstances(path, input_size=(12, 20))
    image, t = ds[0]
    assert image.shape == (3, 12, 16) and t["masks"].shape == (0, 12, 16) and t["boxes"].shape == (0, 4)
    boxes, padded, labels = input_boxes(ds, 12, 20)
    assert boxes.shape == (0, 4) and padded.shape == (0, 2) and labels.shape == (0,)
