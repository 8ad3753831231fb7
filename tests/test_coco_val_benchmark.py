"""benchmarks/coco_val_converted.py: a converted model on COCO val2017 (opt-in section 9): skips
cleanly without the files, and runs end to end on a tiny generated COCO-format set in COCO's
own layout (annotations/instances_val2017.json + val2017/) with a small random model."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from benchmarks import coco_val_converted as cv
from benchmarks import run as bench_run
from benchmarks.report import SECTION_TITLES
from fcis.data.shapes import make_shapes
from fcis.engine.checkpoint import save_checkpoint
from fcis.models import fcis_resnet18


def test_skips_cleanly_without_files(tmp_path, capsys):
    assert cv.main(["--out", str(tmp_path / "a"), "--no-progress"]) == 0
    section = json.loads((tmp_path / "a" / "coco_val_converted.json").read_text())
    assert section["skipped"] == "no --coco-root (or --annotations/--images) given; no --weights given"
    weights = tmp_path / "w.pt"
    weights.write_bytes(b"x")
    assert cv.main(["--weights", str(weights), "--coco-root", str(tmp_path / "nowhere"), "--out",
                    str(tmp_path / "b")]) == 0
    section = json.loads((tmp_path / "b" / "coco_val_converted.json").read_text())
    assert "COCO val2017 files not found" in section["skipped"] and "instances_val2017.json" in section["skipped"]
    assert "Skipped: COCO val2017 files not found" in (tmp_path / "b" / "COCO-VAL.md").read_text()
    assert "weights file not found" in cv.run(str(tmp_path / "missing.pt"), str(tmp_path), tmp_path)["skipped"]
    assert "coco_val" in bench_run.SECTIONS and "coco_val" in bench_run.OPT_IN and "coco_val" in SECTION_TITLES
    assert "Opt-in" in cv.render(None)


def _coco_layout(tmp_path: Path) -> Path:
    """make_shapes' val split rewritten as COCO's layout, categories listed in reverse order (the
    mapping goes by name, not by position)."""
    paths = make_shapes(tmp_path / "shapes", num_images=10, seed=2, image_size=(96, 128))
    root = tmp_path / "coco"
    (root / "annotations").mkdir(parents=True)
    (root / "val2017").mkdir()
    data = json.loads(Path(paths["train"]).read_text())
    for im in data["images"]:
        shutil.copy(Path(paths["train"]).parent / im["file_name"], root / "val2017" / Path(im["file_name"]).name)
        im["file_name"] = Path(im["file_name"]).name
    renumber = {c["id"]: 10 * c["id"] + 7 for c in data["categories"]}      # COCO-like gaps
    data["categories"] = [{**c, "id": renumber[c["id"]], "name": c["name"].upper()}
                          for c in reversed(data["categories"])]
    for a in data["annotations"]:
        a["category_id"] = renumber[a["category_id"]]
    (root / "annotations" / "instances_val2017.json").write_text(json.dumps(data))
    return root


@pytest.mark.slow
def test_runs_on_a_tiny_coco_layout_with_a_small_random_model(tmp_path):
    root = _coco_layout(tmp_path)
    torch.manual_seed(0)
    model = fcis_resnet18(num_classes=3, min_size=96, max_size=128, anchor_sizes=(24, 48, 96),
                          rpn_post_nms_top_n_test=30, rpn_pre_nms_top_n_test=300)
    weights = tmp_path / "converted.pt"
    names = ["circle", "square", "triangle"]
    save_checkpoint(weights, model=model.state_dict(), model_name="fcis_resnet18", model_config=model.config.to_dict(),
                    dataset={"class_names": names, "label_to_cat_id": {1: 1, 2: 2, 3: 3}})
    out = tmp_path / "out"
    assert cv.main(["--weights", str(weights), "--coco-root", str(root), "--out", str(out), "--limit", "3",
                    "--no-progress"]) == 0
    section = json.loads((out / "coco_val_converted.json").read_text())
    assert section["num_images"] == 3 and section["limit"] == 3 and not section["full_set"]
    assert set(section["metrics"]) >= {"segm", "bbox"} and "AP" in section["metrics"]["segm"]
    assert section["seconds_per_image"] > 0
    predictions_ids = {17, 27, 37}
    assert section["references"]["chainercv_port_val"]["mask_ap"] == 27.9
    md = (out / "COCO-VAL.md").read_text()
    assert "not comparable" in md and "| mask (segm) |" in md
    # the labels went to the dataset's ids by name (CIRCLE is 17 whatever its position)
    from fcis.data import CocoInstances

    data = CocoInstances(root / "annotations" / "instances_val2017.json", root / "val2017")
    mapping = cv.label_mapping(names, data.class_names, data.label_to_cat_id, "w")
    assert mapping == {1: 17, 2: 27, 3: 37} and set(mapping.values()) == predictions_ids
    with pytest.raises(ValueError, match=r"\['hexagon'\] are not categories"):
        cv.label_mapping(["hexagon", "circle"], data.class_names, data.label_to_cat_id, "w")
    # the harness section: the same run through benchmarks.run's budget fields
    from benchmarks.common import QUICK

    budget = QUICK.with_overrides([f"coco_val_weights={weights}", f"coco_val_root={root}", "coco_val_limit=2"])
    results, _ = bench_run.run_sections(["coco_val"], budget, work=tmp_path / "work", data_root=None, strict=True)
    assert results["coco_val"]["num_images"] == 2
    assert "| mask (segm) |" in cv.render(results["coco_val"])
