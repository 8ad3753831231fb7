"""Issue 22, item 1: anchors fitted for AP (each class weighing the same, the count of sizes
chosen) and the input size chosen from the data (fcis.engine.anchor_fit, fcis.engine.input_size,
fcis.engine.run_plan)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from fcis.engine import TrainConfig
from fcis.engine.anchor_fit import (
    BoxTable,
    Coverage,
    anchor_coverage,
    best_iou,
    box_table,
    class_weights,
    fit_anchors,
    weighted_quantile,
)
from fcis.engine.input_size import MAX_UPSAMPLE, PIXEL_BUDGET, REACH_TARGET, choose_input_size


def _boxes(rng, n, lo, hi, extent, ratio_spread=0.2):
    """``n`` boxes with sqrt(w*h) log-uniform in [lo, hi] px, h/w within exp(±spread), inside
    an ``extent`` x ``extent`` image."""
    s = np.exp(rng.uniform(math.log(lo), math.log(hi), size=n))
    r = np.exp(rng.uniform(-ratio_spread, ratio_spread, size=n))
    w, h = s / np.sqrt(r), s * np.sqrt(r)
    x = rng.uniform(0, extent - w)
    y = rng.uniform(0, extent - h)
    return np.stack([x, y, x + w, y + h], axis=1)


def _table(hw, boxes_per_image, labels_per_image) -> BoxTable:
    """A BoxTable of images ``hw`` [(h, w)] with the given boxes and labels per image."""
    boxes = np.concatenate([np.asarray(b, dtype=np.float64).reshape(-1, 4) for b in boxes_per_image])
    labels = np.concatenate([np.asarray(lab, dtype=np.int64) for lab in labels_per_image])
    index = np.concatenate([np.full(len(b), i, dtype=np.int64) for i, b in enumerate(boxes_per_image)])
    return BoxTable(boxes, labels, index, np.asarray(hw, dtype=np.int64))


# --- class balance ---------------------------------------------------------------------------------

def test_class_weights_give_each_class_the_same_share():
    labels = np.array([3, 3, 3, 7, 9, 9])
    w = class_weights(labels)
    assert w.sum() == pytest.approx(1.0)
    for c in (3, 7, 9):
        assert w[labels == c].sum() == pytest.approx(1 / 3)
    assert class_weights(np.zeros(0, dtype=np.int64)).shape == (0,)


def test_weighted_quantile():
    v = np.array([5.0, 1.0, 3.0, 2.0, 4.0])
    for q in (0.1, 0.5, 0.9):
        assert weighted_quantile(v, q, np.ones(5))[0] == np.quantile(v, q, method="inverted_cdf")
    # integer weights = repeated values
    w = np.array([1.0, 3.0, 1.0, 1.0, 2.0])
    rep = np.repeat(v, w.astype(int))
    for q in (0.2, 0.5, 0.8):
        assert weighted_quantile(v, q, w)[0] == np.quantile(rep, q, method="inverted_cdf")
    np.testing.assert_allclose(weighted_quantile(v, [0.25, 0.75]), np.quantile(v, [0.25, 0.75]))


def test_balanced_fit_covers_the_rare_large_class_and_the_box_count_fit_does_not():
    rng = np.random.default_rng(0)
    small = _boxes(rng, 1000, 40, 64, 500)      # 1000 boxes of one class, 40-64 px
    large = _boxes(rng, 20, 250, 360, 500)      # 20 of another, 250-360 px
    boxes = np.concatenate([small, large])
    labels = np.array([1] * 1000 + [2] * 20)
    padded = np.tile([512, 512], (len(boxes), 1))
    kw = dict(num_sizes=4, default_ratios=(0.5, 1.0, 2.0), stride=16, fg_iou=0.7)
    by_boxes = fit_anchors(boxes, padded, **kw)
    balanced = fit_anchors(boxes, padded, weights=class_weights(labels), **kw)

    def per_class(fit):
        ok = best_iou(boxes, padded, [(16, *fit)]) >= 0.7
        return Coverage.of(ok, labels, {1: "small", 2: "large"})

    cb, cw = per_class(by_boxes), per_class(balanced)
    assert cb.per_class["large"] < 0.3 < 0.8 < cw.per_class["large"]
    assert cw.classes > cb.classes + 0.2                 # the class-balanced score prefers it
    assert cb.boxes >= cw.boxes - 0.05                   # the box count barely tells them apart
    assert anchor_coverage(boxes, padded, [(16, *balanced)], 0.7, class_weights(labels)) == pytest.approx(cw.classes)


def test_the_fit_chooses_how_many_sizes():
    rng = np.random.default_rng(1)
    padded = np.tile([800, 800], (600, 1))
    kw = dict(default_ratios=(0.5, 1.0, 2.0), stride=16, fg_iou=0.7, num_sizes=(3, 4, 5, 6, 7))
    narrow = _boxes(rng, 600, 70, 90, 800)
    wide = _boxes(rng, 600, 40, 640, 800)
    n_narrow = len(fit_anchors(narrow, padded, **kw)[0])
    n_wide = len(fit_anchors(wide, padded, **kw)[0])
    assert n_narrow == 3 and n_wide >= 6
    # the rule: score - cost x count; free sizes take the most, expensive ones the fewest
    assert len(fit_anchors(wide, padded, size_cost=0.0, **kw)[0]) == 7
    assert len(fit_anchors(wide, padded, size_cost=1.0, **kw)[0]) == 3
    # one count given: exactly that many
    assert len(fit_anchors(wide, padded, **{**kw, "num_sizes": 4})[0]) == 4


def test_fit_for_fcis_chooses_the_count_and_fit_boxes_keeps_the_models(tmp_path):
    from fcis.engine.anchor_fit import fit_for_model
    from fcis.models import FCISConfig

    rng = np.random.default_rng(2)
    boxes = _boxes(rng, 300, 30, 500, 800)
    table = _table([(800, 800)], [boxes], [[1] * 300])
    cfg = FCISConfig(num_classes=1, min_size=800, max_size=800)
    balanced = fit_for_model("", cfg, None, given={}, table=table)
    by_boxes = fit_for_model("", cfg, None, given={}, table=table, balanced=False)
    assert balanced is not None and by_boxes is not None
    assert len(balanced.fields["anchor_sizes"]) > 4 and len(by_boxes.fields["anchor_sizes"]) == 4
    assert balanced.weighing == "classes" and by_boxes.weighing == "boxes"
    assert balanced.chosen.classes > by_boxes.chosen.classes
    given = fit_for_model("", cfg, None, given={"anchor_sizes": (32, 64, 128, 256)}, table=table)
    assert given is not None and given.fields["anchor_sizes"] == (32, 64, 128, 256)


# --- input size ------------------------------------------------------------------------------------

def test_small_photos_with_large_objects_are_not_upsampled():
    rng = np.random.default_rng(3)
    hw = [(300, 400)] * 10
    table = _table(hw, [_boxes(rng, 2, 80, 200, 300) for _ in hw], [[1, 1]] * 10)
    choice = choose_input_size(table, 600, 1000)
    assert (choice.min_size, choice.max_size) == (300, 500) and choice.source == "data"
    assert choice.upsample == pytest.approx(1.0) and choice.reach == pytest.approx(1.0)
    assert "not upsampled" in choice.reason
    # with ImageNet weights the model's input stays (the paper upsampled VOC's ~500x375 photos to 600)
    pretrained = choose_input_size(table, 600, 1000, native_cap=False)
    assert (pretrained.min_size, pretrained.max_size) == (600, 1000) and "ImageNet" in pretrained.reason


def test_large_photos_keep_the_models_input():
    rng = np.random.default_rng(4)
    hw = [(1200, 1600)] * 5
    table = _table(hw, [_boxes(rng, 3, 150, 600, 1200) for _ in hw], [[1, 2, 2]] * 5)
    choice = choose_input_size(table, 600, 1000)
    assert (choice.min_size, choice.max_size) == (600, 1000)


def test_small_objects_enlarge_the_input_within_the_caps():
    rng = np.random.default_rng(5)
    # 1024 px photos; one class of 40-45 px objects (23-26 px at 600), one of large ones
    hw = [(1024, 1024)] * 8
    boxes = [np.concatenate([_boxes(rng, 20, 40, 45, 1024), _boxes(rng, 2, 200, 400, 1024)]) for _ in hw]
    table = _table(hw, boxes, [[1] * 20 + [2] * 2] * 8)
    choice = choose_input_size(table, 600, 1000)
    assert choice.default_reach == pytest.approx(0.5)
    assert 600 < choice.min_size <= 1024 and choice.reach >= REACH_TARGET
    assert choice.pixels <= PIXEL_BUDGET * 600 * 1000 and choice.upsample <= MAX_UPSAMPLE
    # the smallest input that reaches the target: one step less does not
    smaller = [c for c in choice.candidates if c["min_size"] < choice.min_size]
    assert smaller and all(c["reach"] < REACH_TARGET for c in smaller)


def test_enlarging_stops_at_the_pixel_budget_and_at_twice_the_photos_size():
    rng = np.random.default_rng(6)
    # 2000 px photos: 60 and 68 px objects are 18 and 20 px at 600; the budget (0.9 Mpx) stops at
    # 948, where the 68 px ones reach 32 px
    hw = [(2000, 2000)] * 4
    boxes = [np.concatenate([_boxes(rng, 5, 60, 61, 2000), _boxes(rng, 5, 68, 68.5, 2000)]) for _ in hw]
    table = _table(hw, boxes, [[1] * 5 + [2] * 5] * 4)
    choice = choose_input_size(table, 600, 1000)
    assert choice.min_size * choice.min_size <= PIXEL_BUDGET * 600 * 1000 and choice.min_size > 900
    assert choice.reach == pytest.approx(0.5) and "pixels" in choice.reason
    # 256 px photos of 20 px objects: upsampled, but never beyond twice their size
    hw = [(256, 256)] * 4
    table = _table(hw, [_boxes(rng, 4, 20, 20.5, 256) for _ in hw], [[1] * 4] * 4)
    choice = choose_input_size(table, 600, 1000)
    assert 256 < choice.min_size <= 2 * 256 and choice.upsample <= MAX_UPSAMPLE
    # 12 px objects would need more than 2x: nothing gained within the caps, the photos' own size
    table = _table(hw, [_boxes(rng, 4, 12, 12.5, 256) for _ in hw], [[1] * 4] * 4)
    choice = choose_input_size(table, 600, 1000)
    assert choice.min_size == 256 and "too little" in choice.reason


def test_given_sizes_win_and_input_size_model(tiny_two_classes):
    from fcis.data import CocoInstances
    from fcis.engine.run_plan import plan_input_size
    from fcis.models import BUILDERS

    ds = CocoInstances(tiny_two_classes)
    table = box_table(ds.coco)
    builder = BUILDERS["fcis_resnet18"]
    given = plan_input_size(builder, 2, False, {"min_size": 96}, {}, TrainConfig(), table)
    assert given is not None and (given.min_size, given.max_size, given.source) == (96, 1000, "given")
    model = plan_input_size(builder, 2, False, {}, {}, TrainConfig(input_size="model"), table)
    assert model is not None and (model.min_size, model.max_size, model.source) == (600, 1000, "model")
    chosen = plan_input_size(builder, 2, False, {}, {}, TrainConfig(), table)
    assert chosen is not None and chosen.source == "data" and chosen.min_size == 64   # the photos' own size
    recipe = plan_input_size(builder, 2, False, {}, {"min_size": 600, "max_size": 1000},
                             TrainConfig(recipe="paper-voc"), table)
    assert recipe is not None and recipe.source == "recipe paper-voc"
    with pytest.raises(ValueError, match="input_size"):
        TrainConfig(input_size="big")


# --- runs and the printed summary ------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_two_classes(tmp_path_factory):
    """A COCO file of 6 images 64x80: 'dot' (many small boxes) and 'slab' (a few large ones)."""
    from PIL import Image

    root = tmp_path_factory.mktemp("two")
    (root / "images").mkdir()
    images, anns = [], []
    rng = np.random.default_rng(7)
    for i in range(6):
        Image.fromarray(rng.integers(0, 255, (64, 80, 3), dtype=np.uint8)).save(root / "images" / f"{i}.png")
        images.append({"id": i + 1, "file_name": f"images/{i}.png", "height": 64, "width": 80})
        objs = [(2, [4, 4, 50, 40])] if i % 2 == 0 else []
        objs += [(1, [float(x), float(y), 10.0, 10.0]) for x, y in rng.integers(0, 50, size=(5, 2))]
        for cat, (x, y, w, h) in objs:
            poly = [x, y, x + w, y, x + w, y + h, x, y + h]
            anns.append({"id": len(anns) + 1, "image_id": i + 1, "category_id": cat, "bbox": [x, y, w, h],
                         "area": w * h, "iscrowd": 0, "segmentation": [poly]})
    path = root / "train.json"
    path.write_text(json.dumps({"images": images, "annotations": anns,
                                "categories": [{"id": 1, "name": "dot"}, {"id": 2, "name": "slab"}]}))
    return path


def test_inspect_data_prints_the_choice_and_coverage_per_class(tiny_two_classes, tmp_path, capsys):
    from fcis.cli.main import main

    assert main(["inspect-data", str(tiny_two_classes), "--model", "fcis_resnet18",
                 "--output", str(tmp_path / "p.png")]) == 0
    out = capsys.readouterr().out
    assert "input size 64/107 (chosen from the data)" in out
    assert "head stride 8 (chosen)" in out            # two classes from random weights
    lines = out.splitlines()
    head = next(i for i, line in enumerate(lines) if line.split()[:4] == ["class", "boxes", "median", "px"])
    rows = {line.split()[0]: line.split() for line in lines[head + 1:head + 3]}
    assert rows["dot"][1] == "30" and rows["slab"][1] == "3"
    assert rows["dot"][2] == "10" and rows["dot"][3].endswith("%")
    assert "per class on average" in out and "each class weighing the same" in out
    assert main(["inspect-data", str(tiny_two_classes), "--model", "fcis_resnet18", "--anchors", "fit-boxes",
                 "--min-size", "64", "--max-size", "80", "--output", str(tmp_path / "p.png")]) == 0
    out = capsys.readouterr().out
    assert "input size 64/80 (given)" in out and "by box count" in out


def test_train_records_the_input_size_and_resume_reuses_it(tiny_two_classes, tmp_path, capsys):
    import torch

    from fcis.engine import train

    cfg = TrainConfig(iterations=1, workers=0, device="cpu", checkpoint_every=1)
    train("fcis_resnet18", tiny_two_classes, None, tmp_path / "run", cfg, progress=False)
    err = capsys.readouterr().err
    assert "input size 64/107 (chosen from the data)" in err and "slab" in err and "median px" in err
    run = json.loads((tmp_path / "run" / "config.json").read_text())
    assert run["input_size"]["source"] == "data" and run["input_size"]["min_size"] == 64
    assert (run["model_config"]["min_size"], run["model_config"]["max_size"]) == (64, 107)
    assert run["train_config"]["min_size"] is None          # chosen, not given
    assert run["anchors"]["weighing"] == "classes" and set(run["anchors"]["chosen"]["per_class"]) == {"dot", "slab"}
    assert run["model_config"]["anchor_sizes"] == run["anchors"]["fields"]["anchor_sizes"]
    # resumed: the same input size and anchors, from the checkpoint (nothing is chosen again)
    train("fcis_resnet18", tiny_two_classes, None, tmp_path / "run", TrainConfig(iterations=2, workers=0, device="cpu"),
          resume=True, progress=False)
    again = json.loads((tmp_path / "run" / "config.json").read_text())
    assert again["input_size"] == run["input_size"] and again["anchors"] == run["anchors"]
    assert again["model_config"]["min_size"] == 64
    ckpt = torch.load(tmp_path / "run" / "last.pt", weights_only=False)
    assert ckpt["iteration"] == 2 and ckpt["input_size"]["min_size"] == 64


def test_class_table_shows_the_least_covered_classes_first_when_long():
    from fcis.engine.inspect_data import DataReport

    table = {f"c{i}": {"boxes": 10 + i, "median_px": 20.0 + i, "coverage": i / 20} for i in range(15)}
    report = DataReport("x", 1, 1, 0, np.ones(1, dtype=np.int64), {}, np.ones(1), np.ones(1), (600, 1000), {},
                        None, class_table=table)
    lines = report.class_lines(limit=12)
    assert len(lines) == 1 + 12 + 1 and "3 more classes" in lines[-1]
    assert [line.split()[0] for line in lines[1:4]] == ["c0", "c1", "c2"]   # the least covered first
    assert lines[1].split()[1:] == ["10", "20", "0.0%"]
    assert len(report.class_lines(limit=40)) == 16
