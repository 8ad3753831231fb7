"""PennFudanPed and balloon (../shared/data): convert, train a few iterations, evaluate — all
through the CLI. Skips when the shared data is absent."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fcis.cli.main import main

SMALL = ["--min-size", "128", "--max-size", "160", "--set", "anchor_sizes=(32, 64, 128)",
         "--set", "rpn_post_nms_top_n_test=50"]


def _subset(src: Path, dst: Path, num_images: int) -> Path:
    """The first images of a COCO file and their annotations (keeps the evaluation quick)."""
    data = json.loads(src.read_text())
    keep = {im["id"] for im in data["images"][:num_images]}
    data["images"] = [im for im in data["images"] if im["id"] in keep]
    data["annotations"] = [a for a in data["annotations"] if a["image_id"] in keep]
    dst.write_text(json.dumps(data))
    return dst


def _train_and_evaluate(tmp_path: Path, train_json: Path, val_json: Path) -> dict:
    run, ev = tmp_path / "run", tmp_path / "eval"
    assert main(["train", "--model", "fcis_resnet18", "--train", str(train_json), "--val", str(val_json),
                 "--output", str(run), "--iterations", "2", "--batch-size", "1", "--device", "cpu",
                 "--workers", "0", "--no-progress", *SMALL]) == 0
    assert (run / "last.pt").is_file()
    assert main(["evaluate", "--weights", str(run / "last.pt"), "--data", str(val_json), "--output", str(ev),
                 "--device", "cpu", "--no-progress"]) == 0
    metrics = json.loads((ev / "metrics.json").read_text())
    assert set(metrics) >= {"segm", "bbox", "voc"}
    assert {"AP", "AP50", "AP75"} <= set(metrics["segm"]) and "mAP@0.5" in metrics["voc"]
    return metrics


@pytest.mark.slow
@pytest.mark.data
def test_pennfudan_convert_train_evaluate(tmp_path, shared_data):
    root = shared_data / "PennFudanPed"
    out = tmp_path / "pennfudan.json"
    assert main(["convert", "masks", str(root / "PNGImages"), str(root / "PedMasks"), str(out),
                 "--category", "pedestrian"]) == 0
    data = json.loads(out.read_text())
    assert len(data["images"]) == 170 and len(data["annotations"]) == 423
    metrics = _train_and_evaluate(tmp_path, _subset(out, tmp_path / "train.json", 8),
                                  _subset(out, tmp_path / "val.json", 4))
    assert metrics["num_images"] == 4


@pytest.mark.slow
@pytest.mark.data
def test_balloon_convert_train_evaluate(tmp_path, shared_data):
    root = shared_data / "balloon"
    train, val = tmp_path / "train.json", tmp_path / "val.json"
    assert main(["convert", "via", str(root / "train" / "via_region_data.json"), str(train),
                 "--category", "balloon"]) == 0
    assert main(["convert", "via", str(root / "val" / "via_region_data.json"), str(val),
                 "--category", "balloon"]) == 0
    assert len(json.loads(train.read_text())["annotations"]) == 255
    assert len(json.loads(val.read_text())["annotations"]) == 50
    metrics = _train_and_evaluate(tmp_path, _subset(train, tmp_path / "train_small.json", 8),
                                  _subset(val, tmp_path / "val_small.json", 3))
    assert metrics["num_images"] == 3
