"""fcis convert sbd: a tiny SBD-layout dataset written with scipy.io.savemat round-trips exactly."""

import json

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils

scipy_io = pytest.importorskip("scipy.io")

from fcis.cli.main import main  # noqa: E402
from fcis.data import CocoInstances, DataError  # noqa: E402
from fcis.data.convert import VOC_CLASSES, convert_sbd  # noqa: E402


def _write_inst(path, seg, cats, **extra):
    gt = {"Segmentation": seg.astype(np.uint8), "Categories": np.asarray(cats, dtype=np.uint8).reshape(-1, 1),
          "Boundaries": np.zeros((len(cats), 1)), **extra}
    scipy_io.savemat(str(path), {"GTinst": gt})


def make_sbd(root, rng):
    """Three images (two train, one val); returns {id: (seg, cats)}."""
    ds = root / "benchmark_RELEASE" / "dataset"
    for sub in ("img", "inst", "cls"):
        (ds / sub).mkdir(parents=True)
    truth = {}
    for name, (h, w) in {"2008_000002": (40, 52), "2008_000003": (33, 47), "2008_000007": (30, 30)}.items():
        seg = np.zeros((h, w), np.uint8)
        seg[3:20, 5:30] = 1
        seg[22:30, 10:45 if w > 45 else 25] = 2
        seg[rng.random((h, w)) < 0.05] = 0                   # ragged masks
        cats = [15, 12] if name != "2008_000007" else [1, 20]
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(ds / "img" / f"{name}.jpg")
        _write_inst(ds / "inst" / f"{name}.mat", seg, cats)
        cls_map = np.zeros_like(seg)
        for k, c in enumerate(cats, start=1):
            cls_map[seg == k] = c
        scipy_io.savemat(str(ds / "cls" / f"{name}.mat"), {"GTcls": {"Segmentation": cls_map}})
        truth[name] = (seg, cats)
    (ds / "train.txt").write_text("2008_000002\n2008_000003\n")
    (ds / "val.txt").write_text("2008_000007\n")
    return ds, truth


def test_sbd_round_trip(tmp_path):
    ds, truth = make_sbd(tmp_path, np.random.default_rng(0))
    out = tmp_path / "out" / "sbd_train.json"
    assert main(["convert", "sbd", str(tmp_path), str(out), "--split", "train"]) == 0
    data = json.loads(out.read_text())
    assert [c["name"] for c in sorted(data["categories"], key=lambda c: c["id"])] == list(VOC_CLASSES)
    assert [im["file_name"].rsplit("/", 1)[-1] for im in data["images"]] == ["2008_000002.jpg", "2008_000003.jpg"]
    for im in data["images"]:
        seg, cats = truth[im["file_name"].rsplit("/", 1)[-1][:-4]]
        anns = [a for a in data["annotations"] if a["image_id"] == im["id"]]
        assert [VOC_CLASSES[a["category_id"] - 1] for a in anns] == [VOC_CLASSES[c - 1] for c in cats]
        for k, a in enumerate(anns, start=1):
            np.testing.assert_array_equal(mask_utils.decode(a["segmentation"]), (seg == k).astype(np.uint8))
    ds_val = convert_sbd(ds, tmp_path / "val.json", split="val")       # the dataset folder itself works too
    ids = tmp_path / "sds_val.txt"
    ids.write_text("2008_000003\n")
    assert len(json.loads(convert_sbd(ds, tmp_path / "ids.json", ids_file=ids).read_text())["images"]) == 1
    val = CocoInstances(ds_val)
    assert len(val) == 1 and val.class_names == list(VOC_CLASSES)
    _, target = val[0]
    assert target["masks"].shape == (2, 30, 30) and sorted(target["labels"].tolist()) == [1, 20]


def test_sbd_errors_name_the_file_and_problem(tmp_path):
    ds, truth = make_sbd(tmp_path, np.random.default_rng(1))
    (ds / "inst" / "2008_000003.mat").unlink()
    with pytest.raises(DataError, match=r"2008_000003\.mat: instance annotation file not found"):
        convert_sbd(tmp_path, tmp_path / "a.json")
    scipy_io.savemat(str(ds / "inst" / "2008_000003.mat"), {"GTinst": {"Segmentation": truth["2008_000003"][0]}})
    with pytest.raises(DataError, match=r"2008_000003\.mat: malformed SBD annotation.*Categories"):
        convert_sbd(tmp_path, tmp_path / "a.json")
    seg = truth["2008_000003"][0]
    _write_inst(ds / "inst" / "2008_000003.mat", seg, [15, 12, 3])          # a third instance, no pixels
    with pytest.raises(DataError, match=r"2008_000003\.mat: instance 3 \(bird\) has no pixels"):
        convert_sbd(tmp_path, tmp_path / "a.json")
    _write_inst(ds / "inst" / "2008_000003.mat", seg, [15])                  # pixels of instance 2, no class
    with pytest.raises(DataError, match=r"instance ids \[2\] have pixels but no category"):
        convert_sbd(tmp_path, tmp_path / "a.json")
    _write_inst(ds / "inst" / "2008_000003.mat", seg, [15, 13])                 # GTcls says 12
    with pytest.raises(DataError, match=r"cls/2008_000003\.mat: instance 2 is horse .* classes \[12\]"):
        convert_sbd(tmp_path, tmp_path / "a.json")
    _write_inst(ds / "inst" / "2008_000003.mat", seg, [15, 21])
    with pytest.raises(DataError, match=r"Categories must be VOC class ids"):
        convert_sbd(tmp_path, tmp_path / "a.json")
    (ds / "img" / "2008_000002.jpg").unlink()
    with pytest.raises(DataError, match=r"2008_000002\.jpg: image of train\.txt entry"):
        convert_sbd(tmp_path, tmp_path / "a.json")
    (ds / "val.txt").unlink()
    with pytest.raises(DataError, match=r"val\.txt: split list not found"):
        convert_sbd(tmp_path, tmp_path / "a.json", split="val")
    with pytest.raises(DataError, match="not an SBD folder"):
        convert_sbd(tmp_path / "nowhere", tmp_path / "a.json")
