"""The ``fcis`` command line, end to end on tiny images."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from fcis.cli.main import main

TINY_MODEL = ["--min-size", "64", "--max-size", "80", "--set", "anchor_sizes=(16, 32, 64)"]


@pytest.fixture(scope="module")
def shapes_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "shapes"
    assert main(["make-shapes", str(out), "--num-images", "6", "--seed", "1", "--image-size", "64", "80",
                 "--max-objects", "2", "--val-fraction", "0.34"]) == 0
    assert (out / "train.json").is_file() and (out / "val.json").is_file()
    return out


@pytest.mark.slow
def test_train_evaluate_predict(tmp_path, shapes_dir, capsys):
    run = tmp_path / "run"
    argv = ["train", "--model", "fcis_resnet18", "--train", str(shapes_dir / "train.json"),
            "--val", str(shapes_dir / "val.json"), "--output", str(run), "--iterations", "2", "--batch-size", "1",
            "--device", "cpu", "--workers", "0", "--no-progress", *TINY_MODEL]
    assert main(argv) == 0
    assert (run / "last.pt").is_file() and (run / "metrics.json").is_file()
    assert len((run / "log.jsonl").read_text().splitlines()) >= 2
    assert "checkpoint:" in capsys.readouterr().out

    # resuming a finished run is a no-op that still succeeds
    assert main([*argv, "--resume"]) == 0

    ev = tmp_path / "eval"
    assert main(["evaluate", "--weights", str(run / "last.pt"), "--data", str(shapes_dir / "val.json"),
                 "--output", str(ev), "--device", "cpu", "--no-progress"]) == 0
    metrics = json.loads((ev / "metrics.json").read_text())
    assert "AP" in metrics["segm"] and "AP" in metrics["bbox"]
    assert "segm" in capsys.readouterr().out

    pred = tmp_path / "pred"
    images = sorted((shapes_dir / "images").glob("*.png"))
    assert main(["predict", "--weights", str(run / "last.pt"), str(images[0]), str(shapes_dir / "images" / "0000[1].png"),
                 "--output", str(pred), "--score-threshold", "0.0", "--device", "cpu", "--no-progress"]) == 0
    pngs = sorted(p.name for p in pred.glob("*.png"))
    assert pngs == ["00000.png", "00001.png"]
    results = json.loads((pred / "predictions.json").read_text())
    for r in results:
        assert r["category_id"] in (1, 2, 3) and r["image_id"] in (0, 1)
        assert r["file_name"].endswith(f"0000{r['image_id']}.png") and isinstance(r["segmentation"]["counts"], str)

    # a folder as input (its images only)
    folder = tmp_path / "folder"
    folder.mkdir()
    shutil.copy(images[2], folder / "a.png")
    (folder / "notes.txt").write_text("not an image")
    assert main(["predict", "--weights", str(run / "last.pt"), str(folder), "--output", str(tmp_path / "pred2"),
                 "--device", "cpu", "--no-progress"]) == 0
    assert sorted(p.name for p in (tmp_path / "pred2").iterdir()) == ["a.png", "predictions.json"]


def test_evaluate_ground_truth_as_predictions_scores_one(tmp_path, shapes_dir, capsys):
    gt = json.loads((shapes_dir / "val.json").read_text())
    assert gt["annotations"]
    results = [{"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"],
                "segmentation": a["segmentation"], "score": 1.0} for a in gt["annotations"]]
    (tmp_path / "gt_results.json").write_text(json.dumps(results))
    assert main(["evaluate", "--predictions", str(tmp_path / "gt_results.json"), "--data", str(shapes_dir / "val.json"),
                 "--output", str(tmp_path / "out")]) == 0
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["segm"]["AP"] == pytest.approx(1.0)
    assert metrics["bbox"]["AP"] == pytest.approx(1.0)
    assert metrics["voc"]["mAP@0.5"] == pytest.approx(1.0)
    assert "100.0" in capsys.readouterr().out


def _error(capsys, argv) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("fcis: error: ") and "Traceback" not in err and err.count("\n") == 1, err
    return err


def test_bad_input_exits_2_with_a_message_naming_the_file(tmp_path, shapes_dir, capsys):
    err = _error(capsys, ["evaluate", "--weights", str(tmp_path / "missing.pt"), "--data",
                          str(shapes_dir / "val.json"), "--output", str(tmp_path / "o")])
    assert "missing.pt" in err
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    err = _error(capsys, ["train", "--model", "fcis_resnet18", "--train", str(broken), "--output", str(tmp_path / "r"),
                          "--iterations", "1", "--device", "cpu"])
    assert "broken.json" in err
    err = _error(capsys, ["evaluate", "--predictions", str(broken), "--data", str(shapes_dir / "val.json"),
                          "--output", str(tmp_path / "o")])
    assert "broken.json" in err
    fake = tmp_path / "fake.pt"
    fake.write_bytes(b"not a checkpoint")
    err = _error(capsys, ["predict", "--weights", str(fake), str(shapes_dir / "images"), "--output", str(tmp_path / "p")])
    assert "fake.pt" in err
    err = _error(capsys, ["predict", "--weights", str(fake), str(tmp_path / "nothing_here.png"), "--output",
                          str(tmp_path / "p")])
    assert "nothing_here.png" in err
    err = _error(capsys, ["train", "--model", "fcis_resnet18", "--train", str(shapes_dir / "train.json"),
                          "--output", str(tmp_path / "r2"), "--resume", "--device", "cpu"])
    assert "last.pt" in err
    err = _error(capsys, ["train", "--model", "no_such_model", "--train", str(shapes_dir / "train.json"),
                          "--output", str(tmp_path / "r3")])
    assert "no_such_model" in err
    assert main(["train"]) == 2  # argparse usage error
    capsys.readouterr()


def test_python_dash_m_fcis_runs():
    proc = subprocess.run([sys.executable, "-m", "fcis", "--help"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and "make-shapes" in proc.stdout


@pytest.mark.slow
def test_demo_quick(tmp_path, capsys):
    assert main(["demo", "--quick", "--output", str(tmp_path / "demo"), "--device", "cpu", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "segm" in out and "metrics.json" in out
    assert (tmp_path / "demo" / "metrics.json").is_file() and (tmp_path / "demo" / "train" / "last.pt").is_file()
    assert len(list((tmp_path / "demo" / "overlays").glob("*.png"))) == 1
    curves = tmp_path / "demo" / "train" / "curves.png"
    assert curves.is_file() and f"curves:      {curves}" in out  # the training curves, and where they are
