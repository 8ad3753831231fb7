"""benchmarks/scratch_levers.py (issue 22's ablation harness) and benchmarks/photo_sets.py: the
row table, per-class AP, the equal-time arithmetic, the tables, a snapshot set's preparation, and
(slow) the harness end to end on a tiny shapes set. No timing or accuracy is asserted."""

from __future__ import annotations

import json
import math
import subprocess

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils

from benchmarks import scratch_levers as sl
from benchmarks.photo_sets import SnapshotSet, prepare_snapshot_set
from benchmarks.scratch_levers_report import render
from fcis.evaluation.coco_eval import evaluate_coco


def test_rows_turn_each_lever_off_alone_and_on_alone():
    keys = [r.key for r in sl.ROWS]
    assert len(keys) == len(set(keys))
    every_off = [f for lv in sl.DEFAULT_LEVERS for f in lv.off]
    assert {lv.key for lv in sl.DEFAULT_LEVERS} == {"anchors", "input_size", "copy_paste", "head_stride"}   # the bare command's
    assert sl.ROW_BY_KEY["all"].flags == () and sl.ROW_BY_KEY["all"].code == "new"
    assert sl.ROW_BY_KEY["before"].flags == () and sl.ROW_BY_KEY["before"].code == "before"
    assert list(sl.ROW_BY_KEY["none"].flags) == every_off
    for lv in sl.DEFAULT_LEVERS:
        assert sl.ROW_BY_KEY[f"off_{lv.key}"].flags == lv.off
        assert f"plus_{lv.key}" not in sl.ROW_BY_KEY and not lv.on
        only = list(sl.ROW_BY_KEY[f"only_{lv.key}"].flags)
        assert only == [f for other in sl.DEFAULT_LEVERS if other is not lv for f in other.off]
    for lv in sl.EXTRA_LEVERS:
        assert sl.ROW_BY_KEY[f"plus_{lv.key}"].flags == lv.on and lv.on and not lv.off
    assert "head_stride=16" not in sl.ROW_BY_KEY["maskrcnn_none"].flags   # an FCIS field only
    assert list(sl.ROW_BY_KEY["maskrcnn_none"].flags) == [f for lv in sl.DEFAULT_LEVERS if not lv.fcis_only
                                                          for f in lv.off]
    for row in sl.ROWS:
        if row.equal_time_to:
            assert row.model == sl.MASKRCNN and sl.ROW_BY_KEY[row.equal_time_to].model == sl.FCIS
            assert keys.index(row.equal_time_to) < keys.index(row.key)  # its reference runs first


def test_row_groups_expand_in_table_order():
    core = [r.key for r in sl.expand_rows(["core"])]
    assert core[:3] == ["before", "all", "none"] and core[-1] == "maskrcnn_all"
    assert [r.key for r in sl.expand_rows(["plus_gn", "all", "all"])] == ["all", "plus_gn"]
    assert {r.key for r in sl.expand_rows(["alone", "maskrcnn"])} == {
        *(f"only_{lv.key}" for lv in sl.DEFAULT_LEVERS), "maskrcnn_all", "maskrcnn_none"}
    with pytest.raises(ValueError, match="nope"):
        sl.expand_rows(["all", "nope"])


def _square(x, y, s):
    return [[x, y, x + s, y, x + s, y + s, x, y + s]]


def _gt(tmp_path):
    """Two images, categories a (2 instances), b (1) and c (none)."""
    anns = [(1, 1, 1, _square(2, 2, 10)), (2, 1, 2, _square(20, 20, 12)), (3, 2, 1, _square(5, 30, 14))]
    gt = {"images": [{"id": i, "file_name": f"{i}.png", "width": 48, "height": 48} for i in (1, 2)],
          "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}, {"id": 3, "name": "c"}],
          "annotations": [{"id": i, "image_id": im, "category_id": c, "segmentation": seg, "iscrowd": 0,
                           "area": float(mask_utils.area(mask_utils.frPyObjects(seg, 48, 48)).sum()),
                           "bbox": [seg[0][0], seg[0][1], seg[0][2] - seg[0][0], seg[0][5] - seg[0][1]]}
                          for i, im, c, seg in anns]}
    path = tmp_path / "gt.json"
    path.write_text(json.dumps(gt))
    return path, gt


