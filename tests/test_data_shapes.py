"""make_shapes: determinism, COCO validity, masks/boxes consistency, occlusion, empty images."""

import json

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from fcis.data import CocoInstances, make_shapes

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy:DeprecationWarning")


def _coco(path):
    import contextlib
    import io

    with contextlib.redirect_stdout(io.StringIO()):
        return COCO(str(path))


def test_deterministic_for_a_seed(tmp_path):
    a = make_shapes(tmp_path / "a", num_images=6, seed=11)
    b = make_shapes(tmp_path / "b", num_images=6, seed=11)
    c = make_shapes(tmp_path / "c", num_images=6, seed=12)
    for split in ("train", "val"):
        assert a[split].read_text() == b[split].read_text()
    names = sorted(p.name for p in a["images"].iterdir())
    assert names == [f"{i:05d}.png" for i in range(6)]
    for n in names:
        assert (a["images"] / n).read_bytes() == (b["images"] / n).read_bytes()
    assert any((a["images"] / n).read_bytes() != (c["images"] / n).read_bytes() for n in names)


def test_valid_coco_with_consistent_masks(tmp_path):
    paths = make_shapes(tmp_path, num_images=40, seed=0, max_objects=4, val_fraction=0.25)
    assert set(paths) == {"train", "val", "images"}
    train, val = _coco(paths["train"]), _coco(paths["val"])
    assert len(val.imgs) == 10 and len(train.imgs) == 30
    assert not set(train.imgs) & set(val.imgs)
    empty = 0
    for coco in (train, val):
        assert {c["id"]: c["name"] for c in coco.dataset["categories"]} == {1: "circle", 2: "square", 3: "triangle"}
        for img_id, img in coco.imgs.items():
            assert (img["height"], img["width"]) == (256, 320)
            anns = coco.imgToAnns.get(img_id, [])
            assert len(anns) <= 4
            empty += not anns
            cover = np.zeros((256, 320), dtype=np.int32)
            for ann in anns:
                assert ann["category_id"] in (1, 2, 3) and ann["iscrowd"] == 0
                m = coco.annToMask(ann)
                assert m.sum() == ann["area"] >= 40
                ys, xs = np.nonzero(m)
                x, y, w, h = ann["bbox"]
                assert [x, y, x + w, y + h] == [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
                cover += m
            assert cover.max() <= 1, "visible masks of one image must not overlap"
    assert empty >= 2  # num_images // 20 images are generated without objects
    assert sum(len(c.anns) for c in (train, val)) > 40


def test_background_textured_and_objects_visible(tmp_path):
    paths = make_shapes(tmp_path, num_images=4, seed=5, val_fraction=0.0)
    coco = _coco(paths["train"])
    assert len(json.loads(paths["val"].read_text())["images"]) == 0
    for img_id, info in coco.imgs.items():
        pixels = np.asarray(Image.open(paths["images"].parent / info["file_name"]), dtype=np.float32)
        assert pixels.shape == (256, 320, 3)
        fg = np.zeros((256, 320), dtype=bool)
        for ann in coco.imgToAnns.get(img_id, []):
            m = mask_utils.decode(ann["segmentation"]).astype(bool)
            fg |= m
            inside = pixels[m].mean(0)
            ring = pixels[np.logical_xor(np.pad(m, 2)[:-4, 2:-2] | np.pad(m, 2)[4:, 2:-2] | m, m)]
            if len(ring) > 20 and ann["area"] > 200:
                assert np.abs(inside - ring.mean(0)).sum() > 30  # object stands out from its surroundings
        assert pixels[~fg].std(0).min() > 8  # background is not flat


def test_loads_through_coco_instances(tmp_path):
    paths = make_shapes(tmp_path, num_images=5, seed=2, image_size=(96, 128), max_objects=3)
    ds = CocoInstances(paths["train"])
    assert ds.num_classes == 3 and ds.class_names == ["circle", "square", "triangle"]
    assert ds.bad_samples == []
    image, target = ds[0]
    assert image.shape == (3, 96, 128)
    n = len(ds.coco.imgToAnns.get(ds.image_ids[0], []))
    assert target["masks"].shape == (n, 96, 128) and target["labels"].tolist() == [
        a["category_id"] for a in ds.coco.imgToAnns.get(ds.image_ids[0], [])]