def test_per_class_ap_is_cocoeval_per_category_and_averages_to_the_overall_ap(tmp_path):
    path, gt = _gt(tmp_path)
    results = []
    for a in gt["annotations"]:
        if a["category_id"] == 1:  # category a found exactly, b missed, plus one false b far away
            rle = mask_utils.merge(mask_utils.frPyObjects(a["segmentation"], 48, 48))
            rle["counts"] = rle["counts"].decode()
            results.append({"image_id": a["image_id"], "category_id": 1, "score": 0.9, "segmentation": rle,
                            "bbox": a["bbox"]})
    far = mask_utils.encode(np.asfortranarray(np.pad(np.ones((6, 6), np.uint8), ((40, 2), (40, 2)))))
    far["counts"] = far["counts"].decode()
    results.append({"image_id": 1, "category_id": 2, "score": 0.8, "segmentation": far, "bbox": [40, 40, 6, 6]})

    per = sl.per_class_ap(path, results, "segm")
    assert set(per) == {"a", "b", "c"}
    assert per["a"]["AP"] == pytest.approx(1.0) and per["a"]["AP50"] == pytest.approx(1.0)
    assert per["b"]["AP"] == 0.0 and per["b"]["instances"] == 1 and per["a"]["instances"] == 2
    assert math.isnan(per["c"]["AP"]) and per["c"]["instances"] == 0
    overall = evaluate_coco(path, results, "segm")["AP"]
    assert overall == pytest.approx(np.mean([per["a"]["AP"], per["b"]["AP"]]))
    assert sl.per_class_ap(path, [], "segm")["a"]["AP"] == 0.0  # no detections at all


def test_sec_per_iter_skips_the_first_window_and_equal_time_rounds(tmp_path):
    log = tmp_path / "log.jsonl"
    log.write_text("\n".join(json.dumps(r) for r in (
        {"iteration": 5, "sec_per_iter": 9.0}, {"iteration": 10, "sec_per_iter": 2.0},
        {"iteration": 10, "nonfinite": True}, {"iteration": 15, "sec_per_iter": 3.0},
        {"iteration": 20, "sec_per_iter": 2.5})))
    assert sl.sec_per_iter(log) == 2.5  # median of 2, 3, 2.5; the start-up window (9) left out
    log.write_text(json.dumps({"iteration": 5, "sec_per_iter": 4.0}))
    assert sl.sec_per_iter(log) == 4.0
    log.write_text(json.dumps({"iteration": 5, "loss": 1.0}))
    with pytest.raises(ValueError, match="no sec_per_iter"):
        sl.sec_per_iter(log)
    assert sl.equal_time_iterations(600.0, 4.0) == 150
    assert sl.equal_time_iterations(10.0, 40.0) == 1
    with pytest.raises(ValueError):
        sl.equal_time_iterations(600.0, 0.0)


def _record(ap, ap50, per, *, label, loop_s=60.0, iterations=300, equal_time=None):
    rec = {"label": label, "metrics": {"segm": {"AP": ap, "AP50": ap50, "AP75": None, "APs": 0.01},
                                       "bbox": {"AP": ap / 2}, "voc": {"mAP@0.5": 0.3, "mAP@0.7": 0.1}},
           "per_class": {"segm": {k: {"AP": v, "AP50": v, "instances": 3} for k, v in per.items()}},
           "per_class_mean_matches_overall": True, "iterations": iterations, "loop_s": loop_s,
           "sec_per_iter": loop_s / iterations, "train_wall_s": loop_s + 9, "chosen": {"min_size": 600}}
    if equal_time:
        rec["equal_time"] = equal_time
    return rec


def test_render_gives_rows_by_datasets_details_and_per_class_tables():
    eq = {"reference_row": "all", "reference_loop_s": 60.0, "calibration_sec_per_iter": 0.5,
          "calibration_iterations": 20, "iterations": 120, "achieved_loop_ratio": 1.05}
    results = {"settings": {"iterations": 300, "batch_size": 2, "threads": 1, "levers": {}},
               "datasets": {
                   "d1": {"rows": {"before": _record(0.1, 0.2, {"x": 0.05, "y": 0.15}, label="before"),
                                   "all": _record(0.3, 0.5, {"x": 0.2, "y": 0.4}, label="all levers"),
                                   "maskrcnn_all": _record(0.2, 0.4, {"x": 0.1, "y": 0.3}, label="mrcnn",
                                                           loop_s=63.0, iterations=120, equal_time=eq)}},
                   "d2": {"rows": {"before": _record(0.2, 0.3, {"z": 0.2}, label="before"),
                                   "all": {"label": "all levers", "error": "RuntimeError: boom"}}}}}
    md = render(results)
    lines = md.splitlines()
    head = lines.index("| row | d1 | d2 |")
    assert lines[head + 2] == "| before | 10.0 (20.0) | 20.0 (30.0) |"
    assert lines[head + 3] == "| all levers | 30.0 (50.0) | failed |"
    assert lines[head + 4] == "| mrcnn | 20.0 (40.0) |  |"
    detail = next(line for line in lines if line.startswith("| all levers | 30.0 |"))
    assert "| 3.00 |" in detail  # x before
    assert "120 it, 63 s" in md and "achieved x1.05" in md and "failed: RuntimeError: boom" in md
    assert "| row | x (3) | y (3) | mean = segm AP |" in md and "| all levers | 20.0 | 40.0 | yes |" in md
    assert "| row | z (3) | mean = segm AP |" in md


def _git(cwd, *args):
    subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True)


def test_prepare_snapshot_set_renumbers_categories_and_repairs_the_export(tmp_path):
    repo = tmp_path / "repo"
    cats = [{"id": 0, "name": "project"}, {"id": 1, "name": "u"}, {"id": 2, "name": "v"}]
    for split, n in (("train", 2), ("valid", 1)):
        (repo / split).mkdir(parents=True)
        images, anns = [], []
        for i in range(n):
            Image.new("RGB", (40, 30), (i * 50, 0, 0)).save(repo / split / f"{split}{i}.jpg")
            images.append({"id": i, "file_name": f"{split}{i}.jpg", "width": 40, "height": 31 if i == 0 else 30})
            anns.append({"id": 2 * i, "image_id": i, "category_id": 2, "bbox": [1, 1, 5, 5], "area": 25,
                         "iscrowd": 0, "segmentation": [[1, 1, 6, 1, 6, 6]]})
            anns.append({"id": 2 * i + 1, "image_id": i, "category_id": 1 if split == "valid" else 2,
                         "bbox": [9, 9, 5, 5], "area": 25, "iscrowd": 0, "segmentation": [[9, 9, 14, 9]]})
        (repo / split / "_annotations.coco.json").write_text(
            json.dumps({"images": images, "annotations": anns, "categories": cats}))
    _git(repo, "init", "-q")
    _git(repo, "add", ".")
    _git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "export")
    spec = SnapshotSet(name="toy", repo="o/toy", commit="0" * 40, license="CC BY 4.0",
                       train=("train/_annotations.coco.json",), val=("valid/_annotations.coco.json",), about="toy")
    train, val = prepare_snapshot_set(spec, repo, tmp_path / "out")

    tr, va = json.loads(train.read_text()), json.loads(val.read_text())
    assert tr["categories"] == va["categories"] == [{"id": 1, "name": "u", "supercategory": "none"},
                                                   {"id": 2, "name": "v", "supercategory": "none"}]
    assert [im["file_name"] for im in tr["images"]] == ["images/train0.jpg", "images/train1.jpg"]
    assert all((tmp_path / "out" / im["file_name"]).is_file() for im in tr["images"] + va["images"])
    assert [(im["width"], im["height"]) for im in tr["images"]] == [(40, 30), (40, 30)]  # from the files
    # the 2-point polygons are gone with their annotations; the rest renumbered, category 2 -> 2
    assert [(a["id"], a["image_id"], a["category_id"]) for a in tr["annotations"]] == [(1, 1, 2), (2, 2, 2)]
    assert [a["category_id"] for a in va["annotations"]] == [2]
    source = json.loads((tmp_path / "out" / "SOURCE.json").read_text())
    assert source["repairs"] == {"image_size_from_file": 2, "polygons_under_3_points_dropped": 3,
                                 "annotations_without_polygon_dropped": 3}
    assert source["commit_read"] != spec.commit  # the documented commit is absent: HEAD was read
    with pytest.raises(FileNotFoundError, match="git show"):
        prepare_snapshot_set(SnapshotSet(**{**spec.__dict__, "val": ("nope.json",)}), repo, tmp_path / "o2")


@pytest.mark.slow
def test_harness_end_to_end_on_tiny_shapes_is_resumable(tmp_path, capsys):
    from fcis.data import make_shapes

    data = tmp_path / "shapes"
    make_shapes(data, num_images=6, seed=0, image_size=(64, 80), val_fraction=0.34, min_object_size=16)
    out, md = tmp_path / "out", tmp_path / "ABLATION.md"
    argv = ["--out", str(out), "--dataset-dir", f"shapes={data}", "--datasets", "shapes", "--rows", "before", "all",
            "--before-code", str(sl.REPO), "--iterations", "2", "--threads", "1",
            "--extra", "--min-size 64 --max-size 80", "--strict", "--markdown", str(md)]
    assert sl.main(argv) == 0

    results = json.loads((out / sl.RESULTS_NAME).read_text())
    rows = results["datasets"]["shapes"]["rows"]
    assert list(rows) == ["before", "all"]
    classes = {c["name"] for c in json.loads((data / "val.json").read_text())["categories"]}
    for rec in rows.values():
        assert rec["iterations"] == 2 and rec["loop_s"] > 0 and rec["train_wall_s"] > rec["loop_s"]
        assert set(rec["per_class"]["segm"]) == classes and rec["per_class_mean_matches_overall"] is True
        assert rec["chosen"]["min_size"] == 64 and rec["command"].endswith("--min-size 64 --max-size 80")
    assert results["code"]["before"]["fcis_imported_from"].startswith(str(sl.REPO))
    text = md.read_text()
    assert "| row | shapes |" in text and "mean = segm AP" in text

    last = (out / "shapes" / "all" / "last.pt").stat().st_mtime_ns
    assert sl.main(argv) == 0  # everything finished: nothing trains again
    assert (out / "shapes" / "all" / "last.pt").stat().st_mtime_ns == last
    assert "done already" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="--fresh"):
        sl.main([*argv[:argv.index("--iterations")], "--iterations", "3", *argv[argv.index("--iterations") + 2:]])
